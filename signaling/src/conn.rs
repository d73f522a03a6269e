//! One WebSocket connection: reads frames, enforces the per-connection limits, calls the hub,
//! and writes what the room sends it through its outbox. One task does both: it polls the
//! writer beside the socket's read side and never waits on a write, so a peer that stops
//! reading is cut off by the same limits and timeouts as any other. Nothing here can crash the
//! server, only end this connection.
//!
//! The loop ([`run`]) is generic over `Sink`/`Stream` of WebSocket messages, so unit tests
//! drive it with channels; [`serve`] binds it to a real socket and adds the close sequence
//! that needs the socket itself (drain unread input, then drop).

use std::num::NonZeroU32;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::{self, FutureExt};
use futures::{Sink, Stream, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::Instrument;

use crate::buffers;
use crate::hub::{Hub, Relay, Session};
use crate::protocol::{
    ClientMsg, ErrorCode, LeaveReason, Parsed, ProtoError, RelayIn, ServerMsg, error_text,
    parse_client, parse_relay,
};
use crate::roster;
use crate::store::{Cut, Out, Outbox, Signal};
use crate::ws::WebSocket;

mod writer;
use writer::WriteLoop;

/// Close codes (RFC 6455 and the IANA registry).
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const RESTART: u16 = 1012;
    pub const TRY_LATER: u16 = 1013;
    /// Private range: the seat was resumed by another connection.
    pub const SUPERSEDED: u16 = 4001;
    /// Private range, from the client: going away but keep my seat for a resume.
    pub const KEEP_SEAT: u16 = 4000;
}

/// Per-connection limits, from the config.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_message_bytes: usize,
    pub rate_per_sec: NonZeroU32,
    pub burst: NonZeroU32,
    pub idle_timeout: Duration,
    pub ping_interval: Duration,
    /// A connection that holds no seat this long after connecting (or leaving) is closed.
    pub join_timeout: Duration,
    /// Bytes queued for the client and not yet written before it counts as too slow.
    pub queue_bytes: usize,
    /// After the close frame: bound on finishing the write, and again on draining input.
    pub close_grace: Duration,
}

/// Why a connection ended, which decides what happens to its seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Close frame from the client: it meant to go.
    Closed,
    /// Transport lost without a close frame (or close 4000): hold the seat for a resume.
    Lost,
    /// The server cut it off (a limit).
    Kicked,
    /// Nothing received for too long.
    Idle,
    /// The server is shutting down; the client was told to reconnect elsewhere.
    Shutdown,
}

/// What the loop does after one event.
enum Step {
    Go,
    Stop(End),
}

/// What woke the loop.
enum Event {
    /// The server's shutdown, the router's cut-off or the connection's deadline.
    Signal(Signal),
    /// The writer ended: the socket failed.
    WriterDone,
    /// A frame, the end of the input, or a read error.
    Frame(Option<Result<Message, WsError>>),
}

/// The loop's next event, writing meanwhile. In this order: the signals first, so a connection
/// that is cut off handles no more frames; the writer before the input, so what is queued goes
/// out before more is read. One task polls all of them, so whatever woke it, each is polled.
fn next_event<'a, T: Duplex>(
    outbox: &'a Outbox,
    io: &'a mut T,
    writer: &'a mut WriteLoop,
) -> impl Future<Output = Event> + 'a {
    future::poll_fn(move |cx| {
        if let Poll::Ready(signal) = outbox.poll_signal(cx) {
            return Poll::Ready(Event::Signal(signal));
        }
        if writer.poll_write(io, cx).is_ready() {
            return Poll::Ready(Event::WriterDone);
        }
        io.poll_next_unpin(cx).map(Event::Frame)
    })
}

/// The socket, both ways: a [`WebSocket`], or channels in tests.
trait Duplex: Stream<Item = Result<Message, WsError>> + Sink<Message> + Unpin {}

impl<T: Stream<Item = Result<Message, WsError>> + Sink<Message> + Unpin> Duplex for T {}

/// The connection's deadlines: pings, and the join deadline while it holds no seat. The
/// roster rings the connection when the next of them passes ([`crate::roster`]).
struct Clock {
    next_ping: tokio::time::Instant,
    join_by: tokio::time::Instant,
    /// The deadline the roster holds for this connection.
    armed: tokio::time::Instant,
}

impl Clock {
    fn new(limits: &ConnLimits) -> Clock {
        let now = tokio::time::Instant::now();
        let join_by = now + limits.join_timeout;
        let next_ping = now + limits.ping_interval;
        Clock {
            next_ping,
            join_by,
            armed: next_ping.min(join_by),
        }
    }

    fn next(&self, unjoined: bool) -> tokio::time::Instant {
        if unjoined {
            self.next_ping.min(self.join_by)
        } else {
            self.next_ping
        }
    }
}

/// Serve one upgraded connection until it ends, then close it gracefully: the close frame is
/// written, unread input is drained for a bounded time (a socket dropped with unread input
/// sends a TCP reset, and the client would lose the close frame), then the socket is dropped.
///
/// Everything that can be built before the first await is built here, outside the future: a
/// future keeps its arguments for its whole life, so a socket held there would cost every
/// connection its size again.
pub fn serve<S>(
    ws: WebSocket<S>,
    hub: Arc<Hub>,
    limits: Arc<ConnLimits>,
    over: bool,
) -> impl Future<Output = ()> + Send + 'static
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    hub.metrics.connections.inc();
    hub.metrics.connections_total.inc();
    let metrics = Arc::clone(&hub.metrics);
    let (grace, cap) = (
        limits.close_grace,
        (4 << 20).max(2 * limits.max_message_bytes),
    );
    // Chained, not awaited inside an `async move`: that block would keep the running future
    // as a captured value and again where it is awaited.
    Started::new(ws, hub, limits, over)
        .run()
        .then(move |ws| async move {
            if let Some(mut ws) = ws {
                drain_input(ws.get_mut(), grace, cap).await;
            }
            metrics.connections.dec();
        })
}

/// Half-close, then read and discard until the client closes too, within the bounds (into one
/// scratch buffer per thread: every connection drains at once at a shutdown).
async fn drain_input<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S, within: Duration, cap: usize) {
    let _ = tokio::time::timeout(within, async {
        let _ = io.shutdown().await;
        let mut total = 0;
        while total < cap {
            match future::poll_fn(|cx| buffers::poll_discard(io, cx)).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

/// The connection loop over any WebSocket sink and stream. Returns the sink when the close
/// frame was written within the bounds, so the caller can drain the socket before dropping it.
pub async fn run<Si, St>(
    sink: Si,
    stream: &mut St,
    hub: Arc<Hub>,
    limits: Arc<ConnLimits>,
    over_capacity: bool,
) -> Option<Si>
where
    Si: Sink<Message> + Unpin + Send + 'static,
    St: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let io = Pair { sink, stream };
    let io = Started::new(io, hub, limits, over_capacity).run().await;
    io.map(|io| io.sink)
}

/// A sink and a stream as one [`Duplex`], for [`run`].
struct Pair<Si, St> {
    sink: Si,
    stream: St,
}

impl<Si: Unpin, St: Stream + Unpin> Stream for Pair<Si, St> {
    type Item = St::Item;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<St::Item>> {
        self.stream.poll_next_unpin(cx)
    }
}

impl<Si: Sink<Message> + Unpin, St: Unpin> Sink<Message> for Pair<Si, St> {
    type Error = Si::Error;
    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Si::Error>> {
        Pin::new(&mut self.sink).poll_ready(cx)
    }
    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Si::Error> {
        Pin::new(&mut self.sink).start_send(item)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Si::Error>> {
        Pin::new(&mut self.sink).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Si::Error>> {
        Pin::new(&mut self.sink).poll_close(cx)
    }
}

/// A connection ready to run: what [`run`] builds before its first await. The socket is owned
/// whole, not split: both sides are polled by this one task, so they need no lock between them.
struct Started<T> {
    conn: Conn,
    io: T,
    writer: WriteLoop,
    over_capacity: bool,
}

impl<T: Duplex> Started<T> {
    fn new(io: T, hub: Arc<Hub>, limits: Arc<ConnLimits>, over_capacity: bool) -> Self {
        let (outbox, rx) = Outbox::new(limits.queue_bytes);
        Started {
            conn: Conn::new(hub, limits, outbox),
            io,
            writer: WriteLoop::new(rx),
            over_capacity,
        }
    }

    /// Returns the socket if the close frame was written, for the caller to drain. Not an
    /// `async fn`: that keeps its argument twice (as passed, and as its local binding), and with
    /// the socket in it that is 600 bytes of every connection. The block below uses the value it
    /// captured, field by field (locals moved out of it would be kept beside it too).
    fn run(self) -> impl Future<Output = Option<T>> {
        let mut this = self;
        async move {
            let end = if this.over_capacity {
                this.conn.send_error(&ProtoError::new(
                    ErrorCode::ServerBusy,
                    "this server has too many connections; try again shortly",
                ));
                this.conn.close(close::TRY_LATER, "server busy");
                End::Kicked
            } else {
                let (io, writer) = (&mut this.io, &mut this.writer);
                this.conn.serve_frames(io, writer).await
            };
            // Writing meanwhile: a kick's close frame is queued before the seat is given up.
            // This and the close below are boxed: they run once, at the end, and their state
            // (a store call; a timer) would otherwise be the largest of the future, which
            // every connection carries all its life.
            {
                let mut settling = Box::pin(this.conn.settle(end));
                writing_while(settling.as_mut(), &mut this.io, &mut this.writer).await;
            }
            if end != End::Lost {
                this.conn.close(close::NORMAL, "bye");
            }
            let grace = this.conn.limits.close_grace;
            // The writer ends once the last outbox handle is gone (when no close was queued).
            drop(this.conn);
            let closed = Box::pin(finish(&mut this.io, &mut this.writer, grace)).await;
            closed.then_some(this.io)
        }
    }
}

/// Await `fut`, and while it waits keep writing: the writer has no task of its own, and a
/// store call (a join, a leave, a relay through Redis) may wait for a while. The writer is
/// polled only when `fut` is pending, so a frame handled at once costs no extra poll. If the
/// writer ends meanwhile, the connection loop sees it on its next turn.
fn writing_while<'a, F, T>(
    mut fut: Pin<&'a mut F>,
    io: &'a mut T,
    writer: &'a mut WriteLoop,
) -> impl Future<Output = F::Output> + 'a
where
    F: Future,
    T: Duplex,
{
    future::poll_fn(move |cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        let _ = writer.poll_write(io, cx);
        Poll::Pending
    })
}

/// Wait (bounded) for the writer to send the close, reading and discarding what the client
/// still sends meanwhile. True if the close frame was written.
async fn finish<T: Duplex>(io: &mut T, writer: &mut WriteLoop, grace: Duration) -> bool {
    let mut deadline = pin!(tokio::time::sleep(grace));
    let mut reading = true;
    future::poll_fn(|cx| {
        if let Poll::Ready(ok) = writer.poll_write(io, cx) {
            return Poll::Ready(ok);
        }
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(false);
        }
        // Until the input ends or fails; each frame read is dropped.
        while reading {
            match io.poll_next_unpin(cx) {
                Poll::Ready(frame) => reading = matches!(frame, Some(Ok(_))),
                Poll::Pending => break,
            }
        }
        Poll::Pending
    })
    .await
}

/// The reading side's state.
struct Conn {
    hub: Arc<Hub>,
    /// Shared by every connection: a copy would cost each one its size.
    limits: Arc<ConnLimits>,
    /// Also how the router cuts this connection off.
    outbox: Outbox,
    /// On quanta's clock (the TSC): std's would save 32 bytes here, but not a step of the
    /// task's allocation, and it costs a `clock_gettime` per frame (about 1% of a relay).
    limiter: DefaultDirectRateLimiter,
    /// Refused frames: a bucket of `burst` that refills at the sustained rate, so violations
    /// decay and only a client that keeps flooding is cut off. Built at the first refusal:
    /// building a limiter costs a CPUID on every connect (see docs/benchmarks.md).
    /// Boxed: most connections never need it, and it would sit in every one of them.
    strikes: Option<Box<DefaultDirectRateLimiter>>,
    session: Option<Session>,
    last_rx: Instant,
    clock: Clock,
    /// This connection's slot in the hub's roster, given up when it is dropped.
    key: roster::Key,
    /// Set when the connection gives up its seat: the join deadline starts again.
    rearm: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.hub.roster.leave(self.key);
    }
}

impl Conn {
    fn new(hub: Arc<Hub>, limits: Arc<ConnLimits>, outbox: Outbox) -> Conn {
        let quota = Quota::per_second(limits.rate_per_sec).allow_burst(limits.burst);
        let clock = Clock::new(&limits);
        let key = hub.roster.enter(&outbox, clock.armed);
        Conn {
            hub,
            limits,
            outbox,
            limiter: RateLimiter::direct(quota),
            strikes: None,
            session: None,
            last_rx: Instant::now(),
            clock,
            key,
            rearm: false,
        }
    }

    async fn serve_frames<T: Duplex>(&mut self, io: &mut T, writer: &mut WriteLoop) -> End {
        loop {
            // The event is consumed here, not held across the await below: it may hold a frame
            // (about 140 bytes), which would sit in every idle connection. A frame's handling is
            // boxed for the same reason: it is the largest state of this loop
            // (docs/benchmarks.md, memory).
            let step = {
                let turn = match next_event(&self.outbox, io, writer).await {
                    Event::Frame(frame) => Err(Box::pin(self.on_frame(frame))),
                    Event::Signal(Signal::Shutdown) => Ok(self.shutdown()),
                    Event::Signal(Signal::Cut(why)) => Ok(self.cut_off(why)),
                    Event::Signal(Signal::Due) => Ok(self.on_timer()),
                    Event::WriterDone => Ok(Step::Stop(End::Lost)),
                };
                match turn {
                    Ok(step) => step,
                    Err(mut handling) => writing_while(handling.as_mut(), io, writer).await,
                }
            };
            if let Step::Stop(end) = step {
                return end;
            }
            self.arm();
        }
    }

    /// Give the roster the next deadline, if it moved (or was rung).
    fn arm(&mut self) {
        if std::mem::take(&mut self.rearm) {
            self.clock.join_by = tokio::time::Instant::now() + self.limits.join_timeout;
        }
        let at = self.clock.next(self.session.is_none());
        if at != self.clock.armed {
            self.hub.roster.set_due(self.key, at);
            self.clock.armed = at;
        }
    }

    /// The roster rang: the join deadline (while it holds no seat) or a ping is due.
    fn on_timer(&mut self) -> Step {
        let now = tokio::time::Instant::now();
        // Rung once: whatever is due now, the roster is given a deadline again.
        self.clock.armed = now;
        let clock = &mut self.clock;
        if self.session.is_none() && now >= clock.join_by {
            return self.never_joined();
        }
        if now >= clock.next_ping {
            clock.next_ping = (clock.next_ping + self.limits.ping_interval).max(now);
            return self.tick();
        }
        Step::Go
    }

    /// The connection's span, made when something may log: a span kept for the connection's
    /// whole life costs about 460 bytes of it in the subscriber (docs/benchmarks.md, memory).
    /// Relays, the hot path, log only their rare failures, which name room and peer themselves.
    fn span(&self) -> tracing::Span {
        match &self.session {
            Some(s) => tracing::info_span!("conn", room = %s.room, peer = %s.peer_id),
            None => tracing::info_span!("conn"),
        }
    }

    /// Queue a reply; a client whose budget is spent is not reading and is cut off.
    fn send(&self, text: String) {
        if self.outbox.push(text.into()).is_err() {
            self.outbox.cut_off(Cut::TooSlow);
        }
    }

    fn send_error(&self, err: &ProtoError) {
        self.hub.metrics.error(err.code);
        self.send(error_text(err, None));
    }

    fn close(&self, code: u16, reason: &'static str) {
        self.outbox.control(Out::Close(code, reason));
    }

    fn shutdown(&mut self) -> Step {
        let text = ServerMsg::Reconnect {
            reason: "shutdown",
            retry_after_ms: 500,
        }
        .to_text();
        self.send(text);
        self.close(close::RESTART, "server restarting");
        Step::Stop(End::Shutdown)
    }

    fn cut_off(&mut self, why: Cut) -> Step {
        if why == Cut::Superseded {
            self.close(close::SUPERSEDED, "seat resumed by another connection");
        } else {
            self.span()
                .in_scope(|| tracing::info!("cut off: not reading fast enough"));
            self.close(close::POLICY, "too slow to keep up");
        }
        Step::Stop(End::Kicked)
    }

    fn never_joined(&mut self) -> Step {
        let secs = self.limits.join_timeout.as_secs_f64();
        let err = ProtoError::new(
            ErrorCode::JoinTimeout,
            format!("join a room within {secs}s of connecting"),
        );
        self.send_error(&err);
        self.close(close::POLICY, "join timeout");
        Step::Stop(End::Kicked)
    }

    fn tick(&mut self) -> Step {
        if self.last_rx.elapsed() >= self.limits.idle_timeout {
            let err = ProtoError::new(ErrorCode::IdleTimeout, "nothing received for too long");
            self.send_error(&err);
            self.close(close::NORMAL, "idle timeout");
            return Step::Stop(End::Idle);
        }
        if self.outbox.ping().is_err() {
            self.outbox.cut_off(Cut::TooSlow);
        }
        Step::Go
    }

    async fn on_frame(&mut self, frame: Option<Result<Message, WsError>>) -> Step {
        let msg = match frame {
            None => return Step::Stop(End::Lost),
            Some(Err(WsError::Capacity(_))) => {
                let err = ProtoError::new(
                    ErrorCode::TooLarge,
                    format!(
                        "frames are limited to {} bytes",
                        self.limits.max_message_bytes
                    ),
                );
                self.send_error(&err);
                self.close(close::TOO_BIG, "frame too large");
                return Step::Stop(End::Kicked);
            }
            Some(Err(_)) => return Step::Stop(End::Lost),
            Some(Ok(m)) => m,
        };
        if let Message::Close(frame) = &msg {
            // A client dropping a socket it believes dead keeps its seat (for a while).
            let keep = frame
                .as_ref()
                .is_some_and(|f| u16::from(f.code) == close::KEEP_SEAT);
            return Step::Stop(if keep { End::Lost } else { End::Closed });
        }
        // Every frame counts, data and control alike.
        if self.limiter.check().is_err() {
            return self.refused(&msg);
        }
        match msg {
            // Answers to our pings: the client reads, so it is alive.
            Message::Pong(_) => self.last_rx = Instant::now(),
            // Answered by the WebSocket layer; proves nothing about the client reading.
            Message::Ping(_) | Message::Frame(_) | Message::Close(_) => {}
            Message::Binary(_) => {
                self.last_rx = Instant::now();
                let err = ProtoError::new(
                    ErrorCode::BadJson,
                    "binary frames are not part of the protocol; send JSON text",
                );
                self.send_error(&err);
            }
            Message::Text(t) => {
                self.last_rx = Instant::now();
                self.on_text(t.as_str()).await;
            }
        }
        Step::Go
    }

    fn refused(&mut self, msg: &Message) -> Step {
        let limits = &self.limits;
        let strikes = self.strikes.get_or_insert_with(|| {
            let quota = Quota::per_second(limits.rate_per_sec).allow_burst(limits.burst);
            Box::new(RateLimiter::direct(quota))
        });
        if strikes.check().is_err() {
            let err = ProtoError::new(
                ErrorCode::RateLimited,
                "too many messages for too long; disconnecting",
            );
            self.send_error(&err);
            self.close(close::POLICY, "message rate exceeded");
            return Step::Stop(End::Kicked);
        }
        if matches!(msg, Message::Text(_) | Message::Binary(_)) {
            let err = ProtoError::new(
                ErrorCode::RateLimited,
                "too many messages; this one was dropped",
            );
            self.send_error(&err);
        }
        Step::Go
    }

    async fn on_text(&mut self, text: &str) {
        match self.handle(text).await {
            Ok(Some(reply)) => self.send(reply),
            Ok(None) => {}
            Err((err, reference)) => {
                self.hub.metrics.error(err.code);
                self.send(error_text(&err, reference.as_ref()));
            }
        }
    }

    /// One text frame: parse, check state, act. Returns a direct reply if there is one.
    async fn handle(&mut self, text: &str) -> Result<Option<String>, HandleError> {
        if let Some(relay) = parse_relay(text) {
            return self.relay_raw(relay).await.map(|()| None);
        }
        let Parsed { msg, reference } = parse_client(text)?;
        if matches!(msg, ClientMsg::Join(_) | ClientMsg::Leave) {
            // Boxed: a join's state (the store calls, the records) is most of this future's
            // size, and it would otherwise sit in every connection's task all its life.
            let span = self.span();
            return Box::pin(self.membership(msg, reference).instrument(span)).await;
        }
        let fail = |e: ProtoError| (e, reference.clone());
        let (to, what) = match &msg {
            ClientMsg::Ping => return Ok(Some(ServerMsg::Pong.to_text())),
            ClientMsg::Join(_) | ClientMsg::Leave => return Ok(None),
            ClientMsg::Offer(m) => (&m.to, Relay::Offer(&m.sdp)),
            ClientMsg::Answer(m) => (&m.to, Relay::Answer(&m.sdp)),
            ClientMsg::Candidate(m) => (&m.to, Relay::Candidate(&m.candidate)),
        };
        let Some(s) = self.session.as_mut() else {
            return Err(fail(not_joined()));
        };
        self.hub.relay(s, to, what).await.map_err(fail)?;
        s.signaled = true;
        Ok(None)
    }

    /// An offer, answer or candidate from the fast path: relayed as the client wrote it.
    async fn relay_raw(&mut self, relay: RelayIn<'_>) -> Result<(), HandleError> {
        let fail = |e: ProtoError| {
            let reference = relay
                .reference
                .and_then(|r| serde_json::from_str(r.get()).ok());
            (e, reference)
        };
        let Some(s) = self.session.as_mut() else {
            return Err(fail(not_joined()));
        };
        let what = Relay::Raw(relay.kind, relay.payload);
        self.hub.relay(s, &relay.to, what).await.map_err(fail)?;
        s.signaled = true;
        Ok(())
    }

    async fn membership(
        &mut self,
        msg: ClientMsg,
        reference: Option<serde_json::Value>,
    ) -> Result<Option<String>, HandleError> {
        let fail = |e: ProtoError| (e, reference.clone());
        match (msg, &self.session) {
            (ClientMsg::Join(_), Some(s)) => Err(fail(ProtoError::new(
                ErrorCode::AlreadyJoined,
                format!("already in room {}; send leave first", s.room),
            ))),
            (ClientMsg::Join(join), None) => {
                // The room may send to this connection as soon as the hub registers it; those
                // frames must follow the `joined` reply, never precede it.
                self.outbox.hold();
                let joined = self.hub.join(join, &self.outbox).await;
                let (s, frame) = match joined {
                    Ok(done) => done,
                    Err(e) => {
                        let _ = self.outbox.release(None);
                        return Err(fail(e));
                    }
                };
                self.session = Some(s);
                if self.outbox.release(Some(frame.into())).is_err() {
                    self.outbox.cut_off(Cut::TooSlow);
                }
                Ok(None)
            }
            (_, None) => Err(fail(not_joined())),
            (_, Some(_)) => {
                if let Some(s) = self.session.take() {
                    self.hub.leave(&s, LeaveReason::Left).await;
                }
                self.rearm = true;
                Ok(Some(ServerMsg::Left.to_text()))
            }
        }
    }

    /// What the end means for the seat.
    async fn settle(&mut self, end: End) {
        let span = self.span();
        let Some(s) = self.session.take() else {
            return;
        };
        let reason = match end {
            End::Closed => LeaveReason::Left,
            End::Kicked => LeaveReason::Kicked,
            End::Idle => LeaveReason::Timeout,
            End::Lost | End::Shutdown => return self.hub.detach(s),
        };
        self.hub.leave(&s, reason).instrument(span).await;
    }
}

type HandleError = (ProtoError, Option<serde_json::Value>);

fn not_joined() -> ProtoError {
    ProtoError::new(ErrorCode::NotJoined, "join a room first")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Join;
    use futures::channel::mpsc as chan;

    fn limits() -> ConnLimits {
        ConnLimits {
            max_message_bytes: 65536,
            rate_per_sec: NonZeroU32::new(50).expect("nonzero"),
            burst: NonZeroU32::new(200).expect("nonzero"),
            idle_timeout: Duration::from_secs(60),
            ping_interval: Duration::from_secs(20),
            join_timeout: Duration::from_secs(10),
            queue_bytes: 64 * 1024,
            close_grace: Duration::from_millis(200),
        }
    }

    /// The loop driven by channels: a client that reads its `joined` and then nothing more is
    /// cut off once the room has sent it more than its budget, although its input stays open
    /// and it never times out. Before the writer task, this seat was never given up.
    /// Log output captured for assertions (one runtime thread: the default subscriber of this
    /// thread sees every task).
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut out = self.0.lock().unwrap_or_else(|p| p.into_inner());
            out.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into()
        }
    }

    /// The writer has no task of its own: while a frame's handling waits (a store call), what
    /// the room queued for this connection is still written.
    #[tokio::test]
    async fn queued_frames_are_written_while_a_handling_waits() {
        let (outbox, rx) = Outbox::new(1 << 10);
        let mut writer = WriteLoop::new(rx);
        let (sink, mut written) = chan::channel::<Message>(8);
        let (_input, stream) = chan::unbounded::<Result<Message, WsError>>();
        let mut io = Pair { sink, stream };
        outbox.push("from the room".into()).expect("fits");
        let stalled = pin!(future::pending::<()>());
        let waiting = writing_while(stalled, &mut io, &mut writer);
        let stalled = tokio::time::timeout(Duration::from_millis(50), waiting).await;
        assert!(stalled.is_err(), "the handling never ends");
        let Ok(Message::Text(text)) = written.try_recv() else {
            panic!("nothing written while the handling waited");
        };
        assert_eq!(text.as_str(), "from the room");
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_is_cut_off() {
        let logs = Captured::default();
        let writer = logs.clone();
        let _logging = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish(),
        );
        let hub = Arc::new(crate::hub::props::test_hub(2));
        let (sink, mut written) = chan::channel::<Message>(0);
        let (input, mut stream) = chan::unbounded::<Result<Message, WsError>>();
        input
            .unbounded_send(Ok(Message::Text(r#"{"type":"join","room":"r"}"#.into())))
            .expect("queue join");
        let conn = tokio::spawn({
            let hub = Arc::clone(&hub);
            async move { run(sink, &mut stream, hub, Arc::new(limits()), false).await }
        });
        let Some(Message::Text(joined)) = written.next().await else {
            panic!("no joined frame");
        };
        let joined: serde_json::Value = serde_json::from_str(joined.as_str()).expect("json");
        let deaf = joined["peerId"].as_str().expect("peer id").to_owned();

        let (outbox, mut heard) = Outbox::new(1 << 20);
        let join = Join {
            room: "r".into(),
            name: None,
            token: None,
            resume: None,
        };
        let (me, _) = hub.join(join, &outbox).await.expect("second seat");
        let sdp = "x".repeat(16 * 1024);
        for _ in 0..16 {
            let _ = hub.relay(&me, &deaf, Relay::Offer(&sdp)).await;
        }
        let left = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(out) = heard.recv().await {
                if let Out::Frame(f) = out
                    && f.contains("peer-left")
                {
                    return f;
                }
            }
            panic!("outbox closed");
        })
        .await
        .expect("peer-left in time");
        assert!(left.contains(&deaf) && left.contains("kicked"), "{left}");
        tokio::time::timeout(Duration::from_secs(5), conn)
            .await
            .expect("the loop ends although its input is still open")
            .expect("no panic");
        drop(input);
        // The connection has no span of its own while it relays (it costs memory); its lines
        // still name its room and peer. (Only lines no other test logs: tracing caches whether
        // a log line is wanted per call site, across the threads of parallel tests.)
        let logs = logs.text();
        let line = logs
            .lines()
            .find(|l| l.contains("cut off: not reading fast enough"))
            .unwrap_or_else(|| panic!("no cut-off line in:\n{logs}"));
        assert!(
            line.contains("room=r") && line.contains(&format!("peer={deaf}")),
            "{line}"
        );
    }
}
