//! The HTTP/1 code on every request allocates nothing once warmed up: the framing guard in
//! front of hyper reuses its buffers from one request to the next, the relay's head parser
//! reuses its header index, and following a chunked body whose lines arrive whole copies
//! nothing. Counted with a global allocator that counts per thread (the tests of this binary
//! run on threads of their own).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::pin::Pin;
use std::task::{Context, Poll};
use task_proxy::proxy::framing::{FramingGuard, Switch};
use task_proxy::proxy::http1::chunked::ChunkedTracker;
use task_proxy::proxy::http1::head::{parse_request, ParsedRequest};
use tokio::io::{AsyncRead, ReadBuf};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is passed on to the system allocator unchanged; counting touches a
// const-initialised thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

/// A GET, a `Content-Length` upload and a chunked upload with an extension and a trailer.
const ROUND: &[u8] = b"GET /a?b=1 HTTP/1.1\r\nHost: abcdef12.d\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n\
POST /u HTTP/1.1\r\nHost: abcdef12.d\r\nContent-Length: 11\r\n\r\nhello world\
PUT /c HTTP/1.1\r\nHost: abcdef12.d\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n";

/// Reads everything the guard releases from `input`, in reads of at most 4 KiB.
fn drain(guard: &mut FramingGuard<&[u8]>, out: &mut Vec<u8>) {
    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
    let mut chunk = [0u8; 4096];
    loop {
        let mut buf = ReadBuf::new(&mut chunk);
        match Pin::new(&mut *guard).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => return,
            Poll::Ready(Ok(())) => out.extend_from_slice(buf.filled()),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn the_framing_guard_allocates_nothing_per_request_once_warm() {
    let rounds = 200;
    let input = ROUND.repeat(rounds);
    let mut guard = FramingGuard::new(&input[..], 65536, Switch::new());
    let mut out = Vec::with_capacity(input.len());
    // Warm up on the first rounds (buffers grow to their working size), then count.
    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
    let mut chunk = [0u8; 512];
    for _ in 0..4 {
        let mut buf = ReadBuf::new(&mut chunk);
        assert!(Pin::new(&mut guard).poll_read(&mut cx, &mut buf).is_ready());
        out.extend_from_slice(buf.filled());
    }
    let before = allocations();
    drain(&mut guard, &mut out);
    let during = allocations() - before;
    assert_eq!(out, input, "well-framed requests pass unchanged");
    assert_eq!(
        during,
        0,
        "{during} allocations for {} requests",
        3 * rounds
    );
}

#[test]
fn relay_heads_and_chunked_bodies_allocate_nothing_once_warm() {
    let head = b"GET /p?q=1 HTTP/1.1\r\nHost: abcdef12.d\r\nAuthorization: OAuth x\r\nX-Forwarded-For: 1.2.3.4\r\nUser-Agent: t\r\n\r\n";
    let body = b"5;x=1\r\nhello\r\n6\r\n world\r\n0\r\ngrpc-status: 0\r\n\r\n";
    let mut headers = Vec::with_capacity(96);
    let before = allocations();
    for _ in 0..1000 {
        headers = match parse_request(head, 65536, headers) {
            ParsedRequest::Head(h) => h.into_headers(),
            other => panic!("{other:?}"),
        };
        let mut tracker = ChunkedTracker::default();
        assert_eq!(tracker.feed(body), Ok(body.len()));
        assert!(tracker.is_done());
    }
    let during = allocations() - before;
    // One per head, and only one: `http` copies the target to check it the way hyper will
    // (`PathAndQuery::try_from`); nothing else of a head or a chunked body allocates.
    let target_checks = (0..1000)
        .map(|_| {
            let before = allocations();
            let _ = http::uri::PathAndQuery::try_from("/p?q=1");
            allocations() - before
        })
        .sum::<usize>();
    assert_eq!(target_checks, 1000);
    assert_eq!(
        during, target_checks,
        "{during} allocations for 1000 heads and bodies"
    );
}
