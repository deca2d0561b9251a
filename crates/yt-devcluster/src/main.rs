//! `yt-devcluster`: runs a development cluster until Ctrl-C.

#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use yt_devcluster::{DevCluster, DevClusterConfig};

/// A local YTsaurus HTTP API for development and tests (NOT for production data).
#[derive(Debug, Parser)]
#[command(name = "yt-devcluster", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000", env = "YT_DEVCLUSTER_LISTEN")]
    listen: SocketAddr,
    /// Extra users, JSON: {"users": [{"name": "carol", "tokens": ["carol-token"]}]}.
    #[arg(long)]
    users: Option<PathBuf>,
    /// Directory for job sandboxes (a temporary one if not given).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Number of simulated exec nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
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
    let args = Args::parse();
    if args.nodes == 0 || args.nodes > 254 {
        anyhow::bail!("--nodes must be in 1..=254");
    }
    let cluster = DevCluster::start(DevClusterConfig {
        listen: args.listen,
        users_file: args.users,
        work_dir: args.work_dir,
        node_count: args.nodes,
    })
    .await
    .context("cannot start the development cluster")?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    println!("{}", cluster.banner());
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot wait for Ctrl-C")?,
        _ = terminate.recv() => {}
    }
    eprintln!("stopping: terminating job processes");
    cluster.shutdown().await;
    Ok(())
}
