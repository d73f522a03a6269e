//! Room state behind one trait: in memory for a single process, Redis for many replicas.
//!
//! The store owns membership (who is in which room, atomically capped) and routing (getting a
//! frame to a peer wherever its connection lives). Frames for peers whose connection is on
//! this process end in [`LocalPeers`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::protocol::PeerInfo;

pub mod memory;
mod outbox;
pub mod redis;

pub use outbox::{Alarm, Cut, Frame, Out, Outbox, Outlet, PING_COST, Refused, Signal};

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
    /// A seat for the store's tests: no name, resume token `t-ID`, epoch 0, no expiry.
    #[cfg(test)]
    pub(crate) fn for_test(id: &str) -> PeerRecord {
        PeerRecord {
            id: id.into(),
            name: None,
            resume_token: format!("t-{id}"),
            epoch: 0,
            expires: None,
        }
    }

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
    async fn send(&self, room: &str, to: &str, frame: Frame) -> Result<bool, StoreError>;
    /// Tell every peer of the room but `subject` that `subject` joined or left (`frame`).
    async fn broadcast(
        &self,
        room: &str,
        subject: &str,
        presence: Presence,
        frame: Frame,
    ) -> Result<(), StoreError>;
    /// Whether the store can serve (for `/readyz`).
    fn ready(&self) -> bool;
}

/// A connection on this process, as the router sees it. Its outbox also cuts it off
/// ([`Outbox::cut_off`]).
#[derive(Debug, Clone)]
pub struct LocalConn {
    pub room: Arc<str>,
    pub tx: Outbox,
    pub epoch: u64,
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
            old.tx.cut_off(Cut::Superseded);
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
            old.tx.cut_off(Cut::Superseded);
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

    pub fn deliver(&self, peer: &str, frame: Frame) -> Delivery {
        // Queued under the map's lock (a push never waits): no clone of the entry per frame.
        // A cut-off is two atomics and a wake, as cheap to do under it.
        let Ok(m) = self.conns.lock() else {
            return Delivery::Absent;
        };
        match m.get(peer).map(|conn| (conn, conn.tx.push(frame))) {
            Some((_, Ok(()))) => Delivery::Delivered,
            Some((conn, Err(Refused::Full))) => {
                conn.tx.cut_off(Cut::TooSlow);
                Delivery::CutOff
            }
            Some((_, Err(Refused::Closed))) | None => Delivery::Absent,
        }
    }

    /// Local peers of a room, but one.
    pub fn in_room(&self, room: &str, except: &str) -> Vec<String> {
        self.conns
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|(id, c)| &*c.room == room && id.as_str() != except)
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `peer` is connected here, in `room`.
    pub fn is_in_room(&self, peer: &str, room: &str) -> bool {
        self.conns
            .lock()
            .map(|m| m.get(peer).is_some_and(|c| &*c.room == room))
            .unwrap_or(false)
    }
}
