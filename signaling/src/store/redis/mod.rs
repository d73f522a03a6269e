//! Room state in Redis, shared by many signaling replicas.
//!
//! Client: `fred`. It reconnects by itself with a backoff policy, re-subscribes pub/sub channels
//! after a reconnect (`manage_subscriptions`), speaks TLS (`rediss://`) and ACL users, and is
//! actively maintained; `redis-rs` would need the connection manager plus hand-written
//! re-subscription for the same.
//!
//! Keys (all under `otter:`; standalone Redis or a primary with replicas, not Redis Cluster,
//! since the scripts touch keys they compute):
//! - `room:{room}`: hash peer id → seat record (JSON, with the replica holding the peer).
//! - `replica-peers:{replica}`: set of `"{room} {peer}"` seats a replica holds.
//! - `replicas`: sorted set replica → lease expiry (Redis server time, ms).
//! - pub/sub channel `r:{replica}`: records for that replica ([`envelope`]).
//! - `jti:{sha256(jti)}`: a used single-use room token, until the token's expiry.
//!
//! Every key has a TTL of three leases, renewed by the live replicas that use it, so nothing
//! outlives the replicas and rooms that need it. Membership changes are Lua scripts
//! ([`scripts`]), atomic across replicas, so the room cap holds under races. A relayed frame
//! makes no round trip: the replica's [`view`] of its rooms says where the peer lives; a peer
//! here gets it directly, a peer elsewhere through the [`publisher`], batched per replica.
//!
//! Modules: [`scripts`] (the Lua, one file each), [`lease`] (lease, reaper, reconcile),
//! [`subscriber`] (records from other replicas), [`view`], [`publisher`], [`envelope`],
//! [`setup`] (clients, TLS).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::{MultipleKeys, MultipleValues};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::{Frame, LocalPeers, PeerRecord, Presence, RoomStore, StoreError};
use crate::protocol::PeerInfo;

pub mod envelope;
mod lease;
mod publisher;
pub mod scripts;
mod setup;
mod subscriber;
pub mod view;

pub use setup::RedisSetupError;

const PREFIX: &str = "otter:";

/// A seat as stored in the room hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Seat {
    id: String,
    #[serde(default)]
    name: Option<String>,
    resume: String,
    epoch: u64,
    replica: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<u64>,
}

impl Seat {
    fn record(&self) -> PeerRecord {
        PeerRecord {
            id: self.id.clone(),
            name: self.name.clone(),
            resume_token: self.resume.clone(),
            epoch: self.epoch,
            expires: self.expires,
        }
    }
}

/// The seats in a script's reply (JSON records), skipping any that do not parse.
fn seats(values: impl IntoIterator<Item = String>) -> Vec<Seat> {
    values
        .into_iter()
        .filter_map(|s| serde_json::from_str::<Seat>(&s).ok())
        .collect()
}

pub struct RedisStore {
    client: Client,
    subscriber: SubscriberClient,
    replica: Arc<str>,
    lease: Duration,
    scripts: scripts::Scripts,
    local: Arc<LocalPeers>,
    /// The rooms this replica holds seats in, and the seats.
    view: view::View,
    publisher: publisher::Publisher,
    leased: AtomicBool,
    /// Redis itself reports our channel subscribed: frames from other replicas can reach us.
    subscribed: AtomicBool,
}

fn room_key(room: &str) -> String {
    format!("{PREFIX}room:{room}")
}

fn replica_set_key(replica: &str) -> String {
    format!("{PREFIX}replica-peers:{replica}")
}

fn unavailable(e: fred::error::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// How long a relayed frame may wait for Redis (a script that routes it, or the PUBLISH of its
/// batch): a signaling frame late by more is better reported `unavailable` to its sender.
/// Membership changes wait longer ([`setup::COMMAND_TIMEOUT`]).
pub(crate) const RELAY_TIMEOUT: Duration = Duration::from_secs(2);

/// `f`'s outcome, or a timeout error after `limit`.
pub(crate) async fn within<T>(
    limit: Duration,
    f: impl Future<Output = Result<T, fred::error::Error>>,
) -> Result<T, fred::error::Error> {
    tokio::time::timeout(limit, f).await.unwrap_or_else(|_| {
        Err(fred::error::Error::new(
            fred::error::ErrorKind::Timeout,
            "Request timed out",
        ))
    })
}

impl RedisStore {
    /// Connect (in the background: the server starts and reports not-ready until Redis answers),
    /// subscribe to this replica's channel, and start the lease and reaper loops.
    pub async fn start(
        url: &str,
        ca_file: Option<&std::path::Path>,
        lease: Duration,
        local: Arc<LocalPeers>,
    ) -> Result<Arc<Self>, RedisSetupError> {
        let (client, subscriber) = setup::clients(url, ca_file)?;
        let replica: Arc<str> = format!("{:016x}", rand::random::<u64>()).into();
        let store = Arc::new(Self {
            publisher: publisher::Publisher::new(client.clone()),
            client,
            subscriber,
            view: view::View::new(Arc::clone(&replica)),
            replica,
            lease,
            scripts: scripts::Scripts::default(),
            local,
            leased: AtomicBool::new(false),
            subscribed: AtomicBool::new(false),
        });
        tracing::info!(replica = &*store.replica, "room state in Redis");
        store.spawn_subscriber();
        store.spawn_lease_loop();
        Ok(store)
    }

    /// Fails at once while the client knows Redis is away (its connection dropped and it is
    /// reconnecting), instead of queueing the command for its whole timeout: a leave during an
    /// outage then tells local peers now, and a frame for another replica gets `unavailable`
    /// now. One client carries every command, so this one signal is the same for all of them.
    fn reachable(&self) -> Result<(), fred::error::Error> {
        if self.client.is_connected() {
            Ok(())
        } else {
            Err(fred::error::Error::new(
                fred::error::ErrorKind::IO,
                "not connected to Redis",
            ))
        }
    }

    /// Run `script`, unless the client knows Redis is away ([`Self::reachable`]).
    async fn run<R, K, V>(&self, script: &Script, keys: K, args: V) -> Result<R, fred::error::Error>
    where
        R: FromValue,
        K: Into<MultipleKeys> + Send,
        V: TryInto<MultipleValues> + Send,
        V::Error: Into<fred::error::Error> + Send,
    {
        self.reachable()?;
        script.evalsha_with_reload(&self.client, keys, args).await
    }

    fn ttl_ms(&self) -> u64 {
        (self.lease.as_millis() as u64).saturating_mul(3)
    }

    fn seat(&self, rec: &PeerRecord) -> Seat {
        Seat {
            id: rec.id.clone(),
            name: rec.name.clone(),
            resume: rec.resume_token.clone(),
            epoch: rec.epoch,
            replica: self.replica.to_string(),
            expires: rec.expires,
        }
    }

    /// Run the join script for `rec` on this replica: `Ok(None)` when the room is full,
    /// otherwise the seats already there.
    async fn join_script(
        &self,
        room: &str,
        rec: &PeerRecord,
        max: u32,
    ) -> Result<Option<Vec<Seat>>, StoreError> {
        let seat = serde_json::to_string(&self.seat(rec))
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let reply: Vec<String> = self
            .run(
                &self.scripts.join,
                vec![room_key(room), replica_set_key(&self.replica)],
                vec![
                    rec.id.clone(),
                    seat,
                    max.to_string(),
                    room.to_owned(),
                    self.ttl_ms().to_string(),
                ],
            )
            .await
            .map_err(unavailable)?;
        let mut reply = reply.into_iter();
        match reply.next().as_deref() {
            Some("ok") => Ok(Some(seats(reply))),
            Some("full") => Ok(None),
            other => Err(StoreError::Unavailable(format!(
                "unexpected join reply {other:?}"
            ))),
        }
    }

    async fn leave_script(
        &self,
        room: &str,
        peer: &str,
        epoch: Option<u64>,
    ) -> Result<i64, fred::error::Error> {
        self.run(
            &self.scripts.leave,
            vec![room_key(room)],
            vec![
                peer.to_owned(),
                epoch.map(|e| e.to_string()).unwrap_or_default(),
                room.to_owned(),
                PREFIX.to_owned(),
            ],
        )
        .await
    }

    /// Route a frame by the room hash, when this replica's view does not know the peer.
    async fn send_by_script(&self, room: &str, to: &str, frame: Frame) -> Result<bool, StoreError> {
        let routed = self.run(
            &self.scripts.send,
            vec![room_key(room)],
            vec![to, &*self.replica, &*frame, PREFIX, room],
        );
        let outcome: Result<String, _> = within(RELAY_TIMEOUT, routed).await;
        let replica = match outcome {
            Ok(replica) => replica,
            Err(e) if self.deliver_locally(room, to, frame.clone()) => {
                tracing::debug!(error = %e, room, "Redis unavailable; delivered locally");
                return Ok(true);
            }
            Err(e) => return Err(unavailable(e)),
        };
        match replica.as_str() {
            "" => Ok(false),
            "=" => {
                self.local.deliver(to, frame);
                Ok(true)
            }
            replica => {
                // Learn where it lives: the next frames go straight there.
                self.view.placed(room, to, replica);
                Ok(true)
            }
        }
    }

    /// While Redis is away, peers of one room on this replica can still reach each other.
    fn deliver_locally(&self, room: &str, to: &str, frame: Frame) -> bool {
        if self.local.is_in_room(to, room) {
            self.local.deliver(to, frame);
            true
        } else {
            false
        }
    }

    /// Mates of a room as (peer id, replica), for the view.
    fn mates(seats: &[Seat]) -> impl Iterator<Item = (String, String)> + '_ {
        seats.iter().map(|s| (s.id.clone(), s.replica.clone()))
    }
}

#[async_trait]
impl RoomStore for RedisStore {
    async fn join(
        &self,
        room: &str,
        peer: &PeerRecord,
        max: u32,
    ) -> Result<Vec<PeerInfo>, StoreError> {
        let _claim = self.view.claim(&peer.resume_token);
        let others = self
            .join_script(room, peer, max)
            .await?
            .ok_or(StoreError::RoomFull { max })?;
        self.view.own(room, peer, Self::mates(&others));
        Ok(others.iter().map(|s| s.record().info()).collect())
    }

    async fn resume(
        &self,
        room: &str,
        resume_token: &str,
        new_token: &str,
    ) -> Result<Option<PeerRecord>, StoreError> {
        let _claim = self.view.claim(new_token);
        let reply: Option<String> = self
            .run(
                &self.scripts.resume,
                vec![room_key(room)],
                vec![
                    resume_token,
                    &*self.replica,
                    room,
                    PREFIX,
                    &self.ttl_ms().to_string(),
                    new_token,
                ],
            )
            .await
            .map_err(unavailable)?;
        let Some(rec) = reply
            .and_then(|s| serde_json::from_str::<Seat>(&s).ok())
            .map(|s| s.record())
        else {
            return Ok(None);
        };
        let values: Vec<String> = self
            .client
            .hvals(room_key(room))
            .await
            .map_err(unavailable)?;
        self.view.own(room, &rec, Self::mates(&seats(values)));
        Ok(Some(rec))
    }

    async fn claim_token(&self, jti: &str, expires: u64) -> Result<bool, StoreError> {
        self.reachable().map_err(unavailable)?;
        // Hashed: the key names no token material, and odd `jti` values stay one short key.
        let key = format!(
            "{PREFIX}jti:{}",
            hex::encode(sha2::Sha256::digest(jti.as_bytes()))
        );
        let set: Option<String> = self
            .client
            .set(
                key,
                "1",
                Some(Expiration::EXAT(expires as i64 + 1)),
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(unavailable)?;
        Ok(set.is_some())
    }

    async fn members(&self, room: &str) -> Result<Vec<PeerInfo>, StoreError> {
        self.reachable().map_err(unavailable)?;
        let values: Vec<String> = self
            .client
            .hvals(room_key(room))
            .await
            .map_err(unavailable)?;
        Ok(seats(values).iter().map(|s| s.record().info()).collect())
    }

    async fn leave(&self, room: &str, peer: &str, epoch: Option<u64>) -> Result<bool, StoreError> {
        self.view.disown(peer, epoch);
        match self.leave_script(room, peer, epoch).await {
            Ok(n) => Ok(n == 1),
            Err(e) => {
                // The seat is no longer in the view, so the reconcile after Redis returns
                // removes it and tells the room; peers here hear of it now.
                tracing::warn!(error = %e, room, peer, "Redis unavailable; departure will be synced later");
                Ok(true)
            }
        }
    }

    async fn send(&self, room: &str, to: &str, frame: Frame) -> Result<bool, StoreError> {
        let Some(replica) = self.view.where_is(room, to) else {
            return self.send_by_script(room, to, frame).await;
        };
        if replica == self.replica {
            self.local.deliver(to, frame);
            return Ok(true);
        }
        self.reachable().map_err(unavailable)?;
        self.publisher.send(&replica, room, to, frame);
        Ok(true)
    }

    async fn broadcast(
        &self,
        room: &str,
        except: &str,
        presence: Presence,
        frame: Frame,
    ) -> Result<(), StoreError> {
        let kind = match presence {
            Presence::Joined => envelope::Kind::Joined,
            Presence::Left => envelope::Kind::Left,
        };
        if presence == Presence::Left {
            self.view.left(room, except);
        }
        let outcome: Result<Vec<String>, _> = self
            .run(
                &self.scripts.broadcast,
                vec![room_key(room)],
                vec![
                    except,
                    &*self.replica,
                    &*frame,
                    PREFIX,
                    room,
                    kind.tag(),
                    &*self.replica,
                ],
            )
            .await;
        let local = match outcome {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, room, "Redis unavailable; telling local peers only");
                self.local.in_room(room, except)
            }
        };
        for id in local {
            self.local.deliver(&id, frame.clone());
        }
        Ok(())
    }

    fn ready(&self) -> bool {
        self.leased.load(Ordering::Relaxed)
            && self.subscribed.load(Ordering::Relaxed)
            && self.client.is_connected()
    }
}
