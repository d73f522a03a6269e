//! A connection's writes gathered until a flush, in a buffer that exists only while it holds
//! bytes.
//!
//! A buffer kept for the connection's life grows to the largest burst written and stays:
//! tungstenite's did, 8 KiB more per connection once its call was set up (docs/benchmarks.md).
//! So each frame is gathered here as it is written (`ws` encodes it straight into
//! [`Coalesce::gather`]), the burst leaves in one write to the socket per flush (the writer's one
//! syscall per burst), and the buffer goes back to the spares for the next connection's burst.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::buffers::{self, Buffer};

/// Gathered bytes beyond which a write first sends what is gathered: a burst larger than
/// this leaves in several writes, as a full socket buffer would make it anyway.
const MAX_GATHERED: usize = 64 * 1024;

pub struct Coalesce<S> {
    inner: S,
    /// The burst being gathered, only while there is one: 8 bytes in every connection (its
    /// socket is kept in several states of the connection's future).
    burst: Option<Box<Buffer>>,
}

impl<S> Coalesce<S> {
    pub fn new(inner: S) -> Self {
        Coalesce { inner, burst: None }
    }

    fn gathered(&self) -> usize {
        self.burst.as_ref().map_or(0, |b| b.bytes.len())
    }

    /// The burst being gathered, to write a frame into whole (after [`Self::poll_room`]).
    pub fn gather(&mut self) -> &mut Vec<u8> {
        &mut self.burst.get_or_insert_with(buffers::take).bytes
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: AsyncWrite + Unpin> Coalesce<S> {
    /// Ready once a frame may be gathered: past the limit, what is gathered is sent first.
    pub fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.gathered() < MAX_GATHERED {
            return Poll::Ready(Ok(()));
        }
        self.poll_send(cx)
    }
}

impl<S: AsyncWrite + Unpin> Coalesce<S> {
    /// Hand everything gathered to `inner`, then put the buffer back with the spares.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(burst) = self.burst.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        while burst.done < burst.bytes.len() {
            let rest = &burst.bytes[burst.done..];
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            burst.done += n;
        }
        if let Some(burst) = self.burst.take() {
            buffers::give(burst);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.gathered() + data.len() > MAX_GATHERED {
            ready!(this.poll_send(cx))?;
            if data.len() > MAX_GATHERED {
                return Pin::new(&mut this.inner).poll_write(cx, data);
            }
        }
        this.burst
            .get_or_insert_with(buffers::take)
            .bytes
            .extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A socket that takes at most `per_write` bytes per call, and refuses (Pending, waking at
    /// once) every other call when `stalls` is set.
    #[derive(Default)]
    struct Socket {
        got: Vec<u8>,
        writes: usize,
        per_write: usize,
        stalls: bool,
        stalled: bool,
    }

    impl AsyncWrite for Socket {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            if this.stalls && !this.stalled {
                this.stalled = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            this.stalled = false;
            let n = data.len().min(this.per_write);
            this.got.extend_from_slice(&data[..n]);
            this.writes += 1;
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn socket(per_write: usize, stalls: bool) -> Socket {
        Socket {
            per_write,
            stalls,
            ..Socket::default()
        }
    }

    #[tokio::test]
    async fn a_burst_leaves_in_one_write_at_the_flush_and_the_buffer_is_freed() {
        let mut w = Coalesce::new(socket(usize::MAX, false));
        for frame in [&b"joined"[..], b"offer", b"candidate"] {
            w.write_all(frame).await.expect("gathered");
        }
        assert_eq!(w.inner.writes, 0, "nothing is written before the flush");
        w.flush().await.expect("flushed");
        assert_eq!(
            (w.inner.got.as_slice(), w.inner.writes),
            (&b"joinedoffercandidate"[..], 1)
        );
        assert!(w.burst.is_none(), "no buffer held between bursts");
        assert!(buffers::kept() >= 1, "the buffer went back to the spares");
    }

    #[tokio::test]
    async fn partial_and_refused_writes_lose_and_repeat_nothing() {
        let mut w = Coalesce::new(socket(3, true));
        let data: Vec<u8> = (0..=255).cycle().take(1000).collect();
        for chunk in data.chunks(70) {
            w.write_all(chunk).await.expect("gathered");
        }
        w.shutdown().await.expect("sent, then shut down");
        assert_eq!(w.inner.got, data);
        assert!(w.burst.is_none());
    }

    #[tokio::test]
    async fn more_than_the_limit_is_sent_before_gathering_on() {
        let mut w = Coalesce::new(socket(usize::MAX, false));
        let half = vec![1u8; MAX_GATHERED / 2 + 1];
        w.write_all(&half).await.expect("gathered");
        w.write_all(&half)
            .await
            .expect("the first half sent, the second gathered");
        assert_eq!((w.inner.got.len(), w.gathered()), (half.len(), half.len()));
        let big = vec![2u8; MAX_GATHERED + 1];
        w.write_all(&big).await.expect("sent straight on");
        w.flush().await.expect("flushed");
        assert_eq!(w.inner.got.len(), 2 * half.len() + big.len());
        assert_eq!(&w.inner.got[2 * half.len()..], &big[..], "in order");
    }

    #[tokio::test]
    async fn reads_pass_through() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut w = Coalesce::new(server);
        client.write_all(b"frame").await.expect("written");
        let mut got = [0u8; 5];
        w.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"frame");
    }
}
