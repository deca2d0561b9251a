//! The HTTP/1.1 relay: the fast path for plain HTTP/1.1 connections to `http` services.
//!
//! One task owns the caller's connection and, for the length of an exchange, a pooled
//! connection to the job. A request head is parsed in place (`httparse`), routed, admitted and
//! written to the job with its body; the job's head is parsed the same way and written back
//! rewritten, and the body bytes are passed on as they arrive (chunked bodies unchanged, only
//! followed to find their end). Nothing is converted into `http` types on this path, no task
//! or channel sits between the two sockets, and an idle keep-alive connection holds no buffer:
//! it waits for readiness with an empty buffer, so 10,000 idle callers cost little memory.
//!
//! Written by hand because hyper, which serves everything else, turns each message into
//! `http::Request`/`Response` values, runs every client connection to a job as a separate task
//! behind channels, and keeps 16 KiB of buffers per connection for its whole life; a proxy
//! that passes bytes on needs none of that.
//!
//! The relay only takes what it handles completely: HTTP/1.1 requests in origin form with one
//! Host, no body or a `Content-Length` body of at most [`MAX_BUFFERED_REQUEST`] bytes, and no
//! `Upgrade`, `Expect`, `Transfer-Encoding` or `Connection` header naming other headers, for
//! services with the `http` protocol and no per-operation timeouts. At the first request it
//! does not take, the connection with the bytes read so far is handed to the general path
//! (the framing guard and hyper), which serves it from then on; so every unusual request gets exactly the general path's
//! behaviour. Forwarding follows the same rules as the general path: hop-by-hop headers
//! dropped, credentials removed, forwarding headers, names with `_` and jobs' `Set-Cookie` lines
//! treated by the shared policy ([`super::headers`]), `Location` rewritten, and attempts run
//! by the lifecycle both paths share ([`super::lifecycle`]: connect failures retried on other
//! endpoints, bodiless idempotent requests replayed once, the same response timeout).

pub mod streams;
mod upstream;

use upstream::ExchangeError;
pub use upstream::RawConn;

use super::access_log::AccessRecord;
use super::balance::ServiceBackends;
use super::conn_limit::ConnPermit;
use super::endpoint::{EndpointState, InFlight};
use super::failure::{
    add_retry_after, closes_connection, failure_answer, unroutable_answer, Failure, Unroutable,
};
use super::headers::CookiePolicy;
use super::http1::head::{self, BadResponse, Framing, ParsedRequest, RequestHead, ResponseHead};
use super::http1::hop_by_hop::Kind;
use super::lifecycle::{self, LazyTimer, RetryPolicy, Sent};
use super::sessions::{self, Session, SessionInfo, SessionKind};
use super::shared::Shared;
use super::upstream::{ConnectError, JobConnector};
use crate::answer::{CallerKind, LocalAnswer};
use crate::auth::identity::{ASSERTION_HEADER, USER_HEADER};
use crate::auth::Fetch;
use crate::portal::Portal;
use crate::proxy::metrics::Unrouted;
use crate::routing::{Protocol, RoutingHeaders};
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Requests (head and body) up to this size are relayed; larger ones take the general path,
/// which streams bodies.
pub const MAX_BUFFERED_REQUEST: usize = 64 * 1024;

/// Read buffers grow by this much.
const READ_CHUNK: usize = 8 * 1024;
/// Response bodies are copied through a buffer of this size.
const BODY_CHUNK: usize = 32 * 1024;

/// How a relayed connection ended.
pub enum Ended {
    /// Closed (by either side, a timeout or the drain).
    Closed,
    /// A request the relay does not take: the general path continues the connection from the
    /// start of that request.
    HandToHyper(Prefixed<TcpStream>),
}

/// One worker's relay.
#[derive(Debug)]
pub struct Relay {
    shared: Arc<Shared>,
    upstreams: JobConnector,
    /// Buffers of connections that are idle, lent to connections that have a request.
    spare: Mutex<Vec<Scratch>>,
}

/// Most spare buffer sets a worker keeps.
const MAX_SPARE: usize = 128;

/// The buffers a connection needs while it has a request: what it read, what it writes, and
/// the parsed header index.
#[derive(Debug)]
struct Scratch {
    inbound: BytesMut,
    out: Vec<u8>,
    headers: Vec<head::Header>,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            inbound: BytesMut::with_capacity(READ_CHUNK),
            out: Vec::with_capacity(READ_CHUNK / 2),
            headers: Vec::with_capacity(16),
        }
    }
}

/// What one exchange left the caller's connection in.
enum Next {
    KeepAlive,
    Close,
    /// Hand the connection, from the start of this request, to the general path.
    HandToHyper,
}

/// A job's answer to a forwarded request, ready to be passed on.
struct Answered {
    conn: RawConn,
    head: ResponseHead,
    _in_flight: InFlight,
}

impl Relay {
    pub fn new(shared: Arc<Shared>, upstreams: JobConnector) -> Relay {
        Relay {
            shared,
            upstreams,
            spare: Mutex::new(Vec::new()),
        }
    }

    fn take_scratch(&self) -> Scratch {
        let spare = self.spare.lock().ok().and_then(|mut spare| spare.pop());
        spare.unwrap_or_else(Scratch::new)
    }

    fn return_scratch(&self, mut scratch: Scratch) {
        if scratch.inbound.capacity() > MAX_BUFFERED_REQUEST * 2
            || scratch.out.capacity() > BODY_CHUNK
        {
            return;
        }
        scratch.inbound.clear();
        // Reclaims the space before the consumed bytes (the buffer is empty and unshared).
        scratch.inbound.reserve(READ_CHUNK);
        scratch.out.clear();
        if let Ok(mut spare) = self.spare.lock() {
            if spare.len() < MAX_SPARE {
                spare.push(scratch);
            }
        }
    }

    /// Serves a plain connection until it ends or needs the general path.
    pub async fn serve(&self, mut stream: TcpStream, peer: SocketAddr) -> Ended {
        let limits = &self.shared.limits;
        let peer_ip = peer.ip().to_canonical().to_string();
        let now = tokio::time::Instant::now();
        let mut idle = LazyTimer::new(now + limits.idle_timeout);
        let mut response_timer = LazyTimer::new(now + limits.upstream_response_timeout);
        let mut scratch: Option<Scratch> = None;
        loop {
            let idle_now = match &scratch {
                Some(s) => s.inbound.is_empty(),
                None => true,
            };
            if idle_now {
                // Idle: wait for the next request without holding buffers, and take them only
                // once bytes arrived (readiness alone can be spurious).
                if let Some(s) = scratch.take() {
                    self.return_scratch(s);
                }
                loop {
                    tokio::select! {
                        biased;
                        ready = stream.readable() => if ready.is_err() { return Ended::Closed },
                        _ = self.shared.shutdown.cancelled() => return Ended::Closed,
                        _ = idle.expired() => return Ended::Closed,
                    }
                    let mut fresh = self.take_scratch();
                    match stream.try_read_buf(&mut fresh.inbound) {
                        Ok(0) => return Ended::Closed,
                        Ok(_) => {
                            scratch = Some(fresh);
                            break;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            self.return_scratch(fresh)
                        }
                        Err(_) => return Ended::Closed,
                    }
                }
            }
            let Scratch {
                inbound,
                out,
                headers,
            } = scratch.get_or_insert_with(|| self.take_scratch());
            let now = tokio::time::Instant::now();
            let deadline = now + limits.header_read_timeout;
            let head = loop {
                if !inbound.is_empty() {
                    let vec = std::mem::take(headers);
                    match head::parse_request(inbound, limits.max_header_bytes, vec) {
                        ParsedRequest::Partial => {}
                        ParsedRequest::HandToHyper => {
                            return Ended::HandToHyper(Prefixed::new(
                                std::mem::take(inbound),
                                stream,
                            ))
                        }
                        ParsedRequest::Head(head) => break head,
                    }
                }
                if !read_more(&mut stream, inbound, deadline).await {
                    return Ended::Closed;
                }
            };
            let Some(total) = usize::try_from(head.body_len)
                .ok()
                .and_then(|body| body.checked_add(head.len))
                .filter(|total| *total <= MAX_BUFFERED_REQUEST)
            else {
                return Ended::HandToHyper(Prefixed::new(std::mem::take(inbound), stream));
            };
            if inbound.len() < total {
                // The rest of a small body: the header deadline no longer applies, the idle
                // timeout does (as for a body the general path streams).
                let deadline = tokio::time::Instant::now() + limits.idle_timeout;
                while inbound.len() < total {
                    if !read_more(&mut stream, inbound, deadline).await {
                        return Ended::Closed;
                    }
                }
            }
            let next = self
                .exchange(
                    &inbound[..total],
                    &head,
                    &mut stream,
                    (peer.ip(), &peer_ip),
                    out,
                    &mut response_timer,
                )
                .await;
            *headers = head.into_headers();
            match next {
                Next::KeepAlive if !self.shared.shutdown.is_cancelled() => {
                    inbound.advance(total);
                    idle.set(tokio::time::Instant::now() + limits.idle_timeout);
                }
                Next::KeepAlive | Next::Close => return Ended::Closed,
                Next::HandToHyper => {
                    return Ended::HandToHyper(Prefixed::new(std::mem::take(inbound), stream))
                }
            }
        }
    }

    /// Routes, admits and forwards one request, and writes the answer.
    async fn exchange(
        &self,
        request: &[u8],
        head: &RequestHead,
        client: &mut TcpStream,
        (peer, peer_ip): (std::net::IpAddr, &str),
        out: &mut Vec<u8>,
        response_timer: &mut LazyTimer,
    ) -> Next {
        let shared = &self.shared;
        let head_bytes = &request[..head.len];
        let target = &head_bytes[head.target.clone()];
        let host = head.values(head_bytes, Kind::Host).next().unwrap_or(b"");
        let mut record = if AccessRecord::enabled() {
            let uri = http::Uri::try_from(target).unwrap_or_default();
            AccessRecord::start(&head.method, &uri)
        } else {
            None
        };

        // Route.
        let routed = lifecycle::route(
            &shared.balancer.routes(),
            &RoutingHeaders::from_pairs(
                head.headers
                    .iter()
                    .filter(|h| h.kind == Kind::TaskProxyId)
                    .map(|h| (&head_bytes[h.name.clone()], &head_bytes[h.value.clone()])),
            ),
            Ok(std::str::from_utf8(host).ok()),
        );
        let backend = match routed {
            Ok(backend) => backend,
            // The portal's host and its pages are served on the general path.
            Err(_) if shared.portal.is_some() => return Next::HandToHyper,
            // So are the identity signer's public keys.
            Err(_) if shared.gate.identity().is_some() && target.starts_with(b"/.well-known/") => {
                return Next::HandToHyper
            }
            Err(unroutable) => {
                shared.metrics.count_unrouted(match unroutable {
                    Unroutable::BadRequest(_) => Unrouted::BadRequest,
                    Unroutable::NoSuchTask(_) => Unrouted::NoSuchTask,
                });
                let (status, message) = unroutable_answer(&unroutable);
                let answer = LocalAnswer::render(caller(head, head_bytes), status, &message, None);
                let close = head.close || closes_connection(status);
                return self
                    .answer(client, head, answer, close, &mut record, out)
                    .await;
            }
        };
        // Services other than plain `http` (gRPC; `https`, whose jobs speak TLS) take the
        // general path, and so do services with per-operation timeouts, which it enforces.
        // Cheaper than a deadline and an idle timer in the relay's copy loop for every
        // exchange: the check is one field of the route, and only the (few) operations that
        // set timeouts pay for hyper. Nothing has been read past this head nor sent yet.
        if backend.route.protocol != Protocol::Http || !backend.route.timeouts.is_default() {
            return Next::HandToHyper;
        }
        if let Some(record) = record.as_mut() {
            record.route = Some(backend.route.clone());
        }

        // Admit.
        let Some(mut credentials) = head.credentials(head_bytes) else {
            return Next::HandToHyper;
        };
        let path = target.split(|b| *b == b'?').next().unwrap_or(target);
        let path = std::str::from_utf8(path).unwrap_or("/");
        if shared.portal.is_some() && Portal::is_session_path(path) {
            return Next::HandToHyper;
        }
        // Heads with Upgrade, Expect, Transfer-Encoding or a Connection naming headers never
        // get here (they take the general path): method and body decide the shape.
        let fetch = if matches!(head.method, Method::GET | Method::HEAD) && head.body_len == 0 {
            Fetch::Plain
        } else {
            Fetch::Other
        };
        let user = match shared
            .gate
            .admit_headers(&mut credentials, path, fetch, &backend.route, peer)
            .await
        {
            Ok(admitted) => {
                if let Some(id) = shared.gate.identity_headers(&admitted, &backend.route) {
                    credentials.insert(USER_HEADER, id.user);
                    credentials.insert(ASSERTION_HEADER, id.assertion);
                }
                match record.as_mut() {
                    Some(record) => {
                        record.user = admitted.user.clone();
                        admitted.user
                    }
                    None => admitted.user,
                }
            }
            Err(_)
                if shared.portal.is_some() && caller(head, head_bytes) == CallerKind::Browser =>
            {
                // The portal's redirect and pages are answered on the general path.
                return Next::HandToHyper;
            }
            Err(refusal) => {
                backend.stats.count_status(refusal.status());
                let (parts, body) = refusal.into_response(caller(head, head_bytes)).into_parts();
                // A fixed body, complete at once.
                let body = match body.collect().await {
                    Ok(collected) => collected.to_bytes(),
                    Err(_) => Bytes::new(),
                };
                let answer = LocalAnswer {
                    status: parts.status,
                    headers: parts.headers,
                    body,
                };
                return self
                    .answer(client, head, answer, head.close, &mut record, out)
                    .await;
            }
        };

        // Forward. The relay is plain HTTP/1.1 (HTTPS only behind an ingress), never gRPC.
        let https = shared.balancer.caller_uses_https("http");
        let affinity = super::balance::Affinity::take(&backend, &mut credentials, https, false);
        out.clear();
        head.write_for_job(
            head_bytes,
            &credentials,
            peer_ip.as_bytes(),
            "http",
            shared.limits.underscores_in_headers,
            out,
        );
        out.extend_from_slice(&request[head.len..]);
        let policy = RetryPolicy::new(
            head.body_len == 0 && lifecycle::idempotent(&head.method),
            &backend.route.timeouts,
            &shared.limits,
        );
        let mut attempt = RelayAttempt {
            upstreams: &self.upstreams,
            request: out,
            max_head: shared.limits.max_header_bytes,
            is_head: head.method == Method::HEAD,
        };
        let forwarded = lifecycle::forward(
            &shared.balancer,
            &backend,
            &mut attempt,
            &policy,
            response_timer,
            affinity.preferred,
        )
        .await;
        let answered = match forwarded {
            Ok(((conn, head), in_flight)) => Answered {
                conn,
                head,
                _in_flight: in_flight,
            },
            Err(failure) => {
                let (status, message) = failure_answer(failure, &backend.route.key);
                tracing::debug!(service = %backend.route.key, %status, %message, "local answer");
                backend.stats.count_status(status);
                let mut answer =
                    LocalAnswer::render(caller(head, head_bytes), status, &message, None);
                add_retry_after(&mut answer.headers, status);
                let close = head.close || closes_connection(status);
                return self
                    .answer(client, head, answer, close, &mut record, out)
                    .await;
            }
        };
        let Answered {
            mut conn,
            head: mut response,
            _in_flight,
        } = answered;
        let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::BAD_GATEWAY);
        backend.stats.count_status(status);

        let close = head.close
            || matches!(response.framing, Framing::UntilClose)
            || shared.shutdown.is_cancelled();
        out.clear();
        let set_affinity = affinity.set_cookie(&backend, _in_flight.endpoint());
        let cookies = CookiePolicy {
            service_host: &backend.route.domain,
            auth_cookie: shared.gate.cookie_name(),
            add: set_affinity.as_ref(),
        };
        let dropped = response.write_for_caller(
            &conn.buf[..response.len],
            close,
            |location| rewrite_location(&backend, location, host),
            &cookies,
            out,
        );
        shared.metrics.count_set_cookies_dropped(dropped);
        conn.buf.advance(response.len);
        conn.headers = std::mem::take(&mut response.headers);
        // A body that has to wait for the job is a live session until it ends.
        let session = || {
            let sessions = shared.sessions.as_ref()?;
            let info = SessionInfo::new(user.as_deref(), &backend.route, SessionKind::RelayedBody);
            Some(sessions.register(info))
        };
        let relayed = relay_body(&mut conn, client, &mut response.framing, out, session).await;
        let (bytes, completed) = match relayed {
            Ok((bytes, clean)) => {
                if clean && response.reusable {
                    self.upstreams.raw_release(conn);
                }
                (bytes, true)
            }
            Err(bytes) => (bytes, false),
        };
        if let Some(record) = record.take() {
            record.write(status, bytes, completed);
        }
        match (completed, close) {
            (true, false) => Next::KeepAlive,
            _ => Next::Close,
        }
    }

    /// Writes a local answer (and its access-log line).
    async fn answer(
        &self,
        client: &mut TcpStream,
        head: &RequestHead,
        answer: LocalAnswer,
        close: bool,
        record: &mut Option<AccessRecord>,
        out: &mut Vec<u8>,
    ) -> Next {
        out.clear();
        write_local_head(&answer, close, out);
        if head.method != Method::HEAD {
            out.extend_from_slice(&answer.body);
        }
        let written = client.write_all(out).await.is_ok();
        if let Some(record) = record.take() {
            record.write(answer.status, answer.body.len() as u64, written);
        }
        if written && !close {
            Next::KeepAlive
        } else {
            Next::Close
        }
    }
}

/// How the caller wants a local answer rendered, from the head's `Content-Type` and `Accept`.
fn caller(head: &RequestHead, head_bytes: &[u8]) -> CallerKind {
    let values = |name: &'static [u8]| {
        head.headers
            .iter()
            .filter(move |h| head_bytes[h.name.clone()].eq_ignore_ascii_case(name))
            .map(|h| &head_bytes[h.value.clone()])
    };
    CallerKind::from_values(values(b"content-type"), values(b"accept"))
}

/// The relay's attempt: the request's bytes (head rewritten for the job, and the whole body)
/// written on a raw connection, and the job's head read back. Hyper's path sends bodiless
/// requests to `http` jobs with it too ([`streams`]).
pub struct RelayAttempt<'a> {
    upstreams: &'a JobConnector,
    request: &'a [u8],
    max_head: usize,
    is_head: bool,
}

impl lifecycle::Transport for RelayAttempt<'_> {
    type Conn = RawConn;
    type Response = (RawConn, ResponseHead);
    type Error = ExchangeError;

    fn pooled(&mut self, ep: &Arc<EndpointState>) -> Option<RawConn> {
        self.upstreams.raw_pooled(ep)
    }

    async fn connect(
        &mut self,
        ep: &Arc<EndpointState>,
        permit: ConnPermit,
    ) -> Result<RawConn, ConnectError> {
        // Boxed: connecting is rare and its future large.
        Box::pin(self.upstreams.raw_connect(ep, permit)).await
    }

    async fn send(
        &mut self,
        mut conn: RawConn,
        _ep: &Arc<EndpointState>,
    ) -> Sent<(RawConn, ResponseHead), ExchangeError> {
        match conn
            .exchange_head(self.request, self.max_head, self.is_head)
            .await
        {
            Ok(head) => Sent::Answered((conn, head)),
            Err(ExchangeError::Response(BadResponse::Framing(conflict))) => {
                Sent::Refused(conflict.to_string())
            }
            // The job's doing, as a framing conflict: not sent to another job.
            Err(ExchangeError::Response(error @ BadResponse::UnaskedUpgrade)) => {
                Sent::Refused(error.to_string())
            }
            Err(error @ ExchangeError::Unanswered(_)) => Sent::Unanswered(error),
            Err(error) => Sent::Failed(error),
        }
    }

    fn rewind(&mut self) -> bool {
        // The whole request is still in hand.
        true
    }

    fn upload(&self) -> Option<Arc<lifecycle::UploadClock>> {
        None
    }
}

impl From<ExchangeError> for Failure {
    fn from(error: ExchangeError) -> Failure {
        Failure::Job(error.to_string())
    }
}

/// Reads more of the caller's bytes before `deadline`; false at EOF, error or timeout.
async fn read_more(
    stream: &mut TcpStream,
    inbound: &mut BytesMut,
    deadline: tokio::time::Instant,
) -> bool {
    if inbound.capacity() - inbound.len() < READ_CHUNK / 4 {
        inbound.reserve(READ_CHUNK);
    }
    // Usually the socket is readable already: no timer for that.
    match stream.try_read_buf(inbound) {
        Ok(n) => return n > 0,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(_) => return false,
    }
    matches!(
        tokio::time::timeout_at(deadline, stream.read_buf(inbound)).await,
        Ok(Ok(n)) if n > 0
    )
}

fn rewrite_location(
    backend: &ServiceBackends,
    location: &[u8],
    host: &[u8],
) -> Option<HeaderValue> {
    let location = HeaderValue::from_bytes(location).ok()?;
    let host = HeaderValue::from_bytes(host).ok()?;
    super::forward::rewrite_location(&location, backend, &host, "http")
}

/// Passes the response body on after the head in `out`. Ok: bytes of body passed on and
/// whether the job's connection ended exactly at the end of the message. Err: the bytes passed
/// on before either side failed, or before the proxy closed the body's session. The body
/// becomes a live session (`session`, called once) when it first has to wait for the job: a
/// body that came whole with the head costs none.
async fn relay_body(
    conn: &mut RawConn,
    client: &mut TcpStream,
    framing: &mut Framing,
    out: &mut Vec<u8>,
    session: impl FnOnce() -> Option<Session>,
) -> Result<(u64, bool), u64> {
    let mut bytes = 0u64;
    let mut first = true;
    let mut session = Some(session);
    let mut live: Option<Session> = None;
    loop {
        let available = conn.buf.len();
        let (take, done) = match framing {
            Framing::None => (0, true),
            Framing::Length(left) => {
                let take = usize::try_from(*left).unwrap_or(usize::MAX).min(available);
                *left -= take as u64;
                (take, *left == 0)
            }
            Framing::Chunked(tracker) => match tracker.feed(&conn.buf) {
                Ok(take) => (take, tracker.is_done()),
                Err(_) => return Err(bytes),
            },
            Framing::UntilClose => (available, false),
        };
        let write = async {
            if first {
                // The head and what came with it go out in one write.
                first = false;
                out.extend_from_slice(&conn.buf[..take]);
                client.write_all(out).await
            } else {
                client.write_all(&conn.buf[..take]).await
            }
        };
        let written = tokio::select! {
            biased;
            written = write => written,
            _ = sessions::closed(live.as_ref()) => return Err(bytes),
        };
        if written.is_err() {
            return Err(bytes);
        }
        bytes += take as u64;
        conn.buf.advance(take);
        if done {
            return Ok((bytes, conn.buf.is_empty()));
        }
        if conn.buf.capacity() < BODY_CHUNK {
            conn.buf.reserve(BODY_CHUNK);
        }
        if let Some(register) = session.take() {
            live = register();
        }
        let read = tokio::select! {
            biased;
            read = conn.stream.read_buf(&mut conn.buf) => read,
            _ = sessions::closed(live.as_ref()) => return Err(bytes),
        };
        match read {
            Ok(0) if matches!(framing, Framing::UntilClose) => return Ok((bytes, false)),
            Ok(0) | Err(_) => return Err(bytes),
            Ok(_) => {}
        }
    }
}

/// Writes the head of a local answer.
fn write_local_head(answer: &LocalAnswer, close: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(answer.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(answer.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &answer.headers {
        if name == http::header::CONTENT_LENGTH || name == http::header::CONNECTION {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(answer.body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A stream that first yields bytes already read from it: how the general path receives a
/// connection the relay read the start of.
#[derive(Debug)]
pub struct Prefixed<I> {
    prefix: BytesMut,
    inner: I,
}

impl<I> Prefixed<I> {
    pub fn new(prefix: BytesMut, inner: I) -> Prefixed<I> {
        Prefixed { prefix, inner }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                this.prefix = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

super::io::delegate_async_write!(Prefixed);
