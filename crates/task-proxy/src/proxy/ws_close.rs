//! Ending a WebSocket tunnel the proxy's way: a close frame with status 1008 (policy
//! violation) and a reason, sent to the caller when the tunnel is cut for a reason of the
//! proxy's own (the operation ended, access was revoked).
//!
//! A tunnel is a byte pipe: the proxy may only insert a frame where the job's stream to the
//! caller is between two frames, or the caller would read garbage. [`FrameWatch`] follows the
//! frame headers of what has been written to the caller (RFC 6455 §5.2: the header gives the
//! payload's length, so the payload is skipped without being read) and tells when the stream
//! is at a boundary. Elsewhere (mid-frame) the tunnel is closed without a frame. Hand-written:
//! it reads two to fourteen header bytes per frame; a WebSocket crate would parse, and own,
//! the whole stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// WebSocket close status 1008: policy violation (RFC 6455 §7.4.1).
pub const POLICY_VIOLATION: u16 = 1008;

/// A close frame from the server side (unmasked) with `code` and `reason` (cut to the 123
/// bytes a control frame's payload leaves for it, at a character boundary).
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    let mut frame = Vec::with_capacity(4 + reason.len());
    // FIN, opcode 0x8 (close); no mask; payload length below 126.
    frame.push(0x88);
    frame.push((2 + reason.len()) as u8);
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(reason);
    frame
}

/// Where a stream of WebSocket frames stands.
#[derive(Debug, Default, Clone)]
pub struct FrameTracker {
    header: [u8; 14],
    /// Header bytes seen of the current frame.
    have: usize,
    /// Payload bytes still to come of the current frame.
    remaining: u64,
}

impl FrameTracker {
    /// Follows `bytes`, the next bytes of the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        let mut i = 0;
        while i < bytes.len() {
            if self.remaining > 0 {
                let take = self.remaining.min((bytes.len() - i) as u64);
                self.remaining -= take;
                i += take as usize;
                continue;
            }
            self.header[self.have] = bytes[i];
            self.have += 1;
            i += 1;
            if self.have >= 2 && self.have == self.header_len() {
                self.remaining = self.payload_len();
                self.have = 0;
            }
        }
    }

    /// The current frame's header length (2 until its second byte is known).
    fn header_len(&self) -> usize {
        if self.have < 2 {
            return 2;
        }
        let extended = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        2 + extended + mask
    }

    fn payload_len(&self) -> u64 {
        match self.header[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => {
                let mut len = [0u8; 8];
                len.copy_from_slice(&self.header[2..10]);
                u64::from_be_bytes(len)
            }
            n => u64::from(n),
        }
    }

    /// Whether the stream is between two frames.
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }
}

/// The caller's end of a tunnel: follows the frames written to it.
pub struct FrameWatch<I> {
    inner: I,
    frames: FrameTracker,
}

impl<I> FrameWatch<I> {
    pub fn new(inner: I) -> FrameWatch<I> {
        FrameWatch {
            inner,
            frames: FrameTracker::default(),
        }
    }

    /// Whether a frame of the proxy's own may be written now.
    pub fn at_boundary(&self) -> bool {
        self.frames.at_boundary()
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for FrameWatch<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for FrameWatch<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = &polled {
            this.frames.feed(&buf[..*written]);
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame as a server sends it (unmasked) or a client (masked), with `len` payload bytes.
    fn frame(len: usize, masked: bool) -> Vec<u8> {
        let mut f = vec![0x82];
        let mask_bit = if masked { 0x80 } else { 0 };
        match len {
            0..=125 => f.push(mask_bit | len as u8),
            126..=65535 => {
                f.push(mask_bit | 126);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                f.push(mask_bit | 127);
                f.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend(std::iter::repeat_n(0xAA, len));
        f
    }

    #[test]
    fn boundaries_are_found_however_the_stream_is_split() {
        let mut stream = Vec::new();
        let mut ends = vec![];
        for (len, masked) in [
            (0, false),
            (5, false),
            (125, true),
            (126, false),
            (70_000, false),
        ] {
            stream.extend(frame(len, masked));
            ends.push(stream.len());
        }
        for chunk in [1, 2, 3, 7, 100, 4096, stream.len()] {
            let mut tracker = FrameTracker::default();
            let mut at = 0;
            for piece in stream.chunks(chunk) {
                tracker.feed(piece);
                at += piece.len();
                assert_eq!(
                    tracker.at_boundary(),
                    ends.contains(&at),
                    "chunk {chunk} at {at}"
                );
            }
            assert!(tracker.at_boundary());
        }
        let mut tracker = FrameTracker::default();
        tracker.feed(&frame(300, false)[..3]);
        assert!(!tracker.at_boundary());
    }

    #[test]
    fn the_close_frame_carries_the_code_and_a_cut_reason() {
        let frame = close_frame(POLICY_VIOLATION, "access revoked");
        assert_eq!(&frame[..4], &[0x88, 16, 0x03, 0xF0]);
        assert_eq!(&frame[4..], b"access revoked");
        let long = "\u{e9}".repeat(100);
        let frame = close_frame(POLICY_VIOLATION, &long);
        assert!(frame.len() <= 127);
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
        assert_eq!(frame[1] as usize, frame.len() - 2);
    }
}
