//! Frames for peers on other replicas, batched: one queue and one task per destination
//! replica; while a PUBLISH is under way, frames for that replica gather and go in the next
//! message, so a burst costs Redis (and the receiving replica) one message per batch instead
//! of one per frame, and an idle path adds no delay. One task per destination also keeps the
//! frames of one sender to one peer in order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::prelude::*;
use tokio::sync::mpsc;

use super::PREFIX;
use super::envelope;
use crate::store::Frame;

/// A batch is closed at this many bytes (a frame is at most the 64 KiB message limit, so a
/// batch stays under twice that).
const BATCH_BYTES: usize = 64 * 1024;

/// A queue idle this long ends with its task (its replica may be gone for good: every
/// restart is a new replica id).
const IDLE: Duration = Duration::from_secs(60);

type Queues = Arc<Mutex<HashMap<Arc<str>, mpsc::UnboundedSender<Pending>>>>;

/// A frame on its way to a peer of another replica.
struct Pending {
    room: Arc<str>,
    to: Box<str>,
    frame: Frame,
}

pub struct Publisher {
    client: Client,
    queues: Queues,
}

impl Publisher {
    pub fn new(client: Client) -> Publisher {
        Publisher {
            client,
            queues: Queues::default(),
        }
    }

    /// Queue a frame for `to` in `room`, held by `replica`.
    pub fn send(&self, replica: &Arc<str>, room: &str, to: &str, frame: Frame) {
        let mut pending = Pending {
            room: room.into(),
            to: to.into(),
            frame,
        };
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = queues.get(replica) {
            match tx.send(pending) {
                Ok(()) => return,
                // The task ended (runtime shutting down): start another.
                Err(mpsc::error::SendError(p)) => pending = p,
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(pending);
        queues.insert(Arc::clone(replica), tx);
        let queue = Queue {
            client: self.client.clone(),
            channel: format!("{PREFIX}r:{replica}"),
            replica: Arc::clone(replica),
            queues: Arc::clone(&self.queues),
        };
        tokio::spawn(queue.drain(rx));
    }
}

/// The task of one destination replica.
struct Queue {
    client: Client,
    channel: String,
    replica: Arc<str>,
    queues: Queues,
}

impl Queue {
    /// Publish what the queue holds, a batch at a time, until idle for [`IDLE`].
    async fn drain(self, mut rx: mpsc::UnboundedReceiver<Pending>) {
        loop {
            let first = match tokio::time::timeout(IDLE, rx.recv()).await {
                Ok(Some(first)) => first,
                Ok(None) => return,
                Err(_) => {
                    // Senders queue under this lock: with it held and nothing queued, no frame
                    // can be left behind.
                    let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
                    match rx.try_recv() {
                        Ok(first) => first,
                        Err(_) => {
                            queues.remove(&self.replica);
                            return;
                        }
                    }
                }
            };
            self.publish(first, &mut rx).await;
        }
    }

    async fn publish(&self, first: Pending, rx: &mut mpsc::UnboundedReceiver<Pending>) {
        // Take the batch first and size the message once: grown frame by frame, a burst's
        // message was copied at every doubling (a profile's memmove under this function).
        let mut size = envelope::frame_record_len(&first.room, &first.to, &first.frame);
        let mut pending = vec![first];
        while size < BATCH_BYTES {
            let Ok(p) = rx.try_recv() else { break };
            size += envelope::frame_record_len(&p.room, &p.to, &p.frame);
            pending.push(p);
        }
        let mut batch = String::with_capacity(size);
        for p in &pending {
            envelope::push_frame(&mut batch, &p.room, &p.to, &p.frame);
        }
        drop(pending);
        let publish = self.client.publish(self.channel.as_str(), batch);
        let sent: Result<i64, _> = super::within(super::RELAY_TIMEOUT, publish).await;
        if let Err(e) = sent {
            // Lost like a frame to a peer whose connection drops; the sender was told the
            // store is unavailable if Redis was already known to be away.
            tracing::warn!(error = %e, "publishing frames to another replica failed");
        }
    }
}
