//! Typed requests and answers of the commands the task proxy uses.

use crate::error::Error;
use yson::Node;

/// Which way `list_operations` pages from `cursor_time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorDirection {
    /// Newest first: operations that started before the cursor.
    Past,
    /// Oldest first: operations that started after the cursor.
    Future,
}

impl CursorDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            CursorDirection::Past => "past",
            CursorDirection::Future => "future",
        }
    }
}

/// Parameters of one `list_operations` call (one page).
#[derive(Debug, Clone, Default)]
pub struct ListOperationsRequest {
    /// `running`, `completed`, ...
    pub state: Option<String>,
    /// Operation type (`vanilla`, `map`, ...).
    pub operation_type: Option<String>,
    pub user: Option<String>,
    /// A substring filter the server matches against ids, users, titles, pools.
    pub filter: Option<String>,
    pub limit: Option<u32>,
    /// ISO 8601 instant to page from.
    pub cursor_time: Option<String>,
    pub cursor_direction: Option<CursorDirection>,
    /// Attributes to return for each operation (empty: the server's default set).
    pub attributes: Vec<String>,
    pub include_archive: Option<bool>,
}

impl ListOperationsRequest {
    pub(crate) fn to_params(&self) -> yson::Map {
        let mut params = yson::Map::new();
        let mut put = |k: &str, v: Node| params.push((k.to_string(), v));
        if let Some(state) = &self.state {
            put("state", Node::string(state));
        }
        if let Some(t) = &self.operation_type {
            put("type", Node::string(t));
        }
        if let Some(user) = &self.user {
            put("user", Node::string(user));
        }
        if let Some(filter) = &self.filter {
            put("filter", Node::string(filter));
        }
        if let Some(limit) = self.limit {
            put("limit", yson::Value::Int64(i64::from(limit)).into());
        }
        if let Some(cursor) = &self.cursor_time {
            put("cursor_time", Node::string(cursor));
        }
        if let Some(direction) = self.cursor_direction {
            put("cursor_direction", Node::string(direction.as_str()));
        }
        if !self.attributes.is_empty() {
            put(
                "attributes",
                Node::list(self.attributes.iter().map(Node::string).collect()),
            );
        }
        if let Some(archive) = self.include_archive {
            put("include_archive", yson::Value::Boolean(archive).into());
        }
        params
    }
}

/// One page of `list_operations`.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationsPage {
    /// The operations, each a map of the requested attributes.
    pub operations: Vec<Node>,
    /// The server's "there are more operations than it returned" (`None`: it did not say).
    pub incomplete: Option<bool>,
}

impl OperationsPage {
    pub fn from_node(node: &Node) -> Result<OperationsPage, Error> {
        let operations = node
            .get("operations")
            .and_then(Node::as_list)
            .ok_or_else(|| {
                Error::Decode("list_operations: no \"operations\" list in the answer".into())
            })?
            .to_vec();
        let incomplete = node.get("incomplete").and_then(Node::as_bool);
        Ok(OperationsPage {
            operations,
            incomplete,
        })
    }
}

/// A job, as `list_jobs` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: String,
    /// The exec node, `host:port`.
    pub address: String,
    pub task_name: String,
    pub state: String,
    pub start_time: Option<String>,
}

impl Job {
    /// Reads a job from a `list_jobs` item.
    pub fn from_node(node: &Node) -> Result<Job, String> {
        let text = |key: &str| node.get(key).and_then(Node::as_str).map(str::to_string);
        let id = text("id")
            .or_else(|| text("job_id"))
            .ok_or("the job has no string \"id\"")?;
        let address = text("address")
            .or_else(|| {
                node.pointer("addresses/default")
                    .and_then(Node::as_str)
                    .map(str::to_string)
            })
            .ok_or_else(|| format!("job {id} has no string \"address\""))?;
        Ok(Job {
            task_name: text("task_name").unwrap_or_default(),
            state: text("state").unwrap_or_default(),
            start_time: text("start_time"),
            id,
            address,
        })
    }

    /// The exec node's host: the address without its port (`[::1]:9012` gives `::1`).
    pub fn host(&self) -> &str {
        host_of(&self.address)
    }
}

/// The host part of `host:port` (brackets of an IPv6 literal removed); the whole string when it
/// has no port.
pub fn host_of(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match address.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => address,
    }
}

/// One command inside an `execute_batch` call.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRequest {
    pub command: String,
    pub parameters: yson::Map,
}

impl BatchRequest {
    pub fn new(command: impl Into<String>, parameters: yson::Map) -> BatchRequest {
        BatchRequest {
            command: command.into(),
            parameters,
        }
    }

    /// `get` of a Cypress path (orchid paths included). Asks for the bare value
    /// (`return_only_value`), as API v4 otherwise wraps it in `{"value": ...}`.
    pub fn get(path: impl Into<String>) -> BatchRequest {
        BatchRequest::new(
            "get",
            vec![
                ("path".into(), Node::string(path)),
                (
                    "return_only_value".into(),
                    yson::Value::Boolean(true).into(),
                ),
            ],
        )
    }

    /// `list` of a Cypress path (the bare list, like [`BatchRequest::get`]).
    pub fn list(path: impl Into<String>) -> BatchRequest {
        BatchRequest::new(
            "list",
            vec![
                ("path".into(), Node::string(path)),
                (
                    "return_only_value".into(),
                    yson::Value::Boolean(true).into(),
                ),
            ],
        )
    }

    /// `get_operation` with the given attributes (all when empty).
    pub fn get_operation(operation_id: &str, attributes: &[&str]) -> BatchRequest {
        let mut params = vec![("operation_id".into(), Node::string(operation_id))];
        if !attributes.is_empty() {
            params.push((
                "attributes".into(),
                Node::list(attributes.iter().map(|a| Node::string(*a)).collect()),
            ));
        }
        BatchRequest::new("get_operation", params)
    }

    /// One page of `list_jobs`.
    pub fn list_jobs(
        operation_id: &str,
        state: Option<&str>,
        limit: u32,
        offset: u64,
    ) -> BatchRequest {
        let mut params = vec![
            ("operation_id".into(), Node::string(operation_id)),
            ("limit".into(), yson::Value::Int64(i64::from(limit)).into()),
            (
                "offset".into(),
                yson::Value::Int64(i64::try_from(offset).unwrap_or(i64::MAX)).into(),
            ),
        ];
        if let Some(state) = state {
            params.push(("job_state".into(), Node::string(state)));
        }
        BatchRequest::new("list_jobs", params)
    }

    pub(crate) fn to_node(&self) -> Node {
        Node::map(vec![
            ("command".into(), Node::string(&self.command)),
            ("parameters".into(), Node::map(self.parameters.clone())),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(host_of("node-1.example:9012"), "node-1.example");
        assert_eq!(host_of("127.0.0.2:1"), "127.0.0.2");
        assert_eq!(host_of("[::1]:9012"), "::1");
        assert_eq!(host_of("plainhost"), "plainhost");
        assert_eq!(host_of("::1"), "::1");
    }
}
