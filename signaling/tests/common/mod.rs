//! Test harness: the real `otter-signaling` binary as a child process on a free loopback port,
//! and a small WebSocket client that speaks protocol v1.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
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

/// A running server process; killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_otter-signaling"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("OTTER_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start otter-signaling");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("address");
        Server { child, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A protocol client.
pub struct Client {
    pub ws: Ws,
    pub peer_id: String,
    pub resume_token: String,
}

impl Client {
    pub async fn connect(server: &Server) -> Client {
        Self::connect_with(server, |_| {}).await.expect("connect")
    }

    pub async fn connect_with(
        server: &Server,
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
    pub async fn join(server: &Server, room: &str, name: &str) -> (Client, Value) {
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
