//! Connections to jobs: HTTP/1.1 keep-alive pools for `http` services, one multiplexed HTTP/2
//! (h2c) connection per endpoint for `grpc` services, TLS connections for `https` services
//! (HTTP/2 or pooled HTTP/1.1, as the job picked by ALPN; pooled apart from the plain ones, so
//! the two never mix even for one address), and fresh upgradeable HTTP/1.1
//! connections for WebSocket handshakes. Pools are per worker (a
//! [`IdleConnections`](super::endpoint::IdleConnections) slot per worker in each endpoint state), so no
//! lock is ever contended across threads (except when a worker at the per-job connection cap
//! closes an idle connection of another worker's pool).
//!
//! Every connection holds a [`ConnPermit`] of its endpoint's cap for its whole life: the task
//! that drives it owns the permit, so it is given back whenever the connection ends, pooled or
//! busy. Reads from jobs on hyper's connections are capped at [`UPSTREAM_READ_CHUNK`] bytes:
//! hyper's read buffer grows with the reads that fill it (up to ~400 KiB) and every body chunk
//! it hands on keeps that buffer's allocation alive, so a caller reading slowly would pin
//! several large buffers per request.

use super::conn_limit::ConnPermit;
use super::endpoint::{EndpointState, IdleHttp1};
use super::job_tls::JobTls;
use crate::answer::ProxyBody;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Most bytes read from a job at once on hyper's connections (see the module docs). Just under
/// a power of two: hyper doubles its read buffer after a read that fills the current size, so
/// reads of 16 KiB - 1 keep it at 16 KiB (16 KiB reads would grow it to 32 KiB, each body chunk
/// then pinning twice the memory). The price is more, smaller body chunks: a single 1 GiB
/// HTTP/2 download through a debug build took ~2 s instead of ~1 s (8 KiB reads: ~5 s; 32 KiB
/// reads: ~1.8 s but 200 never-read streams then cost +24 MiB instead of +17 MiB). The HTTP/1.1
/// relay does not go through here.
pub const UPSTREAM_READ_CHUNK: usize = 16 * 1024 - 1;

/// A job connection whose reads return at most [`UPSTREAM_READ_CHUNK`] bytes.
#[derive(Debug)]
pub struct CappedReads<I> {
    inner: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for CappedReads<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() <= UPSTREAM_READ_CHUNK {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        // A window of the caller's buffer: the same memory, no copy (zeroing what is not
        // initialized yet costs far less than the system call; no unsafe code needed).
        let window = buf.initialize_unfilled_to(UPSTREAM_READ_CHUNK);
        let mut capped = ReadBuf::new(window);
        let ready = Pin::new(&mut this.inner).poll_read(cx, &mut capped);
        let n = capped.filled().len();
        if let Poll::Ready(Ok(())) = ready {
            buf.advance(n);
        }
        ready
    }
}

super::io::delegate_async_write!(CappedReads);

/// Why no connection to an endpoint could be made. Nothing of the request was sent.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {endpoint} failed: {source}")]
    Io {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("connect to {endpoint} timed out")]
    Timeout { endpoint: String },
    #[error("handshake with {endpoint} failed: {source}")]
    Handshake {
        endpoint: String,
        source: hyper::Error,
    },
    /// The job of an `https` service did not complete a TLS handshake (it serves plain HTTP,
    /// or its certificate failed verification).
    #[error("TLS handshake with {endpoint} failed: {source}")]
    Tls {
        endpoint: String,
        source: std::io::Error,
    },
}

impl ConnectError {
    fn handshake(ep: &EndpointState, source: hyper::Error) -> ConnectError {
        ConnectError::Handshake {
            endpoint: ep.authority.clone(),
            source,
        }
    }
}

/// A connection of an `https` service: HTTP/2 or HTTP/1.1, as the job picked.
pub enum TlsSender {
    Http1(http1::SendRequest<ProxyBody>),
    Http2(http2::SendRequest<ProxyBody>),
}

/// A worker's view of upstream connections.
#[derive(Debug, Clone)]
pub struct JobConnector {
    worker: usize,
    tls: Arc<JobTls>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// Most idle HTTP/1.1 connections kept per endpoint in this worker's pool: every request
    /// in flight holds one, so a cap below the concurrency closes and reopens connections on
    /// every burst.
    max_idle: usize,
}

impl JobConnector {
    pub fn new(
        worker: usize,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
        tls: Arc<JobTls>,
    ) -> JobConnector {
        JobConnector {
            worker,
            tls,
            connect_timeout,
            idle_timeout,
            max_idle,
        }
    }

    pub(super) fn worker(&self) -> usize {
        self.worker
    }

    pub(super) fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Most idle connections kept per endpoint in this worker's pools (`--upstream-max-idle-per-job`).
    pub(super) fn max_idle(&self) -> usize {
        self.max_idle
    }

    pub(super) async fn tcp(&self, ep: &EndpointState) -> Result<TcpStream, ConnectError> {
        let e = &ep.endpoint;
        let connect = TcpStream::connect((e.host.as_str(), e.port));
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(stream)) => {
                // Small requests and responses must not wait for Nagle.
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }
            Ok(Err(source)) => Err(ConnectError::Io {
                endpoint: ep.authority.clone(),
                source,
            }),
            Err(_) => Err(ConnectError::Timeout {
                endpoint: ep.authority.clone(),
            }),
        }
    }

    /// An idle pooled HTTP/1.1 connection to `ep` (`tls`: of the TLS pool), if one is usable.
    pub fn http1_pooled(
        &self,
        ep: &EndpointState,
        tls: bool,
    ) -> Option<http1::SendRequest<ProxyBody>> {
        let pool = ep.pool(self.worker)?;
        let mut idle = pool.http1_idle(tls).lock().ok()?;
        while let Some(conn) = idle.pop() {
            if conn.since.elapsed() < self.idle_timeout
                && !conn.sender.is_closed()
                && conn.sender.is_ready()
            {
                return Some(conn.sender);
            }
        }
        None
    }

    /// A new HTTP/1.1 connection to `ep` (`upgrades`: one that can be taken over by a tunnel),
    /// holding `permit` while it is open.
    pub async fn http1_connect(
        &self,
        ep: &EndpointState,
        upgrades: bool,
        permit: ConnPermit,
    ) -> Result<http1::SendRequest<ProxyBody>, ConnectError> {
        let stream = self.tcp(ep).await?;
        Self::http1_handshake(stream, ep, upgrades, permit).await
    }

    /// HTTP/1.1 on an open connection `stream` to `ep`.
    async fn http1_handshake<S>(
        stream: S,
        ep: &EndpointState,
        upgrades: bool,
        permit: ConnPermit,
    ) -> Result<http1::SendRequest<ProxyBody>, ConnectError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let stream = CappedReads { inner: stream };
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ConnectError::handshake(ep, source))?;
        if upgrades {
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(error = %e, "upstream connection ended");
                }
                drop(permit);
            });
        } else {
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream connection ended");
                }
                drop(permit);
            });
        }
        Ok(sender)
    }

    /// Returns `sender` to this worker's pool once its current exchange is complete (the
    /// response body fully read and the request body fully sent); dropped if it fails first.
    /// `tls`: the connection is one of an `https` service (it goes back to the TLS pool).
    pub fn http1_release(
        &self,
        ep: std::sync::Arc<EndpointState>,
        mut sender: http1::SendRequest<ProxyBody>,
        tls: bool,
    ) {
        // A short response is usually complete by now: hyper read the head and the body in one
        // go and the connection already waits for the next request, so it goes straight back
        // (a task per request to wait for that costs more than the rest of the pooling).
        if sender.is_ready() {
            self.pool_idle(&ep, sender, tls);
            return;
        }
        let upstreams = self.clone();
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                upstreams.pool_idle(&ep, sender, tls);
            }
        });
    }

    /// Puts a ready connection in this worker's pool, or drops (closes) it when the pool is
    /// full or requests wait for a connection to the endpoint.
    fn pool_idle(&self, ep: &EndpointState, sender: http1::SendRequest<ProxyBody>, tls: bool) {
        // Requests queue at the connection cap: closing this one gives them its permit.
        if ep.limit.has_waiters() {
            return;
        }
        let Some(pool) = ep.pool(self.worker) else {
            return;
        };
        if let Ok(mut idle) = pool.http1_idle(tls).lock() {
            if idle.len() < self.max_idle {
                idle.push(IdleHttp1 {
                    sender,
                    since: Instant::now(),
                });
            }
        }
    }

    /// Closes this worker's idle connections that outlived the idle timeout or were closed by
    /// the job (run periodically, so idle sockets do not linger without traffic).
    pub fn sweep<'a>(&self, endpoints: impl IntoIterator<Item = &'a EndpointState>) {
        for ep in endpoints {
            let Some(pool) = ep.pool(self.worker) else {
                continue;
            };
            for tls in [false, true] {
                if let Ok(mut idle) = pool.http1_idle(tls).lock() {
                    idle.retain(|c| c.since.elapsed() < self.idle_timeout && !c.sender.is_closed());
                }
                if let Ok(mut slot) = pool.http2_slot(tls).lock() {
                    if slot.as_ref().is_some_and(|s| s.is_closed()) {
                        *slot = None;
                    }
                }
            }
            if let Ok(mut idle) = pool.raw.lock() {
                idle.retain(|c| c.is_reusable_after(self.idle_timeout));
            }
        }
    }

    /// The worker's HTTP/2 connection to `ep` (`tls`: over TLS), if it has an open one.
    pub fn http2_pooled(
        &self,
        ep: &EndpointState,
        tls: bool,
    ) -> Option<http2::SendRequest<ProxyBody>> {
        let pool = ep.pool(self.worker)?;
        let slot = pool.http2_slot(tls).lock().ok()?;
        slot.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    /// A new HTTP/2 connection to `ep`, holding `permit` while it is open; it becomes the
    /// worker's connection to `ep`.
    pub async fn http2_connect(
        &self,
        ep: &EndpointState,
        permit: ConnPermit,
    ) -> Result<http2::SendRequest<ProxyBody>, ConnectError> {
        let stream = self.tcp(ep).await?;
        self.http2_handshake(stream, ep, permit, false).await
    }

    /// HTTP/2 on an open connection `stream` to `ep` (`tls`: a TLS stream); it becomes the
    /// worker's connection of that kind to `ep`.
    async fn http2_handshake<S>(
        &self,
        stream: S,
        ep: &EndpointState,
        permit: ConnPermit,
        tls: bool,
    ) -> Result<http2::SendRequest<ProxyBody>, ConnectError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ConnectError::handshake(ep, source))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream h2 connection ended");
            }
            drop(permit);
        });
        if let Some(pool) = ep.pool(self.worker) {
            if let Ok(mut slot) = pool.http2_slot(tls).lock() {
                *slot = Some(sender.clone());
            }
        }
        Ok(sender)
    }

    /// A pooled connection of an `https` service to `ep`: the worker's HTTP/2 connection when
    /// the job picked h2, else an idle HTTP/1.1 one.
    pub fn tls_pooled(&self, ep: &EndpointState) -> Option<TlsSender> {
        if let Some(sender) = self.http2_pooled(ep, true) {
            return Some(TlsSender::Http2(sender));
        }
        self.http1_pooled(ep, true).map(TlsSender::Http1)
    }

    /// A new TLS connection to `ep`, holding `permit` while it is open, speaking what the job
    /// picked by ALPN. `upgrades`: an HTTP/1.1 connection a tunnel can take over (only
    /// HTTP/1.1 is offered). The handshake counts against the connect timeout.
    pub async fn tls_connect(
        &self,
        ep: &EndpointState,
        upgrades: bool,
        permit: ConnPermit,
    ) -> Result<TlsSender, ConnectError> {
        let started = Instant::now();
        let tcp = self.tcp(ep).await?;
        let left = self.connect_timeout.saturating_sub(started.elapsed());
        let handshake = self.tls.handshake(tcp, &ep.endpoint.host, upgrades);
        let session = match tokio::time::timeout(left, handshake).await {
            Ok(Ok(session)) => session,
            Ok(Err(source)) => {
                // A job marked https that serves plain HTTP ends up here: say so plainly.
                tracing::warn!(
                    endpoint = %ep.authority,
                    error = %source,
                    verified = self.tls.verifies(),
                    "TLS handshake with the job failed (does it serve TLS on this port?)"
                );
                return Err(ConnectError::Tls {
                    endpoint: ep.authority.clone(),
                    source,
                });
            }
            Err(_) => {
                tracing::warn!(endpoint = %ep.authority, "TLS handshake with the job timed out");
                return Err(ConnectError::Timeout {
                    endpoint: ep.authority.clone(),
                });
            }
        };
        if session.h2 {
            self.http2_handshake(session.stream, ep, permit, true)
                .await
                .map(TlsSender::Http2)
        } else {
            Self::http1_handshake(session.stream, ep, upgrades, permit)
                .await
                .map(TlsSender::Http1)
        }
    }
}
