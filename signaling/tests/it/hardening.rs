//! The weaknesses found by probing the server, each closed and kept closed: slow and oversized
//! request heads, room-token rules (`nbf`, lifetime, single use, resume bound to the token),
//! the bearer scheme, security headers, the metrics listener, plain-text logs, relay-only.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Client, Server, Store, get};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

const SECRET: &str = "hardening-secret";

fn token(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encode")
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

/// Read from a raw socket until the server closes it (or `within` passes: then `None`).
fn read_until_closed(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(within)).expect("timeout");
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(got),
            Err(_) => return None,
        }
        if started.elapsed() > within {
            return None;
        }
    }
}

/// A client that sends its first frame in the same write as its upgrade request (without
/// waiting for the 101) is answered: the bytes read with the request are parsed first, not
/// lost when the connection is taken back from hyper.
#[tokio::test]
async fn a_frame_sent_with_the_upgrade_request_is_answered() {
    let server = Server::start(&[]);
    let mut s = TcpStream::connect(server.addr).expect("connect");
    let mut bytes = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .to_vec();
    let payload = br#"{"type":"ping"}"#;
    let mask = [1u8, 2, 3, 4];
    bytes.extend_from_slice(&[0x81, 0x80 | payload.len() as u8]);
    bytes.extend_from_slice(&mask);
    bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&bytes).expect("write");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(r#""type":"pong""#) {
        match s.read(&mut buf) {
            Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
            other => panic!(
                "no pong ({other:?}); read: {}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 101"));
}

#[tokio::test]
async fn slow_and_oversized_request_heads_are_refused() {
    let server = Server::start(&["--header-read-timeout", "1s"]);
    // Slowloris: half a request, then nothing.
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(server.addr).expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .expect("write");
        slow.push(s);
    }
    let started = Instant::now();
    for s in &mut slow {
        assert!(
            read_until_closed(s, Duration::from_secs(5)).is_some(),
            "a half-sent request head was kept open"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // A connection that sends nothing at all is closed too.
    let mut idle = TcpStream::connect(server.addr).expect("connect");
    assert!(read_until_closed(&mut idle, Duration::from_secs(5)).is_some());

    // A 200 KB header is refused, not parsed.
    let mut big = TcpStream::connect(server.addr).expect("connect");
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let _ = big.write_all(head.as_bytes());
    let reply = read_until_closed(&mut big, Duration::from_secs(5)).expect("closed");
    let reply = String::from_utf8_lossy(&reply);
    assert!(!reply.contains(" 200 "), "{reply}");
    // The server still serves.
    assert_eq!(get(&server.url("/healthz")).await.status(), 200);
}

async fn token_rules_nbf_lifetime_and_single_use(store: Store) {
    let server = Server::start_on(
        store,
        &[
            "--token-secret",
            SECRET,
            "--max-token-lifetime",
            "1h",
            "--single-use-tokens",
        ],
    )
    .await;
    let mut c = Client::connect(&server).await;
    let early = token(json!({"room":"r","exp":now()+600,"nbf":now()+300,"jti":"a"}));
    c.send(json!({"type":"join","room":"r","token":early}))
        .await;
    c.expect_error("auth-invalid").await;
    let long = token(json!({"room":"r","exp":now()+7200,"jti":"b"}));
    c.send(json!({"type":"join","room":"r","token":long})).await;
    c.expect_error("auth-invalid").await;
    let no_jti = token(json!({"room":"r","exp":now()+600}));
    c.send(json!({"type":"join","room":"r","token":no_jti}))
        .await;
    c.expect_error("auth-invalid").await;

    let once = token(json!({"room":"r","exp":now()+600,"jti":"once"}));
    c.join_msg(json!({"type":"join","room":"r","token":once}))
        .await;
    let mut again = Client::connect(&server).await;
    again
        .send(json!({"type":"join","room":"r","token":once}))
        .await;
    let err = again.expect_error("auth-invalid").await;
    assert!(
        err["message"]
            .as_str()
            .unwrap_or("")
            .contains("already used")
    );
    let other = token(json!({"room":"r","exp":now()+600,"jti":"other"}));
    again
        .join_msg(json!({"type":"join","room":"r","token":other}))
        .await;
}

/// A resume token does not outlive the room token that admitted the seat.
async fn resume_is_bound_to_the_room_token(store: Store) {
    let server = Server::start_on(
        store,
        &["--token-secret", SECRET, "--reconnect-grace", "20s"],
    )
    .await;
    let mut a = Client::connect(&server).await;
    a.join_msg(
        json!({"type":"join","room":"r","token":token(json!({"room":"r","exp":now()+600}))}),
    )
    .await;
    let mut b = Client::connect(&server).await;
    // exp is checked with 5 s of leeway at join; a token about to expire gets in...
    b.join_msg(json!({"type":"join","room":"r","token":token(json!({"room":"r","exp":now()+2}))}))
        .await;
    a.recv().await;
    b.send(json!({"type":"offer","to":a.peer_id,"sdp":"v=0"}))
        .await;
    a.recv().await;
    let resume = b.resume_token.clone();
    b.drop_connection();
    // ...and once it has expired, its seat cannot be resumed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut b2 = Client::connect(&server).await;
    b2.send(json!({"type":"join","room":"r","resume":resume}))
        .await;
    let m = b2.recv().await;
    assert!(
        m["code"] == "auth-expired" || m["code"] == "auth-required",
        "expired seat resumed: {m}"
    );
    assert_eq!(a.recv().await["type"], "peer-left");
}

#[tokio::test]
async fn bearer_scheme_is_case_insensitive() {
    let server = Server::start(&["--token-secret", SECRET]);
    let t = token(json!({"room":"r","exp":now()+600}));
    let http = reqwest::Client::new();
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let resp = http
            .get(server.url("/v1/ice-servers"))
            .header("authorization", format!("{scheme} {t}"))
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status(), 200, "scheme {scheme}");
    }
    let resp = http
        .get(server.url("/v1/ice-servers"))
        .header("authorization", format!("Basic {t}"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn page_and_sdk_carry_security_headers() {
    let server = Server::start(&[]);
    for path in ["/", "/otter.js"] {
        let resp = get(&server.url(path)).await;
        let h = resp.headers();
        let csp = h["content-security-policy"].to_str().expect("ascii");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
    }
}

#[tokio::test]
async fn metrics_can_move_to_their_own_listener() {
    let port = otter_testkit::free_port();
    let at = format!("127.0.0.1:{port}");
    let server = Server::start(&["--metrics-listen", &at]);
    assert_eq!(get(&server.url("/metrics")).await.status(), 404);
    let text = get(&format!("http://{at}/metrics"))
        .await
        .text()
        .await
        .expect("body");
    assert!(text.contains("otter_signaling_connections"), "{text}");
    assert_eq!(
        get(&format!("http://{at}/healthz")).await.status(),
        404,
        "only metrics on the metrics port"
    );
}

#[tokio::test]
async fn logs_to_a_file_have_no_colour_codes() {
    let dir_kept = tempfile::TempDir::with_prefix("otter-logs-").expect("a temp dir");
    let dir = dir_kept.path();
    let log = dir.join("stderr.log");
    let mut child = Command::new(crate::common::BIN)
        .args(["--listen", "127.0.0.1:0"])
        .env("OTTER_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start");
    let mut first = [0u8; 16];
    let _ = child.stdout.as_mut().map(|o| o.read(&mut first));
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("otter-signaling listening"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "ANSI codes in a log file: {text:?}"
    );
}

#[tokio::test]
async fn relay_only_hands_out_turn_without_stun() {
    let server = Server::start(&[
        "--relay-only",
        "--turn-secret",
        "t",
        "--stun-uris",
        "stun:127.0.0.1:3478",
        "--turn-uris",
        "turn:127.0.0.1:3478?transport=udp",
    ]);
    let body: Value = get(&server.url("/v1/ice-servers"))
        .await
        .json()
        .await
        .expect("json");
    let servers = body["iceServers"].as_array().expect("list");
    assert_eq!(servers.len(), 1, "{body}");
    assert_eq!(servers[0]["urls"][0], "turn:127.0.0.1:3478?transport=udp");
    let (_c, joined) = Client::join(&server, "r", "A").await;
    assert_eq!(joined["iceServers"].as_array().map(Vec::len), Some(1));
    assert!(!joined.to_string().contains("stun:"), "{joined}");
}

both_stores!(
    token_rules_nbf_lifetime_and_single_use,
    resume_is_bound_to_the_room_token
);

/// Info-level logs (text and JSON) name rooms and peer ids, never what the privacy statement
/// promises they do not carry: SDP, candidates, addresses, names, tokens, secrets.
#[tokio::test]
async fn info_logs_carry_no_sdp_addresses_names_or_tokens() {
    for format in ["text", "json"] {
        let dir_kept = tempfile::TempDir::with_prefix("otter-privacy-").expect("a temp dir");
        let dir = dir_kept.path();
        let log = dir.join(format!("{format}.log"));
        let mut child = Command::new(crate::common::BIN)
            .args(["--listen", "127.0.0.1:0", "--log-format", format])
            .args(["--token-secret", SECRET, "--turn-secret", "turn-s3cret"])
            .args(["--turn-uris", "turn:127.0.0.1:3478", "--rate-limit", "5"])
            .args(["--rate-burst", "5", "--max-message-bytes", "4096"])
            .env("OTTER_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("listening line");
        let addr = line
            .trim()
            .trim_start_matches("listening on http://")
            .parse()
            .expect("address");
        let server = otter_testkit::Signaling { child, addr };
        let t =
            token(json!({"room":"priv","exp":now()+600,"sub":"user-4711","name":"Dr. Secretname"}));
        let mut a = Client::connect(&server).await;
        a.join_msg(json!({"type":"join","room":"priv","token":t}))
            .await;
        let mut b = Client::connect(&server).await;
        b.join_msg(json!({"type":"join","room":"priv","name":"Pat Private","token":token(json!({"room":"priv","exp":now()+600}))}))
            .await;
        a.recv().await;
        b.send(json!({"type":"offer","to":a.peer_id,"sdp":"v=0 o=SDPMARKER 198.51.100.23"}))
            .await;
        b.send(json!({"type":"candidate","to":a.peer_id,"candidate":{"candidate":"candidate:1 1 udp 1 203.0.113.99 5000 typ host"}}))
            .await;
        a.recv().await;
        a.recv().await;
        let resume = b.resume_token.clone();
        b.drop_connection();
        let mut b2 = Client::connect(&server).await;
        b2.join_msg(json!({"type":"join","room":"priv","resume":resume}))
            .await;
        b2.send(json!({"type":"ping","pad":"x".repeat(5000)})).await;
        b2.expect_close().await;
        a.recv().await;
        drop(server);
        let text = std::fs::read_to_string(&log).expect("log");
        assert!(text.contains("peer joined"), "{format}: {text}");
        for secret in [
            "SDPMARKER",
            "198.51.100.23",
            "203.0.113.99",
            "candidate:1",
            "Secretname",
            "Pat Private",
            "user-4711",
            &t,
            &resume,
            SECRET,
            "turn-s3cret",
        ] {
            assert!(
                !text.contains(secret),
                "{format} logs carry {secret:?}:\n{text}"
            );
        }
    }
}
