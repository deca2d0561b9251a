//! Why a request got no response from a job (it could not be routed, or forwarding failed),
//! and the local answer for it: the one set of answers both forwarding paths give (hyper's in
//! [`super::service`] and the HTTP/1.1 relay in [`super::relay`], around
//! [`super::lifecycle`]), so a caller gets the same status and text from either.

use super::conn_limit::Overloaded;
use crate::routing::{RouteKey, RouteKeyError};
use http::{HeaderMap, StatusCode};

/// Why a request could not be routed, before any job was involved.
#[derive(Debug)]
pub enum Unroutable {
    /// No usable route key (bad Host, bad headers).
    BadRequest(RouteKeyError),
    /// The key names no service of the current snapshot.
    NoSuchTask(RouteKey),
}

/// The local answer for a request that could not be routed.
pub fn unroutable_answer(unroutable: &Unroutable) -> (StatusCode, String) {
    match unroutable {
        Unroutable::BadRequest(e) => (StatusCode::BAD_REQUEST, e.to_string()),
        Unroutable::NoSuchTask(key) => (StatusCode::NOT_FOUND, format!("no such task: {key}")),
    }
}

/// Whether the caller's HTTP/1 connection closes after a local answer with `status`: the rest
/// of a stream that brought a bad request cannot be trusted.
pub fn closes_connection(status: StatusCode) -> bool {
    status == StatusCode::BAD_REQUEST
}

/// Why forwarding gave no response.
pub enum Failure {
    /// No endpoint could be connected.
    NoJob { last: Option<String> },
    /// The job did not start its response in time.
    Timeout,
    /// The job failed after the request was sent.
    Upstream(hyper::Error),
    /// The job failed after the request was sent (the relay's description).
    Job(String),
    /// No connection to the job could be had under its connection cap.
    Overloaded(Overloaded),
}

impl From<hyper::Error> for Failure {
    fn from(error: hyper::Error) -> Failure {
        Failure::Upstream(error)
    }
}

/// Seconds a caller refused for overload is asked to wait.
pub const RETRY_AFTER: &str = "1";

/// Adds `Retry-After` to the headers of a 503 answer.
pub fn add_retry_after(headers: &mut HeaderMap, status: StatusCode) {
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static(RETRY_AFTER),
        );
    }
}

/// The local answer for a failure to forward to service `key`.
pub fn failure_answer(failure: Failure, key: &impl std::fmt::Display) -> (StatusCode, String) {
    match failure {
        Failure::NoJob { last } => (
            StatusCode::BAD_GATEWAY,
            match last {
                Some(e) => format!("no healthy job for service {key} ({e})"),
                None => format!("no healthy job for service {key}"),
            },
        ),
        Failure::Timeout => (
            StatusCode::GATEWAY_TIMEOUT,
            format!("the job of service {key} did not answer in time"),
        ),
        // The caller's own body broke (a malformed chunk, a cut upload): their fault.
        Failure::Upstream(e) if e.is_user() => (
            StatusCode::BAD_REQUEST,
            format!("the request body could not be read: {e}"),
        ),
        Failure::Upstream(e) => (
            StatusCode::BAD_GATEWAY,
            format!("the job of service {key} failed: {e}"),
        ),
        Failure::Job(e) => (
            StatusCode::BAD_GATEWAY,
            format!("the job of service {key} failed: {e}"),
        ),
        Failure::Overloaded(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the jobs of service {key} are busy ({e}); retry later"),
        ),
    }
}
