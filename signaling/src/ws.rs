//! The server side of a WebSocket (RFC 6455) over an upgraded connection, holding memory only
//! while a frame is in flight.
//!
//! tokio-tungstenite kept, in every connection for its whole life, tungstenite's read buffer
//! (grown to the largest frame read), its write buffer (the largest frame written), its state
//! (320 bytes of the connection's future) and two waker proxies: about 0.9 KiB of an idle
//! joined connection's 3.1 (docs/benchmarks.md). Here input is read into a pooled buffer that
//! goes back once it is parsed, frames written are gathered by `coalesce`, and the state is a
//! few bytes. What is hard to get right stays tungstenite's: frame headers are parsed and frames
//! encoded by it, and the message, close and error types are its own, so the connection loop
//! sees what it saw before.

#![allow(
    clippy::result_large_err,
    reason = "tungstenite's Error, which the connection loop matches; an error ends the reading"
)]

use std::io::Cursor;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader, Utf8Bytes};
use tokio_tungstenite::tungstenite::{Bytes, Error, Message};
use tokio_util::io::poll_read_buf;

use crate::buffers::{self, Buffer};
use crate::coalesce::Coalesce;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 4096;
/// RFC 6455 5.5: control frames carry at most this much.
const MAX_CONTROL_PAYLOAD: u64 = 125;
/// Frames one message may come in. Browsers send one; empty fragments cost no bytes of the
/// message limit and make no message for the rate limit to count, so they are capped here.
const MAX_FRAGMENTS: u32 = 64;

pub struct WebSocket<S> {
    io: Coalesce<S>,
    /// Input not yet parsed, only while there is some (a partial frame, the rest of a burst).
    input: Option<Box<Buffer>>,
    /// A fragmented message's data so far (browsers do not fragment; rare).
    fragments: Option<Box<Fragments>>,
    max_message: usize,
    state: State,
    /// The input ended, failed or broke the protocol: nothing more is read. Writing goes on,
    /// so that the connection can still say why it closes.
    read_ended: bool,
    /// A pong or a close reply was gathered and is not flushed yet.
    unflushed_reply: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active,
    /// Our close frame was sent; the peer's is awaited.
    ClosedByUs,
    /// The peer's close frame was read and the reply gathered: nothing more is read.
    ClosedByPeer,
}

struct Fragments {
    text: bool,
    data: Vec<u8>,
    frames: u32,
}

impl<S> WebSocket<S> {
    /// A WebSocket over `io`, after the handshake. Messages (and so frames) longer than
    /// `max_message` bytes are refused with `Error::Capacity` before their payload is read.
    pub fn new(io: S, max_message: usize) -> Self {
        WebSocket {
            io: Coalesce::new(io),
            input: None,
            fragments: None,
            max_message,
            state: State::Active,
            read_ended: false,
            unflushed_reply: false,
        }
    }

    /// As [`WebSocket::new`], with bytes the client sent after its upgrade request that were
    /// read with the request: they are parsed before the socket is read.
    pub fn with_input(io: S, read: &[u8], max_message: usize) -> Self {
        let mut ws = WebSocket::new(io, max_message);
        if !read.is_empty() {
            let mut input = buffers::take();
            input.bytes.extend_from_slice(read);
            ws.input = Some(input);
        }
        ws
    }

    /// The socket below, for the close sequence (draining unread input).
    pub fn get_mut(&mut self) -> &mut Coalesce<S> {
        &mut self.io
    }

    /// Nothing more is read; what is held for reading goes.
    fn fail(&mut self, e: Error) -> Poll<Option<Result<Message, Error>>> {
        self.end_reading();
        Poll::Ready(Some(Err(e)))
    }

    fn end_reading(&mut self) {
        self.read_ended = true;
        self.fragments = None;
        self.give_input();
    }

    /// The input buffer goes back to the pool.
    fn give_input(&mut self) {
        if let Some(input) = self.input.take() {
            buffers::give(input);
        }
    }

    /// The next message in the input read so far, if it holds one.
    fn parse(&mut self) -> Result<Option<Message>, Error> {
        loop {
            let (so_far, max) = (self.fragment_len(), self.max_message);
            let Some(input) = self.input.as_mut() else {
                return Ok(None);
            };
            let mut cursor = Cursor::new(input.rest());
            let Some((header, len)) = FrameHeader::parse(&mut cursor)? else {
                compact(input);
                return Ok(None);
            };
            // Before any of the payload is kept: a frame too large is refused by its header.
            let mask = check(&header, len, so_far, max)?;
            let start = input.done + usize::try_from(cursor.position()).unwrap_or(usize::MAX);
            let end = start.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
            let Some(payload) = input.bytes.get_mut(start..end) else {
                compact(input);
                return Ok(None);
            };
            unmask(payload, mask);
            let payload = Bytes::copy_from_slice(payload);
            input.done = end;
            if input.done == input.bytes.len() {
                self.give_input();
            }
            if let Some(msg) = self.on_frame(&header, payload)? {
                return Ok(Some(msg));
            }
        }
    }

    fn fragment_len(&self) -> usize {
        self.fragments.as_ref().map_or(0, |f| f.data.len())
    }

    /// A whole frame: the message it completes, if any.
    fn on_frame(&mut self, header: &FrameHeader, payload: Bytes) -> Result<Option<Message>, Error> {
        match header.opcode {
            OpCode::Control(Control::Ping) => {
                // One pong at a time (RFC 6455 5.5.3 allows answering only one of several): a
                // peer that pings and does not read cannot pile pongs up here.
                if self.state == State::Active && !self.unflushed_reply {
                    self.reply(Frame::pong(payload.clone()))?;
                }
                Ok(Some(Message::Ping(payload)))
            }
            OpCode::Control(Control::Pong) => Ok(Some(Message::Pong(payload))),
            OpCode::Control(Control::Close) => self.on_close(close_frame(payload)?),
            OpCode::Control(Control::Reserved(i)) => {
                Err(ProtocolError::UnknownControlFrameType(i).into())
            }
            OpCode::Data(data) => self.on_data(data, header.is_final, payload),
        }
    }

    fn on_data(&mut self, data: Data, fin: bool, payload: Bytes) -> Result<Option<Message>, Error> {
        let text = match data {
            Data::Continue => {
                let Some(fragments) = self.fragments.as_mut() else {
                    return Err(ProtocolError::UnexpectedContinueFrame.into());
                };
                fragments.data.extend_from_slice(&payload);
                fragments.frames += 1;
                if fragments.frames > MAX_FRAGMENTS {
                    return Err(Error::AttackAttempt);
                }
                if !fin {
                    return Ok(None);
                }
                let Some(done) = self.fragments.take() else {
                    return Ok(None);
                };
                return message(done.text, Bytes::from(done.data)).map(Some);
            }
            _ if self.fragments.is_some() => {
                return Err(ProtocolError::ExpectedFragment(data).into());
            }
            Data::Text => true,
            Data::Binary => false,
            Data::Reserved(i) => return Err(ProtocolError::UnknownDataFrameType(i).into()),
        };
        if fin {
            return message(text, payload).map(Some);
        }
        let data = payload.to_vec();
        self.fragments = Some(Box::new(Fragments {
            text,
            data,
            frames: 1,
        }));
        Ok(None)
    }

    /// The peer's close: reply (echoing its code, or 1002 for a code not allowed on the wire)
    /// unless this is the reply to ours.
    fn on_close(&mut self, frame: Option<CloseFrame>) -> Result<Option<Message>, Error> {
        match self.state {
            State::Active => {
                let reply = frame.clone().map(|f| {
                    if f.code.is_allowed() {
                        f
                    } else {
                        CloseFrame {
                            code: CloseCode::Protocol,
                            reason: Utf8Bytes::from_static("Protocol violation"),
                        }
                    }
                });
                self.reply(Frame::close(reply))?;
                self.state = State::ClosedByPeer;
            }
            State::ClosedByUs => self.end_reading(),
            State::ClosedByPeer => return Ok(None),
        }
        Ok(Some(Message::Close(frame)))
    }

    /// Gather an answer the protocol requires (a pong, a close reply); flushed on the next poll
    /// or by the writer's flush, whichever comes first.
    fn reply(&mut self, frame: Frame) -> Result<(), Error> {
        frame.format(self.io.gather())?;
        self.unflushed_reply = true;
        Ok(())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// Read more input. Ready(false) at the end of the input.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<bool>> {
        let input = self.input.get_or_insert_with(buffers::take);
        // Read into the spare capacity, not zeroed first: this runs on every poll that finds
        // no whole message, most of which find nothing to read.
        input.bytes.reserve(READ_CHUNK);
        let polled = poll_read_buf(Pin::new(&mut self.io), cx, &mut input.bytes);
        if input.bytes.is_empty() {
            // An idle connection keeps no buffer.
            self.give_input();
        }
        let got = ready!(polled)?;
        Poll::Ready(Ok(got > 0))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WebSocket<S> {
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.unflushed_reply {
            // Never waits on the write: a peer that does not read is still read from.
            match Pin::new(&mut this.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => this.unflushed_reply = false,
                Poll::Ready(Err(e)) => return this.fail(e.into()),
                Poll::Pending => {}
            }
        }
        loop {
            if this.read_ended || this.state == State::ClosedByPeer {
                return Poll::Ready(None);
            }
            match this.parse() {
                Ok(Some(msg)) => return Poll::Ready(Some(Ok(msg))),
                Ok(None) => {}
                Err(e) => return this.fail(e),
            }
            match ready!(this.poll_fill(cx)) {
                Ok(true) => {}
                Ok(false) => {
                    return this.fail(ProtocolError::ResetWithoutClosingHandshake.into());
                }
                Err(e) => return this.fail(e.into()),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WebSocket<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().io.poll_room(cx).map_err(Error::from)
    }

    fn start_send(self: Pin<&mut Self>, msg: Message) -> Result<(), Error> {
        let this = self.get_mut();
        let frame = match (this.state, msg) {
            // Our close after the peer's: the reply already went (or goes at the flush).
            (State::ClosedByPeer, Message::Close(_)) => return Ok(()),
            (State::ClosedByPeer | State::ClosedByUs, _) => {
                return Err(ProtocolError::SendAfterClosing.into());
            }
            (State::Active, msg) => match msg {
                Message::Text(t) => Frame::message(t, OpCode::Data(Data::Text), true),
                Message::Binary(b) => Frame::message(b, OpCode::Data(Data::Binary), true),
                Message::Ping(p) => Frame::ping(p),
                Message::Pong(p) => Frame::pong(p),
                Message::Close(c) => {
                    this.state = State::ClosedByUs;
                    Frame::close(c)
                }
                Message::Frame(f) => f,
            },
        };
        frame.format(this.io.gather())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.io).poll_flush(cx))?;
        this.unflushed_reply = false;
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.state == State::Active {
            ready!(self.as_mut().poll_ready(cx))?;
            self.as_mut().start_send(Message::Close(None))?;
        }
        self.poll_flush(cx)
    }
}

/// Refuse a frame by its header: what RFC 6455 forbids a client, and data past the message
/// limit. The mask to apply to its payload.
fn check(header: &FrameHeader, len: u64, so_far: usize, max: usize) -> Result<[u8; 4], Error> {
    let Some(mask) = header.mask else {
        return Err(ProtocolError::UnmaskedFrameFromClient.into());
    };
    if header.rsv1 || header.rsv2 || header.rsv3 {
        return Err(ProtocolError::NonZeroReservedBits.into());
    }
    match header.opcode {
        OpCode::Control(_) if !header.is_final => Err(ProtocolError::FragmentedControlFrame.into()),
        OpCode::Control(_) if len > MAX_CONTROL_PAYLOAD => {
            Err(ProtocolError::ControlFrameTooBig.into())
        }
        OpCode::Control(_) => Ok(mask),
        OpCode::Data(_) => {
            let size = usize::try_from(len)
                .ok()
                .and_then(|len| len.checked_add(so_far))
                .filter(|&size| size <= max);
            match size {
                Some(_) => Ok(mask),
                None => Err(CapacityError::MessageTooLong {
                    size: usize::try_from(len)
                        .unwrap_or(usize::MAX)
                        .saturating_add(so_far),
                    max_size: max,
                }
                .into()),
            }
        }
    }
}

/// Drop what was parsed, keeping the partial frame at the front: the buffer stays bounded by
/// one frame and one read.
fn compact(input: &mut Buffer) {
    if input.done > 0 {
        input.bytes.drain(..input.done);
        input.done = 0;
    }
}

/// RFC 6455 5.3: a client's payload is XORed with its frame's 4-byte key.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (byte, key) in payload.iter_mut().zip(mask.iter().cycle()) {
        *byte ^= key;
    }
}

fn message(text: bool, data: Bytes) -> Result<Message, Error> {
    if text {
        Ok(Message::Text(Utf8Bytes::try_from(data)?))
    } else {
        Ok(Message::Binary(data))
    }
}

/// A close frame's payload: nothing, or a code and a UTF-8 reason.
fn close_frame(payload: Bytes) -> Result<Option<CloseFrame>, Error> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(ProtocolError::InvalidCloseSequence.into()),
        _ => {
            let code = CloseCode::from(u16::from_be_bytes([payload[0], payload[1]]));
            let reason = Utf8Bytes::try_from(payload.slice(2..))?;
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{SinkExt, StreamExt};
    use std::io;
    use tokio::io::ReadBuf;
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// A socket that hands out `input` at most `per_read` bytes at a time, then ends (or, with
    /// `open`, waits), and keeps what is written.
    #[derive(Default)]
    struct Script {
        input: Vec<u8>,
        at: usize,
        per_read: usize,
        open: bool,
        out: Vec<u8>,
        /// Writes wait forever: a peer that does not read.
        stalled: bool,
    }

    impl AsyncRead for Script {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            let n = (this.input.len() - this.at)
                .min(this.per_read)
                .min(buf.remaining());
            if n == 0 && this.open {
                return Poll::Pending;
            }
            buf.put_slice(&this.input[this.at..this.at + n]);
            this.at += n;
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Script {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.stalled {
                return Poll::Pending;
            }
            self.get_mut().out.extend_from_slice(data);
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    const MAX: usize = 1024;

    fn server(input: Vec<u8>, per_read: usize, open: bool) -> WebSocket<Script> {
        let script = Script {
            input,
            per_read,
            open,
            ..Script::default()
        };
        WebSocket::new(script, MAX)
    }

    /// A frame as a client sends it: masked, unless `header.mask` is set to `None` after.
    fn frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        frame_with(fin, op, payload, |_| {})
    }

    fn frame_with(fin: bool, op: u8, payload: &[u8], edit: impl Fn(&mut FrameHeader)) -> Vec<u8> {
        let mut header = FrameHeader {
            is_final: fin,
            opcode: OpCode::from(op),
            mask: Some([0x12, 0x34, 0x56, 0x78]),
            ..FrameHeader::default()
        };
        edit(&mut header);
        let mut out = Vec::new();
        header
            .format(payload.len() as u64, &mut out)
            .expect("formatted");
        let mut body = payload.to_vec();
        if let Some(mask) = header.mask {
            unmask(&mut body, mask);
        }
        out.extend_from_slice(&body);
        out
    }

    const TEXT: u8 = 1;
    const BINARY: u8 = 2;
    const CONTINUE: u8 = 0;
    const CLOSE: u8 = 8;
    const PING: u8 = 9;

    /// Every message until the stream ends, and the error it ended with, if any.
    async fn read_all(ws: &mut WebSocket<Script>) -> (Vec<Message>, Option<Error>) {
        let mut got = Vec::new();
        while let Some(next) = ws.next().await {
            match next {
                Ok(m) => got.push(m),
                Err(e) => return (got, Some(e)),
            }
        }
        (got, None)
    }

    /// The frames the server wrote: opcode and payload.
    fn written(ws: &mut WebSocket<Script>) -> Vec<(OpCode, Vec<u8>)> {
        let out = &ws.io.get_mut().out;
        let mut cursor = Cursor::new(out.as_slice());
        let mut frames = Vec::new();
        while let Some((header, len)) = FrameHeader::parse(&mut cursor).expect("a valid frame") {
            assert!(header.mask.is_none(), "a server does not mask");
            let start = usize::try_from(cursor.position()).expect("fits");
            let end = start + usize::try_from(len).expect("fits");
            frames.push((header.opcode, out[start..end].to_vec()));
            cursor.set_position(end as u64);
        }
        frames
    }

    #[tokio::test]
    async fn a_tungstenite_client_and_this_server_talk_both_ways_and_close() {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let mut server = WebSocket::new(server_io, 1 << 16);
        let mut client =
            tokio_tungstenite::WebSocketStream::from_raw_socket(client_io, Role::Client, None)
                .await;
        let sdp = "v=0 ".repeat(700);
        for msg in [
            Message::text(sdp.clone()),
            Message::Binary(Bytes::from_static(b"\x00\x01")),
            Message::Ping(Bytes::from_static(b"p")),
        ] {
            client.send(msg.clone()).await.expect("sent");
            assert_eq!(server.next().await.expect("a message").expect("valid"), msg);
        }
        server.send(Message::text("joined")).await.expect("sent");
        assert_eq!(
            client.next().await.expect("pong").expect("valid"),
            Message::Pong(Bytes::from_static(b"p")),
            "the ping was answered"
        );
        assert_eq!(
            client.next().await.expect("text").expect("valid"),
            Message::text("joined")
        );
        client.close(None).await.expect("close sent");
        assert!(matches!(
            server.next().await,
            Some(Ok(Message::Close(None)))
        ));
        assert!(
            server.next().await.is_none(),
            "nothing read after the peer's close"
        );
        // The connection's own close after the peer's is the reply already gathered.
        server.send(Message::Close(None)).await.expect("flushed");
        assert!(matches!(
            client.next().await,
            Some(Ok(Message::Close(None)))
        ));
        assert!(server.send(Message::text("late")).await.is_err());
    }

    #[tokio::test]
    async fn input_split_anywhere_gives_the_same_messages_and_no_buffer_is_kept_after() {
        let mut input = frame(true, TEXT, b"{\"type\":\"join\"}");
        input.extend(frame(false, TEXT, "h\u{e9}".as_bytes()));
        input.extend(frame(true, PING, b"mid"));
        input.extend(frame(true, CONTINUE, "llo \u{1f9a6}".as_bytes()));
        input.extend(frame(true, BINARY, &[0u8; 300]));
        let want = vec![
            Message::text("{\"type\":\"join\"}"),
            Message::Ping(Bytes::from_static(b"mid")),
            Message::text("h\u{e9}llo \u{1f9a6}"),
            Message::Binary(Bytes::from(vec![0u8; 300])),
        ];
        for per_read in [1, 2, 3, 7, 64, 4096] {
            let mut ws = server(input.clone(), per_read, true);
            let mut got = Vec::new();
            for _ in &want {
                got.push(ws.next().await.expect("a message").expect("valid"));
            }
            assert_eq!(got, want, "{per_read} bytes per read");
            // Waiting for more: nothing held.
            let waker = futures::task::noop_waker();
            let polled = Pin::new(&mut ws).poll_next(&mut Context::from_waker(&waker));
            assert!(polled.is_pending());
            assert!(
                ws.input.is_none() && ws.fragments.is_none(),
                "{per_read}: buffers held"
            );
        }
        assert!(
            buffers::kept() >= 1,
            "the read buffer went back to the spares"
        );
    }

    #[tokio::test]
    async fn a_ping_is_answered_and_a_close_is_echoed_or_refused() {
        let mut input = frame(true, PING, b"are you there");
        input.extend(frame(true, CLOSE, &[0x0f, 0xa0, b'k']));
        let mut ws = server(input, 4096, true);
        let (got, err) = read_all(&mut ws).await;
        assert!(err.is_none(), "{err:?}");
        let close = CloseFrame {
            code: CloseCode::from(4000),
            reason: Utf8Bytes::from_static("k"),
        };
        assert_eq!(
            got,
            vec![
                Message::Ping(Bytes::from_static(b"are you there")),
                Message::Close(Some(close))
            ]
        );
        ws.flush().await.expect("flushed");
        assert_eq!(
            written(&mut ws),
            vec![
                (OpCode::Control(Control::Pong), b"are you there".to_vec()),
                (OpCode::Control(Control::Close), vec![0x0f, 0xa0, b'k'])
            ]
        );
        // 1005 may not be sent on the wire: answered with 1002.
        let mut ws = server(frame(true, CLOSE, &[0x03, 0xed]), 4096, true);
        let _ = read_all(&mut ws).await;
        ws.flush().await.expect("flushed");
        let reply = &written(&mut ws)[0].1;
        assert_eq!(reply[..2], 1002u16.to_be_bytes());
    }

    /// A bad input: its name, its bytes, and the error it must end the stream with.
    type Bad = (&'static str, Vec<u8>, fn(&Error) -> bool);

    /// Inputs past a limit, each refused before what is past it is kept.
    fn over_limits() -> Vec<Bad> {
        // The header alone announces MAX + 1 bytes: refused before any payload arrives.
        let too_long = frame(true, TEXT, &vec![b'x'; MAX + 1])[..8].to_vec();
        let mut split_too_long = frame(false, TEXT, &vec![b'x'; MAX / 2 + 1]);
        split_too_long.extend(frame(true, CONTINUE, &vec![b'x'; MAX / 2 + 1]));
        let mut many_fragments = frame(false, TEXT, b"");
        for _ in 0..MAX_FRAGMENTS {
            many_fragments.extend(frame(false, CONTINUE, b""));
        }
        vec![
            (
                "too long",
                too_long,
                |e| matches!(e, Error::Capacity(CapacityError::MessageTooLong { size, max_size: MAX }) if *size == MAX + 1),
            ),
            ("too long in fragments", split_too_long, |e| {
                matches!(e, Error::Capacity(CapacityError::MessageTooLong { .. }))
            }),
            ("a message in too many fragments", many_fragments, |e| {
                matches!(e, Error::AttackAttempt)
            }),
            ("control too long", frame(true, PING, &[0u8; 126]), |e| {
                matches!(e, Error::Protocol(ProtocolError::ControlFrameTooBig))
            }),
        ]
    }

    /// Inputs RFC 6455 forbids a client.
    fn violations() -> Vec<Bad> {
        let mut interrupted = frame(false, TEXT, b"a");
        interrupted.extend(frame(true, TEXT, b"b"));
        vec![
            (
                "unmasked",
                frame_with(true, TEXT, b"hi", |h| h.mask = None),
                |e| matches!(e, Error::Protocol(ProtocolError::UnmaskedFrameFromClient)),
            ),
            (
                "reserved bit",
                frame_with(true, TEXT, b"hi", |h| h.rsv1 = true),
                |e| matches!(e, Error::Protocol(ProtocolError::NonZeroReservedBits)),
            ),
            ("reserved opcode", frame(true, 3, b"hi"), |e| {
                matches!(e, Error::Protocol(ProtocolError::InvalidOpcode(3)))
            }),
            ("fragmented control", frame(false, PING, b"p"), |e| {
                matches!(e, Error::Protocol(ProtocolError::FragmentedControlFrame))
            }),
            (
                "continue with nothing to continue",
                frame(true, CONTINUE, b"x"),
                |e| matches!(e, Error::Protocol(ProtocolError::UnexpectedContinueFrame)),
            ),
            ("a message inside a fragmented one", interrupted, |e| {
                matches!(
                    e,
                    Error::Protocol(ProtocolError::ExpectedFragment(Data::Text))
                )
            }),
            (
                "text that is not UTF-8",
                frame(true, TEXT, &[0xff, 0xfe]),
                |e| matches!(e, Error::Utf8),
            ),
            ("a close of one byte", frame(true, CLOSE, &[3]), |e| {
                matches!(e, Error::Protocol(ProtocolError::InvalidCloseSequence))
            }),
            (
                "a close reason that is not UTF-8",
                frame(true, CLOSE, &[3, 232, 0xff]),
                |e| matches!(e, Error::Utf8),
            ),
            (
                "the input ends inside a frame",
                frame(true, TEXT, b"hello")[..5].to_vec(),
                |e| {
                    matches!(
                        e,
                        Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)
                    )
                },
            ),
        ]
    }

    /// What a broken or hostile client may send ends the reading with the reason, keeps no
    /// buffer, and leaves the connection able to say why it closes.
    #[tokio::test]
    async fn frames_a_client_may_not_send_end_the_stream_with_the_reason() {
        for (name, input, expected) in over_limits().into_iter().chain(violations()) {
            let mut ws = server(input, 4096, false);
            let (got, err) = read_all(&mut ws).await;
            assert!(got.is_empty(), "{name}: {got:?}");
            let err = err.unwrap_or_else(|| panic!("{name}: no error"));
            assert!(expected(&err), "{name}: {err:?}");
            assert!(ws.next().await.is_none(), "{name}: nothing after the error");
            assert!(
                ws.input.is_none() && ws.fragments.is_none(),
                "{name}: buffers held"
            );
            ws.send(Message::text("bad frame")).await.expect("written");
            ws.send(Message::Close(None)).await.expect("written");
            let ops: Vec<OpCode> = written(&mut ws).into_iter().map(|(op, _)| op).collect();
            assert_eq!(
                ops,
                [OpCode::Data(Data::Text), OpCode::Control(Control::Close)]
            );
            assert!(
                ws.send(Message::text("late")).await.is_err(),
                "{name}: no write after the close"
            );
        }
    }

    #[tokio::test]
    async fn a_peer_that_pings_and_does_not_read_gets_one_pong_in_flight() {
        let input: Vec<u8> = (0..1000)
            .flat_map(|_| frame(true, PING, &[7u8; 100]))
            .collect();
        let mut ws = server(input, 4096, false);
        ws.io.get_mut().stalled = true;
        let (got, err) = read_all(&mut ws).await;
        assert_eq!(
            got.len(),
            1000,
            "every ping read: the read side never waits on writes"
        );
        assert!(matches!(err, Some(Error::Protocol(_))), "{err:?}");
        let gathered = ws.io.gather().len();
        assert!(
            gathered <= 2 + 100,
            "one pong gathered, not {gathered} bytes"
        );
    }
}
