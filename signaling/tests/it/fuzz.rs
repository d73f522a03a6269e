//! A bounded random-frame fuzzer against the real binary: several connections send a seeded
//! mix of valid, half-valid and garbage frames (text, binary, control, oversized). Nothing may
//! crash the server or leak a seat. The seed is fixed unless `OTTER_FUZZ_SEED` is set, and is
//! printed with any failure, so a failing run can be replayed.

use std::time::Duration;

use crate::common::{Client, Server, Store};
use futures::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const DEFAULT_SEED: u64 = 0x0775_e4f2;
const CONNECTIONS: usize = 6;
const FRAMES: usize = 150;

fn seed() -> u64 {
    std::env::var("OTTER_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED)
}

fn random_string(rng: &mut StdRng, max: usize) -> String {
    let len = rng.random_range(0..=max);
    (0..len)
        .map(|_| match rng.random_range(0..10) {
            0 => char::from_u32(rng.random_range(0..0x30000)).unwrap_or('\u{fffd}'),
            1 => ['\u{202e}', '\u{200b}', '\0', '"', '\\', '{'][rng.random_range(0..6)],
            _ => char::from(rng.random_range(b'a'..=b'z')),
        })
        .collect()
}

fn random_value(rng: &mut StdRng, peers: &[String]) -> Value {
    match rng.random_range(0..8) {
        0 => Value::Null,
        1 => json!(rng.random::<i64>()),
        2 => json!(rng.random::<bool>()),
        3 => json!([random_string(rng, 8)]),
        4 => json!({"candidate": random_string(rng, 40), "sdpMid": "0"}),
        5 if !peers.is_empty() => json!(peers[rng.random_range(0..peers.len())]),
        _ => json!(random_string(rng, 24)),
    }
}

/// One frame of the mix.
fn frame(rng: &mut StdRng, peers: &[String]) -> Message {
    const TYPES: [&str; 8] = [
        "join",
        "offer",
        "answer",
        "candidate",
        "leave",
        "ping",
        "nope",
        "",
    ];
    const FIELDS: [&str; 8] = [
        "room",
        "to",
        "sdp",
        "candidate",
        "name",
        "token",
        "resume",
        "id",
    ];
    match rng.random_range(0..100) {
        0..=4 => Message::Binary(
            (0..rng.random_range(0..512))
                .map(|_| rng.random())
                .collect::<Vec<u8>>()
                .into(),
        ),
        5..=9 => Message::Ping(vec![0u8; rng.random_range(0..100)].into()),
        10..=19 => Message::Text(random_string(rng, 200).into()),
        // Rare: it ends the connection (too-large, 1009).
        20 => Message::Text("x".repeat(rng.random_range(4000..9000)).into()),
        _ => {
            let mut obj = serde_json::Map::new();
            obj.insert(
                "type".into(),
                json!(TYPES[rng.random_range(0..TYPES.len())]),
            );
            if rng.random_bool(0.5) {
                obj.insert(
                    "room".into(),
                    json!(format!("fz{}", rng.random_range(0..3))),
                );
            }
            for _ in 0..rng.random_range(0..4) {
                let field = FIELDS[rng.random_range(0..FIELDS.len())];
                obj.insert(field.into(), random_value(rng, peers));
            }
            Message::Text(Value::Object(obj).to_string().into())
        }
    }
}

/// One fuzzing connection: send the frames, reading what comes back meanwhile; it may be cut
/// off (rate limits, too-large), which is fine. Ends with a proper close. Returns how many
/// replies it got.
async fn fuzz_one(server: &Server, rng: &mut StdRng, peers: &[String]) -> usize {
    let c = Client::connect(server).await;
    let (mut sink, mut stream) = c.ws.split();
    let reader = tokio::spawn(async move {
        let mut replies = 0;
        while let Some(Ok(m)) = stream.next().await {
            replies += usize::from(m.is_text());
        }
        replies
    });
    for _ in 0..FRAMES {
        if sink.send(frame(rng, peers)).await.is_err() {
            break;
        }
    }
    let _ = sink.close().await;
    match tokio::time::timeout(Duration::from_secs(10), reader).await {
        Ok(Ok(n)) => n,
        _ => 0,
    }
}

async fn random_frames_neither_crash_nor_leak_seats(store: Store) {
    let seed = seed();
    eprintln!("fuzz seed {seed} (replay with OTTER_FUZZ_SEED={seed})");
    let server = Server::start_on(
        store,
        &[
            "--max-message-bytes",
            "8192",
            "--reconnect-grace",
            "300ms",
            "--rate-limit",
            "200",
            "--rate-burst",
            "400",
        ],
    )
    .await;
    // Real peers in the fuzzed rooms, so relays have somewhere to go.
    let (a, _) = Client::join(&server, "fz0", "A").await;
    let (b, _) = Client::join(&server, "fz1", "B").await;
    let peers = vec![a.peer_id.clone(), b.peer_id.clone(), "p-0".into()];
    let mut rng = StdRng::seed_from_u64(seed);
    let mut replies = 0;
    for _ in 0..CONNECTIONS {
        let mut own = StdRng::seed_from_u64(rng.random());
        replies += fuzz_one(&server, &mut own, &peers).await;
    }
    // The mix reached the protocol (errors, pongs, joined). A loose bound: replies still
    // queued when a client's own close crosses them are lost, and how many depends on timing.
    assert!(
        replies >= CONNECTIONS * 4,
        "seed {seed}: only {replies} replies"
    );
    assert!(
        server.ready().await,
        "seed {seed}: server not ready after fuzzing"
    );
    a.close().await;
    b.close().await;
    let metrics = server.url("/metrics");
    crate::common::wait_until(
        &format!("seed {seed}: every seat and connection to be released"),
        Duration::from_secs(15),
        || {
            let metrics = metrics.clone();
            async move {
                let text = match reqwest::get(&metrics).await {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(_) => return false,
                };
                [
                    "otter_signaling_peers 0",
                    "otter_signaling_connections 0",
                    "otter_signaling_rooms 0",
                ]
                .iter()
                .all(|want| text.lines().any(|l| l == *want))
            }
        },
    )
    .await;
    if let Some(redis) = &server.redis {
        crate::common::wait_until(
            &format!("seed {seed}: no room keys left in Redis"),
            Duration::from_secs(10),
            || std::future::ready(!redis.keys().iter().any(|k| k.starts_with("otter:room:"))),
        )
        .await;
    }
}

both_stores!(random_frames_neither_crash_nor_leak_seats);
