//! The access log: one line per request on the `task_proxy::access` target, written when the
//! response body is finished (or dropped, e.g. the client went away), with the service, status,
//! duration, response bytes and the user when auth named one. Only the path is logged (never
//! the query string, which may carry secrets), and never a header: no credential can reach it.
//!
//! When the target is disabled (`--log-level warn`, or `task_proxy::access=off`) responses are
//! passed through untouched and nothing is counted.

use crate::answer::{BoxError, ProxyBody};
use crate::routing::Route;
use bytes::Bytes;
use http::{Method, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// The log target; filter it like any other (`RUST_LOG=info,task_proxy::access=off`).
pub const TARGET: &str = crate::logging::ACCESS_TARGET;

/// What the pipeline learns about a request as it goes.
pub struct AccessRecord {
    started: Instant,
    method: Method,
    uri: Uri,
    /// The route, once the request was routed.
    pub route: Option<Arc<Route>>,
    /// The caller's login, once auth named one.
    pub user: Option<String>,
}

impl AccessRecord {
    /// Whether the access log is on.
    pub fn enabled() -> bool {
        tracing::enabled!(target: TARGET, tracing::Level::INFO)
    }

    /// Starts the record of a request, or `None` when the access log is off.
    pub fn start(method: &Method, uri: &Uri) -> Option<AccessRecord> {
        AccessRecord::enabled().then(|| AccessRecord {
            started: Instant::now(),
            method: method.clone(),
            uri: uri.clone(),
            route: None,
            user: None,
        })
    }

    /// Wraps the response so that the line is written when its body ends.
    pub fn finish(self, response: Response<ProxyBody>) -> Response<ProxyBody> {
        let status = response.status();
        response.map(|inner| {
            Logged {
                inner,
                bytes: 0,
                status,
                record: Some(self),
            }
            .boxed()
        })
    }
}

struct Logged {
    inner: ProxyBody,
    bytes: u64,
    status: StatusCode,
    record: Option<AccessRecord>,
}

impl AccessRecord {
    /// Writes the line: the answer's status, the body bytes passed on, and whether the body
    /// was passed on completely.
    pub fn write(self, status: StatusCode, bytes: u64, completed: bool) {
        let (service, operation, protocol) = match &self.route {
            Some(route) => (
                route.domain.as_str(),
                route.key.operation_id.as_str(),
                route.protocol.as_str(),
            ),
            None => ("", "", ""),
        };
        tracing::info!(
            target: TARGET,
            method = %self.method,
            path = self.uri.path(),
            service,
            operation,
            protocol,
            status = status.as_u16(),
            duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            bytes,
            user = self.user.as_deref().unwrap_or(""),
            completed,
            "request"
        );
    }
}

impl Logged {
    fn write_line(&mut self, completed: bool) {
        if let Some(record) = self.record.take() {
            record.write(self.status, self.bytes, completed);
        }
    }
}

impl Body for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => self.write_line(true),
            Poll::Ready(Some(Err(_))) => self.write_line(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        // A body that was never polled to its end: empty (HEAD, 204) or abandoned by the client.
        let completed = self.inner.is_end_stream();
        self.write_line(completed);
    }
}
