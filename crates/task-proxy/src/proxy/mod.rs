//! The data plane: listeners, the request pipeline, forwarding to jobs. See
//! docs/architecture.md for the module map and a request's path through it.
//!
//! Layers, one job each: [`listener`] accepts connections on per-worker runtimes,
//! [`lifecycle`] is the request lifecycle both forwarding paths share (route, pick, attempts
//! under one retry policy), [`service`] is its adapter for hyper's path (admit, rewrite,
//! answer), [`relay`] the one for the HTTP/1.1 fast path (bytes passed on without hyper),
//! [`failure`] is the answer both give when forwarding fails, [`access_log`] writes a line
//! each, [`forward`] rewrites heads, [`headers`] is the header policy both paths share,
//! [`http1`] reads heads and chunked bodies and says what is hop-by-hop (for the relay, the
//! framing guard [`framing`] and [`forward`]), [`balance`] picks endpoints from the routes it
//! derives from each snapshot ([`affinity`]: the cookie that keeps a browser on one job of a
//! sticky service),
//! [`endpoint`] holds each endpoint's health, connection cap and idle connection pools,
//! [`upstream`] opens and pools connections to jobs (as many as [`conn_limit`] allows per
//! job), [`h2_guard`] ends HTTP/2 control-frame floods, [`h2_budget`] bounds the response
//! bytes held per HTTP/2 caller connection, [`upgrade`] tunnels WebSockets,
//! [`tls`] terminates TLS with reloadable certificates, [`job_tls`] speaks TLS to the jobs of
//! `https` services, [`sessions`] holds the live long
//! sessions (tunnels, streaming bodies) that [`recheck`] closes when the operation ends or
//! access is revoked ([`ws_close`] ends a WebSocket politely). The data plane owns its state
//! ([`shared`]) and its counters ([`metrics`]); the admin server only reads them.
//! Shared state is read-mostly: the balancer's routes (arc-swap) and atomics. Submodules never
//! import this file: it only assembles them ([`DataPlane`]).

pub mod access_log;
pub mod affinity;
pub mod balance;
pub mod conn_limit;
pub mod endpoint;
pub mod failure;
pub mod forward;
pub mod framing;
pub mod h2_budget;
pub mod h2_guard;
pub mod headers;
pub mod http1;
pub mod io;
pub mod job_tls;
pub mod lifecycle;
pub mod listener;
pub mod metrics;
pub mod recheck;
pub mod relay;
pub mod service;
pub mod sessions;
pub mod shared;
pub mod tls;
pub mod upgrade;
pub mod upstream;
pub mod ws_close;

pub use shared::Shared;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

/// What to listen on.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    pub plain: SocketAddr,
    pub tls: Option<(SocketAddr, tls::Tls)>,
    pub workers: usize,
}

/// A running data plane.
pub struct DataPlane {
    pub plain_addr: SocketAddr,
    pub tls_addr: Option<SocketAddr>,
    workers: Vec<JoinHandle<()>>,
}

/// Why the data plane did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start worker thread: {0}")]
    Thread(std::io::Error),
}

impl DataPlane {
    /// Binds every socket (so a busy port fails the start), then starts the workers. From
    /// here on the balancer derives its routes from every snapshot the routing table
    /// publishes, before the snapshot is in force.
    pub fn start(shared: Arc<Shared>, listen: &ListenConfig) -> Result<DataPlane, StartError> {
        shared.table.attach(shared.balancer.clone());
        let bind = |addr: SocketAddr| {
            listener::bind_reuseport(addr, listen.workers)
                .map_err(|source| StartError::Bind { addr, source })
        };
        let plain = bind(listen.plain)?;
        let plain_addr = plain
            .first()
            .and_then(|l| l.local_addr().ok())
            .unwrap_or(listen.plain);
        let (tls_sockets, tls_addr) = match &listen.tls {
            Some((addr, tls)) => {
                let sockets = bind(*addr)?;
                let bound = sockets.first().and_then(|l| l.local_addr().ok());
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config.clone());
                (
                    sockets
                        .into_iter()
                        .map(|s| Some((s, acceptor.clone())))
                        .collect(),
                    bound,
                )
            }
            None => ((0..plain.len()).map(|_| None).collect::<Vec<_>>(), None),
        };
        let mut workers = Vec::with_capacity(plain.len());
        for (id, (plain, tls)) in plain.into_iter().zip(tls_sockets).enumerate() {
            let shared = shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("task-proxy-worker-{id}"))
                .spawn(move || {
                    let sockets = listener::WorkerSockets { plain, tls };
                    if let Err(e) = listener::run_worker(id, shared, sockets) {
                        tracing::error!(worker = id, error = %e, "worker failed");
                    }
                })
                .map_err(StartError::Thread)?;
            workers.push(handle);
        }
        Ok(DataPlane {
            plain_addr,
            tls_addr,
            workers,
        })
    }

    /// Waits for every worker to finish draining (call after firing the shutdown token).
    pub fn join(self) {
        for w in self.workers {
            let _ = w.join();
        }
    }
}
