//! Hyper's HTTP/2 streams to `http` jobs over the relay's raw job connections: the request
//! head (already rewritten by `proxy/forward.rs`) is written in HTTP/1.1 into one buffer and
//! sent by the relay's own attempt ([`super::RelayAttempt`], same pools, same head reader);
//! the job's head becomes an `http::Response` whose body ([`RawBody`]) reads the rest of the
//! answer straight from the socket and gives the connection back to the pool when the message
//! ended cleanly, by the rules the relay applies to its own exchanges.
//!
//! This replaces hyper's HTTP/1.1 client for those streams: its connection task, the channel
//! to it and its head encoding and parsing cost about a fifth of an h2c request's
//! instructions (see BENCHMARKS.md). Only bodiless requests take it (the whole request is one
//! write and may be sent again); requests with a body, upgrades and `https` jobs stay on
//! hyper's client.

use super::upstream::RawConn;
use super::RelayAttempt;
use crate::answer::BoxError;
use crate::proxy::http1::chunked::Step;
use crate::proxy::http1::head::{BadResponse, Framing, ResponseHead};
use crate::proxy::upstream::JobConnector;
use bytes::{Buf, Bytes};
use http::header::{HeaderName, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

/// Pieces of a body up to this size are copied out of the connection's buffer (which then
/// stays unshared and is reused); larger ones are split off it without a copy.
const COPY_BELOW: usize = 4096;
/// Reads of a body ask for at least this much room.
const READ_CHUNK: usize = 16 * 1024;
/// The most data one frame carries: what hyper's path reads from a job at once, which the
/// HTTP/2 response budget allows beyond its limit per connection.
const FRAME_MAX: usize = crate::proxy::upstream::UPSTREAM_READ_CHUNK;

/// Writes a bodiless request prepared for an HTTP/1.1 job (`forward::prepare_request`) as
/// HTTP/1.1 bytes into `out`: what hyper's HTTP/1.1 client would write for it (a
/// `Transfer-Encoding` is dropped: there is no body to frame).
pub fn write_request(parts: &http::request::Parts, out: &mut Vec<u8>) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        if name == TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A bodiless request for hyper's path, sent by the relay's attempt.
pub fn attempt<'a>(
    upstreams: &'a JobConnector,
    request: &'a [u8],
    max_head: usize,
    is_head: bool,
) -> RelayAttempt<'a> {
    RelayAttempt {
        upstreams,
        request,
        max_head,
        is_head,
    }
}

/// The job's answer (its head read by the attempt) as a response for hyper, the connection
/// moving into the body. Err: a header hyper's types refuse (the job's fault: 502).
pub fn into_response(
    mut conn: RawConn,
    head: ResponseHead,
    upstreams: &JobConnector,
) -> Result<Response<RawBody>, BadResponse> {
    let bytes = &conn.buf[..head.len];
    let mut headers = HeaderMap::with_capacity(head.headers.len());
    for h in &head.headers {
        let name =
            HeaderName::from_bytes(&bytes[h.name.clone()]).map_err(|_| BadResponse::Malformed)?;
        let value =
            HeaderValue::from_bytes(&bytes[h.value.clone()]).map_err(|_| BadResponse::Malformed)?;
        headers.append(name, value);
    }
    let status = StatusCode::from_u16(head.status).map_err(|_| BadResponse::Malformed)?;
    conn.buf.advance(head.len);
    let ResponseHead {
        headers: index,
        framing,
        reusable,
        ..
    } = head;
    conn.headers = index;
    let mut response = Response::new(RawBody::new(conn, framing, reusable, upstreams));
    *response.status_mut() = status;
    *response.version_mut() = Version::HTTP_11;
    *response.headers_mut() = headers;
    Ok(response)
}

/// Why a job's response body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the job closed the connection before the end of the response")]
    Closed,
    #[error("reading the job's response: {0}")]
    Io(#[from] io::Error),
    #[error("the job sent a malformed chunked body")]
    Chunked,
    #[error("the job sent malformed trailers")]
    Trailers,
}

/// The rest of a job's HTTP/1.1 response, read from its raw connection. The connection goes
/// back to the pool once the message ended cleanly on a reusable connection with nothing
/// after it; it is closed when the body fails or is dropped before its end.
pub struct RawBody {
    /// None once the body ended.
    conn: Option<RawConn>,
    framing: Framing,
    reusable: bool,
    upstreams: JobConnector,
    /// The trailer section as it arrives (chunked bodies).
    trailers: Vec<u8>,
}

impl RawBody {
    fn new(conn: RawConn, framing: Framing, reusable: bool, upstreams: &JobConnector) -> RawBody {
        let mut body = RawBody {
            conn: Some(conn),
            framing,
            reusable,
            upstreams: upstreams.clone(),
            trailers: Vec::new(),
        };
        // A bodiless answer gives its connection back at once (as hyper's client does).
        if matches!(body.framing, Framing::None | Framing::Length(0)) {
            body.finish();
        }
        body
    }

    /// The message ended: the connection is pooled if it may carry another request.
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.reusable && conn.buf.is_empty() {
                self.upstreams.raw_release(conn);
            }
        }
    }

    /// The body failed: its connection is closed.
    fn fail(&mut self, error: BodyError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.conn = None;
        Poll::Ready(Some(Err(error.into())))
    }
}

/// The first `take` bytes of `conn`'s buffer, as a frame's data.
fn split(conn: &mut RawConn, take: usize) -> Bytes {
    if take <= COPY_BELOW {
        let data = Bytes::copy_from_slice(&conn.buf[..take]);
        conn.buf.advance(take);
        data
    } else {
        conn.buf.split_to(take).freeze()
    }
}

/// Reads more of the job's bytes into `conn`'s buffer: the number read (0 at the end).
fn poll_more(conn: &mut RawConn, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    if conn.buf.capacity() - conn.buf.len() < READ_CHUNK / 4 {
        conn.buf.reserve(READ_CHUNK);
    }
    tokio_util::io::poll_read_buf(Pin::new(&mut conn.stream), cx, &mut conn.buf)
}

fn parse_trailers(section: &[u8]) -> Result<HeaderMap, BodyError> {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let parsed = match httparse::parse_headers(section, &mut slots) {
        Ok(httparse::Status::Complete((_, parsed))) => parsed,
        _ => return Err(BodyError::Trailers),
    };
    let mut map = HeaderMap::with_capacity(parsed.len());
    for h in parsed {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| BodyError::Trailers)?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| BodyError::Trailers)?;
        map.append(name, value);
    }
    Ok(map)
}

impl Body for RawBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if !conn.buf.is_empty() {
                match &mut this.framing {
                    Framing::None | Framing::Length(0) => {}
                    Framing::Length(left) => {
                        let take = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(conn.buf.len())
                            .min(FRAME_MAX);
                        *left -= take as u64;
                        let data = split(conn, take);
                        if *left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Framing::Chunked(tracker) => {
                        let trailers = tracker.in_trailers();
                        match tracker.step(&conn.buf) {
                            Ok(Step::Data(take)) => {
                                let data = split(conn, take);
                                return Poll::Ready(Some(Ok(Frame::data(data))));
                            }
                            Ok(Step::Framing(n)) => {
                                if trailers {
                                    if this.trailers.len() + n > super::MAX_BUFFERED_REQUEST {
                                        return this.fail(BodyError::Trailers);
                                    }
                                    this.trailers.extend_from_slice(&conn.buf[..n]);
                                }
                                conn.buf.advance(n);
                            }
                            Err(_) => return this.fail(BodyError::Chunked),
                        }
                        if tracker.is_done() {
                            let section = std::mem::take(&mut this.trailers);
                            this.finish();
                            if section.len() <= 2 {
                                return Poll::Ready(None);
                            }
                            return match parse_trailers(&section) {
                                Ok(map) if map.is_empty() => Poll::Ready(None),
                                Ok(map) => Poll::Ready(Some(Ok(Frame::trailers(map)))),
                                Err(error) => Poll::Ready(Some(Err(error.into()))),
                            };
                        }
                        continue;
                    }
                    Framing::UntilClose => {
                        let take = conn.buf.len().min(FRAME_MAX);
                        return Poll::Ready(Some(Ok(Frame::data(split(conn, take)))));
                    }
                }
            }
            if matches!(this.framing, Framing::None | Framing::Length(0)) {
                this.finish();
                return Poll::Ready(None);
            }
            match ready!(poll_more(conn, cx)) {
                Ok(0) if matches!(this.framing, Framing::UntilClose) => {
                    // The end of such a body is the end of its connection.
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(BodyError::Closed),
                Ok(_) => {}
                Err(error) => return this.fail(error.into()),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || matches!(self.framing, Framing::None | Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::None => SizeHint::with_exact(0),
            Framing::Length(left) => SizeHint::with_exact(left),
            Framing::Chunked(_) | Framing::UntilClose => SizeHint::default(),
        }
    }
}
