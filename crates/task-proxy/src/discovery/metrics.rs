//! Discovery's Prometheus metrics. The data plane owns the registry; admin registers these
//! through [`crate::discovery::DiscoveryStatus::register_metrics`].

use super::PassReport;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::UNIX_EPOCH;

/// Counters and gauges updated after every pass. Clones share the same values.
#[derive(Debug, Clone)]
pub struct DiscoveryMetrics {
    passes: Counter,
    failed_passes: Counter,
    pass_duration: Histogram,
    last_success: Gauge<f64, AtomicU64>,
    requests: Counter,
    last_pass_requests: Gauge,
    errors: Counter,
    operations_seen: Gauge,
    operations_exposing: Gauge,
    malformed_operations: Gauge,
    jobs: Gauge,
    services: Gauge,
    endpoints: Gauge,
    collisions: Gauge,
    collisions_detected: Counter,
    table_writes: Counter,
    table_errors: Counter,
    cluster_errors: Family<KindLabels, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    /// `yt_client::FailureKind::label`.
    kind: &'static str,
}

impl Default for DiscoveryMetrics {
    fn default() -> Self {
        DiscoveryMetrics {
            passes: Counter::default(),
            failed_passes: Counter::default(),
            pass_duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            last_success: Gauge::default(),
            requests: Counter::default(),
            last_pass_requests: Gauge::default(),
            errors: Counter::default(),
            operations_seen: Gauge::default(),
            operations_exposing: Gauge::default(),
            malformed_operations: Gauge::default(),
            jobs: Gauge::default(),
            services: Gauge::default(),
            endpoints: Gauge::default(),
            collisions: Gauge::default(),
            collisions_detected: Counter::default(),
            table_writes: Counter::default(),
            table_errors: Counter::default(),
            cluster_errors: {
                let family = Family::<KindLabels, Counter>::default();
                // Exported from the start, so alerts see zeros rather than no series.
                for kind in yt_client::FailureKind::ALL {
                    drop(family.get_or_create(&KindLabels { kind: kind.label() }));
                }
                family
            },
        }
    }
}

fn gauge(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl DiscoveryMetrics {
    /// Registers every metric under the `task_proxy_discovery` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("task_proxy_discovery");
        r.register("passes", "Discovery passes run", self.passes.clone());
        r.register(
            "cluster_errors",
            "Failed discovery passes and services-table updates, by the kind of the cluster's \
             failure (context_deadline_exceeded, connection_timeout, network_error, \
             unavailable, other)",
            self.cluster_errors.clone(),
        );
        r.register(
            "failed_passes",
            "Discovery passes that failed (the last routing table was kept)",
            self.failed_passes.clone(),
        );
        r.register(
            "pass_duration_seconds",
            "Duration of discovery passes",
            self.pass_duration.clone(),
        );
        r.register(
            "last_success_timestamp_seconds",
            "When the last successful pass finished (Unix time)",
            self.last_success.clone(),
        );
        r.register(
            "requests",
            "Requests sent to the cluster by discovery passes",
            self.requests.clone(),
        );
        r.register(
            "last_pass_requests",
            "Requests sent to the cluster by the last pass",
            self.last_pass_requests.clone(),
        );
        r.register(
            "read_errors",
            "Reads that failed during passes and were tolerated",
            self.errors.clone(),
        );
        r.register(
            "operations_seen",
            "Running operations seen by the last successful pass",
            self.operations_seen.clone(),
        );
        r.register(
            "operations_exposing",
            "Operations exposing services in the last successful pass",
            self.operations_exposing.clone(),
        );
        r.register(
            "malformed_operations",
            "Operations skipped as malformed in the last successful pass",
            self.malformed_operations.clone(),
        );
        r.register(
            "jobs",
            "Running jobs of exposing operations in the last successful pass",
            self.jobs.clone(),
        );
        r.register("services", "Routable services", self.services.clone());
        r.register(
            "endpoints",
            "Endpoints of routable services",
            self.endpoints.clone(),
        );
        r.register(
            "hash_collisions",
            "Services whose 8-character hash collides with another's, now",
            self.collisions.clone(),
        );
        r.register(
            "hash_collisions_detected",
            "Hash collisions detected (each counted once)",
            self.collisions_detected.clone(),
        );
        r.register(
            "table_writes",
            "Rewrites of the services table",
            self.table_writes.clone(),
        );
        r.register(
            "table_errors",
            "Failures to bring the services table in step",
            self.table_errors.clone(),
        );
    }

    pub(super) fn collision_detected(&self) {
        self.collisions_detected.inc();
    }

    pub(super) fn observe(&self, report: &PassReport) {
        self.passes.inc();
        for kind in &report.failure_kinds {
            self.cluster_errors
                .get_or_create(&KindLabels { kind: kind.label() })
                .inc();
        }
        self.pass_duration.observe(report.duration.as_secs_f64());
        self.requests.inc_by(report.requests);
        self.last_pass_requests
            .set(i64::try_from(report.requests).unwrap_or(i64::MAX));
        if report.error.is_some() {
            self.failed_passes.inc();
            return;
        }
        if let Ok(since_epoch) = report.finished_at.duration_since(UNIX_EPOCH) {
            self.last_success.set(since_epoch.as_secs_f64());
        }
        self.errors.inc_by(report.errors as u64);
        self.operations_seen.set(gauge(report.operations_seen));
        self.operations_exposing
            .set(gauge(report.operations_exposing));
        self.malformed_operations
            .set(gauge(report.malformed_operations));
        self.jobs.set(gauge(report.jobs));
        self.services.set(gauge(report.services));
        self.endpoints.set(gauge(report.endpoints));
        self.collisions.set(gauge(report.collisions));
        if report.table_written {
            self.table_writes.inc();
        }
        if report.table_error.is_some() {
            self.table_errors.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn encodes() {
        let metrics = DiscoveryMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let report = PassReport {
            finished_at: SystemTime::now(),
            duration: Duration::from_millis(30),
            error: None,
            requests: 7,
            requests_by_command: Default::default(),
            errors: 1,
            operations_seen: 10,
            operations_exposing: 2,
            vanilla_operations: 1,
            spyt_operations: 1,
            malformed_operations: 1,
            jobs: 3,
            services: 4,
            endpoints: 5,
            collisions: 0,
            published: true,
            table_written: true,
            table_error: Some("timed out".into()),
            failure_kinds: vec![yt_client::FailureKind::DeadlineExceeded],
        };
        metrics.observe(&report);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("task_proxy_discovery_services 4"), "{text}");
        assert!(
            text.contains("task_proxy_discovery_requests_total 7"),
            "{text}"
        );
        assert!(
            text.contains("task_proxy_discovery_passes_total 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "task_proxy_discovery_cluster_errors_total{kind=\"context_deadline_exceeded\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("task_proxy_discovery_cluster_errors_total{kind=\"unavailable\"} 0"),
            "{text}"
        );
    }
}
