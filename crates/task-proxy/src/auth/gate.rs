//! The gate: for each routed request, take the caller's credentials out of it, find out who
//! the caller is and whether they may read the operation, through the caches.
//!
//! The cached path costs one SHA-256 of the credential and two cache look-ups (identity by
//! fingerprint, decision by `(login, operation)`). Misses go to the cluster once per key, however
//! many requests wait for it. When the cluster fails, answers that expired less than the grace
//! period ago are used; a caller with no such answer gets 503. Look-ups for credentials the
//! identity cache does not know are limited per client address and overall ([`super::limit`]).

use super::backend::{AuthBackend, BackendError};
use super::cache::{Clock, FetchError, Found, GraceCache, LookupError, RefreshTimedOut, Source};
use super::credentials::{take_credentials, Credential, Presented};
use super::front::FrontCache;
use super::identity::{Audience, IdentityHeaders, IdentitySigner};
use super::limit::{Limited, LookupLimiter, LookupLimits};
use super::login_page::{validate_login_url, BadLoginUrl};
use super::metrics::{AuthMetrics, CacheName, CacheResult, Call, CallResult, LimitResult, Outcome};
use super::session::Sessions;
use super::static_skip::{Fetch, StaticSkip};
use super::{Admitted, LimitScope, LoginHint, Refusal};
use crate::routing::Route;
use prometheus_client::registry::Registry;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The default auth cookie name.
pub const DEFAULT_COOKIE_NAME: &str = "YTCypressCookie";

/// How the gate behaves. [`AuthConfig::default`] gives production defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// `--auth-enabled`: false admits everyone (credentials are still removed).
    pub enabled: bool,
    /// `--auth-cookie-name`.
    pub cookie_name: String,
    /// `--auth-login-url`: where the browser login page links to.
    pub login_url: Option<String>,
    /// Paths that skip auth (`/static/` of `ui` services by default).
    pub static_skip: StaticSkip,
    /// How long a credential's login is trusted.
    pub identity_ttl: Duration,
    /// How long a credential the cluster rejected stays rejected without asking again.
    pub rejected_identity_ttl: Duration,
    /// How long an allow decision holds.
    pub allow_ttl: Duration,
    /// How long a deny decision holds (shorter: a user just granted access waits less).
    pub deny_ttl: Duration,
    /// How long past its TTL an answer may still be used while the cluster fails.
    pub grace: Duration,
    /// How long a failed cluster call is remembered per key: meanwhile requests get the stale
    /// answer (or 503) without asking the cluster again.
    pub failure_hold: Duration,
    /// Size bounds of the two caches (entries).
    pub max_identities: u64,
    pub max_decisions: u64,
    /// `Retry-After` of 503 answers.
    pub retry_after: Duration,
    /// Limits on cluster look-ups for credentials the caches do not know.
    pub lookup_limits: LookupLimits,
    /// A cached answer hit within this long of its expiry is refreshed in the background
    /// (the original's `-auth-cache-refresh-before-seconds`; zero: never).
    pub refresh_before: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: true,
            cookie_name: DEFAULT_COOKIE_NAME.to_string(),
            login_url: None,
            static_skip: StaticSkip::default(),
            identity_ttl: Duration::from_secs(300),
            rejected_identity_ttl: Duration::from_secs(10),
            allow_ttl: Duration::from_secs(60),
            deny_ttl: Duration::from_secs(10),
            grace: Duration::from_secs(300),
            failure_hold: Duration::from_secs(1),
            max_identities: 100_000,
            max_decisions: 200_000,
            retry_after: Duration::from_secs(5),
            lookup_limits: LookupLimits::default(),
            refresh_before: Duration::ZERO,
        }
    }
}

/// Why an [`AuthConfig`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthConfigError {
    #[error(transparent)]
    LoginUrl(#[from] BadLoginUrl),
    #[error("--auth-cookie-name must be a non-empty cookie name (token characters), got {0:?}")]
    CookieName(String),
    #[error("auth cache sizes must be positive")]
    CacheSize,
    #[error("{0} must be at least 1 when its rate is set")]
    LookupBurst(&'static str),
}

impl AuthConfig {
    pub fn validate(&self) -> Result<(), AuthConfigError> {
        let cookie_ok = !self.cookie_name.is_empty()
            && self
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !cookie_ok {
            return Err(AuthConfigError::CookieName(self.cookie_name.clone()));
        }
        if let Some(url) = &self.login_url {
            validate_login_url(url)?;
        }
        if self.max_identities == 0 || self.max_decisions == 0 {
            return Err(AuthConfigError::CacheSize);
        }
        let limits = &self.lookup_limits;
        if limits.per_client_rate > 0 && limits.per_client_burst == 0 {
            return Err(AuthConfigError::LookupBurst(
                "--auth-lookup-burst-per-client",
            ));
        }
        if limits.overall_rate > 0 && limits.overall_burst == 0 {
            return Err(AuthConfigError::LookupBurst("--auth-lookup-burst"));
        }
        Ok(())
    }
}

/// What a credential belongs to, as cached.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Identity {
    User(Arc<str>),
    /// The cluster does not accept the credential; why, safe to show the caller.
    Rejected(Arc<str>),
}

/// Why the identity cache has no answer for a credential.
#[derive(Debug, Clone)]
enum IdentityFailure {
    /// The cluster failed (logged where it happened; remembered for the failure hold).
    Cluster,
    /// The look-up limits refused the `whoami` (not remembered: the next request may try).
    Limited(Limited),
}

impl From<RefreshTimedOut> for IdentityFailure {
    fn from(_: RefreshTimedOut) -> Self {
        IdentityFailure::Cluster
    }
}

impl FetchError for IdentityFailure {
    fn is_held(&self) -> bool {
        matches!(self, IdentityFailure::Cluster)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DecisionKey {
    user: Arc<str>,
    operation: Arc<str>,
}

struct Checks {
    backend: Arc<dyn AuthBackend>,
    /// Per-thread copies of fresh allow decisions (the hot path of thread-per-core workers).
    front: FrontCache,
    clock: Clock,
    identities: GraceCache<[u8; 32], Identity, IdentityFailure>,
    decisions: GraceCache<DecisionKey, bool, String>,
    /// Bounds the `whoami` calls that unknown credentials cause.
    limiter: LookupLimiter,
    login: Arc<LoginHint>,
    identity_ttl: Duration,
    rejected_identity_ttl: Duration,
    allow_ttl: Duration,
    deny_ttl: Duration,
    retry_after_seconds: u32,
    /// Set once the cluster turns out to lack `check_operation_permission`.
    unsupported: std::sync::OnceLock<Arc<str>>,
    /// See [`AuthConfig::refresh_before`].
    refresh_before: Duration,
}

struct Inner {
    cookie_name: String,
    static_skip: StaticSkip,
    metrics: AuthMetrics,
    /// `None` when auth is off.
    checks: Option<Arc<Checks>>,
    /// Browser sessions of the portal, when it runs: their service cookies stand for a login.
    sessions: std::sync::OnceLock<Arc<Sessions>>,
    /// The signer of the identity jobs get (`--identity-headers`), once the server set it.
    identity: std::sync::OnceLock<Arc<IdentitySigner>>,
}

/// The cluster gave no answer to a re-check (the reason, without credentials).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the permission could not be re-checked: {0}")]
pub struct RecheckError(pub String);

/// The auth gate in front of every service. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("enabled", &self.is_enabled())
            .field("cookie_name", &self.inner.cookie_name)
            .finish_non_exhaustive()
    }
}

impl Default for Gate {
    fn default() -> Self {
        Gate::disabled()
    }
}

impl Gate {
    /// A gate that admits everyone (`--auth-enabled=false`); it still removes YTsaurus
    /// credentials (with the default cookie name) so jobs never see them.
    pub fn disabled() -> Gate {
        Gate::disabled_with_cookie_name(DEFAULT_COOKIE_NAME)
    }

    /// Like [`Gate::disabled`], removing the cookie `cookie_name`.
    pub fn disabled_with_cookie_name(cookie_name: &str) -> Gate {
        Gate {
            inner: Arc::new(Inner {
                cookie_name: cookie_name.to_string(),
                static_skip: StaticSkip::none(),
                metrics: AuthMetrics::new(),
                checks: None,
                sessions: std::sync::OnceLock::new(),
                identity: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The gate `config` describes, asking `backend` on cache misses. With
    /// `config.enabled == false` the backend is never called.
    pub fn new(config: AuthConfig, backend: Arc<dyn AuthBackend>) -> Result<Gate, AuthConfigError> {
        Gate::with_clock(config, backend, Clock::System)
    }

    pub(crate) fn with_clock(
        config: AuthConfig,
        backend: Arc<dyn AuthBackend>,
        clock: Clock,
    ) -> Result<Gate, AuthConfigError> {
        config.validate()?;
        if !config.enabled {
            return Ok(Gate::disabled_with_cookie_name(&config.cookie_name));
        }
        let identity_max_ttl = config.identity_ttl.max(config.rejected_identity_ttl);
        let decision_max_ttl = config.allow_ttl.max(config.deny_ttl);
        let checks = Checks {
            backend,
            front: FrontCache::new(),
            clock: clock.clone(),
            identities: GraceCache::new(
                config.max_identities,
                identity_max_ttl,
                config.grace,
                config.failure_hold,
                clock.clone(),
            )
            .with_refresh_before(config.refresh_before),
            decisions: GraceCache::new(
                config.max_decisions,
                decision_max_ttl,
                config.grace,
                config.failure_hold,
                clock.clone(),
            )
            .with_refresh_before(config.refresh_before),
            limiter: LookupLimiter::new(config.lookup_limits, clock),
            login: Arc::new(LoginHint {
                login_url: config.login_url.clone(),
                cookie_name: config.cookie_name.clone(),
            }),
            refresh_before: config.refresh_before,
            identity_ttl: config.identity_ttl,
            rejected_identity_ttl: config.rejected_identity_ttl,
            allow_ttl: config.allow_ttl,
            deny_ttl: config.deny_ttl,
            retry_after_seconds: u32::try_from(config.retry_after.as_secs().max(1))
                .unwrap_or(u32::MAX),
            unsupported: std::sync::OnceLock::new(),
        };
        Ok(Gate {
            inner: Arc::new(Inner {
                cookie_name: config.cookie_name,
                static_skip: config.static_skip,
                metrics: AuthMetrics::new(),
                checks: Some(Arc::new(checks)),
                sessions: std::sync::OnceLock::new(),
                identity: std::sync::OnceLock::new(),
            }),
        })
    }

    /// The auth cookie's name (removed from requests; jobs may not set it).
    pub fn cookie_name(&self) -> &str {
        &self.inner.cookie_name
    }

    /// Why no request can be decided (the cluster lacks a command auth needs), once found at
    /// start-up or on first use; `/readyz` fails while it is set.
    pub fn unsupported(&self) -> Option<Arc<str>> {
        self.inner.checks.as_ref()?.unsupported.get().cloned()
    }

    /// Records that the cluster cannot decide requests (logged once, as an error).
    pub fn mark_unsupported(&self, reason: &str) {
        if let Some(checks) = &self.inner.checks {
            checks.mark_unsupported(reason);
        }
    }

    /// Signs the identity of admitted users for the jobs from now on.
    pub fn attach_identity(&self, identity: Arc<IdentitySigner>) {
        let _ = self.inner.identity.set(identity);
    }

    /// The identity signer, when it is on.
    pub fn identity(&self) -> Option<&Arc<IdentitySigner>> {
        self.inner.identity.get()
    }

    /// The identity headers for a request `admitted` to `route`: none for an anonymous
    /// request (auth off, the static exemption) or with the feature off. The data plane adds
    /// them after removing the caller's copies.
    pub fn identity_headers(&self, admitted: &Admitted, route: &Route) -> Option<IdentityHeaders> {
        let identity = self.inner.identity.get()?;
        let user = admitted.user.as_deref()?;
        let audience = Audience {
            domain: &route.domain,
            operation_id: &route.key.operation_id,
            task: &route.key.task_name,
            service: &route.key.service,
        };
        match identity.headers(user, audience) {
            Ok(headers) => Some(headers),
            Err(error) => {
                // The job then sees an anonymous request (the caller's copies are gone).
                tracing::warn!(%error, service = %route.key, "cannot sign the caller's identity");
                None
            }
        }
    }

    /// Accepts the portal's service session cookies as credentials from now on (and removes
    /// them from every request). Set once, at start-up.
    pub fn attach_sessions(&self, sessions: Arc<Sessions>) {
        let _ = self.inner.sessions.set(sessions);
    }

    /// The login behind `credential` (`whoami` through the identity cache and the look-up
    /// limits), for the portal's login.
    pub async fn identify(
        &self,
        credential: &Credential,
        client: IpAddr,
    ) -> Result<String, Refusal> {
        let Some(checks) = &self.inner.checks else {
            return Err(Refusal::Unsupported {
                reason: Arc::from("auth is off"),
            });
        };
        checks
            .identify(
                credential,
                credential.fingerprint(),
                client,
                &self.inner.metrics,
            )
            .await
            .map(|user| user.to_string())
    }

    /// Whether `user` may read `operation_id` (the cached decision every request uses).
    pub async fn may_read(&self, user: &str, operation_id: &str) -> Result<bool, Refusal> {
        let Some(checks) = &self.inner.checks else {
            return Ok(true);
        };
        match checks
            .decision(Arc::from(user), operation_id, &self.inner.metrics)
            .await
        {
            Ok(_) => Ok(true),
            Err(Refusal::Forbidden { .. }) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// Asks the cluster again, past the caches, whether `user` may read `operation_id`, and
    /// stores the answer in the decision cache; a deny also retires the workers' per-thread
    /// copies, so new requests are refused from now on. For the re-checker of live sessions: `Err`
    /// when the cluster gave no answer, which must never be taken for a deny.
    pub async fn recheck_read(&self, user: &str, operation_id: &str) -> Result<bool, RecheckError> {
        let Some(checks) = &self.inner.checks else {
            return Ok(true);
        };
        if let Some(reason) = checks.unsupported.get() {
            return Err(RecheckError(reason.to_string()));
        }
        let key = DecisionKey {
            user: Arc::from(user),
            operation: Arc::from(operation_id),
        };
        let allowed = checks
            .fetch_decision(&key, &self.inner.metrics)
            .await
            .map_err(RecheckError)?;
        let ttl = if allowed {
            checks.allow_ttl
        } else {
            checks.deny_ttl
        };
        checks.decisions.store_refreshed(key, allowed, ttl).await;
        if !allowed {
            // The workers' copies of the old allow must not outlive it.
            checks.front.invalidate();
        }
        Ok(allowed)
    }

    /// Whether requests are checked.
    pub fn is_enabled(&self) -> bool {
        self.inner.checks.is_some()
    }

    /// The gate's metrics (also for tests).
    pub fn metrics(&self) -> &AuthMetrics {
        &self.inner.metrics
    }

    /// Adds the auth metrics (with the identity signer's, once attached) to the data
    /// plane's registry.
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.inner.metrics.register(registry);
        if let Some(identity) = self.inner.identity.get() {
            identity.metrics().register(registry);
        }
    }

    /// Decides on a routed request from `client` (the peer address, for the look-up limits);
    /// removes the caller's YTsaurus credentials from `parts` whatever the outcome.
    /// `body_empty`: whether the request's body is known to be empty (only bodiless fetches
    /// may skip auth on static paths).
    pub async fn admit(
        &self,
        parts: &mut http::request::Parts,
        body_empty: bool,
        route: &Route,
        client: IpAddr,
    ) -> Result<Admitted, Refusal> {
        let fetch = Fetch::of(&parts.method, &parts.headers, body_empty);
        self.admit_headers(&mut parts.headers, parts.uri.path(), fetch, route, client)
            .await
    }

    /// [`Gate::admit`] for a request given by its headers, path and [`Fetch`] shape (the
    /// HTTP/1.1 relay passes just its `Authorization` and `Cookie` headers, and works out the
    /// shape from its own parse of the head).
    pub async fn admit_headers(
        &self,
        headers: &mut http::HeaderMap,
        path: &str,
        fetch: Fetch,
        route: &Route,
        client: IpAddr,
    ) -> Result<Admitted, Refusal> {
        let inner = &*self.inner;
        let session = inner
            .sessions
            .get()
            .and_then(|sessions| sessions.take_service_cookie(headers, &route.domain));
        let presented = take_credentials(headers, &inner.cookie_name);
        let metrics = &inner.metrics;
        let Some(checks) = &inner.checks else {
            metrics.decision(Outcome::Disabled);
            return Ok(Admitted::default());
        };
        if inner.static_skip.admits(&route.key.service, path, fetch) {
            metrics.decision(Outcome::Skipped);
            return Ok(Admitted::default());
        }
        let credential = match presented {
            Presented::Credential(credential) => credential,
            Presented::Missing => {
                return self.admit_session(checks, session, route).await;
            }
            Presented::Malformed(reason) => {
                metrics.decision(Outcome::Unauthenticated);
                return Err(checks.unauthenticated(reason));
            }
        };
        if let Some(reason) = checks.unsupported.get() {
            metrics.decision(Outcome::Unavailable);
            return Err(Refusal::Unsupported {
                reason: reason.clone(),
            });
        }
        let result = checks
            .decide(&credential, &route.key.operation_id, client, metrics)
            .await;
        match &result {
            Ok((_, true)) => metrics.decision(Outcome::AllowedStale),
            Ok((_, false)) => metrics.decision(Outcome::Allowed),
            Err(Refusal::Forbidden { .. }) => metrics.decision(Outcome::Denied),
            Err(Refusal::Unauthenticated { .. }) => metrics.decision(Outcome::Unauthenticated),
            Err(Refusal::Unavailable { .. } | Refusal::Unsupported { .. }) => {
                metrics.decision(Outcome::Unavailable)
            }
            Err(Refusal::Limited { .. }) => metrics.decision(Outcome::Limited),
        }
        if let Err(refusal) = &result {
            tracing::debug!(
                service = %route.key,
                credential = credential.kind(),
                ?refusal,
                "auth refused a request"
            );
        }
        result.map(|(admitted, _)| admitted)
    }
}

impl Gate {
    /// A request whose only credential is a browser session of the portal (or none).
    async fn admit_session(
        &self,
        checks: &Arc<Checks>,
        session: Option<Result<String, super::session::Invalid>>,
        route: &Route,
    ) -> Result<Admitted, Refusal> {
        let metrics = &self.inner.metrics;
        let user = match session {
            None => {
                metrics.decision(Outcome::Unauthenticated);
                return Err(checks.unauthenticated("no credentials"));
            }
            Some(Err(invalid)) => {
                metrics.decision(Outcome::Unauthenticated);
                return Err(checks.unauthenticated(&format!("browser session: {invalid}")));
            }
            Some(Ok(user)) => user,
        };
        if let Some(reason) = checks.unsupported.get() {
            metrics.decision(Outcome::Unavailable);
            return Err(Refusal::Unsupported {
                reason: reason.clone(),
            });
        }
        let result = checks
            .decision(Arc::from(user.as_str()), &route.key.operation_id, metrics)
            .await;
        match &result {
            Ok((_, Source::Stale, _)) => metrics.decision(Outcome::AllowedStale),
            Ok(_) => metrics.decision(Outcome::Allowed),
            Err(Refusal::Forbidden { .. }) => metrics.decision(Outcome::Denied),
            Err(_) => metrics.decision(Outcome::Unavailable),
        }
        result.map(|_| Admitted { user: Some(user) })
    }
}

impl Checks {
    fn mark_unsupported(&self, reason: &str) {
        if self.unsupported.set(Arc::from(reason)).is_ok() {
            tracing::error!(
                reason,
                "auth cannot decide any request; answering 503 (and failing /readyz) until restarted against an upgraded cluster"
            );
        }
    }

    fn unauthenticated(&self, reason: &str) -> Refusal {
        Refusal::Unauthenticated {
            reason: reason.to_string(),
            login: Some(self.login.clone()),
        }
    }

    fn limited(&self, limited: Limited, metrics: &AuthMetrics) -> Refusal {
        let (scope, retry_after_seconds, result) = match limited {
            Limited::Client {
                retry_after_seconds,
            } => (
                LimitScope::Client,
                retry_after_seconds,
                LimitResult::LimitedClient,
            ),
            Limited::Overall {
                retry_after_seconds,
            } => (
                LimitScope::Overall,
                retry_after_seconds,
                LimitResult::LimitedOverall,
            ),
        };
        metrics.new_credential_lookup(result);
        Refusal::Limited {
            scope,
            retry_after_seconds,
        }
    }

    fn unavailable(&self) -> Refusal {
        Refusal::Unavailable {
            retry_after_seconds: self.retry_after_seconds,
        }
    }

    /// The admitted user and whether a stale answer was used.
    async fn decide(
        self: &Arc<Self>,
        credential: &Credential,
        operation_id: &str,
        client: IpAddr,
        metrics: &AuthMetrics,
    ) -> Result<(Admitted, bool), Refusal> {
        let fingerprint = credential.fingerprint();
        if let Some(user) = self.front.get(&fingerprint, operation_id, self.clock.now()) {
            metrics.lookup(CacheName::Identity, CacheResult::Hit);
            metrics.lookup(CacheName::Decision, CacheResult::Hit);
            return Ok((
                Admitted {
                    user: Some(String::from(&*user)),
                },
                false,
            ));
        }
        // Boxed: the shared caches' lookups are large futures, and every request's future
        // would otherwise carry room for them although most are answered above.
        Box::pin(self.decide_shared(credential, fingerprint, operation_id, client, metrics)).await
    }

    /// [`Checks::decide`] past the per-thread front cache.
    async fn decide_shared(
        self: &Arc<Self>,
        credential: &Credential,
        fingerprint: [u8; 32],
        operation_id: &str,
        client: IpAddr,
        metrics: &AuthMetrics,
    ) -> Result<(Admitted, bool), Refusal> {
        let (user, identity_source, identity_fresh_until) = self
            .identity(credential, fingerprint, client, metrics)
            .await?;
        let (key, decision_source, decision_fresh_until) =
            self.decision(user, operation_id, metrics).await?;
        let stale = identity_source == Source::Stale || decision_source == Source::Stale;
        if let (Some(a), Some(b)) = (identity_fresh_until, decision_fresh_until) {
            // The per-thread copy ends where the refresh window starts, so hits inside the
            // window reach the shared caches, which start the refresh.
            let until = a.min(b).checked_sub(self.refresh_before);
            if let Some(until) = until.filter(|until| *until > self.clock.now()) {
                self.front
                    .put(fingerprint, key.operation.clone(), key.user.clone(), until);
            }
        }
        Ok((
            Admitted {
                user: Some(key.user.to_string()),
            },
            stale,
        ))
    }

    /// The login behind `credential`, through the identity cache (a miss costs a limited
    /// `whoami`): where the answer came from and until when it is fresh.
    async fn identity(
        self: &Arc<Self>,
        credential: &Credential,
        fingerprint: [u8; 32],
        client: IpAddr,
        metrics: &AuthMetrics,
    ) -> Result<(Arc<str>, Source, Option<Instant>), Refusal> {
        let identity = self
            .identities
            .lookup(
                &fingerprint,
                |f| *f,
                |identity| match identity {
                    Identity::User(_) => self.identity_ttl,
                    Identity::Rejected(_) => self.rejected_identity_ttl,
                },
                // A credential the cache knows nothing about costs a `whoami`: limited, so
                // fresh random tokens cannot turn requests into cluster calls. A login the
                // cache holds (even expired) is a known user and never limited. Checked here,
                // in the fetch that only the caller asking the cluster runs (the cached path
                // pays nothing, and concurrent first requests with one new credential collapse
                // into one look-up that takes one token).
                || async move {
                    let known = self
                        .identities
                        .knows(&fingerprint, |identity| {
                            matches!(identity, Identity::User(_))
                        })
                        .await;
                    if !known {
                        self.limiter
                            .try_acquire(client)
                            .map_err(IdentityFailure::Limited)?;
                        metrics.new_credential_lookup(LimitResult::Made);
                    }
                    self.fetch_identity(credential, metrics)
                        .await
                        .map_err(|_| IdentityFailure::Cluster)
                },
            )
            .await;
        let Found {
            value: identity,
            source: identity_source,
            fresh_until: identity_fresh_until,
        } = match identity {
            Ok(found) => found,
            Err(LookupError::Fetch(IdentityFailure::Limited(limited))) => {
                return Err(self.limited(limited, metrics));
            }
            Err(_) => {
                metrics.lookup(CacheName::Identity, CacheResult::Error);
                return Err(self.unavailable());
            }
        };
        metrics.lookup(CacheName::Identity, cache_result(identity_source));
        if self.identities.claim_refresh(
            &fingerprint,
            &Found {
                value: identity.clone(),
                source: identity_source,
                fresh_until: identity_fresh_until,
            },
        ) {
            self.refresh_identity(fingerprint, credential.clone(), metrics.clone());
        }
        match identity {
            Identity::User(user) => Ok((user, identity_source, identity_fresh_until)),
            Identity::Rejected(reason) => Err(self.unauthenticated(&reason)),
        }
    }

    /// [`Checks::identity`], the login only.
    async fn identify(
        self: &Arc<Self>,
        credential: &Credential,
        fingerprint: [u8; 32],
        client: IpAddr,
        metrics: &AuthMetrics,
    ) -> Result<Arc<str>, Refusal> {
        self.identity(credential, fingerprint, client, metrics)
            .await
            .map(|(user, _, _)| user)
    }

    /// Whether `user` may read `operation_id`, through the decision cache: the key, where the
    /// answer came from and until when it is fresh; [`Refusal::Forbidden`] when not.
    async fn decision(
        self: &Arc<Self>,
        user: Arc<str>,
        operation_id: &str,
        metrics: &AuthMetrics,
    ) -> Result<(DecisionKey, Source, Option<Instant>), Refusal> {
        let key = DecisionKey {
            user,
            operation: Arc::from(operation_id),
        };
        let decision = self
            .decisions
            .lookup(
                &key,
                |k| k.clone(),
                |allowed| {
                    if *allowed {
                        self.allow_ttl
                    } else {
                        self.deny_ttl
                    }
                },
                || self.fetch_decision(&key, metrics),
            )
            .await;
        let Found {
            value: allowed,
            source: decision_source,
            fresh_until: decision_fresh_until,
        } = match decision {
            Ok(found) => found,
            Err(_) => {
                metrics.lookup(CacheName::Decision, CacheResult::Error);
                if let Some(reason) = self.unsupported.get() {
                    return Err(Refusal::Unsupported {
                        reason: reason.clone(),
                    });
                }
                return Err(self.unavailable());
            }
        };
        metrics.lookup(CacheName::Decision, cache_result(decision_source));
        if self.decisions.claim_refresh(
            &key,
            &Found {
                value: allowed,
                source: decision_source,
                fresh_until: decision_fresh_until,
            },
        ) {
            self.refresh_decision(key.clone(), metrics.clone());
        }
        if !allowed {
            return Err(Refusal::Forbidden {
                user: key.user.to_string(),
            });
        }
        Ok((key, decision_source, decision_fresh_until))
    }

    /// Refreshes a credential's identity in the background (its hit was served from the cache);
    /// a failure leaves the entry as it was, to expire at its time.
    fn refresh_identity(
        self: &Arc<Self>,
        fingerprint: [u8; 32],
        credential: Credential,
        metrics: AuthMetrics,
    ) {
        let checks = self.clone();
        tokio::spawn(async move {
            let _end = EndRefresh(&checks.identities, fingerprint);
            tracing::debug!(
                credential = credential.kind(),
                "auth cache refresh of an identity"
            );
            if let Ok(identity) = checks.fetch_identity(&credential, &metrics).await {
                let ttl = match identity {
                    Identity::User(_) => checks.identity_ttl,
                    Identity::Rejected(_) => checks.rejected_identity_ttl,
                };
                checks
                    .identities
                    .store_refreshed(fingerprint, identity, ttl)
                    .await;
            }
        });
    }

    /// Refreshes a decision in the background (see [`Checks::refresh_identity`]).
    fn refresh_decision(self: &Arc<Self>, key: DecisionKey, metrics: AuthMetrics) {
        let checks = self.clone();
        tokio::spawn(async move {
            let _end = EndRefresh(&checks.decisions, key.clone());
            tracing::debug!(operation = %key.operation, user = %key.user, "auth cache refresh of a decision");
            if let Ok(allowed) = checks.fetch_decision(&key, &metrics).await {
                let ttl = if allowed {
                    checks.allow_ttl
                } else {
                    checks.deny_ttl
                };
                checks
                    .decisions
                    .store_refreshed(key.clone(), allowed, ttl)
                    .await;
            }
        });
    }

    async fn fetch_identity(
        &self,
        credential: &Credential,
        metrics: &AuthMetrics,
    ) -> Result<Identity, String> {
        let started = Instant::now();
        let answer = self.backend.whoami(credential).await;
        let took = started.elapsed();
        match answer {
            Ok(login) => {
                metrics.cluster_call(Call::Whoami, CallResult::Ok, took);
                Ok(Identity::User(Arc::from(login)))
            }
            Err(BackendError::Rejected(reason)) => {
                metrics.cluster_call(Call::Whoami, CallResult::Rejected, took);
                Ok(Identity::Rejected(Arc::from(reason)))
            }
            Err(BackendError::Unavailable {
                kind,
                reason: error,
            }) => {
                metrics.cluster_call(Call::Whoami, CallResult::Error, took);
                metrics.cluster_error(Call::Whoami, kind);
                tracing::warn!(credential = credential.kind(), %error, "whoami failed");
                Err(error)
            }
            Err(BackendError::Unsupported(error)) => {
                metrics.cluster_call(Call::Whoami, CallResult::Error, took);
                metrics.cluster_error(Call::Whoami, yt_client::FailureKind::Other);
                tracing::warn!(credential = credential.kind(), %error, "whoami failed");
                Err(error)
            }
        }
    }

    async fn fetch_decision(
        &self,
        key: &DecisionKey,
        metrics: &AuthMetrics,
    ) -> Result<bool, String> {
        let started = Instant::now();
        let answer = self.backend.check_read(&key.operation, &key.user).await;
        let took = started.elapsed();
        match answer {
            Ok(allowed) => {
                metrics.cluster_call(Call::CheckPermission, CallResult::Ok, took);
                Ok(allowed)
            }
            Err(error) => {
                metrics.cluster_call(Call::CheckPermission, CallResult::Error, took);
                let kind = match &error {
                    BackendError::Unavailable { kind, .. } => *kind,
                    _ => yt_client::FailureKind::Other,
                };
                metrics.cluster_error(Call::CheckPermission, kind);
                if let BackendError::Unsupported(reason) = &error {
                    self.mark_unsupported(reason);
                }
                tracing::warn!(
                    operation = %key.operation,
                    user = %key.user,
                    %error,
                    "check_operation_permission failed"
                );
                Err(error.to_string())
            }
        }
    }
}

/// Ends a background refresh however its task ends.
struct EndRefresh<'a, K, V, E>(&'a GraceCache<K, V, E>, K)
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + From<RefreshTimedOut> + FetchError + 'static;

impl<K, V, E> Drop for EndRefresh<'_, K, V, E>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + From<RefreshTimedOut> + FetchError + 'static,
{
    fn drop(&mut self) {
        self.0.end_refresh(&self.1);
    }
}

fn cache_result(source: Source) -> CacheResult {
    match source {
        Source::Hit => CacheResult::Hit,
        Source::Fetched => CacheResult::Miss,
        Source::Collapsed => CacheResult::Collapsed,
        Source::Stale => CacheResult::Stale,
    }
}
