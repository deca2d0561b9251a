//! One command over HTTP: URL, method, parameters, formats, credentials, timeouts, retries with
//! back-off, error extraction and request accounting. Typed commands live in `commands.rs`.

use crate::config::{ClientConfig, Credentials};
use crate::error::{Error, YtError};
use bytes::Bytes;
use http_body_util::BodyExt;
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use yson::Node;

/// `<format=text>yson`: what the client asks for and sends.
pub(crate) const YSON_TEXT_FORMAT: &str = "<format=text>yson";

/// Heavy commands this client reads: a control proxy redirects them (307) to a data proxy,
/// and a data proxy that fails after the head was sent reports the error in trailers.
const HEAVY_READS: &[&str] = &["read_table", "read_file"];

/// The trailers a heavy command announces (`Trailer:`) and fills when it fails mid-stream.
const ERROR_TRAILERS: [&str; 3] = ["X-YT-Error", "X-YT-Response-Code", "X-YT-Response-Message"];

/// How a command travels: light reads GET, mutations POST, inputs PUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    /// Parameters in `X-YT-Parameters`.
    Get,
    /// Parameters in the body (YSON text).
    Post,
    /// Parameters in `X-YT-Parameters`, the input in the body.
    Put,
}

/// Requests sent so far (every HTTP attempt, retries included).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub requests_total: u64,
    /// Attempts that failed (transport errors and error answers).
    pub errors_total: u64,
    /// Attempts that were retries of an earlier failed attempt.
    pub retries_total: u64,
    pub by_command: BTreeMap<String, u64>,
}

impl ClientStats {
    /// Requests sent between `earlier` and `self`.
    pub fn requests_since(&self, earlier: &ClientStats) -> u64 {
        self.requests_total.saturating_sub(earlier.requests_total)
    }

    /// Per-command requests sent between `earlier` and `self`.
    pub fn by_command_since(&self, earlier: &ClientStats) -> BTreeMap<String, u64> {
        self.by_command
            .iter()
            .map(|(k, v)| {
                let before = earlier.by_command.get(k).copied().unwrap_or(0);
                (k.clone(), v.saturating_sub(before))
            })
            .filter(|(_, v)| *v > 0)
            .collect()
    }
}

#[derive(Debug, Default)]
pub(crate) struct StatsCounters {
    total: AtomicU64,
    errors: AtomicU64,
    retries: AtomicU64,
    by_command: Mutex<BTreeMap<String, u64>>,
}

impl StatsCounters {
    fn count(&self, command: &str, retry: bool) {
        self.total.fetch_add(1, Ordering::Relaxed);
        if retry {
            self.retries.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut map) = self.by_command.lock() {
            *map.entry(command.to_string()).or_default() += 1;
        }
    }

    pub(crate) fn snapshot(&self) -> ClientStats {
        ClientStats {
            requests_total: self.total.load(Ordering::Relaxed),
            errors_total: self.errors.load(Ordering::Relaxed),
            retries_total: self.retries.load(Ordering::Relaxed),
            by_command: self
                .by_command
                .lock()
                .map(|m| m.clone())
                .unwrap_or_default(),
        }
    }
}

/// The shared state behind a `YtClient`.
#[derive(Debug)]
pub(crate) struct Transport {
    http: reqwest::Client,
    /// `scheme://host:port`, no trailing slash.
    base: String,
    robot_auth: Option<HeaderValue>,
    pub(crate) config: ClientConfig,
    pub(crate) stats: StatsCounters,
}

/// A request to send.
pub(crate) struct Call<'a> {
    pub command: &'static str,
    pub method: Method,
    pub params: yson::Map,
    /// The body of a PUT (already in YSON text).
    pub input: Option<Vec<u8>>,
    /// Use these instead of the robot token.
    pub credentials: Option<&'a Credentials>,
}

impl<'a> Call<'a> {
    pub fn new(command: &'static str, method: Method, params: yson::Map) -> Call<'a> {
        Call {
            command,
            method,
            params,
            input: None,
            credentials: None,
        }
    }
}

impl Transport {
    pub(crate) fn new(config: ClientConfig) -> Result<Transport, Error> {
        let base = normalize_base(&config.proxy_url)?;
        let robot_auth = match &config.token {
            Some(token) => {
                let mut value =
                    HeaderValue::from_str(&format!("OAuth {}", token.trim())).map_err(|_| {
                        Error::InvalidArgument(
                            "the token has characters not allowed in a header".into(),
                        )
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let http = reqwest::Client::builder()
            .user_agent(config.user_agent.clone())
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .no_proxy()
            // Redirects are followed by hand (heavy reads only, to the cluster's own data
            // proxies, credentials kept); any other redirect is an answer to report.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::InvalidArgument(format!("cannot build the HTTP client: {e}")))?;
        Ok(Transport {
            http,
            base,
            robot_auth,
            config,
            stats: StatsCounters::default(),
        })
    }

    /// Sends `call` with retries; returns the answer's body.
    pub(crate) async fn execute(&self, call: &Call<'_>) -> Result<Bytes, Error> {
        self.run(call, None).await
    }

    /// Sends a request to a non-command path (like `/auth/whoami`) once per attempt, with the
    /// same retry rules; returns the body.
    pub(crate) async fn execute_raw(
        &self,
        path: &'static str,
        credentials: &Credentials,
    ) -> Result<Bytes, Error> {
        let call = Call {
            credentials: Some(credentials),
            ..Call::new(path, Method::Post, Vec::new())
        };
        self.run(&call, Some(path)).await
    }

    /// `GET` of a non-command path (like `/api/v4/`) with the robot token; returns the body.
    pub(crate) async fn get_raw(&self, path: &'static str) -> Result<Bytes, Error> {
        let call = Call::new(path, Method::Get, Vec::new());
        self.run(&call, Some(path)).await
    }

    /// The retry loop. A wait (back-off or the server's `Retry-After`, whichever is asked) is
    /// never longer than `max_backoff`, and with a call deadline no wait or attempt reaches
    /// past it: the last error is returned instead, so a proxy answering 503 with
    /// `Retry-After: 60` costs the caller at most its own deadline.
    async fn run(&self, call: &Call<'_>, raw_path: Option<&str>) -> Result<Bytes, Error> {
        let deadline = self
            .config
            .deadline
            .map(|d| tokio::time::Instant::now() + d);
        let mut attempt = 0u32;
        loop {
            self.stats.count(call.command, attempt > 0);
            let limit = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if left.is_zero() {
                        self.stats.errors.fetch_add(1, Ordering::Relaxed);
                        return Err(Error::Timeout);
                    }
                    Some(left.min(self.config.timeout))
                }
                None => None,
            };
            let result = match limit {
                Some(limit) => {
                    match tokio::time::timeout(limit, self.attempt(call, raw_path)).await {
                        Ok(result) => result,
                        Err(_) => Err((Error::Timeout, None)),
                    }
                }
                None => self.attempt(call, raw_path).await,
            };
            match result {
                Ok(body) => return Ok(body),
                Err((error, retry_after)) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    if attempt >= self.config.max_retries || !error.is_transient() {
                        return Err(error);
                    }
                    let delay = retry_after
                        .unwrap_or_else(|| self.backoff(attempt))
                        .min(self.config.max_backoff);
                    if let Some(deadline) = deadline {
                        if tokio::time::Instant::now() + delay >= deadline {
                            tracing::debug!(
                                command = call.command,
                                attempt,
                                ?delay,
                                %error,
                                "transient error; no time left to retry"
                            );
                            return Err(error);
                        }
                    }
                    tracing::debug!(
                        command = call.command,
                        attempt,
                        ?delay,
                        %error,
                        "transient error; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Where a heavy read's redirect may go: the same scheme as the cluster's URL, the same
    /// command path, and a host the cluster lists among its data proxies (`GET /hosts`,
    /// whose names are the ones a control proxy redirects to). Anything else is refused, so
    /// the credentials sent with the read never leave the cluster.
    async fn data_proxy_url(&self, location: &str) -> Result<reqwest::Url, Error> {
        let refuse = |why: String| Error::Redirect(format!("to {location:?}: {why}"));
        let base = reqwest::Url::parse(&self.base)
            .map_err(|e| Error::InvalidArgument(format!("bad proxy URL: {e}")))?;
        let target = base
            .join(location)
            .map_err(|e| refuse(format!("not a URL ({e})")))?;
        if target.scheme() != base.scheme() {
            return Err(refuse(format!(
                "the cluster is reached over {}, the redirect asks for {}",
                base.scheme(),
                target.scheme()
            )));
        }
        if !target.path().starts_with("/api/") || !target.username().is_empty() {
            return Err(refuse("not a command path of the API".into()));
        }
        let host = target
            .host_str()
            .ok_or_else(|| refuse("no host".into()))?
            .to_ascii_lowercase();
        let listed = self
            .http
            .get(format!("{}/hosts?role=data", self.base))
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(classify_reqwest)?
            .error_for_status()
            .map_err(classify_reqwest)?
            .json::<Vec<String>>()
            .await
            .map_err(|e| Error::Decode(format!("/hosts: {e}")))?;
        let port = target.port_or_known_default();
        let known = listed.iter().any(|entry| {
            let (name, listed_port) = split_host_port(entry);
            name.eq_ignore_ascii_case(host.trim_start_matches('[').trim_end_matches(']'))
                && listed_port.is_none_or(|p| Some(p) == port)
        });
        if !known {
            return Err(refuse(format!(
                "{host} is not among the cluster's data proxies ({})",
                listed.join(", ")
            )));
        }
        Ok(target)
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .config
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(attempt.min(16)))
            .min(self.config.max_backoff);
        // Full jitter in [base/2, base].
        let half = base / 2;
        let jitter =
            rand::rng().random_range(0..=half.as_micros().min(u128::from(u64::MAX)) as u64);
        half + Duration::from_micros(jitter)
    }

    async fn attempt(
        &self,
        call: &Call<'_>,
        raw_path: Option<&str>,
    ) -> Result<Bytes, (Error, Option<Duration>)> {
        let fail = |e: Error| (e, None);
        let url = match raw_path {
            Some(path) => format!("{}{}", self.base, path),
            None => format!("{}/api/v4/{}", self.base, call.command),
        };
        let mut request = match call.method {
            Method::Get => self.http.get(&url),
            Method::Post => self.http.post(&url),
            Method::Put => self.http.put(&url),
        };
        let mut headers = HeaderMap::new();
        let heavy_read = raw_path.is_none() && HEAVY_READS.contains(&call.command);
        if heavy_read {
            // The server fills the error trailers whatever the request says; HTTP servers
            // built on common libraries send trailers only to a client that says it takes them.
            headers.insert(reqwest::header::TE, HeaderValue::from_static("trailers"));
        }
        if raw_path.is_none() {
            headers.insert(
                "X-YT-Header-Format",
                HeaderValue::from_static(YSON_TEXT_FORMAT),
            );
            headers.insert(
                "X-YT-Output-Format",
                HeaderValue::from_static(YSON_TEXT_FORMAT),
            );
            let mut params = call.params.clone();
            params.push(("output_format".to_string(), yson_text_format_node()));
            if call.input.is_some() {
                headers.insert(
                    "X-YT-Input-Format",
                    HeaderValue::from_static(YSON_TEXT_FORMAT),
                );
                params.push(("input_format".to_string(), yson_text_format_node()));
            }
            let params_text = ascii_yson(&Node::map(params));
            match call.method {
                Method::Post => {
                    headers.insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static("application/x-yt-yson-text"),
                    );
                    request = request.body(params_text);
                }
                Method::Get | Method::Put => {
                    let value = HeaderValue::from_str(&params_text).map_err(|_| {
                        fail(Error::InvalidArgument(
                            "parameters cannot be sent in a header".into(),
                        ))
                    })?;
                    headers.insert("X-YT-Parameters", value);
                    if let Some(input) = &call.input {
                        request = request.body(input.clone());
                    }
                }
            }
        }
        match call.credentials {
            Some(credentials) => {
                let (name, value) = credentials.header();
                let mut value = HeaderValue::from_str(&value).map_err(|_| {
                    fail(Error::Unauthenticated(
                        "the credentials have characters not allowed in a header".into(),
                    ))
                })?;
                value.set_sensitive(true);
                headers.insert(name, value);
            }
            None => {
                if let Some(auth) = &self.robot_auth {
                    headers.insert(reqwest::header::AUTHORIZATION, auth.clone());
                }
            }
        }
        let request = request
            .headers(headers)
            .build()
            .map_err(|e| fail(classify_reqwest(e)))?;
        // Only a heavy read may be sent again (after a redirect); other requests are not
        // copied (a PUT's body may be large).
        let again = if heavy_read {
            request.try_clone()
        } else {
            None
        };
        let mut response = self
            .http
            .execute(request)
            .await
            .map_err(|e| fail(classify_reqwest(e)))?;
        if heavy_read && matches!(response.status().as_u16(), 307 | 308) {
            // One hop, to a data proxy the cluster lists, with the same credentials.
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let target = self.data_proxy_url(&location).await.map_err(fail)?;
            let mut again = again.ok_or_else(|| {
                fail(Error::InvalidArgument(
                    "the redirected request cannot be sent again".into(),
                ))
            })?;
            *again.url_mut() = target;
            response = self
                .http
                .execute(again)
                .await
                .map_err(|e| fail(classify_reqwest(e)))?;
        }
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(3600)));
        let header_error = response
            .headers()
            .get("X-YT-Error")
            .map(|v| v.as_bytes().to_vec());
        let response_code = response
            .headers()
            .get("X-YT-Response-Code")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok());
        let collected = http::Response::<reqwest::Body>::from(response)
            .into_body()
            .collect()
            .await
            .map_err(|e| (classify_reqwest(e), retry_after))?;
        // An error after the head was sent arrives in the trailers, over a 200.
        let (header_error, response_code) = match collected.trailers().and_then(trailer_error) {
            Some(from_trailers) => from_trailers,
            None => (header_error, response_code),
        };
        let body = collected.to_bytes();

        let failed = !status.is_success() || response_code.is_some_and(|c| c != 0);
        if !failed {
            return Ok(body);
        }
        let error = header_error
            .as_deref()
            .and_then(|h| YtError::parse(h).ok())
            .or_else(|| YtError::parse(&body).ok())
            .unwrap_or_else(|| {
                let text = String::from_utf8_lossy(&body);
                let text = text.trim();
                let message = if text.is_empty() {
                    format!("HTTP {status} with no error body")
                } else {
                    text.chars().take(500).collect()
                };
                YtError::new(1, message)
            });
        if status.as_u16() == 401 || error.is_authentication_error() {
            return Err((Error::Unauthenticated(error.to_string()), None));
        }
        // An error object inside a 2xx answer still is an error; call it 500 for classification
        // only if the server said nothing else.
        let status = if status.is_success() {
            500
        } else {
            status.as_u16()
        };
        Err((Error::Yt { status, error }, retry_after))
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` (entries of `/hosts`, with the server's
/// `show_ports` on or off) as the bare host and the port, if any.
fn split_host_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (entry, None),
        };
    }
    match entry.split_once(':') {
        Some((host, port)) if !port.contains(':') => (host, port.parse().ok()),
        _ => (entry, None),
    }
}

/// The error a heavy command reported in its trailers: the `X-YT-Error` object and a non-zero
/// `X-YT-Response-Code` (1, the generic code, when only the error object came).
fn trailer_error(trailers: &HeaderMap) -> Option<(Option<Vec<u8>>, Option<i64>)> {
    let error = trailers
        .get(ERROR_TRAILERS[0])
        .map(|v| v.as_bytes().to_vec());
    let code = trailers
        .get(ERROR_TRAILERS[1])
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|code| *code != 0);
    match (error, code) {
        (None, None) => None,
        (error, code) => Some((error, Some(code.unwrap_or(1)))),
    }
}

fn yson_text_format_node() -> Node {
    Node {
        attributes: vec![("format".to_string(), Node::string("text"))],
        value: yson::Value::String("yson".to_string()),
    }
}

/// YSON text with every non-ASCII byte escaped (`\xNN`), so it fits in a header.
pub(crate) fn ascii_yson(node: &Node) -> String {
    let text = yson::to_text(node);
    if text.is_ascii() {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for b in text.bytes() {
        if b.is_ascii() {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

fn classify_reqwest(error: reqwest::Error) -> Error {
    // The full chain tells "connection refused" from "reset by peer".
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    if error.is_timeout() {
        return if error.is_connect() {
            Error::ConnectTimeout(message)
        } else {
            Error::Timeout
        };
    }
    if error.is_builder() {
        Error::InvalidArgument(message)
    } else {
        Error::Transport(message)
    }
}

fn normalize_base(proxy_url: &str) -> Result<String, Error> {
    let trimmed = proxy_url.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(Error::InvalidArgument("the proxy URL is empty".into()));
    }
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_string()
    } else {
        format!("http://{trimmed}")
    };
    let url = reqwest::Url::parse(&with_scheme)
        .map_err(|e| Error::InvalidArgument(format!("bad proxy URL {proxy_url:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(Error::InvalidArgument(format!(
            "bad proxy URL {proxy_url:?}: expected http://host[:port] or https://host[:port]"
        )));
    }
    Ok(with_scheme)
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_port_of_hosts_entries() {
        use super::split_host_port;
        assert_eq!(split_host_port("proxy-1.yt"), ("proxy-1.yt", None));
        assert_eq!(split_host_port("proxy-1.yt:80"), ("proxy-1.yt", Some(80)));
        assert_eq!(split_host_port("[::1]:8000"), ("::1", Some(8000)));
        assert_eq!(split_host_port("[::1]"), ("::1", None));
        assert_eq!(split_host_port("::1"), ("::1", None));
    }

    use super::*;

    #[test]
    fn base_urls() {
        assert_eq!(
            normalize_base("localhost:8000").unwrap(),
            "http://localhost:8000"
        );
        assert_eq!(
            normalize_base("https://yt.example/").unwrap(),
            "https://yt.example"
        );
        assert!(normalize_base("").is_err());
        assert!(normalize_base("ftp://x").is_err());
    }

    #[test]
    fn headers_stay_ascii() {
        let node = Node::map(vec![("path".into(), Node::string("//home/тест"))]);
        let text = ascii_yson(&node);
        assert!(text.is_ascii());
        let back = yson::parse(text.as_bytes()).unwrap();
        assert_eq!(back.get("path").and_then(Node::as_str), Some("//home/тест"));
    }
}
