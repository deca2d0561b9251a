//! The endpoints whose bodies are streams: server-sent events, large downloads, large
//! uploads and trailers. Nothing here holds a whole body in memory.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::body::{self, Body, PatternBody};
use super::numeric_param;

/// `GET /sse?count=N&interval_ms=M` (defaults 5 and 100): N events `data: <i>\n\n`, i from 0,
/// the first at once and each next one M ms later. Each event is its own body frame, which
/// hyper writes out as soon as it is produced.
pub(super) fn sse<B>(request: &Request<B>) -> Response<Body> {
    let count = match numeric_param(request, "count", 5) {
        Ok(count) => count,
        Err(bad) => return bad.into_response(),
    };
    let interval = match numeric_param(request, "interval_ms", 100) {
        Ok(ms) => Duration::from_millis(ms),
        Err(bad) => return bad.into_response(),
    };
    let events = stream::unfold(0u64, move |index| async move {
        if index >= count {
            return None;
        }
        if index > 0 {
            tokio::time::sleep(interval).await;
        }
        let event = Frame::data(Bytes::from(format!("data: {index}\n\n")));
        Some((Ok::<_, std::convert::Infallible>(event), index + 1))
    });
    let mut response = Response::new(body::boxed(StreamBody::new(events)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /bytes?size=N` (default 1 MiB): N bytes of the [`pattern_byte`](super::pattern_byte)
/// pattern with a `Content-Length`, generated chunk by chunk.
pub(super) fn bytes<B>(request: &Request<B>) -> Response<Body> {
    let size = match numeric_param(request, "size", 1 << 20) {
        Ok(size) => size,
        Err(bad) => return bad.into_response(),
    };
    let mut response = Response::new(body::boxed(PatternBody::new(size)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    response
}

/// `POST /upload`: reads the request body frame by frame and answers
/// `{"bytes": <count>, "sha256": "<hex digest>"}`.
pub(super) async fn upload(request: Request<Incoming>) -> Response<Body> {
    let mut incoming = request.into_body();
    let mut hasher = Sha256::new();
    let mut count: u64 = 0;
    while let Some(frame) = incoming.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    hasher.update(data);
                    count += data.len() as u64;
                }
            }
            Err(error) => {
                return body::text(
                    StatusCode::BAD_REQUEST,
                    format!("reading the body failed after {count} bytes: {error}\n"),
                )
            }
        }
    }
    let digest = hex::encode(hasher.finalize());
    body::json(StatusCode::OK, &json!({ "bytes": count, "sha256": digest }))
}

/// `GET /trailers`: a few chunks, then the trailer `x-demo-trailer: done`. Over HTTP/1.1 hyper
/// only writes trailers when the request said `TE: trailers`; HTTP/2 always carries them.
pub(super) fn trailers() -> Response<Body> {
    let mut trailer = HeaderMap::new();
    trailer.insert("x-demo-trailer", HeaderValue::from_static("done"));
    let frames = [
        Frame::data(Bytes::from_static(b"chunk 1\n")),
        Frame::data(Bytes::from_static(b"chunk 2\n")),
        Frame::trailers(trailer),
    ];
    let frames = stream::iter(frames.map(Ok::<_, std::convert::Infallible>));
    let mut response = Response::new(body::boxed(StreamBody::new(frames)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::TRAILER, HeaderValue::from_static("x-demo-trailer"));
    response
}
