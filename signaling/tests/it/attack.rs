//! The server under attack: peers that stop reading, floods of binary and control frames,
//! cut-offs whose close code must arrive, sockets that never join, held seats. Each test
//! failed on the server before the fix it names.

use std::time::{Duration, Instant};

use crate::common::{Client, Server, Store};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// Read until the close frame (or the end) and return what came: the error codes seen and
/// the close frame. A TCP reset shows up as `Err`, which the protocol promises never happens
/// to a cut-off client.
async fn read_to_close(
    stream: &mut futures::stream::SplitStream<otter_testkit::Ws>,
    within: Duration,
) -> Result<(Vec<String>, Option<CloseFrame>), String> {
    let deadline = tokio::time::Instant::now() + within;
    let mut codes = Vec::new();
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .map_err(|_| format!("no close within {within:?}; saw {codes:?}"))?;
        match next {
            None => return Ok((codes, None)),
            Some(Err(e)) => return Err(format!("transport error after {codes:?}: {e}")),
            Some(Ok(Message::Close(f))) => return Ok((codes, f)),
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).map_err(|e| e.to_string())?;
                if let Some(code) = v["code"].as_str() {
                    codes.push(code.to_owned());
                }
            }
            Some(Ok(_)) => {}
        }
    }
}

async fn metric(server: &Server, line: &str) -> bool {
    let text = crate::common::get(&server.url("/metrics"))
        .await
        .text()
        .await
        .unwrap_or_default();
    text.lines().any(|l| l == line)
}

/// Bug 1: a member that stops reading while others send it more than its socket holds used to
/// keep its seat forever (the connection task was stuck in a write). Now it is cut off.
async fn a_peer_that_stops_reading_loses_its_seat(store: Store) {
    let server = Server::start_on(
        store,
        &[
            "--idle-timeout",
            "3s",
            "--ping-interval",
            "1s",
            "--max-peers-per-room",
            "2",
            "--shutdown-grace",
            "20s",
        ],
    )
    .await;
    let (deaf, _) = Client::join(&server, "undead", "Deaf").await;
    let (mut b, _) = Client::join(&server, "undead", "B").await;
    let deaf_id = deaf.peer_id.clone();
    let sdp = "x".repeat(60_000);
    let mut left = None;
    for _ in 0..120 {
        b.send(json!({"type":"offer","to":deaf_id,"sdp":sdp})).await;
    }
    // Whatever B hears now: unknown-peer errors once the seat is gone, and its peer-left.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match b.try_recv(Duration::from_millis(500)).await {
            Some(m) if m["type"] == "peer-left" => {
                left = Some(m);
                break;
            }
            _ => {}
        }
    }
    let left = left.expect("the peer that stopped reading was never removed");
    assert_eq!(left["peerId"], deaf_id.as_str());
    assert!(
        left["reason"] == "kicked" || left["reason"] == "timeout",
        "{left}"
    );
    // Its seat is free for a newcomer, who does not see it.
    let (_c, joined) = Client::join(&server, "undead", "C").await;
    assert_eq!(joined["peers"].as_array().map(Vec::len), Some(1));
    // And shutdown does not wait for it.
    let started = Instant::now();
    server.sigterm();
    let mut server = server;
    crate::common::wait_until("the server to exit", Duration::from_secs(8), || {
        std::future::ready(matches!(server.child.try_wait(), Ok(Some(_))))
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(8));
    drop(deaf);
}

/// Bug 2: binary frames went around the rate limiter (3000 got 3000 `bad-json` replies).
async fn binary_frames_are_rate_limited(store: Store) {
    let server = Server::start_on(store, &["--rate-limit", "5", "--rate-burst", "10"]).await;
    let c = Client::connect(&server).await;
    let (mut sink, mut stream) = c.ws.split();
    let writer = tokio::spawn(async move {
        for _ in 0..300 {
            if sink
                .send(Message::Binary(vec![7u8; 64].into()))
                .await
                .is_err()
            {
                break;
            }
        }
        sink
    });
    let (codes, close) = read_to_close(&mut stream, Duration::from_secs(10))
        .await
        .expect("a clean close");
    let _ = writer.await;
    assert!(codes.iter().any(|c| c == "rate-limited"), "{codes:?}");
    assert!(codes.len() < 100, "{} replies to a flood", codes.len());
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1008));
}

/// Bug 2: WebSocket pings were answered without limit.
async fn ping_floods_are_cut_off(store: Store) {
    let server = Server::start_on(store, &["--rate-limit", "5", "--rate-burst", "10"]).await;
    let c = Client::connect(&server).await;
    let (mut sink, mut stream) = c.ws.split();
    let writer = tokio::spawn(async move {
        for _ in 0..500 {
            if sink.send(Message::Ping(vec![1u8; 8].into())).await.is_err() {
                break;
            }
        }
    });
    let (_, close) = read_to_close(&mut stream, Duration::from_secs(10))
        .await
        .expect("a clean close");
    let _ = writer.await;
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1008));
}

/// Bug 2: a client's pings used to reset the idle timer, so a socket that never reads (and so
/// never answers the server's pings) stayed forever by pinging.
async fn client_pings_do_not_keep_a_dead_reader_alive(store: Store) {
    let server = Server::start_on(
        store,
        &["--idle-timeout", "800ms", "--ping-interval", "200ms"],
    )
    .await;
    let mut c = Client::connect(&server).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        if c.ws.send(Message::Ping(vec![].into())).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metric(
            &server,
            "otter_signaling_errors_total{code=\"idle-timeout\"} 1"
        )
        .await,
        "a client that only pings was not timed out"
    );
}

/// Bug 3: the server dropped the socket with a 1 MB frame unread, the kernel reset the
/// connection, and the client never saw `too-large` nor the 1009 close.
async fn too_large_close_arrives_despite_unread_input(store: Store) {
    let server = Server::start_on(store, &["--max-message-bytes", "4096"]).await;
    let c = Client::connect(&server).await;
    let (mut sink, mut stream) = c.ws.split();
    let writer = tokio::spawn(async move {
        let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(1 << 20));
        let _ = sink.send(Message::Text(big.into())).await;
    });
    let (codes, close) = read_to_close(&mut stream, Duration::from_secs(10))
        .await
        .expect("a clean close, not a reset");
    let _ = writer.await;
    assert_eq!(codes, vec!["too-large".to_owned()]);
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1009));
}

/// Bug 3: the same for a flood still in flight when the server cuts it off.
async fn rate_limit_close_arrives_despite_a_flood_in_flight(store: Store) {
    let server = Server::start_on(store, &["--rate-limit", "5", "--rate-burst", "10"]).await;
    let c = Client::connect(&server).await;
    let (mut sink, mut stream) = c.ws.split();
    let writer = tokio::spawn(async move {
        let frame = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(30_000));
        for _ in 0..400 {
            if sink
                .send(Message::Text(frame.clone().into()))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let (codes, close) = read_to_close(&mut stream, Duration::from_secs(10))
        .await
        .expect("a clean close, not a reset");
    writer.abort();
    assert!(codes.iter().any(|c| c == "rate-limited"), "{codes:?}");
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1008));
}

/// A socket that answers pings but never joins used to live forever.
async fn sockets_that_never_join_are_closed(store: Store) {
    let server = Server::start_on(store, &["--join-timeout", "1s"]).await;
    let c = Client::connect(&server).await;
    let (_sink, mut stream) = c.ws.split();
    let (codes, close) = read_to_close(&mut stream, Duration::from_secs(5))
        .await
        .expect("closed");
    assert_eq!(codes, vec!["join-timeout".to_owned()]);
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1008));
}

/// Violations used to add up over a connection's whole life: two bursts 6 s apart closed a
/// well-behaved client. Now they decay at the sustained rate.
async fn rate_limit_violations_decay(store: Store) {
    let server = Server::start_on(store, &["--rate-limit", "5", "--rate-burst", "10"]).await;
    let mut c = Client::connect(&server).await;
    for round in 0..2 {
        for _ in 0..17 {
            c.send(json!({"type":"ping"})).await;
        }
        let mut limited = 0;
        for _ in 0..17 {
            let m = c.recv().await;
            if m["code"] == "rate-limited" {
                limited += 1;
            }
        }
        assert!(limited >= 5, "round {round}: {limited} refused");
        // Long enough for the bucket and the strikes to refill at 5/s.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    c.send(json!({"type":"ping"})).await;
    assert_eq!(c.recv().await["type"], "pong");
}

/// Close code 4000 used to hold a seat for the whole reconnect grace, so one client could keep
/// a two-seat room full by joining and leaving with 4000. Seats that never signaled are held
/// only briefly; seats that did keep the grace.
async fn keep_seat_is_bounded_for_seats_that_never_signaled(store: Store) {
    let server = Server::start_on(store, &["--reconnect-grace", "30s"]).await;
    let (mut a, _) = Client::join(&server, "held", "A").await;
    let (mut squatter, _) = Client::join(&server, "held", "S").await;
    a.recv().await;
    let _ = squatter
        .ws
        .close(Some(CloseFrame {
            code: 4000.into(),
            reason: "keep".into(),
        }))
        .await;
    let left = a.recv().await;
    assert_eq!(left["type"], "peer-left", "{left}");
    assert_eq!(left["reason"], "timeout");

    let (mut talker, _) = Client::join(&server, "held", "T").await;
    a.recv().await;
    talker
        .send(json!({"type":"offer","to":a.peer_id,"sdp":"v=0"}))
        .await;
    a.recv().await;
    let _ = talker
        .ws
        .close(Some(CloseFrame {
            code: 4000.into(),
            reason: "keep".into(),
        }))
        .await;
    a.expect_silence(Duration::from_secs(4)).await;
}

/// Resume tokens used to stay the same on every resume; now each resume hands out a new one
/// and the old one stops working.
async fn resume_tokens_rotate(store: Store) {
    let server = Server::start_on(store, &["--reconnect-grace", "10s"]).await;
    let (mut a, _) = Client::join(&server, "rot", "A").await;
    let (b, _) = Client::join(&server, "rot", "B").await;
    a.recv().await;
    let first = b.resume_token.clone();
    b.drop_connection();
    let mut b2 = Client::connect(&server).await;
    let joined = b2
        .join_msg(json!({"type":"join","room":"rot","resume":first}))
        .await;
    assert_eq!(joined["resumed"], true);
    assert_ne!(joined["resumeToken"], first.as_str(), "not rotated");
    let mut thief = Client::connect(&server).await;
    let j = thief
        .join_msg(json!({"type":"join","room":"rot","resume":first}))
        .await;
    assert_eq!(j["resumed"], false, "the old token still resumed the seat");
}

/// Display names with control or format characters (bidi overrides, zero-width) used to be
/// accepted: an impersonation tool in the participant list.
async fn display_names_refuse_control_and_format_characters(store: Store) {
    let server = Server::start_on(store, &[]).await;
    let mut c = Client::connect(&server).await;
    for name in ["Dr.\u{202e}evil", "A\u{200b}B", "nul\u{0}", "tab\tname"] {
        c.send(json!({"type":"join","room":"names","name":name}))
            .await;
        c.expect_error("bad-message").await;
    }
    c.join_msg(json!({"type":"join","room":"names","name":"Zoë Ångström"}))
        .await;
}

both_stores!(
    a_peer_that_stops_reading_loses_its_seat,
    binary_frames_are_rate_limited,
    ping_floods_are_cut_off,
    client_pings_do_not_keep_a_dead_reader_alive,
    too_large_close_arrives_despite_unread_input,
    rate_limit_close_arrives_despite_a_flood_in_flight,
    sockets_that_never_join_are_closed,
    rate_limit_violations_decay,
    keep_seat_is_bounded_for_seats_that_never_signaled,
    resume_tokens_rotate,
    display_names_refuse_control_and_format_characters
);
