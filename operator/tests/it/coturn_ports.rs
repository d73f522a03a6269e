//! The TURN port clash check (`reconcile::ports::turn_host_ports`) must know every port coturn
//! binds: TURN runs on host networking, so a port it does not know is a clash it cannot report.
//! Proven against the real coturn (Debian's `turnserver`) started with the operator's own
//! arguments (`build::turn::coturn_args`), listening on every address of the host as in a TURN
//! pod: the ports its sockets are bound to are exactly the ones the check names.

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use otter_operator::build::turn::coturn_args;
use otter_operator::crd::{OtterDeployment, OtterDeploymentSpec};
use otter_operator::reconcile::ports::turn_host_ports;

/// Kills the child when dropped, so a failed assertion leaves no process behind.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Socket inodes the process holds (`/proc/<pid>/fd/* -> socket:[inode]`).
fn socket_inodes(pid: u32) -> BTreeSet<String> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return BTreeSet::new();
    };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect()
}

/// Local ports of the host's UDP sockets and listening TCP sockets with those inodes.
fn bound_ports(inodes: &BTreeSet<String>) -> BTreeSet<i32> {
    let mut ports = BTreeSet::new();
    for (table, tcp) in [
        ("udp", false),
        ("udp6", false),
        ("tcp", true),
        ("tcp6", true),
    ] {
        let text = std::fs::read_to_string(format!("/proc/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is field 1 (hex ip:port), st field 3 (0A = LISTEN), inode field 9.
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            if !inodes.contains(*inode) || (tcp && *state != "0A") {
                continue;
            }
            if let Some(port) = local.rsplit(':').next() {
                ports.insert(i32::from_str_radix(port, 16).expect("hex port"));
            }
        }
    }
    ports
}

/// The operator's coturn arguments, minus what needs the pod's files (config written by the
/// init container, the secrets database, the pidfile), with a secret on the command line.
fn args_outside_a_pod(cr: &OtterDeployment) -> Vec<String> {
    let args = coturn_args(cr).expect("coturn args");
    let mut out = Vec::new();
    let mut skip = false;
    for a in args {
        if std::mem::take(&mut skip) {
            continue;
        }
        if a == "-c" {
            skip = true;
        } else if !a.starts_with("--userdb=") && !a.starts_with("--pidfile=") {
            out.push(a);
        }
    }
    out.extend(["-n".into(), "--static-auth-secret=ports-test".into()]);
    out
}

fn free_port_pair() -> i32 {
    for _ in 0..50 {
        let Ok(s) = UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(port) = s.local_addr().map(|a| a.port()) else {
            continue;
        };
        if port < 60000 && UdpSocket::bind(("127.0.0.1", port + 1)).is_ok() {
            return i32::from(port);
        }
    }
    panic!("no two free UDP ports side by side");
}

#[test]
fn coturn_binds_only_the_ports_the_clash_check_names() {
    let bin = PathBuf::from("/usr/bin/turnserver");
    assert!(
        bin.exists(),
        "turnserver not found: install Debian's coturn package (tests/install-deps)"
    );
    let mut cr = OtterDeployment::new("ports", OtterDeploymentSpec::default());
    cr.spec.turn.port = free_port_pair();
    // A relay range no other test uses; nothing allocates, so no relay port is bound.
    cr.spec.turn.relay_port_range.min = 45500;
    cr.spec.turn.relay_port_range.max = 45599;
    let log_dir = tempfile::TempDir::with_prefix("otter-coturn-ports-").expect("a temp dir");
    let log = log_dir.path().join("turnserver.log");
    let child = Command::new(&bin)
        .args(args_outside_a_pod(&cr))
        .stdout(std::fs::File::create(&log).expect("log file"))
        .stderr(Stdio::null())
        .spawn()
        .expect("start turnserver");
    let proc = Proc(child);
    // coturn starts its admin thread last, after every listener and relay server is bound.
    let deadline = Instant::now() + Duration::from_secs(30);
    let started = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("(admin thread)")
    };
    while !started() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert!(
        text.contains("(admin thread)"),
        "turnserver did not start:\n{text}"
    );
    let want: BTreeSet<i32> = turn_host_ports(&cr).into_iter().collect();
    let seen = bound_ports(&socket_inodes(proc.0.id()));
    assert_eq!(
        seen, want,
        "coturn binds ports the clash check does not know"
    );
}
