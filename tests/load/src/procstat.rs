//! Resident memory and CPU time of the server processes under test, read from /proc.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// One reading of one process.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Sample {
    /// `VmRSS` from /proc/PID/status, in KiB.
    pub rss_kib: u64,
    /// CPU time in seconds: the sum of the threads' on-CPU time from
    /// /proc/PID/task/*/schedstat (nanoseconds), else utime + stime from /proc/PID/stat (whole
    /// clock ticks, 10 ms: 5% of a small run's 0.2 s of CPU).
    pub cpu_s: f64,
}

// The one unsafe call of the workspace: the standard library has no sysconf.
#[allow(unsafe_code)]
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions; it returns -1 on error.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Read VmRSS and utime+stime of `pid`.
pub fn sample(pid: u32) -> Result<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status (is the process running?)"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))?;
    let cpu_s = match threads_on_cpu_ns(pid) {
        Some(ns) => ns as f64 / 1e9,
        None => stat_cpu_s(pid)?,
    };
    Ok(Sample { rss_kib, cpu_s })
}

/// utime + stime of `pid` from /proc/PID/stat, in seconds (whole clock ticks; threads that
/// ended are included).
fn stat_cpu_s(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may contain spaces: split after the
    // last ')'. Then field 3 (state) is index 0, utime (14) is index 11, stime (15) index 12.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        bail!("unexpected /proc/{pid}/stat format");
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("field {i} of /proc/{pid}/stat"))
    };
    Ok((tick(11)? + tick(12)?) as f64 / clock_ticks())
}

/// The on-CPU time of `pid`'s live threads (first field of each thread's schedstat), or None
/// where the kernel has no schedstat. Threads that exited are not counted: the servers under
/// test keep theirs (tokio's workers, redis-server's) for the whole run. Exact when read with
/// the process idle, as the run does (a running thread's figure lags by up to a tick).
fn threads_on_cpu_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut sum = 0u64;
    let mut any = false;
    for task in tasks.flatten() {
        // A thread that ended since the listing has no file any more: it is skipped.
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
        sum += ns;
        any = true;
    }
    any.then_some(sum)
}

/// The 1-minute load average, to say how busy the machine was.
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// CPU time of the whole machine (all processes), in seconds: busy and total, from /proc/stat.
/// The difference of two readings tells how much of the machine the benchmark did not use.
pub fn machine_cpu() -> (f64, f64) {
    let Ok(s) = std::fs::read_to_string("/proc/stat") else {
        return (0.0, 0.0);
    };
    let Some(line) = s.lines().find(|l| l.starts_with("cpu ")) else {
        return (0.0, 0.0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    let t = clock_ticks();
    ((total - idle.min(total)) as f64 / t, total as f64 / t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Busy work in a second thread shows in the process's CPU time while that thread lives
    /// (a thread that ended is not counted: see `threads_on_cpu_ns`). The thread spins until
    /// the kernel's own tick count says 300 ms of CPU were used, however busy the machine is.
    #[test]
    fn cpu_time_counts_every_live_thread() {
        let pid = std::process::id();
        let before = sample(pid).expect("sample");
        let ticks_before = stat_cpu_s(pid).expect("stat");
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let (spun_tx, spun_rx) = std::sync::mpsc::channel::<bool>();
        let spin = std::thread::spawn(move || {
            let bound = std::time::Instant::now() + std::time::Duration::from_secs(120);
            let mut x = 0u64;
            let spun = loop {
                for _ in 0..100_000 {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
                let used = stat_cpu_s(pid).expect("stat") - ticks_before;
                if used >= 0.3 {
                    break true;
                }
                if std::time::Instant::now() > bound {
                    break false;
                }
            };
            let _ = spun_tx.send(spun);
            // Alive, idle, until the second sample is taken.
            let _ = done_rx.recv();
            x
        });
        assert!(
            spun_rx.recv().expect("spun"),
            "300 ms of CPU not used in 120 s"
        );
        let after = sample(pid).expect("sample");
        let ticks_used = stat_cpu_s(pid).expect("stat") - ticks_before;
        let _ = done_tx.send(());
        spin.join().expect("spin");
        let used = after.cpu_s - before.cpu_s;
        // Other tests of this binary run beside it: they add CPU to both figures, and the
        // threads of theirs that ended are in the ticks only.
        assert!(
            (0.25..ticks_used + 0.5).contains(&used),
            "{used} s counted, {ticks_used} s by the kernel's ticks"
        );
    }
}
