//! A connection's writer: the only place that waits on the socket. It takes each burst from the
//! outbox at once, writes it with one flush (the syscall was the top cost of a relay), and gives
//! the bytes back to the budget once written.
//!
//! Written as a plain state machine rather than an `async fn`: it runs as a task of its own in
//! every connection, and the `async fn` kept about 400 bytes of await states (docs/benchmarks.md,
//! memory per connection); this keeps only what it holds between polls.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures::{Sink, SinkExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::store::{Out, Outlet};

/// Resolves to the sink once the close frame is written (or the outbox is gone and everything
/// was written), `None` if the socket failed.
pub struct WriteLoop<Si> {
    sink: Option<Si>,
    rx: Outlet,
    /// Taken from the outbox, not yet handed to the sink.
    batch: VecDeque<Out>,
    /// Budget bytes of what was handed to the sink since the last flush.
    freed: usize,
    /// Something was handed to the sink and not yet flushed.
    unflushed: bool,
    /// The close frame was handed to the sink: flush, then stop.
    closing: bool,
}

impl<Si> WriteLoop<Si> {
    pub fn new(sink: Si, rx: Outlet) -> Self {
        WriteLoop {
            sink: Some(sink),
            rx,
            batch: VecDeque::new(),
            freed: 0,
            unflushed: false,
            closing: false,
        }
    }
}

impl<Si: Sink<Message> + Unpin> WriteLoop<Si> {
    /// Hand the taken batch to the sink, up to the close frame. Ready(Err) if the socket failed.
    fn poll_feed(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        let Some(sink) = self.sink.as_mut() else {
            return Poll::Ready(Err(()));
        };
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
            if sink.start_send_unpin(msg).is_err() && !self.closing {
                return Poll::Ready(Err(()));
            }
            self.unflushed = true;
        }
        Poll::Ready(Ok(()))
    }
}

impl<Si: Sink<Message> + Unpin> Future for WriteLoop<Si> {
    type Output = Option<Si>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Si>> {
        let this = self.get_mut();
        loop {
            if ready!(this.poll_feed(cx)).is_err() {
                this.sink = None;
                return Poll::Ready(None);
            }
            if this.unflushed {
                let Some(sink) = this.sink.as_mut() else {
                    return Poll::Ready(None);
                };
                if ready!(sink.poll_flush_unpin(cx)).is_err() {
                    this.sink = None;
                    return Poll::Ready(None);
                }
                this.unflushed = false;
                if this.closing {
                    return Poll::Ready(this.sink.take());
                }
                this.rx.written(std::mem::take(&mut this.freed));
            }
            match ready!(this.rx.poll_batch(cx)) {
                Some(batch) => this.batch = batch,
                None => return Poll::Ready(this.sink.take()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Outbox;

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

    fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        let waker = futures::task::noop_waker();
        Pin::new(f).poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn a_burst_is_written_with_one_flush_and_its_bytes_given_back() {
        let (outbox, rx) = Outbox::new(10);
        let mut writer = WriteLoop::new(Recorder::default(), rx);
        outbox.push("12345".into()).expect("fits");
        outbox.push("1234".into()).expect("fits");
        assert!(poll_once(&mut writer).is_pending(), "waits for more");
        let sink = writer.sink.as_ref().expect("still writing");
        assert_eq!((sink.sent.len(), sink.flushes), (2, 1));
        outbox
            .push("123456789".into())
            .expect("the written bytes are back in the budget");
    }

    #[test]
    fn the_close_frame_ends_the_loop_and_returns_the_sink() {
        let (outbox, rx) = Outbox::new(100);
        let mut writer = WriteLoop::new(Recorder::default(), rx);
        outbox.push("before".into()).expect("fits");
        outbox.control(Out::Close(1000, "bye"));
        outbox.push("after".into()).expect("fits");
        let Poll::Ready(Some(sink)) = poll_once(&mut writer) else {
            panic!("the loop ends with the sink once the close is written");
        };
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
    fn a_failed_socket_ends_the_loop_without_the_sink() {
        let (outbox, rx) = Outbox::new(100);
        let broken = Recorder {
            broken: true,
            ..Recorder::default()
        };
        let mut writer = WriteLoop::new(broken, rx);
        outbox.push("x".into()).expect("fits");
        assert!(matches!(poll_once(&mut writer), Poll::Ready(None)));
    }

    #[test]
    fn the_loop_ends_with_the_sink_when_the_outbox_is_gone() {
        let (outbox, rx) = Outbox::new(100);
        let mut writer = WriteLoop::new(Recorder::default(), rx);
        outbox.push("last".into()).expect("fits");
        drop(outbox);
        let Poll::Ready(Some(sink)) = poll_once(&mut writer) else {
            panic!("ends once the outbox is gone and everything is written");
        };
        assert_eq!(sink.sent.len(), 1);
    }
}
