//! Byte buffers a connection holds only while they hold bytes: a burst being written
//! (`coalesce`), input not yet made into messages (`ws`). Between uses they wait here, a few
//! per thread: taken from malloc and given back for every burst, they were carved up by the
//! long-lived allocations made meanwhile (+0.13 KiB per connection; docs/benchmarks.md).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, ReadBuf};

/// A buffer's capacity when first made: a call's setup burst (an SDP and its candidates) fits.
const FIRST_CAPACITY: usize = 4096;
/// Buffers kept per thread, and the largest kept.
const KEPT: usize = 16;
const MAX_KEPT_CAPACITY: usize = 16 * 1024;

/// Bytes, and how many of them at the front are done with (written, or parsed).
#[derive(Default)]
pub struct Buffer {
    pub bytes: Vec<u8>,
    pub done: usize,
}

impl Buffer {
    /// The bytes not yet done with.
    pub fn rest(&self) -> &[u8] {
        self.bytes.get(self.done..).unwrap_or_default()
    }
}

thread_local! {
    #[allow(clippy::vec_box, reason = "kept boxed: a connection holds the box while in use")]
    static SPARE: RefCell<Vec<Box<Buffer>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer.
pub fn take() -> Box<Buffer> {
    SPARE.with(|s| s.borrow_mut().pop()).unwrap_or_else(|| {
        Box::new(Buffer {
            bytes: Vec::with_capacity(FIRST_CAPACITY),
            done: 0,
        })
    })
}

/// Keep `buffer` for another use, unless enough are kept or it grew large.
pub fn give(mut buffer: Box<Buffer>) {
    if buffer.bytes.capacity() > MAX_KEPT_CAPACITY {
        return;
    }
    buffer.bytes.clear();
    buffer.done = 0;
    SPARE.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < KEPT {
            s.push(buffer);
        }
    });
}

/// Read what `io` has into this thread's scratch buffer and forget it: how many bytes. For
/// input that is only drained: at a shutdown every connection drains at once, and a buffer
/// each (16 KiB) was the heap's peak (docs/benchmarks.md).
pub fn poll_discard<S: AsyncRead + Unpin>(
    io: &mut S,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    thread_local! {
        static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; 16 * 1024].into_boxed_slice());
    }
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let mut buf = ReadBuf::new(&mut scratch[..]);
        ready!(Pin::new(io).poll_read(cx, &mut buf))?;
        Poll::Ready(Ok(buf.filled().len()))
    })
}

/// Buffers kept on this thread.
#[cfg(test)]
pub fn kept() -> usize {
    SPARE.with(|s| s.borrow().len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn discarding_reads_everything_until_the_end() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let sent = tokio::spawn(async move {
            client.write_all(&[7u8; 40_000]).await.expect("written");
        });
        let mut total = 0;
        loop {
            match std::future::poll_fn(|cx| poll_discard(&mut server, cx)).await {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) => panic!("{e}"),
            }
        }
        sent.await.expect("the writer ended");
        assert_eq!(total, 40_000);
    }
}
