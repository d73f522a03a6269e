//! Resident memory and CPU time of the server processes under test, read from /proc.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// One reading of one process.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Sample {
    /// `VmRSS` from /proc/PID/status, in KiB.
    pub rss_kib: u64,
    /// utime + stime from /proc/PID/stat, in seconds.
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
    let cpu_s = (tick(11)? + tick(12)?) as f64 / clock_ticks();
    Ok(Sample { rss_kib, cpu_s })
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
