//! A small WebSocket client that speaks signaling protocol v1, for tests.

use crate::Signaling;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const WAIT: Duration = Duration::from_secs(5);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A protocol client.
pub struct Client {
    pub ws: Ws,
    pub peer_id: String,
    pub resume_token: String,
}

impl Client {
    pub async fn connect(server: &Signaling) -> Client {
        Self::connect_with(server, |_| {}).await.expect("connect")
    }

    pub async fn connect_with(
        server: &Signaling,
        edit: impl FnOnce(&mut tokio_tungstenite::tungstenite::handshake::client::Request),
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let mut req = server.ws_url().into_client_request().expect("request");
        req.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("otter.v1"),
        );
        edit(&mut req);
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        Ok(Client {
            ws,
            peer_id: String::new(),
            resume_token: String::new(),
        })
    }

    /// Connect and join; panics unless `joined` comes back.
    pub async fn join(server: &Signaling, room: &str, name: &str) -> (Client, Value) {
        let mut c = Client::connect(server).await;
        let joined = c
            .join_msg(json!({"type":"join","room":room,"name":name}))
            .await;
        (c, joined)
    }

    pub async fn join_msg(&mut self, msg: Value) -> Value {
        self.send(msg).await;
        let joined = self.recv().await;
        assert_eq!(joined["type"], "joined", "expected joined, got {joined}");
        self.peer_id = joined["peerId"].as_str().expect("peerId").to_owned();
        self.resume_token = joined["resumeToken"]
            .as_str()
            .expect("resumeToken")
            .to_owned();
        joined
    }

    pub async fn send(&mut self, msg: Value) {
        self.ws
            .send(Message::Text(msg.to_string().into()))
            .await
            .expect("send");
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.expect("send");
    }

    /// Next text frame as JSON, skipping control frames.
    pub async fn recv(&mut self) -> Value {
        self.try_recv(WAIT).await.expect("a message in time")
    }

    pub async fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match next {
                Ok(Message::Text(t)) => {
                    return Some(serde_json::from_str(&t).expect("server sends JSON"));
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// Expect an error frame with this code.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let m = self.recv().await;
        assert_eq!(m["type"], "error", "expected error {code}, got {m}");
        assert_eq!(m["code"], code, "wrong error code: {m}");
        m
    }

    /// Read until the server closes; returns the close frame.
    pub async fn expect_close(&mut self) -> Option<CloseFrame> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("server did not close in time"),
                Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(Message::Close(f)))) => return f,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Nothing more arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(m) = self.try_recv(wait).await {
            panic!("expected no message, got {m}");
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        // Let the close handshake finish so the server sees a close frame.
        let _ = tokio::time::timeout(WAIT, async { while self.ws.next().await.is_some() {} }).await;
    }

    /// Drop the TCP connection without a close frame, like a lost network.
    pub fn drop_connection(self) {
        drop(self.ws);
    }
}

pub async fn get(url: &str) -> reqwest::Response {
    reqwest::get(url).await.expect("http get")
}
