//! Why forwarding gave no response, and the local answer for it: shared by both forwarding
//! paths (hyper's in [`super::service`] and the HTTP/1.1 relay in [`super::relay`]), so a
//! caller gets the same status and text from either.

use super::conn_limit::Overloaded;
use crate::answer::ProxyBody;
use http::{Response, StatusCode};

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

/// Seconds a caller refused for overload is asked to wait.
pub const RETRY_AFTER: &str = "1";

/// Adds `Retry-After` to a 503 answer.
pub fn add_retry_after(answer: &mut Response<ProxyBody>) {
    if answer.status() == StatusCode::SERVICE_UNAVAILABLE {
        answer.headers_mut().insert(
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
