//! `task-proxy serve --yt-proxy ...` end to end, default discovery period: the binary discovers the quick-start operation
//! on the dev cluster (submitted with the real `yt` CLI) and forwards a request to its job by
//! the service's domain; discovery's metrics are on the admin listener.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use task_proxy::routing::service_hash;
use yt_devcluster::{DevCluster, DevClusterConfig};

struct Proxy(std::process::Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-m", "5", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_discovers_and_forwards_to_the_quick_start_operation() {
    let cluster = DevCluster::start(DevClusterConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join("token");
    std::fs::write(&token_path, "robot-token\n").unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_task-proxy"))
        .args([
            "serve",
            "--yt-proxy",
            &cluster.url(),
            "--yt-token-path",
            token_path.to_str().unwrap(),
            "--base-domain",
            "tp.test",
            "--auth-enabled=false",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--worker-threads",
            "1",
        ])
        .env_remove("YT_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let proxy = Proxy(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
            .to_string()
    };
    let (plain, admin) = (field("plain"), field("admin"));

    let output = tokio::process::Command::new(test_support::tool("yt"))
        .args([
            "vanilla",
            "--tasks",
            r#"{example_http_server={job_count=2; command="python3 -m http.server ${YT_PORT_0}"; port_count=1}}"#,
            "--spec",
            "{annotations={task_proxy={enabled=%true;}}}",
            "--async",
        ])
        .env("YT_PROXY", cluster.url())
        .env("YT_TOKEN", "alice-token")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let op = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let submitted = Instant::now();
    let domain = format!(
        "{}.tp.test",
        service_hash(&op, "example_http_server", "port_0")
    );

    let url = format!("http://{plain}/");
    let host = format!("Host: {domain}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, body) = tokio::task::spawn_blocking({
            let (url, host) = (url.clone(), host.clone());
            move || curl(&["-H", &host, &url])
        })
        .await
        .unwrap();
        if code == 200 {
            assert!(body.contains("Directory listing"), "{body}");
            // With the default period (2 s); the job's own start-up is included.
            eprintln!(
                "forwarded {:?} after the operation was submitted",
                submitted.elapsed()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not forwarded: last answer {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, metrics) = curl(&[&format!("http://{admin}/metrics")]);
    assert_eq!(code, 200);
    assert!(
        metrics.contains("task_proxy_discovery_services 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("task_proxy_discovery_passes_total"),
        "{metrics}"
    );
    let (code, ready) = curl(&[&format!("http://{admin}/readyz")]);
    assert_eq!((code, ready.trim()), (200, "ready"));
    drop(proxy);
    cluster.shutdown().await;
}
