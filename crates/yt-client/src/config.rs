//! Client settings and the credentials a request is made with. Neither ever prints a secret:
//! their `Debug` output redacts tokens and cookie values.

use std::fmt;
use std::time::Duration;

/// How to reach the cluster and how patient to be.
#[derive(Clone)]
pub struct ClientConfig {
    /// `http://host:port`, `https://host`, or a bare `host:port` (taken as `http://`).
    pub proxy_url: String,
    /// The robot's token, sent as `Authorization: OAuth <token>` on every request except
    /// [`crate::YtClient::whoami`], which uses the caller's credentials.
    pub token: Option<String>,
    /// Limit for one HTTP attempt (connect, send, and read the whole answer).
    pub timeout: Duration,
    /// Limit for a whole call: every attempt and every wait between attempts. A retry whose
    /// wait would end past it is not made (the last error is returned); an attempt is cut to
    /// the time left. `None`: attempts times `timeout` plus the waits.
    pub deadline: Option<Duration>,
    /// Attempts after the first one for transient failures.
    pub max_retries: u32,
    /// First back-off; doubled on each retry, with jitter, up to [`ClientConfig::max_backoff`].
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub user_agent: String,
    /// Requests per `execute_batch` call; larger batches are split.
    pub batch_chunk_size: usize,
    /// Page size for `list_operations` and `list_jobs` (the server may cap it lower).
    pub page_size: u32,
}

impl ClientConfig {
    /// Defaults: no token, 30 s per attempt, no overall deadline, 3 retries from 100 ms up to 5 s, batches of 100,
    /// pages of 100.
    pub fn new(proxy_url: impl Into<String>) -> Self {
        ClientConfig {
            proxy_url: proxy_url.into(),
            token: None,
            timeout: Duration::from_secs(30),
            deadline: None,
            max_retries: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            user_agent: concat!("yt-client-rs/", env!("CARGO_PKG_VERSION")).to_string(),
            batch_chunk_size: 100,
            page_size: 100,
        }
    }

    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Bounds every call, retries and waits included (see [`ClientConfig::deadline`]).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("proxy_url", &self.proxy_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("deadline", &self.deadline)
            .field("max_retries", &self.max_retries)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("user_agent", &self.user_agent)
            .field("batch_chunk_size", &self.batch_chunk_size)
            .field("page_size", &self.page_size)
            .finish()
    }
}

/// A caller's YTsaurus credentials, as auth extracted them from a request.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Credentials {
    /// `Authorization: OAuth <token>`.
    OAuth(String),
    /// `Authorization: Bearer <token>` (IAM-style).
    Bearer(String),
    /// A session cookie, conventionally `YTCypressCookie`.
    Cookie { name: String, value: String },
}

impl Credentials {
    /// The header that carries these credentials to the cluster.
    pub(crate) fn header(&self) -> (reqwest::header::HeaderName, String) {
        match self {
            Credentials::OAuth(token) => (reqwest::header::AUTHORIZATION, format!("OAuth {token}")),
            Credentials::Bearer(token) => {
                (reqwest::header::AUTHORIZATION, format!("Bearer {token}"))
            }
            Credentials::Cookie { name, value } => {
                (reqwest::header::COOKIE, format!("{name}={value}"))
            }
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::OAuth(_) => f.write_str("OAuth(<redacted>)"),
            Credentials::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Credentials::Cookie { name, .. } => f
                .debug_struct("Cookie")
                .field("name", name)
                .field("value", &"<redacted>")
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secrets() {
        let config = ClientConfig::new("localhost:80").with_token("robot-secret");
        let shown = format!("{config:?}");
        assert!(!shown.contains("robot-secret"), "{shown}");
        assert!(shown.contains("<redacted>"));
        for creds in [
            Credentials::OAuth("s3cret".into()),
            Credentials::Bearer("s3cret".into()),
            Credentials::Cookie {
                name: "YTCypressCookie".into(),
                value: "s3cret".into(),
            },
        ] {
            let shown = format!("{creds:?}");
            assert!(!shown.contains("s3cret"), "{shown}");
        }
    }
}
