//! Room tokens: accepted when valid, refused when missing, expired, forged or for another room.

use crate::common::{Client, Server, Store, get};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

const SECRET: &str = "test-token-secret";

fn token(secret: &str, room: &str, exp_from_now: i64, name: Option<&str>) -> String {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    let mut claims = json!({"room": room, "exp": now + exp_from_now, "sub": "user-1"});
    if let Some(n) = name {
        claims["name"] = json!(n);
    }
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode")
}

async fn tokens_gate_joins(store: Store) {
    let server = Server::start_on(store, &["--token-secret", SECRET]).await;
    let mut c = Client::connect(&server).await;
    c.send(json!({"type":"join","room":"clinic"})).await;
    c.expect_error("auth-required").await;
    c.send(json!({"type":"join","room":"clinic","token":token(SECRET, "clinic", -120, None)}))
        .await;
    c.expect_error("auth-expired").await;
    c.send(json!({"type":"join","room":"clinic","token":token(SECRET, "lobby", 60, None)}))
        .await;
    c.expect_error("auth-wrong-room").await;
    c.send(json!({"type":"join","room":"clinic","token":token("forged", "clinic", 60, None)}))
        .await;
    c.expect_error("auth-invalid").await;
    c.send(json!({"type":"join","room":"clinic","token":"not.a.jwt"}))
        .await;
    c.expect_error("auth-invalid").await;

    let joined = c
        .join_msg(json!({"type":"join","room":"clinic","name":"ignored","token":token(SECRET, "clinic", 60, Some("Dr. A"))}))
        .await;
    assert_eq!(joined["room"], "clinic");
    let mut other = Client::connect(&server).await;
    let j = other
        .join_msg(json!({"type":"join","room":"clinic","name":"Pat","token":token(SECRET, "clinic", 60, None)}))
        .await;
    // The token's name wins over the client's; without one in the token, the client's stands.
    assert_eq!(j["peers"][0]["name"], "Dr. A");
    assert_eq!(c.recv().await["peer"]["name"], "Pat");
}

async fn ice_servers_need_a_token_when_auth_is_on(store: Store) {
    let server = Server::start_on(
        store,
        &[
            "--token-secret",
            SECRET,
            "--turn-secret",
            "t",
            "--turn-uris",
            "turn:127.0.0.1:3478",
        ],
    )
    .await;
    let resp = get(&server.url("/v1/ice-servers")).await;
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"], "auth-required");
    let ok = reqwest::Client::new()
        .get(server.url("/v1/ice-servers"))
        .bearer_auth(token(SECRET, "any", 60, None))
        .send()
        .await
        .expect("get");
    assert_eq!(ok.status(), 200);
    let body: Value = ok.json().await.expect("json");
    assert_eq!(
        body["iceServers"][0]["urls"],
        json!(["turn:127.0.0.1:3478"])
    );
}

both_stores!(tokens_gate_joins, ice_servers_need_a_token_when_auth_is_on);
