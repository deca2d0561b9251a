//! A local YTsaurus development cluster: an implementation of the part of the HTTP API v4
//! that the real Python `yt` CLI and the task proxy use, with vanilla jobs run as real local
//! processes on simulated exec nodes (`127.0.0.<i>:9012`). Not for production data: state
//! lives in memory.
//!
//! Start it in-process with [`DevCluster::start`] or as the `yt-devcluster` binary.

// Two calls need `unsafe` (signalling a job's process group, and asking Linux to kill a job
// when the cluster dies, before exec); each is allowed where it is, nothing else may.
#![deny(unsafe_code)]

mod auth;
mod cluster;
mod commands;
mod cypress;
mod error;
mod ids;
mod inflate;
mod knobs;
mod operations;
mod orchid;
mod params;
mod runner;
mod server;
mod transactions;

pub use auth::{demo_users, UserSpec, UsersError};
pub use error::YtError;
pub use ids::{format_time, is_yt_id, parse_time};
pub use knobs::{CommandKnob, Fault, Knobs};
pub use operations::{node_address, SyntheticLoad, SyntheticSummary, NODE_PORT};

use anyhow::Context;
use cluster::Shared;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How to start a dev cluster.
#[derive(Debug, Clone)]
pub struct DevClusterConfig {
    /// Where to listen; `127.0.0.1:0` picks a free port.
    pub listen: SocketAddr,
    /// Extra users (JSON, see the README); the demo users are always there.
    pub users_file: Option<PathBuf>,
    /// Where job sandboxes go; a temporary directory (removed at shutdown) if `None`.
    pub work_dir: Option<PathBuf>,
    /// How many simulated exec nodes (`127.0.0.1:9012`, `127.0.0.2:9012`, ...).
    pub node_count: usize,
}

impl Default for DevClusterConfig {
    fn default() -> Self {
        DevClusterConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            users_file: None,
            work_dir: None,
            node_count: 3,
        }
    }
}

/// A running dev cluster. Dropping it kills every job process (best effort, synchronously);
/// [`DevCluster::shutdown`] stops jobs gracefully and waits for them.
///
/// The cluster runs on its own small runtime (two threads), so callers may block their own
/// runtime (e.g. `std::process::Command::output()` of the `yt` CLI inside a
/// `#[tokio::test]`) without starving it.
pub struct DevCluster {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    runtime: Option<tokio::runtime::Runtime>,
    work_dir: PathBuf,
    _temp_dir: Option<TempDir>,
}

/// A temporary directory removed on drop (the workspace's `tempfile` is a dev-dependency only).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl DevCluster {
    /// Binds the listener, prints nothing, and starts serving.
    pub async fn start(config: DevClusterConfig) -> anyhow::Result<DevCluster> {
        let users = auth::Users::load(config.users_file.as_deref())?;
        let (work_dir, temp_dir) = match config.work_dir {
            Some(dir) => (dir, None),
            None => {
                // Unique within the process too: clusters started in the same microsecond
                // (tests starting at once) shared a directory, and the first one dropped
                // removed the other's job sandboxes under its running jobs.
                static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let dir = std::env::temp_dir().join(format!(
                    "yt-devcluster-{}-{}-{}",
                    std::process::id(),
                    ids::now_micros(),
                    STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                ));
                (dir.clone(), Some(TempDir(dir)))
            }
        };
        std::fs::create_dir_all(&work_dir)
            .with_context(|| format!("cannot create the work directory {}", work_dir.display()))?;
        let listener = std::net::TcpListener::bind(config.listen)
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        listener
            .set_nonblocking(true)
            .context("cannot make the listener non-blocking")?;
        let addr = listener
            .local_addr()
            .context("cannot read the listening address")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("yt-devcluster")
            .enable_all()
            .build()
            .context("cannot start the cluster's runtime")?;
        let store = Arc::new(Mutex::new(operations::OpsStore::new(config.node_count)));
        let mut cypress = cypress::Cypress::new();
        cypress
            .create(
                "map_node",
                &cypress::YPath::parse("//sys/exec_nodes")?,
                Default::default(),
            )
            .map_err(|e| anyhow::anyhow!("cannot prepare //sys: {e}"))?;
        let shared = Arc::new(Shared {
            addr,
            cypress: Mutex::new(cypress),
            runner: runner::Runner::new(store.clone(), work_dir.clone()),
            store,
            users,
            knobs: Knobs::default(),
            request_counts: Mutex::new(BTreeMap::new()),
            clock: ids::UniqueClock::default(),
            transactions: Mutex::new(transactions::Transactions::default()),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let server_shared = shared.clone();
        let server = runtime.spawn(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => server::serve(listener, server_shared, shutdown_rx).await,
                Err(e) => tracing::error!(error = %e, "cannot serve the listener"),
            }
        });
        tracing::info!(%addr, "development cluster started");
        Ok(DevCluster {
            shared,
            shutdown,
            server: Some(server),
            runtime: Some(runtime),
            work_dir,
            _temp_dir: temp_dir,
        })
    }

    /// Where the jobs' sandboxes are (`<dir>/<operation id>/<job id>`).
    pub fn work_dir(&self) -> &std::path::Path {
        &self.work_dir
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// The banner: what this is, how to point the CLI at it, the users and their credentials.
    pub fn banner(&self) -> String {
        server::banner(&self.shared)
    }

    /// Fault injection knobs.
    pub fn knobs(&self) -> &Knobs {
        &self.shared.knobs
    }

    /// Requests served per command name (`whoami` for `/auth/whoami`).
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        self.shared
            .request_counts
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    pub fn reset_request_counts(&self) {
        if let Ok(mut c) = self.shared.request_counts.lock() {
            c.clear();
        }
    }

    /// Adds operations and jobs without processes (fake ports in the orchid). Fails only on an
    /// unknown `state`.
    pub fn add_synthetic_operations(
        &self,
        spec: SyntheticLoad,
    ) -> Result<SyntheticSummary, YtError> {
        self.shared.add_synthetic(&spec)
    }

    /// The number of job processes groups currently alive.
    pub fn live_job_count(&self) -> usize {
        self.shared.runner.live_job_count()
    }

    /// Stops serving, terminates every job (SIGTERM, then SIGKILL) and waits for them.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        if let Some(runtime) = &self.runtime {
            let shared = self.shared.clone();
            let _ = runtime
                .spawn(async move { shared.runner.stop_all().await })
                .await;
        }
        // `Drop` kills anything left and stops the runtime.
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(server) = self.server.take() {
            server.abort();
        }
        self.shared.runner.kill_all_now();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
