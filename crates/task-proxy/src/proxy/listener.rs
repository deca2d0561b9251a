//! Listeners and workers: thread-per-core. Each worker thread runs its own `current_thread`
//! runtime with its own `SO_REUSEPORT` sockets (plain, and TLS when configured), so the kernel
//! spreads connections and a request never crosses threads. Here live the accept loops, the
//! connection cap, per-connection limits (header size and read timeout, idle timeout; for
//! HTTP/2: concurrent streams, response bytes buffered per stream, control-frame floods) and
//! the graceful drain.

use super::forward::ClientView;
use super::framing::{FramingGuard, Switch};
use super::h2_budget::{Budgeted, SendBudget, H2_CONNECTION_BUDGET};
use super::h2_guard::H2Guard;
use super::relay::{Ended, Relay};
use super::service::{ConnActivity, ConnContext, Pipeline};
use super::shared::{ConnSlot, Shared};
use super::upstream::JobConnector;
use http::HeaderValue;
use hyper::body::{Body, Incoming};
use hyper::server::conn::{http1, http2};
use hyper::service::{service_fn, HttpService};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use socket2::{Domain, Protocol as SockProtocol, Socket, Type};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

/// Most response bytes queued per HTTP/2 stream for a caller (hyper's default is 400 KiB).
/// A caller that grants a huge window and never reads gets no more than this per stream (plus
/// the body chunk in hand) before flow control holds the job back, as the HTTP/1.1 relay does
/// with its 32 KiB copy buffer; with [`crate::config::Limits::max_concurrent_streams`] it bounds
/// what one connection can make the proxy hold (128 streams: a few MiB). Writes to the socket
/// keep going from the kernel's buffer meanwhile, so throughput does not suffer.
pub const H2_SEND_BUFFER: usize = 16 * 1024;

/// Binds `count` sockets to `addr` with `SO_REUSEPORT`. With port 0, the first socket picks
/// the port and the others join it.
pub fn bind_reuseport(addr: SocketAddr, count: usize) -> std::io::Result<Vec<StdListener>> {
    let mut out = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count.max(1) {
        let socket = Socket::new(
            Domain::for_address(addr),
            Type::STREAM,
            Some(SockProtocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.set_nodelay(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        let listener: StdListener = socket.into();
        addr = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
}

/// One worker's sockets.
pub struct WorkerSockets {
    pub plain: StdListener,
    pub tls: Option<(StdListener, TlsAcceptor)>,
}

/// Runs one worker until the shutdown token fires and its connections drained (or the drain
/// timeout passed). Blocks the calling thread.
pub fn run_worker(id: usize, shared: Arc<Shared>, sockets: WorkerSockets) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name(format!("task-proxy-worker-{id}"))
        .build()?;
    runtime.block_on(async move {
        let limits = &shared.limits;
        let upstreams = JobConnector::new(
            id,
            limits.upstream_connect_timeout,
            limits.upstream_idle_timeout,
            limits.upstream_max_idle_per_job,
            shared.job_tls.clone(),
        );
        let sweeper = {
            let (upstreams, shared) = (upstreams.clone(), shared.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    let backends = shared.balancer.current();
                    upstreams.sweep(
                        backends
                            .backends()
                            .flat_map(|b| b.endpoints.iter().map(|e| &**e)),
                    );
                }
            })
        };
        let pipeline = Arc::new(Pipeline::new(shared.clone(), upstreams.clone()));
        let relay = shared
            .limits
            .http1_relay
            .then(|| Relay::new(shared.clone(), upstreams));
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes)
            .keep_alive(true);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(limits.max_header_bytes.min(u32::MAX as usize) as u32)
            // RFC 8441: WebSocket over HTTP/2.
            .enable_connect_protocol()
            .max_concurrent_streams(limits.max_concurrent_streams)
            .max_send_buf_size(H2_SEND_BUFFER)
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20));
        let worker = Arc::new(Worker {
            shared: shared.clone(),
            pipeline,
            relay,
            http1,
            http2,
        });
        let tracker = TaskTracker::new();

        let plain = TcpListener::from_std(sockets.plain)?;
        let mut accepts = vec![tokio::spawn(accept_loop(
            worker.clone(),
            plain,
            None,
            tracker.clone(),
        ))];
        if let Some((listener, acceptor)) = sockets.tls {
            let listener = TcpListener::from_std(listener)?;
            accepts.push(tokio::spawn(accept_loop(
                worker.clone(),
                listener,
                Some(acceptor),
                tracker.clone(),
            )));
        }
        shared.shutdown.cancelled().await;
        for a in &accepts {
            a.abort();
        }
        // Listening sockets close with the accept loops: new connections are refused now.
        for a in accepts {
            let _ = a.await;
        }
        sweeper.abort();
        tracker.close();
        if tokio::time::timeout(shared.limits.drain_timeout, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                worker = id,
                "drain timeout: closing the remaining connections"
            );
        }
        Ok(())
    })
}

struct Worker {
    shared: Arc<Shared>,
    pipeline: Arc<Pipeline>,
    /// The HTTP/1.1 fast path for plain connections (unless turned off).
    relay: Option<Relay>,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

async fn accept_loop(
    worker: Arc<Worker>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    tracker: TaskTracker,
) {
    let shared = &worker.shared;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let open = shared
            .metrics
            .active_connections
            .fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(ConnSlot(shared.clone()));
        if open >= shared.limits.max_connections {
            shared
                .metrics
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            tokio::spawn(refuse(stream, slot));
            continue;
        }
        shared
            .metrics
            .connections_total
            .fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let worker = worker.clone();
        match &tls {
            None => {
                tracker.spawn(async move {
                    serve_plain(worker, stream, peer, slot).await;
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tracker.spawn(async move {
                    let timeout = worker.shared.limits.header_read_timeout;
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            serve_connection(worker, tls_stream, peer, "https", slot).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

/// Over the connection cap: a short 503 for HTTP/1 callers, then close.
async fn refuse(mut stream: TcpStream, slot: Arc<ConnSlot>) {
    const ANSWER: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: 24\r\n\r\ntoo many connections...\n";
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(ANSWER)).await;
    let _ = stream.shutdown().await;
    drop(slot);
}

/// A plain connection: the relay serves it while its requests suit the relay, the general
/// path (framing guard and hyper) from the first one that does not.
async fn serve_plain(
    worker: Arc<Worker>,
    stream: TcpStream,
    peer: SocketAddr,
    slot: Arc<ConnSlot>,
) {
    match &worker.relay {
        // Both boxed, so that the task keeps room for neither once the other runs: hyper's
        // connection state is large, and an idle relayed connection should not carry room for
        // it; the relay's state (4.7 KiB) stayed in every HTTP/2 connection's task for its life.
        Some(relay) => {
            let ended = Box::pin(relay.serve(stream, peer)).await;
            if let Ended::HandToHyper(stream) = ended {
                Box::pin(serve_connection(worker, stream, peer, "http", slot)).await
            }
        }
        None => serve_connection(worker, stream, peer, "http", slot).await,
    }
}

async fn serve_connection<I>(
    worker: Arc<Worker>,
    io: I,
    peer: SocketAddr,
    scheme: &'static str,
    slot: Arc<ConnSlot>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer_ip = HeaderValue::from_str(&peer.ip().to_canonical().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    let activity = ConnActivity::new();
    let switch = Switch::new();
    let ctx = Arc::new(ConnContext {
        client: ClientView { scheme, peer_ip },
        peer: peer.ip().to_canonical(),
        activity: activity.clone(),
        switch: switch.clone(),
        slot,
    });
    let pipeline = worker.pipeline.clone();
    let shared = &worker.shared;
    let mut io = FramingGuard::new(io, shared.limits.max_header_bytes, switch);
    // Which protocol: HTTP/2's preface or HTTP/1. Sniffed here rather than by hyper-util's
    // auto builder, whose 24-byte first read split the head and doubled hyper's read buffer
    // (8 KiB more per idle connection). A caller silent for the idle timeout is closed.
    let h2 = tokio::select! {
        sniffed = std::future::poll_fn(|cx| io.poll_sniff_h2(cx)) => match sniffed {
            Ok(h2) => h2,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
                return;
            }
        },
        _ = shared.shutdown.cancelled() => return,
        _ = tokio::time::sleep(shared.limits.idle_timeout) => return,
    };
    let mut conn: Pin<Box<dyn Served + Send>> = if h2 {
        let io = TokioIo::new(H2Guard::new(io, shared.metrics.clone()));
        let budget = SendBudget::new(H2_CONNECTION_BUDGET, shared.metrics.clone());
        let service = service_fn(move |req| {
            let handling = pipeline.clone().handle(ctx.clone(), req);
            let budget = budget.clone();
            async move {
                let mut response = handling.await?;
                unshare_header_values(response.headers_mut());
                Ok::<_, Infallible>(response.map(|body| Budgeted::new(body, budget)))
            }
        });
        Box::pin(worker.http2.serve_connection(io, service))
    } else {
        let io = TokioIo::new(io);
        let service = service_fn(move |req| pipeline.clone().handle(ctx.clone(), req));
        Box::pin(worker.http1.serve_connection(io, service).with_upgrades())
    };

    let idle_ms = shared.limits.idle_timeout.as_millis() as u64;
    let mut closing = false;
    let mut check = Duration::from_millis(idle_ms);
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = shared.shutdown.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().shutdown();
            }
            _ = tokio::time::sleep(check), if !closing => {
                match activity.idle_for_ms() {
                    Some(idle) if idle >= idle_ms => {
                        closing = true;
                        conn.as_mut().shutdown();
                    }
                    Some(idle) => check = Duration::from_millis(idle_ms - idle),
                    None => check = Duration::from_millis(idle_ms),
                }
            }
        }
    }
}

/// Gives every header value its own copy of its bytes.
///
/// A job's response head is parsed in place: each value shares the job connection's read
/// buffer (8 KiB or more). h2's HPACK encoder keeps the values it indexes in the caller
/// connection's table, so an idle HTTP/2 caller kept a whole job read buffer alive for the
/// connection's life (a profile of 2,000 idle h2c callers: 16 MB of them). A few short copies
/// per response free it.
fn unshare_header_values(headers: &mut http::HeaderMap) {
    for value in headers.values_mut() {
        if let Ok(mut own) = HeaderValue::from_bytes(value.as_bytes()) {
            own.set_sensitive(value.is_sensitive());
            *value = own;
        }
    }
}

/// A served connection, HTTP/1 or HTTP/2: runs to its end, or is asked to finish gracefully.
trait Served: Future<Output = hyper::Result<()>> {
    fn shutdown(self: Pin<&mut Self>);
}

impl<I, S, B> Served for http1::UpgradeableConnection<I, S>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: Body + 'static,
    B::Error: Into<BoxError>,
{
    fn shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B> Served for http2::Connection<I, S, TokioExecutor>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: Body + 'static,
    B::Error: Into<BoxError>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}
