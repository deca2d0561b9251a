//! Master transactions, Cypress locks and node revisions: what it takes for several clients to
//! agree on one of them (a lock held by a pinged transaction) and to notice a node's change
//! with one small read (`@revision`).
//!
//! Shapes follow the server's driver (API v4): `start_transaction` answers
//! `{transaction_id=...}`, `lock` answers `{lock_id; node_id; revision}`, durations are
//! milliseconds, and a lock another transaction holds fails with code 402 (see
//! [`crate::Error::is_lock_conflict`]), a transaction that is gone with 11000 or, as a
//! prerequisite, 1000 (see [`crate::Error::is_transaction_gone`]).

use crate::transport::{Call, Method};
use crate::{boolean, int, param, string, Error, YtClient};
use std::time::Duration;
use yson::Node;

/// A lock's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Snapshot,
    Shared,
    Exclusive,
}

impl LockMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Snapshot => "snapshot",
            LockMode::Shared => "shared",
            LockMode::Exclusive => "exclusive",
        }
    }
}

/// What `lock` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockResult {
    pub lock_id: String,
    pub node_id: String,
    /// The node's revision when locked (older servers do not say).
    pub revision: Option<u64>,
}

/// Options of a write ([`YtClient::set_with`]).
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// The write fails (code 1000) unless every one of these transactions is alive: a leader
    /// fences its writes with the transaction that holds its lock.
    pub prerequisite_transaction_ids: Vec<String>,
    pub recursive: bool,
    pub force: bool,
}

/// The one string of a v4 answer `{key=value}`, or a bare string (older APIs).
fn single_string(command: &str, key: &str, node: &Node) -> Result<String, Error> {
    node.get(key)
        .unwrap_or(node)
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| Error::Decode(format!("{command}: no {key:?} in the answer")))
}

/// `params` plus `prerequisite_transaction_ids` when `options` has any.
pub(crate) fn with_prerequisites(mut params: yson::Map, options: &WriteOptions) -> yson::Map {
    if !options.prerequisite_transaction_ids.is_empty() {
        params.push(param(
            "prerequisite_transaction_ids",
            Node::list(
                options
                    .prerequisite_transaction_ids
                    .iter()
                    .map(|id| string(id))
                    .collect(),
            ),
        ));
    }
    params
}

fn duration_ms(value: Duration) -> Node {
    int(i64::try_from(value.as_millis()).unwrap_or(i64::MAX))
}

impl YtClient {
    /// Starts a master transaction that the server aborts unless pinged within `timeout`;
    /// `attributes` (a map) become the transaction's attributes (`title`, anything else).
    pub async fn start_transaction(
        &self,
        timeout: Duration,
        attributes: Option<Node>,
    ) -> Result<String, Error> {
        let mut params = vec![param("timeout", duration_ms(timeout))];
        if let Some(attributes) = attributes {
            if attributes.as_map().is_none() {
                return Err(Error::InvalidArgument(
                    "start_transaction: attributes must be a map".into(),
                ));
            }
            params.push(param("attributes", attributes));
        }
        let node = self
            .structured(Call::new("start_transaction", Method::Post, params))
            .await?;
        single_string("start_transaction", "transaction_id", &node)
    }

    /// Restarts the transaction's timeout.
    pub async fn ping_transaction(&self, transaction_id: &str) -> Result<(), Error> {
        let params = vec![param("transaction_id", string(transaction_id))];
        self.inner
            .execute(&Call::new("ping_transaction", Method::Post, params))
            .await
            .map(drop)
    }

    /// Aborts the transaction: its locks go at once.
    pub async fn abort_transaction(&self, transaction_id: &str) -> Result<(), Error> {
        let params = vec![param("transaction_id", string(transaction_id))];
        self.inner
            .execute(&Call::new("abort_transaction", Method::Post, params))
            .await
            .map(drop)
    }

    /// Locks the node at `path` under `transaction_id`. Without `waitable` a conflicting lock
    /// fails ([`Error::is_lock_conflict`]); with it the lock is created pending and acquired
    /// when the holders are gone (see [`YtClient::lock_state`]).
    pub async fn lock(
        &self,
        path: &str,
        mode: LockMode,
        waitable: bool,
        transaction_id: &str,
    ) -> Result<LockResult, Error> {
        let params = vec![
            param("path", string(path)),
            param("mode", string(mode.as_str())),
            param("waitable", boolean(waitable)),
            param("transaction_id", string(transaction_id)),
        ];
        let node = self
            .structured(Call::new("lock", Method::Post, params))
            .await?;
        Ok(LockResult {
            lock_id: single_string("lock", "lock_id", &node)?,
            node_id: node
                .get("node_id")
                .and_then(Node::as_str)
                .unwrap_or_default()
                .to_string(),
            revision: node.get("revision").and_then(Node::as_u64),
        })
    }

    /// A lock's state: `pending` or `acquired` (`#<lock_id>/@state`).
    pub async fn lock_state(&self, lock_id: &str) -> Result<String, Error> {
        let node = self.get(&format!("#{lock_id}/@state")).await?;
        node.as_str()
            .map(str::to_string)
            .ok_or_else(|| Error::Decode(format!("lock state is a {}", node.type_name())))
    }

    /// The node's revision (`<path>/@revision`): it changes on every write of the node.
    pub async fn revision(&self, path: &str) -> Result<u64, Error> {
        let node = self.get(&format!("{path}/@revision")).await?;
        node.as_u64()
            .or_else(|| node.as_i64().and_then(|v| u64::try_from(v).ok()))
            .ok_or_else(|| Error::Decode(format!("revision is a {}", node.type_name())))
    }

    /// The node at `path` with the given attributes of every node in it.
    pub async fn get_with_attributes(
        &self,
        path: &str,
        attributes: &[&str],
    ) -> Result<Node, Error> {
        let params = vec![
            param("path", string(path)),
            param(
                "attributes",
                Node::list(attributes.iter().map(|a| string(a)).collect()),
            ),
        ];
        self.structured(Call::new("get", Method::Get, params)).await
    }

    /// Sets the node at `path` to `value` with `options` (one mutation: readers see the old
    /// value or the new one, never a part).
    pub async fn set_with(
        &self,
        path: &str,
        value: &Node,
        options: &WriteOptions,
    ) -> Result<(), Error> {
        let params = with_prerequisites(
            vec![
                param("path", string(path)),
                param("recursive", boolean(options.recursive)),
                param("force", boolean(options.force)),
            ],
            options,
        );
        let call = Call {
            input: Some(yson::to_text(value).into_bytes()),
            ..Call::new("set", Method::Put, params)
        };
        self.inner.execute(&call).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_values() {
        let v4 = yson::parse(br#"{"transaction_id"="1-2-3-4";}"#).unwrap();
        assert_eq!(
            single_string("start_transaction", "transaction_id", &v4).unwrap(),
            "1-2-3-4"
        );
        let v3 = yson::parse(br#""5-6-7-8""#).unwrap();
        assert_eq!(
            single_string("x", "transaction_id", &v3).unwrap(),
            "5-6-7-8"
        );
        assert!(single_string("x", "transaction_id", &yson::parse(b"1").unwrap()).is_err());
        assert_eq!(
            yson::to_text(&duration_ms(Duration::from_secs(10))),
            "10000"
        );
    }
}
