//! A task proxy for a test: started in process through `task_proxy::Server::start` (the
//! default), or as the real binary when the test needs the process (signals, its log, its
//! memory and file descriptors, its exit status). Either way it listens on free loopback
//! ports, and the test reads the bound addresses from [`Proxy`].

use crate::services::ServicesFile;
use crate::wait::wait_until;
use serde_json::Value;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use task_proxy::config::ServeArgs;
use task_proxy::{RunningServer, Server};

/// The base domain tests serve under unless they pass `--base-domain`.
pub const BASE_DOMAIN: &str = "tp.test";

/// How long a proxy has to start and become ready.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running proxy; dropping it stops it (starts the drain in process, kills the binary).
pub struct Proxy {
    pub plain: SocketAddr,
    pub admin: SocketAddr,
    pub tls: Option<SocketAddr>,
    run: Run,
    services: Option<ServicesFile>,
}

enum Run {
    /// `None` once dropped.
    InProcess(Option<RunningServer>),
    Binary {
        child: Child,
        log: Arc<Mutex<String>>,
    },
}

/// How to start a [`Proxy`]: see [`Proxy::builder`].
pub struct ProxyBuilder {
    flags: Vec<String>,
    services: Option<Vec<Value>>,
    env: Vec<(String, String)>,
    binary: Option<PathBuf>,
    wait_ready: bool,
}

impl Proxy {
    /// A proxy with the test defaults: `--base-domain tp.test` (unless given), loopback port 0
    /// listeners, two workers (unless `--worker-threads` is given), in process.
    pub fn builder() -> ProxyBuilder {
        ProxyBuilder {
            flags: Vec::new(),
            services: None,
            env: Vec::new(),
            binary: None,
            wait_ready: true,
        }
    }

    /// Starts the binary at `binary` as `serve <args>` (exactly those flags) and waits until
    /// it is ready (panics after 20 s).
    pub fn start(binary: &Path, args: &[&str]) -> Proxy {
        Proxy::start_with_env(binary, args, &[])
    }

    /// [`Proxy::start`] with extra environment variables (e.g. `RUST_LOG`).
    pub fn start_with_env(binary: &Path, args: &[&str], env: &[(&str, &str)]) -> Proxy {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let proxy = spawn_binary(binary, &args, &env, None);
        proxy.wait_ready();
        proxy
    }

    /// A blocking `GET` on the admin listener: (status, body). Status 0 when it cannot connect.
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path)
    }

    /// Prometheus text from the admin listener.
    pub fn metrics(&self) -> String {
        self.admin_get("/metrics").1
    }

    /// `/services` as JSON (`Null` when it does not answer JSON).
    pub fn services(&self) -> Value {
        serde_json::from_str(&self.admin_get("/services").1).unwrap_or(Value::Null)
    }

    /// The services file the proxy serves, when started with [`ProxyBuilder::services`].
    pub fn services_file(&self) -> &ServicesFile {
        self.services
            .as_ref()
            .expect("the proxy was started without a services file")
    }

    /// `http://<plain listener><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.plain)
    }

    /// Whether this proxy runs as a separate process.
    pub fn is_binary(&self) -> bool {
        matches!(self.run, Run::Binary { .. })
    }

    /// What the binary wrote so far (stderr and stdout, line by line). A proxy in process
    /// logs nowhere: start it with [`ProxyBuilder::binary`] to read its log.
    pub fn log(&self) -> String {
        match &self.run {
            Run::Binary { log, .. } => log.lock().map(|s| s.clone()).unwrap_or_default(),
            Run::InProcess(_) => {
                panic!("the log of a proxy in process is not kept: start it with .binary()")
            }
        }
    }

    /// The binary's process id (start it with [`ProxyBuilder::binary`]).
    pub fn pid(&self) -> u32 {
        match &self.run {
            Run::Binary { child, .. } => child.id(),
            Run::InProcess(_) => {
                panic!("a proxy in process has no process of its own: start it with .binary()")
            }
        }
    }

    /// The binary's resident set size in KiB (Linux), if it is running.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }

    /// How many file descriptors the binary has open (Linux), if it is running.
    pub fn open_fds(&self) -> Option<usize> {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .ok()
            .map(|dir| dir.count())
    }

    /// Sends a signal to the binary (e.g. `"TERM"`, `"HUP"`) with `kill`.
    pub fn signal(&self, name: &str) {
        crate::tools::signal_process(self.pid(), name);
    }

    /// Starts the drain: SIGTERM to the binary, [`RunningServer::shutdown`] in process.
    pub fn shutdown(&self) {
        match &self.run {
            Run::InProcess(server) => {
                if let Some(server) = server {
                    server.shutdown();
                }
            }
            Run::Binary { .. } => self.signal("TERM"),
        }
    }

    /// The binary's exit status if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        match &mut self.run {
            Run::Binary { child, .. } => child.try_wait().expect("wait for the proxy"),
            Run::InProcess(_) => {
                panic!("a proxy in process has no exit status: start it with .binary()")
            }
        }
    }

    /// Waits until `/readyz` answers 200 (panics after 20 s).
    pub fn wait_ready(&self) {
        wait_until("the proxy to become ready", START_TIMEOUT, || {
            (self.admin_get("/readyz").0 == 200).then_some(())
        });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        match &mut self.run {
            Run::Binary { child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
            // A test's end should not wait for requests it left hanging: the drain finishes
            // in the background.
            Run::InProcess(server) => {
                if let Some(server) = server.take() {
                    server.detach();
                }
            }
        }
    }
}

impl ProxyBuilder {
    /// Adds flags of `task-proxy serve`.
    pub fn flags<S: AsRef<str>>(mut self, flags: &[S]) -> Self {
        self.flags
            .extend(flags.iter().map(|f| f.as_ref().to_string()));
        self
    }

    /// Serves `services` (services-file entries) from a services file the proxy owns.
    pub fn services(mut self, services: &[Value]) -> Self {
        self.services = Some(services.to_vec());
        self
    }

    /// Environment variables of the binary (implies [`ProxyBuilder::binary`]).
    pub fn env(mut self, env: &[(&str, &str)]) -> Self {
        self.env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.binary()
    }

    /// Runs the real binary (next to the test executable, as cargo builds it for the package's
    /// integration tests) instead of the library in process.
    pub fn binary(mut self) -> Self {
        if self.binary.is_none() {
            self.binary = Some(default_binary());
        }
        self
    }

    /// Runs the binary at `path`.
    pub fn binary_at(mut self, path: &Path) -> Self {
        self.binary = Some(path.to_path_buf());
        self
    }

    /// Returns as soon as the listeners are bound, without waiting for `/readyz` (e.g. a
    /// discovering proxy whose cluster is down).
    pub fn no_wait(mut self) -> Self {
        self.wait_ready = false;
        self
    }

    /// Starts the proxy; panics with the reason when it cannot start.
    pub fn start(self) -> Proxy {
        let services = self.services.as_deref().map(ServicesFile::new);
        let mut flags = Vec::new();
        if let Some(file) = &services {
            flags.push("--services-file".to_string());
            flags.push(file.path().to_string_lossy().into_owned());
        }
        let has = |flag: &str| {
            self.flags
                .iter()
                .any(|f| f == flag || f.starts_with(&format!("{flag}=")))
        };
        if !has("--base-domain") {
            flags.extend(["--base-domain".into(), BASE_DOMAIN.into()]);
        }
        if !has("--listen") {
            flags.extend(["--listen".into(), "127.0.0.1:0".into()]);
        }
        if !has("--admin-listen") {
            flags.extend(["--admin-listen".into(), "127.0.0.1:0".into()]);
        }
        if !has("--worker-threads") {
            flags.extend(["--worker-threads".into(), "2".into()]);
        }
        flags.extend(self.flags.iter().cloned());
        let proxy = match &self.binary {
            Some(binary) => spawn_binary(binary, &flags, &self.env, services),
            None => start_in_process(&flags, services),
        };
        if self.wait_ready {
            proxy.wait_ready();
        }
        proxy
    }
}

fn start_in_process(flags: &[String], services: Option<ServicesFile>) -> Proxy {
    let args = ServeArgs::parse_flags(flags.iter().map(String::as_str))
        .unwrap_or_else(|e| panic!("bad flags {flags:?}: {e}"));
    let config = args
        .into_config()
        .unwrap_or_else(|e| panic!("invalid configuration {flags:?}: {e}"));
    let server = Server::start(config).unwrap_or_else(|e| panic!("the proxy did not start: {e}"));
    Proxy {
        plain: server.plain_addr(),
        admin: server.admin_addr(),
        tls: server.tls_addr(),
        run: Run::InProcess(Some(server)),
        services,
    }
}

/// `task-proxy` next to the test executable (`target/<profile>/deps/<test>` ->
/// `target/<profile>/task-proxy`).
fn default_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("task-proxy"))
        .expect("the target directory");
    assert!(
        binary.is_file(),
        "{} not built: tests of the task-proxy package get it from cargo",
        binary.display()
    );
    binary
}

fn spawn_binary(
    binary: &Path,
    args: &[String],
    env: &[(String, String)],
    services: Option<ServicesFile>,
) -> Proxy {
    let mut child = Command::new(binary)
        .arg("serve")
        .args(args)
        // The test's own environment must not change what the proxy does: tokens, the
        // cluster and the log filter come from the test's flags and `env` only.
        .env_remove("YT_TOKEN")
        .env_remove("YT_PROXY")
        .env_remove("RUST_LOG")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    let log = Arc::new(Mutex::new(String::new()));
    let keep = |stream: Box<dyn std::io::Read + Send>,
                log: Arc<Mutex<String>>,
                listening: Option<std::sync::mpsc::Sender<String>>| {
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stream)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(mut log) = log.lock() {
                    log.push_str(&line);
                    log.push('\n');
                }
                if line.starts_with("task-proxy listening") {
                    if let Some(tx) = &listening {
                        let _ = tx.send(line);
                    }
                }
            }
        });
    };
    if let Some(err) = child.stderr.take() {
        keep(Box::new(err), log.clone(), None);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(out) = child.stdout.take() {
        keep(Box::new(out), log.clone(), Some(tx));
    }
    // The proxy prints `task-proxy listening plain=ADDR admin=ADDR [tls=ADDR]` once bound.
    let line = match rx.recv_timeout(START_TIMEOUT) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            panic!(
                "task-proxy did not start: {}",
                log.lock().map(|s| s.clone()).unwrap_or_default()
            );
        }
    };
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|a| a.parse().ok())
    };
    Proxy {
        plain: field("plain=").expect("plain address"),
        admin: field("admin=").expect("admin address"),
        tls: field("tls="),
        run: Run::Binary { child, log },
        services,
    }
}

/// A minimal blocking HTTP/1.0 GET: (status, body). Status 0 when it cannot connect.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
