//! Flags and environment of `task-proxy serve` (see docs/serve.md), validated into a [`Config`].
//!
//! Every flag can also be set by an environment variable: the ones docs/serve.md names keep their
//! names (`YT_PROXY`, `YT_TOKEN_PATH`, `YT_TOKEN`); the others are `TASK_PROXY_<FLAG>`.
//! Durations are written `500ms`, `10s`, `2m` or a bare number of seconds.

use clap::{ArgAction, Args};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where TLS material is looked for when `--tls-cert`/`--tls-key` are not given.
pub const DEFAULT_TLS_CERT: &str = "/etc/certs/tls.crt";
pub const DEFAULT_TLS_KEY: &str = "/etc/certs/tls.key";

/// hyper refuses HTTP/1 read buffers smaller than this.
const MIN_HEADER_BYTES: usize = 8192;

/// The flags of `task-proxy serve`, as clap parses them.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The cluster's HTTP proxy (discovery and auth talk to it).
    #[arg(long, env = "YT_PROXY")]
    pub yt_proxy: Option<String>,

    /// Kubernetes namespace of the cluster: `--yt-proxy` defaults to
    /// `http://http-proxies-lb.<namespace>.svc.cluster.local`.
    #[arg(long, env = "TASK_PROXY_NAMESPACE")]
    pub namespace: Option<String>,

    /// File holding the robot token used for discovery and permission checks.
    #[arg(long, env = "YT_TOKEN_PATH")]
    pub yt_token_path: Option<PathBuf>,

    /// The robot token itself (prefer --yt-token-path).
    #[arg(long, env = "YT_TOKEN", hide_env_values = true)]
    pub yt_token: Option<String>,

    /// Services are served at `<hash>.<base-domain>`.
    #[arg(long, env = "TASK_PROXY_BASE_DOMAIN")]
    pub base_domain: String,

    /// Cypress directory of the services table.
    #[arg(
        long,
        env = "TASK_PROXY_DIR_PATH",
        default_value = "//sys/task_proxies"
    )]
    pub dir_path: String,

    /// Seconds between discovery passes (1 to 86400).
    #[arg(
        long,
        env = "TASK_PROXY_DISCOVERY_PERIOD_SECONDS",
        default_value_t = 2,
        alias = "refresh-period-seconds"
    )]
    pub discovery_period_seconds: u64,

    /// Elect one leader among replicas through a Cypress lock: only it runs discovery passes,
    /// the others follow the snapshot it publishes (default: on with discovery;
    /// `--leader-election=false` gives every replica its own passes).
    #[arg(long, env = "TASK_PROXY_LEADER_ELECTION", action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_parser = parse_go_bool)]
    pub leader_election: Option<bool>,

    /// The node replicas lock to elect the leader (default `<dir-path>/leader`).
    #[arg(long, env = "TASK_PROXY_LEADER_LOCK_PATH")]
    pub leader_lock_path: Option<String>,

    /// Timeout of the election's transaction: a dead leader is replaced after about this long
    /// (1s to 60s).
    #[arg(long, env = "TASK_PROXY_LEADER_TRANSACTION_TIMEOUT", default_value = "10s",
          value_parser = parse_duration)]
    pub leader_transaction_timeout: Duration,

    /// This replica's name in the election (the Helm chart passes the pod name; default: the
    /// host name).
    #[arg(long, env = "TASK_PROXY_POD_NAME")]
    pub pod_name: Option<String>,

    /// This replica's address in the election (the Helm chart passes the pod IP).
    #[arg(long, env = "TASK_PROXY_POD_ADDRESS")]
    pub pod_address: Option<String>,

    /// Check callers' YTsaurus credentials and the operation's ACL (`--auth-enabled=false` turns
    /// it off).
    #[arg(long, env = "TASK_PROXY_AUTH_ENABLED", action = ArgAction::Set,
          num_args = 0..=1, default_value_t = true, default_missing_value = "true",
          value_parser = parse_go_bool)]
    pub auth_enabled: bool,

    /// Cookie that carries a YTsaurus session.
    #[arg(
        long,
        env = "TASK_PROXY_AUTH_COOKIE_NAME",
        default_value = "YTCypressCookie"
    )]
    pub auth_cookie_name: String,

    /// Where the 401 page for browsers links to log in (the YTsaurus UI).
    #[arg(long, env = "TASK_PROXY_AUTH_LOGIN_URL", alias = "login-url")]
    pub auth_login_url: Option<String>,

    /// Serve the browser portal (login, sessions, the landing page) on the base domain and
    /// --portal-hosts (needs auth).
    #[arg(long, env = "TASK_PROXY_PORTAL_ENABLED", action = ArgAction::Set,
          num_args = 0..=1, default_value_t = true, default_missing_value = "true",
          value_parser = parse_go_bool)]
    pub portal_enabled: bool,

    /// More host names that serve the portal besides the base domain (comma-separated, e.g.
    /// task-proxy.example.net); the first one is where browsers are sent to log in.
    #[arg(long, env = "TASK_PROXY_PORTAL_HOSTS", value_delimiter = ',')]
    pub portal_hosts: Vec<String>,

    /// Send jobs the caller's login (`X-YT-TaskProxy-User`) and a signed assertion of it
    /// (`X-YT-TaskProxy-Assertion`, an ES256 JWT); with auth on only. Callers' copies of
    /// these headers are removed either way.
    #[arg(long, env = "TASK_PROXY_IDENTITY_HEADERS", action = ArgAction::Set,
          num_args = 0..=1, default_value_t = true, default_missing_value = "true",
          value_parser = parse_go_bool)]
    pub identity_headers: bool,

    /// PEM file (P-256, PKCS#8 or SEC1 `EC PRIVATE KEY`) with the key that signs job identity
    /// assertions (the same file on every replica, e.g. from a Kubernetes secret); re-read
    /// when it changes. Without it a key is generated at start-up.
    #[arg(long, env = "TASK_PROXY_IDENTITY_KEY_FILE")]
    pub identity_key_file: Option<PathBuf>,

    /// PEM file with the previous signing key during a rotation: only published (JWKS), so
    /// assertions it signed stay verifiable until they expire. An absent file means no
    /// rotation; re-read when it appears, changes or goes.
    #[arg(long, env = "TASK_PROXY_IDENTITY_PREVIOUS_KEY_FILE")]
    pub identity_previous_key_file: Option<PathBuf>,

    /// File with the key that signs browser sessions (at least 32 bytes; the same file on
    /// every replica). Without it a random key is generated: sessions then last until restart
    /// and work with one replica only.
    #[arg(long, env = "TASK_PROXY_PORTAL_KEY_FILE")]
    pub portal_key_file: Option<PathBuf>,

    /// The scheme browsers use to reach the proxy: `auto` (the connection's), or `https` when
    /// TLS ends at an ingress in front of a plaintext listener (redirects and `Secure`
    /// cookies follow it).
    #[arg(long, env = "TASK_PROXY_PORTAL_SCHEME", default_value = "auto",
          value_parser = ["auto", "http", "https"])]
    pub portal_scheme: String,

    /// How long a browser session lasts after login.
    #[arg(long, env = "TASK_PROXY_PORTAL_SESSION_TTL", default_value = "12h", value_parser = parse_duration)]
    pub portal_session_ttl: Duration,

    /// How long a service domain's session cookie lasts before the browser is sent through
    /// the portal again (bounds how long a replica that missed a logout admits it).
    #[arg(long, env = "TASK_PROXY_PORTAL_SERVICE_SESSION_TTL", default_value = "10m", value_parser = parse_duration)]
    pub portal_service_session_ttl: Duration,

    /// Services whose paths under --auth-static-prefix skip auth (comma-separated; empty: none).
    #[arg(
        long,
        env = "TASK_PROXY_AUTH_STATIC_SERVICES",
        value_delimiter = ',',
        default_value = "ui"
    )]
    pub auth_static_services: Vec<String>,

    /// Path prefix that skips auth for --auth-static-services (clean paths only).
    #[arg(long, env = "TASK_PROXY_AUTH_STATIC_PREFIX", default_value = "/static")]
    pub auth_static_prefix: String,

    /// How long a credential's login is cached.
    #[arg(long, env = "TASK_PROXY_AUTH_IDENTITY_TTL", default_value = "5m", value_parser = parse_duration)]
    pub auth_identity_ttl: Duration,

    /// How long an allow decision (user, operation) is cached.
    #[arg(long, env = "TASK_PROXY_AUTH_ALLOW_TTL", default_value = "60s", value_parser = parse_duration)]
    pub auth_allow_ttl: Duration,

    /// How long a deny decision, or a rejected credential, is cached.
    #[arg(long, env = "TASK_PROXY_AUTH_DENY_TTL", default_value = "10s", value_parser = parse_duration)]
    pub auth_deny_ttl: Duration,

    /// While the cluster fails, cached answers this much past their TTL are still used.
    #[arg(long, env = "TASK_PROXY_AUTH_GRACE", default_value = "5m", value_parser = parse_duration)]
    pub auth_grace: Duration,

    /// A failed cluster call is remembered this long per key (no retry storm during outages).
    #[arg(long, env = "TASK_PROXY_AUTH_FAILURE_HOLD", default_value = "1s", value_parser = parse_duration)]
    pub auth_failure_hold: Duration,

    /// Cluster look-ups (whoami) per second for credentials the auth cache does not know, per
    /// client address (IPv6: per /64); beyond it 429 with Retry-After. 0: no limit.
    #[arg(
        long,
        env = "TASK_PROXY_AUTH_LOOKUP_RATE_PER_CLIENT",
        default_value_t = 20
    )]
    pub auth_lookup_rate_per_client: u32,

    /// Look-ups one client address may make at once (bucket size of --auth-lookup-rate-per-client).
    #[arg(
        long,
        env = "TASK_PROXY_AUTH_LOOKUP_BURST_PER_CLIENT",
        default_value_t = 40
    )]
    pub auth_lookup_burst_per_client: u32,

    /// Cluster look-ups per second for unknown credentials, all clients together; beyond it 503
    /// with Retry-After. 0: no limit. Known (cached) users are never limited.
    #[arg(long, env = "TASK_PROXY_AUTH_LOOKUP_RATE", default_value_t = 200)]
    pub auth_lookup_rate: u32,

    /// Bucket size of --auth-lookup-rate.
    #[arg(long, env = "TASK_PROXY_AUTH_LOOKUP_BURST", default_value_t = 400)]
    pub auth_lookup_burst: u32,

    /// Limit of one auth call to the cluster (whoami, check_operation_permission).
    #[arg(long, env = "TASK_PROXY_AUTH_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub auth_timeout: Duration,

    /// Plaintext listener: HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on one port.
    #[arg(long, env = "TASK_PROXY_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// TLS certificate chain (PEM); reloaded when the file changes.
    #[arg(long, env = "TASK_PROXY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM); reloaded when the file changes.
    #[arg(long, env = "TASK_PROXY_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// TLS listener (ALPN h2 and http/1.1), used when a certificate and key are present.
    #[arg(long, env = "TASK_PROXY_TLS_LISTEN", default_value = "0.0.0.0:8443")]
    pub tls_listen: SocketAddr,

    /// Admin listener: /healthz, /readyz, /services, /metrics, /.
    #[arg(long, env = "TASK_PROXY_ADMIN_LISTEN", default_value = "0.0.0.0:9901")]
    pub admin_listen: SocketAddr,

    /// Static services (JSON `{"services": [...]}`), re-read when it changes and on SIGHUP.
    #[arg(long, env = "TASK_PROXY_SERVICES_FILE")]
    pub services_file: Option<PathBuf>,

    /// CA certificates (PEM) that `https` services' jobs must present a certificate from,
    /// issued for the job's host name or IP address. Without it job certificates are not
    /// verified (jobs usually have self-signed ones); the handshake still is.
    #[arg(long, env = "TASK_PROXY_JOB_TLS_CA_FILE")]
    pub job_tls_ca_file: Option<PathBuf>,

    /// Data-plane worker threads, each with its own runtime, listeners and upstream pools
    /// (default: TOKIO_WORKER_THREADS, else the number of cores).
    #[arg(long, env = "TASK_PROXY_WORKER_THREADS")]
    pub worker_threads: Option<usize>,

    /// Most client connections open at once; beyond it new connections are refused.
    #[arg(long, env = "TASK_PROXY_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Largest request head (HTTP/1 buffer; HTTP/2 header list) before 431 (at least 8192).
    #[arg(long, env = "TASK_PROXY_MAX_HEADER_BYTES", default_value_t = 65_536)]
    pub max_header_bytes: usize,

    /// Time a client has to send a request head (and the TLS handshake).
    #[arg(long, env = "TASK_PROXY_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// A client connection with no request in flight for this long is closed.
    #[arg(long, env = "TASK_PROXY_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// An upgraded (WebSocket) tunnel with no byte in either direction for this long is
    /// closed (like HAProxy's `timeout tunnel`); `--idle-timeout` does not apply to tunnels.
    #[arg(long, env = "TASK_PROXY_TUNNEL_IDLE_TIMEOUT", default_value = "1h", value_parser = parse_duration)]
    pub tunnel_idle_timeout: Duration,

    /// How often the users of live long sessions (WebSocket tunnels, SSE and other streaming
    /// responses, gRPC streams) are re-checked: a session is closed within about this long
    /// after its operation stops running (plus a discovery period) or its user loses `read`
    /// on it. 0 turns the re-check off (sessions then last until they end by themselves).
    #[arg(long, env = "TASK_PROXY_SESSION_RECHECK_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub session_recheck_interval: Duration,

    /// Time to establish a TCP connection to a job.
    #[arg(long, env = "TASK_PROXY_UPSTREAM_CONNECT_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub upstream_connect_timeout: Duration,

    /// Time a job has to start its response (headers) before the caller gets 504.
    #[arg(long, env = "TASK_PROXY_UPSTREAM_RESPONSE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub upstream_response_timeout: Duration,

    /// Idle pooled connections to jobs are not reused after this long (and closed soon after).
    #[arg(long, env = "TASK_PROXY_UPSTREAM_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub upstream_idle_timeout: Duration,

    /// Most idle keep-alive HTTP/1.1 connections kept to one job per worker thread (in each of
    /// the two pools: hyper's, and the HTTP/1.1 relay's). A request in flight holds a
    /// connection of its own, so this should cover the concurrent requests a job gets through
    /// one worker; beyond it, connections are closed after their response.
    #[arg(
        long,
        env = "TASK_PROXY_UPSTREAM_MAX_IDLE_PER_JOB",
        default_value_t = 1024
    )]
    pub upstream_max_idle_per_job: usize,

    /// Most connections open to one job (busy and idle, across workers and both forwarding
    /// paths). A request that needs one more waits in a queue (--upstream-queue-length,
    /// --upstream-queue-timeout), else gets 503 with Retry-After.
    #[arg(
        long,
        env = "TASK_PROXY_UPSTREAM_MAX_CONNECTIONS_PER_JOB",
        default_value_t = 256
    )]
    pub upstream_max_connections_per_job: usize,

    /// Most requests waiting for a connection to one job; beyond it they get 503 at once.
    #[arg(long, env = "TASK_PROXY_UPSTREAM_QUEUE_LENGTH", default_value_t = 1024)]
    pub upstream_queue_length: usize,

    /// Longest wait for a connection to a job before 503.
    #[arg(long, env = "TASK_PROXY_UPSTREAM_QUEUE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub upstream_queue_timeout: Duration,

    /// Most concurrent streams on one HTTP/2 caller connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(long, env = "TASK_PROXY_MAX_CONCURRENT_STREAMS", default_value_t = 128)]
    pub max_concurrent_streams: u32,

    /// First ejection of a job that refused a connection; doubled on each further failure.
    #[arg(long, env = "TASK_PROXY_EJECT_BASE", default_value = "1s", value_parser = parse_duration)]
    pub eject_base: Duration,

    /// Longest ejection.
    #[arg(long, env = "TASK_PROXY_EJECT_MAX", default_value = "30s", value_parser = parse_duration)]
    pub eject_max: Duration,

    /// Serve plain HTTP/1.1 connections with the relay (bytes passed on without hyper); with
    /// `false`, every connection takes the general path. A switch for comparisons and
    /// troubleshooting; the behaviour seen by callers and jobs is the same.
    #[arg(long, env = "TASK_PROXY_HTTP1_RELAY", action = ArgAction::Set,
          num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    pub http1_relay: bool,

    /// Send bodiless requests of HTTP/2 callers to `http` jobs over the relay's raw HTTP/1.1
    /// job connections instead of hyper's HTTP/1.1 client (fewer instructions per request).
    /// A switch for comparisons and troubleshooting; callers and jobs see the same exchange.
    #[arg(long, env = "TASK_PROXY_RAW_JOB_STREAMS", action = ArgAction::Set,
          num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    pub raw_job_streams: bool,

    /// Forward request headers whose name contains `_`. Off by default (as nginx's
    /// `underscores_in_headers`): CGI/WSGI servers map `Content_Length` or `X_Forwarded_For`
    /// onto the same variables as `Content-Length` and `X-Forwarded-For`.
    #[arg(long, env = "TASK_PROXY_UNDERSCORES_IN_HEADERS", action = ArgAction::Set,
          num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub underscores_in_headers: bool,

    /// Make services sticky unless their `tasks_info` entry says `sticky=%false`: an affinity
    /// cookie keeps a browser on one job (see the user guide). Off by default: services are
    /// sticky only with `sticky=%true`.
    #[arg(long, env = "TASK_PROXY_STICKY_SESSIONS_DEFAULT", action = ArgAction::Set,
          num_args = 0..=1, default_value_t = false, default_missing_value = "true",
          value_parser = parse_go_bool)]
    pub sticky_sessions_default: bool,

    /// On SIGTERM/SIGINT, in-flight requests get this long to finish.
    #[arg(long, env = "TASK_PROXY_DRAIN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// The original's logging configuration (YAML: `directory`, `server`, `proxy`,
    /// `accessLog`); see docs/serve.md. Without it, logs go to stderr as `--log-format` and
    /// `--log-level` say.
    #[arg(long, env = "TASK_PROXY_LOGGING_CONFIG")]
    pub logging_config: Option<PathBuf>,

    /// The original's auth cache switch. Absent: our caches (TTLs above). `false`: no cached
    /// answers, every request is checked with the cluster. `true`: the `--auth-cache-*`
    /// flags below set the caches.
    #[arg(long, env = "TASK_PROXY_AUTH_CACHE_ENABLED", action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_parser = parse_go_bool)]
    pub auth_cache_enabled: Option<bool>,

    /// With `--auth-cache-enabled`: TTL of every cached answer in seconds (0: no expiration).
    #[arg(
        long,
        env = "TASK_PROXY_AUTH_CACHE_TTL_SECONDS",
        allow_hyphen_values = true
    )]
    pub auth_cache_ttl_seconds: Option<i64>,

    /// With `--auth-cache-enabled`: most entries per cache (0: unlimited).
    #[arg(
        long,
        env = "TASK_PROXY_AUTH_CACHE_CAPACITY",
        allow_hyphen_values = true
    )]
    pub auth_cache_capacity: Option<i64>,

    /// The original's cap on concurrent cluster calls per key on a miss (0: unlimited).
    /// Accepted; ours always makes one call per key and lets the others wait for it.
    #[arg(
        long,
        env = "TASK_PROXY_AUTH_CACHE_MAX_CONCURRENT_BACKEND_REQUESTS",
        allow_hyphen_values = true
    )]
    pub auth_cache_max_concurrent_backend_requests: Option<i64>,

    /// The original's proactive refresh (0: off): with -auth-cache-enabled, a cached answer hit
    /// within this many seconds of its expiry is served and refreshed in the background (one
    /// refresh per entry at a time).
    #[arg(
        long,
        env = "TASK_PROXY_AUTH_CACHE_REFRESH_BEFORE_SECONDS",
        allow_hyphen_values = true
    )]
    pub auth_cache_refresh_before_seconds: Option<i64>,

    /// The original's connect timeout in seconds (positive): sets --upstream-connect-timeout.
    #[arg(
        long,
        env = "TASK_PROXY_CONNECT_TIMEOUT_SECONDS",
        allow_hyphen_values = true
    )]
    pub connect_timeout_seconds: Option<i64>,

    /// The original's route timeout in seconds: a job must complete its response within it
    /// (0: no limit). Absent: no limit on complete responses (streams may run), and
    /// --upstream-response-timeout limits the wait for the response head.
    #[arg(
        long,
        env = "TASK_PROXY_ROUTE_TIMEOUT_SECONDS",
        allow_hyphen_values = true
    )]
    pub route_timeout_seconds: Option<i64>,

    /// The original's stream idle timeout in seconds: a response stream with no byte for this
    /// long is cut (0: no limit). Sets --tunnel-idle-timeout too.
    #[arg(
        long,
        env = "TASK_PROXY_STREAM_IDLE_TIMEOUT_SECONDS",
        allow_hyphen_values = true
    )]
    pub stream_idle_timeout_seconds: Option<i64>,

    /// Validate the flags, print the effective configuration (credentials hidden) and exit:
    /// 0 when it is valid, 2 when not.
    #[arg(long)]
    pub check_config: bool,
}

/// Parses a boolean as Go's flag package does: `1`, `t`, `T`, `true`, `TRUE`, `True`, and
/// the same spellings of false.
pub fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(format!("{other:?} is not a boolean (true or false)")),
    }
}

/// What "no limit" becomes where our settings need a duration (about 100 years).
pub const NO_LIMIT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Parses `500ms`, `10s`, `2m`, `1h` or a bare number of seconds (fractions allowed).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 10s, 2m)"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown duration unit {other:?} in {s:?}")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{s:?}: {e}"))
}

/// Where services come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServicesSource {
    /// The static services file.
    File(PathBuf),
    /// Discovery on the cluster (wired by the discovery issue).
    Discovery,
}

/// TLS material and listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub listen: SocketAddr,
}

/// The CA bundle of `--job-tls-ca-file`, read and checked at start-up.
#[derive(Clone, PartialEq, Eq)]
pub struct JobTlsCa {
    pub path: PathBuf,
    pub certs: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl std::fmt::Debug for JobTlsCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({} certificates)",
            self.path.display(),
            self.certs.len()
        )
    }
}

impl JobTlsCa {
    /// Reads `path`: every PEM certificate in it must be a usable trust anchor, and there must
    /// be at least one.
    pub fn load(path: &Path) -> Result<JobTlsCa, ConfigError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;
        let bad = |reason: String| ConfigError::JobTlsCa {
            path: path.to_path_buf(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("not PEM: {e}")))?;
        if certs.is_empty() {
            return Err(bad("no PEM certificate in it".into()));
        }
        let mut roots = rustls::RootCertStore::empty();
        for (i, cert) in certs.iter().enumerate() {
            roots
                .add(cert.clone())
                .map_err(|e| bad(format!("certificate {}: {e}", i + 1)))?;
        }
        Ok(JobTlsCa {
            path: path.to_path_buf(),
            certs,
        })
    }
}

/// Data-plane limits and timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// Tunnels idle (no byte either way) this long are closed.
    pub tunnel_idle_timeout: Duration,
    /// Live long sessions are re-checked this often (zero: never, and none is registered).
    pub session_recheck_interval: Duration,
    pub upstream_connect_timeout: Duration,
    pub upstream_response_timeout: Duration,
    pub upstream_idle_timeout: Duration,
    pub upstream_max_idle_per_job: usize,
    pub upstream_max_connections_per_job: usize,
    pub upstream_queue_length: usize,
    pub upstream_queue_timeout: Duration,
    /// SETTINGS_MAX_CONCURRENT_STREAMS of caller HTTP/2 connections.
    pub max_concurrent_streams: u32,
    pub eject_base: Duration,
    pub eject_max: Duration,
    pub drain_timeout: Duration,
    /// Plain HTTP/1.1 connections are served by the relay.
    pub http1_relay: bool,
    /// Bodiless requests of HTTP/2 callers to `http` jobs use raw job connections.
    pub raw_job_streams: bool,
    /// Request headers whose name contains `_` are forwarded (else dropped).
    pub underscores_in_headers: bool,
    /// `-route-timeout-seconds`: a job must complete its response within this (None: no
    /// limit on complete responses).
    pub route_timeout: Option<Duration>,
    /// `-stream-idle-timeout-seconds`: a response body with no frame for this long is cut
    /// (None: flag absent or 0; tunnels use `tunnel_idle_timeout`).
    pub stream_idle_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 10_000,
            max_header_bytes: 65_536,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            tunnel_idle_timeout: Duration::from_secs(3600),
            session_recheck_interval: Duration::from_secs(30),
            upstream_connect_timeout: Duration::from_secs(2),
            upstream_response_timeout: Duration::from_secs(60),
            upstream_idle_timeout: Duration::from_secs(30),
            upstream_max_idle_per_job: 1024,
            upstream_max_connections_per_job: 256,
            upstream_queue_length: 1024,
            upstream_queue_timeout: Duration::from_secs(10),
            max_concurrent_streams: 128,
            eject_base: Duration::from_secs(1),
            eject_max: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(20),
            http1_relay: true,
            raw_job_streams: true,
            underscores_in_headers: false,
            route_timeout: None,
            stream_idle_timeout: None,
        }
    }
}

/// The original's auth cache flags as given (shown by `--check-config`;
/// `-auth-cache-max-concurrent-backend-requests` has no counterpart here and is accepted and
/// reported).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginalAuthCache {
    pub enabled: Option<bool>,
    pub ttl_seconds: Option<u64>,
    pub capacity: Option<u64>,
    pub max_concurrent_backend_requests: Option<u64>,
    pub refresh_before_seconds: Option<u64>,
}

/// Auth settings (the gate's own configuration type).
pub use crate::auth::AuthConfig;

/// The validated configuration of `task-proxy serve`.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    pub base_domain: String,
    pub yt_proxy: Option<String>,
    pub yt_token_path: Option<PathBuf>,
    pub yt_token: Option<String>,
    pub dir_path: String,
    pub discovery_period: Duration,
    /// Leader election among replicas (discovery only).
    pub election: Option<ElectionSettings>,
    pub auth: AuthConfig,
    /// Limit of one auth call to the cluster.
    pub auth_timeout: Duration,
    pub listen: SocketAddr,
    pub tls: Option<TlsConfig>,
    /// `--job-tls-ca-file` (None: job certificates are not verified).
    pub job_tls_ca: Option<JobTlsCa>,
    pub admin_listen: SocketAddr,
    pub source: ServicesSource,
    pub worker_threads: usize,
    pub limits: Limits,
    /// `--logging-config`, loaded and validated (None: stderr as `--log-format` says).
    pub logging: Option<crate::logging::LoggingConfig>,
    /// The original's auth cache flags, as given.
    pub original_auth_cache: OriginalAuthCache,
    /// The browser portal (`None`: off, or auth is off).
    pub portal: Option<PortalConfig>,
    /// The signed identity for jobs (`None`: `--identity-headers=false`, or auth is off).
    pub identity: Option<crate::auth::identity::IdentityConfig>,
    /// Whether services whose `tasks_info` does not say are sticky.
    pub sticky_sessions_default: bool,
    /// The key affinity cookies are made with: `--portal-key-file`, shared by the replicas
    /// (None: a random key of this process).
    pub affinity_key_file: Option<PathBuf>,
    /// `--portal-scheme https`: callers use HTTPS even on the plaintext listener, so affinity
    /// cookies are `Secure` there too.
    pub https_callers: bool,
}

/// The browser portal's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalConfig {
    /// Host names serving the portal besides the base domain (lowercase, no port).
    pub hosts: Vec<String>,
    pub key_file: Option<PathBuf>,
    /// `--portal-scheme`: `None` for the connection's own.
    pub scheme: Option<&'static str>,
    pub session_ttl: Duration,
    pub service_session_ttl: Duration,
}

impl std::fmt::Debug for Config {
    // The token must never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("base_domain", &self.base_domain)
            .field("yt_proxy", &self.yt_proxy)
            .field("yt_token_path", &self.yt_token_path)
            .field("yt_token", &self.yt_token.as_ref().map(|_| "<set>"))
            .field("dir_path", &self.dir_path)
            .field("discovery_period", &self.discovery_period)
            .field("election", &self.election)
            .field("auth", &self.auth)
            .field("auth_timeout", &self.auth_timeout)
            .field("listen", &self.listen)
            .field("tls", &self.tls)
            .field("job_tls_ca", &self.job_tls_ca)
            .field("admin_listen", &self.admin_listen)
            .field("source", &self.source)
            .field("worker_threads", &self.worker_threads)
            .field("limits", &self.limits)
            .field("logging", &self.logging)
            .field("original_auth_cache", &self.original_auth_cache)
            .field("portal", &self.portal)
            .field("identity", &self.identity)
            .field("sticky_sessions_default", &self.sticky_sessions_default)
            .field("affinity_key_file", &self.affinity_key_file)
            .field("https_callers", &self.https_callers)
            .finish()
    }
}

/// How replicas elect their leader (`--leader-*`, `--pod-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionSettings {
    pub lock_path: String,
    pub transaction_timeout: Duration,
    pub pod_name: String,
    pub pod_address: Option<String>,
}

/// This host's name: `HOSTNAME` (Kubernetes sets it to the pod name), else `/etc/hostname`.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("task-proxy-{}", std::process::id()))
}

/// Why the flags do not make a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--base-domain must be a domain name like tp.example.net, got {0:?}")]
    BadBaseDomain(String),
    #[error("auth needs --yt-proxy (or --namespace) to check credentials; pass --auth-enabled=false to serve without auth")]
    AuthNeedsYtProxy,
    #[error(
        "nothing to route: give --services-file, or --yt-proxy (or --namespace) for discovery"
    )]
    NoSource,
    #[error("--tls-cert and --tls-key go together (got only {0})")]
    HalfTls(&'static str),
    #[error("--worker-threads must be between 1 and 1024, got {0}")]
    BadWorkerThreads(usize),
    #[error("--max-header-bytes must be at least {MIN_HEADER_BYTES}, got {0}")]
    HeaderBytesTooSmall(usize),
    #[error("--max-connections must be at least 1")]
    NoConnections,
    #[error("--{0} must be at least 1")]
    Zero(&'static str),
    #[error("--{0} must be greater than zero")]
    ZeroDuration(&'static str),
    #[error("--discovery-period-seconds must be positive and not greater than 24 hours")]
    ZeroDiscoveryPeriod,
    #[error("--leader-transaction-timeout must be between 1s and 60s, got {0:?}")]
    BadLeaderTimeout(Duration),
    #[error("--leader-election needs discovery (--yt-proxy or --namespace, no --services-file)")]
    ElectionNeedsDiscovery,
    #[error("'{0}' argument must be non-negative")]
    Negative(&'static str),
    #[error("--connect-timeout-seconds must be positive")]
    ZeroConnectTimeout,
    #[error("logging configuration {path}: {error}")]
    Logging { path: PathBuf, error: String },
    #[error(transparent)]
    Auth(crate::auth::AuthConfigError),
    #[error("--portal-hosts: {0:?} is not a host name")]
    BadPortalHost(String),
    #[error("--job-tls-ca-file {path}: {reason}")]
    JobTlsCa { path: PathBuf, reason: String },
    /// A key file that cannot be used (the loader's message: path and reason).
    #[error("{0}")]
    KeyFile(String),
}

impl Config {
    /// Reads the key files the configuration names (`--identity-key-file`,
    /// `--identity-previous-key-file`, `--portal-key-file`) as serving would, so that
    /// `--check-config` refuses a key the proxy would not start with.
    pub fn check_key_files(&self) -> Result<(), ConfigError> {
        if let Some(identity) = &self.identity {
            // Without a key file a key is generated: nothing to check, and no warning here.
            if identity.key_file.is_some() || identity.previous_key_file.is_some() {
                crate::auth::identity::IdentitySigner::load(identity)
                    .map_err(|e| ConfigError::KeyFile(e.to_string()))?;
            }
        }
        if let Some(path) = &self.affinity_key_file {
            crate::auth::session::SessionKey::from_file(path)
                .map_err(|e| ConfigError::KeyFile(e.to_string()))?;
        }
        Ok(())
    }
}

impl ServeArgs {
    /// Parses `serve` flags (without the program name) as the command line would, environment
    /// variables included.
    pub fn parse_flags<'a>(
        flags: impl IntoIterator<Item = &'a str>,
    ) -> Result<ServeArgs, clap::Error> {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            serve: ServeArgs,
        }
        use clap::Parser;
        Flags::try_parse_from(std::iter::once("serve").chain(flags)).map(|f| f.serve)
    }

    /// Validates the flags. `env_worker_threads` is `TOKIO_WORKER_THREADS` when set.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let tokio_threads = std::env::var("TOKIO_WORKER_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok());
        self.into_config_with(tokio_threads, Path::exists)
    }

    /// [`ServeArgs::into_config`] with the environment passed in (for tests).
    pub fn into_config_with(
        self,
        tokio_worker_threads: Option<usize>,
        file_exists: impl Fn(&Path) -> bool,
    ) -> Result<Config, ConfigError> {
        let base_domain = self.base_domain.trim().trim_end_matches('.').to_string();
        let domain_ok = !base_domain.is_empty()
            && base_domain.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !domain_ok {
            return Err(ConfigError::BadBaseDomain(self.base_domain));
        }

        let yt_proxy = self.yt_proxy.filter(|p| !p.trim().is_empty()).or_else(|| {
            self.namespace
                .as_ref()
                .map(|ns| format!("http://http-proxies-lb.{ns}.svc.cluster.local"))
        });
        if self.auth_enabled && yt_proxy.is_none() {
            return Err(ConfigError::AuthNeedsYtProxy);
        }
        let mut auth = AuthConfig {
            enabled: self.auth_enabled,
            cookie_name: self.auth_cookie_name,
            login_url: self.auth_login_url.filter(|u| !u.trim().is_empty()),
            static_skip: crate::auth::StaticSkip::new(
                self.auth_static_services
                    .into_iter()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
                &self.auth_static_prefix,
            ),
            identity_ttl: self.auth_identity_ttl,
            rejected_identity_ttl: self.auth_deny_ttl,
            allow_ttl: self.auth_allow_ttl,
            deny_ttl: self.auth_deny_ttl,
            grace: self.auth_grace,
            failure_hold: self.auth_failure_hold,
            lookup_limits: crate::auth::LookupLimits {
                per_client_rate: self.auth_lookup_rate_per_client,
                per_client_burst: self.auth_lookup_burst_per_client,
                overall_rate: self.auth_lookup_rate,
                overall_burst: self.auth_lookup_burst,
                ..crate::auth::LookupLimits::default()
            },
            ..AuthConfig::default()
        };
        let original_auth_cache = OriginalAuthCache {
            enabled: self.auth_cache_enabled,
            ttl_seconds: non_negative("auth-cache-ttl-seconds", self.auth_cache_ttl_seconds)?,
            capacity: non_negative("auth-cache-capacity", self.auth_cache_capacity)?,
            max_concurrent_backend_requests: non_negative(
                "auth-cache-max-concurrent-backend-requests",
                self.auth_cache_max_concurrent_backend_requests,
            )?,
            refresh_before_seconds: non_negative(
                "auth-cache-refresh-before-seconds",
                self.auth_cache_refresh_before_seconds,
            )?,
        };
        apply_original_auth_cache(&mut auth, &original_auth_cache);
        auth.validate().map_err(ConfigError::Auth)?;
        if self.auth_timeout.is_zero() {
            return Err(ConfigError::ZeroDuration("auth-timeout"));
        }
        let source = match (&self.services_file, &yt_proxy) {
            (Some(file), _) => ServicesSource::File(file.clone()),
            (None, Some(_)) => ServicesSource::Discovery,
            (None, None) => return Err(ConfigError::NoSource),
        };

        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (Some(_), None) => return Err(ConfigError::HalfTls("--tls-cert")),
            (None, Some(_)) => return Err(ConfigError::HalfTls("--tls-key")),
            (None, None) => {
                let (cert, key) = (
                    PathBuf::from(DEFAULT_TLS_CERT),
                    PathBuf::from(DEFAULT_TLS_KEY),
                );
                (file_exists(&cert) && file_exists(&key)).then_some((cert, key))
            }
        }
        .map(|(cert, key)| TlsConfig {
            cert,
            key,
            listen: self.tls_listen,
        });
        let job_tls_ca = self
            .job_tls_ca_file
            .as_deref()
            .map(JobTlsCa::load)
            .transpose()?;

        // The original's timeout flags, when given, win over ours (same meaning as there).
        let mut upstream_connect_timeout = self.upstream_connect_timeout;
        if let Some(seconds) =
            non_negative("connect-timeout-seconds", self.connect_timeout_seconds)?
        {
            if seconds == 0 {
                return Err(ConfigError::ZeroConnectTimeout);
            }
            upstream_connect_timeout = Duration::from_secs(seconds);
        }
        let mut upstream_response_timeout = self.upstream_response_timeout;
        let mut route_timeout = None;
        if let Some(seconds) = non_negative("route-timeout-seconds", self.route_timeout_seconds)? {
            // The whole response within the limit; its head can come no later than that.
            route_timeout = (seconds > 0).then(|| Duration::from_secs(seconds));
            upstream_response_timeout = route_timeout.unwrap_or(NO_LIMIT);
        }
        let mut tunnel_idle_timeout = self.tunnel_idle_timeout;
        let mut stream_idle_timeout = None;
        if let Some(seconds) = non_negative(
            "stream-idle-timeout-seconds",
            self.stream_idle_timeout_seconds,
        )? {
            stream_idle_timeout = (seconds > 0).then(|| Duration::from_secs(seconds));
            tunnel_idle_timeout = if seconds == 0 {
                NO_LIMIT
            } else {
                Duration::from_secs(seconds)
            };
        }
        let logging = match &self.logging_config {
            Some(path) => Some(crate::logging::LoggingConfig::load(path).map_err(|error| {
                ConfigError::Logging {
                    path: path.clone(),
                    error,
                }
            })?),
            None => None,
        };

        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let worker_threads = self
            .worker_threads
            .or(tokio_worker_threads)
            .unwrap_or(cores);
        if !(1..=1024).contains(&worker_threads) {
            return Err(ConfigError::BadWorkerThreads(worker_threads));
        }
        if self.max_header_bytes < MIN_HEADER_BYTES {
            return Err(ConfigError::HeaderBytesTooSmall(self.max_header_bytes));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::NoConnections);
        }
        for (name, n) in [
            (
                "upstream-max-connections-per-job",
                self.upstream_max_connections_per_job,
            ),
            (
                "max-concurrent-streams",
                self.max_concurrent_streams as usize,
            ),
        ] {
            if n == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if !(1..=86_400).contains(&self.discovery_period_seconds) {
            return Err(ConfigError::ZeroDiscoveryPeriod);
        }
        let discovering = matches!(source, ServicesSource::Discovery);
        let election = match self.leader_election {
            Some(true) if !discovering => return Err(ConfigError::ElectionNeedsDiscovery),
            Some(false) => None,
            _ if !discovering => None,
            _ => {
                let timeout = self.leader_transaction_timeout;
                if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&timeout) {
                    return Err(ConfigError::BadLeaderTimeout(timeout));
                }
                Some(ElectionSettings {
                    lock_path: self
                        .leader_lock_path
                        .filter(|p| !p.trim().is_empty())
                        .unwrap_or_else(|| {
                            format!("{}/leader", self.dir_path.trim_end_matches('/'))
                        }),
                    transaction_timeout: timeout,
                    pod_name: self
                        .pod_name
                        .filter(|n| !n.trim().is_empty())
                        .unwrap_or_else(host_name),
                    pod_address: self.pod_address.filter(|a| !a.trim().is_empty()),
                })
            }
        };
        for (name, d) in [
            ("header-read-timeout", self.header_read_timeout),
            ("idle-timeout", self.idle_timeout),
            ("tunnel-idle-timeout", tunnel_idle_timeout),
            ("upstream-connect-timeout", upstream_connect_timeout),
            ("upstream-response-timeout", upstream_response_timeout),
            ("upstream-idle-timeout", self.upstream_idle_timeout),
            ("upstream-queue-timeout", self.upstream_queue_timeout),
            ("eject-base", self.eject_base),
            ("eject-max", self.eject_max),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        for (name, d) in [
            ("portal-session-ttl", self.portal_session_ttl),
            (
                "portal-service-session-ttl",
                self.portal_service_session_ttl,
            ),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        let portal = if self.portal_enabled && auth.enabled {
            let mut hosts = Vec::new();
            for host in self.portal_hosts {
                let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
                if host.is_empty() {
                    continue;
                }
                let ok = host.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
                if !ok {
                    return Err(ConfigError::BadPortalHost(host));
                }
                hosts.push(host);
            }
            Some(PortalConfig {
                hosts,
                key_file: self.portal_key_file.clone(),
                scheme: match self.portal_scheme.as_str() {
                    "https" => Some("https"),
                    "http" => Some("http"),
                    _ => None,
                },
                session_ttl: self.portal_session_ttl,
                service_session_ttl: self.portal_service_session_ttl,
            })
        } else {
            None
        };

        let affinity_key_file = self.portal_key_file;
        let identity = (self.identity_headers && auth.enabled).then_some({
            crate::auth::identity::IdentityConfig {
                key_file: self.identity_key_file,
                previous_key_file: self.identity_previous_key_file,
            }
        });

        Ok(Config {
            portal,
            identity,
            sticky_sessions_default: self.sticky_sessions_default,
            affinity_key_file,
            https_callers: self.portal_scheme == "https",
            base_domain,
            yt_proxy,
            yt_token_path: self.yt_token_path,
            yt_token: self.yt_token.filter(|t| !t.trim().is_empty()),
            dir_path: self.dir_path,
            discovery_period: Duration::from_secs(self.discovery_period_seconds),
            election,
            auth,
            auth_timeout: self.auth_timeout,
            listen: self.listen,
            tls,
            job_tls_ca,
            admin_listen: self.admin_listen,
            source,
            worker_threads,
            limits: Limits {
                max_connections: self.max_connections,
                max_header_bytes: self.max_header_bytes,
                header_read_timeout: self.header_read_timeout,
                idle_timeout: self.idle_timeout,
                tunnel_idle_timeout,
                session_recheck_interval: self.session_recheck_interval,
                upstream_connect_timeout,
                upstream_response_timeout,
                upstream_idle_timeout: self.upstream_idle_timeout,
                upstream_max_idle_per_job: self.upstream_max_idle_per_job,
                upstream_max_connections_per_job: self.upstream_max_connections_per_job,
                upstream_queue_length: self.upstream_queue_length,
                upstream_queue_timeout: self.upstream_queue_timeout,
                max_concurrent_streams: self.max_concurrent_streams,
                eject_base: self.eject_base,
                eject_max: self.eject_max.max(self.eject_base),
                drain_timeout: self.drain_timeout,
                // The relay does not cut responses at a deadline or after idling: with a route
                // or stream idle timeout every connection takes the general path, which does.
                http1_relay: self.http1_relay
                    && route_timeout.is_none()
                    && stream_idle_timeout.is_none(),
                raw_job_streams: self.raw_job_streams,
                underscores_in_headers: self.underscores_in_headers,
                route_timeout,
                stream_idle_timeout,
            },
            logging,
            original_auth_cache,
        })
    }
}

/// The original refuses negative values of its integer flags with this wording.
fn non_negative(name: &'static str, value: Option<i64>) -> Result<Option<u64>, ConfigError> {
    match value {
        Some(v) if v < 0 => Err(ConfigError::Negative(name)),
        Some(v) => Ok(Some(v as u64)),
        None => Ok(None),
    }
}

/// The original's auth cache flags on our caches. Absent `--auth-cache-enabled`: ours as
/// configured. `false`: nothing is cached (every request asks the cluster; concurrent
/// identical look-ups still share one call). `true`: one TTL for every answer (0: none), one
/// capacity for both caches (0: unlimited), and no stale answers past the TTL (no grace).
fn apply_original_auth_cache(auth: &mut AuthConfig, original: &OriginalAuthCache) {
    match original.enabled {
        None => {}
        Some(false) => {
            auth.identity_ttl = Duration::ZERO;
            auth.rejected_identity_ttl = Duration::ZERO;
            auth.allow_ttl = Duration::ZERO;
            auth.deny_ttl = Duration::ZERO;
            auth.grace = Duration::ZERO;
        }
        Some(true) => {
            // The original never answers from an expired entry.
            auth.grace = Duration::ZERO;
            if let Some(seconds) = original.ttl_seconds {
                let ttl = if seconds == 0 {
                    NO_LIMIT
                } else {
                    Duration::from_secs(seconds)
                };
                auth.identity_ttl = ttl;
                auth.rejected_identity_ttl = ttl;
                auth.allow_ttl = ttl;
                auth.deny_ttl = ttl;
            }
            if let Some(seconds) = original.refresh_before_seconds {
                auth.refresh_before = Duration::from_secs(seconds);
            }
            if let Some(capacity) = original.capacity {
                let capacity = if capacity == 0 { u64::MAX } else { capacity };
                auth.max_identities = capacity;
                auth.max_decisions = capacity;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let cli = Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .expect("flags parse");
        cli.serve.into_config_with(None, |_| false)
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5m").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn minimal_static_config() {
        let c = parse(&[
            "--base-domain",
            "tp.example.net.",
            "--auth-enabled=false",
            "--services-file",
            "/tmp/s.json",
        ])
        .unwrap();
        assert_eq!(c.base_domain, "tp.example.net");
        assert!(!c.auth.enabled);
        assert_eq!(c.source, ServicesSource::File("/tmp/s.json".into()));
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.admin_listen, "0.0.0.0:9901".parse().unwrap());
        assert_eq!(c.auth.cookie_name, "YTCypressCookie");
        assert!(c.tls.is_none());
        assert!(c.worker_threads >= 1);
        assert_eq!(c.limits, Limits::default());
    }

    #[test]
    fn upstream_pool_size_is_a_flag() {
        let c = parse(&[
            "--base-domain=d",
            "--auth-enabled=false",
            "--services-file=f",
            "--upstream-max-idle-per-job=8",
        ])
        .unwrap();
        assert_eq!(c.limits.upstream_max_idle_per_job, 8);
    }

    #[test]
    fn tunnel_idle_timeout_is_a_flag() {
        let base = [
            "--base-domain=d",
            "--auth-enabled=false",
            "--services-file=f",
        ];
        let c = parse(&base).unwrap();
        assert_eq!(c.limits.tunnel_idle_timeout, Duration::from_secs(3600));
        let c = parse(&[&base[..], &["--tunnel-idle-timeout=90s"]].concat()).unwrap();
        assert_eq!(c.limits.tunnel_idle_timeout, Duration::from_secs(90));
        assert_eq!(
            parse(&[&base[..], &["--tunnel-idle-timeout=0"]].concat()),
            Err(ConfigError::ZeroDuration("tunnel-idle-timeout"))
        );
    }

    #[test]
    fn connection_caps_are_flags() {
        let c = parse(&[
            "--base-domain=d",
            "--auth-enabled=false",
            "--services-file=f",
            "--upstream-max-connections-per-job=4",
            "--upstream-queue-length=0",
            "--upstream-queue-timeout=500ms",
            "--max-concurrent-streams=16",
        ])
        .unwrap();
        assert_eq!(c.limits.upstream_max_connections_per_job, 4);
        assert_eq!(c.limits.upstream_queue_length, 0);
        assert_eq!(c.limits.upstream_queue_timeout, Duration::from_millis(500));
        assert_eq!(c.limits.max_concurrent_streams, 16);
        assert_eq!(
            parse(&[
                "--base-domain=d",
                "--auth-enabled=false",
                "--services-file=f",
                "--max-concurrent-streams=0",
            ]),
            Err(ConfigError::Zero("max-concurrent-streams"))
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(
            parse(&["--base-domain", "d", "--services-file", "f"]),
            Err(ConfigError::AuthNeedsYtProxy)
        );
        assert_eq!(
            parse(&["--base-domain", "d", "--auth-enabled=false"]),
            Err(ConfigError::NoSource)
        );
        assert_eq!(
            parse(&[
                "--base-domain",
                "d",
                "--auth-enabled=false",
                "--services-file",
                "f",
                "--tls-cert",
                "c"
            ]),
            Err(ConfigError::HalfTls("--tls-cert"))
        );
        assert!(matches!(
            parse(&[
                "--base-domain",
                "a b",
                "--auth-enabled=false",
                "--services-file",
                "f"
            ]),
            Err(ConfigError::BadBaseDomain(_))
        ));
        assert_eq!(
            parse(&[
                "--base-domain",
                "d",
                "--auth-enabled=false",
                "--services-file",
                "f",
                "--max-header-bytes",
                "100"
            ]),
            Err(ConfigError::HeaderBytesTooSmall(100))
        );
    }

    #[test]
    fn sticky_sessions_are_opt_in_and_share_the_portal_key() {
        let base = [
            "--base-domain=d",
            "--auth-enabled=false",
            "--services-file=f",
        ];
        let off = parse(&base).unwrap();
        assert!(!off.sticky_sessions_default);
        assert_eq!(off.affinity_key_file, None);
        for on in [
            "--sticky-sessions-default",
            "--sticky-sessions-default=true",
        ] {
            let mut flags = base.to_vec();
            flags.extend([on, "--portal-key-file=/k"]);
            let on_config = parse(&flags).unwrap();
            assert!(on_config.sticky_sessions_default, "{on}");
            assert_eq!(on_config.affinity_key_file, Some(PathBuf::from("/k")));
        }
    }

    #[test]
    fn underscores_in_headers_is_off_unless_asked() {
        let base = [
            "--base-domain=d",
            "--auth-enabled=false",
            "--services-file=f",
        ];
        assert!(!parse(&base).unwrap().limits.underscores_in_headers);
        for on in ["--underscores-in-headers", "--underscores-in-headers=true"] {
            let mut flags = base.to_vec();
            flags.push(on);
            assert!(parse(&flags).unwrap().limits.underscores_in_headers, "{on}");
        }
    }

    #[test]
    fn leader_election_is_on_with_discovery() {
        let c = parse(&[
            "--base-domain",
            "d",
            "--yt-proxy",
            "y",
            "--pod-name",
            "tp-0",
        ])
        .unwrap();
        let e = c.election.expect("on by default with discovery");
        assert_eq!(e.lock_path, "//sys/task_proxies/leader");
        assert_eq!(e.transaction_timeout, Duration::from_secs(10));
        assert_eq!(e.pod_name, "tp-0");
        let c = parse(&[
            "--base-domain",
            "d",
            "--yt-proxy",
            "y",
            "--dir-path",
            "//home/tp/",
            "--leader-transaction-timeout",
            "4s",
            "--pod-address",
            "10.0.0.7",
        ])
        .unwrap();
        let e = c.election.unwrap();
        assert_eq!(e.lock_path, "//home/tp/leader");
        assert_eq!(e.transaction_timeout, Duration::from_secs(4));
        assert_eq!(e.pod_address.as_deref(), Some("10.0.0.7"));
        assert!(!e.pod_name.is_empty());
        let off = parse(&[
            "--base-domain",
            "d",
            "--yt-proxy",
            "y",
            "--leader-election=false",
        ]);
        assert_eq!(off.unwrap().election, None);
        assert_eq!(
            parse(&[
                "--base-domain",
                "d",
                "--yt-proxy",
                "y",
                "--leader-transaction-timeout",
                "90s"
            ]),
            Err(ConfigError::BadLeaderTimeout(Duration::from_secs(90)))
        );
        let file = [
            "--base-domain",
            "d",
            "--services-file",
            "s.json",
            "--auth-enabled=false",
        ];
        assert_eq!(parse(&file).unwrap().election, None);
        let mut forced = file.to_vec();
        forced.push("--leader-election");
        assert_eq!(parse(&forced), Err(ConfigError::ElectionNeedsDiscovery));
    }

    #[test]
    fn namespace_gives_yt_proxy() {
        let c = parse(&["--base-domain", "d", "--namespace", "yt"]).unwrap();
        assert_eq!(
            c.yt_proxy.as_deref(),
            Some("http://http-proxies-lb.yt.svc.cluster.local")
        );
        assert_eq!(c.source, ServicesSource::Discovery);
        assert!(c.auth.enabled);
    }

    const STATIC: [&str; 3] = [
        "--base-domain=d",
        "--auth-enabled=false",
        "--services-file=f",
    ];

    fn with(extra: &[&str]) -> Result<Config, ConfigError> {
        parse(&[&STATIC[..], extra].concat())
    }

    #[test]
    fn original_timeout_flags_keep_their_meaning() {
        let ours = with(&[]).unwrap();
        assert_eq!(
            ours.limits.route_timeout, None,
            "no cap on complete responses"
        );
        assert!(ours.limits.http1_relay);
        let c = with(&[
            "--connect-timeout-seconds=7",
            "--route-timeout-seconds",
            "15",
            "--stream-idle-timeout-seconds=300",
        ])
        .unwrap();
        assert_eq!(c.limits.upstream_connect_timeout, Duration::from_secs(7));
        assert_eq!(c.limits.route_timeout, Some(Duration::from_secs(15)));
        assert_eq!(c.limits.upstream_response_timeout, Duration::from_secs(15));
        assert_eq!(c.limits.tunnel_idle_timeout, Duration::from_secs(300));
        assert_eq!(c.limits.stream_idle_timeout, Some(Duration::from_secs(300)));
        assert!(
            !c.limits.http1_relay,
            "the route timeout is enforced on the general path"
        );
        let c = with(&["--stream-idle-timeout-seconds=30"]).unwrap();
        assert!(
            !c.limits.http1_relay,
            "the stream idle timeout is enforced on the general path"
        );
        assert_eq!(ours.limits.stream_idle_timeout, None);
        let c = with(&[
            "--route-timeout-seconds=0",
            "--stream-idle-timeout-seconds=0",
        ])
        .unwrap();
        assert_eq!(c.limits.route_timeout, None);
        assert_eq!(c.limits.upstream_response_timeout, NO_LIMIT);
        assert_eq!(c.limits.tunnel_idle_timeout, NO_LIMIT);
        assert_eq!(c.limits.stream_idle_timeout, None);
        assert!(c.limits.http1_relay);
        assert_eq!(
            with(&["--connect-timeout-seconds=0"]),
            Err(ConfigError::ZeroConnectTimeout)
        );
        assert_eq!(
            with(&["--route-timeout-seconds=-1"]),
            Err(ConfigError::Negative("route-timeout-seconds"))
        );
        assert_eq!(
            with(&["--stream-idle-timeout-seconds", "-5"]),
            Err(ConfigError::Negative("stream-idle-timeout-seconds"))
        );
    }

    #[test]
    fn original_auth_cache_flags_keep_their_meaning() {
        let ours = with(&[]).unwrap();
        assert_eq!(ours.auth.allow_ttl, Duration::from_secs(60));
        assert_eq!(ours.original_auth_cache, OriginalAuthCache::default());
        // The original's default: no cache, every request asks the cluster.
        let off = with(&["--auth-cache-enabled=false"]).unwrap();
        assert_eq!(off.auth.identity_ttl, Duration::ZERO);
        assert_eq!(off.auth.allow_ttl, Duration::ZERO);
        assert_eq!(off.auth.deny_ttl, Duration::ZERO);
        assert_eq!(off.auth.grace, Duration::ZERO);
        // Ignored without the switch, as in the original.
        let ignored = with(&["--auth-cache-enabled=0", "--auth-cache-ttl-seconds=30"]).unwrap();
        assert_eq!(ignored.auth.allow_ttl, Duration::ZERO);
        let on = with(&[
            "--auth-cache-enabled",
            "--auth-cache-ttl-seconds=30",
            "--auth-cache-capacity=1000",
            "--auth-cache-max-concurrent-backend-requests=2",
            "--auth-cache-refresh-before-seconds=5",
        ])
        .unwrap();
        for ttl in [
            on.auth.identity_ttl,
            on.auth.rejected_identity_ttl,
            on.auth.allow_ttl,
            on.auth.deny_ttl,
        ] {
            assert_eq!(ttl, Duration::from_secs(30));
        }
        assert_eq!(on.auth.max_identities, 1000);
        assert_eq!(on.auth.max_decisions, 1000);
        assert_eq!(on.auth.grace, Duration::ZERO);
        assert_eq!(
            on.original_auth_cache,
            OriginalAuthCache {
                enabled: Some(true),
                ttl_seconds: Some(30),
                capacity: Some(1000),
                max_concurrent_backend_requests: Some(2),
                refresh_before_seconds: Some(5),
            }
        );
        assert_eq!(on.auth.refresh_before, Duration::from_secs(5));
        let unlimited = with(&[
            "--auth-cache-enabled=T",
            "--auth-cache-ttl-seconds=0",
            "--auth-cache-capacity=0",
        ])
        .unwrap();
        assert_eq!(unlimited.auth.allow_ttl, NO_LIMIT);
        assert_eq!(unlimited.auth.max_decisions, u64::MAX);
        for flag in [
            "auth-cache-ttl-seconds",
            "auth-cache-capacity",
            "auth-cache-max-concurrent-backend-requests",
            "auth-cache-refresh-before-seconds",
        ] {
            assert_eq!(
                with(&[&format!("--{flag}=-1")]),
                Err(ConfigError::Negative(flag))
            );
        }
    }

    #[test]
    fn go_booleans_and_older_flags() {
        for (value, want) in [
            ("1", true),
            ("t", true),
            ("TRUE", true),
            ("0", false),
            ("F", false),
        ] {
            assert_eq!(parse_go_bool(value), Ok(want));
        }
        assert!(parse_go_bool("yes").is_err());
        let c = parse(&[
            "--base-domain=d",
            "--auth-enabled=0",
            "--services-file=f",
            "--refresh-period-seconds=60",
        ])
        .unwrap();
        assert!(!c.auth.enabled);
        assert_eq!(c.discovery_period, Duration::from_secs(60));
        assert_eq!(
            with(&["--discovery-period-seconds=86401"]),
            Err(ConfigError::ZeroDiscoveryPeriod)
        );
    }

    #[test]
    fn logging_config_is_loaded_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.yaml");
        std::fs::write(&good, "accessLog:\n  enabled: false\n").unwrap();
        let c = with(&["--logging-config", good.to_str().unwrap()]).unwrap();
        assert!(!c.logging.unwrap().access_log.enabled);
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "server:\n  colour: red\n").unwrap();
        match with(&["--logging-config", bad.to_str().unwrap()]) {
            Err(ConfigError::Logging { error, .. }) => assert!(error.contains("colour"), "{error}"),
            other => panic!("{other:?}"),
        }
    }
}
