//! One WebSocket connection: reads frames, enforces the per-connection limits, calls the hub,
//! and writes what the room sends it. One task per connection; nothing here can crash the
//! server, only end this connection.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::{SinkExt, StreamExt};
use governor::{Quota, RateLimiter};
use tokio::sync::mpsc;

use crate::hub::{Hub, Relay, Session};
use crate::protocol::{
    ClientMsg, ErrorCode, LeaveReason, Parsed, ProtoError, ServerMsg, error_text, parse_client,
};
use crate::store::{Cutoff, Outbound};

/// Close codes (RFC 6455 and the IANA registry).
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const RESTART: u16 = 1012;
    pub const TRY_LATER: u16 = 1013;
    /// Private range: the seat was resumed by another connection.
    pub const SUPERSEDED: u16 = 4001;
    /// Private range, from the client: going away but keep my seat for a resume.
    pub const KEEP_SEAT: u16 = 4000;
}

/// Per-connection limits, from the config.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_message_bytes: usize,
    pub rate_per_sec: NonZeroU32,
    pub burst: NonZeroU32,
    pub idle_timeout: Duration,
    pub ping_interval: Duration,
    pub queue: usize,
}

/// Why a connection ended, which decides what happens to its seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Close frame from the client: it meant to go.
    Closed,
    /// Transport lost without a close frame: keep the seat for the grace period.
    Lost,
    /// The server cut it off (a limit).
    Kicked,
    /// Nothing received for too long.
    Idle,
    /// The server is shutting down; the client was told to reconnect elsewhere.
    Shutdown,
}

type Sink = futures::stream::SplitSink<WebSocket, Message>;

async fn send_text(sink: &mut Sink, text: impl Into<Utf8Bytes>) -> bool {
    sink.send(Message::Text(text.into())).await.is_ok()
}

async fn send_close(sink: &mut Sink, code: u16, reason: &'static str) {
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        })))
        .await;
    let _ = sink.close().await;
}

async fn send_error(
    hub: &Hub,
    sink: &mut Sink,
    err: &ProtoError,
    reference: Option<&serde_json::Value>,
) -> bool {
    hub.metrics.error(err.code);
    send_text(sink, error_text(err, reference)).await
}

/// Serve one upgraded connection until it ends.
pub async fn serve(socket: WebSocket, hub: Arc<Hub>, limits: ConnLimits, over_capacity: bool) {
    hub.metrics.connections.inc();
    hub.metrics.connections_total.inc();
    let (mut sink, mut stream) = socket.split();
    if over_capacity {
        let err = ProtoError::new(
            ErrorCode::ServerBusy,
            "this server has too many connections; try again shortly",
        );
        send_error(&hub, &mut sink, &err, None).await;
        send_close(&mut sink, close::TRY_LATER, "server busy").await;
        hub.metrics.connections.dec();
        return;
    }
    let (tx, mut rx) = mpsc::channel::<Outbound>(limits.queue);
    let kill = Cutoff::default();
    let limiter =
        RateLimiter::direct(Quota::per_second(limits.rate_per_sec).allow_burst(limits.burst));
    let mut session: Option<Session> = None;
    let mut last_rx = Instant::now();
    let mut violations: u32 = 0;
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + limits.ping_interval,
        limits.ping_interval,
    );

    let end = loop {
        tokio::select! {
            biased;
            _ = hub.shutdown.cancelled() => {
                let text = ServerMsg::Reconnect { reason: "shutdown", retry_after_ms: 500 }.to_text();
                send_text(&mut sink, text).await;
                send_close(&mut sink, close::RESTART, "server restarting").await;
                break End::Shutdown;
            }
            _ = kill.cancelled() => {
                if kill.was_superseded() {
                    send_close(&mut sink, close::SUPERSEDED, "seat resumed by another connection").await;
                } else {
                    send_close(&mut sink, close::POLICY, "too slow to keep up").await;
                }
                break End::Kicked;
            }
            out = rx.recv() => {
                let Some(Outbound::Frame(frame)) = out else { break End::Lost };
                if !send_text(&mut sink, frame.as_ref()).await {
                    break End::Lost;
                }
            }
            _ = ping.tick() => {
                if last_rx.elapsed() >= limits.idle_timeout {
                    let err = ProtoError::new(ErrorCode::IdleTimeout, "nothing received for too long");
                    send_error(&hub, &mut sink, &err, None).await;
                    send_close(&mut sink, close::NORMAL, "idle timeout").await;
                    break End::Idle;
                }
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    break End::Lost;
                }
            }
            frame = stream.next() => {
                let text = match frame {
                    None => break End::Lost,
                    Some(Err(e)) => {
                        if is_too_large(&e) {
                            let err = ProtoError::new(
                                ErrorCode::TooLarge,
                                format!("frames are limited to {} bytes", limits.max_message_bytes),
                            );
                            send_error(&hub, &mut sink, &err, None).await;
                            send_close(&mut sink, close::TOO_BIG, "frame too large").await;
                            break End::Kicked;
                        }
                        break End::Lost;
                    }
                    Some(Ok(Message::Close(frame))) => {
                        // A client dropping a socket it believes dead keeps its seat.
                        if frame.is_some_and(|f| f.code == close::KEEP_SEAT) {
                            break End::Lost;
                        }
                        break End::Closed;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                        last_rx = Instant::now();
                        continue;
                    }
                    Some(Ok(Message::Binary(_))) => {
                        last_rx = Instant::now();
                        let err = ProtoError::new(ErrorCode::BadJson, "binary frames are not part of the protocol; send JSON text");
                        if !send_error(&hub, &mut sink, &err, None).await { break End::Lost; }
                        continue;
                    }
                    Some(Ok(Message::Text(t))) => t,
                };
                last_rx = Instant::now();
                if limiter.check().is_err() {
                    violations += 1;
                    if violations > limits.burst.get() {
                        send_close(&mut sink, close::POLICY, "message rate exceeded").await;
                        break End::Kicked;
                    }
                    let err = ProtoError::new(ErrorCode::RateLimited, "too many messages; this one was dropped");
                    if !send_error(&hub, &mut sink, &err, None).await { break End::Lost; }
                    continue;
                }
                match handle(&hub, &mut session, text.as_str(), &tx, &kill).await {
                    Ok(Some(reply)) => {
                        if !send_text(&mut sink, reply).await { break End::Lost; }
                    }
                    Ok(None) => {}
                    Err((err, reference)) => {
                        if !send_error(&hub, &mut sink, &err, reference.as_ref()).await { break End::Lost; }
                    }
                }
            }
        }
    };

    if let Some(s) = session {
        match end {
            End::Closed => hub.leave(&s, LeaveReason::Left).await,
            End::Kicked => hub.leave(&s, LeaveReason::Kicked).await,
            End::Idle => hub.leave(&s, LeaveReason::Timeout).await,
            End::Lost | End::Shutdown => hub.detach(s),
        }
    }
    hub.metrics.connections.dec();
}

fn is_too_large(e: &axum::Error) -> bool {
    // axum wraps tungstenite's capacity error; its text is the stable part we can match.
    let text = e.to_string();
    text.contains("Space limit exceeded") || text.contains("too long") || text.contains("Capacity")
}

type HandleError = (ProtoError, Option<serde_json::Value>);

/// One text frame: parse, check state, act. Returns a direct reply if there is one.
async fn handle(
    hub: &Arc<Hub>,
    session: &mut Option<Session>,
    text: &str,
    tx: &mpsc::Sender<Outbound>,
    kill: &Cutoff,
) -> Result<Option<String>, HandleError> {
    let Parsed { msg, reference } = parse_client(text)?;
    let fail = |e: ProtoError| (e, reference.clone());
    let joined = |s: &Option<Session>| -> Result<Session, HandleError> {
        s.clone()
            .ok_or_else(|| fail(ProtoError::new(ErrorCode::NotJoined, "join a room first")))
    };
    match msg {
        ClientMsg::Ping => Ok(Some(ServerMsg::Pong.to_text())),
        ClientMsg::Join(join) => {
            if let Some(s) = session {
                return Err(fail(ProtoError::new(
                    ErrorCode::AlreadyJoined,
                    format!("already in room {}; send leave first", s.room),
                )));
            }
            let (s, frame) = hub.join(join, tx, kill).await.map_err(fail)?;
            *session = Some(s);
            Ok(Some(frame))
        }
        ClientMsg::Leave => {
            let s = joined(session)?;
            hub.leave(&s, LeaveReason::Left).await;
            *session = None;
            Ok(Some(ServerMsg::Left.to_text()))
        }
        ClientMsg::Offer(m) => {
            let s = joined(session)?;
            hub.relay(&s, &m.to, Relay::Offer(&m.sdp))
                .await
                .map_err(fail)?;
            Ok(None)
        }
        ClientMsg::Answer(m) => {
            let s = joined(session)?;
            hub.relay(&s, &m.to, Relay::Answer(&m.sdp))
                .await
                .map_err(fail)?;
            Ok(None)
        }
        ClientMsg::Candidate(m) => {
            let s = joined(session)?;
            hub.relay(&s, &m.to, Relay::Candidate(&m.candidate))
                .await
                .map_err(fail)?;
            Ok(None)
        }
    }
}
