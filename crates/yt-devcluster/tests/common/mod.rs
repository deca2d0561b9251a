//! Shared helpers of the integration tests: a dev cluster per test, the real `yt` CLI, and a
//! small HTTP client built on `curl`.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use yt_devcluster::{DevCluster, DevClusterConfig};

pub async fn start(work_dir: Option<PathBuf>) -> DevCluster {
    DevCluster::start(DevClusterConfig {
        work_dir,
        ..Default::default()
    })
    .await
    .expect("dev cluster starts")
}

/// The result of one CLI run.
#[derive(Debug)]
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn expect_ok(self) -> String {
        assert!(
            self.ok,
            "yt failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self.stdout
    }

    #[track_caller]
    pub fn expect_err(self) -> String {
        assert!(!self.ok, "yt should have failed:\nstdout: {}", self.stdout);
        self.stderr
    }
}

/// Runs the real `yt` CLI against `cluster` with `token`, with optional stdin.
pub async fn yt(cluster: &DevCluster, token: &str, args: &[&str], input: Option<&[u8]>) -> Run {
    let mut cmd = tokio::process::Command::new(test_support::tool("yt"));
    cmd.args(args)
        .env("YT_PROXY", cluster.url())
        .env("YT_TOKEN", token)
        .env_remove("YT_CONFIG_PATCHES")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("yt starts");
    if let Some(data) = input {
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(data).await.expect("write stdin");
        drop(stdin);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("yt finishes within 60 s")
        .expect("yt runs");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// [`yt`] without stdin that must succeed: its stdout (the arguments, stdout and stderr in the
/// panic if it fails).
pub async fn yt_ok(cluster: &DevCluster, token: &str, args: &[&str]) -> String {
    let run = yt(cluster, token, args, None).await;
    assert!(
        run.ok,
        "yt {args:?} failed:\nstdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    run.stdout
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Http {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Http {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// `curl` with extra arguments; returns status, headers and body.
pub async fn curl(args: &[&str]) -> Http {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-D", "-", "--max-time", "20"])
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Http {
        status,
        headers: headers.to_string(),
        body: body.to_string(),
    }
}

/// A v4 command over HTTP with a token and JSON parameters in the query string.
pub async fn api(cluster: &DevCluster, token: &str, command: &str, query: &str) -> Http {
    let url = format!("{}/api/v4/{command}?{query}", cluster.url());
    curl(&["-H", &format!("Authorization: OAuth {token}"), &url]).await
}

/// Polls `f` until it returns `Some`, or panics after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Running jobs of an operation: (id, address, pid, ports) from list_jobs and the orchid.
pub async fn running_jobs(cluster: &DevCluster, op: &str) -> Vec<(String, String)> {
    let r = api(
        cluster,
        "root-token",
        "list_jobs",
        &format!("operation_id={op}&job_state=running"),
    )
    .await;
    r.json()["jobs"]
        .as_array()
        .map(|jobs| {
            jobs.iter()
                .map(|j| {
                    (
                        j["id"].as_str().unwrap_or_default().to_string(),
                        j["address"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a process exists.
pub fn alive(pid: i64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}
