//! The accept loop shared by the HTTP and gRPC servers: one hyper-util "auto" connection per
//! accepted socket (HTTP/1.1 with upgrades, or HTTP/2 with prior knowledge; over TLS when a
//! [`TlsAcceptor`] is given), all of it tied to the life of the loop. Dropping or aborting the future returned by [`serve`] ends every
//! connection, stream and upgraded socket it started, the way a killed job drops its sockets.

use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// The boxed error type used by bodies and services.
pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;

/// A handle on the serving loop's life: tasks started through it end when the loop ends.
#[derive(Clone, Debug)]
pub(crate) struct Lifetime {
    alive: watch::Receiver<()>,
}

impl Lifetime {
    /// Spawns `task`, cancelled when the serving loop that owns this lifetime is dropped.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let mut alive = self.alive.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = task => {}
                // Nothing is ever sent: `changed` only returns when the sender is dropped.
                _ = alive.changed() => {}
            }
        });
    }
}

impl<F> hyper::rt::Executor<F> for Lifetime
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        self.spawn(future);
    }
}

/// What a connection's service may want to know about the connection.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionInfo {
    /// The address the client connected to, as this side of the socket sees it: a real
    /// address even when the listener is bound to `0.0.0.0`.
    pub(crate) local_addr: SocketAddr,
    /// The client's address.
    pub(crate) peer_addr: SocketAddr,
    /// The serving loop's life, for tasks that outlive a request (upgraded sockets).
    pub(crate) lifetime: Lifetime,
    /// What TLS the connection negotiated (None: plain TCP).
    pub(crate) tls: Option<TlsInfo>,
}

/// The TLS parameters of a connection, as the job reports them.
#[derive(Clone, Debug)]
pub(crate) struct TlsInfo {
    /// `TLSv1_3`, `TLSv1_2`.
    pub(crate) version: String,
    /// The ALPN protocol agreed on (`h2`, `http/1.1`), if any.
    pub(crate) alpn: Option<String>,
}

/// Accepts connections on `listener` forever, serving each with the service that
/// `make_service` builds for it. Accept errors (such as running out of file descriptors) are
/// logged and retried after a short pause, so the loop only ends when it is dropped.
pub(crate) async fn serve<M, S, B>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    make_service: M,
) -> std::io::Result<()>
where
    M: Fn(ConnectionInfo) -> S + Send + Sync + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let (_alive, alive) = watch::channel(());
    let lifetime = Lifetime { alive };
    let builder = auto::Builder::new(lifetime.clone());
    let make_service = std::sync::Arc::new(make_service);
    loop {
        let (stream, peer_addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let local_addr = match stream.local_addr() {
            Ok(addr) => addr,
            Err(error) => {
                tracing::debug!(%error, %peer_addr, "connection gone before it was served");
                continue;
            }
        };
        // Latency matters more than throughput for a test upstream (SSE, small replies).
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let mut info = ConnectionInfo {
            local_addr,
            peer_addr,
            lifetime: lifetime.clone(),
            tls: None,
        };
        let builder = builder.clone();
        let make_service = make_service.clone();
        let tls = tls.clone();
        lifetime.spawn(async move {
            let result = match tls {
                None => {
                    let service = make_service(info);
                    builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await
                }
                Some(acceptor) => {
                    let stream = match acceptor.accept(stream).await {
                        Ok(stream) => stream,
                        Err(error) => {
                            tracing::info!(%error, %peer_addr, "TLS handshake failed");
                            return;
                        }
                    };
                    let session = stream.get_ref().1;
                    info.tls = Some(TlsInfo {
                        version: session
                            .protocol_version()
                            .map_or_else(String::new, |v| format!("{v:?}")),
                        alpn: session
                            .alpn_protocol()
                            .map(|p| String::from_utf8_lossy(p).into_owned()),
                    });
                    let service = make_service(info);
                    builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, %peer_addr, "connection ended with an error");
            }
        });
    }
}
