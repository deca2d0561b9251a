//! Endpoint selection and passive health: which job of a service gets the next request.
//!
//! The data plane reads one value per request, [`Routes`]: a routing snapshot together with
//! each route's [`ServiceBackends`]. The routing table hands every snapshot it publishes to the
//! balancer (a [`crate::routing::Follower`]) before it is in force; the balancer derives the
//! next `Routes` from it once and swaps it in, so there is no moment when a published route
//! has no state, and nothing is built on the request path. Every endpoint has one
//! [`EndpointState`], keyed by its address and carried over from the previous generation for
//! endpoints that stay, so a swap resets neither ejections nor connection pools. Selection is power-of-two-choices on in-flight counts among endpoints not ejected.
//! A connect failure ejects an endpoint for an exponentially growing back-off; once it expires,
//! live traffic probes it again (a success clears the record). The endpoint states themselves
//! (health, connection cap, per-worker pools) are defined in [`super::endpoint`].
//!
//! A sticky service ([`ServiceBackends::sticky`]) keeps a browser on one job: each of its
//! endpoints has an affinity token ([`super::affinity`]) computed when its routes are derived;
//! a request whose cookie names an endpoint that is still routed and not ejected goes there
//! ([`Balancer::pick_preferring`]), any other goes by power of two choices.

use super::affinity::{AffinityKey, Token};
use super::conn_limit::ConnLimitSettings;
use super::endpoint::EndpointState;
use crate::proxy::metrics::RouteStats;
use crate::routing::{Endpoint, Route, RouteKey, RoutingSnapshot};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A routed service with its endpoints' states and its request statistics.
#[derive(Debug)]
pub struct ServiceBackends {
    pub route: Arc<Route>,
    pub endpoints: Vec<Arc<EndpointState>>,
    pub stats: Arc<RouteStats>,
    /// Whether an affinity cookie keeps a browser on one job (the route's `sticky`, else
    /// `--sticky-sessions-default`).
    pub sticky: bool,
    /// The affinity token of each endpoint, in the order of `endpoints` (empty unless sticky).
    tokens: Box<[Token]>,
}

impl ServiceBackends {
    /// The endpoint whose affinity token `token` is, if it is still one of this service's.
    pub fn endpoint_of(&self, token: &Token) -> Option<usize> {
        // Every token is compared (no early exit), like each comparison.
        self.tokens.iter().enumerate().fold(
            None,
            |found, (i, t)| if t.matches(token) { Some(i) } else { found },
        )
    }

    /// The affinity token of `ep` as an endpoint of this service (None unless sticky).
    pub fn token_of(&self, ep: &EndpointState) -> Option<Token> {
        let i = self
            .endpoints
            .iter()
            .position(|e| std::ptr::eq(Arc::as_ptr(e), ep))?;
        self.tokens.get(i).copied()
    }
}

/// One routing generation as the data plane reads it: the snapshot and, for every route in
/// it, the backend with its endpoints' states. Built together from each published snapshot
/// and swapped in as one value, so a route a request finds always has its state, and a
/// request reads routes and states of the same generation.
#[derive(Debug)]
pub struct Routes {
    snapshot: Arc<RoutingSnapshot>,
    /// Looked up on every request: foldhash (randomly seeded, like std's, but cheaper).
    by_hash: HashMap<String, Arc<ServiceBackends>, foldhash::fast::RandomState>,
}

impl Routes {
    fn empty() -> Routes {
        Routes {
            snapshot: Arc::new(RoutingSnapshot::default()),
            by_hash: HashMap::default(),
        }
    }

    /// The snapshot these routes were derived from.
    pub fn snapshot(&self) -> &RoutingSnapshot {
        &self.snapshot
    }

    pub fn generation(&self) -> u64 {
        self.snapshot.generation()
    }

    /// The backend of the service a request's route key names, if any.
    #[inline]
    pub fn route(&self, key: &RouteKey) -> Option<&Arc<ServiceBackends>> {
        self.snapshot
            .route(key)
            .and_then(|route| self.by_hash.get(&route.hash))
    }

    /// The backend of the service with this route key (a lowercase hash), if any.
    pub fn backend(&self, hash: &str) -> Option<&Arc<ServiceBackends>> {
        self.by_hash.get(hash)
    }

    /// The backends of every route of this generation.
    pub fn backends(&self) -> impl Iterator<Item = &Arc<ServiceBackends>> {
        self.by_hash.values()
    }

    /// Every endpoint state of this generation, once each.
    pub fn endpoint_states(&self) -> Vec<Arc<EndpointState>> {
        let mut seen = HashMap::<&Endpoint, &Arc<EndpointState>>::new();
        for ep in self.by_hash.values().flat_map(|b| &b.endpoints) {
            seen.entry(&ep.endpoint).or_insert(ep);
        }
        seen.into_values().cloned().collect()
    }
}

/// A request's affinity to one job of a sticky service ([`super::affinity`]): the endpoint its
/// cookie names, and the cookie its response needs. Both paths build it from the request's
/// headers (which lose the cookie, so the job never sees it) and ask it for the response's
/// `Set-Cookie` once a job answered.
#[derive(Debug, Default)]
pub struct Affinity {
    presented: Option<super::affinity::Token>,
    /// The endpoint the cookie names, while the service still has it.
    pub preferred: Option<usize>,
    /// A cookie may be set: a sticky service, a caller that is not gRPC.
    sets: bool,
    tls: bool,
}

impl Affinity {
    /// Takes the affinity cookie out of `headers` (every service: it is the proxy's) and finds
    /// the endpoint it names among `backend`'s. `grpc`: a gRPC request (no cookie is set for
    /// it: gRPC clients do not keep cookies).
    pub fn take(
        backend: &ServiceBackends,
        headers: &mut http::HeaderMap,
        tls: bool,
        grpc: bool,
    ) -> Affinity {
        let presented = super::affinity::take(headers, tls).filter(|_| backend.sticky);
        Affinity {
            preferred: presented.and_then(|t| backend.endpoint_of(&t)),
            presented,
            sets: backend.sticky && !grpc,
            tls,
        }
    }

    /// The `Set-Cookie` the response needs: when `answered` is not the endpoint the request's
    /// cookie named (no cookie, a forged one, or its job is gone or ejected).
    pub fn set_cookie(
        &self,
        backend: &ServiceBackends,
        answered: &EndpointState,
    ) -> Option<http::HeaderValue> {
        if !self.sets {
            return None;
        }
        let token = backend.token_of(answered)?;
        if self.presented.is_some_and(|p| p.matches(&token)) {
            return None;
        }
        Some(super::affinity::set_cookie(&token, self.tls))
    }
}

/// Up to this many attempts per request (each on an endpoint not yet tried).
pub const MAX_ATTEMPTS: usize = 4;

/// Endpoints already tried by one request (no allocation).
#[derive(Debug, Default, Clone, Copy)]
pub struct Tried {
    indices: [usize; MAX_ATTEMPTS],
    len: usize,
}

impl Tried {
    pub fn contains(&self, i: usize) -> bool {
        self.indices[..self.len].contains(&i)
    }
    pub fn push(&mut self, i: usize) {
        if self.len < MAX_ATTEMPTS {
            self.indices[self.len] = i;
            self.len += 1;
        }
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Chooses endpoints and keeps their health.
#[derive(Debug)]
pub struct Balancer {
    current: ArcSwap<Routes>,
    /// Held while deriving the next generation from the current one (publishers are
    /// serialised by the routing table already; this keeps direct callers safe too).
    deriving: Mutex<()>,
    workers: usize,
    epoch: Instant,
    eject_base: Duration,
    eject_max: Duration,
    conn_limit: ConnLimitSettings,
    affinity: AffinityKey,
    /// Whether services that do not say are sticky.
    sticky_default: bool,
    /// Callers reach the proxy over HTTPS even on the plaintext listener (TLS ends at an
    /// ingress, `--portal-scheme https`): affinity cookies are `Secure` there too.
    affinity_https: bool,
}

impl Balancer {
    pub fn new(workers: usize, eject_base: Duration, eject_max: Duration) -> Balancer {
        Balancer::with_conn_limit(workers, eject_base, eject_max, ConnLimitSettings::default())
    }

    /// A balancer whose endpoints get `conn_limit` (`--upstream-max-connections-per-job` etc.).
    pub fn with_conn_limit(
        workers: usize,
        eject_base: Duration,
        eject_max: Duration,
        conn_limit: ConnLimitSettings,
    ) -> Balancer {
        Balancer {
            current: ArcSwap::from_pointee(Routes::empty()),
            deriving: Mutex::new(()),
            workers,
            epoch: Instant::now(),
            eject_base,
            eject_max,
            conn_limit,
            affinity: AffinityKey::generate(),
            sticky_default: false,
            affinity_https: false,
        }
    }

    /// The same balancer with affinity tokens made with `key`, and `sticky_default` for
    /// services that do not say whether they are sticky.
    pub fn with_affinity(mut self, key: AffinityKey, sticky_default: bool) -> Balancer {
        self.affinity = key;
        self.sticky_default = sticky_default;
        self
    }

    /// The same balancer, its affinity cookies `Secure` (and `__Host-`) on every listener:
    /// callers use HTTPS to an ingress in front of the plaintext one.
    pub fn with_https_callers(mut self, https: bool) -> Balancer {
        self.affinity_https = https;
        self
    }

    /// Whether a caller on a connection of `scheme` reached the proxy over HTTPS (for the
    /// affinity cookie's name and `Secure`).
    pub fn caller_uses_https(&self, scheme: &str) -> bool {
        self.affinity_https || scheme == "https"
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The routes in force, without touching their reference count (the request path: one
    /// load per request; do not hold the guard across awaits).
    #[inline]
    pub fn routes(&self) -> arc_swap::Guard<Arc<Routes>> {
        self.current.load()
    }

    /// The routes in force (for readers that keep them, like admin pages).
    pub fn current(&self) -> Arc<Routes> {
        self.current.load_full()
    }

    /// Derives the routes of `snapshot` and puts them in force, keeping the states of
    /// endpoints (health, pools, ejections) and the statistics of routes that stay. States of
    /// endpoints that left are dropped with the old generation: their idle connections close.
    pub fn rebuild(&self, snapshot: &Arc<RoutingSnapshot>) {
        let _deriving = self.deriving.lock().unwrap_or_else(|e| e.into_inner());
        let previous = self.current.load_full();
        let mut old_endpoints = HashMap::<&Endpoint, &Arc<EndpointState>>::new();
        for ep in previous.by_hash.values().flat_map(|b| &b.endpoints) {
            old_endpoints.entry(&ep.endpoint).or_insert(ep);
        }
        let mut endpoints = HashMap::<Endpoint, Arc<EndpointState>>::new();
        let mut by_hash = HashMap::with_capacity_and_hasher(
            snapshot.len(),
            foldhash::fast::RandomState::default(),
        );
        for route in snapshot.routes() {
            let states = route
                .endpoints
                .iter()
                .map(|e| {
                    endpoints
                        .entry(e.clone())
                        .or_insert_with(|| match old_endpoints.get(e) {
                            Some(&state) => state.clone(),
                            None => Arc::new(EndpointState::new(
                                e.clone(),
                                self.workers,
                                self.conn_limit,
                            )),
                        })
                        .clone()
                })
                .collect();
            let stats = previous
                .by_hash
                .get(&route.hash)
                .map(|b| b.stats.clone())
                .unwrap_or_default();
            let sticky = route.sticky.unwrap_or(self.sticky_default);
            let tokens = if sticky {
                route
                    .endpoints
                    .iter()
                    .map(|e| self.affinity.token(&route.domain, e))
                    .collect()
            } else {
                Box::default()
            };
            let backend = ServiceBackends {
                route: route.clone(),
                endpoints: states,
                stats,
                sticky,
                tokens,
            };
            by_hash.insert(route.hash.clone(), Arc::new(backend));
        }
        drop(old_endpoints);
        self.current.store(Arc::new(Routes {
            snapshot: snapshot.clone(),
            by_hash,
        }));
    }

    /// Picks an endpoint not in `tried`: power of two choices among those not ejected; when
    /// every remaining one is ejected, the one whose ejection ends first (so a service whose
    /// jobs blipped is not refused for the whole back-off, and a retry after a job died still
    /// reaches a live job that was ejected earlier).
    pub fn pick(&self, backend: &ServiceBackends, tried: &Tried) -> Option<usize> {
        let now = self.now_ms();
        let eps = &backend.endpoints;
        let eligible = |i: &usize| {
            !tried.contains(*i) && eps[*i].health.ejected_until_ms.load(Ordering::Relaxed) <= now
        };
        let n = (0..eps.len()).filter(eligible).count();
        match n {
            // Every untried endpoint is ejected: the one back soonest is still worth a try
            // (ejection is a guess; a retry that skipped it could fail a request a live job
            // would have answered).
            0 => (0..eps.len())
                .filter(|i| !tried.contains(*i))
                .min_by_key(|&i| eps[i].health.ejected_until_ms.load(Ordering::Relaxed)),
            1 => (0..eps.len()).find(eligible),
            _ => {
                let a = rand::random_range(0..n);
                let mut b = rand::random_range(0..n - 1);
                if b >= a {
                    b += 1;
                }
                let ia = (0..eps.len()).filter(eligible).nth(a)?;
                let ib = (0..eps.len()).filter(eligible).nth(b)?;
                Some(if eps[ib].in_flight() < eps[ia].in_flight() {
                    ib
                } else {
                    ia
                })
            }
        }
    }

    /// [`Balancer::pick`], except that `preferred` (the endpoint a request's affinity cookie
    /// names) is taken when it is untried and not ejected.
    pub fn pick_preferring(
        &self,
        backend: &ServiceBackends,
        tried: &Tried,
        preferred: Option<usize>,
    ) -> Option<usize> {
        if let Some(i) = preferred {
            let usable = backend.endpoints.get(i).is_some_and(|ep| {
                ep.health.ejected_until_ms.load(Ordering::Relaxed) <= self.now_ms()
            });
            if usable && !tried.contains(i) {
                return Some(i);
            }
        }
        self.pick(backend, tried)
    }

    /// Whether the endpoint is ejected now, and for how many more milliseconds.
    pub fn ejected_for_ms(&self, ep: &EndpointState) -> Option<u64> {
        let until = ep.health.ejected_until_ms.load(Ordering::Relaxed);
        let now = self.now_ms();
        (until > now).then(|| until - now)
    }

    /// A connection to `ep` could not be established: eject it with back-off.
    pub fn connect_failed(&self, ep: &EndpointState, service: &str, error: &dyn std::fmt::Display) {
        let failures = ep.health.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let shift = (failures - 1).min(16);
        let backoff = self
            .eject_base
            .saturating_mul(1u32 << shift)
            .min(self.eject_max);
        let until = self.now_ms() + backoff.as_millis() as u64;
        ep.health.ejected_until_ms.store(until, Ordering::Relaxed);
        ep.health.ejections.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(endpoint = %ep.endpoint, service, failures, backoff_ms = backoff.as_millis() as u64,
            %error, "endpoint ejected");
    }

    /// Awaits `connect` to endpoint `i` of `service`, recording the outcome: success marks the
    /// endpoint healthy; failure ejects it, counts it as tried and keeps the error in `last`
    /// (the caller then moves on to another endpoint).
    pub async fn connect_recorded<T, E: std::fmt::Display>(
        &self,
        ep: &EndpointState,
        i: usize,
        service: &str,
        connect: impl std::future::Future<Output = Result<T, E>>,
        tried: &mut Tried,
        last: &mut Option<String>,
    ) -> Option<T> {
        match connect.await {
            Ok(conn) => {
                self.connect_succeeded(ep);
                Some(conn)
            }
            Err(e) => {
                self.connect_failed(ep, service, &e);
                *last = Some(e.to_string());
                tried.push(i);
                None
            }
        }
    }

    /// A connection to `ep` was established: it is healthy.
    pub fn connect_succeeded(&self, ep: &EndpointState) {
        if ep.health.failures.load(Ordering::Relaxed) != 0 {
            ep.health.failures.store(0, Ordering::Relaxed);
            ep.health.ejected_until_ms.store(0, Ordering::Relaxed);
            tracing::info!(endpoint = %ep.endpoint, "endpoint healthy again");
        }
    }

    /// The states of the endpoints currently routed, for metrics.
    pub fn endpoint_states(&self) -> Vec<Arc<EndpointState>> {
        self.current.load().endpoint_states()
    }
}

impl crate::routing::Follower for Balancer {
    fn follow(&self, snapshot: &Arc<RoutingSnapshot>) {
        self.rebuild(snapshot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{route_key, Protocol, RoutingTable, ServiceSpec};

    fn spec(service: &str, endpoints: &[&str]) -> ServiceSpec {
        ServiceSpec {
            operation_id: "op".into(),
            task_name: "t".into(),
            service: service.into(),
            protocol: Protocol::Http,
            endpoints: endpoints.iter().map(|e| e.parse().unwrap()).collect(),
            operation_start_time: None,
            timeouts: Default::default(),
            sticky: None,
        }
    }

    fn snapshot(endpoints: &[&str]) -> Arc<RoutingSnapshot> {
        Arc::new(RoutingSnapshot::build("d", [spec("s", endpoints)]))
    }

    fn only_backend(b: &Balancer) -> Arc<ServiceBackends> {
        let routes = b.current();
        let hash = &routes.snapshot().routes()[0].hash;
        routes.backend(hash).unwrap().clone()
    }

    #[test]
    fn picks_spread_and_skip_ejected() {
        let b = Balancer::new(1, Duration::from_secs(10), Duration::from_secs(60));
        b.rebuild(&snapshot(&["127.0.0.1:1", "127.0.0.1:2"]));
        let backend = only_backend(&b);
        let mut seen = [0; 2];
        for _ in 0..100 {
            seen[b.pick(&backend, &Tried::default()).unwrap()] += 1;
        }
        assert!(seen[0] > 10 && seen[1] > 10, "{seen:?}");
        b.connect_failed(&backend.endpoints[0], "s", &"refused");
        for _ in 0..20 {
            assert_eq!(b.pick(&backend, &Tried::default()), Some(1));
        }
        let mut tried = Tried::default();
        tried.push(1);
        assert_eq!(
            b.pick(&backend, &tried),
            Some(0),
            "an ejected endpoint is a retry's last resort"
        );
        tried.push(0);
        assert_eq!(b.pick(&backend, &tried), None, "each endpoint once");
        b.connect_failed(&backend.endpoints[1], "s", &"refused");
        assert!(
            b.pick(&backend, &Tried::default()).is_some(),
            "all ejected: probe one"
        );
        b.connect_succeeded(&backend.endpoints[0]);
        assert_eq!(b.pick(&backend, &Tried::default()), Some(0));
    }

    #[test]
    fn a_sticky_service_prefers_the_cookies_endpoint_while_it_is_usable() {
        let b = Balancer::new(1, Duration::from_secs(10), Duration::from_secs(60));
        let mut sticky = spec("s", &["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);
        sticky.sticky = Some(true);
        b.rebuild(&Arc::new(RoutingSnapshot::build("d", [sticky.clone()])));
        let backend = only_backend(&b);
        assert!(backend.sticky);
        let token = backend.token_of(&backend.endpoints[2]).unwrap();
        assert_eq!(backend.endpoint_of(&token), Some(2));
        for _ in 0..50 {
            assert_eq!(
                b.pick_preferring(&backend, &Tried::default(), Some(2)),
                Some(2)
            );
        }
        // Ejected or already tried: another one.
        let mut tried = Tried::default();
        tried.push(2);
        assert_ne!(b.pick_preferring(&backend, &tried, Some(2)), Some(2));
        b.connect_failed(&backend.endpoints[2], "s", &"refused");
        for _ in 0..20 {
            assert_ne!(
                b.pick_preferring(&backend, &Tried::default(), Some(2)),
                Some(2)
            );
        }
        // Gone from the service: its token names nothing any more.
        sticky.endpoints.truncate(2);
        b.rebuild(&Arc::new(RoutingSnapshot::build("d", [sticky])));
        assert_eq!(only_backend(&b).endpoint_of(&token), None);
        // Not sticky (neither the route nor the default): no tokens at all.
        b.rebuild(&snapshot(&["127.0.0.1:1", "127.0.0.1:2"]));
        let plain = only_backend(&b);
        assert!(!plain.sticky && plain.token_of(&plain.endpoints[0]).is_none());
        let b = Balancer::new(1, Duration::from_secs(10), Duration::from_secs(60))
            .with_affinity(AffinityKey::generate(), true);
        b.rebuild(&snapshot(&["127.0.0.1:1"]));
        assert!(
            only_backend(&b).sticky,
            "the default applies when the route does not say"
        );
    }

    #[test]
    fn affinity_sets_a_cookie_only_when_the_answering_job_is_not_the_cookies() {
        let balancer = Balancer::new(1, Duration::from_secs(10), Duration::from_secs(60));
        let spec = |sticky| ServiceSpec {
            operation_id: "op".into(),
            task_name: "t".into(),
            service: "s".into(),
            protocol: Protocol::Http,
            endpoints: vec![
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
            ],
            operation_start_time: None,
            timeouts: Default::default(),
            sticky,
        };
        let backend = |sticky| {
            balancer.rebuild(&Arc::new(RoutingSnapshot::build("d", [spec(sticky)])));
            let routes = balancer.current();
            let backend = routes.backends().next().unwrap().clone();
            backend
        };
        let sticky = backend(Some(true));
        let [a, b] = [&sticky.endpoints[0], &sticky.endpoints[1]];
        let token = sticky.token_of(b).unwrap().encode();
        let cookie = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(
                http::header::COOKIE,
                http::HeaderValue::from_str(&format!("x=1; tp_affinity={value}")).unwrap(),
            );
            headers
        };

        // The cookie's job answered: nothing to set; another one: a replacement.
        let mut headers = cookie(&token);
        let affinity = Affinity::take(&sticky, &mut headers, false, false);
        assert_eq!(affinity.preferred, Some(1));
        assert_eq!(headers[http::header::COOKIE], "x=1");
        assert!(affinity.set_cookie(&sticky, b).is_none());
        let replaced = affinity.set_cookie(&sticky, a).expect("a replacement");
        assert!(replaced.to_str().unwrap().starts_with("tp_affinity="));
        // No cookie or a forged one: a cookie for whoever answered.
        for mut headers in [http::HeaderMap::new(), cookie("AAAAAAAAAAAAAAAAAAAAAA")] {
            let affinity = Affinity::take(&sticky, &mut headers, false, false);
            assert_eq!(affinity.preferred, None);
            assert!(affinity.set_cookie(&sticky, a).is_some());
        }
        // gRPC callers get none; a service that is not sticky neither, but loses the cookie.
        let affinity = Affinity::take(&sticky, &mut cookie(&token), false, true);
        assert_eq!(affinity.preferred, Some(1));
        assert!(affinity.set_cookie(&sticky, a).is_none());
        let plain = backend(None);
        let mut headers = cookie(&token);
        let affinity = Affinity::take(&plain, &mut headers, false, false);
        assert_eq!(
            (
                affinity.preferred,
                headers[http::header::COOKIE].to_str().unwrap()
            ),
            (None, "x=1")
        );
        assert!(affinity.set_cookie(&plain, &plain.endpoints[0]).is_none());
    }

    #[test]
    fn health_survives_swaps() {
        let b = Balancer::new(2, Duration::from_secs(10), Duration::from_secs(60));
        b.rebuild(&snapshot(&["127.0.0.1:1", "127.0.0.1:2"]));
        let first = only_backend(&b);
        b.connect_failed(&first.endpoints[0], "s", &"refused");
        b.rebuild(&snapshot(&["127.0.0.1:1", "127.0.0.1:3"]));
        let second = only_backend(&b);
        assert!(Arc::ptr_eq(&first.endpoints[0], &second.endpoints[0]));
        assert!(!Arc::ptr_eq(&first.endpoints[1], &second.endpoints[1]));
        assert!(b.ejected_for_ms(&second.endpoints[0]).is_some());
        assert!(Arc::ptr_eq(&first.stats, &second.stats));
        assert_eq!(
            b.endpoint_states().len(),
            2,
            "the endpoint that left is gone"
        );
    }

    /// An endpoint two services share has one state.
    #[test]
    fn a_shared_endpoint_has_one_state() {
        let b = Balancer::new(1, Duration::from_secs(10), Duration::from_secs(60));
        b.rebuild(&Arc::new(RoutingSnapshot::build(
            "d",
            [spec("a", &["127.0.0.1:1"]), spec("b", &["127.0.0.1:1"])],
        )));
        let routes = b.current();
        let [x, y] = routes.snapshot().routes() else {
            panic!("two routes");
        };
        let (x, y) = (
            routes.backend(&x.hash).unwrap(),
            routes.backend(&y.hash).unwrap(),
        );
        assert!(Arc::ptr_eq(&x.endpoints[0], &y.endpoints[0]));
        assert_eq!(b.endpoint_states().len(), 1);
    }

    /// The routing table hands each snapshot to the attached balancer before `publish`
    /// returns: the very next request finds the new route with its endpoints' states, with no
    /// task in between.
    #[test]
    fn a_published_route_is_usable_by_the_next_request() {
        let table = RoutingTable::new("d");
        let b = Arc::new(Balancer::new(
            1,
            Duration::from_secs(10),
            Duration::from_secs(60),
        ));
        table.attach(b.clone());
        for (i, endpoint) in ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
            .iter()
            .enumerate()
        {
            let service = format!("s{i}");
            let snap = RoutingSnapshot::build("d", [spec(&service, &[endpoint])]);
            let host = format!("{}.d", snap.routes()[0].hash);
            let generation = table.publish(snap);
            let routes = b.routes();
            assert_eq!(routes.generation(), generation);
            let key = route_key([], Some(&host), "d").unwrap();
            let backend = routes.route(&key).expect("the route just published");
            assert_eq!(backend.endpoints.len(), 1);
            assert_eq!(backend.endpoints[0].endpoint, endpoint.parse().unwrap());
            assert!(b.pick(backend, &Tried::default()).is_some());
        }
    }

    /// Readers racing a publisher always see routes and states of one generation: every route
    /// of the snapshot they loaded has a backend with exactly its endpoints.
    #[test]
    fn readers_never_see_a_route_without_its_state() {
        let table = Arc::new(RoutingTable::new("d"));
        let b = Arc::new(Balancer::new(
            1,
            Duration::from_secs(10),
            Duration::from_secs(60),
        ));
        table.attach(b.clone());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (b, stop) = (b.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut checked = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let routes = b.routes();
                    for route in routes.snapshot().routes() {
                        let backend = routes.backend(&route.hash).expect("state of the route");
                        assert!(Arc::ptr_eq(&backend.route, route));
                        let eps: Vec<&Endpoint> =
                            backend.endpoints.iter().map(|e| &e.endpoint).collect();
                        assert_eq!(eps, route.endpoints.iter().collect::<Vec<_>>());
                        checked += 1;
                    }
                }
                checked
            })
        };
        for i in 0..300u16 {
            let endpoints: Vec<String> = (0..1 + i % 4)
                .map(|j| format!("127.0.0.1:{}", 1000 + i + j))
                .collect();
            let endpoints: Vec<&str> = endpoints.iter().map(String::as_str).collect();
            let services = (0..1 + i % 3).map(|s| spec(&format!("s{s}"), &endpoints));
            table.publish(RoutingSnapshot::build("d", services));
        }
        stop.store(true, Ordering::Relaxed);
        let checked = reader.join().unwrap();
        assert!(checked > 0);
    }
}
