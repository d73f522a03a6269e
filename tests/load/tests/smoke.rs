//! Smoke test of the load generator: `otter-load run` against a real in-memory
//! otter-signaling (N=20, k=2 and k=6) and, when tests/bench has its npm install, against a real
//! PeerJS server; zero errors and every expected message delivered.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use otter_testkit::{RedisServer, Signaling, free_port, wait_until};
use serde_json::Value;

fn workspace_root() -> PathBuf {
    // tests/load → the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `OTTER_SIGNALING_BIN`, or build the debug binary (the build every suite shares) and find it
/// in the workspace target dir.
fn signaling_bin() -> String {
    if let Ok(b) = std::env::var("OTTER_SIGNALING_BIN") {
        return b;
    }
    let root = workspace_root();
    let ok = Command::new(root.join("tests/build-workspace"))
        .status()
        .expect("run tests/build-workspace")
        .success();
    assert!(ok, "tests/build-workspace failed");
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(&root)
        .output()
        .expect("cargo metadata");
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let target = meta["target_directory"]
        .as_str()
        .expect("target_directory")
        .to_owned();
    format!("{target}/debug/otter-signaling")
}

fn otter_load(args: &[&str]) -> Value {
    let dir_kept = tempfile::TempDir::with_prefix("otter-load-smoke-").expect("a temp dir");
    let dir = dir_kept.path();
    let json = dir.join(format!("{}.json", args.join("_").replace(['/', ':'], "")));
    let out = Command::new(env!("CARGO_BIN_EXE_otter-load"))
        .arg("run")
        .args(args)
        .args(["--phase-timeout", "30s", "--json"])
        .arg(&json)
        .stderr(Stdio::inherit())
        .output()
        .expect("run otter-load");
    assert!(out.status.success(), "otter-load {args:?} failed");
    let text = std::fs::read_to_string(&json).expect("report written");
    serde_json::from_str(&text).expect("report is JSON")
}

fn assert_clean(r: &Value, peers: u64, k: u64) {
    assert_eq!(r["errors"], 0, "errors: {}", r["error_samples"]);
    assert_eq!(r["connected"], peers, "{r}");
    let expected = peers * (k - 1) * 11;
    assert_eq!(r["expected_messages"], expected);
    assert_eq!(r["received_messages"], expected, "messages lost: {r}");
    assert_eq!(r["sent_messages"], expected);
    assert_eq!(r["relay"]["count"], expected);
    assert_eq!(r["join"]["count"], peers);
    assert!(
        r["total"]["joined"]["rss_kib"].as_u64().unwrap_or(0) > 0,
        "{r}"
    );
}

#[test]
fn otter_memory_store() {
    let bin = signaling_bin();
    let server = Signaling::start(&bin, &[]);
    let url = server.ws_url();
    let pid = format!("signaling={}", server.child.id());
    for k in ["2", "6"] {
        let peers = if k == "2" { 20 } else { 18 };
        let r = otter_load(&[
            "--protocol",
            "otter",
            "--url",
            &url,
            "-n",
            "20",
            "-k",
            k,
            "--pid",
            &pid,
        ]);
        assert_clean(&r, peers, k.parse().expect("k"));
    }
}

/// The production topology: three replicas sharing one real redis-server, clients spread
/// round robin, so most frames cross replicas.
#[test]
fn otter_redis_three_replicas() {
    let bin = signaling_bin();
    let redis = RedisServer::start();
    let url = redis.url();
    let replicas: Vec<Signaling> = (0..3)
        .map(|_| Signaling::start(&bin, &["--redis-url", &url]))
        .collect();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for r in &replicas {
        rt.block_on(wait_until("replica ready", Duration::from_secs(20), || {
            r.ready()
        }));
    }
    let mut args: Vec<String> = vec!["--protocol".into(), "otter".into()];
    for r in &replicas {
        args.extend(["--url".into(), r.ws_url()]);
        args.extend(["--pid".into(), format!("signaling={}", r.child.id())]);
    }
    for (n, k) in [(20, 2), (18, 6)] {
        let mut a = args.clone();
        a.extend(["-n".into(), n.to_string(), "-k".into(), k.to_string()]);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        assert_clean(&otter_load(&a), n, k);
    }
}

#[test]
fn refuses_non_loopback_target() {
    let out = Command::new(env!("CARGO_BIN_EXE_otter-load"))
        .args([
            "run",
            "--protocol",
            "otter",
            "--url",
            "ws://192.0.2.1:80/ws",
        ])
        .args(["-n", "2", "-k", "2"])
        .output()
        .expect("run otter-load");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a loopback address"), "{err}");
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Needs `tests/bench/run --install` (npm ci of the pinned `peer`). Skipped with a message
/// when it has not run, unless OTTER_REQUIRE_PEERJS=1 (tests/run-all sets it).
#[test]
fn peerjs_server() {
    let bench = workspace_root().join("tests/bench");
    let peerjs = bench.join("node_modules/.bin/peerjs");
    if !peerjs.exists() {
        assert!(
            std::env::var("OTTER_REQUIRE_PEERJS").as_deref() != Ok("1"),
            "{} missing: run tests/bench/run --install",
            peerjs.display()
        );
        eprintln!(
            "SKIP peerjs_server: {} missing (run tests/bench/run --install)",
            peerjs.display()
        );
        return;
    }
    let port = free_port();
    let child = Command::new(&peerjs)
        .args(["--port", &port.to_string(), "--host", "127.0.0.1"])
        .current_dir(&bench)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start peerjs");
    let pid = format!("peerjs={}", child.id());
    let mut guard = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "peerjs did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Whoever answered must be PeerJS, not another process that took the port.
    assert!(
        guard.0.try_wait().expect("peerjs status").is_none(),
        "peerjs exited (port {port} taken?)"
    );
    let url = format!("ws://127.0.0.1:{port}/");
    let r = otter_load(&[
        "--protocol",
        "peerjs",
        "--url",
        &url,
        "-n",
        "20",
        "-k",
        "2",
        "--pid",
        &pid,
    ]);
    assert_clean(&r, 20, 2);
}
