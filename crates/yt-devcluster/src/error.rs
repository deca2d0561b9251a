//! YT-shaped errors: a code, a message, attributes and inner errors, plus the HTTP status the
//! server answers with. Every failure a request can meet becomes a [`YtError`].

use yson::{Map, Node, Value};

/// Error codes the real cluster uses and the Python client recognises.
pub mod codes {
    pub const GENERIC: i64 = 1;
    /// `is_resolve_error()` in the Python client: no such node.
    pub const RESOLVE: i64 = 500;
    /// `is_already_exists()`.
    pub const ALREADY_EXISTS: i64 = 501;
    pub const AUTHENTICATION: i64 = 900;
    /// `is_access_denied()`.
    pub const AUTHORIZATION: i64 = 901;
    pub const NO_SUCH_OPERATION: i64 = 1915;
    pub const NO_SUCH_JOB: i64 = 1916;
    pub const NO_SUCH_COMMAND: i64 = 1;
    pub const UNAVAILABLE: i64 = 105;
    /// `NRpc::EErrorCode::TransportError` (the bus code).
    pub const TRANSPORT: i64 = 100;
    /// `NRpc::EErrorCode::InvalidCredentials`.
    pub const INVALID_CREDENTIALS: i64 = 111;
    /// `NApi::NRpcProxy::EErrorCode::ProxyBanned`.
    pub const PROXY_BANNED: i64 = 2100;
}

/// A YT error as the HTTP API reports it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message} (code {code})")]
pub struct YtError {
    pub code: i64,
    pub message: String,
    pub attributes: Map,
    pub inner_errors: Vec<YtError>,
    /// The HTTP status of the answer.
    pub status: u16,
}

impl YtError {
    pub fn new(code: i64, status: u16, message: impl Into<String>) -> Self {
        YtError {
            code,
            message: message.into(),
            attributes: Vec::new(),
            inner_errors: Vec::new(),
            status,
        }
    }

    /// A generic bad-request error (code 1, HTTP 400).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(codes::GENERIC, 400, message)
    }

    /// A path that does not resolve (code 500).
    pub fn resolve(message: impl Into<String>) -> Self {
        Self::new(codes::RESOLVE, 400, message)
    }

    pub fn already_exists(path: &str) -> Self {
        Self::new(
            codes::ALREADY_EXISTS,
            400,
            format!("Node {path} already exists"),
        )
        .with_attribute("path", Node::string(path))
    }

    pub fn authentication(message: impl Into<String>) -> Self {
        Self::new(codes::AUTHENTICATION, 401, message)
    }

    pub fn access_denied(message: impl Into<String>) -> Self {
        Self::new(codes::AUTHORIZATION, 403, message)
    }

    pub fn no_such_operation(id: &str) -> Self {
        Self::new(
            codes::NO_SUCH_OPERATION,
            400,
            format!("No such operation {id}"),
        )
        .with_attribute("operation_id", Node::string(id))
    }

    pub fn not_implemented(command: &str) -> Self {
        Self::new(
            codes::NO_SUCH_COMMAND,
            400,
            format!("Command {command:?} is not supported by the development cluster"),
        )
        .with_attribute("command", Node::string(command))
    }

    pub fn with_attribute(mut self, key: &str, value: Node) -> Self {
        self.attributes.push((key.to_string(), value));
        self
    }

    pub fn with_inner(mut self, inner: YtError) -> Self {
        self.inner_errors.push(inner);
        self
    }

    /// The error as a YSON node (`{code; message; attributes; inner_errors}`).
    pub fn to_node(&self) -> Node {
        Node::map(vec![
            ("code".into(), Value::Int64(self.code).into()),
            ("message".into(), Node::string(self.message.clone())),
            ("attributes".into(), Node::map(self.attributes.clone())),
            (
                "inner_errors".into(),
                Node::list(self.inner_errors.iter().map(YtError::to_node).collect()),
            ),
        ])
    }

    pub fn to_json(&self) -> serde_json::Value {
        self.to_node().to_json()
    }
}
