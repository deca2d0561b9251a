//! Finding the end of a chunked message body (RFC 9112 §7.1) in a byte stream that is passed
//! on unchanged. The relay does not decode chunks, it only needs to know where the message
//! ends so the connection can carry the next one.

/// The longest chunk-size line (with extensions) or trailer section accepted.
const MAX_LINE: usize = 4096;
const MAX_TRAILERS: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size (`digits` so far, `size` accumulated).
    Size {
        size: u64,
        digits: u8,
    },
    /// After the size: extensions up to the line end (`len` bytes so far).
    Extension {
        size: u64,
        len: usize,
    },
    /// Chunk data, this many bytes left.
    Data(u64),
    /// The CRLF after chunk data: `\r` or `\n` expected.
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

/// Follows one chunked body.
#[derive(Debug, Clone)]
pub struct ChunkedTracker {
    state: State,
}

impl Default for ChunkedTracker {
    fn default() -> Self {
        ChunkedTracker {
            state: State::Size { size: 0, digits: 0 },
        }
    }
}

impl ChunkedTracker {
    /// Whether the whole body has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Follows `data`; returns how many of its bytes belong to the body (all of them unless
    /// the body ends inside `data`).
    pub fn feed(&mut self, data: &[u8]) -> Result<usize, Malformed> {
        let mut i = 0;
        while i < data.len() {
            match self.state {
                State::Done => return Ok(i),
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
                State::Size { size, digits } => {
                    let b = data[i];
                    i += 1;
                    match (b as char).to_digit(16) {
                        Some(d) if digits < 16 => {
                            self.state = State::Size {
                                size: size << 4 | u64::from(d),
                                digits: digits + 1,
                            }
                        }
                        Some(_) => return Err(Malformed),
                        None if digits == 0 => return Err(Malformed),
                        None if b == b'\n' => self.end_size_line(size),
                        None if matches!(b, b';' | b' ' | b'\t' | b'\r') => {
                            self.state = State::Extension { size, len: 1 }
                        }
                        None => return Err(Malformed),
                    }
                }
                State::Extension { size, len } => {
                    let b = data[i];
                    i += 1;
                    if b == b'\n' {
                        self.end_size_line(size);
                    } else if len >= MAX_LINE {
                        return Err(Malformed);
                    } else {
                        self.state = State::Extension { size, len: len + 1 };
                    }
                }
                State::DataEnd { seen_cr } => {
                    let b = data[i];
                    i += 1;
                    self.state = match (b, seen_cr) {
                        (b'\r', false) => State::DataEnd { seen_cr: true },
                        (b'\n', _) => State::Size { size: 0, digits: 0 },
                        _ => return Err(Malformed),
                    };
                }
                State::Trailers { line, total } => {
                    let b = data[i];
                    i += 1;
                    if total >= MAX_TRAILERS {
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

    fn end_size_line(&mut self, size: u64) {
        self.state = if size == 0 {
            State::Trailers { line: 0, total: 0 }
        } else {
            State::Data(size)
        };
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

    #[test]
    fn finds_the_end() {
        let body = b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        assert_eq!(end_of(body), Ok(Some(body.len() - 16)));
        let with_trailers = b"1\r\nx\r\n0\r\ngrpc-status: 0\r\nx-a: b\r\n\r\nrest";
        assert_eq!(end_of(with_trailers), Ok(Some(with_trailers.len() - 4)));
        assert_eq!(end_of(b"0\n\n"), Ok(Some(3)));
        assert_eq!(end_of(b"5\r\nhel"), Ok(None));
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(end_of(b"x\r\n"), Err(Malformed));
        assert_eq!(end_of(b"\r\n"), Err(Malformed));
        assert_eq!(end_of(b"1\r\nab\r\n"), Err(Malformed));
        assert_eq!(end_of(b"11111111111111111\r\n"), Err(Malformed));
    }

    proptest! {
        /// Split anywhere, the tracker finds the same end as in one piece.
        #[test]
        fn split_feeding_agrees(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..6), split in 0usize..400) {
            let mut body = Vec::new();
            for c in &chunks {
                body.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
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
    }
}
