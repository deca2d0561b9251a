//! The re-checker of live sessions (`--session-recheck-interval`): access ends, sessions end.
//!
//! Every interval it takes the distinct (operation, user) pairs of the sessions open now
//! ([`LiveSessions::pairs`]; nothing else is checked, so the cluster's load follows what is
//! open, not what was ever served) and
//! - closes every session of an operation that is no longer in the routing table in force
//!   (discovery lists running operations only: the operation stopped) with reason
//!   `operation_ended`;
//! - asks the cluster again whether each user may still `read` the operation, through the
//!   gate ([`Gate::recheck_read`]: the same `check_operation_permission` admission uses, past
//!   the caches, storing the fresh answer), at most [`CONCURRENT_CHECKS`] at a time, and closes
//!   that user's sessions of the operation on a definite deny (`access_revoked`). A check the
//!   cluster fails closes nothing: an outage must not cut everyone off.
//!
//! Sessions opened without a user (auth off, the static exemption) only end with their
//! operation. The checker takes the gate and the routing table as inputs; neither knows it.

use super::sessions::{CloseReason, LiveSessions};
use crate::auth::Gate;
use crate::routing::RoutingTable;
use futures_util::stream::{self, StreamExt};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Permission checks in flight at once in one pass.
pub const CONCURRENT_CHECKS: usize = 16;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassOutcome {
    /// (operation, user) pairs whose permission was asked.
    pub checked: usize,
    /// Checks the cluster failed (those sessions stay open).
    pub failed: usize,
    pub closed_operation_ended: usize,
    pub closed_access_revoked: usize,
}

/// Runs a pass every `interval` until `shutdown`.
pub async fn run(
    sessions: Arc<LiveSessions>,
    gate: Gate,
    table: Arc<RoutingTable>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once: nothing is open yet.
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let outcome = pass(&sessions, &gate, &table).await;
        if outcome != PassOutcome::default() {
            tracing::debug!(?outcome, "live sessions re-checked");
        }
    }
}

/// One pass over the sessions open now.
pub async fn pass(sessions: &LiveSessions, gate: &Gate, table: &RoutingTable) -> PassOutcome {
    let mut outcome = PassOutcome::default();
    let pairs = sessions.pairs();
    if pairs.is_empty() {
        return outcome;
    }
    let running: HashSet<String> = {
        let snapshot = table.load();
        let wanted: HashSet<&str> = pairs.iter().map(|(op, _)| op.as_str()).collect();
        snapshot
            .routes()
            .iter()
            .map(|route| route.key.operation_id.as_str())
            .filter(|op| wanted.contains(op))
            .map(str::to_string)
            .collect()
    };
    let ended: HashSet<&str> = pairs
        .iter()
        .map(|(op, _)| op.as_str())
        .filter(|op| !running.contains(*op))
        .collect();
    if !ended.is_empty() {
        outcome.closed_operation_ended = sessions.close(CloseReason::OperationEnded, |info| {
            ended.contains(info.operation_id())
        });
    }
    if !gate.is_enabled() {
        return outcome;
    }
    let to_check: Vec<(String, Arc<str>)> = pairs
        .iter()
        .filter(|(op, _)| running.contains(op))
        .filter_map(|(op, user)| Some((op.clone(), user.clone()?)))
        .collect();
    outcome.checked = to_check.len();
    let answers: Vec<_> = stream::iter(to_check)
        .map(|(op, user)| async move {
            let answer = gate.recheck_read(&user, &op).await;
            (op, user, answer)
        })
        .buffer_unordered(CONCURRENT_CHECKS)
        .collect()
        .await;
    for (op, user, answer) in answers {
        match answer {
            Ok(true) => {}
            Ok(false) => {
                outcome.closed_access_revoked +=
                    sessions.close(CloseReason::AccessRevoked, |info| info.is_of(&op, &user));
            }
            Err(error) => {
                outcome.failed += 1;
                tracing::debug!(operation = %op, %user, %error, "live sessions kept: the permission could not be re-checked");
            }
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AuthBackend, AuthConfig, BackendError, Credential};
    use crate::proxy::metrics::ProxyMetrics;
    use crate::proxy::sessions::{SessionInfo, SessionKind};
    use crate::routing::{Protocol, RoutingSnapshot, ServiceSpec};
    use futures_util::future::BoxFuture;
    use futures_util::FutureExt;
    use std::sync::Mutex;

    /// Answers `check_read` from a table of (operation, user) -> answer; `None` is an outage.
    struct Answers(Mutex<std::collections::HashMap<(String, String), Option<bool>>>);

    impl AuthBackend for Answers {
        fn whoami<'a>(&'a self, _: &'a Credential) -> BoxFuture<'a, Result<String, BackendError>> {
            async { Err(BackendError::Rejected("not used".into())) }.boxed()
        }

        fn check_read<'a>(
            &'a self,
            operation_id: &'a str,
            user: &'a str,
        ) -> BoxFuture<'a, Result<bool, BackendError>> {
            let answer = self
                .0
                .lock()
                .unwrap()
                .get(&(operation_id.to_string(), user.to_string()))
                .copied()
                .flatten();
            async move {
                answer.ok_or(BackendError::Unavailable {
                    kind: yt_client::FailureKind::Other,
                    reason: "down".into(),
                })
            }
            .boxed()
        }
    }

    fn snapshot(ops: &[&str]) -> RoutingSnapshot {
        let specs: Vec<ServiceSpec> = ops
            .iter()
            .map(|op| ServiceSpec {
                operation_id: op.to_string(),
                task_name: "main".into(),
                service: "web".into(),
                protocol: Protocol::Http,
                endpoints: vec![],
                operation_start_time: None,
                timeouts: Default::default(),
                sticky: None,
            })
            .collect();
        RoutingSnapshot::build("tp.test", specs)
    }

    #[tokio::test]
    async fn a_pass_closes_ended_operations_and_definite_denies_only() {
        let answers = [
            (("op-1", "alice"), Some(true)),
            (("op-1", "bob"), Some(false)),
            (("op-1", "carol"), None),
        ];
        let backend = Answers(Mutex::new(
            answers
                .iter()
                .map(|((op, user), a)| ((op.to_string(), user.to_string()), *a))
                .collect(),
        ));
        let gate = Gate::new(AuthConfig::default(), Arc::new(backend)).unwrap();
        let registry = LiveSessions::new(Arc::new(ProxyMetrics::default()));
        // Sessions were opened on routes of an earlier snapshot; op-gone is not running now.
        let earlier = snapshot(&["op-1", "op-gone"]);
        let open = |user: Option<&str>, op: &str| {
            let route = earlier
                .routes()
                .iter()
                .find(|r| r.key.operation_id == op)
                .unwrap();
            registry.register(SessionInfo::new(user, route, SessionKind::Tunnel))
        };
        let alice = open(Some("alice"), "op-1");
        let bob = open(Some("bob"), "op-1");
        let bob_again = open(Some("bob"), "op-1");
        let carol = open(Some("carol"), "op-1");
        let anonymous = open(None, "op-1");
        let gone = open(Some("alice"), "op-gone");
        let table = RoutingTable::new("tp.test");
        table.publish(snapshot(&["op-1"]));
        let outcome = pass(&registry, &gate, &table).await;
        assert_eq!(
            outcome,
            PassOutcome {
                checked: 3,
                failed: 1,
                closed_operation_ended: 1,
                closed_access_revoked: 2,
            }
        );
        assert_eq!(gone.close_reason(), Some(CloseReason::OperationEnded));
        assert_eq!(bob.close_reason(), Some(CloseReason::AccessRevoked));
        assert_eq!(bob_again.close_reason(), Some(CloseReason::AccessRevoked));
        for kept in [&alice, &carol, &anonymous] {
            assert!(!kept.token().is_cancelled());
        }
        assert_eq!(registry.len(), 3);
        // The deny is in the gate's cache now: admission refuses bob without asking again.
        assert_eq!(gate.may_read("bob", "op-1").await, Ok(false));
    }
}
