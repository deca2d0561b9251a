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
pub struct Revocable<B> {
    inner: B,
    session: Session,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    grpc: bool,
    ended: bool,
}

impl<B> Revocable<B> {
    pub fn new(inner: B, session: Session, grpc: bool) -> Revocable<B> {
        let cancelled = Box::pin(session.token().clone().cancelled_owned());
        Revocable {
            inner,
            session,
            cancelled,
            grpc,
            ended: false,
        }
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
        if this.cancelled.as_mut().poll(cx).is_ready() {
            this.ended = true;
            let reason = this
                .session
                .close_reason()
                .unwrap_or(CloseReason::AccessRevoked);
            if this.grpc {
                return Poll::Ready(Some(Ok(Frame::trailers(grpc_trailers(reason)))));
            }
            return Poll::Ready(Some(Err(format!(
                "the proxy closed the stream: {}",
                reason.close_text()
            )
            .into())));
        }
        Pin::new(&mut this.inner).poll_frame(cx)
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
}
