//! A connection's writer: the only place that writes to the socket. It takes each burst from the
//! outbox at once, writes it with one flush (the syscall was the top cost of a relay), and gives
//! the bytes back to the budget once written.
//!
//! Not a task of its own: the connection's task polls it beside the socket's read side, and it
//! borrows the socket only while polled, so the socket needs no split (its own task and the
//! split's lock cost every connection about 0.65 KiB; docs/benchmarks.md, memory). A plain
//! state machine rather than an `async fn`: it keeps only what it holds between polls.

use std::collections::VecDeque;
use std::task::{Context, Poll, ready};

use futures::{Sink, SinkExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::store::{Out, Outlet};

/// Drains the outbox into a sink lent to each poll. Done once the close frame is written (or
/// the outbox is gone and everything was written), or once the socket failed.
pub struct WriteLoop {
    /// Dropped when done: the outbox then refuses frames, as it did when a writer task ended.
    rx: Option<Outlet>,
    /// Taken from the outbox, not yet handed to the sink.
    batch: VecDeque<Out>,
    /// Budget bytes of what was handed to the sink since the last flush.
    freed: usize,
    /// Something was handed to the sink and not yet flushed.
    unflushed: bool,
    /// The close frame was handed to the sink: flush, then stop.
    closing: bool,
    /// Set when done: whether everything up to the close was written.
    done: Option<bool>,
}

impl WriteLoop {
    pub fn new(rx: Outlet) -> Self {
        WriteLoop {
            rx: Some(rx),
            batch: VecDeque::new(),
            freed: 0,
            unflushed: false,
            closing: false,
            done: None,
        }
    }

    /// Hand the taken batch to the sink, up to the close frame. Ready(Err) if the socket failed.
    fn poll_feed<Si>(&mut self, sink: &mut Si, cx: &mut Context<'_>) -> Poll<Result<(), ()>>
    where
        Si: Sink<Message> + Unpin,
    {
        while !self.batch.is_empty() && !self.closing {
            if ready!(sink.poll_ready_unpin(cx)).is_err() {
                return Poll::Ready(Err(()));
            }
            let Some(out) = self.batch.pop_front() else {
                break;
            };
            self.freed += out.cost();
            let msg = match out {
                Out::Frame(f) => Message::Text(f),
                Out::Ping => Message::Ping(Default::default()),
                Out::Close(code, reason) => {
                    self.closing = true;
                    self.batch = VecDeque::new();
                    let frame = CloseFrame {
                        code: code.into(),
                        reason: reason.into(),
                    };
                    Message::Close(Some(frame))
                }
            };
            // Any failure counts, the close's too: a split sink reported it at the flush.
            if sink.start_send_unpin(msg).is_err() {
                return Poll::Ready(Err(()));
            }
            self.unflushed = true;
        }
        Poll::Ready(Ok(()))
    }

    /// Write what is queued. Ready(true) once the close frame is written (or the outbox is gone
    /// and everything was), Ready(false) if the socket failed; and the same again once done.
    pub fn poll_write<Si>(&mut self, sink: &mut Si, cx: &mut Context<'_>) -> Poll<bool>
    where
        Si: Sink<Message> + Unpin,
    {
        if let Some(ok) = self.done {
            return Poll::Ready(ok);
        }
        let ok = ready!(self.poll_step(sink, cx));
        self.done = Some(ok);
        self.rx = None;
        self.batch = VecDeque::new();
        Poll::Ready(ok)
    }

    /// Feed, flush, take the next batch, until one of them waits or the writer is done.
    fn poll_step<Si>(&mut self, sink: &mut Si, cx: &mut Context<'_>) -> Poll<bool>
    where
        Si: Sink<Message> + Unpin,
    {
        loop {
            if ready!(self.poll_feed(sink, cx)).is_err() {
                return Poll::Ready(false);
            }
            if self.batch.is_empty() {
                // Handed on whole: its buffer goes now, not when the next batch replaces it,
                // so an idle connection keeps none (about 150 bytes of every joined one).
                self.batch = VecDeque::new();
            }
            if self.unflushed {
                if ready!(sink.poll_flush_unpin(cx)).is_err() {
                    return Poll::Ready(false);
                }
                self.unflushed = false;
                if self.closing {
                    return Poll::Ready(true);
                }
                if let Some(rx) = &self.rx {
                    rx.written(std::mem::take(&mut self.freed));
                }
            }
            let Some(rx) = self.rx.as_mut() else {
                return Poll::Ready(false);
            };
            match ready!(rx.poll_batch(cx)) {
                Some(batch) => self.batch = batch,
                None => return Poll::Ready(true),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Outbox;
    use std::pin::Pin;

    /// A socket stand-in: records what it is sent and how often it is flushed; fails on demand.
    #[derive(Default)]
    struct Recorder {
        sent: Vec<Message>,
        flushes: usize,
        broken: bool,
    }

    impl Sink<Message> for Recorder {
        type Error = ();
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
            Poll::Ready(if self.broken { Err(()) } else { Ok(()) })
        }
        fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), ()> {
            self.get_mut().sent.push(item);
            Ok(())
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
            self.get_mut().flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn poll_once(writer: &mut WriteLoop, sink: &mut Recorder) -> Poll<bool> {
        let waker = futures::task::noop_waker();
        writer.poll_write(sink, &mut Context::from_waker(&waker))
    }

    #[test]
    fn a_burst_is_written_with_one_flush_and_its_bytes_given_back() {
        let (outbox, rx) = Outbox::new(10);
        let (mut writer, mut sink) = (WriteLoop::new(rx), Recorder::default());
        outbox.push("12345".into()).expect("fits");
        outbox.push("1234".into()).expect("fits");
        assert!(
            poll_once(&mut writer, &mut sink).is_pending(),
            "waits for more"
        );
        assert_eq!((sink.sent.len(), sink.flushes), (2, 1));
        assert_eq!(
            writer.batch.capacity(),
            0,
            "a written batch keeps no buffer"
        );
        outbox
            .push("123456789".into())
            .expect("the written bytes are back in the budget");
    }

    #[test]
    fn the_close_frame_ends_the_loop_once_written() {
        let (outbox, rx) = Outbox::new(100);
        let (mut writer, mut sink) = (WriteLoop::new(rx), Recorder::default());
        outbox.push("before".into()).expect("fits");
        outbox.control(Out::Close(1000, "bye"));
        outbox.push("after".into()).expect("fits");
        assert_eq!(
            poll_once(&mut writer, &mut sink),
            Poll::Ready(true),
            "the loop ends once the close is written"
        );
        assert_eq!(
            sink.sent.len(),
            2,
            "nothing after the close: {:?}",
            sink.sent
        );
        assert!(matches!(sink.sent[1], Message::Close(Some(_))));
        assert_eq!(sink.flushes, 1);
    }

    #[test]
    fn a_failed_socket_ends_the_loop_and_closes_the_outbox() {
        let (outbox, rx) = Outbox::new(100);
        let mut broken = Recorder {
            broken: true,
            ..Recorder::default()
        };
        let mut writer = WriteLoop::new(rx);
        outbox.push("x".into()).expect("fits");
        assert_eq!(poll_once(&mut writer, &mut broken), Poll::Ready(false));
        assert_eq!(
            outbox.push("y".into()),
            Err(crate::store::Refused::Closed),
            "a failed writer closes the outbox"
        );
    }

    #[test]
    fn the_loop_ends_once_the_outbox_is_gone_and_all_is_written() {
        let (outbox, rx) = Outbox::new(100);
        let (mut writer, mut sink) = (WriteLoop::new(rx), Recorder::default());
        outbox.push("last".into()).expect("fits");
        drop(outbox);
        assert_eq!(
            poll_once(&mut writer, &mut sink),
            Poll::Ready(true),
            "ends once the outbox is gone and everything is written"
        );
        assert_eq!(sink.sent.len(), 1);
    }
}
