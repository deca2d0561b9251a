//! A guard against floods of HTTP/2 control frames from callers. It owns the caller's
//! connection once its HTTP/2 preface is seen, in front of hyper's server.
//!
//! Control frames cost the proxy work even though no request comes with them: every PING and
//! SETTINGS frame gets an answer written back; PRIORITY, RST_STREAM and WINDOW_UPDATE frames are
//! parsed and applied. A caller sending them in a tight loop kept a core busy and slowed every
//! other caller on it. The guard follows frame boundaries on the read side (the 24-byte preface,
//! then 9-byte frame headers; payloads are skipped, not copied) and charges control frames to a
//! token bucket of [`BURST`] frames refilled at [`RATE_PER_SECOND`]. RST_STREAM frames are free
//! up to the number of streams the caller opened, and WINDOW_UPDATE and PING frames up to one per
//! KiB of DATA the proxy wrote, so callers cancelling their requests, reading big responses or measuring
//! bandwidth with PINGs while data flows (gRPC's BDP estimation) never run out; a PING paid for
//! by a KiB of response amplifies nothing.
//! When the bucket is empty, nothing more is read: the guard writes a GOAWAY with
//! `ENHANCE_YOUR_CALM` (0xb) and ends the connection (within [`GOAWAY_DEADLINE`] even when the
//! caller does not read).
//!
//! Written by hand because the `h2` crate (0.4) bounds header lists, small DATA frames,
//! CONTINUATION and reset streams but nothing of PING, SETTINGS, PRIORITY or WINDOW_UPDATE, and
//! neither it nor hyper offers a hook to count frames. The GOAWAY must not land in the middle of
//! a frame h2 is writing: the guard also follows frame boundaries on the write side (h2 writes
//! through it) and only writes the GOAWAY between two frames. The work per read and write is a
//! few comparisons per frame header; the clock is read only for control frames.

use crate::proxy::metrics::ProxyMetrics;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Control frames a caller may send at once.
pub const BURST: f64 = 1000.0;
/// Control frames per second a caller may send sustained (1000 per 10 s); browsers and gRPC
/// clients send a handful per connection.
pub const RATE_PER_SECOND: f64 = 100.0;
/// How long the guard tries to write its GOAWAY before it just closes.
pub const GOAWAY_DEADLINE: Duration = Duration::from_secs(1);

const PREFACE_LEN: u8 = 24;
const FRAME_HEADER: u8 = 9;
/// Written bytes that pay for one WINDOW_UPDATE.
const DATA_CREDIT_BYTES: u64 = 1024;
/// Most free WINDOW_UPDATE or RST_STREAM frames saved up.
const MAX_CREDIT: u64 = 1 << 20;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const PING: u8 = 0x6;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const PUSH_PROMISE: u8 = 0x5;
const END_STREAM: u8 = 0x1;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Where the read side is in the caller's frames.
#[derive(Debug)]
struct ReadFrames {
    preface_left: u8,
    head: [u8; FRAME_HEADER as usize],
    head_len: u8,
    payload_left: u32,
}

/// Where the write side is in h2's frames (the length and type of each header matter).
#[derive(Debug, Default)]
struct WriteFrames {
    head: [u8; 4],
    head_len: u8,
    payload_left: u32,
    /// The current frame is DATA.
    data: bool,
}

impl WriteFrames {
    fn at_boundary(&self) -> bool {
        self.head_len == 0 && self.payload_left == 0
    }

    /// Bytes of `len` that may be written without crossing the end of the current frame.
    fn until_boundary(&self, len: usize) -> usize {
        if self.head_len > 0 {
            // Inside a header: the payload length is not known yet; finish the header first.
            len.min((FRAME_HEADER - self.head_len) as usize)
        } else {
            len.min(self.payload_left as usize)
        }
    }

    /// Follows `data` (just written); returns how many of its bytes were DATA payload.
    fn advance(&mut self, mut data: &[u8]) -> usize {
        let mut payload = 0;
        while !data.is_empty() {
            if self.payload_left > 0 {
                let k = data.len().min(self.payload_left as usize);
                self.payload_left -= k as u32;
                if self.data {
                    payload += k;
                }
                data = &data[k..];
                continue;
            }
            let k = data.len().min((FRAME_HEADER - self.head_len) as usize);
            for (i, b) in data[..k].iter().enumerate() {
                if let Some(slot) = self.head.get_mut(self.head_len as usize + i) {
                    *slot = *b;
                }
            }
            self.head_len += k as u8;
            data = &data[k..];
            if self.head_len == FRAME_HEADER {
                self.head_len = 0;
                self.payload_left =
                    u32::from_be_bytes([0, self.head[0], self.head[1], self.head[2]]);
                self.data = self.head[3] == DATA;
            }
        }
        payload
    }
}

/// The caller's allowance of control frames.
#[derive(Debug)]
struct Allowance {
    tokens: f64,
    refilled: Instant,
    /// RST_STREAM frames allowed for free: one per stream opened.
    resets: u64,
    /// WINDOW_UPDATE or PING frames allowed for free: one per [`DATA_CREDIT_BYTES`] of DATA
    /// payload written.
    data_credit: u64,
    /// Bytes written not yet turned into window-update credit.
    written: u64,
    /// The highest stream the caller opened (for the GOAWAY).
    last_stream: u32,
}

impl Allowance {
    /// Charges one control frame; false when the caller has none left.
    fn charge(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.refilled).as_secs_f64() * RATE_PER_SECOND;
        self.tokens = (self.tokens + refill).min(BURST);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the frame with this header may pass.
    fn admit(&mut self, head: &[u8; FRAME_HEADER as usize]) -> bool {
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]);
        let (kind, flags) = (head[3], head[4]);
        match kind {
            HEADERS => {
                let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                self.last_stream = self.last_stream.max(stream);
                self.resets = (self.resets + 1).min(MAX_CREDIT);
                true
            }
            // Empty DATA frames that do not end their stream carry nothing.
            DATA => len > 0 || flags & END_STREAM != 0 || self.charge(),
            // Bounded by h2 itself (header list size, reset streams) or a protocol error.
            CONTINUATION | PUSH_PROMISE => true,
            RST_STREAM if self.resets > 0 => {
                self.resets -= 1;
                true
            }
            WINDOW_UPDATE | PING if self.data_credit > 0 => {
                self.data_credit -= 1;
                true
            }
            // PRIORITY, SETTINGS, GOAWAY, unknown (extension) frames, and RST_STREAM,
            // WINDOW_UPDATE and PING beyond their credit.
            _ => self.charge(),
        }
    }

    fn wrote(&mut self, n: usize) {
        self.written += n as u64;
        if self.written >= DATA_CREDIT_BYTES {
            let credit = self.written / DATA_CREDIT_BYTES;
            self.written %= DATA_CREDIT_BYTES;
            self.data_credit = (self.data_credit + credit).min(MAX_CREDIT);
        }
    }
}

/// The GOAWAY being written, once the caller ran out of allowance.
#[derive(Debug)]
struct Trip {
    frame: [u8; 17],
    written: usize,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// The GOAWAY is out (or the deadline passed) and the write side shut down.
    done: bool,
    /// The read side waits for h2 to finish the frame it is writing.
    read_waker: Option<Waker>,
}

/// A caller's HTTP/2 connection with its control frames counted (see the module docs).
#[derive(Debug)]
pub struct H2Guard<I> {
    inner: I,
    read: ReadFrames,
    write: WriteFrames,
    allowance: Allowance,
    trip: Option<Box<Trip>>,
    metrics: Arc<ProxyMetrics>,
}

impl<I> H2Guard<I> {
    /// Wraps a connection whose next bytes are the HTTP/2 client preface; connections ended
    /// for a flood are counted in `metrics`.
    pub fn new(inner: I, metrics: Arc<ProxyMetrics>) -> H2Guard<I> {
        H2Guard {
            inner,
            read: ReadFrames {
                preface_left: PREFACE_LEN,
                head: [0; FRAME_HEADER as usize],
                head_len: 0,
                payload_left: 0,
            },
            write: WriteFrames::default(),
            allowance: Allowance {
                tokens: BURST,
                refilled: Instant::now(),
                resets: 0,
                data_credit: 0,
                written: 0,
                last_stream: 0,
            },
            trip: None,
            metrics,
        }
    }

    /// Follows the caller's frames through `data` (just read). Returns where to cut it when a
    /// frame goes over the allowance: the start of that frame's header within `data` (0 when
    /// the header began in an earlier read).
    fn inspect(&mut self, data: &[u8]) -> Option<usize> {
        let r = &mut self.read;
        let mut pos = 0;
        if r.preface_left > 0 {
            let k = data.len().min(r.preface_left as usize);
            r.preface_left -= k as u8;
            pos = k;
        }
        while pos < data.len() {
            if r.payload_left > 0 {
                let k = (data.len() - pos).min(r.payload_left as usize);
                r.payload_left -= k as u32;
                pos += k;
                continue;
            }
            let start = if r.head_len == 0 { pos } else { 0 };
            let k = (data.len() - pos).min((FRAME_HEADER - r.head_len) as usize);
            let at = r.head_len as usize;
            r.head[at..at + k].copy_from_slice(&data[pos..pos + k]);
            r.head_len += k as u8;
            pos += k;
            if r.head_len == FRAME_HEADER {
                r.head_len = 0;
                r.payload_left = u32::from_be_bytes([0, r.head[0], r.head[1], r.head[2]]);
                if !self.allowance.admit(&r.head) {
                    return Some(start);
                }
            }
        }
        None
    }

    fn start_trip(&mut self) {
        self.metrics.h2_floods.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            frame_type = self.read.head[3],
            "HTTP/2 caller sent too many control frames: GOAWAY ENHANCE_YOUR_CALM"
        );
        let mut frame = [0u8; 17];
        frame[2] = 8; // payload length
        frame[3] = 0x7; // GOAWAY, stream 0
        frame[9..13].copy_from_slice(&self.allowance.last_stream.to_be_bytes());
        frame[13..17].copy_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
        self.trip = Some(Box::new(Trip {
            frame,
            written: 0,
            deadline: Box::pin(tokio::time::sleep(GOAWAY_DEADLINE)),
            done: false,
            read_waker: None,
        }));
    }
}

impl<I: AsyncWrite + Unpin> H2Guard<I> {
    /// Writes the GOAWAY (once the write side is between frames) and shuts the write side down.
    /// Ready when that is done or the deadline passed; Pending while h2 finishes a frame.
    fn poll_goaway(&mut self, cx: &mut Context<'_>, from_read: bool) -> Poll<()> {
        let Some(trip) = self.trip.as_mut() else {
            return Poll::Ready(());
        };
        loop {
            if trip.done {
                return Poll::Ready(());
            }
            if trip.deadline.as_mut().poll(cx).is_ready() {
                trip.done = true;
                continue;
            }
            if !self.write.at_boundary() {
                // h2 is in the middle of a frame: it finishes it through poll_write, which
                // wakes the read side then.
                if from_read {
                    trip.read_waker = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
            if trip.written < trip.frame.len() {
                match Pin::new(&mut self.inner).poll_write(cx, &trip.frame[trip.written..]) {
                    Poll::Ready(Ok(n)) if n > 0 => trip.written += n,
                    Poll::Ready(_) => trip.done = true,
                    Poll::Pending => return Poll::Pending,
                }
                continue;
            }
            match Pin::new(&mut self.inner).poll_shutdown(cx) {
                Poll::Ready(_) => trip.done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for H2Guard<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.trip.is_some() {
            // Nothing more is read; the end of the stream follows the GOAWAY.
            return this.poll_goaway(cx, true).map(Ok);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let Some(cut) = this.inspect(&buf.filled()[before..]) else {
            return Poll::Ready(Ok(()));
        };
        buf.set_filled(before + cut);
        this.start_trip();
        if cut > 0 {
            // What came before the offending frame is passed on; the next read ends it.
            return Poll::Ready(Ok(()));
        }
        this.poll_goaway(cx, true).map(Ok)
    }
}

impl<I: AsyncWrite + Unpin> H2Guard<I> {
    fn wrote(&mut self, bufs: &[io::IoSlice<'_>], mut n: usize) {
        for b in bufs {
            if n == 0 {
                break;
            }
            let k = n.min(b.len());
            let payload = self.write.advance(&b[..k]);
            self.allowance.wrote(payload);
            n -= k;
        }
        if self.write.at_boundary() {
            if let Some(waker) = self.trip.as_mut().and_then(|t| t.read_waker.take()) {
                waker.wake();
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for H2Guard<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.trip.is_some() {
            if this.write.at_boundary() {
                // Not one more frame after the GOAWAY.
                if this.poll_goaway(cx, false).is_pending() {
                    return Poll::Pending;
                }
                return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
            }
            // Only the rest of the frame h2 is in the middle of.
            let Some(first) = bufs.iter().find(|b| !b.is_empty()) else {
                return Poll::Ready(Ok(0));
            };
            let part = &first[..this.write.until_boundary(first.len())];
            let n = match Pin::new(&mut this.inner).poll_write(cx, part) {
                Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            this.wrote(&[io::IoSlice::new(&part[..n])], n);
            return Poll::Ready(Ok(n));
        }
        let n = match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => n,
            other => return other,
        };
        this.wrote(bufs, n);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.trip.is_some() && this.write.at_boundary() {
            return this.poll_goaway(cx, false).map(Ok);
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn guard<I>(io: I) -> H2Guard<I> {
        H2Guard::new(io, Arc::new(ProxyMetrics::default()))
    }

    #[tokio::test]
    async fn a_ping_flood_is_cut_at_a_frame_and_answered_with_goaway() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut sent = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        let ping = frame(0x6, 0, 0, &[0; 8]);
        for _ in 0..1500 {
            sent.extend_from_slice(&ping);
        }
        client.write_all(&sent).await.unwrap();
        let mut g = guard(server);
        // The server's SETTINGS, in two pieces: the GOAWAY must wait for the frame's end.
        let settings = frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]);
        g.write_all(&settings[..5]).await.unwrap();
        let mut delivered = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = g.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            delivered.extend_from_slice(&buf[..n]);
            if g.trip.is_some() && delivered.len() > 24 + 999 * ping.len() {
                // h2 would finish the frame it was writing before reading again.
                g.write_all(&settings[5..]).await.unwrap();
            }
        }
        let frames = (delivered.len() - 24) / ping.len();
        assert_eq!(
            (delivered.len() - 24) % ping.len(),
            0,
            "cut at a frame boundary"
        );
        assert!((1000..1010).contains(&frames), "{frames} PINGs passed");
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(
            &back[..settings.len()],
            &settings[..],
            "h2's frame first, whole"
        );
        let goaway = &back[settings.len()..];
        assert_eq!(goaway.len(), 17);
        assert_eq!(goaway[3], 0x7);
        assert_eq!(&goaway[13..17], &[0, 0, 0, 0xb]);
        assert!(
            g.write_all(b"more").await.is_err(),
            "nothing after the GOAWAY"
        );
    }

    #[test]
    fn requests_resets_window_updates_and_pings_with_data_earn_their_own_credit() {
        let mut g = guard(tokio::io::empty());
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        for i in 0..3000u32 {
            input.extend(frame(0x1, 0x5, 2 * i + 1, &[0x82]));
            input.extend(frame(0x3, 0, 2 * i + 1, &[0, 0, 0, 8]));
        }
        // Byte by byte: headers split across reads are followed too.
        for b in input.chunks(7) {
            assert_eq!(g.inspect(b), None);
        }
        assert_eq!(g.allowance.last_stream, 5999);
        g.allowance.wrote(3000 * 1024);
        let updates: Vec<u8> = (0..3000)
            .flat_map(|_| frame(0x8, 0, 0, &[0, 0, 0x40, 0]))
            .collect();
        assert_eq!(g.inspect(&updates), None);
        assert_eq!(g.allowance.tokens as u32, BURST as u32, "no token spent");
        // PINGs while data flows are paid for by it too.
        g.allowance.wrote(1500 * 1024);
        let pings: Vec<u8> = (0..1500).flat_map(|_| frame(0x6, 0, 0, &[0; 8])).collect();
        assert_eq!(g.inspect(&pings), None);
        assert_eq!(g.allowance.tokens as u32, BURST as u32, "no token spent");
    }

    #[test]
    fn the_write_side_knows_frame_boundaries() {
        let mut w = WriteFrames::default();
        assert!(w.at_boundary());
        let data = frame(0x0, 0, 1, &[7; 20]);
        assert_eq!(w.advance(&data[..4]), 0);
        assert_eq!(w.until_boundary(100), 5);
        assert_eq!(w.advance(&data[4..9]), 0);
        assert_eq!(w.until_boundary(100), 20);
        assert_eq!(w.advance(&data[9..15]), 6);
        assert_eq!(w.advance(&data[15..]), 14);
        assert!(w.at_boundary());
        assert_eq!(
            w.advance(&frame(0x6, 1, 0, &[0; 8])),
            0,
            "a PING is not DATA"
        );
        assert!(w.at_boundary());
    }
}
