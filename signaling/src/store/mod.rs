//! Room state behind one trait: in memory for a single process, Redis for many replicas.
//!
//! The store owns membership (who is in which room, atomically capped) and routing (getting a
//! frame to a peer wherever its connection lives). Frames for peers whose connection is on
//! this process end in [`LocalPeers`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::protocol::PeerInfo;

pub mod memory;
pub mod redis;

/// A seat in a room as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRecord {
    pub id: String,
    pub name: Option<String>,
    /// Secret the client presents to take its seat back after a lost connection.
    pub resume_token: String,
    /// Bumped on every resume, so the cleanup of a superseded connection leaves the seat alone.
    pub epoch: u64,
    /// When auth is on: the room token's expiry (Unix seconds). A resume after it is refused,
    /// so a resume token never outlives the room token that admitted the seat.
    pub expires: Option<u64>,
}

impl PeerRecord {
    pub fn info(&self) -> PeerInfo {
        PeerInfo {
            id: self.id.clone(),
            name: self.name.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("room is full ({max} peers)")]
    RoomFull { max: u32 },
    #[error("room store unavailable: {0}")]
    Unavailable(String),
}

/// What a broadcast tells a room about its subject (the Redis store keeps its view of the
/// room by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Joined,
    Left,
}

#[async_trait]
pub trait RoomStore: Send + Sync + 'static {
    /// Take a seat, unless the room already has `max` peers. Returns the peers already there.
    async fn join(
        &self,
        room: &str,
        peer: &PeerRecord,
        max: u32,
    ) -> Result<Vec<PeerInfo>, StoreError>;
    /// Take back a held seat by its resume token; bumps its epoch and replaces the token with
    /// `new_token` (a resume token works once). `None`: no such seat.
    async fn resume(
        &self,
        room: &str,
        resume_token: &str,
        new_token: &str,
    ) -> Result<Option<PeerRecord>, StoreError>;
    /// Record a room token's `jti` as used until `expires` (Unix seconds). False if it was
    /// already used: single-use tokens admit one seat, across all replicas.
    async fn claim_token(&self, jti: &str, expires: u64) -> Result<bool, StoreError>;
    /// The peers of a room.
    async fn members(&self, room: &str) -> Result<Vec<PeerInfo>, StoreError>;
    /// Give up a seat. With `epoch`, only if the seat was not resumed since. True if removed.
    async fn leave(&self, room: &str, peer: &str, epoch: Option<u64>) -> Result<bool, StoreError>;
    /// Send a frame to one peer of the room. False if it is not a member.
    async fn send(&self, room: &str, to: &str, frame: Arc<str>) -> Result<bool, StoreError>;
    /// Tell every peer of the room but `subject` that `subject` joined or left (`frame`).
    async fn broadcast(
        &self,
        room: &str,
        subject: &str,
        presence: Presence,
        frame: Arc<str>,
    ) -> Result<(), StoreError>;
    /// Whether the store can serve (for `/readyz`).
    fn ready(&self) -> bool;
}

/// A connection's outbound queue, bounded in bytes: whatever is queued and not yet written
/// (relayed frames and the connection's own replies) counts against one budget, so a peer that
/// stops reading pins at most that much memory before it is cut off.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Out>,
    budget: Arc<Semaphore>,
    /// While a join is under way: room frames wait here, so the `joined` reply goes first.
    held: Arc<Mutex<Option<Vec<Arc<str>>>>>,
    holding: Arc<AtomicBool>,
}

/// Budget cost of a queued ping.
pub const PING_COST: usize = 64;

/// What the writer of a connection is asked to do.
#[derive(Debug)]
pub enum Out {
    /// A text frame; its bytes were taken from the budget and go back once written.
    Frame(Arc<str>),
    /// A ping ([`PING_COST`] bytes of the budget).
    Ping,
    /// The close frame, then stop writing.
    Close(u16, &'static str),
}

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The budget is spent: the peer is not reading fast enough.
    Full,
    /// The connection's writer is gone.
    Closed,
}

impl Outbox {
    pub fn new(max_bytes: usize) -> (Outbox, mpsc::UnboundedReceiver<Out>, Arc<Semaphore>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let budget = Arc::new(Semaphore::new(max_bytes));
        let outbox = Outbox {
            tx,
            budget: Arc::clone(&budget),
            held: Arc::default(),
            holding: Arc::default(),
        };
        (outbox, rx, budget)
    }

    /// Queue a text frame if the byte budget allows it.
    pub fn push(&self, frame: Arc<str>) -> Result<(), Refused> {
        self.take_budget(frame.len())?;
        if self.holding.load(Ordering::Acquire) {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(list) = held.as_mut() {
                list.push(frame);
                return Ok(());
            }
        }
        self.tx.send(Out::Frame(frame)).map_err(|_| Refused::Closed)
    }

    fn take_budget(&self, bytes: usize) -> Result<(), Refused> {
        let bytes = u32::try_from(bytes).map_err(|_| Refused::Full)?;
        match self.budget.try_acquire_many(bytes) {
            Ok(permit) => permit.forget(),
            Err(tokio::sync::TryAcquireError::NoPermits) => return Err(Refused::Full),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(Refused::Closed),
        }
        Ok(())
    }

    /// Hold room frames from now on: the connection is joining, and the room may hear of it
    /// (and send it frames) before its `joined` reply is ready.
    pub fn hold(&self) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = Some(Vec::new());
        self.holding.store(true, Ordering::Release);
    }

    /// Queue `first` (the `joined` reply), then what was held meanwhile, in order.
    pub fn release(&self, first: Option<Arc<str>>) -> Result<(), Refused> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let list = held.take().unwrap_or_default();
        self.holding.store(false, Ordering::Release);
        let mut result = Ok(());
        if let Some(f) = first {
            result = self.take_budget(f.len());
            if result.is_ok() {
                result = self.tx.send(Out::Frame(f)).map_err(|_| Refused::Closed);
            }
        }
        for f in list {
            let _ = self.tx.send(Out::Frame(f));
        }
        result
    }

    /// Queue a ping; it costs [`PING_COST`] of the budget, since the pings of a peer that
    /// stops reading pile up too.
    pub fn ping(&self) -> Result<(), Refused> {
        match self.budget.try_acquire_many(PING_COST as u32) {
            Ok(permit) => permit.forget(),
            Err(_) => return Err(Refused::Full),
        }
        self.tx.send(Out::Ping).map_err(|_| Refused::Closed)
    }

    /// Queue the close frame (once per connection, outside the budget).
    pub fn control(&self, out: Out) {
        let _ = self.tx.send(out);
    }
}

/// A connection on this process, as the router sees it.
#[derive(Debug, Clone)]
pub struct LocalConn {
    pub room: String,
    pub tx: Outbox,
    pub epoch: u64,
    /// Cuts the connection off (it cannot keep up, or was superseded).
    pub kill: Cutoff,
}

/// How the router tells a connection task to end, and why.
#[derive(Debug, Clone, Default)]
pub struct Cutoff {
    token: CancellationToken,
    superseded: Arc<AtomicBool>,
}

impl Cutoff {
    /// The connection cannot keep up with what it is sent.
    pub fn too_slow(&self) {
        self.token.cancel();
    }

    /// A resumed connection took this one's seat.
    pub fn superseded(&self) {
        self.superseded.store(true, Ordering::Relaxed);
        self.token.cancel();
    }

    pub fn was_superseded(&self) -> bool {
        self.superseded.load(Ordering::Relaxed)
    }

    pub async fn cancelled(&self) {
        self.token.cancelled().await
    }
}

/// Connections of joined peers on this process.
#[derive(Debug, Default)]
pub struct LocalPeers {
    conns: Mutex<HashMap<String, LocalConn>>,
}

/// Outcome of handing a frame to a local connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    /// No connection here (not local, or between a lost connection and its resume).
    Absent,
    /// The connection's byte budget is spent: it was cut off rather than silently losing
    /// signaling.
    CutOff,
}

impl LocalPeers {
    pub fn insert(&self, peer: &str, conn: LocalConn) {
        if let Ok(mut m) = self.conns.lock()
            && let Some(old) = m.insert(peer.to_owned(), conn)
        {
            old.kill.superseded();
        }
    }

    /// The peer's seat was resumed on another replica, at `epoch`: cut off a connection of an
    /// older epoch here, if any (a newer one is a resume back to this replica since).
    pub fn supersede(&self, peer: &str, epoch: u64) {
        let old = self.conns.lock().ok().and_then(|mut m| {
            m.get(peer)
                .is_some_and(|c| c.epoch < epoch)
                .then(|| m.remove(peer))
                .flatten()
        });
        if let Some(old) = old {
            old.kill.superseded();
        }
    }

    /// Remove the peer's connection if it is still the one of `epoch`.
    pub fn remove(&self, peer: &str, epoch: u64) {
        if let Ok(mut m) = self.conns.lock()
            && m.get(peer).is_some_and(|c| c.epoch == epoch)
        {
            m.remove(peer);
        }
    }

    pub fn deliver(&self, peer: &str, frame: Arc<str>) -> Delivery {
        let conn = match self.conns.lock() {
            Ok(m) => m.get(peer).cloned(),
            Err(_) => None,
        };
        let Some(conn) = conn else {
            return Delivery::Absent;
        };
        match conn.tx.push(frame) {
            Ok(()) => Delivery::Delivered,
            Err(Refused::Full) => {
                conn.kill.too_slow();
                Delivery::CutOff
            }
            Err(Refused::Closed) => Delivery::Absent,
        }
    }

    /// Local peers of a room, but one.
    pub fn in_room(&self, room: &str, except: &str) -> Vec<String> {
        self.conns
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|(id, c)| c.room == room && id.as_str() != except)
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `peer` is connected here, in `room`.
    pub fn is_in_room(&self, peer: &str, room: &str) -> bool {
        self.conns
            .lock()
            .map(|m| m.get(peer).is_some_and(|c| c.room == room))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames the room sends while a join is under way come after the `joined` reply: a
    /// client must never hear of a peer before it knows its own seat (the load generator
    /// caught this when the writer moved to its own task).
    #[test]
    fn held_frames_follow_the_joined_reply() {
        let (outbox, mut rx, _) = Outbox::new(1 << 20);
        outbox.hold();
        outbox.push("peer-joined".into()).expect("held");
        assert!(rx.try_recv().is_err(), "held, not sent");
        outbox.release(Some("joined".into())).expect("released");
        outbox.push("offer".into()).expect("sent");
        let order: Vec<String> = std::iter::from_fn(|| match rx.try_recv() {
            Ok(Out::Frame(f)) => Some(f.to_string()),
            _ => None,
        })
        .collect();
        assert_eq!(order, ["joined", "peer-joined", "offer"]);
    }

    #[test]
    fn the_budget_is_in_bytes() {
        let (outbox, _rx, budget) = Outbox::new(10);
        outbox.push("12345678".into()).expect("fits");
        assert_eq!(outbox.push("123".into()), Err(Refused::Full));
        budget.add_permits(8);
        outbox.push("123".into()).expect("fits again once written");
    }
}
