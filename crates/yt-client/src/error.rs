//! Errors: the cluster's own error objects ([`YtError`], a tree of code, message, attributes and
//! inner errors) and this client's [`Error`], which says whether retrying can help.

use std::fmt;
use yson::Node;

/// Codes that mean "try again later" wherever they appear in an error tree: timeout (3), RPC
/// transport error, unavailable, request queue full, banned peer (100, 105, 108, 111), and the
/// user's request queue being full (904).
const RETRYABLE_CODES: &[i64] = &[3, 100, 105, 108, 111, 904];

/// Codes after which retrying cannot help: no such node (500), authentication (900, 109) and
/// authorization (901) failures.
const PERMANENT_CODES: &[i64] = &[500, 900, 901, 109];

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
    /// The answer was not what the command returns.
    #[error("cannot decode the cluster's answer: {0}")]
    Decode(String),
    /// The request could not be made as asked (bad URL, bad header value, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    /// Whether retrying the same request later may succeed: timeouts, connection failures,
    /// 429/5xx answers and retryable YT codes; never 401/403, resolve or permission errors.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Timeout | Error::Transport(_) => true,
            Error::Yt { status, error } => {
                if *status == 401 || *status == 403 || error.is_permanent() {
                    false
                } else {
                    matches!(status, 429 | 500 | 502 | 503 | 504) || error.is_retryable()
                }
            }
            Error::Unauthenticated(_) | Error::Decode(_) | Error::InvalidArgument(_) => false,
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
}
