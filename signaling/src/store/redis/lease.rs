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
            // The first lease is new by definition; a later new one means Redis lost it.
            let mut held_before = false;
            loop {
                tick.tick().await;
                match store.renew().await {
                    Ok(fresh) => {
                        let lost = fresh && held_before;
                        held_before = true;
                        needs_reconcile = store.lease_held(lost, needs_reconcile).await;
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

    /// After a renewal (`lost`: a lease held before was new again): reconcile if needed, update
    /// readiness, reap. Returns whether a reconcile is still needed.
    async fn lease_held(&self, lost: bool, mut needs_reconcile: bool) -> bool {
        if lost && !self.view.owned_is_empty() {
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
        for entry in &in_redis {
            let Some((room, peer)) = entry.split_once(' ') else {
                continue;
            };
            if !self.view.holds(peer, room) {
                self.drop_stale_seat(room, peer).await?;
            }
        }
        for (id, room, rec) in self.view.owned() {
            let current: Option<String> = self.client.hget(room_key(&room), &id).await?;
            match current.and_then(|s| serde_json::from_str::<super::Seat>(&s).ok()) {
                Some(seat) if *seat.replica == *self.replica => {}
                // Resumed on another replica meanwhile: no longer ours.
                Some(_) => {
                    self.view.disown(&id, None);
                }
                // Left meanwhile (the view lets go before the leave script runs): not restored.
                None if !self.view.holds(&id, &room) => {}
                None => {
                    // Re-registration restores a seat that was granted: no cap.
                    self.join_script(&room, &rec, u32::MAX).await.map_err(|e| {
                        fred::error::Error::new(fred::error::ErrorKind::Unknown, e.to_string())
                    })?;
                    // Left while it was being restored: its leave may have found nothing.
                    if !self.view.holds(&id, &room) {
                        self.leave_script(&room, &id, None).await?;
                        continue;
                    }
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

    /// Remove a seat Redis lists for this replica that the view does not hold (its peer left
    /// while Redis was away), and tell its room; unless it is being taken right now (its join
    /// or resume script ran, the view is not updated yet), and only at the epoch read, so a
    /// resume that moves it meanwhile keeps it.
    async fn drop_stale_seat(&self, room: &str, peer: &str) -> Result<(), fred::error::Error> {
        let raw: Option<String> = self.client.hget(room_key(room), peer).await?;
        let seat = raw.and_then(|s| serde_json::from_str::<super::Seat>(&s).ok());
        if seat
            .as_ref()
            .is_some_and(|s| *s.replica != *self.replica || self.view.claimed(&s.resume))
        {
            return Ok(());
        }
        let removed: i64 = self.leave_script(room, peer, seat.map(|s| s.epoch)).await?;
        if removed == 1 {
            self.announce_left(room, peer).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use fred::prelude::*;
    use otter_testkit::RedisServer;

    use super::super::{RedisStore, room_key};
    use crate::store::{LocalPeers, PeerRecord};

    fn rec(id: &str) -> PeerRecord {
        PeerRecord::for_test(id)
    }

    async fn connected(redis: &RedisServer) -> Arc<RedisStore> {
        // A long lease: the loop's own reconciles stay out of the way of the ones called here.
        let store = RedisStore::start(
            &redis.url(),
            None,
            Duration::from_secs(600),
            Arc::new(LocalPeers::default()),
        )
        .await
        .expect("store");
        tokio::time::timeout(Duration::from_secs(10), async {
            while !store.client.is_connected() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("connected to redis-server");
        store
    }

    async fn seat_of(store: &RedisStore, room: &str, peer: &str) -> Option<String> {
        store.client.hget(room_key(room), peer).await.expect("hget")
    }

    /// Seen at 19,700 peers on three replicas: a replica whose first renewal found its lease
    /// new reconciled while peers joined, and removed the seat of one whose join script had run
    /// but whose join had not reached the view yet; its mate's frames then got `unknown-peer`.
    #[tokio::test]
    async fn a_reconcile_keeps_a_seat_being_taken_and_drops_a_stale_one() {
        let redis = RedisServer::start();
        let store = connected(&redis).await;
        let joining = rec("p-joining");
        let claim = store.view.claim(&joining.resume_token);
        store
            .join_script("room-a", &joining, 10)
            .await
            .expect("join script");
        store
            .join_script("room-a", &rec("p-gone"), 10)
            .await
            .expect("join script");
        store.reconcile().await.expect("reconcile");
        assert!(
            seat_of(&store, "room-a", "p-joining").await.is_some(),
            "a seat being taken is kept"
        );
        assert!(
            seat_of(&store, "room-a", "p-gone").await.is_none(),
            "a seat this replica does not hold is removed"
        );
        drop(claim);
        store.reconcile().await.expect("reconcile");
        assert!(
            seat_of(&store, "room-a", "p-joining").await.is_none(),
            "once the take is over, a seat the view never got is stale"
        );
    }

    /// A peer that left while its seat was being restored is not left in Redis.
    #[tokio::test]
    async fn a_reconcile_does_not_restore_a_peer_that_left() {
        let redis = RedisServer::start();
        let store = connected(&redis).await;
        let peer = rec("p-left");
        store.view.own("room-b", &peer, Vec::new());
        store.reconcile().await.expect("reconcile");
        assert!(
            seat_of(&store, "room-b", "p-left").await.is_some(),
            "a held seat Redis lost is restored"
        );
        store.view.disown("p-left", None);
        store
            .client
            .hdel::<(), _, _>(room_key("room-b"), "p-left")
            .await
            .expect("hdel");
        store.reconcile().await.expect("reconcile");
        assert!(seat_of(&store, "room-b", "p-left").await.is_none());
    }
}
