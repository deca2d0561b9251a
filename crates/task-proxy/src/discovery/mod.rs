//! Discovery: finds the services that running operations expose and publishes them.
//!
//! [`Discovery`] owns the cluster view (`pass.rs`). Every period it runs a pass, builds a
//! [`RoutingSnapshot`] from what it found (plus any static services), publishes it in the
//! [`RoutingTable`] when routes changed, and brings the services table (`table_writer.rs`) in
//! step. A pass that fails (cluster unreachable, listing broken) changes nothing: the last
//! table stays in force. Each pass leaves a [`PassReport`] and updates [`DiscoveryMetrics`],
//! both readable through [`DiscoveryStatus`] by admin.
//!
//! With several replicas, `leader.rs` elects one through a Cypress lock: only the leader runs
//! passes; the others follow the snapshot it publishes.
//!
//! Operation kinds live in their own modules: `vanilla.rs` (annotated vanilla operations),
//! `spyt.rs` (SPYT driver and cluster), and `operation.rs` (which kind an operation is).

pub mod leader;
mod metrics;
pub mod operation;
pub mod pass;
pub mod spyt;
pub mod table_writer;
pub mod vanilla;

pub use leader::{ElectionConfig, ElectionStatus, ElectionView, Identity, Role};
pub use metrics::DiscoveryMetrics;
pub use pass::{ClusterView, PassResult, PassSettings};
pub use table_writer::{ServiceRow, ServicesTableWriter};

use crate::routing::{RoutingSnapshot, RoutingTable, ServiceSpec};
use arc_swap::ArcSwapOption;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use yt_client::YtClient;

/// The default directory of the services table.
pub const DEFAULT_DIR_PATH: &str = "//sys/task_proxies";

/// How discovery runs.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    pub base_domain: String,
    /// The services table is `<dir_path>/services`.
    pub dir_path: String,
    /// Time between the starts of two passes.
    pub period: Duration,
    /// A pass taking longer is abandoned (and counts as failed).
    pub pass_timeout: Duration,
    /// Requests (or batch calls) in flight at once during a pass.
    pub concurrency: usize,
    /// Server-side parallelism of each `execute_batch` call.
    pub batch_concurrency: usize,
    /// Operations per `list_operations` page (the real cluster's maximum is 1000).
    pub list_page_size: u32,
    /// Whether to keep `<dir_path>/services` up to date.
    pub write_services_table: bool,
    /// Services from the services file, routed like discovered ones.
    pub static_services: Vec<ServiceSpec>,
    /// Elect one leader among replicas (`None`: every replica runs its own passes).
    pub election: Option<ElectionConfig>,
}

impl DiscoveryConfig {
    /// Defaults: `//sys/task_proxies`, a pass every 2 s (so a new or moved job is routable
    /// within about 2 s plus one pass), pages of 1000 operations, 16 requests in flight, the
    /// services table on.
    pub fn new(base_domain: impl Into<String>) -> DiscoveryConfig {
        DiscoveryConfig {
            base_domain: base_domain.into(),
            dir_path: DEFAULT_DIR_PATH.to_string(),
            period: Duration::from_secs(2),
            pass_timeout: Duration::from_secs(30),
            concurrency: 16,
            batch_concurrency: 32,
            list_page_size: 1000,
            write_services_table: true,
            static_services: Vec::new(),
            election: None,
        }
    }
}

/// What one pass did, for admin pages, logs and benchmarks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassReport {
    pub finished_at: SystemTime,
    pub duration: Duration,
    /// `None` when the pass succeeded; otherwise why it failed (the last table was kept).
    pub error: Option<String>,
    /// HTTP requests sent to the cluster during the pass (retries included).
    pub requests: u64,
    pub requests_by_command: BTreeMap<String, u64>,
    /// Reads that failed and were tolerated (previous services kept or an entry skipped).
    pub errors: usize,
    pub operations_seen: usize,
    /// Operations exposing services (vanilla + SPYT).
    pub operations_exposing: usize,
    pub vanilla_operations: usize,
    pub spyt_operations: usize,
    pub malformed_operations: usize,
    pub jobs: usize,
    pub services: usize,
    pub endpoints: usize,
    pub collisions: usize,
    /// Whether a new routing snapshot was published.
    pub published: bool,
    /// Whether the services table was rewritten.
    pub table_written: bool,
    /// Why the services table could not be brought in step, if it could not.
    pub table_error: Option<String>,
    /// The kinds of the pass's failure and of the table's, for counting.
    pub failure_kinds: Vec<yt_client::FailureKind>,
}

impl PassReport {
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

/// A cheap handle to discovery's status: the last pass report and the metrics.
#[derive(Debug, Clone, Default)]
pub struct DiscoveryStatus {
    last: Arc<ArcSwapOption<PassReport>>,
    metrics: DiscoveryMetrics,
    /// The election's state, when it runs.
    election: Option<Arc<ElectionStatus>>,
}

impl DiscoveryStatus {
    /// The report of the last finished pass.
    pub fn last_pass(&self) -> Option<PassReport> {
        self.last.load_full().map(|r| (*r).clone())
    }

    pub fn metrics(&self) -> &DiscoveryMetrics {
        &self.metrics
    }

    /// The leader election's state, when it runs.
    pub fn election(&self) -> Option<&Arc<ElectionStatus>> {
        self.election.as_ref()
    }

    /// Waits (at most `limit`) until discovery has stopped; with an election, until its
    /// transaction is aborted, so the next replica takes over before this process exits.
    pub async fn wait_stopped(&self, limit: Duration) {
        if let Some(election) = &self.election {
            election.wait_stopped(limit).await;
        }
    }

    /// Registers discovery's metrics (`task_proxy_discovery_*`, and `task_proxy_leader_*`
    /// with an election) in `registry`.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.metrics.register(registry);
        if let Some(election) = &self.election {
            election.register(registry);
        }
    }
}

/// Discovery: the owner of the cluster view.
#[derive(Debug)]
pub struct Discovery {
    client: YtClient,
    config: DiscoveryConfig,
    view: ClusterView,
    table_writer: Option<ServicesTableWriter>,
    status: DiscoveryStatus,
    /// Collisions already logged, as (short hash, renamed service).
    logged_collisions: HashSet<(String, String)>,
    /// Services of aliased operations already logged as having no alias domain.
    logged_unaliased: HashSet<String>,
    /// What the snapshot in force was built from (services and aliases), for the leader to
    /// share with followers.
    inputs: Option<(Vec<ServiceSpec>, HashMap<String, String>)>,
}

impl Discovery {
    pub fn new(client: YtClient, config: DiscoveryConfig) -> Discovery {
        let status = DiscoveryStatus {
            election: config
                .election
                .as_ref()
                .map(|_| Arc::new(ElectionStatus::default())),
            ..DiscoveryStatus::default()
        };
        let table_writer = config
            .write_services_table
            .then(|| ServicesTableWriter::new(client.clone(), &config.dir_path));
        Discovery {
            client,
            config,
            view: ClusterView::new(),
            table_writer,
            status,
            logged_collisions: HashSet::new(),
            logged_unaliased: HashSet::new(),
            inputs: None,
        }
    }

    /// Makes the services table's writes need `transaction` alive (the leader's).
    pub(crate) fn fence_writes(&mut self, transaction: Option<String>) {
        if let Some(writer) = &mut self.table_writer {
            writer.set_fence(transaction);
        }
    }

    /// The services and aliases the last good pass built its snapshot from.
    pub fn routing_inputs(&self) -> Option<(Vec<ServiceSpec>, HashMap<String, String>)> {
        self.inputs.clone()
    }

    /// A handle that stays valid after [`Discovery::run`] takes `self`.
    pub fn status(&self) -> DiscoveryStatus {
        self.status.clone()
    }

    /// The report of the last finished pass.
    pub fn last_pass(&self) -> Option<PassReport> {
        self.status.last_pass()
    }

    pub fn config(&self) -> &DiscoveryConfig {
        &self.config
    }

    /// Runs a pass every period until `shutdown` completes; with an election, only while this
    /// replica leads (following the leader's snapshot otherwise).
    pub async fn run(mut self, table: Arc<RoutingTable>, shutdown: impl Future<Output = ()>) {
        if let Some(election) = self.config.election.clone() {
            return leader::run(self, election, table, shutdown).await;
        }
        tokio::pin!(shutdown);
        let mut ticker = tokio::time::interval(self.config.period.max(Duration::from_millis(10)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = ticker.tick() => {}
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.run_pass(&table) => {}
            }
        }
        tracing::info!("discovery stopped");
    }

    /// Runs one pass now, publishes its outcome, and returns its report.
    pub async fn run_pass(&mut self, table: &RoutingTable) -> PassReport {
        let started = Instant::now();
        let stats_before = self.client.stats();
        let settings = PassSettings {
            concurrency: self.config.concurrency,
            batch_concurrency: self.config.batch_concurrency,
            list_page_size: self.config.list_page_size,
        };
        let outcome = tokio::time::timeout(
            self.config.pass_timeout,
            self.view.pass(&self.client, &settings),
        )
        .await;
        let mut report = PassReport {
            finished_at: SystemTime::now(),
            duration: Duration::ZERO,
            error: None,
            requests: 0,
            requests_by_command: BTreeMap::new(),
            errors: 0,
            operations_seen: 0,
            operations_exposing: 0,
            vanilla_operations: 0,
            spyt_operations: 0,
            malformed_operations: 0,
            jobs: 0,
            services: 0,
            endpoints: 0,
            collisions: 0,
            published: false,
            table_written: false,
            table_error: None,
            failure_kinds: Vec::new(),
        };
        match outcome {
            Err(_) => {
                report.error = Some(format!(
                    "the pass took longer than {:?}",
                    self.config.pass_timeout
                ));
                report
                    .failure_kinds
                    .push(yt_client::FailureKind::DeadlineExceeded);
            }
            Ok(Err(error)) => {
                report.failure_kinds.push(error.failure_kind());
                report.error = Some(error.to_string());
            }
            Ok(Ok(result)) => self.publish(table, result, &mut report).await,
        }
        let stats_after = self.client.stats();
        report.requests = stats_after.requests_since(&stats_before);
        report.requests_by_command = stats_after.by_command_since(&stats_before);
        report.duration = started.elapsed();
        report.finished_at = SystemTime::now();
        match &report.error {
            Some(error) => tracing::warn!(
                %error,
                duration_ms = report.duration.as_millis() as u64,
                "discovery pass failed; keeping the last routing table"
            ),
            None => tracing::debug!(
                duration_ms = report.duration.as_millis() as u64,
                requests = report.requests,
                operations = report.operations_seen,
                exposing = report.operations_exposing,
                services = report.services,
                endpoints = report.endpoints,
                "discovery pass done"
            ),
        }
        self.status.metrics.observe(&report);
        self.status.last.store(Some(Arc::new(report.clone())));
        report
    }

    async fn publish(&mut self, table: &RoutingTable, result: PassResult, report: &mut PassReport) {
        report.operations_seen = result.operations_seen;
        report.vanilla_operations = result.vanilla_operations;
        report.spyt_operations = result.spyt_operations;
        report.operations_exposing = result.vanilla_operations + result.spyt_operations;
        report.malformed_operations = result.malformed_operations;
        report.jobs = result.jobs;
        report.errors = result.errors;

        let specs: Vec<ServiceSpec> = result
            .specs
            .into_iter()
            .chain(self.config.static_services.iter().cloned())
            .collect();
        let snapshot = RoutingSnapshot::build_with_aliases(
            &self.config.base_domain,
            specs.clone(),
            &result.aliases,
        );
        self.inputs = Some((specs, result.aliases.clone()));
        report.services = snapshot.len();
        report.endpoints = snapshot.routes().iter().map(|r| r.endpoints.len()).sum();
        report.collisions = snapshot.collisions().len();
        for collision in snapshot.collisions() {
            let key = (collision.short_hash.clone(), collision.renamed.to_string());
            if !self.logged_collisions.contains(&key) {
                tracing::warn!(
                    short_hash = %collision.short_hash,
                    kept = %collision.kept,
                    renamed = %collision.renamed,
                    renamed_hash = %collision.renamed_hash,
                    "service hash collision: the newer service gets a longer hash"
                );
                self.status.metrics.collision_detected();
                self.logged_collisions.insert(key);
            }
        }
        let current: HashSet<(String, String)> = snapshot
            .collisions()
            .iter()
            .map(|c| (c.short_hash.clone(), c.renamed.to_string()))
            .collect();
        self.logged_collisions.retain(|k| current.contains(k));
        // Aliased operations whose services get no alias domain: logged once per service.
        let mut unaliased = HashSet::new();
        for route in snapshot.routes() {
            let Some(alias) = result.aliases.get(&route.key.operation_id) else {
                continue;
            };
            if route.alias_domain.is_some() {
                continue;
            }
            let key = route.key.to_string();
            if !self.logged_unaliased.contains(&key) {
                tracing::info!(
                    service = %route.key,
                    alias,
                    "no alias domain: the alias, task or service breaks the naming rules, or a newer operation holds the alias"
                );
            }
            unaliased.insert(key);
        }
        self.logged_unaliased = unaliased;

        let rows = table_writer::rows_from_snapshot(&snapshot);
        if !table.is_loaded() || !snapshot.same_routes(&table.load()) {
            let generation = table.publish(snapshot);
            report.published = true;
            tracing::info!(
                generation,
                services = report.services,
                endpoints = report.endpoints,
                "discovery published a new routing table"
            );
        }
        if let Some(writer) = &mut self.table_writer {
            let synced = tokio::time::timeout(self.config.pass_timeout, writer.sync(&rows))
                .await
                .unwrap_or(Err(yt_client::Error::Timeout));
            match synced {
                Ok(written) => report.table_written = written,
                Err(error) => {
                    tracing::warn!(path = writer.path(), %error, "cannot update the services table");
                    report.failure_kinds.push(error.failure_kind());
                    report.table_error = Some(error.to_string());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn the_loop_can_be_spawned() {
        // `tokio::spawn` needs the loop's future to be `Send`; this fails to compile otherwise.
        let client = YtClient::new(yt_client::ClientConfig::new("127.0.0.1:1")).unwrap();
        let discovery = Discovery::new(client, DiscoveryConfig::new("tp.test"));
        let table = Arc::new(RoutingTable::new("tp.test"));
        let run = discovery.run(table, std::future::ready(()));
        assert_send(&run);
    }

    #[tokio::test]
    async fn an_unreachable_cluster_fails_the_pass_and_publishes_nothing() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap();
        let mut config = yt_client::ClientConfig::new(closed.to_string());
        config.max_retries = 0;
        let client = YtClient::new(config).unwrap();
        let mut discovery = Discovery::new(client, DiscoveryConfig::new("tp.test"));
        let table = RoutingTable::new("tp.test");
        let report = discovery.run_pass(&table).await;
        assert!(!report.succeeded());
        assert_eq!(report.requests, 1);
        assert!(!table.is_loaded());
        assert_eq!(discovery.last_pass(), Some(report));
    }
}
