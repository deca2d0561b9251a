//! Helpers shared by the workspace's integration tests: where the real peer tools are
//! (`yt`, `grpcurl`, `python3` with `websockets`) and small waits. Tools come from the
//! workspace's `.venv` (made by `scripts/install-test-deps`), then from `PATH`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The workspace root (the directory holding the top `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest.to_path_buf())
}

/// The path of a peer tool: `.venv/bin/<name>` in the workspace, else the first match on `PATH`.
///
/// Panics with a hint when the tool is missing: a test that needs a real peer must not pass
/// without it.
pub fn tool(name: &str) -> PathBuf {
    let venv = workspace_root().join(".venv").join("bin").join(name);
    if venv.is_file() {
        return venv;
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!("`{name}` not found in .venv/bin or PATH: run scripts/install-test-deps first")
}

/// Waits until a TCP connect to `addr` succeeds, or panics after `timeout`.
pub async fn wait_for_port(addr: std::net::SocketAddr, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{addr} did not accept connections within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `task-proxy serve` process started by a test, killed when dropped.
///
/// The proxy prints `task-proxy listening plain=ADDR admin=ADDR [tls=ADDR]` on stdout once its
/// sockets are bound; [`Proxy::start`] reads that line (so tests can use port 0) and then waits
/// until `/readyz` answers 200.
pub struct Proxy {
    pub child: std::process::Child,
    pub plain: std::net::SocketAddr,
    pub admin: std::net::SocketAddr,
    pub tls: Option<std::net::SocketAddr>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Proxy {
    /// Starts `binary serve <args>` and waits until it is ready (panics after 20 s).
    pub fn start(binary: &Path, args: &[&str]) -> Proxy {
        Proxy::start_with_env(binary, args, &[])
    }

    /// [`Proxy::start`] with extra environment variables (e.g. `RUST_LOG`).
    pub fn start_with_env(binary: &Path, args: &[&str], env: &[(&str, &str)]) -> Proxy {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let mut child = Command::new(binary)
            .arg("serve")
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        if let Some(err) = child.stderr.take() {
            let log = stderr.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                    if let Ok(mut log) = log.lock() {
                        log.push_str(&line);
                        log.push('\n');
                    }
                }
            });
        }
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(out) = child.stdout.take() {
            let log = stderr.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                    if let Ok(mut log) = log.lock() {
                        log.push_str(&line);
                        log.push('\n');
                    }
                    if line.starts_with("task-proxy listening") {
                        let _ = tx.send(line);
                    }
                }
            });
        }
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "task-proxy did not start: {}",
                    stderr.lock().map(|s| s.clone()).unwrap_or_default()
                );
            }
        };
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .and_then(|a| a.parse().ok())
        };
        let proxy = Proxy {
            plain: field("plain=").expect("plain address"),
            admin: field("admin=").expect("admin address"),
            tls: field("tls="),
            child,
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while proxy.admin_get("/readyz").0 != 200 {
            assert!(Instant::now() < deadline, "task-proxy never became ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        proxy
    }

    /// A blocking `GET` on the admin listener: (status, body). Status 0 when it cannot connect.
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path)
    }

    /// What the proxy wrote so far (stderr and stdout, line by line).
    pub fn log(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The proxy's resident set size in KiB (Linux), if it is running.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }

    /// How many file descriptors the proxy has open (Linux), if it is running.
    pub fn open_fds(&self) -> Option<usize> {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .ok()
            .map(|dir| dir.count())
    }

    /// Sends a signal to the proxy (e.g. `"TERM"`, `"HUP"`) with `kill`.
    pub fn signal(&self, name: &str) {
        let _ = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal blocking HTTP/1.0 GET: (status, body). Status 0 when it cannot connect.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
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

/// The pid of the process listening on TCP `port` (e.g. a job's server): the socket's inode
/// from `/proc/net/tcp`, then the process holding it among `/proc/*/fd`.
pub fn listener_pid(port: u16) -> Option<i32> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let inode = table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port = fields.get(1)?.rsplit(':').next()?;
        let listening = fields.get(3) == Some(&"0A");
        (listening && u16::from_str_radix(local_port, 16).ok()? == port)
            .then(|| fields.get(9).map(|s| s.to_string()))
            .flatten()
    })?;
    let target = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == target) {
                return Some(pid);
            }
        }
    }
    None
}
