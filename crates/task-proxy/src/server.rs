//! The library's entry point: [`Server::start`] wires a configuration into a running proxy and
//! returns a [`RunningServer`] with the bound addresses and a way to drain and stop it.
//!
//! This is the composition root (docs/architecture.md): the only module that knows every
//! part. A source publishes routing snapshots, the balancer follows them, worker threads serve
//! traffic (`proxy/`), and one control thread runs the admin listener, the services-file and
//! certificate watchers and the drain. It installs no signal handling and writes nothing to
//! stdout: the binary does both, so that tests and embedders can start several servers in one
//! process.

use crate::admin::{self, Admin};
use crate::auth::{self, Gate};
use crate::config::{Config, ServicesSource};
use crate::discovery::{Discovery, DiscoveryConfig, ElectionConfig};
use crate::proxy::affinity::AffinityKey;
use crate::proxy::balance::Balancer;
use crate::proxy::conn_limit::ConnLimitSettings;
use crate::proxy::metrics::ProxyMetrics;
use crate::proxy::{self, tls::Tls, DataPlane, ListenConfig, Shared};
use crate::routing::RoutingTable;
use crate::source::services_file::{ServicesFileError, ServicesFileSource};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use yt_client::{ClientConfig, YtClient};

/// Why the proxy did not start. Nothing is left running when `start` fails.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("auth needs --yt-proxy (or --namespace)")]
    AuthWithoutCluster,
    #[error(
        "auth needs the robot token for permission checks: give --yt-token-path or YT_TOKEN \
         (or pass --auth-enabled=false)"
    )]
    AuthWithoutToken,
    #[error("discovery needs --yt-proxy (or --namespace)")]
    DiscoveryWithoutCluster,
    #[error("cannot read the token file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the cluster client: {0}")]
    Client(#[source] yt_client::Error),
    #[error("invalid auth configuration: {0}")]
    Auth(#[from] auth::AuthConfigError),
    #[error("cannot load the services file: {0}")]
    ServicesFile(#[from] ServicesFileError),
    #[error("cannot load the TLS certificate: {0}")]
    Tls(#[from] proxy::tls::TlsError),
    #[error(transparent)]
    JobTls(#[from] proxy::job_tls::JobTlsError),
    #[error("cannot load the identity signing key: {0}")]
    Identity(#[from] auth::identity::IdentityKeyError),
    #[error("cannot load the affinity cookie key: {0}")]
    AffinityKey(#[from] auth::session::KeyError),
    #[error("cannot start the browser portal: {0}")]
    Portal(#[from] crate::portal::PortalError),
    #[error("cannot listen on {addr} (admin): {source}")]
    AdminBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    DataPlane(#[from] proxy::StartError),
    #[error("cannot start the {what}: {source}")]
    Runtime {
        what: &'static str,
        source: std::io::Error,
    },
}

/// Starts proxies; see [`Server::start`].
pub struct Server;

impl Server {
    /// Binds every listener, loads the routing source and starts serving; returns once
    /// traffic is accepted. With discovery, routes appear after its first pass (until then
    /// `/readyz` says not ready).
    pub fn start(config: Config) -> Result<RunningServer, StartError> {
        tracing::info!(?config, "starting");
        let stop = CancellationToken::new();
        // The control runtime lives on its own thread from creation to drop: a caller on an
        // async runtime (a test) never drops a runtime in its context, even when start fails.
        let (started_tx, started_rx) = std::sync::mpsc::sync_channel(1);
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("task-proxy-control".into())
                .spawn(move || control_thread(config, stop, started_tx))
                .map_err(|source| StartError::Runtime {
                    what: "control thread",
                    source,
                })?
        };
        match started_rx.recv() {
            Ok(Ok(started)) => Ok(RunningServer {
                plain: started.plain,
                tls: started.tls,
                admin: started.admin,
                table: started.table,
                stop,
                thread: Some(thread),
            }),
            Ok(Err(error)) => {
                let _ = thread.join();
                Err(error)
            }
            Err(_) => {
                let _ = thread.join();
                Err(StartError::Runtime {
                    what: "control thread",
                    source: std::io::Error::other("it stopped during start-up"),
                })
            }
        }
    }
}

/// What the control thread reports once every listener is bound.
struct Started {
    plain: SocketAddr,
    tls: Option<SocketAddr>,
    admin: SocketAddr,
    table: Arc<RoutingTable>,
}

/// The control thread: builds the parts (reporting the outcome on `started`), then runs the
/// control tasks until `stop` and the drain.
fn control_thread(
    config: Config,
    stop: CancellationToken,
    started: std::sync::mpsc::SyncSender<Result<Started, StartError>>,
) {
    let control = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(control) => control,
        Err(source) => {
            let _ = started.send(Err(StartError::Runtime {
                what: "control runtime",
                source,
            }));
            return;
        }
    };
    // Setup spawns tasks (the gate's probe, watchers) on the control runtime; they run once
    // `block_on` drives it below.
    let parts = {
        let _guard = control.enter();
        Parts::build(&config)
    };
    let parts = match parts {
        Ok(parts) => parts,
        Err(error) => {
            let _ = started.send(Err(error));
            return;
        }
    };
    let report = Started {
        plain: parts.data_plane.plain_addr,
        tls: parts.data_plane.tls_addr,
        admin: parts.admin_addr,
        table: parts.table.clone(),
    };
    if started.send(Ok(report)).is_err() {
        // The caller is gone: nobody can stop this server, so do not serve.
        parts.shutdown.cancel();
        parts.data_plane.join();
        return;
    }
    control.block_on(parts.run(stop, config.limits.drain_timeout));
}

/// A proxy started by [`Server::start`]. Dropping it drains and stops the proxy (waiting up
/// to the drain timeout), so a test that panics leaves nothing running.
pub struct RunningServer {
    plain: SocketAddr,
    tls: Option<SocketAddr>,
    admin: SocketAddr,
    table: Arc<RoutingTable>,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningServer {
    /// The plaintext data-plane listener (HTTP/1.1 and h2c), as bound (port 0 resolved).
    pub fn plain_addr(&self) -> SocketAddr {
        self.plain
    }

    /// The TLS data-plane listener, when configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls
    }

    /// The admin listener (`/`, `/services`, `/metrics`, `/healthz`, `/readyz`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// The routing table the source publishes in (read it to see what is routable).
    pub fn routing_table(&self) -> &Arc<RoutingTable> {
        &self.table
    }

    /// Starts the drain: the data plane stops accepting at once and finishes in-flight
    /// requests (up to `--drain-timeout`); `/readyz` says "draining" meanwhile. Returns at
    /// once; [`RunningServer::wait`] waits for the end.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    /// Waits until the proxy has stopped (after [`RunningServer::shutdown`], or never).
    pub fn wait(mut self) {
        self.join();
    }

    /// [`RunningServer::shutdown`], then [`RunningServer::wait`].
    pub fn drain(self) {
        self.shutdown();
        self.wait();
    }

    /// Starts the drain and returns without waiting for it: the proxy finishes in the
    /// background (for a test tearing down, or a process about to exit anyway).
    pub fn detach(mut self) {
        self.stop.cancel();
        self.thread.take();
    }

    fn join(&mut self) {
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the control thread panicked");
            }
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.stop.cancel();
        self.join();
    }
}

/// Everything built before serving, handed to the control thread.
struct Parts {
    table: Arc<RoutingTable>,
    balancer: Arc<Balancer>,
    gate: Gate,
    portal: Option<Arc<crate::portal::Portal>>,
    shutdown: CancellationToken,
    file_source: Option<ServicesFileSource>,
    discovery_status: Option<crate::discovery::DiscoveryStatus>,
    tls: Option<Tls>,
    metrics: Arc<ProxyMetrics>,
    /// The live sessions and how often they are re-checked (None: `--session-recheck-interval 0`).
    recheck: Option<(Arc<proxy::sessions::LiveSessions>, Duration)>,
    admin_listener: std::net::TcpListener,
    admin_addr: SocketAddr,
    data_plane: DataPlane,
}

impl Parts {
    /// Builds the parts and binds every socket; must run inside the control runtime's context.
    fn build(config: &Config) -> Result<Parts, StartError> {
        let gate = build_gate(config)?;
        if let (Some(identity), true) = (&config.identity, gate.is_enabled()) {
            gate.attach_identity(Arc::new(auth::identity::IdentitySigner::load(identity)?));
        }
        let table = Arc::new(RoutingTable::new(&config.base_domain));
        let shutdown = CancellationToken::new();

        // The routing source. A services file must load before traffic is served; discovery
        // publishes after its first pass.
        let (file_source, discovery) = match &config.source {
            ServicesSource::File(path) => {
                let mut source = ServicesFileSource::new(
                    path.clone(),
                    config.base_domain.clone(),
                    table.clone(),
                );
                source.reload()?;
                (Some(source), None)
            }
            ServicesSource::Discovery => {
                let mut discovery_config = DiscoveryConfig::new(config.base_domain.clone());
                discovery_config.dir_path = config.dir_path.clone();
                discovery_config.period = config.discovery_period;
                discovery_config.election = config
                    .election
                    .as_ref()
                    .map(|e| ElectionConfig::from_settings(e, &config.dir_path));
                let mut client = discovery_client_config(config)?;
                if let Some(election) = &discovery_config.election {
                    // Names this replica in the cluster's logs (and to dev-cluster knobs).
                    client.user_agent = election.user_agent();
                }
                let client = YtClient::new(client).map_err(StartError::Client)?;
                (None, Some(Discovery::new(client, discovery_config)))
            }
        };

        // Jobs read the identity keys from Cypress too; the robot writes them there when it
        // discovers (it owns `--dir-path` then).
        if let (Some(signer), Some(_)) = (gate.identity(), &discovery) {
            tokio::spawn(auth::identity::publish_jwks(
                signer.clone(),
                discovery_client(config)?,
                format!("{}/jwks", config.dir_path.trim_end_matches('/')),
                shutdown.clone(),
            ));
        }

        let affinity = match &config.affinity_key_file {
            Some(path) => AffinityKey::new(auth::session::SessionKey::from_file(path)?),
            None => AffinityKey::generate(),
        };
        let balancer = Arc::new(
            Balancer::with_conn_limit(
                config.worker_threads,
                config.limits.eject_base,
                config.limits.eject_max,
                ConnLimitSettings::from_limits(&config.limits),
            )
            .with_affinity(affinity, config.sticky_sessions_default)
            .with_https_callers(config.https_callers),
        );
        let metrics = Arc::new(ProxyMetrics::default());

        let tls = match &config.tls {
            Some(t) => Some((t.listen, Tls::new(t.cert.clone(), t.key.clone())?)),
            None => None,
        };
        // The browser portal needs auth: without it there is no one to log in.
        let portal = match &config.portal {
            Some(portal_config) if gate.is_enabled() => Some(crate::portal::Portal::new(
                portal_config,
                &config.base_domain,
                gate.clone(),
                config.auth.login_url.clone(),
                table.clone(),
                discovery_client(config).ok(),
                &config.dir_path,
            )?),
            _ => None,
        };
        let sessions = (!config.limits.session_recheck_interval.is_zero())
            .then(|| proxy::sessions::LiveSessions::new(metrics.clone()));
        let shared = Arc::new(Shared {
            table: table.clone(),
            balancer: balancer.clone(),
            gate: gate.clone(),
            portal: portal.clone(),
            limits: config.limits.clone(),
            job_tls: Arc::new(proxy::job_tls::JobTls::new(config.job_tls_ca.as_ref())?),
            metrics: metrics.clone(),
            sessions: sessions.clone(),
            shutdown: shutdown.clone(),
        });
        let admin_error = |source| StartError::AdminBind {
            addr: config.admin_listen,
            source,
        };
        let admin_listener =
            std::net::TcpListener::bind(config.admin_listen).map_err(admin_error)?;
        admin_listener.set_nonblocking(true).map_err(admin_error)?;
        let admin_addr = admin_listener.local_addr().map_err(admin_error)?;

        let data_plane = DataPlane::start(
            shared,
            &ListenConfig {
                plain: config.listen,
                tls: tls.clone(),
                workers: config.worker_threads,
            },
        )?;
        let discovery_status = discovery.as_ref().map(Discovery::status);
        if let Some(discovery) = discovery {
            if let Err(source) = spawn_discovery(discovery, table.clone(), shutdown.clone()) {
                shutdown.cancel();
                data_plane.join();
                return Err(StartError::Runtime {
                    what: "discovery thread",
                    source,
                });
            }
        }
        Ok(Parts {
            table,
            balancer,
            gate,
            portal,
            shutdown,
            file_source,
            discovery_status,
            tls: tls.map(|(_, tls)| tls),
            metrics,
            recheck: sessions.map(|s| (s, config.limits.session_recheck_interval)),
            admin_listener,
            admin_addr,
            data_plane,
        })
    }

    /// Runs the control tasks until `stop`, then drains: the workers stop accepting at once
    /// and exit when drained (or at the drain timeout); the admin listener stays up meanwhile.
    async fn run(self, stop: CancellationToken, drain_timeout: Duration) {
        let Parts {
            table,
            balancer,
            gate,
            portal,
            shutdown,
            file_source,
            discovery_status,
            tls,
            metrics,
            recheck,
            admin_listener,
            data_plane,
            ..
        } = self;
        let admin_stop = CancellationToken::new();
        if let Some(portal) = &portal {
            tokio::spawn(portal.clone().follow_routes(shutdown.clone()));
            tokio::spawn(portal.clone().follow_logouts(shutdown.clone()));
        }
        if let Some((sessions, interval)) = recheck {
            tokio::spawn(proxy::recheck::run(
                sessions,
                gate.clone(),
                table.clone(),
                interval,
                shutdown.clone(),
            ));
        }
        if let Some(file_source) = file_source {
            tokio::spawn(file_source.watch(Duration::from_secs(1), shutdown.clone()));
        }
        if let Some(tls) = tls {
            tokio::spawn(tls.watch(Duration::from_secs(1), shutdown.clone()));
        }
        if let Some(identity) = gate.identity() {
            tokio::spawn(
                identity
                    .clone()
                    .watch(Duration::from_secs(1), shutdown.clone()),
            );
        }
        let mut registry = admin::metrics::registry(table.clone(), balancer.clone(), metrics);
        gate.register_metrics(&mut registry);
        if let Some(status) = &discovery_status {
            status.register_metrics(&mut registry);
        }
        let admin = Arc::new(Admin {
            registry,
            gate,
            discovery: discovery_status.clone(),
            table,
            balancer,
            draining: shutdown.clone(),
            stop: admin_stop.clone(),
            service_port: Some(data_plane.plain_addr.port()),
        });
        let admin_task = match tokio::net::TcpListener::from_std(admin_listener) {
            Ok(listener) => Some(tokio::spawn(admin.serve(listener))),
            Err(error) => {
                tracing::error!(%error, "the admin listener cannot run");
                None
            }
        };

        stop.cancelled().await;
        tracing::info!(?drain_timeout, "draining");
        shutdown.cancel();
        let _ = tokio::task::spawn_blocking(move || data_plane.join()).await;
        if let Some(status) = &discovery_status {
            // The elected leader aborts its transaction first: the next replica takes over now.
            status.wait_stopped(Duration::from_secs(3)).await;
        }
        admin_stop.cancel();
        if let Some(admin_task) = admin_task {
            let _ = admin_task.await;
        }
        tracing::info!("stopped");
    }
}

/// The auth gate for the configuration: with auth on, a client of the cluster that asks
/// `whoami` with callers' credentials and `check_operation_permission` with the robot token.
fn build_gate(config: &Config) -> Result<Gate, StartError> {
    if !config.auth.enabled {
        return Ok(Gate::disabled_with_cookie_name(&config.auth.cookie_name));
    }
    let Some(yt_proxy) = &config.yt_proxy else {
        return Err(StartError::AuthWithoutCluster);
    };
    let token = robot_token(config)?.ok_or(StartError::AuthWithoutToken)?;
    let client = YtClient::new(
        ClientConfig::new(yt_proxy.clone())
            .with_token(token)
            .with_timeout(config.auth_timeout)
            // Retries (and a proxy's `Retry-After`) never outlast the auth timeout: an
            // uncached caller gets its answer, or 503, within it.
            .with_deadline(config.auth_timeout)
            .with_max_retries(1),
    )
    .map_err(StartError::Client)?;
    let gate = Gate::new(config.auth.clone(), Arc::new(client.clone()))?;
    // Older servers lack `check_operation_permission`: find out now rather than on the first
    // request (which also detects it, for a server downgraded later).
    let probed = gate.clone();
    tokio::spawn(async move {
        match auth::probe_permission_command(&client).await {
            Ok(()) => {}
            Err(auth::BackendError::Unsupported(reason)) => probed.mark_unsupported(&reason),
            Err(error) => {
                tracing::warn!(%error, "cannot list the cluster's commands at start-up; checking on first use")
            }
        }
    });
    Ok(gate)
}

/// The robot token: the file `--yt-token-path`, else `--yt-token`/`YT_TOKEN` (trimmed; the
/// same precedence as discovery's client).
fn robot_token(config: &Config) -> Result<Option<String>, StartError> {
    let token = match (&config.yt_token_path, &config.yt_token) {
        (Some(path), _) => std::fs::read_to_string(path)
            .map_err(|source| StartError::TokenFile {
                path: path.clone(),
                source,
            })?
            .trim()
            .to_string(),
        (None, Some(token)) => token.trim().to_string(),
        (None, None) => return Ok(None),
    };
    Ok(Some(token).filter(|t| !t.is_empty()))
}

/// The robot's client of the cluster for discovery (`--yt-proxy`, token from `--yt-token-path`
/// or `--yt-token`).
fn discovery_client(config: &Config) -> Result<YtClient, StartError> {
    YtClient::new(discovery_client_config(config)?).map_err(StartError::Client)
}

/// The configuration of [`discovery_client`].
fn discovery_client_config(config: &Config) -> Result<ClientConfig, StartError> {
    let proxy = config
        .yt_proxy
        .clone()
        .ok_or(StartError::DiscoveryWithoutCluster)?;
    let token = robot_token(config)?;
    if token.is_none() {
        tracing::warn!(
            "no robot token (--yt-token-path or YT_TOKEN): the cluster may refuse discovery"
        );
    }
    let mut client_config = ClientConfig::new(proxy);
    client_config.token = token;
    client_config.timeout = Duration::from_secs(10);
    // A call's retries and waits (a proxy's `Retry-After` included) end within one discovery
    // period, so a failing cluster fails the pass instead of stretching it.
    client_config.deadline = Some(config.discovery_period.max(Duration::from_secs(1)));
    Ok(client_config)
}

/// Runs discovery on a thread of its own, so a pass over many operations never stalls the
/// admin listener or the drain on the control runtime.
fn spawn_discovery(
    discovery: Discovery,
    table: Arc<RoutingTable>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("task-proxy-discovery".into())
        .spawn(move || runtime.block_on(discovery.run(table, shutdown.cancelled_owned())))?;
    Ok(())
}
