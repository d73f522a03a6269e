//! Offers, answers and candidates reach exactly their addressee, in rooms of two and six.

use std::time::Duration;

use crate::common::{Client, Server, Store};
use serde_json::json;

async fn two_peers_exchange_offer_answer_and_candidates(store: Store) {
    let server = Server::start_on(store, &[]).await;
    let (mut a, joined_a) = Client::join(&server, "pair", "Alice").await;
    assert_eq!(joined_a["v"], 1);
    assert_eq!(joined_a["room"], "pair");
    assert_eq!(joined_a["peers"], json!([]));
    assert_eq!(joined_a["limits"]["maxPeers"], 6);
    let (mut b, joined_b) = Client::join(&server, "pair", "Bob").await;
    assert_eq!(
        joined_b["peers"],
        json!([{"id": a.peer_id, "name": "Alice"}])
    );
    assert_eq!(
        a.recv().await,
        json!({"type":"peer-joined","peer":{"id": b.peer_id, "name":"Bob"}})
    );

    b.send(json!({"type":"offer","to":a.peer_id,"sdp":"v=0 offer"}))
        .await;
    assert_eq!(
        a.recv().await,
        json!({"type":"offer","from":b.peer_id,"sdp":"v=0 offer"})
    );
    a.send(json!({"type":"answer","to":b.peer_id,"sdp":"v=0 answer"}))
        .await;
    assert_eq!(
        b.recv().await,
        json!({"type":"answer","from":a.peer_id,"sdp":"v=0 answer"})
    );
    let cand = json!({"candidate":"candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host","sdpMid":"0","sdpMLineIndex":0});
    a.send(json!({"type":"candidate","to":b.peer_id,"candidate":cand}))
        .await;
    assert_eq!(
        b.recv().await,
        json!({"type":"candidate","from":a.peer_id,"candidate":cand})
    );
    b.send(json!({"type":"candidate","to":a.peer_id,"candidate":null}))
        .await;
    assert_eq!(
        a.recv().await,
        json!({"type":"candidate","from":b.peer_id,"candidate":null})
    );

    // Nothing was echoed to the sender or duplicated.
    a.expect_silence(Duration::from_millis(200)).await;
    b.expect_silence(Duration::from_millis(200)).await;
}

async fn six_peers_full_mesh_each_message_reaches_only_its_addressee(store: Store) {
    let server = Server::start_on(store, &[]).await;
    let mut peers: Vec<Client> = Vec::new();
    for i in 0..6 {
        let (c, joined) = Client::join(&server, "mesh", &format!("peer{i}")).await;
        assert_eq!(joined["peers"].as_array().map(Vec::len), Some(i));
        for earlier in peers.iter_mut() {
            let m = earlier.recv().await;
            assert_eq!(m["type"], "peer-joined");
            assert_eq!(m["peer"]["id"], c.peer_id.as_str());
        }
        peers.push(c);
    }
    let ids: Vec<String> = peers.iter().map(|p| p.peer_id.clone()).collect();
    for (i, p) in peers.iter_mut().enumerate() {
        for (j, to) in ids.iter().enumerate() {
            if i != j {
                p.send(json!({"type":"offer","to":to,"sdp":format!("from {i} to {j}")}))
                    .await;
            }
        }
    }
    for (j, p) in peers.iter_mut().enumerate() {
        let mut got = Vec::new();
        for _ in 0..5 {
            let m = p.recv().await;
            assert_eq!(m["type"], "offer");
            let i = ids
                .iter()
                .position(|id| m["from"] == id.as_str())
                .expect("sender is a peer");
            assert_eq!(m["sdp"], format!("from {i} to {j}"), "misaddressed: {m}");
            got.push(i);
        }
        got.sort_unstable();
        let expected: Vec<usize> = (0..6).filter(|&i| i != j).collect();
        assert_eq!(got, expected);
        p.expect_silence(Duration::from_millis(100)).await;
    }
    // The seventh is refused, and the room still works.
    let mut seventh = Client::connect(&server).await;
    seventh
        .send(json!({"type":"join","room":"mesh","id":"j7"}))
        .await;
    let err = seventh.expect_error("room-full").await;
    assert_eq!(err["ref"], "j7");
    let to = ids[1].clone();
    peers[0]
        .send(json!({"type":"answer","to":to,"sdp":"still here"}))
        .await;
    assert_eq!(peers[1].recv().await["sdp"], "still here");
}

async fn rooms_are_isolated(store: Store) {
    let server = Server::start_on(store, &[]).await;
    let (mut a, _) = Client::join(&server, "one", "A").await;
    let (mut b, _) = Client::join(&server, "two", "B").await;
    a.send(json!({"type":"offer","to":b.peer_id,"sdp":"x"}))
        .await;
    a.expect_error("unknown-peer").await;
    b.expect_silence(Duration::from_millis(200)).await;
}

both_stores!(
    two_peers_exchange_offer_answer_and_candidates,
    six_peers_full_mesh_each_message_reaches_only_its_addressee,
    rooms_are_isolated
);
