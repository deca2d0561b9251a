//! Gate decisions against a counting fake cluster with a manual clock.

use super::cache::Clock;
use super::metrics::{LimitResult, Outcome};
use super::*;
use crate::routing::{Endpoint, Protocol, Route, ServiceKey};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The client address the requests come from.
const CLIENT: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

#[derive(Default)]
struct FakeCluster {
    /// Secret -> login.
    users: HashMap<String, String>,
    /// (operation, user) pairs allowed to read.
    readers: Mutex<HashSet<(String, String)>>,
    failing: AtomicBool,
    whoami_calls: AtomicUsize,
    check_calls: AtomicUsize,
    delay: Option<Duration>,
}

impl FakeCluster {
    fn demo() -> FakeCluster {
        let mut users = HashMap::new();
        for (secret, login) in [
            ("alice-token", "alice"),
            ("alice-cookie", "alice"),
            ("bob-token", "bob"),
            ("bob-iam", "bob"),
            ("carol-token", "carol"),
        ] {
            users.insert(secret.to_string(), login.to_string());
        }
        let cluster = FakeCluster {
            users,
            ..FakeCluster::default()
        };
        cluster.grant(OP, "alice");
        cluster
    }

    fn grant(&self, op: &str, user: &str) {
        self.readers
            .lock()
            .unwrap()
            .insert((op.to_string(), user.to_string()));
    }

    fn calls(&self) -> (usize, usize) {
        (
            self.whoami_calls.load(Ordering::SeqCst),
            self.check_calls.load(Ordering::SeqCst),
        )
    }
}

impl AuthBackend for FakeCluster {
    fn whoami<'a>(
        &'a self,
        credential: &'a Credential,
    ) -> BoxFuture<'a, Result<String, BackendError>> {
        async move {
            self.whoami_calls.fetch_add(1, Ordering::SeqCst);
            if let Some(delay) = self.delay {
                tokio::time::sleep(delay).await;
            }
            if self.failing.load(Ordering::SeqCst) {
                return Err(BackendError::Unavailable {
                    kind: yt_client::FailureKind::Unavailable,
                    reason: "injected".into(),
                });
            }
            let secret = match credential {
                Credential::OAuth(s) | Credential::Bearer(s) => s,
                Credential::Cookie { value, .. } => value,
            };
            self.users
                .get(secret.expose())
                .cloned()
                .ok_or_else(|| BackendError::Rejected("unknown".into()))
        }
        .boxed()
    }

    fn check_read<'a>(
        &'a self,
        operation_id: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        async move {
            self.check_calls.fetch_add(1, Ordering::SeqCst);
            if let Some(delay) = self.delay {
                tokio::time::sleep(delay).await;
            }
            if self.failing.load(Ordering::SeqCst) {
                return Err(BackendError::Unavailable {
                    kind: yt_client::FailureKind::Unavailable,
                    reason: "injected".into(),
                });
            }
            Ok(self
                .readers
                .lock()
                .unwrap()
                .contains(&(operation_id.to_string(), user.to_string())))
        }
        .boxed()
    }
}

const OP: &str = "a6e04b98-bf982394-5103e8-55754a49";

fn route(service: &str) -> Route {
    Route {
        hash: "645236d8".into(),
        domain: "645236d8.example.net".into(),
        alias_domain: None,
        key: ServiceKey {
            operation_id: OP.into(),
            task_name: "main".into(),
            service: service.into(),
        },
        protocol: Protocol::Http,
        endpoints: vec![Endpoint {
            host: "127.0.0.1".into(),
            port: 1,
        }],
        operation_start_time: None,
        timeouts: Default::default(),
        sticky: None,
    }
}

fn request(path: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut builder = http::Request::builder().uri(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap().into_parts().0
}

fn config() -> AuthConfig {
    AuthConfig {
        login_url: Some("https://yt.example.net/".into()),
        ..AuthConfig::default()
    }
}

fn gate_with(cluster: &Arc<FakeCluster>, config: AuthConfig) -> (Gate, Clock) {
    let clock = Clock::manual();
    let gate = Gate::with_clock(config, cluster.clone(), clock.clone()).unwrap();
    (gate, clock)
}

async fn admit(gate: &Gate, headers: &[(&str, &str)]) -> Result<Admitted, Refusal> {
    let mut parts = request("/", headers);
    gate.admit(&mut parts, true, &route("port_0"), CLIENT).await
}

fn alice() -> Result<Admitted, Refusal> {
    Ok(Admitted {
        user: Some("alice".into()),
    })
}

#[tokio::test]
async fn disabled_gate_admits_everyone_and_still_strips_credentials() {
    let gate = Gate::disabled();
    assert!(!gate.is_enabled());
    let mut parts = request(
        "/",
        &[
            ("authorization", "OAuth alice-token"),
            ("cookie", "a=1; YTCypressCookie=alice-cookie"),
        ],
    );
    assert_eq!(
        gate.admit(&mut parts, true, &route("port_0"), CLIENT).await,
        Ok(Admitted::default())
    );
    assert!(parts.headers.get("authorization").is_none());
    assert_eq!(parts.headers["cookie"], "a=1");

    let cluster = Arc::new(FakeCluster::demo());
    let config = AuthConfig {
        enabled: false,
        ..config()
    };
    let (gate, _) = gate_with(&cluster, config);
    assert_eq!(admit(&gate, &[]).await, Ok(Admitted::default()));
    assert_eq!(cluster.calls(), (0, 0));
}

#[tokio::test]
async fn every_credential_form_identifies_alice() {
    let cluster = Arc::new(FakeCluster::demo());
    let (gate, _) = gate_with(&cluster, config());
    for header in [
        ("authorization", "OAuth alice-token"),
        ("authorization", "oauth alice-token"),
        ("cookie", "YTCypressCookie=alice-cookie"),
        ("cookie", "YTCypressCookie alice-cookie"),
        ("cookie", "x=1; YTCypressCookie=\"alice-cookie\""),
    ] {
        let mut parts = request("/", &[header, ("x-other", "kept")]);
        assert_eq!(
            gate.admit(&mut parts, true, &route("port_0"), CLIENT).await,
            alice(),
            "{header:?}"
        );
        assert!(parts.headers.get("authorization").is_none());
        for cookie in parts.headers.get_all("cookie") {
            assert!(!cookie.to_str().unwrap().contains("alice-cookie"));
        }
        assert_eq!(parts.headers["x-other"], "kept");
    }
}

#[tokio::test]
async fn refusals() {
    let cluster = Arc::new(FakeCluster::demo());
    let (gate, _) = gate_with(&cluster, config());
    let unauthenticated =
        |r: &Result<Admitted, Refusal>| matches!(r, Err(Refusal::Unauthenticated { .. }));
    assert!(unauthenticated(&admit(&gate, &[]).await));
    assert!(unauthenticated(
        &admit(&gate, &[("authorization", "OAuth stranger-token")]).await
    ));
    assert!(unauthenticated(
        &admit(&gate, &[("authorization", "OAuth")]).await
    ));
    assert!(unauthenticated(
        &admit(&gate, &[("cookie", "YTCypressCookie=")]).await
    ));
    assert!(unauthenticated(
        &admit(&gate, &[("authorization", "Basic dXNlcjpwYXNz")]).await
    ));
    assert_eq!(
        admit(&gate, &[("authorization", "Bearer bob-iam")]).await,
        Err(Refusal::Forbidden { user: "bob".into() })
    );
    assert_eq!(gate.metrics().decisions_with(metrics::Outcome::Denied), 1);
    assert_eq!(
        gate.metrics()
            .decisions_with(metrics::Outcome::Unauthenticated),
        5
    );
}

#[tokio::test]
async fn cached_path_asks_the_cluster_once() {
    let cluster = Arc::new(FakeCluster::demo());
    let (gate, _) = gate_with(&cluster, config());
    for _ in 0..1000 {
        assert_eq!(
            admit(&gate, &[("authorization", "OAuth alice-token")]).await,
            alice()
        );
    }
    assert_eq!(cluster.calls(), (1, 1));
    // The same user with another credential: one more whoami, the decision is cached.
    assert_eq!(
        admit(&gate, &[("cookie", "YTCypressCookie=alice-cookie")]).await,
        alice()
    );
    assert_eq!(cluster.calls(), (2, 1));
    // Rejected credentials are cached too (for a shorter time).
    for _ in 0..10 {
        admit(&gate, &[("authorization", "OAuth nope")])
            .await
            .unwrap_err();
    }
    assert_eq!(cluster.calls(), (3, 1));
    use metrics::{CacheName, CacheResult};
    assert_eq!(
        gate.metrics()
            .lookups_with(CacheName::Decision, CacheResult::Hit),
        1000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_collapse() {
    let cluster = Arc::new(FakeCluster {
        delay: Some(Duration::from_millis(50)),
        ..FakeCluster::demo()
    });
    let (gate, _) = gate_with(&cluster, config());
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            admit(&gate, &[("authorization", "OAuth alice-token")]).await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), alice());
    }
    assert_eq!(cluster.calls(), (1, 1));
}

fn limits(per_client: (u32, u32), overall: (u32, u32)) -> crate::auth::LookupLimits {
    crate::auth::LookupLimits {
        per_client_rate: per_client.0,
        per_client_burst: per_client.1,
        overall_rate: overall.0,
        overall_burst: overall.1,
        ..crate::auth::LookupLimits::default()
    }
}

async fn admit_from(
    gate: &Gate,
    client: &str,
    headers: &[(&str, &str)],
) -> Result<Admitted, Refusal> {
    let mut parts = request("/", headers);
    gate.admit(&mut parts, true, &route("port_0"), client.parse().unwrap())
        .await
}

#[tokio::test]
async fn fresh_tokens_are_limited_per_client_and_known_users_are_not() {
    let cluster = Arc::new(FakeCluster::demo());
    let config = AuthConfig {
        lookup_limits: limits((2, 5), (100, 100)),
        ..config()
    };
    let (gate, clock) = gate_with(&cluster, config);
    assert_eq!(
        admit_from(&gate, "10.0.0.1", &[("authorization", "OAuth alice-token")]).await,
        alice()
    );
    let mut limited = 0;
    for i in 0..100 {
        let token = format!("OAuth random-{i}");
        match admit_from(&gate, "10.0.0.1", &[("authorization", &token)]).await {
            Err(Refusal::Unauthenticated { .. }) => {}
            Err(Refusal::Limited {
                scope: LimitScope::Client,
                retry_after_seconds,
            }) => {
                assert!(retry_after_seconds >= 1);
                limited += 1;
            }
            other => panic!("{other:?}"),
        }
        // alice, cached, is never limited.
        assert_eq!(
            admit_from(&gate, "10.0.0.1", &[("authorization", "OAuth alice-token")]).await,
            alice()
        );
    }
    // alice's whoami and 4 of the burst of 5 (alice took one).
    assert_eq!(cluster.calls().0, 5);
    assert_eq!(limited, 96);
    let metrics = gate.metrics();
    assert_eq!(metrics.new_credential_lookups_with(LimitResult::Made), 5);
    assert_eq!(
        metrics.new_credential_lookups_with(LimitResult::LimitedClient),
        96
    );
    assert_eq!(metrics.decisions_with(Outcome::Limited), 96);
    // Another address has its own bucket; a rejected credential, once known, costs nothing.
    assert!(matches!(
        admit_from(
            &gate,
            "10.0.0.2",
            &[("authorization", "OAuth other-client")]
        )
        .await,
        Err(Refusal::Unauthenticated { .. })
    ));
    assert!(matches!(
        admit_from(&gate, "10.0.0.1", &[("authorization", "OAuth random-0")]).await,
        Err(Refusal::Unauthenticated { .. })
    ));
    assert_eq!(cluster.calls().0, 6);
    // A known user whose identity expired is refreshed without a token, whatever the bucket.
    clock.advance(Duration::from_secs(301));
    assert_eq!(
        admit_from(&gate, "10.0.0.1", &[("authorization", "OAuth alice-token")]).await,
        alice()
    );
    assert_eq!(cluster.calls().0, 7);
    // The bucket refills at the rate.
    clock.advance(Duration::from_secs(1));
    assert!(matches!(
        admit_from(&gate, "10.0.0.1", &[("authorization", "OAuth bob-token")]).await,
        Err(Refusal::Forbidden { .. })
    ));
}

#[tokio::test]
async fn the_overall_lookup_limit_refuses_every_client_with_503() {
    let cluster = Arc::new(FakeCluster::demo());
    let config = AuthConfig {
        lookup_limits: limits((100, 100), (1, 3)),
        ..config()
    };
    let (gate, _) = gate_with(&cluster, config);
    for i in 0..3 {
        let token = format!("OAuth random-{i}");
        let client = format!("10.0.1.{i}");
        assert!(matches!(
            admit_from(&gate, &client, &[("authorization", &token)]).await,
            Err(Refusal::Unauthenticated { .. })
        ));
    }
    let refusal = admit_from(&gate, "10.0.1.9", &[("authorization", "OAuth alice-token")])
        .await
        .unwrap_err();
    assert_eq!(
        refusal,
        Refusal::Limited {
            scope: LimitScope::Overall,
            retry_after_seconds: 1
        }
    );
    assert_eq!(refusal.status(), 503);
    assert_eq!(cluster.calls().0, 3);
    assert_eq!(
        gate.metrics()
            .new_credential_lookups_with(LimitResult::LimitedOverall),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_of_one_credential_take_one_lookup() {
    let cluster = Arc::new(FakeCluster {
        delay: Some(Duration::from_millis(50)),
        ..FakeCluster::demo()
    });
    // A burst of 1: only collapsing keeps the 99 waiting requests from being limited.
    let config = AuthConfig {
        lookup_limits: limits((1, 1), (1, 1)),
        ..config()
    };
    let (gate, _) = gate_with(&cluster, config);
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            admit(&gate, &[("authorization", "OAuth alice-token")]).await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), alice());
    }
    assert_eq!(cluster.calls(), (1, 1));
}

#[tokio::test]
async fn denials_expire_sooner_than_allows() {
    let cluster = Arc::new(FakeCluster::demo());
    let config = config();
    let (gate, clock) = gate_with(&cluster, config.clone());
    let bob = [("authorization", "OAuth bob-token")];
    assert!(matches!(
        admit(&gate, &bob).await,
        Err(Refusal::Forbidden { .. })
    ));
    cluster.grant(OP, "bob");
    clock.advance(config.deny_ttl - Duration::from_millis(1));
    assert!(matches!(
        admit(&gate, &bob).await,
        Err(Refusal::Forbidden { .. })
    ));
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        admit(&gate, &bob).await,
        Ok(Admitted {
            user: Some("bob".into())
        })
    );
    // Revoked: the allow holds for its TTL, then the denial shows.
    cluster.readers.lock().unwrap().clear();
    clock.advance(config.allow_ttl - Duration::from_millis(1));
    assert!(admit(&gate, &bob).await.is_ok());
    clock.advance(Duration::from_millis(1));
    assert!(matches!(
        admit(&gate, &bob).await,
        Err(Refusal::Forbidden { .. })
    ));
}

#[tokio::test]
async fn grace_keeps_known_users_in_during_failures() {
    let cluster = Arc::new(FakeCluster::demo());
    cluster.grant(OP, "carol");
    let config = config();
    let (gate, clock) = gate_with(&cluster, config.clone());
    let alice_token = [("authorization", "OAuth alice-token")];
    assert_eq!(admit(&gate, &alice_token).await, alice());

    cluster.failing.store(true, Ordering::SeqCst);
    // Within the TTL nothing is asked at all.
    assert_eq!(admit(&gate, &alice_token).await, alice());
    // Past every TTL, within the grace period: stale answers are used.
    clock.advance(config.identity_ttl + Duration::from_secs(1));
    assert_eq!(admit(&gate, &alice_token).await, alice());
    assert_eq!(
        gate.metrics()
            .decisions_with(metrics::Outcome::AllowedStale),
        1
    );
    // A user never seen gets 503 with Retry-After.
    let unavailable_whoami = || {
        gate.metrics()
            .cluster_errors_with(metrics::Call::Whoami, yt_client::FailureKind::Unavailable)
    };
    let failed_before = unavailable_whoami();
    assert_eq!(
        admit(&gate, &[("authorization", "OAuth carol-token")]).await,
        Err(Refusal::Unavailable {
            retry_after_seconds: 5
        })
    );
    assert!(
        unavailable_whoami() > failed_before,
        "the failed call is counted by kind"
    );
    // Past the grace period: 503 for everyone.
    clock.advance(config.grace);
    assert!(matches!(
        admit(&gate, &alice_token).await,
        Err(Refusal::Unavailable { .. })
    ));
    // Recovery (seen once the failure hold is over).
    cluster.failing.store(false, Ordering::SeqCst);
    clock.advance(config.failure_hold);
    assert_eq!(admit(&gate, &alice_token).await, alice());
    assert!(admit(&gate, &[("authorization", "OAuth carol-token")])
        .await
        .is_ok());
}

#[tokio::test]
async fn static_paths_of_ui_services_skip_auth_only_when_clean() {
    let cluster = Arc::new(FakeCluster::demo());
    let (gate, _) = gate_with(&cluster, config());
    let ui = route("ui");
    for path in ["/static/app.js", "/static/css/a.css?v=1"] {
        let mut parts = request(path, &[("cookie", "YTCypressCookie=alice-cookie; a=1")]);
        assert_eq!(
            gate.admit(&mut parts, true, &ui, CLIENT).await,
            Ok(Admitted::default())
        );
        assert_eq!(parts.headers["cookie"], "a=1", "stripped even when skipped");
    }
    for path in [
        "/static/../api",
        "/static/%2e%2e/api",
        "//static/app.js",
        "/static/..%2fapi",
        "/api",
    ] {
        let mut parts = request(path, &[]);
        assert!(
            matches!(
                gate.admit(&mut parts, true, &ui, CLIENT).await,
                Err(Refusal::Unauthenticated { .. })
            ),
            "{path}"
        );
    }
    let mut parts = request("/static/app.js", &[]);
    assert!(gate
        .admit(&mut parts, true, &route("rest"), CLIENT)
        .await
        .is_err());
    // More than a fetch of a file goes through auth on static paths too.
    for headers in [
        &[
            ("upgrade", "h2c"),
            ("connection", "upgrade, http2-settings"),
        ][..],
        &[("upgrade", "websocket"), ("connection", "upgrade")],
        &[("content-length", "3")],
    ] {
        let mut parts = request("/static/app.js", headers);
        assert!(
            matches!(
                gate.admit(&mut parts, true, &ui, CLIENT).await,
                Err(Refusal::Unauthenticated { .. })
            ),
            "{headers:?}"
        );
    }
    let mut parts = request("/static/app.js", &[]);
    parts.method = http::Method::POST;
    assert!(gate.admit(&mut parts, true, &ui, CLIENT).await.is_err());
    let mut parts = request("/static/app.js", &[]);
    assert!(
        gate.admit(&mut parts, false, &ui, CLIENT).await.is_err(),
        "a body"
    );
    assert_eq!(cluster.calls(), (0, 0));
}

#[tokio::test]
async fn refusals_render_for_each_caller() {
    use crate::answer::CallerKind;
    let hint = Arc::new(LoginHint {
        login_url: Some("https://yt.example.net/".into()),
        cookie_name: "YTCypressCookie".into(),
    });
    let refusal = Refusal::Unauthenticated {
        reason: "no credentials".into(),
        login: Some(hint),
    };
    let page = refusal.clone().into_response(CallerKind::Browser);
    assert_eq!(page.status(), 401);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let body = http_body_util::BodyExt::collect(page.into_body())
        .await
        .unwrap()
        .to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("href=\"https://yt.example.net/\""), "{body}");

    let plain = refusal.clone().into_response(CallerKind::Other);
    assert_eq!(plain.status(), 401);
    assert_eq!(plain.headers()["content-type"], "text/plain; charset=utf-8");
    assert!(plain.headers().contains_key("www-authenticate"));

    let grpc = refusal.into_response(CallerKind::Grpc);
    assert_eq!(grpc.headers()["grpc-status"], "16");
    let grpc = Refusal::Forbidden { user: "bob".into() }.into_response(CallerKind::Grpc);
    assert_eq!(grpc.headers()["grpc-status"], "7");
    let unavailable = Refusal::Unavailable {
        retry_after_seconds: 5,
    };
    let grpc = unavailable.clone().into_response(CallerKind::Grpc);
    assert_eq!(grpc.headers()["grpc-status"], "14");
    let plain = unavailable.into_response(CallerKind::Other);
    assert_eq!(plain.status(), 503);
    assert_eq!(plain.headers()["retry-after"], "5");
    for (scope, status, grpc_status) in [
        (LimitScope::Client, 429, "8"),
        (LimitScope::Overall, 503, "14"),
    ] {
        let limited = Refusal::Limited {
            scope,
            retry_after_seconds: 2,
        };
        for caller in [CallerKind::Browser, CallerKind::Other] {
            let answer = limited.clone().into_response(caller);
            assert_eq!(answer.status(), status);
            assert_eq!(answer.headers()["retry-after"], "2");
            assert!(!answer.headers().contains_key("www-authenticate"));
        }
        let grpc = limited.into_response(CallerKind::Grpc);
        assert_eq!(grpc.headers()["grpc-status"], grpc_status);
        assert_eq!(grpc.headers()["retry-after"], "2");
    }
}

#[test]
fn config_is_validated() {
    let cluster: Arc<dyn AuthBackend> = Arc::new(FakeCluster::demo());
    for bad in [
        AuthConfig {
            cookie_name: String::new(),
            ..AuthConfig::default()
        },
        AuthConfig {
            cookie_name: "a;b".into(),
            ..AuthConfig::default()
        },
        AuthConfig {
            login_url: Some("javascript:alert(1)".into()),
            ..AuthConfig::default()
        },
        AuthConfig {
            max_decisions: 0,
            ..AuthConfig::default()
        },
    ] {
        assert!(Gate::new(bad, cluster.clone()).is_err());
    }
}

#[test]
fn metrics_register_and_encode() {
    let gate = Gate::disabled();
    let mut registry = prometheus_client::registry::Registry::default();
    gate.register_metrics(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("auth_decisions_total"), "{text}");
    assert!(text.contains("auth_cache_lookups_total"), "{text}");
    assert!(
        text.contains("task_proxy_auth_decisions_total{outcome=\"allowed_stale\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("task_proxy_auth_cache_lookups_total{cache=\"identity\",result=\"hit\"} 0"),
        "{text}"
    );
}

/// `-auth-cache-refresh-before-seconds`: a hit inside the window is answered from the cache
/// at once and starts one background refresh (one `whoami`, one permission check), however
/// many hits follow while it runs; a hit before the window starts none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_near_expiry_refresh_once_in_the_background() {
    let delay = Duration::from_millis(400);
    let cluster = Arc::new(FakeCluster {
        delay: Some(delay),
        ..FakeCluster::demo()
    });
    let ttl = Duration::from_secs(30);
    let (gate, clock) = gate_with(
        &cluster,
        AuthConfig {
            identity_ttl: ttl,
            rejected_identity_ttl: ttl,
            allow_ttl: ttl,
            deny_ttl: ttl,
            grace: Duration::ZERO,
            refresh_before: Duration::from_secs(5),
            ..config()
        },
    );
    let token = [("authorization", "OAuth alice-token")];
    assert_eq!(admit(&gate, &token).await, alice());
    assert_eq!(cluster.calls(), (1, 1));

    // 10 s left: outside the window, no refresh.
    clock.advance(Duration::from_secs(20));
    assert_eq!(admit(&gate, &token).await, alice());
    tokio::time::sleep(delay * 2).await;
    assert_eq!(cluster.calls(), (1, 1));

    // 4 s left: inside the window. Every hit is served from the cache without waiting for
    // the cluster; one refresh of each entry runs meanwhile.
    clock.advance(Duration::from_secs(6));
    let started = std::time::Instant::now();
    for _ in 0..50 {
        assert_eq!(admit(&gate, &token).await, alice());
    }
    assert!(
        started.elapsed() < delay / 2,
        "hits waited for the refresh: {:?}",
        started.elapsed()
    );
    tokio::time::sleep(delay * 3).await;
    assert_eq!(cluster.calls(), (2, 2), "exactly one background refresh");

    // The refreshed entries are fresh for a whole TTL again: past the old expiry no look-up
    // waits and no further refresh starts.
    clock.advance(Duration::from_secs(10));
    let started = std::time::Instant::now();
    assert_eq!(admit(&gate, &token).await, alice());
    assert!(started.elapsed() < delay / 2);
    tokio::time::sleep(delay * 2).await;
    assert_eq!(cluster.calls(), (2, 2));

    // Without the window (the default) a hit near expiry starts nothing.
    let cluster = Arc::new(FakeCluster::demo());
    let (gate, clock) = gate_with(
        &cluster,
        AuthConfig {
            allow_ttl: ttl,
            identity_ttl: ttl,
            ..config()
        },
    );
    assert_eq!(admit(&gate, &token).await, alice());
    clock.advance(Duration::from_secs(29));
    assert_eq!(admit(&gate, &token).await, alice());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(cluster.calls(), (1, 1));
}
