//! `task-proxy`: subcommand `serve` runs the proxy; `dev` starts a local dev cluster, the proxy
//! on it and demo services (`dev.rs`); `demo-job` (hidden) is the demo job that `dev` runs.
//!
//! `serve` wires the parts: a source publishes routing snapshots, the balancer follows them,
//! worker threads serve traffic, and a small control runtime runs the admin listener, the
//! services-file and certificate watchers and the signal handling (graceful drain).

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use task_proxy::admin::{self, Admin};
use task_proxy::auth::Gate;
use task_proxy::config::{Config, ServeArgs, ServicesSource};
use task_proxy::discovery::{Discovery, DiscoveryConfig};
use task_proxy::proxy::balance::Balancer;
use task_proxy::proxy::conn_limit::ConnLimitSettings;
use task_proxy::proxy::{tls::Tls, DataPlane, ListenConfig, Shared};
use task_proxy::routing::RoutingTable;
use task_proxy::source::services_file::ServicesFileSource;
use tokio_util::sync::CancellationToken;
use yt_client::{ClientConfig, YtClient};

mod dev;

#[derive(Parser)]
#[command(name = "task-proxy", version, about = "Task proxy for YTsaurus")]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Route, authenticate and forward requests to services running in jobs.
    Serve(Box<ServeArgs>),
    /// Try it locally: a dev cluster, the proxy on it and demo services, with what to run next.
    Dev(dev::DevArgs),
    /// A demo job (what `dev` runs inside its operations).
    #[command(hide = true)]
    DemoJob(dev::DemoJobArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse_from(default_to_serve(normalize_single_dash_flags(
        std::env::args_os(),
    )));
    let result = match cli.command {
        Command::Serve(args) => {
            let check_only = args.check_config;
            let config = match (*args).into_config() {
                Err(e) => {
                    eprintln!("task-proxy: invalid configuration: {e}");
                    return std::process::ExitCode::from(2);
                }
                Ok(config) => config,
            };
            if check_only {
                println!("{config:#?}");
                return std::process::ExitCode::SUCCESS;
            }
            // `--logging-config` replaces `--log-level`; `--log-format` still picks the format.
            let _logging = match &config.logging {
                Some(logging) => match logging.install(cli.log.log_format == "json") {
                    Ok(guard) => Some(guard),
                    Err(e) => {
                        eprintln!("task-proxy: cannot set up logging: {e}");
                        return std::process::ExitCode::from(2);
                    }
                },
                None => match init_tracing(&cli.log) {
                    Ok(guard) => Some(guard),
                    Err(e) => {
                        eprintln!("task-proxy: {e:#}");
                        return std::process::ExitCode::from(2);
                    }
                },
            };
            serve(config, |_| {})
        }
        other => {
            let _logging = match init_tracing(&cli.log) {
                Ok(guard) => guard,
                Err(e) => {
                    eprintln!("task-proxy: {e:#}");
                    return std::process::ExitCode::from(2);
                }
            };
            match other {
                Command::Dev(args) => dev::run(args),
                Command::DemoJob(args) => dev::run_demo_job(args),
                Command::Serve(_) => unreachable!("handled above"),
            }
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("task-proxy: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The original binary has no subcommand: `server -yt-proxy=... -base-domain=...`. A command
/// line whose first argument is a flag other than help, version and the global `--log-*` ones
/// is run as `serve`.
fn default_to_serve(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let first = args.get(1).and_then(|a| a.to_str()).unwrap_or("");
    let global = ["-h", "--help", "-V", "--version"].contains(&first)
        || first.starts_with("--log-format")
        || first.starts_with("--log-level");
    if first.starts_with('-') && !global {
        args.insert(1, "serve".into());
    }
    args
}

/// Accepts the original deployment's single-dash long flags (`-base-domain=x`,
/// `-auth-enabled=false`): each argument that is `-<known long flag>` (with or without
/// `=value`) gets a second dash. Anything else is passed through untouched.
fn normalize_single_dash_flags(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    let command = Cli::command();
    let mut long_names: std::collections::HashSet<String> = command
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect();
    for sub in command.get_subcommands() {
        long_names.extend(
            sub.get_arguments()
                .filter_map(|a| a.get_long().map(str::to_string)),
        );
    }
    args.into_iter()
        .map(|arg| {
            let Some(text) = arg.to_str() else {
                return arg;
            };
            let Some(rest) = text.strip_prefix('-').filter(|r| !r.starts_with('-')) else {
                return arg;
            };
            let name = rest.split_once('=').map_or(rest, |(name, _)| name);
            if name.len() > 1 && long_names.contains(name) {
                format!("-{text}").into()
            } else {
                arg
            }
        })
        .collect()
}

/// How logs are written: `--log-format`, `--log-level` (RUST_LOG wins when set).
#[derive(clap::Args)]
struct LogArgs {
    /// `text` for people, `json` (one object a line) for log pipelines.
    #[arg(long, global = true, env = "TASK_PROXY_LOG_FORMAT", default_value = "text",
          value_parser = ["text", "json"])]
    log_format: String,
    /// A level (`info`, `debug`, ...) or a filter like `info,task_proxy::access=warn`; RUST_LOG
    /// overrides it.
    #[arg(
        long,
        global = true,
        env = "TASK_PROXY_LOG_LEVEL",
        default_value = "info"
    )]
    log_level: String,
}

fn init_tracing(log: &LogArgs) -> anyhow::Result<task_proxy::logging::LoggingGuard> {
    use std::io::IsTerminal;
    let filter = match tracing_subscriber::EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(_) => tracing_subscriber::EnvFilter::try_new(&log.log_level)
            .with_context(|| format!("--log-level {:?} is not a level or filter", log.log_level))?,
    };
    let (writer, guard) = task_proxy::logging::DefaultWriter::stderr();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    if log.log_format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
    Ok(guard)
}

/// The auth gate for the configuration: with auth on, a client of the cluster that asks
/// `whoami` with callers' credentials and `check_operation_permission` with the robot token.
fn build_gate(config: &Config) -> anyhow::Result<Gate> {
    if !config.auth.enabled {
        return Ok(Gate::disabled_with_cookie_name(&config.auth.cookie_name));
    }
    let Some(yt_proxy) = &config.yt_proxy else {
        bail!("auth needs --yt-proxy (or --namespace)");
    };
    let token = robot_token(config)?.context(
        "auth needs the robot token for permission checks: give --yt-token-path or YT_TOKEN \
         (or pass --auth-enabled=false)",
    )?;
    let client = YtClient::new(
        ClientConfig::new(yt_proxy.clone())
            .with_token(token)
            .with_timeout(config.auth_timeout)
            // Retries (and a proxy's `Retry-After`) never outlast the auth timeout: an
            // uncached caller gets its answer, or 503, within it.
            .with_deadline(config.auth_timeout)
            .with_max_retries(1),
    )
    .map_err(|e| anyhow::anyhow!("cannot create the cluster client for auth: {e}"))?;
    let gate = Gate::new(config.auth.clone(), Arc::new(client.clone()))
        .context("invalid auth configuration")?;
    // Older servers lack `check_operation_permission`: find out now rather than on the first
    // request (which also detects it, for a server downgraded later).
    let probed = gate.clone();
    tokio::spawn(async move {
        match task_proxy::auth::probe_permission_command(&client).await {
            Ok(()) => {}
            Err(task_proxy::auth::BackendError::Unsupported(reason)) => {
                probed.mark_unsupported(&reason)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot list the cluster's commands at start-up; checking on first use")
            }
        }
    });
    Ok(gate)
}

/// The robot token: the file `--yt-token-path`, else `--yt-token`/`YT_TOKEN` (trimmed; the
/// same precedence as discovery's client).
fn robot_token(config: &Config) -> anyhow::Result<Option<String>> {
    let token = match (&config.yt_token_path, &config.yt_token) {
        (Some(path), _) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?
            .trim()
            .to_string(),
        (None, Some(token)) => token.trim().to_string(),
        (None, None) => return Ok(None),
    };
    Ok(Some(token).filter(|t| !t.is_empty()))
}

/// Where a running proxy listens, and its routing table (for `dev`, which waits for routes).
pub struct Running {
    pub plain: std::net::SocketAddr,
    pub admin: std::net::SocketAddr,
    pub table: Arc<RoutingTable>,
}

/// Runs the proxy until SIGTERM/SIGINT; `on_listening` is called once every listener is up.
fn serve(config: Config, on_listening: impl FnOnce(Running)) -> anyhow::Result<()> {
    tracing::info!(?config, "starting");
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("task-proxy-control")
        .build()
        .context("cannot start the control runtime")?;
    let _guard = control.enter();

    let gate = build_gate(&config)?;
    let table = Arc::new(RoutingTable::new(&config.base_domain));
    let shutdown = CancellationToken::new();
    let admin_stop = CancellationToken::new();

    // The routing source. A services file must load before traffic is served; discovery
    // publishes after its first pass (until then /readyz says not ready).
    let (file_source, discovery) = match &config.source {
        ServicesSource::File(path) => {
            let mut source =
                ServicesFileSource::new(path.clone(), config.base_domain.clone(), table.clone());
            source.reload().context("cannot load the services file")?;
            (Some(source), None)
        }
        ServicesSource::Discovery => {
            let mut discovery_config = DiscoveryConfig::new(config.base_domain.clone());
            discovery_config.dir_path = config.dir_path.clone();
            discovery_config.period = config.discovery_period;
            (
                None,
                Some(Discovery::new(yt_client(&config)?, discovery_config)),
            )
        }
    };
    let discovery_status = discovery.as_ref().map(Discovery::status);

    let balancer = Arc::new(Balancer::with_conn_limit(
        config.worker_threads,
        config.limits.eject_base,
        config.limits.eject_max,
        ConnLimitSettings::from_limits(&config.limits),
    ));
    balancer.rebuild(&table.load());
    let metrics = Arc::new(task_proxy::proxy::metrics::ProxyMetrics::default());

    let tls = match &config.tls {
        Some(t) => Some((
            t.listen,
            Tls::new(t.cert.clone(), t.key.clone()).context("cannot load the TLS certificate")?,
        )),
        None => None,
    };
    let shared = Arc::new(Shared {
        table: table.clone(),
        balancer: balancer.clone(),
        gate: gate.clone(),
        limits: config.limits.clone(),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
    });
    let admin_listener = std::net::TcpListener::bind(config.admin_listen)
        .with_context(|| format!("cannot listen on {} (admin)", config.admin_listen))?;
    admin_listener.set_nonblocking(true)?;
    let admin_addr = admin_listener.local_addr()?;

    let data_plane = DataPlane::start(
        shared,
        &ListenConfig {
            plain: config.listen,
            tls: tls.clone(),
            workers: config.worker_threads,
        },
    )?;

    control.block_on(async {
        // Follow routing generations: rebuild backends (health and pools kept) on each.
        let mut generations = table.subscribe();
        let follower = {
            let (table, balancer, shutdown) = (table.clone(), balancer.clone(), shutdown.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        changed = generations.changed() => if changed.is_err() { return },
                    }
                    balancer.rebuild(&table.load());
                }
            })
        };
        if let Some(file_source) = file_source {
            tokio::spawn(file_source.watch(Duration::from_secs(1), shutdown.clone()));
        }
        if let Some(discovery) = discovery {
            spawn_discovery(discovery, table.clone(), shutdown.clone())?;
        }
        if let Some((_, tls)) = tls {
            tokio::spawn(tls.watch(Duration::from_secs(1), shutdown.clone()));
        }
        let mut registry =
            admin::metrics::registry(table.clone(), balancer.clone(), metrics.clone());
        gate.register_metrics(&mut registry);
        if let Some(status) = &discovery_status {
            status.register_metrics(&mut registry);
        }
        let admin = Arc::new(Admin {
            registry,
            gate: gate.clone(),
            discovery: discovery_status.clone(),
            table: table.clone(),
            balancer: balancer.clone(),
            draining: shutdown.clone(),
            stop: admin_stop.clone(),
        });
        let admin_listener = tokio::net::TcpListener::from_std(admin_listener)?;
        let admin_task = tokio::spawn(admin.serve(admin_listener));

        // One line for tools and tests that start the proxy on port 0.
        let tls_addr = data_plane
            .tls_addr
            .map(|a| format!(" tls={a}"))
            .unwrap_or_default();
        let line = format!(
            "task-proxy listening plain={} admin={admin_addr}{tls_addr}",
            data_plane.plain_addr
        );
        tracing::info!("{line}");
        let mut stdout = std::io::stdout();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
        on_listening(Running {
            plain: data_plane.plain_addr,
            admin: admin_addr,
            table: table.clone(),
        });

        wait_for_signal().await;
        tracing::info!(drain_timeout = ?config.limits.drain_timeout, "draining");
        shutdown.cancel();
        follower.abort();
        // Workers stop accepting at once and exit when drained (or at the drain timeout);
        // the admin listener stays up meanwhile, saying "draining" on /readyz.
        let drained = tokio::task::spawn_blocking(move || data_plane.join());
        tokio::select! {
            _ = drained => {}
            _ = wait_for_signal() => {
                tracing::warn!("second signal: exiting without waiting for the drain");
                std::process::exit(1);
            }
        }
        admin_stop.cancel();
        let _ = admin_task.await;
        anyhow::Ok(())
    })?;
    tracing::info!("stopped");
    Ok(())
}

/// Runs discovery on a thread of its own, so a pass over many operations never stalls the
/// admin listener or signal handling on the control runtime.
fn spawn_discovery(
    discovery: Discovery,
    table: Arc<RoutingTable>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the discovery runtime")?;
    std::thread::Builder::new()
        .name("task-proxy-discovery".into())
        .spawn(move || runtime.block_on(discovery.run(table, shutdown.cancelled_owned())))
        .context("cannot start the discovery thread")?;
    Ok(())
}

/// The robot's client of the cluster (`--yt-proxy`, token from `--yt-token-path` or
/// `--yt-token`).
fn yt_client(config: &Config) -> anyhow::Result<YtClient> {
    let proxy = config
        .yt_proxy
        .clone()
        .context("discovery needs --yt-proxy (or --namespace)")?;
    let token = robot_token(config)?;
    if token.is_none() {
        tracing::warn!(
            "no robot token (--yt-token-path or YT_TOKEN): the cluster may refuse discovery"
        );
    }
    let mut client_config = ClientConfig::new(proxy);
    client_config.token = token;
    client_config.timeout = Duration::from_secs(10);
    // A call's retries and waits (a proxy's `Retry-After` included) end within one discovery
    // period, so a failing cluster fails the pass instead of stretching it.
    client_config.deadline = Some(config.discovery_period.max(Duration::from_secs(1)));
    YtClient::new(client_config).context("cannot set up the cluster client")
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for SIGTERM/SIGINT; stopping on Ctrl-C only");
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
