//! Master transactions and Cypress locks, as the real master keeps them: transactions with a
//! timeout that a ping extends and whose expiry aborts them; `exclusive`, `shared` and
//! `snapshot` locks on nodes, acquired at once or (with `waitable`) left pending until the
//! conflicting ones go; conflicts answered with the master's own error (code 402, "Cannot take
//! "exclusive" lock for node ... since "exclusive" lock is taken by concurrent transaction ...");
//! prerequisite transactions checked with its code 1000.
//!
//! Nested transactions end with their parent, and a lock held by an ancestor does not conflict
//! with its descendants. Not kept: the branching of nodes inside a transaction — a write under
//! a transaction is applied at once, as if committed (what the `yt` CLI's uploads need).

use crate::error::YtError;
use crate::ids;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use yson::{Map, Node, Value};

/// Error codes of transactions and locks (`NTransactionClient`, `NCypressClient`,
/// `NObjectClient`).
pub mod codes {
    pub const NO_SUCH_TRANSACTION: i64 = 11000;
    pub const CONCURRENT_TRANSACTION_LOCK_CONFLICT: i64 = 402;
    pub const PREREQUISITE_CHECK_FAILED: i64 = 1000;
}

/// The master's default when `start_transaction` has no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest timeout the development cluster grants (the master caps it too).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Snapshot,
    Shared,
    Exclusive,
}

impl LockMode {
    pub fn parse(text: &str) -> Result<LockMode, YtError> {
        match text {
            "snapshot" => Ok(LockMode::Snapshot),
            "shared" => Ok(LockMode::Shared),
            "exclusive" => Ok(LockMode::Exclusive),
            other => Err(YtError::bad_request(format!(
                "Error parsing lock mode: unknown value {other:?}"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Snapshot => "snapshot",
            LockMode::Shared => "shared",
            LockMode::Exclusive => "exclusive",
        }
    }

    /// Whether a lock of this mode and one of `other` (by different transactions) cannot both
    /// be held: exclusive conflicts with exclusive and shared; snapshot with nothing.
    fn conflicts_with(self, other: LockMode) -> bool {
        matches!(
            (self, other),
            (LockMode::Exclusive, LockMode::Exclusive | LockMode::Shared)
                | (LockMode::Shared, LockMode::Exclusive)
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    Pending,
    Acquired,
}

impl LockState {
    fn as_str(self) -> &'static str {
        match self {
            LockState::Pending => "pending",
            LockState::Acquired => "acquired",
        }
    }
}

#[derive(Debug, Clone)]
struct Transaction {
    parent: Option<String>,
    timeout: Duration,
    deadline: Instant,
    start_time: u64,
    last_ping_time: u64,
    /// Attributes given to `start_transaction` (`title` and user attributes).
    attributes: Map,
}

#[derive(Debug, Clone)]
struct Lock {
    node_id: String,
    node_path: String,
    transaction_id: String,
    mode: LockMode,
    state: LockState,
    creation_time: u64,
    /// Creation order: pending locks are granted first come, first served.
    order: u64,
}

/// What `lock` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockResult {
    pub lock_id: String,
    pub state: LockState,
}

/// Every live transaction and lock.
#[derive(Debug, Default)]
pub struct Transactions {
    transactions: BTreeMap<String, Transaction>,
    locks: BTreeMap<String, Lock>,
    next_order: u64,
}

fn no_such_transaction(id: &str) -> YtError {
    YtError::new(
        codes::NO_SUCH_TRANSACTION,
        400,
        format!("No such transaction {id}"),
    )
    .with_attribute("transaction_id", Node::string(id))
}

impl Transactions {
    /// Aborts every transaction past its deadline (the master's lease tracker does this on
    /// its own; here it runs before each command, which is when anyone could notice).
    pub fn expire(&mut self) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .transactions
            .iter()
            .filter(|(_, t)| t.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            tracing::info!(transaction = %id, "transaction expired: aborted");
            self.finish(&id);
        }
    }

    /// `start_transaction`: a new transaction with `timeout` (the default when `None`).
    #[cfg(test)]
    fn start(&mut self, timeout: Option<Duration>, attributes: Map) -> String {
        self.start_nested(None, timeout, attributes)
            .unwrap_or_default()
    }

    /// `start_transaction` under `parent` (which must be alive).
    pub fn start_nested(
        &mut self,
        parent: Option<&str>,
        timeout: Option<Duration>,
        attributes: Map,
    ) -> Result<String, YtError> {
        if let Some(parent) = parent {
            if !self.transactions.contains_key(parent) {
                return Err(no_such_transaction(parent));
            }
        }
        let timeout = timeout.unwrap_or(DEFAULT_TIMEOUT).min(MAX_TIMEOUT);
        let id = ids::transaction_id();
        let now = ids::now_micros();
        self.transactions.insert(
            id.clone(),
            Transaction {
                parent: parent.map(str::to_string),
                timeout,
                deadline: Instant::now() + timeout,
                start_time: now,
                last_ping_time: now,
                attributes,
            },
        );
        Ok(id)
    }

    /// Whether `ancestor` is `transaction` or one of its ancestors.
    fn is_ancestor(&self, ancestor: &str, transaction: &str) -> bool {
        let mut current = Some(transaction.to_string());
        while let Some(id) = current {
            if id == ancestor {
                return true;
            }
            current = self.transactions.get(&id).and_then(|t| t.parent.clone());
        }
        false
    }

    /// `ping_transaction`: the timeout runs again from now.
    pub fn ping(&mut self, id: &str) -> Result<(), YtError> {
        let tx = self
            .transactions
            .get_mut(id)
            .ok_or_else(|| no_such_transaction(id))?;
        tx.deadline = Instant::now() + tx.timeout;
        tx.last_ping_time = ids::now_micros();
        Ok(())
    }

    /// `abort_transaction` and `commit_transaction` (nothing is branched here, so both just end
    /// the transaction and release its locks).
    pub fn end(&mut self, id: &str) -> Result<(), YtError> {
        if !self.transactions.contains_key(id) {
            return Err(no_such_transaction(id));
        }
        self.finish(id);
        Ok(())
    }

    fn finish(&mut self, id: &str) {
        let children: Vec<String> = self
            .transactions
            .iter()
            .filter(|(_, t)| t.parent.as_deref() == Some(id))
            .map(|(child, _)| child.clone())
            .collect();
        for child in children {
            self.finish(&child);
        }
        self.transactions.remove(id);
        let mut touched = Vec::new();
        self.locks.retain(|_, lock| {
            if lock.transaction_id == id {
                touched.push(lock.node_id.clone());
                false
            } else {
                true
            }
        });
        touched.dedup();
        for node in touched {
            self.grant_pending(&node);
        }
    }

    /// Grants the pending locks of `node_id` that no longer conflict, oldest first; a pending
    /// lock that still conflicts holds back the ones behind it (no overtaking).
    fn grant_pending(&mut self, node_id: &str) {
        loop {
            let Some(next) = self
                .locks
                .iter()
                .filter(|(_, l)| l.node_id == node_id && l.state == LockState::Pending)
                .min_by_key(|(_, l)| l.order)
                .map(|(id, l)| (id.clone(), l.clone()))
            else {
                return;
            };
            if self
                .conflict(&next.1.node_id, &next.1.transaction_id, next.1.mode)
                .is_some()
            {
                return;
            }
            if let Some(lock) = self.locks.get_mut(&next.0) {
                lock.state = LockState::Acquired;
                tracing::info!(lock = %next.0, transaction = %next.1.transaction_id, node = %next.1.node_path, "pending lock acquired");
            }
        }
    }

    /// The acquired lock of a concurrent transaction (neither `transaction_id` nor one of its
    /// ancestors) that `mode` conflicts with, if any.
    fn conflict(&self, node_id: &str, transaction_id: &str, mode: LockMode) -> Option<&Lock> {
        self.locks.values().find(|l| {
            l.node_id == node_id
                && l.state == LockState::Acquired
                && !self.is_ancestor(&l.transaction_id, transaction_id)
                && mode.conflicts_with(l.mode)
        })
    }

    fn conflict_error(&self, path: &str, mode: LockMode, existing: &Lock) -> YtError {
        let mut winner = vec![
            (
                "id".to_string(),
                Node::string(existing.transaction_id.clone()),
            ),
            ("type".to_string(), Node::string("transaction")),
        ];
        if let Some(title) = self
            .transactions
            .get(&existing.transaction_id)
            .and_then(|t| t.attributes.iter().find(|(k, _)| k == "title"))
        {
            winner.push(("title".to_string(), title.1.clone()));
        }
        YtError::new(
            codes::CONCURRENT_TRANSACTION_LOCK_CONFLICT,
            400,
            format!(
                "Cannot take {:?} lock for node {path} since {:?} lock is taken by concurrent transaction {}",
                mode.as_str(),
                existing.mode.as_str(),
                existing.transaction_id
            ),
        )
        .with_attribute("winner_transaction", Node::map(winner))
    }

    /// `lock`: takes `mode` on the node under `transaction_id`; with `waitable` a conflicting
    /// request is left pending instead of failing.
    pub fn lock(
        &mut self,
        node_id: &str,
        node_path: &str,
        transaction_id: &str,
        mode: LockMode,
        waitable: bool,
    ) -> Result<LockResult, YtError> {
        if !self.transactions.contains_key(transaction_id) {
            return Err(no_such_transaction(transaction_id));
        }
        // The same lock again under the same transaction is the lock it already has.
        if let Some((id, lock)) = self.locks.iter().find(|(_, l)| {
            l.node_id == node_id && l.transaction_id == transaction_id && l.mode == mode
        }) {
            return Ok(LockResult {
                lock_id: id.clone(),
                state: lock.state,
            });
        }
        let queued_before = self
            .locks
            .values()
            .any(|l| l.node_id == node_id && l.state == LockState::Pending);
        let state = match self.conflict(node_id, transaction_id, mode) {
            Some(existing) if !waitable => {
                return Err(self.conflict_error(node_path, mode, existing))
            }
            Some(_) => LockState::Pending,
            None if queued_before && waitable => LockState::Pending,
            None => LockState::Acquired,
        };
        let lock_id = ids::lock_id();
        self.next_order += 1;
        self.locks.insert(
            lock_id.clone(),
            Lock {
                node_id: node_id.to_string(),
                node_path: node_path.to_string(),
                transaction_id: transaction_id.to_string(),
                mode,
                state,
                creation_time: ids::now_micros(),
                order: self.next_order,
            },
        );
        Ok(LockResult { lock_id, state })
    }

    /// Refuses a write to `node_id` outside the transaction that holds a lock on it (a write
    /// takes an exclusive lock of its own), and a write under a transaction that is gone.
    pub fn check_write(
        &self,
        node_id: &str,
        node_path: &str,
        transaction_id: Option<&str>,
    ) -> Result<(), YtError> {
        if let Some(id) = transaction_id {
            if !self.transactions.contains_key(id) {
                return Err(no_such_transaction(id));
            }
        }
        match self.conflict(node_id, transaction_id.unwrap_or(""), LockMode::Exclusive) {
            Some(existing) => Err(self.conflict_error(node_path, LockMode::Exclusive, existing)),
            None => Ok(()),
        }
    }

    /// Fails unless every id names a live transaction.
    pub fn check_prerequisites(&self, ids: &[String]) -> Result<(), YtError> {
        for id in ids {
            if !self.transactions.contains_key(id) {
                return Err(YtError::new(
                    codes::PREREQUISITE_CHECK_FAILED,
                    400,
                    format!("Prerequisite check failed: transaction {id} is missing"),
                )
                .with_attribute("transaction_id", Node::string(id.clone())));
            }
        }
        Ok(())
    }

    #[cfg(test)]
    fn is_transaction(&self, id: &str) -> bool {
        self.transactions.contains_key(id)
    }

    /// The node's `@locks`: every lock on it, acquired and pending, in creation order.
    pub fn node_locks(&self, node_id: &str) -> Node {
        let mut locks: Vec<(&String, &Lock)> = self
            .locks
            .iter()
            .filter(|(_, l)| l.node_id == node_id)
            .collect();
        locks.sort_by_key(|(_, l)| l.order);
        Node::list(
            locks
                .into_iter()
                .map(|(id, l)| Self::lock_attributes(id, l))
                .collect(),
        )
    }

    fn lock_attributes(id: &str, lock: &Lock) -> Node {
        Node::map(vec![
            ("id".into(), Node::string(id)),
            ("type".into(), Node::string("lock")),
            ("state".into(), Node::string(lock.state.as_str())),
            (
                "transaction_id".into(),
                Node::string(lock.transaction_id.clone()),
            ),
            ("mode".into(), Node::string(lock.mode.as_str())),
            ("node_id".into(), Node::string(lock.node_id.clone())),
            (
                "creation_time".into(),
                Node::string(ids::format_time(lock.creation_time)),
            ),
        ])
    }

    /// All attributes of the transaction or lock `id` (for `get #<id>/@`).
    pub fn object_attributes(&self, id: &str) -> Option<Map> {
        if let Some(lock) = self.locks.get(id) {
            return Some(Self::lock_attributes(id, lock).as_map()?.clone());
        }
        let tx = self.transactions.get(id)?;
        let mut out: Map = vec![
            ("id".into(), Node::string(id)),
            ("type".into(), Node::string("transaction")),
            ("state".into(), Node::string("active")),
            (
                "timeout".into(),
                Value::Int64(tx.timeout.as_millis() as i64).into(),
            ),
            (
                "start_time".into(),
                Node::string(ids::format_time(tx.start_time)),
            ),
            (
                "last_ping_time".into(),
                Node::string(ids::format_time(tx.last_ping_time)),
            ),
            (
                "locks".into(),
                Node::list(
                    self.locks
                        .iter()
                        .filter(|(_, l)| l.transaction_id == id)
                        .map(|(lock_id, l)| Self::lock_attributes(lock_id, l))
                        .collect(),
                ),
            ),
        ];
        out.extend(tx.attributes.iter().cloned());
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_locks_conflict_wait_and_pass_on() {
        let mut t = Transactions::default();
        let a = t.start(Some(Duration::from_secs(60)), Vec::new());
        let b = t.start(Some(Duration::from_secs(60)), Vec::new());
        let c = t.start(Some(Duration::from_secs(60)), Vec::new());
        let first = t.lock("n", "//l", &a, LockMode::Exclusive, false).unwrap();
        assert_eq!(first.state, LockState::Acquired);
        let refused = t
            .lock("n", "//l", &b, LockMode::Exclusive, false)
            .unwrap_err();
        assert_eq!(refused.code, codes::CONCURRENT_TRANSACTION_LOCK_CONFLICT);
        assert_eq!(
            refused.message,
            format!("Cannot take \"exclusive\" lock for node //l since \"exclusive\" lock is taken by concurrent transaction {a}")
        );
        let waiting_b = t.lock("n", "//l", &b, LockMode::Exclusive, true).unwrap();
        let waiting_c = t.lock("n", "//l", &c, LockMode::Exclusive, true).unwrap();
        assert_eq!(waiting_b.state, LockState::Pending);
        assert!(t.check_write("n", "//l", None).is_err());
        assert!(t.check_write("n", "//l", Some(&a)).is_ok());
        t.end(&a).unwrap();
        let state = |t: &Transactions, id: &str| t.locks.get(id).map(|l| l.state);
        assert_eq!(state(&t, &waiting_b.lock_id), Some(LockState::Acquired));
        assert_eq!(state(&t, &waiting_c.lock_id), Some(LockState::Pending));
        assert!(t.end(&a).is_err(), "ended transactions are gone");
        assert!(t.check_prerequisites(std::slice::from_ref(&b)).is_ok());
        assert_eq!(
            t.check_prerequisites(std::slice::from_ref(&a))
                .unwrap_err()
                .code,
            codes::PREREQUISITE_CHECK_FAILED
        );
        // A child of the holder writes; ending the parent ends the child.
        let child = t.start_nested(Some(&b), None, Vec::new()).unwrap();
        assert!(t.check_write("n", "//l", Some(&child)).is_ok());
        assert!(t.check_write("n", "//l", Some(&c)).is_err());
        t.end(&b).unwrap();
        assert!(!t.is_transaction(&child));
    }

    #[test]
    fn expiry_aborts_and_ping_extends() {
        let mut t = Transactions::default();
        let short = t.start(Some(Duration::from_millis(150)), Vec::new());
        let waiter = t.start(Some(Duration::from_secs(60)), Vec::new());
        t.lock("n", "//l", &short, LockMode::Exclusive, false)
            .unwrap();
        let pending = t
            .lock("n", "//l", &waiter, LockMode::Exclusive, true)
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        t.ping(&short).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        t.expire();
        assert!(t.is_transaction(&short), "the ping moved the deadline");
        std::thread::sleep(Duration::from_millis(200));
        t.expire();
        assert!(!t.is_transaction(&short));
        assert_eq!(t.ping(&short).unwrap_err().code, codes::NO_SUCH_TRANSACTION);
        assert_eq!(
            t.locks.get(&pending.lock_id).map(|l| l.state),
            Some(LockState::Acquired)
        );
    }
}
