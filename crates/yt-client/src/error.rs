//! Errors: the cluster's own error objects ([`YtError`], a tree of code, message, attributes and
//! inner errors) and this client's [`Error`], which says whether retrying can help.

use std::fmt;
use yson::Node;

/// The server's error codes this client acts on (`NRpc`, `NBus`, `NSecurityClient`,
/// `NApi::NRpcProxy` and `NYT` core error enums).
pub mod codes {
    /// The generic code: also what the HTTP proxy answers for a command it does not know.
    pub const GENERIC: i64 = 1;
    pub const TIMEOUT: i64 = 3;
    /// A bus (connection-level) failure.
    pub const TRANSPORT_ERROR: i64 = 100;
    /// The server is not capable of serving requests and must not receive more load.
    pub const UNAVAILABLE: i64 = 105;
    pub const REQUEST_QUEUE_SIZE_LIMIT_EXCEEDED: i64 = 108;
    /// RPC-level authentication failure (the HTTP proxy answers it with 503, not 401).
    pub const RPC_AUTHENTICATION_ERROR: i64 = 109;
    pub const INVALID_CSRF_TOKEN: i64 = 110;
    /// The credentials are not valid: never retryable.
    pub const INVALID_CREDENTIALS: i64 = 111;
    pub const PEER_BANNED: i64 = 115;
    pub const TRANSIENT_FAILURE: i64 = 116;
    pub const OVERLOADED: i64 = 118;
    pub const REQUEST_MEMORY_PRESSURE: i64 = 120;
    pub const RESPONSE_MEMORY_PRESSURE: i64 = 122;
    pub const RESOLVE_ERROR: i64 = 500;
    pub const AUTHENTICATION_ERROR: i64 = 900;
    pub const AUTHORIZATION_ERROR: i64 = 901;
    pub const USER_BANNED: i64 = 903;
    /// The user's own request queue is full.
    pub const USER_REQUEST_QUEUE_SIZE_LIMIT_EXCEEDED: i64 = 904;
    /// The HTTP or RPC proxy this request reached is banned.
    pub const PROXY_BANNED: i64 = 2100;
    /// `NCypressClient::EErrorCode::ConcurrentTransactionLockConflict`: another transaction
    /// holds a conflicting lock.
    pub const CONCURRENT_TRANSACTION_LOCK_CONFLICT: i64 = 402;
    /// `NObjectClient::EErrorCode::PrerequisiteCheckFailed`: a prerequisite transaction is gone.
    pub const PREREQUISITE_CHECK_FAILED: i64 = 1000;
    /// `NTransactionClient::EErrorCode::NoSuchTransaction`: aborted, committed or expired.
    pub const NO_SUCH_TRANSACTION: i64 = 11000;
}

/// Codes that mean "try again later" wherever they appear in an error tree: timeouts,
/// transport failures, unavailable, overloaded or banned servers and proxies, full request
/// queues and memory pressure.
const RETRYABLE_CODES: &[i64] = &[
    codes::TIMEOUT,
    codes::TRANSPORT_ERROR,
    codes::UNAVAILABLE,
    codes::REQUEST_QUEUE_SIZE_LIMIT_EXCEEDED,
    codes::PEER_BANNED,
    codes::TRANSIENT_FAILURE,
    codes::OVERLOADED,
    codes::REQUEST_MEMORY_PRESSURE,
    codes::RESPONSE_MEMORY_PRESSURE,
    codes::USER_REQUEST_QUEUE_SIZE_LIMIT_EXCEEDED,
    codes::PROXY_BANNED,
];

/// Codes that say the credentials themselves were refused; the HTTP proxy answers them with
/// 401 wherever they appear in the tree.
const AUTHENTICATION_CODES: &[i64] = &[
    codes::INVALID_CREDENTIALS,
    codes::INVALID_CSRF_TOKEN,
    codes::AUTHENTICATION_ERROR,
];

/// Codes after which retrying cannot help: no such node, authentication and authorization
/// failures, a banned user, a lock held by another transaction, a transaction that is gone.
const PERMANENT_CODES: &[i64] = &[
    codes::RESOLVE_ERROR,
    codes::CONCURRENT_TRANSACTION_LOCK_CONFLICT,
    codes::PREREQUISITE_CHECK_FAILED,
    codes::NO_SUCH_TRANSACTION,
    codes::INVALID_CREDENTIALS,
    codes::INVALID_CSRF_TOKEN,
    codes::RPC_AUTHENTICATION_ERROR,
    codes::AUTHENTICATION_ERROR,
    codes::AUTHORIZATION_ERROR,
    codes::USER_BANNED,
];

/// A YTsaurus error object: `{code, message, attributes, inner_errors}`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct YtError {
    pub code: i64,
    pub message: String,
    pub attributes: yson::Map,
    pub inner_errors: Vec<YtError>,
}

impl YtError {
    pub fn new(code: i64, message: impl Into<String>) -> YtError {
        YtError {
            code,
            message: message.into(),
            ..YtError::default()
        }
    }

    /// Reads an error object from a YSON node (missing parts default to empty).
    pub fn from_node(node: &Node) -> Result<YtError, String> {
        if node.as_map().is_none() {
            return Err(format!("an error must be a map, not {}", node.type_name()));
        }
        let code = match node.get("code") {
            None => 1,
            Some(c) => c
                .as_i64()
                .ok_or_else(|| format!("error code is a {}, not an integer", c.type_name()))?,
        };
        let message = node
            .get("message")
            .and_then(Node::as_str)
            .unwrap_or_default()
            .to_string();
        let attributes = node
            .get("attributes")
            .and_then(Node::as_map)
            .cloned()
            .unwrap_or_default();
        let inner_errors = match node.get("inner_errors").and_then(Node::as_list) {
            Some(items) => items
                .iter()
                .map(YtError::from_node)
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        Ok(YtError {
            code,
            message,
            attributes,
            inner_errors,
        })
    }

    /// Reads an error object from JSON text (the `X-YT-Error` header, JSON bodies) or, failing
    /// that, YSON text.
    pub fn parse(text: &[u8]) -> Result<YtError, String> {
        let node = match serde_json::from_slice::<serde_json::Value>(text) {
            Ok(json) => Node::from_json(&json).map_err(|e| e.to_string())?,
            Err(json_err) => yson::parse(text)
                .map_err(|yson_err| format!("neither JSON ({json_err}) nor YSON ({yson_err})"))?,
        };
        YtError::from_node(&node)
    }

    /// The error itself and every inner error, depth first.
    pub fn iter(&self) -> impl Iterator<Item = &YtError> {
        let mut stack = vec![self];
        std::iter::from_fn(move || {
            let next = stack.pop()?;
            stack.extend(next.inner_errors.iter().rev());
            Some(next)
        })
    }

    /// The first error in the tree with this code.
    pub fn find_code(&self, code: i64) -> Option<&YtError> {
        self.iter().find(|e| e.code == code)
    }

    /// Whether the tree says the path does not exist.
    pub fn is_resolve_error(&self) -> bool {
        self.find_code(500).is_some()
            || self
                .iter()
                .any(|e| e.code == 901 && e.message.to_ascii_lowercase().contains("resolv"))
    }

    /// Whether the tree says the credentials were refused (invalid credentials, CSRF token or
    /// authentication error): a definitive "no", never a reason to retry.
    pub fn is_authentication_error(&self) -> bool {
        self.iter().any(|e| AUTHENTICATION_CODES.contains(&e.code))
    }

    /// Whether the tree says the proxy does not know the command (HTTP 404 from the proxy with
    /// `Command "<name>" is not registered`).
    pub fn is_unregistered_command(&self) -> bool {
        self.iter()
            .any(|e| e.message.contains("is not registered") && e.message.starts_with("Command "))
    }

    fn is_permanent(&self) -> bool {
        self.iter().any(|e| PERMANENT_CODES.contains(&e.code))
    }

    fn is_retryable(&self) -> bool {
        self.iter().any(|e| RETRYABLE_CODES.contains(&e.code))
    }
}

impl fmt::Display for YtError {
    /// `message (code N): inner message (code M): ...`, following the first inner error of each
    /// level and naming how many more there are.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut current = self;
        let mut first = true;
        loop {
            if !first {
                f.write_str(": ")?;
            }
            first = false;
            let message = if current.message.is_empty() {
                "(no message)"
            } else {
                current.message.as_str()
            };
            write!(f, "{message} (code {})", current.code)?;
            match current.inner_errors.as_slice() {
                [] => return Ok(()),
                [only] => current = only,
                [head, rest @ ..] => {
                    write!(f, " [+{} more inner errors]", rest.len())?;
                    current = head;
                }
            }
        }
    }
}

impl std::error::Error for YtError {}

/// Classes of failed cluster calls, as operators count and alert on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The call's time ran out (its timeout or the caller's deadline).
    DeadlineExceeded,
    /// No connection to the cluster's proxy within the connect timeout.
    ConnectionTimeout,
    /// The connection was refused, reset or broken.
    Network,
    /// The cluster answered that it cannot serve now.
    Unavailable,
    /// Anything else: undecodable answers, refused redirects, other errors.
    Other,
}

impl FailureKind {
    pub const ALL: [FailureKind; 5] = [
        FailureKind::DeadlineExceeded,
        FailureKind::ConnectionTimeout,
        FailureKind::Network,
        FailureKind::Unavailable,
        FailureKind::Other,
    ];

    /// The metric label (the names the original task proxy's alerts use where they overlap).
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::DeadlineExceeded => "context_deadline_exceeded",
            FailureKind::ConnectionTimeout => "connection_timeout",
            FailureKind::Network => "network_error",
            FailureKind::Unavailable => "unavailable",
            FailureKind::Other => "other",
        }
    }
}

/// What can go wrong with a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The cluster answered with an error.
    #[error("cluster error (HTTP {status}): {error}")]
    Yt { status: u16, error: YtError },
    /// HTTP 401: the credentials are missing or not accepted.
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    /// No answer within the configured timeout.
    #[error("request timed out")]
    Timeout,
    /// Could not connect, or the connection broke.
    #[error("transport error: {0}")]
    Transport(String),
    /// The connection to the cluster's proxy could not be opened in time.
    #[error("connection timed out: {0}")]
    ConnectTimeout(String),
    /// The answer was not what the command returns.
    #[error("cannot decode the cluster's answer: {0}")]
    Decode(String),
    /// The request could not be made as asked (bad URL, bad header value, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The command succeeded but said its answer is incomplete or out of date (`list_jobs`
    /// with `errors`, e.g. an unreachable controller agent, or with jobs marked `is_stale`):
    /// the answer must not be taken as the whole truth. Transient.
    #[error("incomplete answer: {0}")]
    Incomplete(YtError),
    /// The cluster redirected a read to where this client will not send credentials (another
    /// scheme, or a host the cluster does not list as its data proxy), or redirected a
    /// command it never redirects.
    #[error("refused redirect: {0}")]
    Redirect(String),
}

impl Error {
    /// Whether retrying the same request later may succeed: timeouts, connection failures,
    /// 429/5xx answers and retryable YT codes; never 401/403, resolve or permission errors.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Timeout
            | Error::Transport(_)
            | Error::ConnectTimeout(_)
            | Error::Incomplete(_) => true,
            Error::Yt { status, error } => {
                if *status == 401
                    || *status == 403
                    || error.is_permanent()
                    || error.is_unregistered_command()
                {
                    false
                } else {
                    matches!(status, 429 | 500 | 502 | 503 | 504) || error.is_retryable()
                }
            }
            Error::Unauthenticated(_)
            | Error::Decode(_)
            | Error::InvalidArgument(_)
            | Error::Redirect(_) => false,
        }
    }

    /// The class of this failure, for counting and alerting: the call ran out of time, the
    /// connection could not be opened in time, the network failed, the cluster said it is
    /// unavailable (5xx, 429, a banned proxy, a retryable code, an incomplete answer), or
    /// anything else.
    pub fn failure_kind(&self) -> FailureKind {
        match self {
            Error::Timeout => FailureKind::DeadlineExceeded,
            Error::ConnectTimeout(_) => FailureKind::ConnectionTimeout,
            Error::Transport(_) => FailureKind::Network,
            Error::Incomplete(_) => FailureKind::Unavailable,
            Error::Yt { status, error } => {
                if matches!(status, 429 | 500 | 502 | 503 | 504) || error.is_retryable() {
                    FailureKind::Unavailable
                } else {
                    FailureKind::Other
                }
            }
            Error::Unauthenticated(_)
            | Error::Decode(_)
            | Error::InvalidArgument(_)
            | Error::Redirect(_) => FailureKind::Other,
        }
    }

    /// The cluster's error, if the cluster answered with one.
    pub fn yt_error(&self) -> Option<&YtError> {
        match self {
            Error::Yt { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Whether the cluster said the path does not exist.
    pub fn is_resolve_error(&self) -> bool {
        self.yt_error().is_some_and(YtError::is_resolve_error)
    }

    /// Whether another transaction holds a conflicting lock (`lock` without `waitable`, or a
    /// write to a node locked by someone else).
    pub fn is_lock_conflict(&self) -> bool {
        self.yt_error().is_some_and(|e| {
            e.find_code(codes::CONCURRENT_TRANSACTION_LOCK_CONFLICT)
                .is_some()
        })
    }

    /// Whether the transaction (or a prerequisite transaction) no longer exists: aborted,
    /// committed or expired for want of pings.
    pub fn is_transaction_gone(&self) -> bool {
        self.yt_error().is_some_and(|e| {
            e.find_code(codes::NO_SUCH_TRANSACTION).is_some()
                || e.find_code(codes::PREREQUISITE_CHECK_FAILED).is_some()
        })
    }

    /// Whether the proxy does not know the command (an older server).
    pub fn is_unregistered_command(&self) -> bool {
        matches!(self, Error::Yt { status: 404, error } if error.is_unregistered_command())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested() -> YtError {
        YtError::parse(
            br#"{"code":1,"message":"Error getting job","attributes":{"host":"n1"},
                "inner_errors":[{"code":100,"message":"Transport error","inner_errors":[
                    {"code":1,"message":"Connection refused"}]}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn parses_json_and_yson_and_shows_the_chain() {
        let e = nested();
        assert_eq!(e.code, 1);
        assert_eq!(e.attributes.len(), 1);
        assert_eq!(
            e.to_string(),
            "Error getting job (code 1): Transport error (code 100): Connection refused (code 1)"
        );
        assert_eq!(e.find_code(100).unwrap().message, "Transport error");
        let y = YtError::parse(
            br#"{"code"=500;"message"="Error resolving path //x";"attributes"={"tid"=5u;};"inner_errors"=[];}"#,
        )
        .unwrap();
        assert!(y.is_resolve_error());
        assert!(YtError::parse(b"not an error").is_err());
        assert!(YtError::parse(br#"{"code":"x"}"#).is_err());
        assert!(YtError::parse(b"[1]").is_err());
    }

    #[test]
    fn transience() {
        let yt = |status, error| Error::Yt { status, error };
        assert!(Error::Timeout.is_transient());
        assert!(Error::Transport("refused".into()).is_transient());
        assert!(yt(503, YtError::new(1, "x")).is_transient());
        assert!(yt(400, nested()).is_transient(), "retryable inner code");
        assert!(!yt(400, YtError::new(1, "bad")).is_transient());
        assert!(!yt(503, YtError::new(500, "no such node")).is_transient());
        assert!(!yt(403, YtError::new(3, "x")).is_transient());
        assert!(!Error::Unauthenticated("no".into()).is_transient());
        assert!(!Error::Decode("garbage".into()).is_transient());
    }

    #[test]
    fn failure_kinds() {
        use super::FailureKind::*;
        let yt = |status, error| Error::Yt { status, error };
        assert_eq!(Error::Timeout.failure_kind(), DeadlineExceeded);
        assert_eq!(
            Error::ConnectTimeout("x".into()).failure_kind(),
            ConnectionTimeout
        );
        assert!(Error::ConnectTimeout("x".into()).is_transient());
        assert_eq!(Error::Transport("reset".into()).failure_kind(), Network);
        assert_eq!(
            yt(503, YtError::new(2100, "banned")).failure_kind(),
            Unavailable
        );
        assert_eq!(
            yt(400, nested()).failure_kind(),
            Unavailable,
            "retryable code"
        );
        assert_eq!(yt(400, YtError::new(1, "bad")).failure_kind(), Other);
        assert_eq!(Error::Decode("x".into()).failure_kind(), Other);
        let labels: std::collections::HashSet<_> =
            super::FailureKind::ALL.iter().map(|k| k.label()).collect();
        assert_eq!(labels.len(), 5);
    }

    #[test]
    fn server_codes() {
        let yt = |status, error| Error::Yt { status, error };
        // Invalid credentials are never a ban to wait out, whatever the status.
        let invalid = YtError::new(111, "Invalid credentials");
        assert!(invalid.is_authentication_error());
        assert!(!yt(503, invalid.clone()).is_transient());
        let mut wrapped = YtError::new(1, "Error authenticating");
        wrapped.inner_errors.push(invalid);
        assert!(!yt(503, wrapped.clone()).is_transient());
        assert!(wrapped.is_authentication_error());
        assert!(YtError::new(900, "x").is_authentication_error());
        assert!(YtError::new(110, "x").is_authentication_error());
        assert!(!YtError::new(109, "x").is_authentication_error());
        assert!(!yt(503, YtError::new(903, "User is banned")).is_transient());
        // Unavailable, banned or overloaded servers and proxies are worth another try.
        for code in [3, 100, 105, 108, 115, 116, 118, 120, 122, 904, 2100] {
            assert!(yt(400, YtError::new(code, "x")).is_transient(), "{code}");
        }
        // A command the proxy does not know stays unknown.
        let unknown = yt(
            404,
            YtError::new(
                1,
                "Command \"check_operation_permission\" is not registered",
            ),
        );
        assert!(unknown.is_unregistered_command());
        assert!(!unknown.is_transient());
        assert!(!yt(404, YtError::new(1, "No such node")).is_unregistered_command());
        // Lock conflicts and lost transactions are answers, not outages.
        let conflict = yt(400, YtError::new(402, "Cannot take \"exclusive\" lock"));
        assert!(conflict.is_lock_conflict() && !conflict.is_transient());
        let gone = yt(400, YtError::new(11000, "No such transaction 1-2-3-4"));
        assert!(gone.is_transaction_gone() && !gone.is_transient());
        assert!(yt(400, YtError::new(1000, "Prerequisite check failed")).is_transaction_gone());
    }
}
