//! Presence on join, leave, close and lost connections; resuming a seat.

use std::time::Duration;

use crate::common::{Client, Server, Store};
use serde_json::json;

async fn leave_and_close_are_announced_at_once(store: Store) {
    let server = Server::start_on(store, &["--reconnect-grace", "30s"]).await;
    let (mut a, _) = Client::join(&server, "room", "A").await;
    let (mut b, _) = Client::join(&server, "room", "B").await;
    let (c, _) = Client::join(&server, "room", "C").await;
    a.recv().await; // peer-joined B
    a.recv().await; // peer-joined C
    b.recv().await; // peer-joined C

    b.send(json!({"type":"leave"})).await;
    assert_eq!(b.recv().await, json!({"type":"left"}));
    let b_id = b.peer_id.clone();
    assert_eq!(
        a.recv().await,
        json!({"type":"peer-left","peerId":b_id,"reason":"left"})
    );

    // After leave, the same socket may join again, as a new peer.
    let rejoined = b.join_msg(json!({"type":"join","room":"room"})).await;
    assert_ne!(rejoined["peerId"], b_id.as_str());
    assert_eq!(a.recv().await["type"], "peer-joined");

    let c_id = c.peer_id.clone();
    c.close().await;
    assert_eq!(
        a.recv().await,
        json!({"type":"peer-left","peerId":c_id,"reason":"left"})
    );
}

async fn lost_connection_is_announced_after_the_grace_period(store: Store) {
    let server = Server::start_on(store, &["--reconnect-grace", "500ms"]).await;
    let (mut a, _) = Client::join(&server, "room", "A").await;
    let (b, _) = Client::join(&server, "room", "B").await;
    a.recv().await;
    let b_id = b.peer_id.clone();
    b.drop_connection();
    // Held during the grace period...
    a.expect_silence(Duration::from_millis(250)).await;
    // ...then given up.
    assert_eq!(
        a.recv().await,
        json!({"type":"peer-left","peerId":b_id,"reason":"timeout"})
    );
}

async fn resume_keeps_the_peer_id_and_the_others_see_nothing(store: Store) {
    let server = Server::start_on(store, &["--reconnect-grace", "3s"]).await;
    let (mut a, _) = Client::join(&server, "room", "A").await;
    let (b, _) = Client::join(&server, "room", "B").await;
    a.recv().await;
    let (b_id, token) = (b.peer_id.clone(), b.resume_token.clone());
    b.drop_connection();

    let mut b2 = Client::connect(&server).await;
    let joined = b2
        .join_msg(json!({"type":"join","room":"room","resume":token}))
        .await;
    assert_eq!(joined["resumed"], true);
    assert_eq!(joined["peerId"], b_id.as_str());
    assert_eq!(joined["peers"], json!([{"id": a.peer_id, "name":"A"}]));
    a.send(json!({"type":"offer","to":b_id,"sdp":"after resume"}))
        .await;
    assert_eq!(b2.recv().await["sdp"], "after resume");
    // The old connection's grace timer must not remove the resumed seat.
    a.expect_silence(Duration::from_millis(3500)).await;

    // A resume token is single-room and does not survive a leave.
    b2.send(json!({"type":"leave"})).await;
    b2.recv().await;
    let again = b2
        .join_msg(json!({"type":"join","room":"room","resume":token}))
        .await;
    assert_eq!(again["resumed"], false);
    assert_ne!(again["peerId"], b_id.as_str());
}

async fn resume_while_the_old_connection_is_still_open_replaces_it(store: Store) {
    let server = Server::start_on(store, &[]).await;
    let (mut a, _) = Client::join(&server, "room", "A").await;
    let (mut b, _) = Client::join(&server, "room", "B").await;
    a.recv().await;
    let mut b2 = Client::connect(&server).await;
    let joined = b2
        .join_msg(json!({"type":"join","room":"room","resume":b.resume_token}))
        .await;
    assert_eq!(joined["resumed"], true);
    let frame = b.expect_close().await.expect("close frame");
    assert_eq!(u16::from(frame.code), 4001, "superseded");
    a.send(json!({"type":"candidate","to":b.peer_id,"candidate":null}))
        .await;
    assert_eq!(b2.recv().await["type"], "candidate");
    a.expect_silence(Duration::from_millis(200)).await;
}

async fn closing_with_4000_keeps_the_seat_for_a_resume(store: Store) {
    let server = Server::start_on(store, &["--reconnect-grace", "2s"]).await;
    let (mut a, _) = Client::join(&server, "room", "A").await;
    let (mut b, _) = Client::join(&server, "room", "B").await;
    a.recv().await;
    let (b_id, token) = (b.peer_id.clone(), b.resume_token.clone());
    b.ws.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: 4000.into(),
        reason: "network change".into(),
    }))
    .await
    .expect("close");
    a.expect_silence(Duration::from_millis(500)).await;
    let mut b2 = Client::connect(&server).await;
    let joined = b2
        .join_msg(json!({"type":"join","room":"room","resume":token}))
        .await;
    assert_eq!(
        (joined["resumed"].clone(), joined["peerId"].clone()),
        (json!(true), json!(b_id))
    );
    a.expect_silence(Duration::from_millis(2500)).await;
}

both_stores!(
    closing_with_4000_keeps_the_seat_for_a_resume,
    leave_and_close_are_announced_at_once,
    lost_connection_is_announced_after_the_grace_period,
    resume_keeps_the_peer_id_and_the_others_see_nothing,
    resume_while_the_old_connection_is_still_open_replaces_it
);
