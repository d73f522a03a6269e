//! The TURN reachability prober and the quota flags against the real coturn (`turnserver` from
//! Debian, installed by tests/install-deps): a good credential allocates, a wrong secret is a
//! clear 401, nothing listening is unreachable, and the quota arguments the operator renders
//! make coturn refuse an allocation over quota.

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use otter_operator::build::turn_quotas::quota_args;
use otter_operator::crd::{OtterDeployment, OtterDeploymentSpec};
use otter_operator::probe::allocate::{allocate, allocate_and_hold};
use otter_operator::probe::{Credential, ProbeOutcome, mint};

const SECRET: &[u8] = b"probe-test-secret";
const REALM: &str = "otter.test";
/// Short waits where an answer is expected from a process on loopback.
const QUICK: [Duration; 3] = [
    Duration::from_millis(300),
    Duration::from_millis(600),
    Duration::from_millis(1200),
];

/// A `turnserver` on a loopback port; killed on drop.
struct Coturn {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> u16 {
    let sock = StdUdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral UDP port");
    sock.local_addr().expect("local address").port()
}

fn cred(id: &str, secret: &[u8]) -> Credential {
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        + 600;
    mint(secret, id, expiry)
}

impl Coturn {
    /// Start coturn with `extra` arguments; a port taken between picking and binding is
    /// retried on another one (coturn keeps running when it cannot bind, so answer == up).
    async fn start(extra: &[String]) -> Coturn {
        if std::process::Command::new("turnserver")
            .arg("--version")
            .output()
            .is_err()
        {
            panic!("turnserver not found: run tests/install-deps (Debian package coturn)");
        }
        for _ in 0..5 {
            if let Some(c) = Self::try_start(extra).await {
                return c;
            }
        }
        panic!("coturn did not answer on any of 5 loopback ports");
    }

    async fn try_start(extra: &[String]) -> Option<Coturn> {
        let port = free_udp_port();
        let dir =
            tempfile::TempDir::with_prefix(format!("otter-coturn-{port}-")).expect("a temp dir");
        // Ten relay ports below the kernel's ephemeral range (32768 on), apart from the fixed
        // ranges of coturn_secrets.rs (29100-29520, 45200-45499), whose tests run beside these.
        let relay_min = 30000 + (port % 270) * 10;
        let child = Command::new("turnserver")
            .args([
                "-n",
                "--listening-ip=127.0.0.1",
                "--relay-ip=127.0.0.1",
                &format!("--listening-port={port}"),
                &format!("--min-port={relay_min}"),
                &format!("--max-port={}", relay_min + 9),
                "--use-auth-secret",
                &format!("--static-auth-secret={}", std::str::from_utf8(SECRET).ok()?),
                &format!("--realm={REALM}"),
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--fingerprint",
                "--log-file=stdout",
                "--simple-log",
                &format!("--pidfile={}/turnserver.pid", dir.path().display()),
                &format!("--userdb={}/turndb", dir.path().display()),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn turnserver");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut coturn = Coturn {
            child,
            addr,
            _dir: dir,
        };
        // Up means it answers a TURN request (any answer: here the 401 refusing a wrong secret)
        // ten times in a row, each from a new local port: coturn binds its listener once per
        // relay thread while it starts, and a datagram hashed to no socket yet is refused.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut answered = 0;
        while Instant::now() < deadline && answered < 10 {
            if coturn.child.try_wait().ok().flatten().is_some() {
                return None;
            }
            let probe = allocate(addr, &cred("up", b"wrong"), &QUICK).await;
            answered = match probe {
                ProbeOutcome::Refused { code: 401, .. } => answered + 1,
                _ => 0,
            };
        }
        if answered >= 10 {
            return Some(coturn);
        }
        let _ = coturn.child.kill();
        None
    }
}

#[tokio::test]
async fn a_good_credential_allocates_and_the_relay_is_freed() {
    let coturn = Coturn::start(&["--user-quota=1".into()]).await;
    let good = cred("otter-probe", SECRET);
    let first = allocate(coturn.addr, &good, &QUICK).await;
    let ProbeOutcome::Allocated { relayed } = &first else {
        panic!("expected an allocation, got {first:?}");
    };
    let relayed = relayed.expect("coturn says which relay address it gave");
    assert_eq!(relayed.ip().to_string(), "127.0.0.1");
    assert!(first.reachable());
    // With a quota of one allocation per username, a second probe with the same credential
    // only succeeds because the first one freed its relay (Refresh, lifetime 0; coturn drops
    // the allocation on its next timer tick, so the second may be refused for a moment).
    // Held, the relay would count against the quota for ten minutes.
    let deadline = Instant::now() + Duration::from_secs(5);
    let second = loop {
        let second = allocate(coturn.addr, &good, &QUICK).await;
        if second.reachable() || Instant::now() > deadline {
            break second;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        second.reachable(),
        "the probe's relay was not freed: {second:?}"
    );
}

#[tokio::test]
async fn a_wrong_secret_is_a_clear_401() {
    let coturn = Coturn::start(&[]).await;
    let outcome = allocate(coturn.addr, &cred("otter-probe", b"another-secret"), &QUICK).await;
    assert_eq!(
        outcome,
        ProbeOutcome::Refused {
            code: 401,
            reason: "Unauthorized".into()
        }
    );
    assert!(!outcome.reachable());
    assert!(
        outcome.detail().contains("401 Unauthorized"),
        "{}",
        outcome.detail()
    );
    assert!(
        outcome.detail().contains("shared secret"),
        "{}",
        outcome.detail()
    );
}

#[tokio::test]
async fn nothing_listening_is_unreachable() {
    // A closed loopback port answers with ICMP port unreachable, every retransmission.
    let closed: SocketAddr = ([127, 0, 0, 1], free_udp_port()).into();
    let outcome = allocate(closed, &cred("otter-probe", SECRET), &QUICK).await;
    assert_eq!(outcome, ProbeOutcome::PortUnreachable);
    assert!(!outcome.reachable());
    // A socket that swallows every datagram: no answer after the retransmissions.
    let silent = StdUdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("address");
    let start = Instant::now();
    let outcome = allocate(addr, &cred("otter-probe", SECRET), &QUICK).await;
    assert_eq!(outcome, ProbeOutcome::NoAnswer);
    assert!(start.elapsed() >= QUICK.iter().sum::<Duration>());
    assert!(
        outcome.detail().contains("no answer"),
        "{}",
        outcome.detail()
    );
}

#[tokio::test]
async fn the_rendered_quotas_refuse_allocations_over_quota() {
    let mut cr = OtterDeployment::new("demo", OtterDeploymentSpec::default());
    cr.spec.turn.quotas.allocations_per_user = 1;
    cr.spec.turn.quotas.allocations_total = 2;
    let coturn = Coturn::start(&quota_args(&cr)).await;
    let alice = cred("alice", SECRET);
    let (first, _held_a) = allocate_and_hold(coturn.addr, &alice, &QUICK).await;
    assert!(first.reachable(), "{first:?}");
    // Same username, a second allocation: over allocationsPerUser.
    let (over_user, _) = allocate_and_hold(coturn.addr, &alice, &QUICK).await;
    assert_eq!(
        over_user,
        ProbeOutcome::Refused {
            code: 486,
            reason: "Allocation Quota Reached".into()
        }
    );
    assert!(
        over_user.detail().contains("turn.quotas"),
        "{}",
        over_user.detail()
    );
    let (bob, _held_b) = allocate_and_hold(coturn.addr, &cred("bob", SECRET), &QUICK).await;
    assert!(bob.reachable(), "another user fits: {bob:?}");
    // A third user: over allocationsTotal.
    let (carol, _) = allocate_and_hold(coturn.addr, &cred("carol", SECRET), &QUICK).await;
    assert!(
        matches!(carol, ProbeOutcome::Refused { code: 486, .. }),
        "over the total quota: {carol:?}"
    );
}

#[tokio::test]
async fn the_default_quotas_are_accepted_by_coturn() {
    let cr = OtterDeployment::new("demo", OtterDeploymentSpec::default());
    let args = quota_args(&cr);
    assert!(args.iter().any(|a| a == "--max-bps=1250000"), "{args:?}");
    let coturn = Coturn::start(&args).await;
    let outcome = allocate(coturn.addr, &cred("otter-probe", SECRET), &QUICK).await;
    assert!(outcome.reachable(), "{outcome:?}");
}
