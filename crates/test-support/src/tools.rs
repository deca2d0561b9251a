//! The real peer tools the tests drive: `curl` and the `yt` CLI, found in the workspace's
//! `.venv` (made by `scripts/install-test-deps`), then on `PATH`.

use std::path::{Path, PathBuf};
use std::process::Command;

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

/// Runs curl with `args` (plus `-s`); returns (exit code, stdout). Blocking.
pub fn curl(args: &[&str]) -> (i32, String) {
    let output = Command::new(tool("curl"))
        .arg("-s")
        .args(args)
        .output()
        .expect("run curl");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// The HTTP status curl got for `url` with extra `args` (0 when it got none). Blocking.
pub fn status_of(url: &str, args: &[&str]) -> u16 {
    let mut all = vec!["-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20"];
    all.extend_from_slice(args);
    all.push(url);
    let (_, out) = curl(&all);
    out.trim().parse().unwrap_or(0)
}

/// Runs curl without blocking the runtime; returns (status code, headers+body text). The
/// text ends with a tab and `<http version> <bytes downloaded>` (from curl's `-w`), so a test
/// can check the protocol and the size it got; [`body_of`] strips them.
pub async fn curl_async(args: &[&str]) -> (u16, String) {
    let out = tokio::process::Command::new(tool("curl"))
        .args([
            "-sS",
            "--max-time",
            "20",
            "-w",
            "\n%{http_code} %{http_version} %{size_download}",
        ])
        .args(args)
        .output()
        .await
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, info) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let mut info = info.split_whitespace();
    let code = info.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    let rest: Vec<&str> = info.collect();
    (code, format!("{body}\t{}", rest.join(" ")))
}

/// The part of a [`curl_async`] text before the trailing curl info.
pub fn body_of(text: &str) -> &str {
    text.rsplit_once('\t').map_or(text, |(body, _)| body)
}

/// Runs the real `yt` CLI against the cluster at `proxy_url` as the holder of `token`;
/// returns its trimmed stdout, and panics with its stderr when it fails. Blocking.
pub fn yt(proxy_url: &str, token: &str, args: &[&str]) -> String {
    let output = yt_command(proxy_url, token)
        .args(args)
        .output()
        .expect("run yt");
    succeeded(args, &output)
}

/// A `yt` command set up for the cluster at `proxy_url` and `token`, for a test that needs
/// more than [`yt`] (stdin, an expected failure, async).
pub fn yt_command(proxy_url: &str, token: &str) -> Command {
    let mut command = Command::new(tool("yt"));
    command
        .env("YT_PROXY", proxy_url)
        .env("YT_TOKEN", token)
        .env_remove("YT_CONFIG_PATCHES");
    command
}

/// [`yt`] without blocking the runtime (the process is killed if the future is dropped).
pub async fn yt_async(proxy_url: &str, token: &str, args: &[&str]) -> String {
    let mut command = tokio::process::Command::from(yt_command(proxy_url, token));
    let output = command
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run yt");
    succeeded(args, &output)
}

/// The trimmed stdout of a `yt` run that must have succeeded (its stderr in the panic if not).
fn succeeded(args: &[&str], output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "yt {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A finished process's stdout followed by its stderr, as text (for messages and checks that
/// do not care which stream a line went to).
pub fn output_text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Sends signal `name` (`"KILL"`, `"INT"`, `"TERM"`, `"HUP"`) to process `pid` with `kill`;
/// whether it was delivered.
pub fn signal_process(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|status| status.success())
}
