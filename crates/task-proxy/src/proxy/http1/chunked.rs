//! Following a chunked message body (RFC 9112 §7.1) in a byte stream that is passed on
//! unchanged: the relay (jobs' responses) and the framing guard (requests on their way to
//! hyper) do not decode chunks, they only need to know where the message ends so the
//! connection can carry the next one, and to refuse what a peer could read differently.
//!
//! Chunk-size lines are parsed by `httparse::parse_chunk_size` ([`size_line`]); the state
//! machine around it is ours because `httparse` parses one complete line, not a stream. The
//! rules are hyper's (whose decoder reads the same bodies on the general path): lines end in
//! CRLF, a size has one to sixteen hex digits, the data is followed by exactly CRLF. Trailer
//! lines are only counted (at most [`MAX_LINE`] each, [`MAX_TRAILERS`] in all) up to the
//! empty line.

/// The longest chunk-size line (with extensions) or trailer line accepted.
pub const MAX_LINE: usize = 4096;
/// The longest trailer section accepted.
pub const MAX_TRAILERS: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A chunk-size line (its bytes so far in `line` when it spans feeds).
    SizeLine,
    /// Chunk data, this many bytes left.
    Data(u64),
    /// The CRLF after chunk data: whether its CR was seen.
    DataEnd {
        seen_cr: bool,
    },
    /// Trailer lines after the last chunk: bytes in the current line, total so far.
    Trailers {
        line: usize,
        total: usize,
    },
    Done,
}

/// Why a chunked body cannot be followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub struct Malformed;

/// The size a complete chunk-size line (its CRLF included) announces.
///
/// Stricter than `httparse::parse_chunk_size` alone, which reads a line without digits as
/// size 0 and lets an extension run on past a bare LF: both are refused here, as hyper's
/// decoder refuses them.
pub fn size_line(line: &[u8]) -> Result<u64, Malformed> {
    if !line.first().is_some_and(u8::is_ascii_hexdigit) {
        return Err(Malformed);
    }
    match httparse::parse_chunk_size(line) {
        Ok(httparse::Status::Complete((used, size))) if used == line.len() => Ok(size),
        _ => Err(Malformed),
    }
}

/// A piece of a chunked body being decoded ([`ChunkedTracker::step`]): bytes at the start
/// of the data given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Chunk data.
    Data(usize),
    /// Chunk-size lines, the CRLF after data, or trailer lines.
    Framing(usize),
}

/// Follows one chunked body.
#[derive(Debug, Clone)]
pub struct ChunkedTracker {
    state: State,
    /// The start of a chunk-size line that spans feeds (empty otherwise: a line that arrives
    /// whole is parsed where it lies, so following a body allocates nothing).
    line: Vec<u8>,
}

impl Default for ChunkedTracker {
    fn default() -> Self {
        ChunkedTracker {
            state: State::SizeLine,
            line: Vec::new(),
        }
    }
}

impl ChunkedTracker {
    /// Whether the whole body has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Inside chunk data: how many bytes of it are left (they need no look).
    pub fn data_left(&self) -> Option<u64> {
        match self.state {
            State::Data(left) => Some(left),
            _ => None,
        }
    }

    /// Follows `data`; returns how many of its bytes belong to the body (all of them unless
    /// the body ends inside `data`).
    pub fn feed(&mut self, data: &[u8]) -> Result<usize, Malformed> {
        self.run(data, false)
    }

    /// Whether the next bytes are the trailer section (after the last chunk).
    pub fn in_trailers(&self) -> bool {
        matches!(self.state, State::Trailers { .. })
    }

    /// Decoding instead of following: what the bytes at the start of `data` are. Chunk data
    /// comes back as [`Step::Data`]; framing as [`Step::Framing`], one chunk-size line at a
    /// time, so that a step that starts [`in_trailers`](Self::in_trailers) holds only trailer
    /// bytes.
    pub fn step(&mut self, data: &[u8]) -> Result<Step, Malformed> {
        if let State::Data(left) = self.state {
            let take = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
            let left = left - take as u64;
            self.state = if left == 0 {
                State::DataEnd { seen_cr: false }
            } else {
                State::Data(left)
            };
            return Ok(Step::Data(take));
        }
        Ok(Step::Framing(self.run(data, true)?))
    }

    /// `decode`: stop before chunk data and after each chunk-size line.
    fn run(&mut self, data: &[u8], decode: bool) -> Result<usize, Malformed> {
        let mut i = 0;
        while i < data.len() {
            match self.state {
                State::Done => return Ok(i),
                State::Data(_) if decode => return Ok(i),
                State::Data(left) => {
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(data.len() - i);
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataEnd { seen_cr: false }
                    } else {
                        State::Data(left)
                    };
                }
                State::SizeLine => {
                    i += self.size_line_part(&data[i..])?;
                    if decode {
                        return Ok(i);
                    }
                }
                State::DataEnd { seen_cr } => {
                    let b = data[i];
                    i += 1;
                    self.state = match (b, seen_cr) {
                        (b'\r', false) => State::DataEnd { seen_cr: true },
                        (b'\n', true) => State::SizeLine,
                        _ => return Err(Malformed),
                    };
                }
                State::Trailers { line, total } => {
                    let b = data[i];
                    i += 1;
                    if total >= MAX_TRAILERS || line >= MAX_LINE {
                        return Err(Malformed);
                    }
                    self.state = match b {
                        b'\n' if line == 0 => State::Done,
                        b'\n' => State::Trailers {
                            line: 0,
                            total: total + 1,
                        },
                        b'\r' => State::Trailers {
                            line,
                            total: total + 1,
                        },
                        _ => State::Trailers {
                            line: line + 1,
                            total: total + 1,
                        },
                    };
                }
            }
        }
        Ok(i)
    }

    /// Takes the bytes of a chunk-size line from the start of `data`; returns how many.
    fn size_line_part(&mut self, data: &[u8]) -> Result<usize, Malformed> {
        let Some(end) = data.iter().position(|b| *b == b'\n') else {
            if self.line.len() + data.len() > MAX_LINE {
                return Err(Malformed);
            }
            self.line.extend_from_slice(data);
            return Ok(data.len());
        };
        let size = if self.line.is_empty() {
            if end >= MAX_LINE {
                return Err(Malformed);
            }
            size_line(&data[..=end])?
        } else {
            if self.line.len() + end >= MAX_LINE {
                return Err(Malformed);
            }
            self.line.extend_from_slice(&data[..=end]);
            let size = size_line(&self.line);
            self.line.clear();
            size?
        };
        self.state = if size == 0 {
            State::Trailers { line: 0, total: 0 }
        } else {
            State::Data(size)
        };
        Ok(end + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn end_of(body: &[u8]) -> Result<Option<usize>, Malformed> {
        let mut t = ChunkedTracker::default();
        let n = t.feed(body)?;
        Ok(t.is_done().then_some(n))
    }

    /// Data, trailer bytes, and where the body ended.
    type Decoded = (Vec<u8>, Vec<u8>, Option<usize>);

    /// Decodes `body` fed in pieces of `piece` bytes.
    fn decode(body: &[u8], piece: usize) -> Result<Decoded, Malformed> {
        let mut t = ChunkedTracker::default();
        let (mut data, mut trailers) = (Vec::new(), Vec::new());
        let mut at = 0;
        while at < body.len() && !t.is_done() {
            let end = (at + piece).min(body.len());
            let trailer = t.in_trailers();
            match t.step(&body[at..end])? {
                Step::Data(n) => {
                    data.extend_from_slice(&body[at..at + n]);
                    at += n;
                }
                Step::Framing(n) => {
                    if trailer {
                        trailers.extend_from_slice(&body[at..at + n]);
                    }
                    at += n;
                }
            }
        }
        Ok((data, trailers, t.is_done().then_some(at)))
    }

    #[test]
    fn decodes_data_and_trailers_in_any_pieces() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-t: 1\r\n\r\nNEXT";
        for piece in 1..body.len() {
            let (data, trailers, end) = decode(body, piece).unwrap();
            assert_eq!(data, b"hello world", "pieces of {piece}");
            assert_eq!(trailers, b"x-t: 1\r\n\r\n", "pieces of {piece}");
            assert_eq!(end, Some(body.len() - 4), "pieces of {piece}");
        }
        assert_eq!(decode(b"1\r\nxy\r\n", 3), Err(Malformed));
        assert_eq!(
            decode(b"0\r\n\r\n", 2).unwrap(),
            (vec![], b"\r\n".to_vec(), Some(5))
        );
    }

    #[test]
    fn finds_the_end() {
        let body = b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        assert_eq!(end_of(body), Ok(Some(body.len() - 16)));
        let with_trailers = b"1\r\nx\r\n0\r\ngrpc-status: 0\r\nx-a: b\r\n\r\nrest";
        assert_eq!(end_of(with_trailers), Ok(Some(with_trailers.len() - 4)));
        assert_eq!(end_of(b"5\r\nhel"), Ok(None));
        // Both hand parsers this replaced took these, and so does hyper.
        for accepted in [
            &b"A \t;name=\"quoted;value\"\r\n0123456789\r\n0\r\n\r\n"[..],
            b"ffffffffffffffff\r\n",
            b"0000000000000001\r\nx\r\n0;last\r\n\r\n",
            b"0\r\n\n",
        ] {
            assert!(
                end_of(accepted).is_ok(),
                "{}",
                String::from_utf8_lossy(accepted)
            );
        }
    }

    #[test]
    fn refuses_garbage() {
        // Refused before as now: not hex, no digits, data longer than its size, more than 16
        // digits, a sign.
        for refused in [
            &b"x\r\n"[..],
            b"\r\n",
            b";ext\r\n",
            b"1\r\nab\r\n",
            b"11111111111111111\r\n",
            b"00000000000000001\r\n",
            b"-1\r\n",
            b"+1\r\n",
            b"1 2\r\n",
        ] {
            assert_eq!(
                end_of(refused),
                Err(Malformed),
                "{}",
                String::from_utf8_lossy(refused)
            );
        }
        // Taken by the old hand parsers, refused now as hyper refuses them: lines and chunk
        // data not ended by CRLF (a peer that ends them differently reads another body), and
        // a CR inside an extension.
        for refused in [
            &b"0\n\n"[..],
            b"5\nhello\r\n",
            b"1\r\nx\n0\r\n\r\n",
            b"1;ext\nx\r\n0\r\n\r\n",
            b"1;a\rb\r\nx\r\n",
        ] {
            assert_eq!(
                end_of(refused),
                Err(Malformed),
                "{}",
                String::from_utf8_lossy(refused)
            );
        }
    }

    #[test]
    fn over_long_lines_are_refused_even_in_pieces() {
        let mut line = b"1;".to_vec();
        line.extend(std::iter::repeat_n(b'a', MAX_LINE));
        line.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert_eq!(end_of(&line), Err(Malformed));
        let mut t = ChunkedTracker::default();
        let refused = line
            .chunks(100)
            .try_for_each(|piece| t.feed(piece).map(|_| ()));
        assert_eq!(refused, Err(Malformed));
        let mut trailer = b"0\r\nx: ".to_vec();
        trailer.extend(std::iter::repeat_n(b'a', MAX_LINE));
        assert_eq!(end_of(&trailer), Err(Malformed));
    }

    #[test]
    fn size_lines() {
        assert_eq!(size_line(b"1a\r\n"), Ok(0x1a));
        assert_eq!(size_line(b"1A;x=\"y\"\r\n"), Ok(0x1a));
        assert_eq!(size_line(b"0 \r\n"), Ok(0));
        assert_eq!(size_line(b"1\r\nextra"), Err(Malformed), "one line only");
        assert_eq!(size_line(b"1"), Err(Malformed), "an unfinished line");
    }

    proptest! {
        /// Split anywhere, the tracker finds the same end as in one piece.
        #[test]
        fn split_feeding_agrees(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..6), split in 0usize..400, ext in "(;[a-z]{0,8}(=[a-z0-9]{0,8})?)?") {
            let mut body = Vec::new();
            for c in &chunks {
                body.extend_from_slice(format!("{:x}{ext}\r\n", c.len()).as_bytes());
                body.extend_from_slice(c);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\nNEXT");
            let end = body.len() - 4;
            prop_assert_eq!(end_of(&body), Ok(Some(end)));
            let split = split.min(body.len());
            let mut t = ChunkedTracker::default();
            let first = t.feed(&body[..split]).unwrap();
            let second = if t.is_done() { 0 } else { t.feed(&body[first..]).unwrap() };
            prop_assert!(t.is_done());
            prop_assert_eq!(first + second, end);
        }

        /// Whatever the bytes and however they are split, the tracker never panics, and a
        /// split never changes whether a body is refused.
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200), split in 0usize..200) {
            let whole = end_of(&data);
            let split = split.min(data.len());
            let mut t = ChunkedTracker::default();
            let pieces = t.feed(&data[..split]).and_then(|first| {
                let second = if t.is_done() { 0 } else { t.feed(&data[first..])? };
                Ok(t.is_done().then_some(first + second))
            });
            prop_assert_eq!(whole, pieces);
        }
    }
}
