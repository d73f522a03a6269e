//! The replica's lease, the reaper of dead replicas' seats, and the reconcile that makes Redis
//! agree with the seats this replica really holds after Redis was away.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use fred::prelude::*;

use super::{PREFIX, RedisStore, replica_set_key, room_key};
use crate::protocol::{LeaveReason, ServerMsg};
use crate::store::{Frame, Presence, RoomStore};

impl RedisStore {
    pub(super) fn spawn_lease_loop(self: &Arc<Self>) {
        let store = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(store.lease / 4);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut needs_reconcile = false;
            loop {
                tick.tick().await;
                match store.renew().await {
                    Ok(fresh) => needs_reconcile = store.lease_held(fresh, needs_reconcile).await,
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

    /// After a renewal: reconcile if needed, update readiness, reap. Returns whether a
    /// reconcile is still needed.
    async fn lease_held(&self, fresh: bool, mut needs_reconcile: bool) -> bool {
        if fresh && !self.view.owned_is_empty() {
            tracing::warn!("lease was new: Redis lost our seats; re-registering live peers");
            needs_reconcile = true;
        }
        if needs_reconcile {
            match self.reconcile().await {
                Ok(()) => needs_reconcile = false,
                Err(e) => tracing::warn!(error = %e, "reconciling seats failed; will retry"),
            }
        }
        if !needs_reconcile && !self.leased.swap(true, Ordering::Relaxed) {
            tracing::info!("Redis lease held; ready");
        }
        // Not ready until Redis confirms the subscription: the subscriber connects (and
        // re-subscribes after a Redis restart) on its own schedule, and frames published
        // before then would be lost.
        let subscribed = self.channel_subscribed().await;
        if self.subscribed.swap(subscribed, Ordering::Relaxed) != subscribed {
            tracing::info!(subscribed, "pub/sub subscription state changed");
        }
        if let Err(e) = self.reap().await {
            tracing::warn!(error = %e, "reaping dead replicas failed");
        }
        needs_reconcile
    }

    async fn channel_subscribed(&self) -> bool {
        let channel = format!("{PREFIX}r:{}", self.replica);
        let numsub = self.client.pubsub_numsub(channel);
        let reply: Result<Vec<fred::types::Value>, _> = super::within(self.lease / 4, numsub).await;
        match reply {
            Ok(pair) => pair.get(1).and_then(|v| v.as_i64()).is_some_and(|n| n >= 1),
            Err(_) => false,
        }
    }

    async fn renew(&self) -> Result<bool, fred::error::Error> {
        let mut args = vec![
            self.replica.to_string(),
            (self.lease.as_millis() as u64).to_string(),
            self.ttl_ms().to_string(),
        ];
        args.extend(self.view.owned_rooms().iter().map(|r| room_key(r)));
        // At most half the lease: a renewal stuck behind a burst of scripts must end (and
        // report not-ready) while the lease it renews still holds.
        let renewal = self.run(
            &self.scripts.renew,
            vec![format!("{PREFIX}replicas"), replica_set_key(&self.replica)],
            args,
        );
        let added: i64 = super::within(self.lease / 2, renewal).await?;
        Ok(added == 1)
    }

    /// Remove the seats of dead replicas and tell their rooms.
    async fn reap(&self) -> Result<(), fred::error::Error> {
        // Bounded like the renewal's other steps: the next renewal waits for this one.
        let reap = self.scripts.reap.evalsha_with_reload(
            &self.client,
            vec![format!("{PREFIX}replicas")],
            vec![PREFIX.to_owned()],
        );
        let removed: Vec<String> = super::within(self.lease / 4, reap).await?;
        for entry in removed {
            if let Some((room, peer)) = entry.split_once(' ') {
                tracing::info!(room, peer, "removed a peer of a dead replica");
                self.announce_left(room, peer).await;
            }
        }
        Ok(())
    }

    async fn announce_left(&self, room: &str, peer: &str) {
        let frame: Frame = ServerMsg::PeerLeft {
            peer_id: peer,
            reason: LeaveReason::Timeout,
        }
        .to_text()
        .into();
        if let Err(e) = self.broadcast(room, peer, Presence::Left, frame).await {
            tracing::warn!(error = %e, room, "could not announce a departure");
        }
    }

    /// Make Redis agree with the seats this replica really holds: drop seats it no longer has
    /// (peers that left while Redis was away) and re-register live ones Redis lost.
    async fn reconcile(&self) -> Result<(), fred::error::Error> {
        let in_redis: Vec<String> = self.client.smembers(replica_set_key(&self.replica)).await?;
        let owned = self.view.owned();
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
            match current.and_then(|s| serde_json::from_str::<super::Seat>(&s).ok()) {
                Some(seat) if *seat.replica == *self.replica => {}
                // Resumed on another replica meanwhile: no longer ours.
                Some(_) => {
                    self.view.disown(&id, None);
                }
                None => {
                    // Re-registration restores a seat that was granted: no cap.
                    self.join_script(&room, &rec, u32::MAX).await.map_err(|e| {
                        fred::error::Error::new(fred::error::ErrorKind::Unknown, e.to_string())
                    })?;
                    let info = rec.info();
                    let frame: Frame = ServerMsg::PeerJoined { peer: &info }.to_text().into();
                    if let Err(e) = self.broadcast(&room, &id, Presence::Joined, frame).await {
                        tracing::warn!(error = %e, room, "could not announce a re-registered peer");
                    }
                    tracing::info!(room, peer = id, "re-registered a live peer");
                }
            }
        }
        Ok(())
    }
}
