//! The request lifecycle both forwarding paths share: route a request to its service, pick a
//! job, run attempts under one [`RetryPolicy`], and say why no response came ([`Failure`],
//! answered by [`super::failure`]). The HTTP/1.1 relay ([`super::relay`]) and hyper's path
//! ([`super::service`]) are adapters around it: each reads heads and writes answers in its own
//! way and implements [`Transport`] ("send one attempt over my kind of connection"), so
//! timeouts and retries cannot drift apart between them. See `docs/architecture.md`.
//!
//! What counts as an attempt (at most [`RetryPolicy::max_attempts`] endpoints are tried):
//! - a connection that could not be opened (the endpoint is ejected, another one is tried);
//! - a request a new connection failed before sending, or that failed after it was sent.
//!
//! What does not: a pooled connection the job had closed, found before the request left
//! ([`Sent::Unsent`]) or, for a request that may be sent twice, before any byte of the
//! response came ([`Sent::Unanswered`]). The request goes again, on another connection.
//!
//! A request that may be sent twice ([`RetryPolicy::replayable`]: idempotent, no body) is
//! replayed once on another endpoint after a job failed it. Nothing else is retried after it
//! reached a job.
//!
//! The per-attempt timeout runs from when the request has been passed to the job: from the
//! start of the attempt, or from the last piece of a request body that is still streaming in
//! (the body's upload moves the deadline, a stalled upload is cut like a silent job).

use super::balance::{Balancer, Routes, ServiceBackends, Tried, MAX_ATTEMPTS};
use super::conn_limit::ConnPermit;
use super::endpoint::{EndpointState, InFlight};
use super::failure::{Failure, Unroutable};
use super::shared::monotonic_ms;
use super::upstream::ConnectError;
use crate::config::{Limits, NO_LIMIT};
use crate::routing::{route_request, RouteKeyError, RoutingHeaders};
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How one request is retried: one value, built the same way for both paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The request may be sent again after it reached a job (idempotent method, no body).
    pub replayable: bool,
    /// Most endpoints tried.
    pub max_attempts: usize,
    /// How long one attempt waits for the response head once the request was passed on (and
    /// how long a streamed upload may stall).
    pub attempt_timeout: Duration,
}

impl RetryPolicy {
    /// The policy for a request to `route`'s service: the operation's `route_timeout_seconds`
    /// replaces `--upstream-response-timeout` for the wait for the head; the stream idle timeout
    /// (the operation's or the flag's) bounds that wait too, as it bounds every silence.
    pub fn new(
        replayable: bool,
        timeouts: &crate::routing::RouteTimeouts,
        limits: &Limits,
    ) -> Self {
        let head = match timeouts.route_timeout_seconds {
            Some(0) => NO_LIMIT,
            Some(s) => Duration::from_secs(s),
            None => limits.upstream_response_timeout,
        };
        let attempt_timeout = match timeouts.stream_idle_timeout(limits.stream_idle_timeout) {
            Some(idle) => head.min(idle),
            None => head,
        };
        RetryPolicy {
            replayable,
            max_attempts: MAX_ATTEMPTS,
            attempt_timeout,
        }
    }
}

/// Whether `method` may be sent twice (with no body).
pub fn idempotent(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    )
}

/// Finds the service of a request: its `x-yt-taskproxy-id`/operation headers and its Host
/// (`Err` when it had more than one) on the routes in force (the snapshot and each route's
/// balancing state, published together).
pub fn route(
    routes: &Routes,
    headers: &RoutingHeaders,
    host: Result<Option<&str>, RouteKeyError>,
) -> Result<Arc<ServiceBackends>, Unroutable> {
    let key = host
        .and_then(|host| route_request(headers, host, routes.snapshot().base_domain()))
        .map_err(Unroutable::BadRequest)?;
    match routes.route(&key) {
        Some(backend) => Ok(backend.clone()),
        None => Err(Unroutable::NoSuchTask(key)),
    }
}

/// The outcome of one attempt on one connection.
pub enum Sent<R, E> {
    /// The job's response head.
    Answered(R),
    /// The connection was found closed before the request left: it can go elsewhere as is.
    Unsent(String),
    /// The connection ended before any byte of the response came.
    Unanswered(E),
    /// The job failed the request after it was sent.
    Failed(E),
    /// The job answered something that must not be passed on (ambiguous framing): final.
    Refused(String),
}

/// Sending one attempt over one kind of connection to a job.
pub trait Transport {
    type Conn;
    type Response;
    type Error: std::fmt::Display + Into<Failure>;

    /// An idle pooled connection to `ep`, if one is usable.
    fn pooled(&mut self, ep: &Arc<EndpointState>) -> Option<Self::Conn>;

    /// A new connection to `ep`, holding `permit` while it is open.
    fn connect(
        &mut self,
        ep: &Arc<EndpointState>,
        permit: ConnPermit,
    ) -> impl Future<Output = Result<Self::Conn, ConnectError>>;

    /// Sends the request on `conn` and waits for the response head (the caller times it).
    fn send(
        &mut self,
        conn: Self::Conn,
        ep: &Arc<EndpointState>,
    ) -> impl Future<Output = Sent<Self::Response, Self::Error>>;

    /// Readies the request to be sent again after it reached a job; false if it cannot be.
    fn rewind(&mut self) -> bool;

    /// Progress of a request body still streaming to the job (None: the request is complete
    /// when it is sent).
    fn upload(&self) -> Option<Arc<UploadClock>>;
}

/// When a streamed request body last moved (a piece passed on, or its end).
#[derive(Debug)]
pub struct UploadClock {
    last_ms: AtomicU64,
}

impl UploadClock {
    pub fn new() -> Arc<UploadClock> {
        Arc::new(UploadClock {
            last_ms: AtomicU64::new(monotonic_ms()),
        })
    }

    /// A piece of the body (or its end) was passed on.
    pub fn moved(&self) {
        self.last_ms.store(monotonic_ms(), Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        Duration::from_millis(monotonic_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A timer for a deadline that moves: moving it costs a clock read, and the timer is re-armed
/// only when it fires before the current deadline (instead of a timer-wheel update each time).
/// The relay keeps one per connection for all its requests.
pub struct LazyTimer {
    sleep: Pin<Box<tokio::time::Sleep>>,
    deadline: tokio::time::Instant,
}

impl LazyTimer {
    pub fn new(deadline: tokio::time::Instant) -> LazyTimer {
        LazyTimer {
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            deadline,
        }
    }

    /// A timer `timeout` from now.
    pub fn after(timeout: Duration) -> LazyTimer {
        LazyTimer::new(after(tokio::time::Instant::now(), timeout))
    }

    pub fn set(&mut self, deadline: tokio::time::Instant) {
        self.deadline = deadline;
        if deadline < self.sleep.deadline() {
            self.sleep.as_mut().reset(deadline);
        }
    }

    /// Completes at the deadline.
    pub async fn expired(&mut self) {
        loop {
            self.sleep.as_mut().await;
            if tokio::time::Instant::now() >= self.deadline {
                return;
            }
            self.sleep.as_mut().reset(self.deadline);
        }
    }
}

/// `timeout` after `from`, or a far deadline when that cannot be represented.
fn after(from: tokio::time::Instant, timeout: Duration) -> tokio::time::Instant {
    from.checked_add(timeout)
        .unwrap_or_else(|| from + Duration::from_secs(86_400 * 365))
}

/// Runs `send` until it completes or the attempt times out (None): `timeout` after the start,
/// moved on while `upload` shows the request body still coming.
async fn timed<F: Future>(
    send: F,
    upload: Option<&UploadClock>,
    timeout: Duration,
    timer: &mut LazyTimer,
) -> Option<F::Output> {
    timer.set(after(tokio::time::Instant::now(), timeout));
    let mut send = pin!(send);
    loop {
        tokio::select! {
            biased;
            sent = &mut send => return Some(sent),
            () = timer.expired() => {}
        }
        let quiet = upload?.quiet_for();
        if quiet >= timeout {
            return None;
        }
        timer.set(after(tokio::time::Instant::now(), timeout - quiet));
    }
}

/// Sends a request to one of `backend`'s endpoints under `policy` (see the module docs): the
/// job's response head and the endpoint's in-flight mark (which names the endpoint that
/// answered), or why there is none. `preferred`: the endpoint the request's affinity cookie
/// names, tried first while it is not ejected.
pub async fn forward<T: Transport>(
    balancer: &Balancer,
    backend: &ServiceBackends,
    transport: &mut T,
    policy: &RetryPolicy,
    timer: &mut LazyTimer,
    preferred: Option<usize>,
) -> Result<(T::Response, InFlight), Failure> {
    let service = backend.route.domain.as_str();
    let mut tried = Tried::default();
    let mut last: Option<String> = None;
    let mut failed_after_send: Option<T::Error> = None;
    // Stale pooled connections are not attempts; bound the loop anyway.
    for _ in 0..policy.max_attempts * 4 {
        if tried.len() >= policy.max_attempts {
            break;
        }
        let Some(i) = balancer.pick_preferring(backend, &tried, preferred) else {
            break;
        };
        let ep = &backend.endpoints[i];
        let (conn, pooled) = match transport.pooled(ep) {
            Some(conn) => (conn, true),
            None => {
                let permit = ep.connection_permit().await.map_err(Failure::Overloaded)?;
                let connect = transport.connect(ep, permit);
                match balancer
                    .connect_recorded(ep, i, service, connect, &mut tried, &mut last)
                    .await
                {
                    Some(conn) => (conn, false),
                    None => continue,
                }
            }
        };
        let in_flight = ep.start_request();
        let started = Instant::now();
        let upload = transport.upload();
        let sent = timed(
            transport.send(conn, ep),
            upload.as_deref(),
            policy.attempt_timeout,
            timer,
        );
        let Some(sent) = sent.await else {
            return Err(Failure::Timeout);
        };
        match sent {
            Sent::Answered(response) => {
                backend.stats.upstream_latency.observe(started.elapsed());
                return Ok((response, in_flight));
            }
            Sent::Refused(conflict) => {
                // The job's doing, not a broken connection: not replayed; the connection is
                // dropped (closed).
                tracing::debug!(endpoint = %ep.endpoint, %conflict, "malformed response");
                return Err(Failure::Job(conflict));
            }
            Sent::Unsent(why) => {
                if !pooled {
                    tried.push(i);
                }
                last = Some(why);
            }
            Sent::Unanswered(error) if pooled && policy.replayable && transport.rewind() => {
                tracing::debug!(endpoint = %ep.endpoint, %error, "a pooled connection was closed; sending again");
            }
            Sent::Unanswered(error) | Sent::Failed(error) => {
                tried.push(i);
                if policy.replayable && failed_after_send.is_none() && transport.rewind() {
                    tracing::debug!(endpoint = %ep.endpoint, %error, "replaying an idempotent request elsewhere");
                    failed_after_send = Some(error);
                    continue;
                }
                return Err(error.into());
            }
        }
    }
    // A job that failed the request is the better explanation than "no other job".
    match failed_after_send {
        Some(error) => Err(error.into()),
        None => Err(Failure::NoJob { last }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn the_attempt_timeout_runs_from_the_end_of_the_upload() {
        let clock = UploadClock::new();
        let mut timer = LazyTimer::new(tokio::time::Instant::now());
        let started = tokio::time::Instant::now();
        // The body moves every 100 ms for 600 ms, then the job takes 250 ms: never 300 ms
        // without progress, so the attempt is not cut although it lasts 850 ms.
        let feeder = {
            let clock = clock.clone();
            async move {
                for _ in 0..6 {
                    tokio::time::sleep(MS * 100).await;
                    clock.moved();
                }
                tokio::time::sleep(MS * 250).await;
                "answered"
            }
        };
        let out = timed(feeder, Some(&clock), MS * 300, &mut timer).await;
        assert_eq!(out, Some("answered"));
        assert!(started.elapsed() >= MS * 800, "{:?}", started.elapsed());

        // A stalled upload is cut one timeout after its last piece.
        let clock = UploadClock::new();
        let started = tokio::time::Instant::now();
        let stalled = {
            let clock = clock.clone();
            async move {
                tokio::time::sleep(MS * 200).await;
                clock.moved();
                std::future::pending::<()>().await;
            }
        };
        assert_eq!(
            timed(stalled, Some(&clock), MS * 300, &mut timer).await,
            None
        );
        let took = started.elapsed();
        assert!(took >= MS * 500 && took < MS * 800, "{took:?}");

        // Without an upload, the timeout runs from the start.
        let started = tokio::time::Instant::now();
        let silent = std::future::pending::<()>();
        assert_eq!(timed(silent, None, MS * 300, &mut timer).await, None);
        let took = started.elapsed();
        assert!(took >= MS * 300 && took < MS * 500, "{took:?}");
    }

    #[test]
    fn the_stream_idle_timeout_bounds_the_wait_for_the_head() {
        let limits = Limits {
            upstream_response_timeout: Duration::from_secs(60),
            ..Limits::default()
        };
        let mut timeouts = crate::routing::RouteTimeouts::default();
        let policy = RetryPolicy::new(true, &timeouts, &limits);
        assert_eq!(policy.attempt_timeout, Duration::from_secs(60));
        timeouts.stream_idle_timeout_seconds = Some(5);
        let policy = RetryPolicy::new(true, &timeouts, &limits);
        assert_eq!(policy.attempt_timeout, Duration::from_secs(5));
        timeouts.route_timeout_seconds = Some(2);
        assert_eq!(
            RetryPolicy::new(false, &timeouts, &limits).attempt_timeout,
            Duration::from_secs(2)
        );
        timeouts = crate::routing::RouteTimeouts {
            route_timeout_seconds: Some(0),
            stream_idle_timeout_seconds: Some(0),
        };
        assert_eq!(
            RetryPolicy::new(false, &timeouts, &limits).attempt_timeout,
            NO_LIMIT
        );
    }
}
