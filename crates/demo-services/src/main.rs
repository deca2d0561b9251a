//! The `demo-services` binary: runs one demo job in the foreground, as a YTsaurus job would.
//!
//! ```text
//! demo-services http --port P [--host 0.0.0.0] [--name NAME] [--tls [--tls-cert F --tls-key F] [--tls-alpn h2,http/1.1]]
//! demo-services grpc --port P [--host 0.0.0.0] [--name NAME] [--tls ...]
//! ```
//! `--port` falls back to `$YT_PORT_0`; `--name` to `$YT_JOB_ID`, then `<hostname>:<port>`.

#![forbid(unsafe_code)]

use std::net::IpAddr;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use demo_services::TlsArgs;
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Demo upstreams that play the part of jobs behind the task proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// HTTP/1.1 + h2c job: /, /headers, /sse, /ws, /bytes, /upload, /redirect, /delay, /status/N.
    Http(HttpArgs),
    /// gRPC job: helloworld.Greeter, demo.Inspect and server reflection.
    Grpc(GrpcArgs),
}

#[derive(Debug, Args)]
struct HttpArgs {
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Debug, Args)]
struct GrpcArgs {
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    tls: TlsArgs,
    /// Milliseconds between the replies of `SayHelloStream` (0: none).
    #[arg(long, default_value_t = demo_services::STREAM_INTERVAL.as_millis() as u64)]
    stream_interval_ms: u64,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// The port to listen on.
    #[arg(long, env = "YT_PORT_0")]
    port: u16,
    /// The address to listen on (all addresses by default, as jobs are reached on the node's).
    #[arg(long, default_value = "0.0.0.0")]
    host: IpAddr,
    /// The name the job answers with [default: $YT_JOB_ID, else <hostname>:<port>].
    #[arg(long, env = "YT_JOB_ID")]
    name: Option<String>,
}

impl ServeArgs {
    async fn listen(&self) -> anyhow::Result<(TcpListener, String)> {
        let listener = TcpListener::bind((self.host, self.port))
            .await
            .with_context(|| format!("binding {}:{}", self.host, self.port))?;
        let port = listener.local_addr()?.port();
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| format!("{}:{port}", hostname()));
        tracing::info!(addr = %listener.local_addr()?, %name, "demo job listening");
        Ok((listener, name))
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Http(args) => {
            let tls = args.tls.load(&[hostname()])?;
            let (listener, name) = args.serve.listen().await?;
            match tls {
                Some(tls) => demo_services::serve_https(listener, name, tls).await?,
                None => demo_services::serve_http(listener, name).await?,
            }
        }
        Command::Grpc(args) => {
            let tls = args.tls.load(&[hostname()])?;
            let (listener, name) = args.serve.listen().await?;
            let interval = std::time::Duration::from_millis(args.stream_interval_ms);
            match tls {
                Some(tls) => demo_services::serve_grpc_tls(listener, name, interval, tls).await?,
                None => demo_services::serve_grpc_with_interval(listener, name, interval).await?,
            }
        }
    }
    Ok(())
}
