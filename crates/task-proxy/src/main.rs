//! `task-proxy`: subcommand `serve` runs the proxy; `dev` starts a local dev cluster, the proxy
//! on it and demo services (`dev.rs`); `demo-job` (hidden) is the demo job that `dev` runs.
//!
//! `serve` parses and validates the flags, sets up logging, starts the library's
//! [`task_proxy::Server`] and turns SIGTERM/SIGINT into its drain. `dev` and `demo-job` exist
//! only with the `dev` cargo feature (on by default; the container image builds without it).

#![forbid(unsafe_code)]

use anyhow::Context;

/// jemalloc instead of the system allocator: every connection holds several buffers of 4 to
/// 16 KiB (h2's codec among them) of which an idle connection has written a few hundred
/// bytes; jemalloc gives such sizes pages that stay untouched until used and returns freed
/// pages to the system, where glibc's heap kept reused, already-touched memory resident.
/// 10,000 idle h2c connections: 309 -> 233 MiB RSS (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use clap::{Parser, Subcommand};
use std::io::Write;
use task_proxy::config::{Config, ServeArgs};
use task_proxy::{RunningServer, Server};

#[cfg(feature = "dev")]
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
    #[cfg(feature = "dev")]
    Dev(dev::DevArgs),
    /// A demo job (what `dev` runs inside its operations).
    #[cfg(feature = "dev")]
    #[command(hide = true)]
    DemoJob(dev::DemoJobArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse_from(default_to_serve(normalize_single_dash_flags(
        std::env::args_os(),
    )));
    let result: anyhow::Result<anyhow::Result<()>> = match cli.command {
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
                if let Err(e) = config.check_key_files() {
                    eprintln!("task-proxy: invalid configuration: {e}");
                    return std::process::ExitCode::from(2);
                }
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
            Ok(serve(config, |_| {}))
        }
        #[cfg(feature = "dev")]
        Command::Dev(args) => init_tracing(&cli.log).map(|_logging| dev::run(args)),
        #[cfg(feature = "dev")]
        Command::DemoJob(args) => init_tracing(&cli.log).map(|_logging| dev::run_demo_job(args)),
    };
    let result = match result {
        Ok(result) => result,
        Err(e) => {
            eprintln!("task-proxy: {e:#}");
            return std::process::ExitCode::from(2);
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

/// Starts the proxy and serves until SIGTERM/SIGINT, then drains; a second signal exits at
/// once. `on_listening` is called once every listener is up.
fn serve(config: Config, on_listening: impl FnOnce(&RunningServer)) -> anyhow::Result<()> {
    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal runtime")?;
    // Signal handlers are installed before the listeners open, so an early SIGTERM drains.
    let mut signals_seen = signals.block_on(async { Signals::install() });
    let drain_timeout = config.limits.drain_timeout;
    let running = Server::start(config)?;
    // One line for tools and tests that start the proxy on port 0.
    let tls_addr = running
        .tls_addr()
        .map(|a| format!(" tls={a}"))
        .unwrap_or_default();
    let line = format!(
        "task-proxy listening plain={} admin={}{tls_addr}",
        running.plain_addr(),
        running.admin_addr()
    );
    tracing::info!("{line}");
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
    on_listening(&running);

    signals.block_on(signals_seen.next());
    tracing::info!(?drain_timeout, "draining");
    running.shutdown();
    let (exited_tx, exited_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        running.wait();
        let _ = exited_tx.send(());
    });
    signals.block_on(async {
        tokio::select! {
            _ = exited_rx => {}
            _ = signals_seen.next() => {
                tracing::warn!("second signal: exiting without waiting for the drain");
                std::process::exit(1);
            }
        }
    });
    Ok(())
}

/// SIGTERM and SIGINT (Ctrl-C only, when they cannot be listened for).
enum Signals {
    Unix {
        term: tokio::signal::unix::Signal,
        int: tokio::signal::unix::Signal,
    },
    CtrlC,
}

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Signals::Unix { term, int },
            _ => {
                tracing::error!("cannot listen for SIGTERM/SIGINT; stopping on Ctrl-C only");
                Signals::CtrlC
            }
        }
    }

    async fn next(&mut self) {
        match self {
            Signals::Unix { term, int } => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
            }
            Signals::CtrlC => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
