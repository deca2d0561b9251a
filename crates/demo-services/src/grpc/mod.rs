//! The demo gRPC job (h2c, or HTTP/2 over TLS): `helloworld.Greeter`, `demo.Inspect`, and server reflection (v1
//! and v1alpha) so tools like `grpcurl` need no proto files. This module owns the assembly of
//! the services into one router served by the shared accept loop.

mod greeter;
mod inspect;

use std::convert::Infallible;

use http::Request;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tonic::codegen::Service;
use tonic::service::Routes;

use crate::server;

/// The generated protobuf messages, servers and clients.
pub mod proto {
    /// `package helloworld`: the standard Greeter, with a server-streaming variant.
    #[allow(clippy::all, missing_docs)]
    pub mod helloworld {
        tonic::include_proto!("helloworld");
    }

    /// `package demo`: `Inspect/Metadata`, which returns the metadata the job received.
    #[allow(clippy::all, missing_docs)]
    pub mod demo {
        tonic::include_proto!("demo");
    }

    /// The encoded `FileDescriptorSet` of both packages, as served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("demo_descriptor");
}

pub use greeter::{STREAM_INTERVAL, STREAM_REPLIES};

/// Serves the demo gRPC job on `listener` until the returned future is dropped or aborted;
/// dropping it also closes every connection it accepted.
pub async fn serve_grpc(listener: TcpListener, name: String) -> std::io::Result<()> {
    serve_grpc_with_interval(listener, name, STREAM_INTERVAL).await
}

/// [`serve_grpc`] with `interval` between streamed replies (zero: no pause, for benchmarks).
pub async fn serve_grpc_with_interval(
    listener: TcpListener,
    name: String,
    interval: std::time::Duration,
) -> std::io::Result<()> {
    serve(listener, name, interval, None).await
}

/// [`serve_grpc_with_interval`] over TLS (`tls`: its certificate and ALPN offer), as a job
/// that serves gRPC with its own certificate does.
pub async fn serve_grpc_tls(
    listener: TcpListener,
    name: String,
    interval: std::time::Duration,
    tls: crate::tls::DemoTls,
) -> std::io::Result<()> {
    serve(listener, name, interval, Some(tls.acceptor())).await
}

async fn serve(
    listener: TcpListener,
    name: String,
    interval: std::time::Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> std::io::Result<()> {
    let routes = routes(name, interval)?;
    server::serve(listener, tls, move |_connection| {
        let routes = routes.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let mut routes = routes.clone();
            async move {
                // The router answers every request, unknown ones with `Unimplemented`.
                let response = routes.call(request.map(tonic::body::boxed)).await;
                Ok::<_, Infallible>(response.unwrap_or_else(|error| {
                    tracing::warn!(%error, "grpc router failed");
                    tonic::Status::internal("router failed").into_http()
                }))
            }
        })
    })
    .await
}

/// All the job's services in one router.
fn routes(name: String, interval: std::time::Duration) -> std::io::Result<Routes> {
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(std::io::Error::other)?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(std::io::Error::other)?;
    let greeter = proto::helloworld::greeter_server::GreeterServer::new(greeter::Greeter::new(
        name.clone(),
        interval,
    ));
    let inspect = proto::demo::inspect_server::InspectServer::new(inspect::Inspect::new(name));
    Ok(Routes::new(greeter)
        .add_service(inspect)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .prepare())
}
