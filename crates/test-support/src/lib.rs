//! The integration tests' harness: a task proxy started in process or as the binary
//! ([`Proxy`]), services files ([`ServicesFile`]), the real peer tools (`curl`, the `yt` CLI,
//! found in the workspace's `.venv` made by `scripts/install-test-deps`, then on `PATH`), and
//! waits on observable state with a deadline ([`wait_until`], [`wait_for`]).

#![forbid(unsafe_code)]

pub mod proxy;
pub mod services;
pub mod tools;
pub mod wait;

pub use proxy::{http_get, Proxy, ProxyBuilder, BASE_DOMAIN};
pub use services::{write_services, ServicesFile};
pub use tools::{
    body_of, curl, curl_async, output_text, signal_process, status_of, tool, workspace_root, yt,
    yt_async, yt_command,
};
pub use wait::{wait_for, wait_for_port, wait_until};

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
