//! A bound per HTTP/2 caller connection on the response bytes the proxy holds for it: taken
//! from jobs, not yet written to the caller's socket.
//!
//! h2 bounds what it queues per stream (`max_send_buf_size`), and hyper holds one more chunk
//! per stream while it waits for room; a caller that opens many streams and never reads
//! multiplied that by its streams. Here every chunk of a response body handed to hyper is a
//! [`Metered`] buffer charged to its connection's [`SendBudget`]. The charge goes back as h2
//! consumes the bytes (`Buf::advance`: written to the socket, or copied into h2's write buffer,
//! which the socket then takes) or drops them (the stream was reset, the connection ended), so
//! the count is exact whatever happens to a stream. While a connection holds
//! [`H2_CONNECTION_BUDGET`] bytes or more, its [`Budgeted`] bodies return `Pending` instead of
//! reading from the job: the job connection's socket fills and TCP holds the job back, as with
//! an HTTP/1.1 caller that does not read. They are woken when the charge falls to half.
//!
//! Written here because neither hyper nor h2 bounds send buffering per connection.

use super::metrics::ProxyMetrics;
use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// Most response bytes one HTTP/2 caller connection may hold in the proxy before its bodies
/// stop reading from jobs (one chunk more may be in hand). Four of the upstream reads
/// ([`super::upstream::UPSTREAM_READ_CHUNK`]): enough to keep a fast caller's socket fed
/// between two wake-ups, and 100 connections that never read hold under 10 MiB.
pub const H2_CONNECTION_BUDGET: usize = 64 * 1024;

/// One caller connection's response bytes in the proxy (see the module docs).
#[derive(Debug)]
pub struct SendBudget {
    held: AtomicUsize,
    limit: usize,
    /// Bodies waiting for the charge to fall (one waker per stream task).
    waiting: Mutex<Vec<Waker>>,
    /// Holds the process-wide sum over connections, for `/metrics`.
    metrics: Arc<ProxyMetrics>,
}

impl SendBudget {
    /// A budget of `limit` bytes whose charges are also added to `metrics`.
    pub fn new(limit: usize, metrics: Arc<ProxyMetrics>) -> Arc<SendBudget> {
        Arc::new(SendBudget {
            held: AtomicUsize::new(0),
            limit: limit.max(1),
            waiting: Mutex::new(Vec::new()),
            metrics,
        })
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    fn charge(&self, n: usize) {
        self.held.fetch_add(n, Ordering::Relaxed);
        self.metrics
            .h2_response_bytes_held
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        let before = self.held.fetch_sub(n, Ordering::Relaxed);
        self.metrics
            .h2_response_bytes_held
            .fetch_sub(n as u64, Ordering::Relaxed);
        let low = self.limit / 2;
        if before > low && before.saturating_sub(n) <= low {
            let woken = match self.waiting.lock() {
                Ok(mut waiting) => std::mem::take(&mut *waiting),
                Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
            };
            for w in woken {
                w.wake();
            }
        }
    }

    /// Ready when the connection may take more; otherwise the task is woken once it may.
    fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.held() < self.limit {
            return Poll::Ready(());
        }
        {
            let mut waiting = match self.waiting.lock() {
                Ok(w) => w,
                Err(poisoned) => poisoned.into_inner(),
            };
            if !waiting.iter().any(|w| w.will_wake(cx.waker())) {
                waiting.push(cx.waker().clone());
            }
        }
        // Released between the check and the registration: no wake-up will come for it.
        if self.held() < self.limit {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// A chunk of a response body on its way to the caller, charged to its connection until h2
/// has consumed or dropped it.
#[derive(Debug)]
pub struct Metered {
    bytes: Bytes,
    budget: Arc<SendBudget>,
}

impl Metered {
    fn new(bytes: Bytes, budget: Arc<SendBudget>) -> Metered {
        budget.charge(bytes.len());
        Metered { bytes, budget }
    }
}

impl Metered {
    /// h2 keeps the last DATA frame it wrote until the connection's next write; an empty
    /// chunk that still pointed into the job connection's read buffer kept all of that buffer
    /// (8 KiB or more) alive for as long as the caller's connection stayed idle.
    fn let_go_when_empty(&mut self) {
        if self.bytes.is_empty() {
            self.bytes = Bytes::new();
        }
    }
}

impl Buf for Metered {
    fn remaining(&self) -> usize {
        self.bytes.len()
    }

    fn chunk(&self) -> &[u8] {
        &self.bytes
    }

    fn advance(&mut self, cnt: usize) {
        self.bytes.advance(cnt);
        self.budget.release(cnt);
        self.let_go_when_empty();
    }

    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        let out = self.bytes.split_to(len);
        self.budget.release(len);
        self.let_go_when_empty();
        out
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.budget.release(self.bytes.len());
    }
}

/// Chunks up to this size are always copied out of the job connection's read buffer.
const COPY_UP_TO: usize = 4 * 1024;

/// `bytes`, or a copy of them that does not keep the job connection's read buffer alive.
///
/// A chunk from hyper's client shares the allocation of the buffer it was read into (16 to
/// 64 KiB); while h2 queues it for a caller that is behind, the whole allocation stays, and
/// hyper reads the next chunk into a new one. Slow callers pinned several such buffers per
/// stream (a profile of 100 callers not reading: 35 MiB of job read buffers for 512 job
/// connections). A copy is made when the caller is behind (its connection already holds
/// bytes) and for small chunks, where it costs less than the new read buffer it saves;
/// chunks for a caller that keeps up go on without a copy.
fn unpinned(bytes: Bytes, budget: &SendBudget) -> Bytes {
    if bytes.len() <= COPY_UP_TO || budget.held() > 0 {
        Bytes::copy_from_slice(&bytes)
    } else {
        bytes
    }
}

/// A response body for an HTTP/2 caller: reads from `inner` only while its connection's
/// budget has room, and hands out [`Metered`] chunks.
#[derive(Debug)]
pub struct Budgeted<B> {
    inner: B,
    budget: Arc<SendBudget>,
}

impl<B> Budgeted<B> {
    pub fn new(inner: B, budget: Arc<SendBudget>) -> Budgeted<B> {
        Budgeted { inner, budget }
    }
}

impl<B> Body for Budgeted<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Metered;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Metered>, B::Error>>> {
        let this = self.get_mut();
        std::task::ready!(this.budget.poll_room(cx));
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        Poll::Ready(frame.map(|r| {
            r.map(|f| {
                let budget = &this.budget;
                f.map_data(|bytes| Metered::new(unpinned(bytes, budget), budget.clone()))
            })
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;
    use std::sync::atomic::AtomicBool;
    use std::task::Wake;

    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn chunks(n: usize, len: usize) -> impl Body<Data = Bytes, Error = std::io::Error> + Unpin {
        let frames = (0..n).map(move |_| Ok(Frame::data(Bytes::from(vec![7u8; len]))));
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[test]
    fn bodies_stop_reading_at_the_limit_and_resume_when_bytes_are_written() {
        let total = Arc::new(ProxyMetrics::default());
        let budget = SendBudget::new(10_000, total.clone());
        let mut a = Budgeted::new(chunks(10, 4_000), budget.clone());
        let mut b = Budgeted::new(chunks(10, 4_000), budget.clone());
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut held = Vec::new();
        // Three chunks (12,000 bytes) pass: the check is made before each read.
        for first in [true, false, true] {
            let body = if first { &mut a } else { &mut b };
            match Pin::new(body).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(f))) => held.push(f.into_data().expect("data")),
                other => panic!("expected a chunk, got {:?}", other.map(|_| ())),
            }
        }
        assert_eq!(budget.held(), 12_000);
        assert_eq!(total.h2_response_bytes_held.load(Ordering::SeqCst), 12_000);
        assert!(Pin::new(&mut b).poll_frame(&mut cx).is_pending());
        assert!(Pin::new(&mut a).poll_frame(&mut cx).is_pending());
        // h2 writes part of one chunk: still above half, nobody is woken.
        held[0].advance(1_000);
        assert_eq!(budget.held(), 11_000);
        assert!(!flag.0.load(Ordering::SeqCst));
        // A reset stream's chunk is dropped unwritten, then most of another is written.
        held.pop();
        held[1].advance(3_500);
        assert_eq!(budget.held(), 3_500);
        assert!(
            flag.0.load(Ordering::SeqCst),
            "waiting bodies are woken at half"
        );
        assert!(Pin::new(&mut b).poll_frame(&mut cx).is_ready());
    }

    #[test]
    fn every_byte_charged_is_given_back_however_the_chunk_ends() {
        let total = Arc::new(ProxyMetrics::default());
        let budget = SendBudget::new(1 << 20, total.clone());
        let mut body = Budgeted::new(chunks(5, 1_000), budget.clone());
        let waker = Waker::from(Arc::new(Flag(AtomicBool::new(false))));
        let mut cx = Context::from_waker(&waker);
        let mut chunks = Vec::new();
        while let Poll::Ready(Some(frame)) = Pin::new(&mut body).poll_frame(&mut cx) {
            chunks.push(frame.expect("frame").into_data().expect("data"));
        }
        assert_eq!(budget.held(), 5_000);
        let copied = chunks[0].copy_to_bytes(600);
        assert_eq!(copied.len(), 600);
        chunks[1].advance(1_000);
        assert_eq!(budget.held(), 3_400);
        drop(chunks);
        assert_eq!(budget.held(), 0);
        assert_eq!(total.h2_response_bytes_held.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn chunks_are_copied_out_of_the_read_buffer_when_small_or_when_the_caller_is_behind() {
        let budget = SendBudget::new(1 << 20, Arc::new(ProxyMetrics::default()));
        let big = Bytes::from(vec![1u8; 16 * 1024]);
        let small = big.slice(..100);
        assert_ne!(unpinned(small.clone(), &budget).as_ptr(), small.as_ptr());
        assert_eq!(unpinned(big.clone(), &budget).as_ptr(), big.as_ptr());
        let _queued = Metered::new(Bytes::from_static(b"queued"), budget.clone());
        let copy = unpinned(big.clone(), &budget);
        assert_ne!(copy.as_ptr(), big.as_ptr());
        assert_eq!(copy, big);
    }

    #[test]
    fn a_drained_chunk_lets_go_of_its_buffer() {
        let budget = SendBudget::new(1 << 20, Arc::new(ProxyMetrics::default()));
        let buffer = Bytes::from(vec![1u8; 64 * 1024]);
        let mut chunk = Metered::new(buffer.slice(..16 * 1024), budget.clone());
        assert!(!buffer.is_unique());
        chunk.advance(16 * 1024);
        assert_eq!(chunk.remaining(), 0);
        assert!(
            buffer.is_unique(),
            "the drained chunk still shares the read buffer"
        );
    }
}
