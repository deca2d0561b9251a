//! Metrics: the data plane's counters ([`crate::proxy::metrics`]), the routing table and the
//! balancer's endpoint states, rendered in Prometheus text by a collector at scrape time (it
//! only reads them). Per-service series exist
//! only for services in the current routing table, so cardinality is bounded by them.

use crate::proxy::balance::Balancer;
use crate::proxy::metrics::{AtomicHistogram, ProxyMetrics, Unrouted};
use crate::proxy::sessions::CloseReason;
use crate::routing::RoutingTable;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Encodes a histogram as its reading at scrape time.
fn encode_histogram(
    histogram: &AtomicHistogram,
    mut encoder: prometheus_client::encoding::MetricEncoder,
) -> std::fmt::Result {
    // The text encoder accumulates the buckets itself: give it per-bucket counts.
    let reading = histogram.read();
    encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        reading.sum,
        reading.count,
        &reading.buckets,
        None,
    )
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
        gauge(
            &mut encoder,
            "task_proxy_sessions_live",
            "Long sessions open now (WebSocket tunnels, response bodies still streaming) while --session-recheck-interval is on",
            self.proxy.sessions_live.load(Ordering::Relaxed) as i64,
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "task_proxy_sessions_closed",
                "Long sessions the proxy closed because the operation ended or the user's read permission was revoked",
                None,
                MetricType::Counter,
            )?;
            for reason in CloseReason::ALL {
                let labels = [("reason", reason.as_str())];
                ConstCounter::new(
                    self.proxy.sessions_closed[reason as usize].load(Ordering::Relaxed),
                )
                .encode(family.encode_family(&labels)?)?;
            }
        }
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
            "task_proxy_access_log_dropped",
            "Access log lines dropped because the log's writer fell behind (a worker never waits for it)",
            crate::logging::access_lines_dropped(),
        )?;
        counter(
            &mut encoder,
            "task_proxy_h2_floods",
            "HTTP/2 client connections closed with GOAWAY ENHANCE_YOUR_CALM for a flood of control frames",
            self.proxy.h2_floods.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut encoder,
            "task_proxy_h2_response_bytes_held",
            "Response bytes taken from jobs for HTTP/2 clients and not yet written to their sockets",
            self.proxy.h2_response_bytes_held.load(Ordering::Relaxed) as i64,
        )?;

        {
            let mut family = encoder.encode_descriptor(
                "task_proxy_unrouted_requests",
                "Requests answered without a route",
                None,
                MetricType::Counter,
            )?;
            for (why, reason) in [
                (Unrouted::BadRequest, "bad_request"),
                (Unrouted::NoSuchTask, "no_such_task"),
            ] {
                let labels = [("reason", reason)];
                ConstCounter::new(self.proxy.unrouted(why))
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
                let Some(b) = backends.backend(&route.hash) else {
                    continue;
                };
                let responses = b.stats.responses_by_class();
                for (i, class) in CLASSES.iter().enumerate() {
                    let labels = [
                        ("service", route.hash.as_str()),
                        ("protocol", route.protocol.as_str()),
                        ("class", class),
                    ];
                    ConstCounter::new(responses[i]).encode(family.encode_family(&labels)?)?;
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
                let Some(b) = backends.backend(&route.hash) else {
                    continue;
                };
                let labels = [("service", route.hash.as_str())];
                encode_histogram(&b.stats.upstream_latency, family.encode_family(&labels)?)?;
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
