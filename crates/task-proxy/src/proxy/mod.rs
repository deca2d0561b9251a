//! The data plane: listeners, the request pipeline, forwarding to jobs.
//!
//! Layers, one job each: [`listener`] accepts connections on per-worker runtimes,
//! [`service`] runs route -> admit -> forward per request, [`access_log`] writes a line each, [`forward`] rewrites heads,
//! [`balance`] picks endpoints and tracks their health, [`upstream`] keeps connections to jobs
//! (as many as [`conn_limit`] allows per job), [`h2_guard`] ends HTTP/2 control-frame floods,
//! [`relay`] is the HTTP/1.1 fast path (bytes passed on without hyper), [`headers`] is the
//! header policy both paths share,
//! [`upgrade`] tunnels WebSockets, [`tls`] terminates TLS with reloadable certificates.
//! Shared state is read-mostly: the routing table (arc-swap) and atomics.

/// `AsyncWrite` for a reader wrapper with an `inner` stream: writes pass straight through
/// (the framing guard and the relay's hand-over stream only look at what is read).
macro_rules! delegate_async_write {
    ($wrapper:ident) => {
        impl<I: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for $wrapper<I> {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
            }
        }
    };
}
pub(crate) use delegate_async_write;

pub mod access_log;
pub mod balance;
pub mod conn_limit;
pub mod forward;
pub mod framing;
pub mod h2_guard;
pub mod headers;
pub mod listener;
pub mod relay;
pub mod service;
pub mod tls;
pub mod upgrade;
pub mod upstream;

use crate::admin::metrics::ProxyMetrics;
use crate::auth::Gate;
use crate::config::Limits;
use crate::routing::RoutingTable;
use balance::Balancer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio_util::sync::CancellationToken;

/// State every worker reads.
#[derive(Debug)]
pub struct Shared {
    pub table: Arc<RoutingTable>,
    pub balancer: Arc<Balancer>,
    pub gate: Gate,
    pub limits: Limits,
    pub metrics: Arc<ProxyMetrics>,
    /// Fired on SIGTERM/SIGINT: stop accepting, finish what is in flight.
    pub shutdown: CancellationToken,
}

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
    /// Binds every socket (so a busy port fails the start), then starts the workers.
    pub fn start(shared: Arc<Shared>, listen: &ListenConfig) -> Result<DataPlane, StartError> {
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
