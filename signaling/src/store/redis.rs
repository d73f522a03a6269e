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
//! - pub/sub channel `r:{replica}`: frames for that replica's peers.
//! - `jti:{sha256(jti)}`: a used single-use room token, until the token's expiry.
//!
//! Every key has a TTL of three leases, renewed by the live replicas that use it, so nothing
//! outlives the replicas and rooms that need it. Each operation is one Lua script, so joins are
//! atomic across replicas (the room cap holds under races) and a relay is one round trip.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::scripts::Script;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::{LocalPeers, PeerRecord, RoomStore, StoreError};
use crate::protocol::{LeaveReason, PeerInfo, ServerMsg};

const PREFIX: &str = "otter:";

const JOIN: &str = r#"
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return {'full'} end
local others = redis.call('HVALS', KEYS[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('SADD', KEYS[2], ARGV[4] .. ' ' .. ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
table.insert(others, 1, 'ok')
return others
"#;

const RESUME: &str = r#"
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
  local r = cjson.decode(v)
  if r.resume == ARGV[1] then
    local entry = ARGV[3] .. ' ' .. r.id
    r.resume = ARGV[6]
    redis.call('SREM', ARGV[4] .. 'replica-peers:' .. r.replica, entry)
    r.epoch = r.epoch + 1
    r.replica = ARGV[2]
    local enc = cjson.encode(r)
    redis.call('HSET', KEYS[1], r.id, enc)
    local set = ARGV[4] .. 'replica-peers:' .. ARGV[2]
    redis.call('SADD', set, entry)
    redis.call('PEXPIRE', set, ARGV[5])
    return enc
  end
end
return false
"#;

const LEAVE: &str = r#"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local r = cjson.decode(v)
if ARGV[2] ~= '' and tonumber(ARGV[2]) ~= r.epoch then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', ARGV[4] .. 'replica-peers:' .. r.replica, ARGV[3] .. ' ' .. ARGV[1])
return 1
"#;

const SEND: &str = r#"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local r = cjson.decode(v)
if r.replica == ARGV[2] then return 2 end
redis.call('PUBLISH', ARGV[4] .. 'r:' .. r.replica, ARGV[3])
return 1
"#;

const BROADCAST: &str = r#"
local groups = {}
local mine = {}
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
  local r = cjson.decode(v)
  if r.id ~= ARGV[1] then
    if r.replica == ARGV[2] then
      table.insert(mine, r.id)
    else
      groups[r.replica] = groups[r.replica] or {}
      table.insert(groups[r.replica], r.id)
    end
  end
end
for rep, ids in pairs(groups) do
  redis.call('PUBLISH', ARGV[4] .. 'r:' .. rep, cjson.encode({to = ids, frame = ARGV[3]}))
end
return mine
"#;

/// Renew this replica's lease (server clock) and the TTLs of the keys it uses. Returns 1 when
/// the lease was new: Redis lost our state (restart) or we were presumed dead and reaped.
const RENEW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local added = redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
for i = 4, #ARGV do redis.call('PEXPIRE', ARGV[i], ARGV[3]) end
return added
"#;

/// Remove the seats of replicas whose lease ran out; returns the `"{room} {peer}"` removed.
const REAP: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 16)
local removed = {}
for _, rep in ipairs(dead) do
  redis.call('ZREM', KEYS[1], rep)
  local set = ARGV[1] .. 'replica-peers:' .. rep
  for _, entry in ipairs(redis.call('SMEMBERS', set)) do
    local sp = string.find(entry, ' ', 1, true)
    if sp then
      local rk = ARGV[1] .. 'room:' .. string.sub(entry, 1, sp - 1)
      local peer = string.sub(entry, sp + 1)
      local v = redis.call('HGET', rk, peer)
      if v and cjson.decode(v).replica == rep then
        redis.call('HDEL', rk, peer)
        table.insert(removed, entry)
      end
    end
  end
  redis.call('DEL', set)
end
return removed
"#;

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

/// A frame for some of a replica's peers, as published on its channel.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    to: Vec<String>,
    frame: String,
}

struct Scripts {
    join: Script,
    resume: Script,
    leave: Script,
    send: Script,
    broadcast: Script,
    renew: Script,
    reap: Script,
}

pub struct RedisStore {
    client: Client,
    subscriber: SubscriberClient,
    replica: String,
    lease: Duration,
    scripts: Scripts,
    local: Arc<LocalPeers>,
    /// Seats this replica holds: what it re-registers when Redis lost them.
    owned: Mutex<HashMap<String, (String, PeerRecord)>>,
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

#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    #[error("{0}")]
    Redis(#[from] fred::error::Error),
    #[error("cannot read the Redis CA file {path}: {why}")]
    CaFile {
        path: std::path::PathBuf,
        why: String,
    },
}

/// TLS that trusts the CA certificates in a PEM file.
fn tls_with_ca(
    path: &std::path::Path,
) -> Result<fred::types::config::TlsConnector, RedisSetupError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let fail = |why: String| RedisSetupError::CaFile {
        path: path.to_owned(),
        why,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| fail(e.to_string()))? {
        roots
            .add(cert.map_err(|e| fail(e.to_string()))?)
            .map_err(|e| fail(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(fail("no certificates in it".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config.into())
}

fn unavailable(e: fred::error::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
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
        let mut config = Config::from_url(url)?;
        if let Some(path) = ca_file {
            config.tls = Some(tls_with_ca(path)?.into());
        }
        // Keep retrying the first connection too: Redis may start after us in a cluster.
        config.fail_fast = false;
        let policy = ReconnectPolicy::new_exponential(0, 100, 2_000, 2);
        let build = |b: &mut Builder| {
            b.with_performance_config(|p| {
                p.default_command_timeout = Duration::from_secs(2);
                // Frames from other replicas arrive on fred's broadcast channel; its default of
                // 32 overflows on a burst and loses signaling (found by the load benchmark).
                p.broadcast_channel_capacity = 1 << 16;
            })
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(2);
                c.internal_command_timeout = Duration::from_secs(2);
                c.max_command_attempts = 1;
            })
            .set_policy(policy.clone());
        };
        let mut b = Builder::from_config(config.clone());
        build(&mut b);
        let client = b.build()?;
        let mut b = Builder::from_config(config);
        build(&mut b);
        let subscriber = b.build_subscriber_client()?;
        client.connect();
        subscriber.connect();
        let replica = format!("{:016x}", rand::random::<u64>());
        let store = Arc::new(Self {
            client,
            subscriber,
            replica,
            lease,
            scripts: Scripts {
                join: Script::from_lua(JOIN),
                resume: Script::from_lua(RESUME),
                leave: Script::from_lua(LEAVE),
                send: Script::from_lua(SEND),
                broadcast: Script::from_lua(BROADCAST),
                renew: Script::from_lua(RENEW),
                reap: Script::from_lua(REAP),
            },
            local,
            owned: Mutex::new(HashMap::new()),
            leased: AtomicBool::new(false),
            subscribed: AtomicBool::new(false),
        });
        tracing::info!(replica = store.replica, "room state in Redis");
        store.spawn_subscriber();
        store.spawn_lease_loop();
        Ok(store)
    }

    fn ttl_ms(&self) -> u64 {
        (self.lease.as_millis() as u64).saturating_mul(3)
    }

    fn spawn_subscriber(self: &Arc<Self>) {
        let store = Arc::clone(self);
        let channel = format!("{PREFIX}r:{}", self.replica);
        tokio::spawn(async move {
            let mut rx = store.subscriber.message_rx();
            let _manager = store.subscriber.manage_subscriptions();
            // Until the first SUBSCRIBE succeeds the channel is not tracked for re-subscription.
            while let Err(e) = store.subscriber.subscribe(channel.clone()).await {
                tracing::warn!(error = %e, "subscribing to this replica's channel; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            loop {
                match rx.recv().await {
                    Ok(message) => {
                        let Some(text) = message.value.as_string() else {
                            continue;
                        };
                        match serde_json::from_str::<Envelope>(&text) {
                            Ok(env) => {
                                let frame: Arc<str> = env.frame.into();
                                for to in env.to {
                                    store.local.deliver(&to, Arc::clone(&frame));
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "ignoring a malformed envelope"),
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "pub/sub receiver lagged; frames were lost");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }

    fn spawn_lease_loop(self: &Arc<Self>) {
        let store = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(store.lease / 4);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut needs_reconcile = false;
            loop {
                tick.tick().await;
                match store.renew().await {
                    Ok(fresh) => {
                        if fresh && !store.owned_is_empty() {
                            tracing::warn!(
                                "lease was new: Redis lost our seats; re-registering live peers"
                            );
                            needs_reconcile = true;
                        }
                        if needs_reconcile {
                            match store.reconcile().await {
                                Ok(()) => needs_reconcile = false,
                                Err(e) => {
                                    tracing::warn!(error = %e, "reconciling seats failed; will retry")
                                }
                            }
                        }
                        if !needs_reconcile && !store.leased.swap(true, Ordering::Relaxed) {
                            tracing::info!("Redis lease held; ready");
                        }
                        // Not ready until Redis confirms the subscription: the subscriber
                        // connects (and re-subscribes after a Redis restart) on its own schedule,
                        // and frames published before then would be lost.
                        let subscribed = store.channel_subscribed().await;
                        if store.subscribed.swap(subscribed, Ordering::Relaxed) != subscribed {
                            tracing::info!(subscribed, "pub/sub subscription state changed");
                        }
                        if let Err(e) = store.reap().await {
                            tracing::warn!(error = %e, "reaping dead replicas failed");
                        }
                    }
                    Err(e) => {
                        if store.leased.swap(false, Ordering::Relaxed) {
                            tracing::warn!(error = %e, "lost Redis; not ready until it returns");
                        }
                        // Whatever happened while we were cut off, check our seats on return.
                        needs_reconcile = true;
                    }
                }
            }
        });
    }

    async fn channel_subscribed(&self) -> bool {
        let channel = format!("{PREFIX}r:{}", self.replica);
        let reply: Result<Vec<fred::types::Value>, _> = self.client.pubsub_numsub(channel).await;
        match reply {
            Ok(pair) => pair.get(1).and_then(|v| v.as_i64()).is_some_and(|n| n >= 1),
            Err(_) => false,
        }
    }

    fn owned_is_empty(&self) -> bool {
        self.owned.lock().map(|o| o.is_empty()).unwrap_or(true)
    }

    fn owned_rooms(&self) -> Vec<String> {
        let mut rooms: Vec<String> = self
            .owned
            .lock()
            .map(|o| o.values().map(|(room, _)| room_key(room)).collect())
            .unwrap_or_default();
        rooms.sort_unstable();
        rooms.dedup();
        rooms
    }

    async fn renew(&self) -> Result<bool, fred::error::Error> {
        let mut args = vec![
            self.replica.clone(),
            (self.lease.as_millis() as u64).to_string(),
            self.ttl_ms().to_string(),
        ];
        args.extend(self.owned_rooms());
        let added: i64 = self
            .scripts
            .renew
            .evalsha_with_reload(
                &self.client,
                vec![format!("{PREFIX}replicas"), replica_set_key(&self.replica)],
                args,
            )
            .await?;
        Ok(added == 1)
    }

    /// Remove the seats of dead replicas and tell their rooms.
    async fn reap(&self) -> Result<(), fred::error::Error> {
        let removed: Vec<String> = self
            .scripts
            .reap
            .evalsha_with_reload(
                &self.client,
                vec![format!("{PREFIX}replicas")],
                vec![PREFIX.to_owned()],
            )
            .await?;
        for entry in removed {
            if let Some((room, peer)) = entry.split_once(' ') {
                tracing::info!(room, peer, "removed a peer of a dead replica");
                self.announce_left(room, peer).await;
            }
        }
        Ok(())
    }

    async fn announce_left(&self, room: &str, peer: &str) {
        let frame: Arc<str> = ServerMsg::PeerLeft {
            peer_id: peer,
            reason: LeaveReason::Timeout,
        }
        .to_text()
        .into();
        if let Err(e) = self.broadcast(room, peer, frame).await {
            tracing::warn!(error = %e, room, "could not announce a departure");
        }
    }

    /// Make Redis agree with the seats this replica really holds: drop seats it no longer has
    /// (peers that left while Redis was away) and re-register live ones Redis lost.
    async fn reconcile(&self) -> Result<(), fred::error::Error> {
        let in_redis: Vec<String> = self.client.smembers(replica_set_key(&self.replica)).await?;
        let owned: Vec<(String, String, PeerRecord)> = self
            .owned
            .lock()
            .map(|o| {
                o.iter()
                    .map(|(id, (room, rec))| (id.clone(), room.clone(), rec.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for entry in &in_redis {
            let Some((room, peer)) = entry.split_once(' ') else {
                continue;
            };
            if !owned.iter().any(|(id, r, _)| id == peer && r == room) {
                let removed: i64 = self.leave_script(room, peer, None).await?;
                if removed == 1 {
                    self.announce_left(room, peer).await;
                }
            }
        }
        for (id, room, rec) in owned {
            let current: Option<String> = self.client.hget(room_key(&room), &id).await?;
            match current.and_then(|s| serde_json::from_str::<Seat>(&s).ok()) {
                Some(seat) if seat.replica == self.replica => {}
                Some(_) => {
                    // Resumed on another replica meanwhile: no longer ours.
                    if let Ok(mut o) = self.owned.lock() {
                        o.remove(&id);
                    }
                }
                None => {
                    let seat = self.seat(&rec);
                    let _: Vec<String> = self
                        .scripts
                        .join
                        .evalsha_with_reload(
                            &self.client,
                            vec![room_key(&room), replica_set_key(&self.replica)],
                            vec![
                                id.clone(),
                                serde_json::to_string(&seat).unwrap_or_default(),
                                // Re-registration restores a seat that was granted: no cap.
                                u32::MAX.to_string(),
                                room.clone(),
                                self.ttl_ms().to_string(),
                            ],
                        )
                        .await?;
                    let info = rec.info();
                    let frame: Arc<str> = ServerMsg::PeerJoined { peer: &info }.to_text().into();
                    if let Err(e) = self.broadcast(&room, &id, frame).await {
                        tracing::warn!(error = %e, room, "could not announce a re-registered peer");
                    }
                    tracing::info!(room, peer = id, "re-registered a live peer");
                }
            }
        }
        Ok(())
    }

    fn seat(&self, rec: &PeerRecord) -> Seat {
        Seat {
            id: rec.id.clone(),
            name: rec.name.clone(),
            resume: rec.resume_token.clone(),
            epoch: rec.epoch,
            replica: self.replica.clone(),
            expires: rec.expires,
        }
    }

    async fn leave_script(
        &self,
        room: &str,
        peer: &str,
        epoch: Option<u64>,
    ) -> Result<i64, fred::error::Error> {
        self.scripts
            .leave
            .evalsha_with_reload(
                &self.client,
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

    fn own(&self, room: &str, rec: &PeerRecord) {
        if let Ok(mut o) = self.owned.lock() {
            o.insert(rec.id.clone(), (room.to_owned(), rec.clone()));
        }
    }

    fn disown(&self, peer: &str, epoch: Option<u64>) {
        if let Ok(mut o) = self.owned.lock()
            && o.get(peer)
                .is_some_and(|(_, rec)| epoch.is_none_or(|e| e == rec.epoch))
        {
            o.remove(peer);
        }
    }

    /// While Redis is away, peers of one room on this replica can still reach each other.
    fn deliver_locally(&self, room: &str, to: &str, frame: Arc<str>) -> bool {
        if self.local.is_in_room(to, room) {
            self.local.deliver(to, frame);
            true
        } else {
            false
        }
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
        let seat = serde_json::to_string(&self.seat(peer))
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let reply: Vec<String> = self
            .scripts
            .join
            .evalsha_with_reload(
                &self.client,
                vec![room_key(room), replica_set_key(&self.replica)],
                vec![
                    peer.id.clone(),
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
            Some("ok") => {}
            Some("full") => return Err(StoreError::RoomFull { max }),
            other => {
                return Err(StoreError::Unavailable(format!(
                    "unexpected join reply {other:?}"
                )));
            }
        }
        self.own(room, peer);
        Ok(reply
            .filter_map(|s| serde_json::from_str::<Seat>(&s).ok())
            .map(|s| s.record().info())
            .collect())
    }

    async fn resume(
        &self,
        room: &str,
        resume_token: &str,
        new_token: &str,
    ) -> Result<Option<PeerRecord>, StoreError> {
        let reply: Option<String> = self
            .scripts
            .resume
            .evalsha_with_reload(
                &self.client,
                vec![room_key(room)],
                vec![
                    resume_token.to_owned(),
                    self.replica.clone(),
                    room.to_owned(),
                    PREFIX.to_owned(),
                    self.ttl_ms().to_string(),
                    new_token.to_owned(),
                ],
            )
            .await
            .map_err(unavailable)?;
        let rec = reply
            .and_then(|s| serde_json::from_str::<Seat>(&s).ok())
            .map(|s| s.record());
        if let Some(rec) = &rec {
            self.own(room, rec);
        }
        Ok(rec)
    }

    async fn claim_token(&self, jti: &str, expires: u64) -> Result<bool, StoreError> {
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
        let values: Vec<String> = self
            .client
            .hvals(room_key(room))
            .await
            .map_err(unavailable)?;
        Ok(values
            .into_iter()
            .filter_map(|s| serde_json::from_str::<Seat>(&s).ok())
            .map(|s| s.record().info())
            .collect())
    }

    async fn leave(&self, room: &str, peer: &str, epoch: Option<u64>) -> Result<bool, StoreError> {
        self.disown(peer, epoch);
        match self.leave_script(room, peer, epoch).await {
            Ok(n) => Ok(n == 1),
            Err(e) => {
                // The seat is no longer in `owned`, so the reconcile after Redis returns
                // removes it and tells the room; peers here hear of it now.
                tracing::warn!(error = %e, room, peer, "Redis unavailable; departure will be synced later");
                Ok(true)
            }
        }
    }

    async fn send(&self, room: &str, to: &str, frame: Arc<str>) -> Result<bool, StoreError> {
        let envelope = serde_json::to_string(&Envelope {
            to: vec![to.to_owned()],
            frame: frame.to_string(),
        })
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let outcome: Result<i64, _> = self
            .scripts
            .send
            .evalsha_with_reload(
                &self.client,
                vec![room_key(room)],
                vec![
                    to.to_owned(),
                    self.replica.clone(),
                    envelope,
                    PREFIX.to_owned(),
                ],
            )
            .await;
        match outcome {
            Ok(0) => Ok(false),
            Ok(2) => {
                self.local.deliver(to, frame);
                Ok(true)
            }
            Ok(_) => Ok(true),
            Err(e) => {
                if self.deliver_locally(room, to, frame) {
                    Ok(true)
                } else {
                    Err(unavailable(e))
                }
            }
        }
    }

    async fn broadcast(&self, room: &str, except: &str, frame: Arc<str>) -> Result<(), StoreError> {
        let outcome: Result<Vec<String>, _> = self
            .scripts
            .broadcast
            .evalsha_with_reload(
                &self.client,
                vec![room_key(room)],
                vec![
                    except.to_owned(),
                    self.replica.clone(),
                    frame.to_string(),
                    PREFIX.to_owned(),
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
            self.local.deliver(&id, Arc::clone(&frame));
        }
        Ok(())
    }

    fn ready(&self) -> bool {
        self.leased.load(Ordering::Relaxed)
            && self.subscribed.load(Ordering::Relaxed)
            && self.client.is_connected()
    }
}
