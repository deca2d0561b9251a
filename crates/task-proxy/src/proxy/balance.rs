//! Endpoint selection and passive health: which job of a service gets the next request.
//!
//! Every endpoint has one [`EndpointState`], keyed by its address and kept across routing
//! snapshot swaps for endpoints that stay, so a swap resets neither ejections nor connection
//! pools. Selection is power-of-two-choices on in-flight counts among endpoints not ejected.
//! A connect failure ejects an endpoint for an exponentially growing back-off; once it expires,
//! live traffic probes it again (a success clears the record). The endpoint states themselves
//! (health, connection cap, per-worker pools) are defined in [`super::endpoint`].

use super::conn_limit::ConnLimitSettings;
use super::endpoint::EndpointState;
use crate::proxy::metrics::RouteStats;
use crate::routing::{Endpoint, Route, RoutingSnapshot};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A routed service with its endpoints' states and its request statistics.
#[derive(Debug)]
pub struct Backend {
    pub route: Arc<Route>,
    pub endpoints: Vec<Arc<EndpointState>>,
    pub stats: Arc<RouteStats>,
}

/// The backends of one routing generation, by route key.
#[derive(Debug, Default)]
pub struct BackendSet {
    pub generation: u64,
    /// Looked up on every request: foldhash (randomly seeded, like std's, but cheaper).
    pub by_hash: HashMap<String, Arc<Backend>, foldhash::fast::RandomState>,
}

/// What outlives snapshots: endpoint states by address, statistics by route key.
#[derive(Debug, Default)]
struct Registry {
    endpoints: HashMap<Endpoint, Arc<EndpointState>>,
    stats: HashMap<String, Arc<RouteStats>>,
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
    current: ArcSwap<BackendSet>,
    registry: Mutex<Registry>,
    workers: usize,
    epoch: Instant,
    eject_base: Duration,
    eject_max: Duration,
    conn_limit: ConnLimitSettings,
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
            current: ArcSwap::from_pointee(BackendSet::default()),
            registry: Mutex::new(Registry::default()),
            workers,
            epoch: Instant::now(),
            eject_base,
            eject_max,
            conn_limit,
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The backends of the latest generation rebuilt.
    pub fn current(&self) -> Arc<BackendSet> {
        self.current.load_full()
    }

    /// Rebuilds the backends for `snapshot`, keeping states of endpoints and routes that stay.
    pub fn rebuild(&self, snapshot: &RoutingSnapshot) {
        let Ok(mut registry) = self.registry.lock() else {
            return;
        };
        let mut endpoints = HashMap::new();
        let mut stats = HashMap::new();
        let mut by_hash = HashMap::with_capacity_and_hasher(
            snapshot.len(),
            foldhash::fast::RandomState::default(),
        );
        for route in snapshot.routes() {
            let backend = self.backend_from(&registry, route, &mut endpoints, &mut stats);
            by_hash.insert(route.hash.clone(), Arc::new(backend));
        }
        // States of endpoints that left are dropped here: their idle connections close.
        registry.endpoints = endpoints;
        registry.stats = stats;
        self.current.store(Arc::new(BackendSet {
            generation: snapshot.generation(),
            by_hash,
        }));
    }

    fn backend_from(
        &self,
        registry: &Registry,
        route: &Arc<Route>,
        endpoints: &mut HashMap<Endpoint, Arc<EndpointState>>,
        stats: &mut HashMap<String, Arc<RouteStats>>,
    ) -> Backend {
        let states = route
            .endpoints
            .iter()
            .map(|e| {
                endpoints
                    .entry(e.clone())
                    .or_insert_with(|| {
                        registry.endpoints.get(e).cloned().unwrap_or_else(|| {
                            Arc::new(EndpointState::new(e.clone(), self.workers, self.conn_limit))
                        })
                    })
                    .clone()
            })
            .collect();
        let route_stats = stats
            .entry(route.hash.clone())
            .or_insert_with(|| registry.stats.get(&route.hash).cloned().unwrap_or_default())
            .clone();
        Backend {
            route: route.clone(),
            endpoints: states,
            stats: route_stats,
        }
    }

    /// The backend for a route of the current snapshot. Normally a lookup; right after a swap,
    /// before [`Balancer::rebuild`] ran, it is built from the registry.
    pub fn backend(&self, route: &Arc<Route>) -> Arc<Backend> {
        if let Some(b) = self.current.load().by_hash.get(&route.hash) {
            if Arc::ptr_eq(&b.route, route) || b.route == *route {
                return b.clone();
            }
        }
        let registry = match self.registry.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        let (mut e, mut s) = (registry.endpoints.clone(), registry.stats.clone());
        Arc::new(self.backend_from(&registry, route, &mut e, &mut s))
    }

    /// Picks an endpoint not in `tried`: power of two choices among those not ejected; when
    /// every remaining one is ejected, the one whose ejection ends first (so a service whose
    /// jobs blipped is not refused for the whole back-off, and a retry after a job died still
    /// reaches a live job that was ejected earlier).
    pub fn pick(&self, backend: &Backend, tried: &Tried) -> Option<usize> {
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

    /// Ejections of endpoints currently routed, for metrics.
    pub fn endpoint_states(&self) -> Vec<Arc<EndpointState>> {
        match self.registry.lock() {
            Ok(r) => r.endpoints.values().cloned().collect(),
            Err(p) => p.into_inner().endpoints.values().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{Protocol, ServiceSpec};

    fn snapshot(endpoints: &[&str]) -> RoutingSnapshot {
        RoutingSnapshot::build(
            "d",
            [ServiceSpec {
                operation_id: "op".into(),
                task_name: "t".into(),
                service: "s".into(),
                protocol: Protocol::Http,
                endpoints: endpoints.iter().map(|e| e.parse().unwrap()).collect(),
                operation_start_time: None,
                timeouts: Default::default(),
            }],
        )
    }

    #[test]
    fn picks_spread_and_skip_ejected() {
        let b = Balancer::new(1, Duration::from_secs(10), Duration::from_secs(60));
        let snap = snapshot(&["127.0.0.1:1", "127.0.0.1:2"]);
        b.rebuild(&snap);
        let backend = b.backend(&snap.routes()[0]);
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
    fn health_survives_swaps() {
        let b = Balancer::new(2, Duration::from_secs(10), Duration::from_secs(60));
        let snap = snapshot(&["127.0.0.1:1", "127.0.0.1:2"]);
        b.rebuild(&snap);
        let first = b.backend(&snap.routes()[0]);
        b.connect_failed(&first.endpoints[0], "s", &"refused");
        let snap2 = snapshot(&["127.0.0.1:1", "127.0.0.1:3"]);
        b.rebuild(&snap2);
        let second = b.backend(&snap2.routes()[0]);
        assert!(Arc::ptr_eq(&first.endpoints[0], &second.endpoints[0]));
        assert!(b.ejected_for_ms(&second.endpoints[0]).is_some());
        assert!(Arc::ptr_eq(&first.stats, &second.stats));
    }
}
