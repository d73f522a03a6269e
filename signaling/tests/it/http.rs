//! The HTTP side: health, readiness, metrics, ICE servers with TURN credentials, embedded files.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::{Client, Server, get};
use otter_signaling::turn;
use serde_json::{Value, json};

#[tokio::test]
async fn health_and_metrics() {
    let server = Server::start(&[]);
    assert_eq!(
        get(&server.url("/healthz"))
            .await
            .text()
            .await
            .expect("body"),
        "ok"
    );
    assert_eq!(get(&server.url("/readyz")).await.status(), 200);
    let (mut a, _) = Client::join(&server, "m", "A").await;
    let (mut b, _) = Client::join(&server, "m", "B").await;
    a.recv().await;
    b.send(json!({"type":"offer","to":a.peer_id,"sdp":"x"}))
        .await;
    a.recv().await;
    b.send(json!({"type":"join","room":"m"})).await;
    b.expect_error("already-joined").await;
    let text = get(&server.url("/metrics"))
        .await
        .text()
        .await
        .expect("body");
    for line in [
        "otter_signaling_connections 2",
        "otter_signaling_peers 2",
        "otter_signaling_rooms 1",
        "otter_signaling_messages_relayed_total{type=\"offer\"} 1",
        "otter_signaling_errors_total{code=\"already-joined\"} 1",
        "otter_signaling_join_duration_seconds_count 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

#[tokio::test]
async fn ice_servers_carry_coturn_compatible_credentials() {
    let server = Server::start(&[
        "--turn-secret",
        "north",
        "--turn-ttl",
        "1h",
        "--stun-uris",
        "stun:127.0.0.1:3478",
        "--turn-uris",
        "turn:127.0.0.1:3478?transport=udp,turn:127.0.0.1:3478?transport=tcp",
    ]);
    let resp = get(&server.url("/v1/ice-servers")).await;
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["ttl"], 3600);
    assert_eq!(
        body["iceServers"][0],
        json!({"urls":["stun:127.0.0.1:3478"]})
    );
    let turn_entry = &body["iceServers"][1];
    let username = turn_entry["username"].as_str().expect("username");
    let (expiry, id) = username.split_once(':').expect("expiry:id");
    let expiry: u64 = expiry.parse().expect("number");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(
        (now + 3590..=now + 3610).contains(&expiry),
        "expiry {expiry} vs now {now}"
    );
    assert_eq!(
        turn_entry["credential"],
        turn::mint(b"north", id, expiry).credential
    );

    // The same credentials come with `joined`, for the peer's own id.
    let (c, joined) = Client::join(&server, "r", "A").await;
    let user = joined["iceServers"][1]["username"]
        .as_str()
        .expect("username");
    assert!(user.ends_with(&format!(":{}", c.peer_id)), "{user}");
}

#[tokio::test]
async fn ice_config_file_is_reloaded() {
    let dir_kept = tempfile::TempDir::with_prefix("otter-http-ice-").expect("a temp dir");
    let dir = dir_kept.path();
    let path = dir.join("ice-servers.json");
    std::fs::write(
        &path,
        r#"{"stunUris":["stun:203.0.113.1:3478"],"turnUris":["turn:203.0.113.1:3478"]}"#,
    )
    .expect("write");
    let server = Server::start(&[
        "--turn-secret",
        "s",
        "--ice-config",
        path.to_str().expect("utf8"),
        "--ice-config-poll",
        "100ms",
    ]);
    let urls = || async {
        let v: Value = get(&server.url("/v1/ice-servers"))
            .await
            .json()
            .await
            .expect("json");
        // The TURN entry is the one with a credential.
        v["iceServers"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s.get("username").is_some()).cloned())
            .map(|s| s["urls"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(urls().await, json!(["turn:203.0.113.1:3478"]));
    std::fs::write(
        &path,
        r#"{"turnUris":["turn:203.0.113.2:3478","turn:203.0.113.3:3478"]}"#,
    )
    .expect("write");
    let mut seen = Value::Null;
    for _ in 0..50 {
        seen = urls().await;
        if seen == json!(["turn:203.0.113.2:3478", "turn:203.0.113.3:3478"]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen,
        json!(["turn:203.0.113.2:3478", "turn:203.0.113.3:3478"])
    );
}

#[tokio::test]
async fn bad_ice_config_stops_the_start_with_a_clear_error() {
    let dir_kept = tempfile::TempDir::with_prefix("otter-http-badice-").expect("a temp dir");
    let dir = dir_kept.path();
    let path = dir.join("ice.json");
    std::fs::write(&path, r#"{"turnUris":["http://nope"]}"#).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_otter-signaling"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--ice-config",
            path.to_str().expect("utf8"),
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("http://nope") && err.contains("turn:"),
        "{err}"
    );
}

#[tokio::test]
async fn sdk_and_demo_page_are_served_with_revalidation() {
    let server = Server::start(&[]);
    let js = get(&server.url("/otter.js")).await;
    assert_eq!(js.status(), 200);
    assert!(
        js.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .contains("javascript")
    );
    assert_eq!(js.headers()["cache-control"], "no-cache");
    let etag = js.headers()["etag"].to_str().expect("ascii").to_owned();
    assert!(js.text().await.expect("body").contains("export"));
    let again = reqwest::Client::new()
        .get(server.url("/otter.js"))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("get");
    assert_eq!(again.status(), 304);
    assert_eq!(
        again.headers()["access-control-allow-origin"],
        "*",
        "importable from apps on other origins"
    );
    let page = get(&server.url("/")).await;
    assert!(
        page.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/html")
    );
    assert_eq!(get(&server.url("/nope.js")).await.status(), 404);
}

#[tokio::test]
async fn ice_servers_answer_cors_preflights_for_allowed_origins() {
    let server = Server::start(&["--allowed-origins", "https://app.example"]);
    let preflight = |origin: &'static str| {
        let url = server.url("/v1/ice-servers");
        async move {
            reqwest::Client::new()
                .request(reqwest::Method::OPTIONS, url)
                .header("origin", origin)
                .header("access-control-request-method", "GET")
                .header("access-control-request-headers", "authorization")
                .send()
                .await
                .expect("preflight")
        }
    };
    let ok = preflight("https://app.example").await;
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(
        ok.headers()["access-control-allow-headers"]
            .to_str()
            .expect("ascii")
            .contains("authorization"),
        "{:?}",
        ok.headers()
    );
    let other = preflight("https://evil.example").await;
    assert!(other.headers().get("access-control-allow-origin").is_none());
}
