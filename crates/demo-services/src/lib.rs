//! Demo and test upstreams that play the part of jobs behind the task proxy: an HTTP job
//! (HTTP/1.1 and h2c on one port: echo, SSE, WebSocket echo, large bodies, redirects; or the
//! same over TLS with h2 and http/1.1 by ALPN, see [`DemoTls`]) and a gRPC job (`helloworld.Greeter`, `demo.Inspect`, reflection). Every answer names the job that
//! gave it, so tests can tell which upstream a proxy picked.
//!
//! Used in process by integration tests and the `task-proxy dev` demo (through [`spawn_http`],
//! [`spawn_grpc`] or the `serve_*` functions), and as the `demo-services` binary inside jobs.
//!
//! Layers: `server` is the accept loop shared by both jobs; `http` and `grpc` hold the
//! endpoints; `tls` the HTTP job's certificate; this module adds handles for jobs running in
//! the background.

#![forbid(unsafe_code)]

mod grpc;
mod http;
mod server;
mod tls;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use crate::grpc::{
    proto, serve_grpc, serve_grpc_tls, serve_grpc_with_interval, STREAM_INTERVAL, STREAM_REPLIES,
};
pub use crate::http::{pattern_byte, serve_http, serve_https, JOB_HEADER};
pub use crate::tls::{DemoTls, DemoTlsError, TlsArgs};

/// A job serving in a background task. Dropping it aborts the task, which closes the listener
/// and every connection the job accepted.
#[derive(Debug)]
pub struct Running {
    /// The address the job listens on.
    pub addr: SocketAddr,
    /// The job's name, as its answers carry it.
    pub name: String,
    task: JoinHandle<()>,
}

impl Running {
    /// `http://<addr>`, the base URL of the job.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the HTTP job on `127.0.0.1` and a free port.
///
/// # Panics
/// When no loopback port can be bound, which leaves a test nothing to do.
pub async fn spawn_http(name: impl Into<String>) -> Running {
    spawn_http_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), name)
        .await
        .unwrap_or_else(|error| panic!("binding the demo HTTP job on 127.0.0.1: {error}"))
}

/// Starts the gRPC job on `127.0.0.1` and a free port.
///
/// # Panics
/// When no loopback port can be bound, which leaves a test nothing to do.
pub async fn spawn_grpc(name: impl Into<String>) -> Running {
    spawn_grpc_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), name)
        .await
        .unwrap_or_else(|error| panic!("binding the demo gRPC job on 127.0.0.1: {error}"))
}

/// Starts the HTTP job on `addr` (port 0 picks a free one), e.g. `127.0.0.2:0` to play a job
/// on a simulated exec node.
pub async fn spawn_http_on(addr: SocketAddr, name: impl Into<String>) -> std::io::Result<Running> {
    spawn(addr, name.into(), serve_http).await
}

/// Starts the HTTP job serving TLS with `tls` on `addr` (port 0 picks a free one).
pub async fn spawn_https_on(
    addr: SocketAddr,
    name: impl Into<String>,
    tls: DemoTls,
) -> std::io::Result<Running> {
    spawn(addr, name.into(), move |listener, name| {
        serve_https(listener, name, tls)
    })
    .await
}

/// Starts the gRPC job on `addr` (port 0 picks a free one).
pub async fn spawn_grpc_on(addr: SocketAddr, name: impl Into<String>) -> std::io::Result<Running> {
    spawn(addr, name.into(), serve_grpc).await
}

async fn spawn<F, Fut>(addr: SocketAddr, name: String, serve: F) -> std::io::Result<Running>
where
    F: FnOnce(TcpListener, String) -> Fut,
    Fut: Future<Output = std::io::Result<()>> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let job = serve(listener, name.clone());
    let task = tokio::spawn(async move {
        if let Err(error) = job.await {
            tracing::error!(%error, %addr, "demo job stopped");
        }
    });
    Ok(Running { addr, name, task })
}
