//! Leader election among replicas through Cypress, and the routing snapshot the leader shares.
//!
//! Every replica starts a master transaction with a timeout, pings it, and asks for a waitable
//! exclusive lock on the lock node (`<dir-path>/leader`); the transaction's attributes name the
//! replica (`task_proxy_leader={name; address; since}`), so `@locks` of the node and
//! `#<transaction>/@task_proxy_leader` say who holds it. The holder is the leader: it runs the
//! discovery passes, writes the services table, and publishes the routing snapshot (services,
//! endpoints, aliases, per-operation settings, generation, who published it) as one document
//! at `<dir-path>/routing_snapshot`, replaced by one `set` fenced by its transaction (a deposed
//! leader's write fails, as does its write of the services table). Followers read only the
//! document's `@revision` each period (plus the state of their pending lock and, every third
//! of the timeout, a ping) and fetch the document when the revision moved, then publish it in
//! their own routing table. A follower that cannot reach the cluster keeps its table.
//!
//! Safety: a leader whose pings fail stops acting as leader once 60% of the timeout has passed
//! since its last successful ping (its transaction lives at least the whole timeout from then),
//! so two replicas never act as leader at once. On shutdown the transaction is aborted first,
//! so the next replica in the lock's queue takes over at once.

use super::{Discovery, DiscoveryStatus};
use crate::routing::{RoutingSnapshot, RoutingTable, ServiceSpec};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use yson::{Node, Value};
use yt_client::{LockMode, WriteOptions, YtClient};

/// The document's shape; a follower refuses a document of another version.
const FORMAT_VERSION: i64 = 1;
/// The transaction attribute that names the replica.
pub const IDENTITY_ATTRIBUTE: &str = "task_proxy_leader";
/// Share of the transaction timeout after the last successful ping at which a leader stops
/// acting as one (the transaction lives at least the whole timeout from that ping).
const STEP_DOWN_SHARE: f64 = 0.6;
/// The longest wait for the transaction's abort at shutdown.
const ABORT_TIMEOUT: Duration = Duration::from_secs(2);

/// Who a replica is, as the lock's transaction and the snapshot name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The pod name (Kubernetes downward API), else the host name.
    pub name: String,
    /// The pod's address, when known.
    pub address: Option<String>,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.address {
            Some(address) => write!(f, "{} ({address})", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// How the election runs.
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    /// The node every replica locks (`<dir-path>/leader`).
    pub lock_path: String,
    /// The routing snapshot document (`<dir-path>/routing_snapshot`).
    pub snapshot_path: String,
    /// The transaction's timeout: a dead leader's lock goes after this long.
    pub transaction_timeout: Duration,
    pub identity: Identity,
}

impl ElectionConfig {
    /// The election `serve`'s flags ask for (`--leader-*`, `--pod-*`).
    pub fn from_settings(
        settings: &crate::config::ElectionSettings,
        dir_path: &str,
    ) -> ElectionConfig {
        ElectionConfig {
            lock_path: settings.lock_path.clone(),
            transaction_timeout: settings.transaction_timeout,
            ..ElectionConfig::new(
                dir_path,
                Identity {
                    name: settings.pod_name.clone(),
                    address: settings.pod_address.clone(),
                },
            )
        }
    }

    /// The cluster client's user agent for this replica: it names the pod, so the cluster's
    /// logs (and the dev cluster's per-client knobs) tell replicas apart.
    pub fn user_agent(&self) -> String {
        format!(
            "task-proxy/{} ({})",
            env!("CARGO_PKG_VERSION"),
            self.identity.name
        )
    }

    /// Defaults under `dir_path`: `leader`, `routing_snapshot`, a 10 s timeout.
    pub fn new(dir_path: &str, identity: Identity) -> ElectionConfig {
        let dir = dir_path.trim_end_matches('/');
        ElectionConfig {
            lock_path: format!("{dir}/leader"),
            snapshot_path: format!("{dir}/routing_snapshot"),
            transaction_timeout: Duration::from_secs(10),
            identity,
        }
    }
}

/// This replica's part in the election.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    #[default]
    Follower,
    Leader,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::Leader => "leader",
        }
    }
}

/// What admin shows about the election.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElectionView {
    pub role: Role,
    /// Who published the snapshot in force (the leader, as far as this replica knows).
    pub leader: Option<String>,
    /// The snapshot's generation (counted across leaders).
    pub generation: u64,
    /// When the leader published the snapshot in force.
    pub published_at: Option<SystemTime>,
    /// Why the last step failed (cluster unreachable, ...), if it did.
    pub last_error: Option<String>,
}

impl ElectionView {
    /// Seconds since the snapshot in force was published.
    pub fn snapshot_age(&self) -> Option<Duration> {
        self.published_at
            .and_then(|at| SystemTime::now().duration_since(at).ok())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LeaderLabels {
    leader: String,
}

/// The election's state and counters, shared with admin.
#[derive(Debug, Default)]
pub struct ElectionStatus {
    view: Mutex<ElectionView>,
    is_leader: Gauge,
    leader_info: Family<LeaderLabels, Gauge>,
    generation: Gauge,
    published: Gauge<f64, AtomicU64>,
    age: Gauge<f64, AtomicU64>,
    terms: Counter,
    step_downs: Counter,
    stopped: AtomicBool,
    stopped_notify: tokio::sync::Notify,
}

impl ElectionStatus {
    pub fn view(&self) -> ElectionView {
        self.view.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn update(&self, change: impl FnOnce(&mut ElectionView)) {
        let Ok(mut view) = self.view.lock() else {
            return;
        };
        let before = view.leader.clone();
        change(&mut view);
        self.is_leader.set(i64::from(view.role == Role::Leader));
        self.generation
            .set(i64::try_from(view.generation).unwrap_or(i64::MAX));
        if let Some(at) = view.published_at {
            self.published.set(
                at.duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0),
            );
        }
        self.age
            .set(view.snapshot_age().map_or(0.0, |a| a.as_secs_f64()));
        if before != view.leader {
            self.leader_info.clear();
            if let Some(leader) = &view.leader {
                self.leader_info
                    .get_or_create(&LeaderLabels {
                        leader: leader.clone(),
                    })
                    .set(1);
            }
        }
    }

    /// Registers `task_proxy_leader_*` in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("task_proxy_leader");
        r.register(
            "is_leader",
            "1 while this replica holds the lock and acts as leader",
            self.is_leader.clone(),
        );
        r.register(
            "info",
            "The replica that published the snapshot in force",
            self.leader_info.clone(),
        );
        r.register(
            "snapshot_generation",
            "Generation of the routing snapshot in force (counted across leaders)",
            self.generation.clone(),
        );
        r.register(
            "snapshot_published_timestamp_seconds",
            "When the leader published the routing snapshot in force",
            self.published.clone(),
        );
        r.register(
            "snapshot_age_seconds",
            "Seconds since the routing snapshot in force was published (updated every period)",
            self.age.clone(),
        );
        r.register(
            "terms",
            "Times this replica became leader",
            self.terms.clone(),
        );
        r.register(
            "step_downs",
            "Times this replica stopped being leader before shutdown (pings failed, lock lost)",
            self.step_downs.clone(),
        );
    }

    fn mark_stopped(&self) {
        self.stopped.store(true, Ordering::Release);
        self.stopped_notify.notify_waiters();
    }

    /// Waits until the election has ended (its transaction aborted) or `limit` passed.
    pub async fn wait_stopped(&self, limit: Duration) {
        let notified = self.stopped_notify.notified();
        if self.stopped.load(Ordering::Acquire) {
            return;
        }
        let _ = tokio::time::timeout(limit, notified).await;
    }
}

/// The leader's routing snapshot as stored in Cypress.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedSnapshot {
    pub generation: u64,
    pub published_at: SystemTime,
    pub leader: String,
    pub services: Vec<ServiceSpec>,
    /// Operation id -> alias (without `*`).
    pub aliases: HashMap<String, String>,
}

fn system_time_micros(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl SharedSnapshot {
    pub fn to_node(&self) -> Result<Node, String> {
        let services = serde_json::to_value(&self.services).map_err(|e| e.to_string())?;
        let services = Node::from_json(&services).map_err(|e| e.to_string())?;
        let mut aliases: Vec<(&String, &String)> = self.aliases.iter().collect();
        aliases.sort();
        Ok(Node::map(vec![
            ("format_version".into(), Value::Int64(FORMAT_VERSION).into()),
            (
                "generation".into(),
                Value::Int64(i64::try_from(self.generation).unwrap_or(i64::MAX)).into(),
            ),
            (
                "published_at".into(),
                Node::string(
                    yt_client::time::Instant(system_time_micros(self.published_at)).to_string(),
                ),
            ),
            ("leader".into(), Node::string(self.leader.clone())),
            ("services".into(), services),
            (
                "aliases".into(),
                Node::map(
                    aliases
                        .into_iter()
                        .map(|(op, alias)| (op.clone(), Node::string(alias.clone())))
                        .collect(),
                ),
            ),
        ]))
    }

    pub fn from_node(node: &Node) -> Result<SharedSnapshot, String> {
        let version = node.get("format_version").and_then(Node::as_i64);
        if version != Some(FORMAT_VERSION) {
            return Err(format!(
                "format_version is {version:?}, this replica reads {FORMAT_VERSION}"
            ));
        }
        let generation = node
            .get("generation")
            .and_then(|g| {
                g.as_u64()
                    .or_else(|| g.as_i64().and_then(|v| u64::try_from(v).ok()))
            })
            .ok_or("no generation")?;
        let published_at = node
            .get("published_at")
            .and_then(Node::as_str)
            .and_then(yt_client::time::Instant::parse)
            .and_then(|i| u64::try_from(i.0).ok())
            .map(|micros| UNIX_EPOCH + Duration::from_micros(micros))
            .ok_or("no published_at")?;
        let leader = node
            .get("leader")
            .and_then(Node::as_str)
            .unwrap_or_default()
            .to_string();
        let services = node.get("services").ok_or("no services")?.to_json();
        let services: Vec<ServiceSpec> =
            serde_json::from_value(services).map_err(|e| format!("services: {e}"))?;
        let mut aliases = HashMap::new();
        for (op, alias) in node
            .get("aliases")
            .and_then(Node::as_map)
            .ok_or("no aliases")?
        {
            let alias = alias.as_str().ok_or("an alias is not a string")?;
            aliases.insert(op.clone(), alias.to_string());
        }
        Ok(SharedSnapshot {
            generation,
            published_at,
            leader,
            services,
            aliases,
        })
    }
}

/// One transaction, pinged in the background while it lives.
struct Lease {
    transaction_id: String,
    lock_id: String,
    acquired: bool,
    /// When the last successful ping (or the start) was sent.
    last_ok: Arc<Mutex<Instant>>,
    /// The server said the transaction is gone.
    gone: Arc<AtomicBool>,
    /// Ping interval in milliseconds (shorter while leading).
    interval_ms: Arc<AtomicU64>,
    pinger: tokio::task::JoinHandle<()>,
    timeout: Duration,
}

impl Lease {
    /// Starts a transaction naming `identity` and asks for the waitable exclusive lock.
    async fn start(client: &YtClient, config: &ElectionConfig) -> Result<Lease, yt_client::Error> {
        let sent = Instant::now();
        let since = yt_client::time::Instant(system_time_micros(SystemTime::now())).to_string();
        let mut identity = vec![
            (
                "name".to_string(),
                Node::string(config.identity.name.clone()),
            ),
            ("since".to_string(), Node::string(since)),
        ];
        if let Some(address) = &config.identity.address {
            identity.push(("address".to_string(), Node::string(address.clone())));
        }
        let attributes = Node::map(vec![
            (
                "title".to_string(),
                Node::string(format!("task-proxy leader election: {}", config.identity)),
            ),
            (IDENTITY_ATTRIBUTE.to_string(), Node::map(identity)),
        ]);
        let transaction_id = client
            .start_transaction(config.transaction_timeout, Some(attributes))
            .await?;
        let last_ok = Arc::new(Mutex::new(sent));
        let gone = Arc::new(AtomicBool::new(false));
        let interval_ms = Arc::new(AtomicU64::new(follower_ping_interval(
            config.transaction_timeout,
        )));
        let pinger = tokio::spawn(ping_loop(
            client.clone(),
            transaction_id.clone(),
            last_ok.clone(),
            gone.clone(),
            interval_ms.clone(),
        ));
        let mut lease = Lease {
            transaction_id,
            lock_id: String::new(),
            acquired: false,
            last_ok,
            gone,
            interval_ms,
            pinger,
            timeout: config.transaction_timeout,
        };
        let lock = match client
            .lock(
                &config.lock_path,
                LockMode::Exclusive,
                true,
                &lease.transaction_id,
            )
            .await
        {
            Ok(lock) => lock,
            Err(error) => {
                lease.abandon(client);
                return Err(error);
            }
        };
        lease.lock_id = lock.lock_id;
        Ok(lease)
    }

    /// Whether the transaction surely still lives (so its lock is still held).
    fn valid(&self) -> bool {
        let since_ok = self
            .last_ok
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or(Duration::MAX);
        !self.gone.load(Ordering::Acquire) && since_ok < self.timeout.mul_f64(STEP_DOWN_SHARE)
    }

    /// Resolves when [`Lease::valid`] turns false.
    async fn lapsed(&self) {
        while self.valid() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn set_leading(&self, leading: bool) {
        let interval = if leading {
            leader_ping_interval(self.timeout)
        } else {
            follower_ping_interval(self.timeout)
        };
        self.interval_ms.store(interval, Ordering::Relaxed);
    }

    /// Stops pinging and aborts the transaction in the background (it expires anyway).
    fn abandon(self, client: &YtClient) {
        self.pinger.abort();
        let client = client.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(
                ABORT_TIMEOUT,
                client.abort_transaction(&self.transaction_id),
            )
            .await;
        });
    }

    /// Stops pinging and aborts the transaction, waiting at most [`ABORT_TIMEOUT`].
    async fn abort(self, client: &YtClient) {
        self.pinger.abort();
        match tokio::time::timeout(
            ABORT_TIMEOUT,
            client.abort_transaction(&self.transaction_id),
        )
        .await
        {
            Ok(Ok(())) => tracing::info!(
                transaction = %self.transaction_id,
                "leader election: transaction aborted, lock released"
            ),
            Ok(Err(error)) => tracing::warn!(
                transaction = %self.transaction_id,
                %error,
                "leader election: cannot abort the transaction; it expires on its own"
            ),
            Err(_) => tracing::warn!(
                transaction = %self.transaction_id,
                "leader election: aborting the transaction timed out; it expires on its own"
            ),
        }
    }
}

/// A leader pings every fifth of the timeout, so two failed pings still leave it time to stop.
fn leader_ping_interval(timeout: Duration) -> u64 {
    (timeout.as_millis() / 5).max(50) as u64
}

/// A follower only has to keep its place in the queue: a ping every third of the timeout.
fn follower_ping_interval(timeout: Duration) -> u64 {
    (timeout.as_millis() / 3).max(50) as u64
}

async fn ping_loop(
    client: YtClient,
    transaction_id: String,
    last_ok: Arc<Mutex<Instant>>,
    gone: Arc<AtomicBool>,
    interval_ms: Arc<AtomicU64>,
) {
    loop {
        let interval = Duration::from_millis(interval_ms.load(Ordering::Relaxed));
        tokio::time::sleep(interval).await;
        let sent = Instant::now();
        match tokio::time::timeout(interval, client.ping_transaction(&transaction_id)).await {
            Ok(Ok(())) => {
                if let Ok(mut last) = last_ok.lock() {
                    *last = sent;
                }
            }
            Ok(Err(error)) if error.is_transaction_gone() => {
                tracing::warn!(transaction = %transaction_id, %error, "leader election: the transaction is gone");
                gone.store(true, Ordering::Release);
                return;
            }
            Ok(Err(error)) => {
                tracing::warn!(transaction = %transaction_id, %error, "leader election: ping failed")
            }
            Err(_) => {
                tracing::warn!(transaction = %transaction_id, "leader election: ping timed out")
            }
        }
    }
}

/// The leader's state for its term.
struct Term {
    /// The generation of the last published snapshot.
    generation: u64,
    /// Whether the snapshot must be (re)published after the next good pass.
    publish_due: bool,
}

/// Runs the elected discovery loop until `shutdown` completes, then aborts the transaction.
pub(super) async fn run(
    mut discovery: Discovery,
    config: ElectionConfig,
    table: Arc<RoutingTable>,
    shutdown: impl Future<Output = ()>,
) {
    let status: DiscoveryStatus = discovery.status();
    // `Discovery::new` made it for an elected discovery.
    let election = status.election.clone().unwrap_or_default();
    let client = discovery.client.clone();
    let base_domain = discovery.config.base_domain.clone();
    let period = discovery.config.period.max(Duration::from_millis(10));
    let mut lease: Option<Lease> = None;
    let mut term: Option<Term> = None;
    let mut seen_revision: Option<u64> = None;
    let mut nodes_ready = false;
    tokio::pin!(shutdown);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(
        identity = %config.identity,
        lock = %config.lock_path,
        timeout = ?config.transaction_timeout,
        "leader election on"
    );
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = ticker.tick() => {}
        }
        let step = async {
            // A lease that lapsed: stop leading at once, then start over.
            if lease.as_ref().is_some_and(|l| !l.valid()) {
                if let Some(old) = lease.take() {
                    if term.take().is_some() {
                        step_down(&election, "pings failed or the transaction is gone");
                    }
                    old.abandon(&client);
                }
            }
            if lease.is_none() {
                if !nodes_ready {
                    match ensure_nodes(&client, &config).await {
                        Ok(()) => nodes_ready = true,
                        Err(error) => {
                            note_error(&election, format!("cannot create the lock node: {error}"));
                        }
                    }
                }
                if nodes_ready {
                    match Lease::start(&client, &config).await {
                        Ok(new) => lease = Some(new),
                        Err(error) => {
                            note_error(&election, format!("cannot join the election: {error}"))
                        }
                    }
                }
            }
            if let Some(current) = lease.as_mut() {
                if !current.acquired {
                    match client.lock_state(&current.lock_id).await {
                        Ok(state) if state == "acquired" => current.acquired = true,
                        Ok(_) => {}
                        Err(error) if error.is_resolve_error() => {
                            // The lock went with its transaction.
                            current.gone.store(true, Ordering::Release);
                        }
                        Err(error) => {
                            note_error(&election, format!("cannot read the lock: {error}"))
                        }
                    }
                }
            }
            match lease.as_ref() {
                Some(current) if current.acquired && current.valid() => {
                    if term.is_none() {
                        discovery.fence_writes(Some(current.transaction_id.clone()));
                        term = Some(begin_term(&client, &config, &election, current).await);
                    }
                    if let Some(t) = term.as_mut() {
                        let lapsed = tokio::select! {
                            _ = current.lapsed() => true,
                            _ = lead(&mut discovery, &client, &config, &table, &election, current, t) => false,
                        };
                        if lapsed {
                            term = None;
                            step_down(&election, "pings failed during the pass");
                        }
                    }
                }
                _ => {
                    follow(
                        &client,
                        &config,
                        &base_domain,
                        &table,
                        &election,
                        &mut seen_revision,
                    )
                    .await
                }
            }
        };
        tokio::select! {
            _ = &mut shutdown => break,
            _ = step => {}
        }
        election.update(|_| {});
    }
    if let Some(current) = lease.take() {
        if term.take().is_some() {
            election.update(|v| v.role = Role::Follower);
        }
        current.abort(&client).await;
    }
    election.mark_stopped();
    tracing::info!("discovery stopped");
}

fn note_error(election: &ElectionStatus, error: String) {
    tracing::warn!(%error, "leader election");
    election.update(|v| v.last_error = Some(error));
}

fn step_down(election: &ElectionStatus, why: &str) {
    tracing::warn!(why, "leader election: stepped down");
    election.step_downs.inc();
    election.update(|v| v.role = Role::Follower);
}

/// Creates the lock node and the parent of the snapshot document (idempotent).
async fn ensure_nodes(client: &YtClient, config: &ElectionConfig) -> Result<(), yt_client::Error> {
    client
        .create("map_node", &config.lock_path, None, true, true)
        .await?;
    client
        .create("document", &config.snapshot_path, None, true, true)
        .await
}

async fn begin_term(
    client: &YtClient,
    config: &ElectionConfig,
    election: &ElectionStatus,
    lease: &Lease,
) -> Term {
    lease.set_leading(true);
    // Generations continue across leaders: start after the document's.
    let previous = match client.get(&config.snapshot_path).await {
        Ok(node) => SharedSnapshot::from_node(&node)
            .map(|s| s.generation)
            .unwrap_or(0),
        Err(_) => 0,
    };
    let generation = previous.max(election.view().generation);
    tracing::info!(
        identity = %config.identity,
        transaction = %lease.transaction_id,
        generation,
        "leader election: this replica is the leader"
    );
    election.terms.inc();
    election.update(|v| {
        v.role = Role::Leader;
        v.last_error = None;
    });
    Term {
        generation,
        publish_due: true,
    }
}

/// The leader's period: a discovery pass, then the snapshot document when routes changed (or
/// first in the term).
async fn lead(
    discovery: &mut Discovery,
    client: &YtClient,
    config: &ElectionConfig,
    table: &RoutingTable,
    election: &ElectionStatus,
    lease: &Lease,
    term: &mut Term,
) {
    let report = discovery.run_pass(table).await;
    if !report.succeeded() {
        return;
    }
    if !(report.published || term.publish_due) {
        return;
    }
    let Some((services, aliases)) = discovery.routing_inputs() else {
        return;
    };
    let snapshot = SharedSnapshot {
        generation: term.generation + 1,
        published_at: SystemTime::now(),
        leader: config.identity.to_string(),
        services,
        aliases,
    };
    let node = match snapshot.to_node() {
        Ok(node) => node,
        Err(error) => {
            note_error(election, format!("cannot encode the snapshot: {error}"));
            return;
        }
    };
    if !lease.valid() {
        return;
    }
    let options = WriteOptions {
        prerequisite_transaction_ids: vec![lease.transaction_id.clone()],
        ..WriteOptions::default()
    };
    match client
        .set_with(&config.snapshot_path, &node, &options)
        .await
    {
        Ok(()) => {
            term.generation = snapshot.generation;
            term.publish_due = false;
            tracing::info!(
                generation = snapshot.generation,
                services = snapshot.services.len(),
                "leader published the routing snapshot"
            );
            election.update(|v| {
                v.generation = snapshot.generation;
                v.published_at = Some(snapshot.published_at);
                v.leader = Some(snapshot.leader.clone());
                v.last_error = None;
            });
        }
        Err(error) => {
            if error.is_transaction_gone() {
                lease.gone.store(true, Ordering::Release);
            }
            term.publish_due = true;
            note_error(election, format!("cannot publish the snapshot: {error}"));
        }
    }
}

/// A follower's period: one revision read, and the document when it moved.
async fn follow(
    client: &YtClient,
    config: &ElectionConfig,
    base_domain: &str,
    table: &RoutingTable,
    election: &ElectionStatus,
    seen_revision: &mut Option<u64>,
) {
    let revision = match client.revision(&config.snapshot_path).await {
        Ok(revision) => revision,
        Err(error) => {
            note_error(
                election,
                format!("cannot read the snapshot's revision; keeping the routing table: {error}"),
            );
            return;
        }
    };
    if *seen_revision == Some(revision) {
        return;
    }
    let node = match client.get(&config.snapshot_path).await {
        Ok(node) => node,
        Err(error) => {
            note_error(
                election,
                format!("cannot read the snapshot; keeping the routing table: {error}"),
            );
            return;
        }
    };
    // A document created but not yet written by any leader.
    if node.is_entity() || node.as_map().is_some_and(|m| m.is_empty()) {
        *seen_revision = Some(revision);
        return;
    }
    let snapshot = match SharedSnapshot::from_node(&node) {
        Ok(snapshot) => snapshot,
        Err(error) => {
            note_error(
                election,
                format!("the snapshot is malformed; keeping the routing table: {error}"),
            );
            *seen_revision = Some(revision);
            return;
        }
    };
    *seen_revision = Some(revision);
    let routing =
        RoutingSnapshot::build_with_aliases(base_domain, snapshot.services, &snapshot.aliases);
    if !table.is_loaded() || !routing.same_routes(&table.load()) {
        let local = table.publish(routing);
        tracing::info!(
            generation = snapshot.generation,
            local_generation = local,
            leader = %snapshot.leader,
            "follower published the leader's routing snapshot"
        );
    }
    election.update(|v| {
        v.generation = snapshot.generation;
        v.published_at = Some(snapshot.published_at);
        v.leader = Some(snapshot.leader);
        v.last_error = None;
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{Endpoint, Protocol, RouteTimeouts};

    #[test]
    fn the_document_round_trips() {
        let snapshot = SharedSnapshot {
            generation: 7,
            published_at: UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456),
            leader: "tp-0 (10.0.0.1)".into(),
            services: vec![ServiceSpec {
                operation_id: "1-2-3-4".into(),
                task_name: "main".into(),
                service: "http".into(),
                protocol: Protocol::Grpc,
                endpoints: vec![Endpoint::new("node-1", 8080)],
                operation_start_time: Some("2026-01-01T00:00:00.000000Z".into()),
                timeouts: RouteTimeouts {
                    route_timeout_seconds: Some(5),
                    stream_idle_timeout_seconds: None,
                },
                sticky: Some(true),
            }],
            aliases: HashMap::from([("1-2-3-4".to_string(), "web".to_string())]),
        };
        let node = snapshot.to_node().unwrap();
        // Through YSON text, as Cypress stores it.
        let back = yson::parse(yson::to_text(&node).as_bytes()).unwrap();
        assert_eq!(SharedSnapshot::from_node(&back).unwrap(), snapshot);
        let mut wrong = node.clone();
        if let Value::Map(m) = &mut wrong.value {
            m.retain(|(k, _)| k != "format_version");
        }
        assert!(SharedSnapshot::from_node(&wrong).is_err());
    }

    #[test]
    fn pings_leave_room_to_step_down() {
        let timeout = Duration::from_secs(10);
        let leader = Duration::from_millis(leader_ping_interval(timeout));
        // Two pings fit before stepping down, and stepping down leaves 40% of the timeout.
        assert!(leader * 2 < timeout.mul_f64(STEP_DOWN_SHARE));
        assert!(follower_ping_interval(timeout) < timeout.as_millis() as u64 / 2);
    }
}
