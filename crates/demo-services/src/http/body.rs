//! Response bodies: the one boxed body type every route returns, small helpers to build
//! complete responses, and [`PatternBody`], a body of any size generated chunk by chunk.

use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

use crate::server::BoxError;

/// The body of every response of the HTTP server.
pub(crate) type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Boxes any body into [`Body`].
pub(crate) fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// An empty body.
pub(crate) fn empty() -> Body {
    boxed(Empty::<Bytes>::new())
}

/// A response with a complete body of the given content type.
pub(crate) fn full(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(boxed(Full::new(body.into())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A `text/plain` response.
pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    full(status, "text/plain; charset=utf-8", body.into())
}

/// An `application/json` response.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    full(status, "application/json", value.to_string())
}

/// The byte at `offset` of every `/bytes` body: `offset % 251`, a pattern that does not line up
/// with power-of-two chunk sizes, so misplaced or repeated chunks change the digest.
pub fn pattern_byte(offset: u64) -> u8 {
    // The remainder is below 251, so it always fits.
    (offset % PATTERN_PERIOD) as u8
}

const PATTERN_PERIOD: u64 = 251;
/// A whole number of periods close to 64 KiB, so every chunk starts the pattern afresh.
const CHUNK_LEN: usize = 261 * PATTERN_PERIOD as usize;

fn pattern_chunk() -> Bytes {
    static CHUNK: OnceLock<Bytes> = OnceLock::new();
    CHUNK
        .get_or_init(|| {
            (0..CHUNK_LEN as u64)
                .map(pattern_byte)
                .collect::<Vec<u8>>()
                .into()
        })
        .clone()
}

/// A body of `len` bytes of the [`pattern_byte`] pattern, produced one shared chunk at a time
/// (nothing is allocated per response), with an exact size hint so it gets a `Content-Length`.
#[derive(Debug)]
pub(crate) struct PatternBody {
    remaining: u64,
}

impl PatternBody {
    pub(crate) fn new(len: u64) -> Self {
        Self { remaining: len }
    }
}

impl http_body::Body for PatternBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let mut chunk = pattern_chunk();
        if self.remaining < chunk.len() as u64 {
            // Smaller than a chunk, so it fits in usize.
            chunk.truncate(self.remaining as usize);
        }
        self.remaining -= chunk.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
