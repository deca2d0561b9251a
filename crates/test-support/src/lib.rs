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
