//! The live long sessions of the data plane: WebSocket tunnels, and response bodies still
//! streaming (SSE, downloads, gRPC streams) on both forwarding paths. Each one registers here
//! with who opened it, the operation and route it reaches, when it started and a
//! cancellation token its copy loop selects on; the [`Session`] handle removes the entry when
//! the session ends, however it ends.
//!
//! The registry is what lets access be taken back from a session already admitted: the
//! re-checker ([`super::recheck`]) asks it for the distinct (operation, user) pairs of what is
//! open and closes the sessions of a pair with [`LiveSessions::close`], which fires their
//! tokens, writes one log line per session and counts it by reason.
//!
//! Sharded so that workers registering and removing streams at once rarely share a lock; no
//! lock is held while a token fires or a line is written.

use super::metrics::ProxyMetrics;
use crate::answer::BoxError;
use crate::routing::Route;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

const SHARDS: usize = 16;

/// What kind of session an entry is (for the log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// A WebSocket tunnel (HTTP/1.1 upgrade or HTTP/2 extended CONNECT).
    Tunnel,
    /// A response body still streaming on hyper's path (SSE, gRPC stream, download).
    Stream,
    /// A response body still streaming on the HTTP/1.1 relay.
    RelayedBody,
}

impl SessionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Tunnel => "websocket",
            SessionKind::Stream => "stream",
            SessionKind::RelayedBody => "relayed_body",
        }
    }
}

/// Why sessions were closed by the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum CloseReason {
    /// The operation left the routing table (it stopped running).
    OperationEnded = 0,
    /// The cluster says the user may no longer read the operation.
    AccessRevoked = 1,
}

impl CloseReason {
    pub const ALL: [CloseReason; 2] = [CloseReason::OperationEnded, CloseReason::AccessRevoked];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::OperationEnded => "operation_ended",
            CloseReason::AccessRevoked => "access_revoked",
        }
    }

    /// The text of a WebSocket close frame (policy violation, 1008) for this reason.
    pub fn close_text(self) -> &'static str {
        match self {
            CloseReason::OperationEnded => "the operation ended",
            CloseReason::AccessRevoked => "access to the operation was revoked",
        }
    }
}

/// Who opened a session and what it reaches.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// The admitted login (None when auth is off or the request was exempt from it).
    pub user: Option<Arc<str>>,
    /// The service's route (shared with the snapshot it came from: no copy per session).
    pub route: Arc<Route>,
    pub kind: SessionKind,
}

impl SessionInfo {
    /// A session of `user` (None: anonymous) to `route`.
    pub fn new(user: Option<&str>, route: &Arc<Route>, kind: SessionKind) -> SessionInfo {
        SessionInfo {
            user: user.map(Arc::from),
            route: route.clone(),
            kind,
        }
    }

    pub fn operation_id(&self) -> &str {
        &self.route.key.operation_id
    }

    /// Whether this is a session of `user` to `operation_id`.
    pub fn is_of(&self, operation_id: &str, user: &str) -> bool {
        self.operation_id() == operation_id && self.user.as_deref() == Some(user)
    }
}

#[derive(Debug)]
struct Entry {
    info: SessionInfo,
    started: Instant,
    token: CancellationToken,
    /// Set (once) when the proxy closes the session.
    reason: std::sync::OnceLock<CloseReason>,
}

/// The registry of live long sessions.
#[derive(Debug)]
pub struct LiveSessions {
    shards: [Mutex<HashMap<u64, Arc<Entry>>>; SHARDS],
    next_id: AtomicU64,
    metrics: Arc<ProxyMetrics>,
}

/// A registered session: its token ends the copy loop; dropping it removes the entry.
#[derive(Debug)]
pub struct Session {
    registry: Arc<LiveSessions>,
    id: u64,
    entry: Arc<Entry>,
}

impl Session {
    /// Fired when the proxy closes the session.
    pub fn token(&self) -> &CancellationToken {
        &self.entry.token
    }

    /// Why the proxy closed the session, once it did.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.entry.reason.get().copied()
    }
}

/// Resolves when the proxy closes `session`; never without one.
pub async fn closed(session: Option<&Session>) {
    match session {
        Some(session) => session.token().cancelled().await,
        None => std::future::pending().await,
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

impl LiveSessions {
    /// An empty registry counting into `metrics` (live gauge, closes by reason).
    pub fn new(metrics: Arc<ProxyMetrics>) -> Arc<LiveSessions> {
        Arc::new(LiveSessions {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            next_id: AtomicU64::new(0),
            metrics,
        })
    }

    fn shard(&self, id: u64) -> MutexGuard<'_, HashMap<u64, Arc<Entry>>> {
        // A panic while holding a shard cannot leave a map half-updated: take it anyway.
        self.shards[(id % SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a session; it stays until the returned handle is dropped.
    pub fn register(self: &Arc<Self>, info: SessionInfo) -> Session {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Entry {
            info,
            started: Instant::now(),
            token: CancellationToken::new(),
            reason: std::sync::OnceLock::new(),
        });
        self.shard(id).insert(id, entry.clone());
        self.metrics.sessions_live.fetch_add(1, Ordering::Relaxed);
        Session {
            registry: self.clone(),
            id,
            entry,
        }
    }

    fn remove(&self, id: u64) -> Option<Arc<Entry>> {
        let removed = self.shard(id).remove(&id);
        if removed.is_some() {
            self.metrics.sessions_live.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Sessions open now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The distinct (operation, user) pairs of the sessions open now.
    pub fn pairs(&self) -> HashSet<(String, Option<Arc<str>>)> {
        let mut pairs = HashSet::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for entry in shard.values() {
                pairs.insert((
                    entry.info.operation_id().to_string(),
                    entry.info.user.clone(),
                ));
            }
        }
        pairs
    }

    /// Closes every open session `matches` selects, for `reason`: fires its token, logs it
    /// and counts it. Returns how many were closed.
    pub fn close(&self, reason: CloseReason, matches: impl Fn(&SessionInfo) -> bool) -> usize {
        let mut closing = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            closing.extend(
                shard
                    .iter()
                    .filter(|(_, entry)| matches(&entry.info))
                    .map(|(id, _)| *id),
            );
        }
        let mut closed = 0;
        for id in closing {
            // Gone from the registry at once, so the next pass does not close it again; its
            // handle's drop then finds nothing to remove.
            let Some(entry) = self.remove(id) else {
                continue;
            };
            let _ = entry.reason.set(reason);
            entry.token.cancel();
            closed += 1;
            self.metrics.sessions_closed[reason as usize].fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                user = entry.info.user.as_deref().unwrap_or("-"),
                operation = %entry.info.operation_id(),
                route = %entry.info.route.key,
                kind = entry.info.kind.as_str(),
                reason = reason.as_str(),
                age_ms = u64::try_from(entry.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                "session closed"
            );
        }
        closed
    }
}

/// A response body that is a live session: it ends when the proxy closes the session. An
/// HTTP/1 caller then sees its connection closed mid-body, an HTTP/2 caller its stream reset;
/// a gRPC caller gets trailers with a status instead (`PERMISSION_DENIED` when access was
/// revoked, `UNAVAILABLE` when the operation ended), so its client reports why.
///
/// The body registers itself only once it proves long: the first time the job's body makes it
/// wait, or after [`FRAMES_BEFORE_REGISTERING`] frames (a download the caller's flow control
/// holds back never makes it wait). A short answer, which is nearly every request and every
/// unary gRPC call, ends before either and costs no registration, lock or token.
pub struct Revocable<B> {
    inner: B,
    watch: Watch,
    grpc: bool,
    ended: bool,
}

/// Frames a body may send before it counts as a live session even without waiting: a unary
/// gRPC answer is two (message and trailers).
pub const FRAMES_BEFORE_REGISTERING: u8 = 3;

enum Watch {
    /// Not registered yet.
    Deferred {
        registry: Arc<LiveSessions>,
        user: Option<String>,
        route: Arc<Route>,
        kind: SessionKind,
        frames: u8,
    },
    /// Registered: the token fires when the proxy closes it.
    Live {
        session: Session,
        cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    },
    /// Only while moving from one state to the other.
    Moving,
}

impl<B> Revocable<B> {
    /// `inner`, registered in `registry` as a session of `user` to `route` once it proves
    /// long.
    pub fn new(
        inner: B,
        registry: Arc<LiveSessions>,
        user: Option<String>,
        route: &Arc<Route>,
        kind: SessionKind,
        grpc: bool,
    ) -> Revocable<B> {
        Revocable {
            inner,
            watch: Watch::Deferred {
                registry,
                user,
                route: route.clone(),
                kind,
                frames: 0,
            },
            grpc,
            ended: false,
        }
    }

    /// Whether the body is registered as a live session.
    pub fn is_registered(&self) -> bool {
        matches!(self.watch, Watch::Live { .. })
    }

    fn register(&mut self) {
        if let Watch::Deferred {
            registry,
            user,
            route,
            kind,
            ..
        } = std::mem::replace(&mut self.watch, Watch::Moving)
        {
            let session = registry.register(SessionInfo {
                user: user.map(Arc::from),
                route,
                kind,
            });
            let cancelled = Box::pin(session.token().clone().cancelled_owned());
            self.watch = Watch::Live { session, cancelled };
        }
    }

    /// The frame that ends the body because the proxy closed its session.
    fn closed(&mut self, reason: CloseReason) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.ended = true;
        if self.grpc {
            return Poll::Ready(Some(Ok(Frame::trailers(grpc_trailers(reason)))));
        }
        Poll::Ready(Some(Err(format!(
            "the proxy closed the stream: {}",
            reason.close_text()
        )
        .into())))
    }
}

/// The trailers a gRPC caller gets when the proxy ends its stream for `reason`.
fn grpc_trailers(reason: CloseReason) -> http::HeaderMap {
    let status = match reason {
        CloseReason::AccessRevoked => "7",
        CloseReason::OperationEnded => "14",
    };
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static(status));
    trailers.insert(
        "grpc-message",
        http::HeaderValue::from_static(match reason {
            CloseReason::AccessRevoked => "access%20to%20the%20operation%20was%20revoked",
            CloseReason::OperationEnded => "the%20operation%20ended",
        }),
    );
    trailers
}

impl<B> Body for Revocable<B>
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
        if this.ended {
            return Poll::Ready(None);
        }
        if let Watch::Live { session, cancelled } = &mut this.watch {
            if cancelled.as_mut().poll(cx).is_ready() {
                let reason = session.close_reason().unwrap_or(CloseReason::AccessRevoked);
                return this.closed(reason);
            }
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let long = match (&mut this.watch, &polled) {
            (Watch::Deferred { .. }, Poll::Pending) => true,
            (Watch::Deferred { frames, .. }, Poll::Ready(Some(Ok(_)))) => {
                *frames += 1;
                *frames >= FRAMES_BEFORE_REGISTERING
            }
            _ => false,
        };
        if long {
            this.register();
            // Poll the token once so that its firing wakes this body (a frame in hand is
            // still delivered; the next poll ends the body).
            if let Watch::Live { session, cancelled } = &mut this.watch {
                if cancelled.as_mut().poll(cx).is_ready() && polled.is_pending() {
                    let reason = session.close_reason().unwrap_or(CloseReason::AccessRevoked);
                    return this.closed(reason);
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(user: Option<&str>, op: &str) -> SessionInfo {
        let spec = crate::routing::ServiceSpec {
            operation_id: op.into(),
            task_name: "main".into(),
            service: "web".into(),
            protocol: crate::routing::Protocol::Http,
            endpoints: vec![],
            operation_start_time: None,
            timeouts: Default::default(),
            sticky: None,
        };
        let snapshot = crate::routing::RoutingSnapshot::build("tp.test", [spec]);
        SessionInfo::new(user, &snapshot.routes()[0], SessionKind::Stream)
    }

    #[test]
    fn a_session_leaves_the_registry_when_its_handle_drops() {
        let metrics = Arc::new(ProxyMetrics::default());
        let registry = LiveSessions::new(metrics.clone());
        let sessions: Vec<Session> = (0..100)
            .map(|i| registry.register(info(Some("alice"), &format!("op-{}", i % 3))))
            .collect();
        assert_eq!(registry.len(), 100);
        assert_eq!(metrics.sessions_live.load(Ordering::Relaxed), 100);
        assert_eq!(registry.pairs().len(), 3);
        drop(sessions);
        assert!(registry.is_empty());
        assert!(registry.pairs().is_empty());
        assert_eq!(metrics.sessions_live.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn close_fires_only_the_matching_sessions_once_and_counts_them() {
        let metrics = Arc::new(ProxyMetrics::default());
        let registry = LiveSessions::new(metrics.clone());
        let bob = registry.register(info(Some("bob"), "op-1"));
        let bob_elsewhere = registry.register(info(Some("bob"), "op-2"));
        let alice = registry.register(info(Some("alice"), "op-1"));
        let anonymous = registry.register(info(None, "op-1"));
        let revoked = |i: &SessionInfo| i.is_of("op-1", "bob");
        assert_eq!(registry.close(CloseReason::AccessRevoked, revoked), 1);
        assert!(bob.token().is_cancelled());
        assert_eq!(bob.close_reason(), Some(CloseReason::AccessRevoked));
        for open in [&bob_elsewhere, &alice, &anonymous] {
            assert!(!open.token().is_cancelled());
            assert_eq!(open.close_reason(), None);
        }
        // Closed sessions are out of the registry: a second pass closes nothing.
        assert_eq!(registry.close(CloseReason::AccessRevoked, revoked), 0);
        assert_eq!(registry.len(), 3);
        let ended = |i: &SessionInfo| i.operation_id() == "op-1";
        assert_eq!(registry.close(CloseReason::OperationEnded, ended), 2);
        assert_eq!(
            metrics
                .sessions_closed
                .each_ref()
                .map(|c| c.load(Ordering::Relaxed)),
            [2, 1]
        );
        drop((bob, alice, anonymous));
        assert_eq!(registry.len(), 1);
        drop(bob_elsewhere);
        assert!(registry.is_empty());
        assert_eq!(metrics.sessions_live.load(Ordering::Relaxed), 0);
    }

    /// A body that plays a script: each step is a frame or "not yet".
    struct Script(std::collections::VecDeque<Option<&'static str>>);

    impl Body for Script {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            match self.0.pop_front() {
                None => Poll::Ready(None),
                Some(Some(data)) => {
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(data.as_bytes())))))
                }
                Some(None) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            }
        }
    }

    fn revocable(
        registry: &Arc<LiveSessions>,
        steps: &[Option<&'static str>],
        grpc: bool,
    ) -> Revocable<Script> {
        let route = info(Some("bob"), "op-1").route;
        Revocable::new(
            Script(steps.iter().copied().collect()),
            registry.clone(),
            Some("bob".into()),
            &route,
            SessionKind::Stream,
            grpc,
        )
    }

    fn poll(body: &mut Revocable<Script>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let waker = std::task::Waker::noop();
        Pin::new(body).poll_frame(&mut Context::from_waker(waker))
    }

    #[test]
    fn a_short_answer_never_registers() {
        let registry = LiveSessions::new(Arc::new(ProxyMetrics::default()));
        let mut body = revocable(&registry, &[Some("message"), Some("end")], true);
        assert!(matches!(poll(&mut body), Poll::Ready(Some(Ok(_)))));
        assert!(matches!(poll(&mut body), Poll::Ready(Some(Ok(_)))));
        assert!(matches!(poll(&mut body), Poll::Ready(None)));
        assert!(!body.is_registered());
        assert!(registry.is_empty());
    }

    #[test]
    fn a_body_that_waits_or_keeps_sending_registers_and_leaves_when_dropped() {
        let registry = LiveSessions::new(Arc::new(ProxyMetrics::default()));
        let mut waiting = revocable(&registry, &[Some("event"), None, Some("event")], false);
        assert!(matches!(poll(&mut waiting), Poll::Ready(Some(Ok(_)))));
        assert!(!waiting.is_registered());
        assert!(poll(&mut waiting).is_pending());
        assert!(waiting.is_registered());
        let frames = [Some("a"); FRAMES_BEFORE_REGISTERING as usize + 1];
        let mut download = revocable(&registry, &frames, false);
        for _ in 0..FRAMES_BEFORE_REGISTERING {
            assert!(matches!(poll(&mut download), Poll::Ready(Some(Ok(_)))));
        }
        assert!(download.is_registered());
        assert_eq!(registry.len(), 2);
        drop((waiting, download));
        assert!(registry.is_empty());
    }

    #[test]
    fn a_closed_grpc_stream_ends_with_a_status_and_other_streams_with_an_error() {
        let registry = LiveSessions::new(Arc::new(ProxyMetrics::default()));
        let mut grpc = revocable(&registry, &[None, Some("reply")], true);
        let mut sse = revocable(&registry, &[None, Some("event")], false);
        assert!(poll(&mut grpc).is_pending());
        assert!(poll(&mut sse).is_pending());
        assert_eq!(
            registry.close(CloseReason::AccessRevoked, |i| i.is_of("op-1", "bob")),
            2
        );
        match poll(&mut grpc) {
            Poll::Ready(Some(Ok(frame))) => {
                let trailers = frame.into_trailers().expect("trailers");
                assert_eq!(trailers["grpc-status"], "7");
            }
            _ => panic!("no trailers"),
        }
        assert!(matches!(poll(&mut grpc), Poll::Ready(None)));
        assert!(matches!(poll(&mut sse), Poll::Ready(Some(Err(_)))));
        assert!(matches!(poll(&mut sse), Poll::Ready(None)));
    }
}
