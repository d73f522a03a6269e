//! The TURN metrics exporter (`otter-signaling turn-exporter`) against a real coturn publishing
//! to a real redis-server (`--redis-statsdb`), with coturn's own TURN client making allocations
//! and relaying traffic to coturn's own UDP peer.
//!
//! Needs `turnserver`, `turnutils_uclient` and `turnutils_peer` (Debian package coturn) and
//! `redis-server` (tests/install-deps), and `OTTER_SIGNALING_BIN`.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use otter_testkit::{RedisServer, free_port, wait_until};

const SECRET: &str = "turn-metrics-test-secret";
/// Messages the client sends per allocation, and their size: the peer leg carries exactly this.
const MESSAGES: u64 = 20;
const MESSAGE_LEN: u64 = 100;
const CLIENTS: u64 = 2;

fn tool(name: &str) -> String {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()));
    assert!(
        found,
        "`{name}` not found on PATH: run tests/install-deps (Debian package coturn)"
    );
    name.to_string()
}

fn signaling_bin() -> String {
    std::env::var("OTTER_SIGNALING_BIN").expect(
        "OTTER_SIGNALING_BIN must point at the otter-signaling binary (tests/run-all sets it)",
    )
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Coturn {
    _child: Proc,
    port: u16,
    _dir: tempfile::TempDir,
}

/// A real coturn on loopback publishing its statistics to `redis`.
async fn coturn(redis: &RedisServer) -> Coturn {
    let port = free_port();
    let dir =
        tempfile::TempDir::with_prefix(format!("otter-turn-metrics-{port}-")).expect("a temp dir");
    // A relay range of its own, so coturns of other tests running beside this one do not matter.
    let min = 40_000 + (port % 200) * 100;
    let child = Command::new(tool("turnserver"))
        .args([
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            &format!("--listening-port={port}"),
            &format!("--min-port={min}"),
            &format!("--max-port={}", min + 99),
            "--realm=otter",
            "--use-auth-secret",
            &format!("--static-auth-secret={SECRET}"),
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            // Tests only: the peer is on loopback.
            "--allow-loopback-peers",
            "--log-file=stdout",
            "--simple-log",
            &format!("--pidfile={}/turnserver.pid", dir.path().display()),
            &format!(
                "--redis-statsdb=ip=127.0.0.1 dbname=0 port={} connect_timeout=30",
                redis.port
            ),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start turnserver");
    let child = Proc(child);
    wait_until("coturn listening", Duration::from_secs(20), || async move {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    Coturn {
        _child: child,
        port,
        _dir: dir,
    }
}

struct Exporter {
    _child: Proc,
    port: u16,
}

impl Exporter {
    /// Start the exporter on a free port; another port if that one was taken meanwhile.
    async fn start(redis_url: &str) -> Exporter {
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(signaling_bin())
                .args(["turn-exporter", "--redis-url", redis_url])
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .env("OTTER_LOG", "warn")
                .spawn()
                .expect("start otter-signaling turn-exporter");
            for _ in 0..400 {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Exporter {
                        _child: Proc(child),
                        port,
                    };
                }
                if child.try_wait().expect("exporter status").is_some() {
                    break; // The bind failed: try another port.
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("the TURN exporter did not start listening");
    }

    async fn scrape(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.port);
        reqwest::get(&url)
            .await
            .expect("scrape")
            .text()
            .await
            .expect("scrape body")
    }

    /// The value of one series (`name{labels}` exactly as exposed), if present.
    async fn value(&self, series: &str) -> Option<f64> {
        value(&self.scrape().await, series)
    }
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn total_allocations(text: &str) -> f64 {
    ["udp", "tcp", "tls", "dtls", "other"]
        .iter()
        .filter_map(|t| {
            value(
                text,
                &format!("otter_turn_allocations{{transport=\"{t}\"}}"),
            )
        })
        .sum()
}

/// coturn's status keys of live allocations in `redis`.
fn status_keys(redis: &RedisServer) -> usize {
    redis
        .cli(&["--raw", "KEYS", "turn/*/allocation/*/status"])
        .len()
}

/// Wait until the exporter is subscribed and has read the live allocations at least `n` times.
async fn resynced(e: &Exporter, n: f64) {
    wait_until(
        "the exporter subscribed and resynced",
        Duration::from_secs(30),
        || async {
            e.value("otter_turn_stats_connected").await == Some(1.0)
                && e.value("otter_turn_stats_resyncs_total").await >= Some(n)
        },
    )
    .await;
}

/// coturn's own client: `CLIENTS` allocations, each relaying `MESSAGES` to the UDP peer and
/// back, then released.
fn allocate_and_relay(turn_port: u16, peer_port: u16) {
    let out = Command::new(tool("turnutils_uclient"))
        .args(["-p", &turn_port.to_string(), "-L", "127.0.0.1"])
        .args(["-e", "127.0.0.1", "-r", &peer_port.to_string()])
        .args(["-W", SECRET, "-u", "alice"])
        .args(["-n", &MESSAGES.to_string(), "-l", &MESSAGE_LEN.to_string()])
        .args(["-m", &CLIENTS.to_string(), "-c", "127.0.0.1"])
        .output()
        .expect("run turnutils_uclient");
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "turnutils_uclient failed:\n{log}");
    let want = format!("tot_recv_msgs={}", MESSAGES * CLIENTS);
    assert!(
        log.contains(&want),
        "the relay lost messages ({want}):\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocations_and_relayed_traffic_move_the_counters() {
    let redis = RedisServer::start();
    let turn = coturn(&redis).await;
    let exporter = Exporter::start(&redis.url()).await;
    resynced(&exporter, 1.0).await;
    let peer_port = free_port();
    let _peer = Proc(
        Command::new(tool("turnutils_peer"))
            .args(["-L", "127.0.0.1", "-p", &peer_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start turnutils_peer"),
    );

    allocate_and_relay(turn.port, peer_port);

    // The peer leg carries exactly the client's payload; coturn reports it when each
    // allocation ends.
    let bytes = (MESSAGES * MESSAGE_LEN * CLIENTS) as f64;
    let packets = (MESSAGES * CLIENTS) as f64;
    wait_until(
        "the relayed traffic in a scrape",
        Duration::from_secs(30),
        || async {
            let t = exporter.scrape().await;
            value(
                &t,
                "otter_turn_traffic_bytes_total{leg=\"peer\",direction=\"sent\"}",
            ) == Some(bytes)
                && value(
                    &t,
                    "otter_turn_traffic_bytes_total{leg=\"peer\",direction=\"received\"}",
                ) == Some(bytes)
                && value(&t, "otter_turn_allocations_ended_total") >= Some(CLIENTS as f64)
        },
    )
    .await;
    let text = exporter.scrape().await;
    for dir in ["sent", "received"] {
        let series =
            format!("otter_turn_traffic_packets_total{{leg=\"peer\",direction=\"{dir}\"}}");
        assert_eq!(value(&text, &series), Some(packets), "{series}\n{text}");
        let client =
            format!("otter_turn_traffic_bytes_total{{leg=\"client\",direction=\"{dir}\"}}");
        // TURN framing on top of the payload.
        assert!(value(&text, &client) > Some(bytes), "{client}\n{text}");
    }
    let created = value(&text, "otter_turn_allocations_created_total").unwrap_or(0.0);
    assert!(
        created >= CLIENTS as f64,
        "allocations made: {created}\n{text}"
    );
    // Live allocations are what coturn's status keys say (uclient leaves some to expire).
    assert_eq!(
        total_allocations(&text),
        status_keys(&redis) as f64,
        "{text}"
    );
    assert_eq!(value(&text, "otter_turn_stats_malformed_total"), Some(0.0));
    for private in ["alice", "127.0.0.1", "otter/"] {
        assert!(
            !text.contains(private),
            "{private:?} in the metrics:\n{text}"
        );
    }

    // A restarted exporter reads the live allocations back from the status keys.
    drop(exporter);
    let exporter = Exporter::start(&redis.url()).await;
    resynced(&exporter, 1.0).await;
    let text = exporter.scrape().await;
    assert_eq!(
        total_allocations(&text),
        status_keys(&redis) as f64,
        "{text}"
    );
    assert_eq!(
        value(&text, "otter_turn_allocations_created_total"),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_junk_and_a_redis_restart() {
    let mut redis = RedisServer::start();
    let exporter = Exporter::start(&redis.url()).await;
    resynced(&exporter, 1.0).await;

    // Anything that can write to coturn's Redis can publish junk: counted, never a crash.
    // One argument of redis-cli holds at most 128 KiB (the kernel's MAX_ARG_STRLEN).
    let huge = "x".repeat(100 * 1024);
    for (channel, payload) in [
        ("turn/user/u/allocation/1/traffic", "rcvp=-1, rcvb=x"),
        ("turn/user/u/allocation/1/status", "\u{ff}binary"),
        ("turn/user/u/allocation/1/status", huge.as_str()),
        ("turn/nothing", ""),
    ] {
        redis.cli(&["PUBLISH", channel, payload]);
    }
    wait_until(
        "junk counted as malformed",
        Duration::from_secs(10),
        || async { exporter.value("otter_turn_stats_malformed_total").await == Some(4.0) },
    )
    .await;

    redis.kill();
    wait_until(
        "disconnected after Redis went",
        Duration::from_secs(20),
        || async { exporter.value("otter_turn_stats_connected").await == Some(0.0) },
    )
    .await;
    let ready = reqwest::get(format!("http://127.0.0.1:{}/readyz", exporter.port))
        .await
        .expect("readyz");
    assert_eq!(ready.status().as_u16(), 503);

    // Back: subscribed again (messages flow) and the live set re-read.
    redis.restart();
    resynced(&exporter, 2.0).await;
    let channel = "turn/realm/r/user/u/allocation/7/status";
    wait_until(
        "a message after the reconnection",
        Duration::from_secs(20),
        || async {
            redis.cli(&["PUBLISH", channel, "new lifetime=600, type=UDP"]);
            exporter.value("otter_turn_allocations_created_total").await >= Some(1.0)
        },
    )
    .await;
}
