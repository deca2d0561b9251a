//! Metrics: atomic counters updated on the request path (no labels formatted per request, no
//! locks), rendered in Prometheus text by a collector at scrape time. Per-service series exist
//! only for services in the current routing table, so cardinality is bounded by them.

use crate::proxy::balance::Balancer;
use crate::routing::RoutingTable;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Upper bounds (seconds) of the upstream latency buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A histogram of atomics: observing is a few relaxed adds.
#[derive(Debug, Default)]
pub struct AtomicHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl AtomicHistogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder) -> std::fmt::Result {
        // The text encoder accumulates the buckets itself: give it per-bucket counts.
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
        let mut counted = 0;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            let n = self.buckets[i].load(Ordering::Relaxed);
            counted += n;
            buckets.push((*bound, n));
        }
        let count = self.count.load(Ordering::Relaxed).max(counted);
        buckets.push((f64::MAX, count - counted));
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        encoder
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)
    }
}

/// Request statistics of one service (kept across snapshot swaps while the service exists).
#[derive(Debug, Default)]
pub struct RouteStats {
    /// Responses by status class: 1xx..5xx.
    responses: [AtomicU64; 5],
    /// Time from sending the request to the job until its response head.
    pub upstream_latency: AtomicHistogram,
}

impl RouteStats {
    pub fn count_status(&self, status: http::StatusCode) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Responses so far by status class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub fn responses_by_class(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.responses[i].load(Ordering::Relaxed))
    }
}

/// Why a request was answered without a route.
#[derive(Debug, Clone, Copy)]
#[repr(usize)]
pub enum Unrouted {
    BadRequest = 0,
    NoSuchTask = 1,
}

/// Process-wide counters of the data plane.
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    pub active_connections: AtomicUsize,
    pub connections_total: AtomicU64,
    pub connections_refused: AtomicU64,
    pub tunnels_active: AtomicUsize,
    /// Tunnels opened (a `101` passed on and both sides upgraded).
    pub tunnels_total: AtomicU64,
    /// Tunnels closed by `--tunnel-idle-timeout`.
    pub tunnels_closed_idle: AtomicU64,
    /// `Set-Cookie` lines of jobs dropped (scoped beyond the service's host, or named like
    /// the auth cookie).
    pub set_cookies_dropped: AtomicU64,
    /// HTTP/2 caller connections ended for a flood of control frames.
    pub h2_floods: AtomicU64,
    unrouted: [AtomicU64; 2],
}

impl ProxyMetrics {
    pub fn count_unrouted(&self, why: Unrouted) {
        self.unrouted[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `Set-Cookie` lines dropped from a response (none: no atomic operation).
    pub fn count_set_cookies_dropped(&self, dropped: usize) {
        if dropped > 0 {
            self.set_cookies_dropped
                .fetch_add(dropped as u64, Ordering::Relaxed);
        }
    }
}

/// Renders the data plane's state at scrape time.
#[derive(Debug)]
struct DataPlaneCollector {
    table: Arc<RoutingTable>,
    balancer: Arc<Balancer>,
    proxy: Arc<ProxyMetrics>,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl prometheus_client::collector::Collector for DataPlaneCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let snapshot = self.table.load();
        let backends = self.balancer.current();

        let gauge = |encoder: &mut DescriptorEncoder, name: &str, help: &str, v: i64| {
            let g = ConstGauge::new(v);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
        };
        let counter = |encoder: &mut DescriptorEncoder, name: &str, help: &str, v: u64| {
            let c = ConstCounter::new(v);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
        };
        gauge(
            &mut encoder,
            "task_proxy_routing_generation",
            "Generation of the routing table in force",
            snapshot.generation() as i64,
        )?;
        gauge(
            &mut encoder,
            "task_proxy_routing_services",
            "Services in the routing table",
            snapshot.len() as i64,
        )?;
        gauge(
            &mut encoder,
            "task_proxy_routing_endpoints",
            "Endpoints (job ports) of the services in the routing table",
            snapshot
                .routes()
                .iter()
                .map(|r| r.endpoints.len())
                .sum::<usize>() as i64,
        )?;
        gauge(
            &mut encoder,
            "task_proxy_routing_collisions",
            "Service hash collisions resolved in the routing table",
            snapshot.collisions().len() as i64,
        )?;
        gauge(
            &mut encoder,
            "task_proxy_active_connections",
            "Client connections open now",
            self.proxy.active_connections.load(Ordering::Relaxed) as i64,
        )?;
        gauge(
            &mut encoder,
            "task_proxy_active_tunnels",
            "Upgraded (WebSocket) tunnels open now",
            self.proxy.tunnels_active.load(Ordering::Relaxed) as i64,
        )?;
        counter(
            &mut encoder,
            "task_proxy_tunnels",
            "Upgraded (WebSocket) tunnels opened",
            self.proxy.tunnels_total.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "task_proxy_tunnels_closed_idle",
            "Tunnels closed after --tunnel-idle-timeout without a byte either way",
            self.proxy.tunnels_closed_idle.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "task_proxy_connections",
            "Client connections accepted",
            self.proxy.connections_total.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "task_proxy_connections_refused",
            "Client connections refused at the connection cap",
            self.proxy.connections_refused.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "task_proxy_set_cookies_dropped",
            "Set-Cookie lines of jobs dropped: scoped to a parent domain of the service or named like the auth cookie",
            self.proxy.set_cookies_dropped.load(Ordering::Relaxed),
        )?;

        counter(
            &mut encoder,
            "task_proxy_h2_floods",
            "HTTP/2 client connections closed with GOAWAY ENHANCE_YOUR_CALM for a flood of control frames",
            self.proxy.h2_floods.load(Ordering::Relaxed),
        )?;

        {
            let mut family = encoder.encode_descriptor(
                "task_proxy_unrouted_requests",
                "Requests answered without a route",
                None,
                MetricType::Counter,
            )?;
            for (i, reason) in ["bad_request", "no_such_task"].iter().enumerate() {
                let labels = [("reason", *reason)];
                ConstCounter::new(self.proxy.unrouted[i].load(Ordering::Relaxed))
                    .encode(family.encode_family(&labels)?)?;
            }
        }

        let routes = snapshot.routes();
        {
            let mut family = encoder.encode_descriptor(
                "task_proxy_requests",
                "Responses to routed requests by service, protocol and status class",
                None,
                MetricType::Counter,
            )?;
            for route in routes {
                let Some(b) = backends.by_hash.get(&route.hash) else {
                    continue;
                };
                for (i, class) in CLASSES.iter().enumerate() {
                    let labels = [
                        ("service", route.hash.as_str()),
                        ("protocol", route.protocol.as_str()),
                        ("class", class),
                    ];
                    ConstCounter::new(b.stats.responses[i].load(Ordering::Relaxed))
                        .encode(family.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "task_proxy_upstream_latency_seconds",
                "Time from sending a request to a job until its response head",
                None,
                MetricType::Histogram,
            )?;
            for route in routes {
                let Some(b) = backends.by_hash.get(&route.hash) else {
                    continue;
                };
                let labels = [("service", route.hash.as_str())];
                b.stats
                    .upstream_latency
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        {
            let states = self.balancer.endpoint_states();
            {
                let mut family = encoder.encode_descriptor(
                    "task_proxy_endpoint_ejections",
                    "Times an endpoint was ejected after a connect failure",
                    None,
                    MetricType::Counter,
                )?;
                for ep in &states {
                    let labels = [("endpoint", ep.authority.as_str())];
                    ConstCounter::new(ep.ejections()).encode(family.encode_family(&labels)?)?;
                }
            }
            {
                let mut family = encoder.encode_descriptor(
                    "task_proxy_upstream_connections",
                    "Connections open to an endpoint (busy and idle), under --upstream-max-connections-per-job",
                    None,
                    MetricType::Gauge,
                )?;
                for ep in &states {
                    let labels = [("endpoint", ep.authority.as_str())];
                    ConstGauge::new(ep.limit.open() as i64)
                        .encode(family.encode_family(&labels)?)?;
                }
            }
            {
                let mut family = encoder.encode_descriptor(
                    "task_proxy_upstream_queued",
                    "Requests that waited for a connection to an endpoint at its connection cap",
                    None,
                    MetricType::Counter,
                )?;
                for ep in &states {
                    let labels = [("endpoint", ep.authority.as_str())];
                    ConstCounter::new(ep.limit.queued()).encode(family.encode_family(&labels)?)?;
                }
            }
            {
                let mut family = encoder.encode_descriptor(
                    "task_proxy_upstream_refused",
                    "Requests answered 503 because the endpoint's connection queue was full or the wait timed out",
                    None,
                    MetricType::Counter,
                )?;
                for ep in &states {
                    let labels = [("endpoint", ep.authority.as_str())];
                    ConstCounter::new(ep.limit.refused()).encode(family.encode_family(&labels)?)?;
                }
            }
            let mut family = encoder.encode_descriptor(
                "task_proxy_endpoint_in_flight",
                "Requests in flight per endpoint",
                None,
                MetricType::Gauge,
            )?;
            for ep in &states {
                let labels = [("endpoint", ep.authority.as_str())];
                ConstGauge::new(ep.in_flight() as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// A registry with the data plane's collector.
pub fn registry(
    table: Arc<RoutingTable>,
    balancer: Arc<Balancer>,
    proxy: Arc<ProxyMetrics>,
) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(DataPlaneCollector {
        table,
        balancer,
        proxy,
    }));
    registry
}

/// Renders the registry in Prometheus text format.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}
