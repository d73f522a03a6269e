//! Every limit and every bad input is answered with its error code, and other rooms keep working.

use std::time::Duration;

use crate::common::{Client, Server, Store};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// After the abuse, a fresh pair in another room still signals.
async fn others_still_work(server: &Server) {
    let (mut a, _) = Client::join(server, "healthy", "A").await;
    let (mut b, _) = Client::join(server, "healthy", "B").await;
    a.recv().await;
    b.send(json!({"type":"offer","to":a.peer_id,"sdp":"ok"}))
        .await;
    assert_eq!(a.recv().await["sdp"], "ok");
    a.send(json!({"type":"leave"})).await;
    a.recv().await;
    b.recv().await;
}

async fn malformed_and_misplaced_messages_get_error_frames(store: Store) {
    let server = Server::start_on(store, &[]).await;
    let mut c = Client::connect(&server).await;
    c.send_raw(Message::Text("{not json".into())).await;
    c.expect_error("bad-json").await;
    c.send_raw(Message::Text("[1,2,3]".into())).await;
    c.expect_error("bad-json").await;
    c.send_raw(Message::Binary(vec![1u8, 2, 3].into())).await;
    c.expect_error("bad-json").await;
    c.send(json!({"room":"x"})).await;
    c.expect_error("bad-message").await;
    c.send(json!({"type":"teleport","id":42})).await;
    assert_eq!(c.expect_error("unknown-type").await["ref"], 42);
    c.send(json!({"type":"offer","to":"p-1"})).await;
    c.expect_error("bad-message").await;
    c.send(json!({"type":"offer","to":"p-1","sdp":"x"})).await;
    c.expect_error("not-joined").await;
    c.send(json!({"type":"leave"})).await;
    c.expect_error("not-joined").await;
    c.send(json!({"type":"join","room":"has space"})).await;
    c.expect_error("bad-room-id").await;
    c.send(json!({"type":"join","room":"x".repeat(65)})).await;
    c.expect_error("bad-room-id").await;
    c.send(json!({"type":"join","room":""})).await;
    c.expect_error("bad-room-id").await;
    c.send(json!({"type":"ping"})).await;
    assert_eq!(c.recv().await, json!({"type":"pong"}));

    c.join_msg(json!({"type":"join","room":"r"})).await;
    c.send(json!({"type":"join","room":"r"})).await;
    c.expect_error("already-joined").await;
    c.send(json!({"type":"answer","to":"p-nobody","sdp":"x"}))
        .await;
    c.expect_error("unknown-peer").await;
    let me = c.peer_id.clone();
    c.send(json!({"type":"answer","to":me,"sdp":"x"})).await;
    c.expect_error("unknown-peer").await;
    c.send(json!({"type":"candidate","to":"p-nobody","candidate":"nope"}))
        .await;
    c.expect_error("bad-message").await;
    // The connection survived all of it.
    c.send(json!({"type":"ping"})).await;
    assert_eq!(c.recv().await, json!({"type":"pong"}));
    others_still_work(&server).await;
}

async fn room_capacity_is_configurable(store: Store) {
    let server = Server::start_on(store, &["--max-peers-per-room", "2"]).await;
    let (_a, _) = Client::join(&server, "small", "A").await;
    let (_b, _) = Client::join(&server, "small", "B").await;
    let mut c = Client::connect(&server).await;
    c.send(json!({"type":"join","room":"small"})).await;
    let err = c.expect_error("room-full").await;
    assert!(err["message"].as_str().unwrap_or("").contains('2'), "{err}");
    // The refused client may join elsewhere.
    c.join_msg(json!({"type":"join","room":"other"})).await;
}

async fn oversized_frames_close_the_connection(store: Store) {
    let server = Server::start_on(store, &["--max-message-bytes", "4096"]).await;
    let (mut a, _) = Client::join(&server, "big", "A").await;
    let (mut b, _) = Client::join(&server, "big", "B").await;
    a.recv().await;
    b.send(json!({"type":"offer","to":a.peer_id,"sdp":"x".repeat(5000)}))
        .await;
    b.expect_error("too-large").await;
    let frame = b.expect_close().await.expect("close frame");
    assert_eq!(u16::from(frame.code), 1009);
    assert_eq!(a.recv().await["reason"], "kicked");
    others_still_work(&server).await;
}

async fn flooding_is_rate_limited_then_cut_off(store: Store) {
    let server = Server::start_on(store, &["--rate-limit", "5", "--rate-burst", "10"]).await;
    let mut c = Client::connect(&server).await;
    for _ in 0..60 {
        c.send(json!({"type":"ping"})).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    loop {
        match c.try_recv(Duration::from_secs(3)).await {
            Some(m) if m["type"] == "pong" => pongs += 1,
            Some(m) if m["code"] == "rate-limited" => limited += 1,
            Some(m) => panic!("unexpected {m}"),
            None => break, // closed
        }
    }
    assert!(
        (10..=12).contains(&pongs),
        "burst of about 10 answered, got {pongs}"
    );
    assert!(limited >= 10, "then rate-limited errors, got {limited}");
    others_still_work(&server).await;
}

async fn idle_connections_are_closed(store: Store) {
    let server = Server::start_on(
        store,
        &["--idle-timeout", "600ms", "--ping-interval", "200ms"],
    )
    .await;
    let mut c = Client::connect(&server).await;
    // Not reading means not answering the server's pings: a dead peer, as far as it can tell.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // The client library answers the queued pings on its next read and fails on the closed
    // socket before it hands over the error frame, so the server's own count is the witness.
    c.expect_close().await;
    let metrics = crate::common::get(&server.url("/metrics"))
        .await
        .text()
        .await
        .expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l == "otter_signaling_errors_total{code=\"idle-timeout\"} 1"),
        "{metrics}"
    );

    // A client that answers pings stays, however quiet.
    let mut quiet = Client::connect(&server).await;
    quiet.expect_silence(Duration::from_millis(1500)).await;
    quiet.send(json!({"type":"ping"})).await;
    assert_eq!(quiet.recv().await["type"], "pong");
}

async fn origins_and_versions_are_checked_at_upgrade(store: Store) {
    let server = Server::start_on(store, &["--allowed-origins", "https://app.example"]).await;
    let bad = Client::connect_with(&server, |r| {
        r.headers_mut()
            .insert("origin", HeaderValue::from_static("https://evil.example"));
    })
    .await;
    match bad {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|_| "a connection")),
    }
    let good = Client::connect_with(&server, |r| {
        r.headers_mut()
            .insert("origin", HeaderValue::from_static("https://app.example"));
    })
    .await;
    assert!(good.is_ok());
    let v2 = Client::connect_with(&server, |r| {
        r.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("otter.v2"),
        );
    })
    .await;
    match v2 {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 400),
        other => panic!("expected 400, got {:?}", other.map(|_| "a connection")),
    }
    // No subprotocol at all means v1.
    let (ws, resp) = tokio_tungstenite::connect_async(server.ws_url())
        .await
        .expect("plain connect");
    assert!(resp.headers().get("sec-websocket-protocol").is_none());
    drop(ws);
}

async fn connection_limit_answers_server_busy(store: Store) {
    let server = Server::start_on(store, &["--max-connections", "2"]).await;
    let _a = Client::connect(&server).await;
    let mut b = Client::connect(&server).await;
    b.send(json!({"type":"ping"})).await;
    b.recv().await; // both are registered
    let mut c = Client::connect(&server).await;
    c.expect_error("server-busy").await;
    assert_eq!(u16::from(c.expect_close().await.expect("close").code), 1013);
}

both_stores!(
    malformed_and_misplaced_messages_get_error_frames,
    room_capacity_is_configurable,
    oversized_frames_close_the_connection,
    flooding_is_rate_limited_then_cut_off,
    idle_connections_are_closed,
    origins_and_versions_are_checked_at_upgrade,
    connection_limit_answers_server_busy
);
