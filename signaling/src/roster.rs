//! Every open WebSocket connection, for the two things that would otherwise cost each one a
//! waiter of its own: the server's shutdown, and the connection's next deadline (its next ping,
//! and its join deadline while it holds no seat). One task sweeps the deadlines every tick and
//! wakes the connections whose time came; a shutdown wakes them all. Both go through the
//! connection's outbox, which its loop already polls for the router's cut-off.
//!
//! Per connection that is one slot here (24 bytes) where a tokio timer (112 bytes of the
//! connection's task) and a cancellation waiter (72) were. tokio allocates a task in steps of
//! 128 bytes; with the end of a connection boxed (`conn.rs`), this took the task from 896
//! bytes to 640 (docs/benchmarks.md, memory). The price is precision: a deadline is met
//! within one tick ([`tick_for`]), not to the millisecond.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use slab::Slab;
use tokio::time::{Instant, MissedTickBehavior};

use crate::store::{Alarm, Outbox};

/// How often the deadlines are swept: a tenth of the shorter period, so a 20 s ping comes
/// within 2 s of its time (1 s at most); never more often than every 10 ms.
pub fn tick_for(ping_interval: Duration, join_timeout: Duration) -> Duration {
    (ping_interval.min(join_timeout) / 10).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

pub struct Roster {
    epoch: Instant,
    inner: Mutex<Inner>,
}

struct Inner {
    slots: Slab<Slot>,
    /// The shutdown began: a connection that arrives now is told at once.
    closing: bool,
}

struct Slot {
    alarm: Alarm,
    /// Milliseconds after `epoch`, rounded up (so that a rung deadline has passed), or
    /// [`NONE`] once rung.
    due: u64,
}

const NONE: u64 = u64::MAX;

/// A connection's place in the roster, from [`Roster::enter`] until [`Roster::leave`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key(usize);

impl Default for Roster {
    fn default() -> Self {
        Roster {
            epoch: Instant::now(),
            inner: Mutex::new(Inner {
                slots: Slab::new(),
                closing: false,
            }),
        }
    }
}

impl Roster {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Each update is a few field writes that cannot panic halfway.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ms(&self, at: Instant) -> u64 {
        let after = at.saturating_duration_since(self.epoch);
        u64::try_from(after.as_nanos().div_ceil(1_000_000)).unwrap_or(NONE - 1)
    }

    /// Add a connection whose first deadline is `due`. During a shutdown it is told at once.
    pub fn enter(&self, outbox: &Outbox, due: Instant) -> Key {
        let alarm = outbox.alarm();
        let due = self.ms(due);
        let mut inner = self.lock();
        if inner.closing {
            alarm.shut_down();
        }
        Key(inner.slots.insert(Slot { alarm, due }))
    }

    /// The connection's next deadline is now `due`.
    pub fn set_due(&self, key: Key, due: Instant) {
        let due = self.ms(due);
        if let Some(slot) = self.lock().slots.get_mut(key.0) {
            slot.due = due;
        }
    }

    pub fn leave(&self, key: Key) {
        self.lock().slots.try_remove(key.0);
    }

    /// Tell every connection, and every one that arrives from now on, that the server is
    /// shutting down.
    pub fn shut_down(&self) {
        let mut inner = self.lock();
        inner.closing = true;
        for (_, slot) in &inner.slots {
            slot.alarm.shut_down();
        }
    }

    /// Wake each connection whose deadline is at or before `now`, once. Returns how many.
    pub fn sweep(&self, now: Instant) -> usize {
        let now = self.ms(now);
        let mut rung = 0;
        for (_, slot) in &mut self.lock().slots {
            // Rounded up when set, so `now` (rounded up too) is at most a millisecond early;
            // the connection checks its clock and sets the deadline again if so.
            if slot.due <= now {
                slot.due = NONE;
                slot.alarm.ring();
                rung += 1;
            }
        }
        rung
    }

    /// Sweep every `tick`, for as long as the server runs.
    pub async fn run(&self, tick: Duration) {
        let mut every = tokio::time::interval(tick);
        every.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.sweep(Instant::now());
        }
    }

    /// Connections in the roster.
    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Signal;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake, Waker};

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Waker, Arc<Count>) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (Waker::from(Arc::clone(&count)), count)
    }

    fn poll(outbox: &Outbox, waker: &Waker) -> Poll<Signal> {
        outbox.poll_signal(&mut Context::from_waker(waker))
    }

    /// A deadline rings once, when it has passed and not before; set again, it rings again.
    #[test]
    fn a_deadline_rings_once_when_it_has_passed() {
        let roster = Roster::default();
        let (outbox, _rx) = Outbox::new(1024);
        let (waker, woken) = waker();
        let t0 = Instant::now();
        let key = roster.enter(&outbox, t0 + Duration::from_secs(5));
        assert_eq!(poll(&outbox, &waker), Poll::Pending);
        assert_eq!(roster.sweep(t0 + Duration::from_millis(4_998)), 0);
        assert_eq!(woken.0.load(Ordering::SeqCst), 0, "not due yet");
        assert_eq!(roster.sweep(t0 + Duration::from_secs(5)), 1);
        assert_eq!(woken.0.load(Ordering::SeqCst), 1, "woken when due");
        assert_eq!(poll(&outbox, &waker), Poll::Ready(Signal::Due));
        assert_eq!(poll(&outbox, &waker), Poll::Pending, "taken when read");
        assert_eq!(roster.sweep(t0 + Duration::from_secs(9)), 0, "once");
        roster.set_due(key, t0 + Duration::from_secs(10));
        assert_eq!(
            roster.sweep(t0 + Duration::from_secs(11)),
            1,
            "again once set again"
        );
        roster.leave(key);
        assert!(roster.is_empty());
        roster.set_due(key, t0);
        assert_eq!(roster.sweep(t0 + Duration::from_secs(12)), 0, "gone");
    }

    /// The shutdown reaches every connection in the roster and every one that enters after
    /// it, and wins over a deadline and a cut-off.
    #[test]
    fn the_shutdown_reaches_those_in_and_those_that_arrive() {
        let roster = Roster::default();
        let (early, _rx1) = Outbox::new(1024);
        let (waker, woken) = waker();
        roster.enter(&early, Instant::now());
        assert_eq!(poll(&early, &waker), Poll::Pending);
        roster.sweep(Instant::now() + Duration::from_secs(1));
        early.cut_off(crate::store::Cut::TooSlow);
        roster.shut_down();
        assert!(woken.0.load(Ordering::SeqCst) >= 1);
        assert_eq!(poll(&early, &waker), Poll::Ready(Signal::Shutdown));
        let (late, _rx2) = Outbox::new(1024);
        roster.enter(&late, Instant::now() + Duration::from_secs(60));
        assert_eq!(poll(&late, &waker), Poll::Ready(Signal::Shutdown));
    }

    /// The roster's handle is not a sender: the writer still ends when the connection's own
    /// outbox handles are gone.
    #[tokio::test]
    async fn the_roster_keeps_no_writer_alive() {
        let roster = Roster::default();
        let (outbox, mut rx) = Outbox::new(1024);
        let key = roster.enter(&outbox, Instant::now());
        drop(outbox);
        assert!(rx.next_batch().await.is_none(), "the writer ends");
        roster.leave(key);
    }

    #[test]
    fn the_tick_is_a_tenth_of_the_shorter_period_within_bounds() {
        let s = Duration::from_secs;
        assert_eq!(tick_for(s(20), s(10)), s(1));
        assert_eq!(tick_for(s(2), s(10)), Duration::from_millis(200));
        assert_eq!(tick_for(s(60), s(60)), s(1));
        assert_eq!(
            tick_for(Duration::from_millis(50), s(10)),
            Duration::from_millis(10)
        );
    }
}
