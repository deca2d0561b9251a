//! Auth metrics: decisions by outcome, cache look-ups by result, the latency of the cluster
//! calls auth makes, and how the look-up limits treated unknown credentials. Handles to every label combination are resolved once, so the
//! request path only does atomic increments. The data plane owns the registry and calls
//! [`super::Gate::register_metrics`].

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::fmt::Write;
use std::time::Duration;

/// How the gate decided on a request.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Denied,
    Unauthenticated,
    Unavailable,
    /// A `/static` path of a `ui` service: no auth.
    Skipped,
    /// Auth is off.
    Disabled,
    /// Allowed on an expired decision or identity during a cluster failure.
    AllowedStale,
    /// An unknown credential over a look-up limit (429 per client, 503 overall).
    Limited,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: Outcome,
}

/// Which cache.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum CacheName {
    Identity,
    Decision,
}

/// How a cache look-up went: `hit` (fresh), `miss` (fetched, or collapsed into another
/// caller's fetch), `stale` (expired but used within the grace period).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum CacheResult {
    Hit,
    Miss,
    Collapsed,
    Stale,
    Error,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: CacheName,
    result: CacheResult,
}

/// The cluster call.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Call {
    Whoami,
    CheckPermission,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum CallResult {
    Ok,
    Rejected,
    Error,
}

/// What the look-up limits did with a credential the caches did not know.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum LimitResult {
    /// The look-up went ahead.
    Made,
    /// Refused: the client address's limit (429).
    LimitedClient,
    /// Refused: the overall limit (503).
    LimitedOverall,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    result: LimitResult,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    call: Call,
    result: CallResult,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    call: Call,
    /// `yt_client::FailureKind::label`.
    kind: &'static str,
}

/// Label values in snake_case, like the data plane's (`allowed_stale`, `check_permission`).
macro_rules! label_values {
    ($($ty:ty { $($variant:ident => $name:literal),* $(,)? })*) => {$(
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self {
                    $(<$ty>::$variant => $name,)*
                }
            }
        }

        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                encoder.write_str(self.as_str())
            }
        }
    )*};
}

label_values! {
    Outcome {
        Allowed => "allowed",
        Denied => "denied",
        Unauthenticated => "unauthenticated",
        Unavailable => "unavailable",
        Skipped => "skipped",
        Disabled => "disabled",
        AllowedStale => "allowed_stale",
        Limited => "limited",
    }
    LimitResult {
        Made => "made",
        LimitedClient => "limited_client",
        LimitedOverall => "limited_overall",
    }
    CacheName { Identity => "identity", Decision => "decision" }
    CacheResult {
        Hit => "hit",
        Miss => "miss",
        Collapsed => "collapsed",
        Stale => "stale",
        Error => "error",
    }
    Call { Whoami => "whoami", CheckPermission => "check_permission" }
    CallResult { Ok => "ok", Rejected => "rejected", Error => "error" }
}

/// All auth metrics, with pre-resolved handles.
#[derive(Debug, Clone)]
pub struct AuthMetrics {
    decisions: Family<OutcomeLabels, Counter>,
    lookups: Family<CacheLabels, Counter>,
    cluster_seconds: Family<CallLabels, Histogram>,
    cluster_errors: Family<ErrorLabels, Counter>,
    new_credential_lookups: Family<LimitLabels, Counter>,
    outcome_counters: [Counter; 8],
    lookup_counters: [[Counter; 5]; 2],
}

const OUTCOMES: [Outcome; 8] = [
    Outcome::Allowed,
    Outcome::Denied,
    Outcome::Unauthenticated,
    Outcome::Unavailable,
    Outcome::Skipped,
    Outcome::Disabled,
    Outcome::AllowedStale,
    Outcome::Limited,
];
const CACHES: [CacheName; 2] = [CacheName::Identity, CacheName::Decision];
const RESULTS: [CacheResult; 5] = [
    CacheResult::Hit,
    CacheResult::Miss,
    CacheResult::Collapsed,
    CacheResult::Stale,
    CacheResult::Error,
];

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for AuthMetrics {
    fn default() -> Self {
        AuthMetrics::new()
    }
}

impl AuthMetrics {
    pub fn new() -> AuthMetrics {
        let decisions = Family::<OutcomeLabels, Counter>::default();
        let lookups = Family::<CacheLabels, Counter>::default();
        let cluster_seconds =
            Family::<CallLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        let outcome_counters =
            OUTCOMES.map(|outcome| decisions.get_or_create(&OutcomeLabels { outcome }).clone());
        let lookup_counters = CACHES.map(|cache| {
            RESULTS.map(|result| {
                lookups
                    .get_or_create(&CacheLabels { cache, result })
                    .clone()
            })
        });
        let new_credential_lookups = Family::<LimitLabels, Counter>::default();
        for result in [
            LimitResult::Made,
            LimitResult::LimitedClient,
            LimitResult::LimitedOverall,
        ] {
            // Exported from the start, so dashboards see zeros rather than no series.
            drop(new_credential_lookups.get_or_create(&LimitLabels { result }));
        }
        let cluster_errors = Family::<ErrorLabels, Counter>::default();
        for call in [Call::Whoami, Call::CheckPermission] {
            for kind in yt_client::FailureKind::ALL {
                drop(cluster_errors.get_or_create(&ErrorLabels {
                    call,
                    kind: kind.label(),
                }));
            }
        }
        AuthMetrics {
            decisions,
            lookups,
            cluster_seconds,
            cluster_errors,
            new_credential_lookups,
            outcome_counters,
            lookup_counters,
        }
    }

    /// Adds the metrics to `registry`: `task_proxy_auth_decisions_total{outcome}`,
    /// `task_proxy_auth_cache_lookups_total{cache,result}`,
    /// `task_proxy_auth_cluster_call_seconds{call,result}`,
    /// `task_proxy_auth_cluster_errors_total{call,kind}`,
    /// `task_proxy_auth_new_credential_lookups_total{result}`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "task_proxy_auth_decisions",
            "Auth decisions on routed requests, by outcome",
            self.decisions.clone(),
        );
        registry.register(
            "task_proxy_auth_cache_lookups",
            "Auth cache look-ups by cache and result",
            self.lookups.clone(),
        );
        registry.register(
            "task_proxy_auth_cluster_call_seconds",
            "Latency of the cluster calls auth makes (whoami, check_operation_permission)",
            self.cluster_seconds.clone(),
        );
        registry.register(
            "task_proxy_auth_cluster_errors",
            "Failed cluster calls of auth, by call and kind (context_deadline_exceeded, \
             connection_timeout, network_error, unavailable, other)",
            self.cluster_errors.clone(),
        );
        registry.register(
            "task_proxy_auth_new_credential_lookups",
            "Cluster look-ups for credentials the auth caches did not know: made, or refused by \
             the per-client or the overall limit",
            self.new_credential_lookups.clone(),
        );
    }

    pub fn new_credential_lookup(&self, result: LimitResult) {
        self.new_credential_lookups
            .get_or_create(&LimitLabels { result })
            .inc();
    }

    /// The count of unknown-credential look-ups with `result`.
    pub fn new_credential_lookups_with(&self, result: LimitResult) -> u64 {
        self.new_credential_lookups
            .get_or_create(&LimitLabels { result })
            .get()
    }

    pub fn decision(&self, outcome: Outcome) {
        let index = OUTCOMES.iter().position(|o| *o == outcome).unwrap_or(0);
        self.outcome_counters[index].inc();
    }

    pub fn lookup(&self, cache: CacheName, result: CacheResult) {
        let c = match cache {
            CacheName::Identity => 0,
            CacheName::Decision => 1,
        };
        let r = RESULTS.iter().position(|x| *x == result).unwrap_or(0);
        self.lookup_counters[c][r].inc();
    }

    /// Counts a failed cluster call of `call` by the kind of its failure.
    pub fn cluster_error(&self, call: Call, kind: yt_client::FailureKind) {
        self.cluster_errors
            .get_or_create(&ErrorLabels {
                call,
                kind: kind.label(),
            })
            .inc();
    }

    /// The count of failed cluster calls of `call` with `kind`.
    pub fn cluster_errors_with(&self, call: Call, kind: yt_client::FailureKind) -> u64 {
        self.cluster_errors
            .get_or_create(&ErrorLabels {
                call,
                kind: kind.label(),
            })
            .get()
    }

    pub fn cluster_call(&self, call: Call, result: CallResult, took: Duration) {
        self.cluster_seconds
            .get_or_create(&CallLabels { call, result })
            .observe(took.as_secs_f64());
    }

    /// The count for `outcome` (for tests and the status page).
    pub fn decisions_with(&self, outcome: Outcome) -> u64 {
        self.decisions
            .get_or_create(&OutcomeLabels { outcome })
            .get()
    }

    /// The count of look-ups of `cache` with `result`.
    pub fn lookups_with(&self, cache: CacheName, result: CacheResult) -> u64 {
        self.lookups
            .get_or_create(&CacheLabels { cache, result })
            .get()
    }
}

/// The job identity signer's metrics: assertions signed (cache misses; cached ones are not
/// counted), signatures that failed (the job then gets the request without identity), and the
/// keys the JWKS document publishes (2 during a rotation).
#[derive(Debug, Clone, Default)]
pub struct IdentityMetrics {
    signed: Counter,
    errors: Counter,
    published_keys: prometheus_client::metrics::gauge::Gauge,
}

impl IdentityMetrics {
    /// Adds `task_proxy_identity_assertions_signed_total`,
    /// `task_proxy_identity_signing_errors_total` and `task_proxy_identity_published_keys`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "task_proxy_identity_assertions_signed",
            "Identity assertions (JWTs) signed for jobs; reused cached ones are not counted",
            self.signed.clone(),
        );
        registry.register(
            "task_proxy_identity_signing_errors",
            "Identity assertions that could not be made (the job got the request without identity)",
            self.errors.clone(),
        );
        registry.register(
            "task_proxy_identity_published_keys",
            "Public keys in the JWKS document (2 while a previous key is kept for a rotation)",
            self.published_keys.clone(),
        );
    }

    pub fn signed(&self) {
        self.signed.inc();
    }

    pub fn signing_error(&self) {
        self.errors.inc();
    }

    pub fn set_published_keys(&self, keys: usize) {
        self.published_keys
            .set(i64::try_from(keys).unwrap_or(i64::MAX));
    }

    /// The count of assertions signed.
    pub fn signed_count(&self) -> u64 {
        self.signed.get()
    }

    /// The count of failed signatures.
    pub fn signing_errors(&self) -> u64 {
        self.errors.get()
    }

    /// The keys published.
    pub fn published_keys(&self) -> i64 {
        self.published_keys.get()
    }
}
