//! `perf record --control fifo:CTL,ACK` from the generator's side: profiling switched on for
//! the exchange phase only, so a profile of a run is the relay path and not the joins.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// The FIFOs given to `perf record --control fifo:CTL,ACK` (perf must already be running).
#[derive(Clone, Debug)]
pub struct PerfControl {
    pub ctl: PathBuf,
    pub ack: PathBuf,
}

impl PerfControl {
    /// Sends `enable` or `disable` and waits for perf's `ack`, so the exchange starts only once
    /// the counters are on.
    pub async fn send(&self, cmd: &'static str) -> Result<()> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.send_blocking(cmd)).await?
    }

    fn send_blocking(&self, cmd: &str) -> Result<()> {
        let mut ctl = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.ctl)
            .with_context(|| format!("open perf control FIFO {}", self.ctl.display()))?;
        ctl.write_all(format!("{cmd}\n").as_bytes())
            .with_context(|| format!("write {cmd} to {}", self.ctl.display()))?;
        let ack = std::fs::File::open(&self.ack)
            .with_context(|| format!("open perf ack FIFO {}", self.ack.display()))?;
        let mut line = String::new();
        BufReader::new(ack)
            .read_line(&mut line)
            .with_context(|| format!("read perf's answer from {}", self.ack.display()))?;
        if line.trim_end_matches(['\n', '\0']) != "ack" {
            bail!("perf answered {line:?} to {cmd}, not ack");
        }
        Ok(())
    }
}

/// `CTL,ACK` as on perf's command line.
pub fn parse(s: &str) -> Result<PerfControl> {
    let Some((ctl, ack)) = s.split_once(',') else {
        bail!(
            "--perf-control {s}: expected CTL_FIFO,ACK_FIFO (as given to perf record --control fifo:CTL,ACK)"
        );
    };
    Ok(PerfControl {
        ctl: ctl.into(),
        ack: ack.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_fifos_are_needed() {
        let p = parse("/tmp/c,/tmp/a").expect("two paths");
        assert_eq!(p.ctl, PathBuf::from("/tmp/c"));
        assert_eq!(p.ack, PathBuf::from("/tmp/a"));
        let e = parse("/tmp/c").expect_err("one path").to_string();
        assert!(e.contains("CTL_FIFO,ACK_FIFO"), "{e}");
    }

    /// A stand-in for perf on two real FIFOs: the command arrives and the ack is awaited.
    #[tokio::test]
    async fn the_command_is_written_and_the_ack_awaited() {
        let dir = std::env::temp_dir().join(format!("otter-perfctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (ctl, ack) = (dir.join("ctl"), dir.join("ack"));
        for f in [&ctl, &ack] {
            let _ = std::fs::remove_file(f);
            let ok = std::process::Command::new("mkfifo")
                .arg(f)
                .status()
                .expect("mkfifo");
            assert!(ok.success());
        }
        let (c, a) = (ctl.clone(), ack.clone());
        let perf = std::thread::spawn(move || {
            let mut got = String::new();
            BufReader::new(std::fs::File::open(&c).expect("open ctl"))
                .read_line(&mut got)
                .expect("read ctl");
            let mut w = std::fs::OpenOptions::new()
                .write(true)
                .open(&a)
                .expect("open ack");
            w.write_all(b"ack\n").expect("write ack");
            got
        });
        let control = PerfControl { ctl, ack };
        control.send("enable").await.expect("acknowledged");
        assert_eq!(perf.join().expect("perf thread"), "enable\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
