//! Records from other replicas, on this replica's pub/sub channel: presence updates the view
//! first (so a client that hears of a peer can address it at once), then frames go to local
//! connections. A frame for a peer no longer here is routed again by the room hash.

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;

use super::envelope::{self, Kind, Record};
use super::{PREFIX, RedisStore};
use crate::store::{Delivery, Frame};

impl RedisStore {
    pub(super) fn spawn_subscriber(self: &Arc<Self>) {
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
                    Ok(message) => match message.value.as_bytes().map(std::str::from_utf8) {
                        Some(Ok(text)) => store.on_message(text),
                        _ => tracing::warn!("ignoring a pub/sub message that is not text"),
                    },
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::error!(missed = n, "pub/sub receiver lagged; frames were lost");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }

    fn on_message(self: &Arc<Self>, text: &str) {
        for rec in envelope::records(text) {
            match rec {
                Ok(rec) => self.on_record(&rec),
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring the rest of a pub/sub message");
                    break;
                }
            }
        }
    }

    fn on_record(self: &Arc<Self>, rec: &Record<'_>) {
        match rec.kind {
            Kind::Joined => self.view.placed(rec.room, rec.subject, rec.replica),
            Kind::Left => self.view.left(rec.room, rec.subject),
            Kind::Moved => {
                self.view.placed(rec.room, rec.subject, rec.replica);
                // A connection here for a seat resumed elsewhere is stale: cut it off, as a
                // resume on this replica would.
                if rec.replica != &*self.replica
                    && let Some(epoch) = rec.epoch()
                {
                    self.local.supersede(rec.subject, epoch);
                }
                return;
            }
            Kind::Frame | Kind::Forwarded => {}
        }
        let frame: Frame = rec.frame.into();
        for to in rec.to() {
            let delivery = self.local.deliver(to, frame.clone());
            if delivery == Delivery::Absent && rec.kind == Kind::Frame {
                self.forward(rec.room, to, frame.clone());
            }
        }
    }

    /// A frame for a peer that is not here: unless its seat is ours (its connection is between
    /// a loss and a resume), it moved; the room hash knows where.
    fn forward(self: &Arc<Self>, room: &str, to: &str, frame: Frame) {
        if self
            .view
            .where_is(room, to)
            .is_some_and(|r| r == self.replica)
        {
            return;
        }
        let store = Arc::clone(self);
        let (room, to) = (room.to_owned(), to.to_owned());
        tokio::spawn(async move {
            if let Err(e) = store.send_by_script(&room, &to, frame).await {
                tracing::debug!(error = %e, room, "could not forward a frame");
            }
        });
    }
}
