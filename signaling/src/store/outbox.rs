//! A connection's outbound queue, bounded in bytes: whatever is queued and not yet written
//! (relayed frames and the connection's own replies) counts against one budget, so a peer that
//! stops reading pins at most that much memory before it is cut off.
//!
//! One allocation per connection: a mutex-guarded queue that holds no memory while empty, the
//! writer's waker, and the byte count. (tokio's unbounded channel, used before, keeps
//! a 32-slot block per connection even when idle, plus a semaphore and two more `Arc`s: about
//! 1.5 KiB of every joined connection.) The writer takes the whole queue at once, so a burst
//! costs one lock on its side.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// A text frame as queued and written: serialized once, shared by every recipient, handed to
/// the WebSocket layer without a copy.
pub type Frame = Utf8Bytes;

/// Budget cost of a queued ping.
pub const PING_COST: usize = 64;

/// What the writer of a connection is asked to do.
#[derive(Debug)]
pub enum Out {
    /// A text frame; its bytes were taken from the budget and go back once written.
    Frame(Frame),
    /// A ping ([`PING_COST`] bytes of the budget).
    Ping,
    /// The close frame, then stop writing.
    Close(u16, &'static str),
}

impl Out {
    /// Bytes of the budget this item holds until written.
    pub fn cost(&self) -> usize {
        match self {
            Out::Frame(f) => f.len(),
            Out::Ping => PING_COST,
            Out::Close(..) => 0,
        }
    }
}

/// Why the router cut a connection off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The connection cannot keep up with what it is sent.
    TooSlow,
    /// A resumed connection took its seat.
    Superseded,
}

/// What the connection loop is told through its outbox, besides frames to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The server is shutting down ([`crate::roster`]).
    Shutdown,
    /// The router cut the connection off.
    Cut(Cut),
    /// The connection's deadline passed ([`crate::roster`]): a ping or the join deadline.
    Due,
}

// Bits of `Shared::signals`. The first three stay set: the loop ends on them.
const TOO_SLOW: u8 = 1;
const SUPERSEDED: u8 = 2;
const SHUTDOWN: u8 = 4;
const DUE: u8 = 8;

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The budget is spent: the peer is not reading fast enough.
    Full,
    /// The connection's writer is gone.
    Closed,
}

#[derive(Debug)]
struct State {
    queue: VecDeque<Out>,
    /// Bytes queued and not yet written.
    queued: usize,
    max: usize,
    /// While a join is under way: room frames wait here, so the `joined` reply goes first.
    held: Option<Vec<Frame>>,
    /// The writer is gone.
    closed: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// The writer's waker: registered before it looks at the queue, so a push in between still
    /// wakes it. Lighter than a `Notify` (no waiter list behind a lock) for its one waiter.
    wake: AtomicWaker,
    /// Live [`Outbox`] handles; the writer ends when the last one is gone and the queue is empty.
    senders: AtomicUsize,
    /// The [`Signal`]s raised and not yet seen, as bits. Here rather than in tokens and timers
    /// of their own: a child of the shutdown token and a flag were two allocations of every
    /// connection (about 130 bytes), and a timer and a shutdown waiter 184 bytes of its task.
    signals: AtomicU8,
    /// The connection loop's waker for the signals: not the writer's, which waits on the
    /// socket, not on the queue, while a peer that stops reading fills it.
    signal_wake: AtomicWaker,
}

impl Shared {
    fn raise(&self, bit: u8) {
        self.signals.fetch_or(bit, Ordering::AcqRel);
        self.signal_wake.wake();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a few field writes that cannot panic halfway; a poisoned lock still
        // holds a consistent queue.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The sending side (the connection itself, and the router's entry for it).
#[derive(Debug)]
pub struct Outbox {
    shared: Arc<Shared>,
}

/// The writer's side.
#[derive(Debug)]
pub struct Outlet {
    shared: Arc<Shared>,
}

/// What the roster holds of a connection (see [`Outbox::alarm`]).
#[derive(Debug)]
pub struct Alarm {
    shared: Arc<Shared>,
}

impl Alarm {
    /// The connection's deadline passed.
    pub fn ring(&self) {
        self.shared.raise(DUE);
    }

    /// The server is shutting down.
    pub fn shut_down(&self) {
        self.shared.raise(SHUTDOWN);
    }
}

impl Clone for Outbox {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Outbox {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.wake.wake();
        }
    }
}

impl Drop for Outlet {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.closed = true;
        st.queue = VecDeque::new();
        st.held = None;
    }
}

impl Outbox {
    pub fn new(max_bytes: usize) -> (Outbox, Outlet) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                queued: 0,
                max: max_bytes,
                held: None,
                closed: false,
            }),
            wake: AtomicWaker::new(),
            senders: AtomicUsize::new(1),
            signals: AtomicU8::new(0),
            signal_wake: AtomicWaker::new(),
        });
        let outlet = Outlet {
            shared: Arc::clone(&shared),
        };
        (Outbox { shared }, outlet)
    }

    /// Cut the connection off (its loop ends with a close frame that says why).
    pub fn cut_off(&self, why: Cut) {
        let bit = match why {
            Cut::TooSlow => TOO_SLOW,
            Cut::Superseded => SUPERSEDED,
        };
        self.shared.raise(bit);
    }

    /// Ready with the most pressing signal raised (the shutdown, then superseded, which tells
    /// the client its seat lives on elsewhere, then too slow, then a deadline); until one is,
    /// the caller's waker is woken by the next. A deadline is taken when read; the rest stay.
    pub fn poll_signal(&self, cx: &mut Context<'_>) -> Poll<Signal> {
        self.shared.signal_wake.register(cx.waker());
        let bits = self.shared.signals.load(Ordering::Acquire);
        let signal = if bits & SHUTDOWN != 0 {
            Signal::Shutdown
        } else if bits & SUPERSEDED != 0 {
            Signal::Cut(Cut::Superseded)
        } else if bits & TOO_SLOW != 0 {
            Signal::Cut(Cut::TooSlow)
        } else if bits & DUE != 0 {
            self.shared.signals.fetch_and(!DUE, Ordering::AcqRel);
            Signal::Due
        } else {
            return Poll::Pending;
        };
        Poll::Ready(signal)
    }

    /// A handle for [`crate::roster`]: it can only raise the shutdown and the deadline, and
    /// it is not a sender (the writer still ends when the connection's handles are gone).
    pub fn alarm(&self) -> Alarm {
        Alarm {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Queue a text frame if the byte budget allows it.
    pub fn push(&self, frame: Frame) -> Result<(), Refused> {
        {
            let mut st = self.shared.lock();
            take_budget(&mut st, frame.len())?;
            if let Some(held) = st.held.as_mut() {
                held.push(frame);
                return Ok(());
            }
            st.queue.push_back(Out::Frame(frame));
        }
        self.shared.wake.wake();
        Ok(())
    }

    /// Hold room frames from now on: the connection is joining, and the room may hear of it
    /// (and send it frames) before its `joined` reply is ready.
    pub fn hold(&self) {
        self.shared.lock().held = Some(Vec::new());
    }

    /// Queue `first` (the `joined` reply), then what was held meanwhile, in order.
    pub fn release(&self, first: Option<Frame>) -> Result<(), Refused> {
        let mut result = Ok(());
        {
            let mut st = self.shared.lock();
            let held = st.held.take().unwrap_or_default();
            if let Some(f) = first {
                result = take_budget(&mut st, f.len());
                if result.is_ok() {
                    st.queue.push_back(Out::Frame(f));
                }
            }
            if !st.closed {
                st.queue.extend(held.into_iter().map(Out::Frame));
            }
        }
        self.shared.wake.wake();
        result
    }

    /// Queue a ping; it costs [`PING_COST`] of the budget, since the pings of a peer that
    /// stops reading pile up too.
    pub fn ping(&self) -> Result<(), Refused> {
        {
            let mut st = self.shared.lock();
            take_budget(&mut st, PING_COST)?;
            st.queue.push_back(Out::Ping);
        }
        self.shared.wake.wake();
        Ok(())
    }

    /// Queue the close frame (once per connection, outside the budget).
    pub fn control(&self, out: Out) {
        {
            let mut st = self.shared.lock();
            if st.closed {
                return;
            }
            st.queue.push_back(out);
        }
        self.shared.wake.wake();
    }
}

fn take_budget(st: &mut State, bytes: usize) -> Result<(), Refused> {
    if st.closed {
        return Err(Refused::Closed);
    }
    if bytes > st.max.saturating_sub(st.queued) {
        return Err(Refused::Full);
    }
    st.queued += bytes;
    Ok(())
}

impl Outlet {
    /// Take everything queued (in order), or register to be woken when something is. `None`
    /// once every [`Outbox`] is gone and nothing is left.
    pub fn poll_batch(&mut self, cx: &mut Context<'_>) -> Poll<Option<VecDeque<Out>>> {
        self.shared.wake.register(cx.waker());
        let mut st = self.shared.lock();
        if !st.queue.is_empty() {
            // Taken, not swapped: an idle connection keeps no queue capacity.
            return Poll::Ready(Some(std::mem::take(&mut st.queue)));
        }
        if self.shared.senders.load(Ordering::Acquire) == 0 {
            return Poll::Ready(None);
        }
        Poll::Pending
    }

    /// Wait until something is queued and take all of it (see [`Outlet::poll_batch`]).
    pub async fn next_batch(&mut self) -> Option<VecDeque<Out>> {
        std::future::poll_fn(|cx| self.poll_batch(cx)).await
    }

    /// The next item, one at a time (tests and tools).
    pub async fn recv(&mut self) -> Option<Out> {
        std::future::poll_fn(|cx| {
            self.shared.wake.register(cx.waker());
            if let Some(out) = self.try_recv() {
                return Poll::Ready(Some(out));
            }
            if self.shared.senders.load(Ordering::Acquire) == 0 {
                return Poll::Ready(self.try_recv());
            }
            Poll::Pending
        })
        .await
    }

    /// The next item if one is queued (its budget is given back at once).
    pub fn try_recv(&mut self) -> Option<Out> {
        let mut st = self.shared.lock();
        let out = st.queue.pop_front()?;
        st.queued = st.queued.saturating_sub(out.cost());
        Some(out)
    }

    /// `bytes` of the budget were written to the socket: give them back.
    pub fn written(&self, bytes: usize) {
        let mut st = self.shared.lock();
        st.queued = st.queued.saturating_sub(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(rx: &mut Outlet) -> Vec<String> {
        std::iter::from_fn(|| match rx.try_recv() {
            Some(Out::Frame(f)) => Some(f.to_string()),
            _ => None,
        })
        .collect()
    }

    /// Frames the room sends while a join is under way come after the `joined` reply: a
    /// client must never hear of a peer before it knows its own seat (the load generator
    /// caught this when the writer moved to its own task).
    #[test]
    fn held_frames_follow_the_joined_reply() {
        let (outbox, mut rx) = Outbox::new(1 << 20);
        outbox.hold();
        outbox.push("peer-joined".into()).expect("held");
        assert!(rx.try_recv().is_none(), "held, not sent");
        outbox.release(Some("joined".into())).expect("released");
        outbox.push("offer".into()).expect("sent");
        assert_eq!(drain(&mut rx), ["joined", "peer-joined", "offer"]);
    }

    #[test]
    fn the_budget_is_in_bytes() {
        let (outbox, rx) = Outbox::new(10);
        outbox.push("12345678".into()).expect("fits");
        assert_eq!(outbox.push("123".into()), Err(Refused::Full));
        rx.written(8);
        outbox.push("123".into()).expect("fits again once written");
    }

    /// The cut-off wakes the connection loop, and superseded wins over too slow whatever the
    /// order (a too-slow connection whose seat was resumed elsewhere is told where it went).
    #[test]
    fn a_cut_off_wakes_the_loop_and_superseded_wins() {
        let (outbox, _rx) = Outbox::new(10);
        let router = outbox.clone();
        let (waker, woken) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(outbox.poll_signal(&mut cx), Poll::Pending);
        router.cut_off(Cut::TooSlow);
        assert_eq!(woken.load(Ordering::SeqCst), 1, "the loop was woken");
        let too_slow = Poll::Ready(Signal::Cut(Cut::TooSlow));
        assert_eq!(outbox.poll_signal(&mut cx), too_slow);
        assert_eq!(outbox.poll_signal(&mut cx), too_slow, "it stays");
        router.cut_off(Cut::Superseded);
        router.cut_off(Cut::TooSlow);
        let superseded = Poll::Ready(Signal::Cut(Cut::Superseded));
        assert_eq!(outbox.poll_signal(&mut cx), superseded);
    }

    /// A deadline is taken when read and comes after a cut-off; the shutdown comes first.
    #[test]
    fn signals_come_most_pressing_first() {
        let (outbox, _rx) = Outbox::new(10);
        let alarm = outbox.alarm();
        let (waker, woken) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        alarm.ring();
        assert_eq!(woken.load(Ordering::SeqCst), 0, "nothing registered yet");
        assert_eq!(outbox.poll_signal(&mut cx), Poll::Ready(Signal::Due));
        assert_eq!(outbox.poll_signal(&mut cx), Poll::Pending, "taken");
        alarm.ring();
        outbox.cut_off(Cut::TooSlow);
        let too_slow = Poll::Ready(Signal::Cut(Cut::TooSlow));
        assert_eq!(outbox.poll_signal(&mut cx), too_slow);
        alarm.shut_down();
        assert_eq!(outbox.poll_signal(&mut cx), Poll::Ready(Signal::Shutdown));
        assert!(woken.load(Ordering::SeqCst) >= 2);
    }

    fn counting_waker() -> (std::task::Waker, Arc<AtomicUsize>) {
        struct Count(Arc<AtomicUsize>);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let n = Arc::new(AtomicUsize::new(0));
        (Arc::new(Count(n.clone())).into(), n)
    }

    #[test]
    fn a_gone_writer_refuses_frames() {
        let (outbox, rx) = Outbox::new(10);
        drop(rx);
        assert_eq!(outbox.push("1".into()), Err(Refused::Closed));
        assert_eq!(outbox.ping(), Err(Refused::Closed));
    }

    /// The writer takes a burst in one batch, in order, and ends once every sender is gone.
    #[tokio::test]
    async fn batches_in_order_until_the_last_sender_goes() {
        let (outbox, mut rx) = Outbox::new(1 << 10);
        let other = outbox.clone();
        outbox.push("a".into()).expect("a");
        other.push("b".into()).expect("b");
        outbox.control(Out::Close(1000, "bye"));
        let batch = rx.next_batch().await.expect("a batch");
        let kinds: Vec<String> = batch
            .iter()
            .map(|o| match o {
                Out::Frame(f) => f.to_string(),
                Out::Ping => "ping".into(),
                Out::Close(code, _) => code.to_string(),
            })
            .collect();
        assert_eq!(kinds, ["a", "b", "1000"]);
        drop(outbox);
        let waiting = tokio::spawn(async move { rx.next_batch().await.is_none() });
        tokio::task::yield_now().await;
        drop(other);
        assert!(
            waiting.await.expect("no panic"),
            "ends when the senders are gone"
        );
    }
}
