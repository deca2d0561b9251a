//! Hyper's path: the per-request pipeline route -> admit -> forward for everything the HTTP/1.1
//! relay does not take (HTTP/2, TLS, upgrades, streamed bodies). It is an adapter of
//! [`super::lifecycle`], which routes, picks endpoints and runs the attempts under the retry
//! policy both paths share; this file admits, rewrites requests and responses as `http` values,
//! sends attempts over hyper's connections ([`HyperAttempt`]) and renders local answers (gRPC
//! callers get trailers-only statuses). A new connection needs a permit of the endpoint's
//! connection cap ([`super::conn_limit`]); a request that gets none in time is answered 503
//! with `Retry-After`.

use super::access_log::AccessRecord;
use super::balance::ServiceBackends;
use super::conn_limit::ConnPermit;
use super::endpoint::{EndpointState, InFlight};
use super::failure::{
    add_retry_after, closes_connection, failure_answer, unroutable_answer, Failure, Unroutable,
};
use super::forward::{self, ClientView};
use super::framing::Switch;
use super::headers::{self, CookiePolicy};
use super::lifecycle::{self, LazyTimer, RetryPolicy, Sent, Transport, UploadClock};
use super::relay::streams::{self, RawBody};
use super::sessions::{Revocable, Session, SessionInfo, SessionKind};
use super::shared::{monotonic_ms, ConnSlot, Shared};
use super::upgrade::{self, TunnelContext};
use super::upstream::{ConnectError, JobConnector, TlsSender};
use crate::answer::{local_answer, BoxError, CallerKind, ProxyBody};
use crate::auth::identity::{ASSERTION_HEADER, JWKS_PATH, USER_HEADER};
use crate::portal::Portal;
use crate::proxy::metrics::Unrouted;
use crate::routing::{Protocol, RouteKeyError, RoutingHeaders};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2, TrySendError};
use hyper::upgrade::OnUpgrade;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// Requests in flight on one client connection, for its idle timeout.
#[derive(Debug, Default)]
pub struct ConnActivity {
    in_flight: AtomicUsize,
    idle_since_ms: AtomicU64,
}

impl ConnActivity {
    pub fn new() -> Arc<ConnActivity> {
        Arc::new(ConnActivity {
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(monotonic_ms()),
        })
    }

    fn begin(self: &Arc<Self>) -> Active {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Active(self.clone())
    }

    /// How long the connection has had no request in flight (None while one is).
    pub fn idle_for_ms(&self) -> Option<u64> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        Some(monotonic_ms().saturating_sub(self.idle_since_ms.load(Ordering::Relaxed)))
    }
}

/// A request in flight on a client connection, until its response body is done.
#[derive(Debug)]
struct Active(Arc<ConnActivity>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0
            .idle_since_ms
            .store(monotonic_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a connection's requests share.
#[derive(Debug)]
pub struct ConnContext {
    pub client: ClientView,
    /// The peer's address (the auth gate limits look-ups per client address).
    pub peer: std::net::IpAddr,
    pub activity: Arc<ConnActivity>,
    /// Tells the connection's framing guard how each request with an `Upgrade` header ended.
    pub switch: Arc<Switch>,
    /// The connection's place under `--max-connections` (a tunnel keeps a clone).
    pub slot: Arc<ConnSlot>,
}

/// The outcome of an HTTP/1 request with an `Upgrade` header, for the framing guard, which
/// holds the connection's following bytes until it is known: "no tunnel" unless
/// [`SwitchOutcome::tunnel`] was called, on every way out of the handler (drop included).
struct SwitchOutcome {
    switch: Option<Arc<Switch>>,
    tunnel: bool,
}

impl SwitchOutcome {
    fn tunnel(&mut self) {
        self.tunnel = true;
    }
}

impl Drop for SwitchOutcome {
    fn drop(&mut self) {
        if let Some(switch) = self.switch.take() {
            switch.resolve(self.tunnel);
        }
    }
}

/// A response body that holds guards until it is finished or dropped.
struct Guarded<B> {
    inner: B,
    _guards: (Active, InFlight),
}

impl<B> Body for Guarded<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body cut at the route deadline (`-route-timeout-seconds` or the operation's
/// `route_timeout_seconds`) or after the stream idle timeout with no frame from the job: the
/// body then ends with an error, so the caller sees a truncated response, as with the original.
///
/// The idle timer is reset lazily: a frame only records the time; when the timer fires it is
/// moved to the last frame's time plus the timeout if that is later, so a busy stream costs
/// one clock read per frame and no timer operation.
struct Timed<B> {
    inner: B,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    idle: Option<Idle>,
}

struct Idle {
    timeout: std::time::Duration,
    last_frame: tokio::time::Instant,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl<B> Timed<B> {
    fn new(
        inner: B,
        deadline: Option<tokio::time::Instant>,
        idle: Option<std::time::Duration>,
    ) -> Timed<B> {
        let now = tokio::time::Instant::now();
        Timed {
            inner,
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
            idle: idle.map(|timeout| Idle {
                timeout,
                last_frame: now,
                sleep: Box::pin(tokio::time::sleep_until(now + timeout)),
            }),
        }
    }
}

impl<B> Body for Timed<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            if let Some(idle) = this.idle.as_mut() {
                idle.last_frame = tokio::time::Instant::now();
            }
            return Poll::Ready(frame);
        }
        if let Some(deadline) = this.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Some(Err("the route timeout passed".into())));
            }
        }
        if let Some(idle) = this.idle.as_mut() {
            loop {
                if idle.sleep.as_mut().poll(cx).is_pending() {
                    break;
                }
                let due = idle.last_frame + idle.timeout;
                if due <= idle.sleep.deadline() {
                    return Poll::Ready(Some(Err("the stream idle timeout passed".into())));
                }
                idle.sleep.as_mut().reset(due);
            }
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A per-operation timeout in seconds (0: no limit) where the operation sets one, else the
/// flag's `global`.
fn overridden(seconds: Option<u64>, global: std::time::Duration) -> std::time::Duration {
    match seconds {
        Some(0) => crate::config::NO_LIMIT,
        Some(s) => std::time::Duration::from_secs(s),
        None => global,
    }
}

/// The head of an idempotent request without a body, kept to replay it on another endpoint.
struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Replay {
    fn request(&self) -> Request<ProxyBody> {
        let mut req = Request::new(empty_body());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// Asks hyper to close an HTTP/1 connection after `answer` (HTTP/2 streams end on their own).
fn close_http1(answer: &mut Response<ProxyBody>, version: Version) {
    if version < Version::HTTP_2 {
        answer.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
}

fn empty_body() -> ProxyBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// The future of [`Pipeline::handle`].
pub type Handling =
    Pin<Box<dyn std::future::Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

/// One worker's request handler.
#[derive(Debug)]
pub struct Pipeline {
    shared: Arc<Shared>,
    upstreams: JobConnector,
}

impl Pipeline {
    pub fn new(shared: Arc<Shared>, upstreams: JobConnector) -> Pipeline {
        Pipeline { shared, upstreams }
    }

    /// Handles one request; never fails (errors are answers). Writes its access-log line.
    ///
    /// The future is boxed: its state machine is several KiB (the auth and forwarding steps
    /// nest hyper's and the gate's futures), and hyper moves it by value — into a task of its
    /// own per HTTP/2 stream, which tokio copies on spawn and again on completion. A pointer
    /// costs one allocation instead of those copies.
    pub fn handle(self: Arc<Self>, conn: Arc<ConnContext>, req: Request<Incoming>) -> Handling {
        Box::pin(async move {
            match AccessRecord::start(req.method(), req.uri()) {
                None => self.route_admit_forward(conn, req, None).await,
                Some(mut record) => {
                    let response =
                        match self.route_admit_forward(conn, req, Some(&mut record)).await {
                            Ok(response) => response,
                            Err(never) => match never {},
                        };
                    Ok(record.finish(response))
                }
            }
        })
    }

    /// The pipeline; fills `record` (when the access log is on) as it learns the route and
    /// the user.
    async fn route_admit_forward(
        &self,
        conn: Arc<ConnContext>,
        req: Request<Incoming>,
        mut record: Option<&mut AccessRecord>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let active = conn.activity.begin();
        let caller = CallerKind::of(req.headers());
        // The framing guard waits on these (see `SwitchOutcome`); it counts CONNECT among them.
        let asked_upgrade = req.version() < Version::HTTP_2
            && (req.headers().contains_key(http::header::UPGRADE)
                || req.method() == Method::CONNECT);
        let mut switch = SwitchOutcome {
            switch: asked_upgrade.then(|| conn.switch.clone()),
            tunnel: false,
        };

        // The proxy is not a forward proxy: CONNECT names no service path to forward.
        if req.method() == Method::CONNECT
            && req.extensions().get::<hyper::ext::Protocol>().is_none()
        {
            self.shared.metrics.count_unrouted(Unrouted::BadRequest);
            let mut answer = local_answer(
                caller,
                StatusCode::METHOD_NOT_ALLOWED,
                "CONNECT is not supported",
                None,
            );
            answer.headers_mut().insert(
                http::header::ALLOW,
                http::HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
            return Ok(answer);
        }

        if let Some(jwks) = self.jwks(&req) {
            return Ok(jwks);
        }
        if let Some(portal) = &self.shared.portal {
            if portal.owns_request(&req) {
                return Ok(portal.serve(req, conn.peer, conn.client.scheme).await);
            }
        }

        // Route.
        let routed = {
            // x-yt-taskproxy-id and the operation triple headers, in one pass over the names.
            let routing = RoutingHeaders::from_pairs(
                req.headers()
                    .iter()
                    .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes())),
            );
            let mut hosts = req.headers().get_all(http::header::HOST).iter();
            let (host_header, second_host) = (hosts.next(), hosts.next());
            // Two Hosts could route here and mean another service to the job (RFC 9112 §3.2).
            let host = match (req.uri().authority(), second_host) {
                (_, Some(_)) => Err(RouteKeyError::DuplicateHost),
                (Some(a), None) => Ok(Some(a.as_str())),
                (None, None) => Ok(host_header.and_then(|h| h.to_str().ok())),
            };
            lifecycle::route(&self.shared.balancer.routes(), &routing, host)
        };
        let backend = match routed {
            Ok(backend) => backend,
            Err(unroutable) => {
                self.shared.metrics.count_unrouted(match unroutable {
                    Unroutable::BadRequest(_) => Unrouted::BadRequest,
                    Unroutable::NoSuchTask(_) => Unrouted::NoSuchTask,
                });
                if let (Unroutable::NoSuchTask(_), Some(portal)) =
                    (&unroutable, &self.shared.portal)
                {
                    // A browser on a service domain that is gone: say whether it finished.
                    let authority = req.uri().authority().map(|a| a.as_str()).or_else(|| {
                        req.headers()
                            .get(http::header::HOST)
                            .and_then(|h| h.to_str().ok())
                    });
                    if let Some(page) =
                        portal.not_found(caller, req.headers(), authority, conn.client.scheme)
                    {
                        return Ok(page);
                    }
                }
                let (status, message) = unroutable_answer(&unroutable);
                let mut answer = local_answer(caller, status, &message, None);
                if closes_connection(status) {
                    // Whatever follows on this connection is not trusted either.
                    close_http1(&mut answer, req.version());
                }
                return Ok(answer);
            }
        };
        let protocol = backend.route.protocol;
        let stats = backend.stats.clone();
        if let Some(record) = record.as_deref_mut() {
            record.route = Some(backend.route.clone());
        }

        let (mut parts, body) = req.into_parts();
        let version = parts.version;
        let h2_websocket = upgrade::is_h2_websocket(&parts);
        // WebSocket is the only upgrade passed on; any other `Upgrade` (h2c, ...) is removed
        // below and the request forwarded as plain HTTP/1.1 (see `upgrade`'s module docs).
        let is_upgrade = h2_websocket || upgrade::is_websocket_request(&parts);
        if is_upgrade && protocol == Protocol::Grpc {
            stats.count_status(StatusCode::BAD_REQUEST);
            return Ok(local_answer(
                caller,
                StatusCode::BAD_REQUEST,
                "protocol upgrades are not supported for grpc services",
                None,
            ));
        }

        // Admit.
        if let Some(portal) = &self.shared.portal {
            if Portal::is_session_path(parts.uri.path()) {
                return Ok(portal.redeem(&parts, &backend.route, conn.client.scheme));
            }
        }
        let (identity, user) = match self
            .shared
            .gate
            .admit(&mut parts, body.is_end_stream(), &backend.route, conn.peer)
            .await
        {
            Ok(admitted) => {
                tracing::trace!(user = ?admitted.user, service = %backend.route.key, "admitted");
                let identity = self.shared.gate.identity_headers(&admitted, &backend.route);
                let user = match record {
                    Some(record) => {
                        record.user = admitted.user.clone();
                        admitted.user
                    }
                    None => admitted.user,
                };
                (identity, user)
            }
            Err(refusal) => {
                stats.count_status(refusal.status());
                return Ok(match &self.shared.portal {
                    Some(portal) => {
                        let scheme = conn.client.scheme;
                        portal
                            .refusal(refusal, caller, &parts, &backend.route, scheme)
                            .await
                    }
                    None => refusal.into_response(caller),
                });
            }
        };

        // Forward.
        let grpc = protocol == Protocol::Grpc || super::affinity::is_grpc(&parts.headers);
        let tls = self.shared.balancer.caller_uses_https(conn.client.scheme);
        let affinity = super::balance::Affinity::take(&backend, &mut parts.headers, tls, grpc);
        // Without a Host (an HTTP/1.0 caller routed by x-yt-taskproxy-id), the job sees the
        // service domain: HTTP/1.1 requires a Host, and redirects then point at the service.
        let host = forward::client_host(&parts)
            .or_else(|| http::HeaderValue::from_str(&backend.route.domain).ok());
        let client_upgrade = if is_upgrade {
            parts.extensions.remove::<OnUpgrade>()
        } else {
            None
        };
        if h2_websocket {
            upgrade::h2_websocket_to_h1(&mut parts);
        } else if is_upgrade {
            upgrade::only_websocket(&mut parts);
        }
        if let Err(e) = forward::prepare_request(
            &mut parts,
            protocol,
            is_upgrade,
            host.as_ref(),
            &conn.client,
            self.shared.limits.underscores_in_headers,
        ) {
            stats.count_status(StatusCode::BAD_REQUEST);
            return Ok(local_answer(
                caller,
                StatusCode::BAD_REQUEST,
                &e.to_string(),
                None,
            ));
        }
        if let Some(id) = identity {
            parts.headers.insert(USER_HEADER, id.user);
            parts.headers.insert(ASSERTION_HEADER, id.assertion);
        }
        // A stale pooled connection or a failure after sending replays an idempotent request
        // without a body: its head is kept for that.
        let replayable =
            !is_upgrade && body.is_end_stream() && lifecycle::idempotent(&parts.method);
        let replay = replayable.then(|| Replay {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
        });
        // Bodiless requests from HTTP/2 callers to plain HTTP/1.1 jobs go over the relay's raw
        // job connections instead of hyper's client (see `relay::streams`).
        let raw = self.shared.limits.raw_job_streams
            && protocol == Protocol::Http
            && version == Version::HTTP_2
            && !is_upgrade
            && body.is_end_stream();
        let raw_request = raw.then(|| {
            let mut out = Vec::with_capacity(512);
            streams::write_request(&parts, &mut out);
            (out, parts.method == Method::HEAD)
        });
        let (body, upload): (ProxyBody, _) = if body.is_end_stream() {
            (empty_body(), None)
        } else {
            let clock = UploadClock::new();
            let body = Progress {
                inner: body,
                clock: clock.clone(),
            };
            (body.boxed(), Some(clock))
        };
        let req = Request::from_parts(parts, body);

        // `-route-timeout-seconds` or the operation's `route_timeout_seconds`: the whole response
        // must be passed on by this deadline; the stream idle timeout cuts a body that stalls.
        let limits = &self.shared.limits;
        let timeouts = backend.route.timeouts;
        let route_timeout = timeouts.route_timeout(limits.route_timeout);
        let route_deadline = route_timeout
            .filter(|_| !is_upgrade)
            .map(|t| tokio::time::Instant::now() + t);
        let stream_idle = timeouts.stream_idle_timeout(limits.stream_idle_timeout);
        let policy = RetryPolicy::new(replayable, &timeouts, limits);
        let mut timer = LazyTimer::after(policy.attempt_timeout);
        let forwarded = match raw_request {
            Some((request, is_head)) => {
                let mut attempt =
                    streams::attempt(&self.upstreams, &request, limits.max_header_bytes, is_head);
                let forwarded = lifecycle::forward(
                    &self.shared.balancer,
                    &backend,
                    &mut attempt,
                    &policy,
                    &mut timer,
                    affinity.preferred,
                )
                .await;
                forwarded.and_then(|((conn, head), in_flight)| {
                    match streams::into_response(conn, head, &self.upstreams) {
                        Ok(response) => Ok((response.map(JobBody::Raw), in_flight)),
                        Err(bad) => Err(Failure::Job(bad.to_string())),
                    }
                })
            }
            None => {
                let mut attempt = HyperAttempt {
                    upstreams: &self.upstreams,
                    protocol,
                    upgrade: is_upgrade,
                    req: Some(req),
                    replay,
                    upload,
                };
                lifecycle::forward(
                    &self.shared.balancer,
                    &backend,
                    &mut attempt,
                    &policy,
                    &mut timer,
                    affinity.preferred,
                )
                .await
                .map(|(response, in_flight)| (response.map(JobBody::Hyper), in_flight))
            }
        };
        let (response, in_flight) = match forwarded {
            Ok(ok) => ok,
            Err(failure) => {
                let (status, message) = failure_answer(failure, &backend.route.key);
                tracing::debug!(service = %backend.route.key, %status, %message, "local answer");
                stats.count_status(status);
                let mut answer = local_answer(caller, status, &message, None);
                add_retry_after(answer.headers_mut(), status);
                if closes_connection(status) {
                    // The rest of a broken HTTP/1 stream cannot be trusted.
                    close_http1(&mut answer, version);
                }
                return Ok(answer);
            }
        };

        let (mut rparts, rbody) = response.into_parts();
        stats.count_status(rparts.status);
        if rparts.status == StatusCode::SWITCHING_PROTOCOLS {
            // A tunnel only for the WebSocket upgrade the gate admitted and the job accepted: a
            // job switching on its own (to h2c, say) must not get a raw pipe to the caller.
            let ours = is_upgrade && upgrade::is_websocket_switch(&rparts);
            match (
                ours,
                client_upgrade,
                rparts.extensions.remove::<OnUpgrade>(),
            ) {
                (true, Some(client), Some(upstream)) => {
                    let context = TunnelContext {
                        metrics: self.shared.metrics.clone(),
                        // The operation's stream idle timeout replaces the flag's.
                        idle_timeout: overridden(
                            timeouts.stream_idle_timeout_seconds,
                            limits.tunnel_idle_timeout,
                        ),
                        slot: conn.slot.clone(),
                        session: self.session(user.as_deref(), &backend, SessionKind::Tunnel),
                    };
                    upgrade::spawn_tunnel(client, upstream, context);
                    switch.tunnel();
                }
                (ours, ..) => {
                    let message = if ours {
                        "the upgrade could not be completed"
                    } else {
                        "the job switched protocols without being asked to"
                    };
                    // The job's 101 is already counted for the service (one count a request).
                    tracing::debug!(service = %backend.route.key, message, "local answer");
                    return Ok(local_answer(caller, StatusCode::BAD_GATEWAY, message, None));
                }
            }
        }
        let set_affinity = affinity.set_cookie(&backend, in_flight.endpoint());
        let cookies = CookiePolicy {
            service_host: &backend.route.domain,
            auth_cookie: self.shared.gate.cookie_name(),
            add: set_affinity.as_ref(),
        };
        let dropped = forward::prepare_response(
            &mut rparts,
            is_upgrade,
            &backend,
            host.as_ref(),
            &conn.client,
            &cookies,
        );
        self.shared.metrics.count_set_cookies_dropped(dropped);

        if h2_websocket && rparts.status == StatusCode::SWITCHING_PROTOCOLS {
            upgrade::h1_switch_to_h2_ok(&mut rparts);
            drop(rbody);
            let body = Guarded {
                inner: Empty::<Bytes>::new(),
                _guards: (active, in_flight),
            }
            .boxed();
            return Ok(Response::from_parts(rparts, body));
        }
        let body = Guarded {
            inner: rbody,
            _guards: (active, in_flight),
        };
        let body_idle = stream_idle.filter(|_| !is_upgrade);
        let body = match (route_deadline, body_idle) {
            (None, None) => body.boxed(),
            (deadline, idle) => Timed::new(body, deadline, idle).boxed(),
        };
        // A body still streaming is a live session until it ends (registered once it proves
        // long).
        let body = match &self.shared.sessions {
            Some(registry) if !body.is_end_stream() => Revocable::new(
                body,
                registry.clone(),
                user,
                &backend.route,
                SessionKind::Stream,
                protocol == Protocol::Grpc,
            )
            .boxed(),
            _ => body,
        };
        Ok(Response::from_parts(rparts, body))
    }

    /// Registers a live session of `user` to `backend`'s service (None: the re-checker is off).
    fn session(
        &self,
        user: Option<&str>,
        backend: &ServiceBackends,
        kind: SessionKind,
    ) -> Option<Session> {
        let sessions = self.shared.sessions.as_ref()?;
        Some(sessions.register(SessionInfo::new(user, &backend.route, kind)))
    }

    /// The identity signer's public keys, when `req` asks the base domain or a portal host
    /// for them (with the portal off too: jobs verify whether browsers log in or not).
    fn jwks(&self, req: &Request<Incoming>) -> Option<Response<ProxyBody>> {
        if req.uri().path() != JWKS_PATH || !matches!(*req.method(), Method::GET | Method::HEAD) {
            return None;
        }
        let signer = self.shared.gate.identity()?;
        let host = match req.uri().authority() {
            Some(a) => a.host(),
            None => req.headers().get(http::header::HOST)?.to_str().ok()?,
        };
        let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
        let base = self.shared.table.current();
        let ours = name.eq_ignore_ascii_case(base.base_domain())
            || self
                .shared
                .portal
                .as_ref()
                .is_some_and(|p| p.owns(Some(host), &RoutingHeaders::default()));
        ours.then(|| signer.jwks_response())
    }
}

/// A job's response body on hyper's path: from hyper's client, or read from a raw
/// connection ([`streams`]).
// The raw body holds its connection inline: the enum ends up in the one allocation of the
// boxed response body either way, and a box of its own would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum JobBody {
    Hyper(Incoming),
    Raw(RawBody),
}

impl Body for JobBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            JobBody::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            JobBody::Raw(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            JobBody::Hyper(body) => body.is_end_stream(),
            JobBody::Raw(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            JobBody::Hyper(body) => body.size_hint(),
            JobBody::Raw(body) => body.size_hint(),
        }
    }
}

/// A connection to a job on hyper's path.
enum HyperConn {
    Http1(http1::SendRequest<ProxyBody>),
    Http2(http2::SendRequest<ProxyBody>),
}

impl From<TlsSender> for HyperConn {
    fn from(sender: TlsSender) -> HyperConn {
        match sender {
            TlsSender::Http1(s) => HyperConn::Http1(s),
            TlsSender::Http2(s) => HyperConn::Http2(s),
        }
    }
}

/// Hyper's attempt: the request as an `http::Request` with a streamed body, sent on a pooled
/// or new hyper connection (HTTP/1.1 for `http` services, HTTP/2 for `grpc`, either over TLS
/// for `https`, as the job picked).
struct HyperAttempt<'a> {
    upstreams: &'a JobConnector,
    protocol: Protocol,
    upgrade: bool,
    /// The request to send next (None once sent, until rewound).
    req: Option<Request<ProxyBody>>,
    replay: Option<Replay>,
    upload: Option<Arc<UploadClock>>,
}

impl HyperAttempt<'_> {
    fn failed(
        &mut self,
        mut error: TrySendError<Request<ProxyBody>>,
    ) -> Sent<Response<Incoming>, hyper::Error> {
        if let Some(unsent) = error.take_message() {
            self.req = Some(unsent);
            return Sent::Unsent(error.into_error().to_string());
        }
        let error = error.into_error();
        if error.is_incomplete_message() {
            Sent::Unanswered(error)
        } else {
            Sent::Failed(error)
        }
    }
}

impl Transport for HyperAttempt<'_> {
    type Conn = HyperConn;
    type Response = Response<Incoming>;
    type Error = hyper::Error;

    fn pooled(&mut self, ep: &Arc<EndpointState>) -> Option<HyperConn> {
        match self.protocol {
            // An upgrade gets a connection of its own (a tunnel takes it over).
            Protocol::Http | Protocol::Https if self.upgrade => None,
            Protocol::Http => self.upstreams.http1_pooled(ep, false).map(HyperConn::Http1),
            Protocol::Grpc => self.upstreams.http2_pooled(ep, false).map(HyperConn::Http2),
            Protocol::Https => self.upstreams.tls_pooled(ep).map(HyperConn::from),
        }
    }

    async fn connect(
        &mut self,
        ep: &Arc<EndpointState>,
        permit: ConnPermit,
    ) -> Result<HyperConn, ConnectError> {
        // Boxed, as the relay's: connecting is rare, and its future (a TLS handshake among
        // them) is many KiB that every request's future would otherwise carry and copy.
        Box::pin(async move {
            match self.protocol {
                Protocol::Http => self
                    .upstreams
                    .http1_connect(ep, self.upgrade, permit)
                    .await
                    .map(HyperConn::Http1),
                Protocol::Grpc => self
                    .upstreams
                    .http2_connect(ep, permit)
                    .await
                    .map(HyperConn::Http2),
                Protocol::Https => self
                    .upstreams
                    .tls_connect(ep, self.upgrade, permit)
                    .await
                    .map(HyperConn::from),
            }
        })
        .await
    }

    async fn send(
        &mut self,
        conn: HyperConn,
        ep: &Arc<EndpointState>,
    ) -> Sent<Response<Incoming>, hyper::Error> {
        let Some(mut req) = self.req.take() else {
            // Not reached: the lifecycle sends again only after a rewind or an unsent attempt.
            return Sent::Refused("the request is no longer available".into());
        };
        if self.protocol == Protocol::Https {
            let h2 = matches!(conn, HyperConn::Http2(_));
            if let Err(e) = forward::fit_version(&mut req, h2) {
                return Sent::Refused(e.to_string());
            }
        }
        match conn {
            HyperConn::Http1(mut sender) => match sender.try_send_request(req).await {
                Ok(response) => {
                    // Ambiguous framing: the connection is not pooled (dropping the sender and
                    // the body closes it) and the caller gets 502.
                    if let Err(conflict) = headers::check_response_framing(response.headers()) {
                        return Sent::Refused(conflict.to_string());
                    }
                    if !self.upgrade {
                        let tls = self.protocol == Protocol::Https;
                        self.upstreams.http1_release(ep.clone(), sender, tls);
                    }
                    Sent::Answered(response)
                }
                Err(error) => self.failed(error),
            },
            HyperConn::Http2(mut sender) => {
                if let Err(error) = sender.ready().await {
                    self.req = Some(req);
                    return Sent::Unsent(error.to_string());
                }
                match sender.try_send_request(req).await {
                    Ok(response) => Sent::Answered(response),
                    Err(error) => self.failed(error),
                }
            }
        }
    }

    fn rewind(&mut self) -> bool {
        match &self.replay {
            Some(replay) => {
                self.req = Some(replay.request());
                true
            }
            None => false,
        }
    }

    fn upload(&self) -> Option<Arc<UploadClock>> {
        self.upload.clone()
    }
}

/// The caller's request body on its way to the job, marking the upload's progress for the
/// attempt timeout (see [`lifecycle`]).
struct Progress {
    inner: Incoming,
    clock: Arc<UploadClock>,
}

impl Body for Progress {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if polled.is_ready() {
            self.clock.moved();
        }
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A body fed frame by frame through a channel.
    fn channel_body() -> (
        tokio::sync::mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
        ProxyBody,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        (tx, http_body_util::StreamBody::new(stream).boxed())
    }

    fn data(text: &'static str) -> Result<Frame<Bytes>, BoxError> {
        Ok(Frame::data(Bytes::from_static(text.as_bytes())))
    }

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn idle_timer_restarts_at_every_frame_and_cuts_a_stall() {
        let (tx, body) = channel_body();
        let mut body = Timed::new(body, None, Some(MS * 300));
        let started = tokio::time::Instant::now();
        // A frame every 150 ms for 600 ms: never idle for 300 ms; then a stall (the sender is
        // kept open).
        let feeder = tokio::spawn(async move {
            for _ in 0..4 {
                tokio::time::sleep(MS * 150).await;
                tx.send(data("x")).await.unwrap();
            }
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        for _ in 0..4 {
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), "x");
        }
        let error = body.frame().await.unwrap().unwrap_err();
        assert!(error.to_string().contains("idle"), "{error}");
        let took = started.elapsed();
        assert!(took >= MS * 900 && took < MS * 1500, "{took:?}");
        feeder.abort();
    }

    #[tokio::test]
    async fn the_route_deadline_cuts_a_busy_stream() {
        let (tx, body) = channel_body();
        let started = tokio::time::Instant::now();
        let mut body = Timed::new(body, Some(started + MS * 500), Some(MS * 300));
        let feeder = tokio::spawn(async move {
            loop {
                tokio::time::sleep(MS * 100).await;
                if tx.send(data("x")).await.is_err() {
                    return;
                }
            }
        });
        let mut frames = 0;
        let error = loop {
            match body.frame().await.unwrap() {
                Ok(_) => frames += 1,
                Err(e) => break e,
            }
        };
        assert!(error.to_string().contains("route timeout"), "{error}");
        assert!((3..=5).contains(&frames), "{frames}");
        let took = started.elapsed();
        assert!(took >= MS * 500 && took < MS * 900, "{took:?}");
        feeder.abort();
    }
}
