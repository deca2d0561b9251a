//! Process lifecycle: dropping the handle kills job processes; the `yt-devcluster` binary with
//! a users file, the HTTP synthetic-load endpoint, and SIGTERM cleanup.

mod common;

use common::*;
use std::io::BufRead;
use std::time::Duration;

async fn start_sleepers(cluster: &yt_devcluster::DevCluster, token: &str) -> String {
    let body = r#"{"operation_type": "vanilla", "spec": {"title": "sleepers", "tasks": {"s": {"command": "sleep 1000", "job_count": 2, "port_count": 2}}}}"#;
    let r = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Authorization: OAuth {token}"),
        "-H",
        "Content-Type: application/json",
        "-d",
        body,
        &format!("{}/api/v4/start_operation", cluster.url()),
    ])
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["operation_id"]
        .as_str()
        .expect("operation_id")
        .to_string()
}

async fn job_pids(cluster: &yt_devcluster::DevCluster, op: &str) -> Vec<i64> {
    let jobs = wait_for("two running jobs", Duration::from_secs(20), || async {
        let jobs = running_jobs(cluster, op).await;
        (jobs.len() == 2).then_some(jobs)
    })
    .await;
    let mut pids = Vec::new();
    for (job, address) in jobs {
        let path =
            format!("//sys/exec_nodes/{address}/orchid/exec_node/job_controller/active_jobs/{job}");
        let node = api(cluster, "root-token", "get", &format!("path={path}"))
            .await
            .json();
        assert_eq!(
            node["value"]["job_ports"].as_array().map(Vec::len),
            Some(2),
            "{node}"
        );
        pids.push(node["value"]["pid"].as_i64().expect("pid"));
    }
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_cluster_kills_jobs() {
    let cluster = start(None).await;
    let op = start_sleepers(&cluster, "bob-token").await;
    let got = api(
        &cluster,
        "bob-token",
        "get_operation",
        &format!("operation_id={op}"),
    )
    .await
    .json();
    assert_eq!(got["brief_spec"]["title"], "sleepers");
    let pids = job_pids(&cluster, &op).await;
    assert!(pids.iter().all(|&p| alive(p)));
    drop(cluster);
    for pid in pids {
        wait_for("jobs to die on drop", Duration::from_secs(5), || async {
            (!alive(pid)).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_with_users_file_and_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let users = dir.path().join("users.json");
    std::fs::write(
        &users,
        r#"{"users": [{"name": "carol", "tokens": ["carol-token"], "operations_permissions": ["read"]}]}"#,
    )
    .expect("write users");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_yt-devcluster"))
        .args(["--listen", "127.0.0.1:0", "--users"])
        .arg(&users)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufReader::new(stdout).lines();
    let first = lines.next().expect("a banner").expect("utf-8");
    assert!(first.contains("DEVELOPMENT cluster"), "{first}");
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("an address in the banner")
        .to_string();
    let banner: Vec<String> = lines.by_ref().take(7).map_while(Result::ok).collect();
    assert!(banner.iter().any(|l| l.contains("carol")), "{banner:?}");

    let out = tokio::process::Command::new(test_support::tool("yt"))
        .arg("whoami")
        .env("YT_PROXY", &url)
        .env("YT_TOKEN", "carol-token")
        .output()
        .await
        .expect("yt runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "carol");

    // Bulk load over HTTP, then the new user reads them.
    let r = curl(&[
        "-X",
        "POST",
        "-d",
        r#"{"operations": 50, "jobs_per_operation": 2}"#,
        &format!("{url}/devcluster/synthetic"),
    ])
    .await;
    assert_eq!(r.json()["jobs"], 100);
    let r = curl(&[
        "-H",
        "Authorization: OAuth carol-token",
        &format!("{url}/api/v4/list_operations?limit=10"),
    ])
    .await;
    assert_eq!(r.json()["operations"].as_array().map(Vec::len), Some(10));
    assert_eq!(r.json()["state_counts"]["running"], 50);

    // A real job, then SIGTERM: the binary stops it and exits.
    let body = r#"{"spec": {"tasks": {"s": {"command": "sleep 1000"}}}}"#;
    let r = curl(&[
        "-X",
        "POST",
        "-H",
        "Authorization: OAuth carol-token",
        "-H",
        "Content-Type: application/json",
        "-d",
        body,
        &format!("{url}/api/v4/start_operation"),
    ])
    .await;
    let op = r.json()["operation_id"]
        .as_str()
        .expect("operation_id")
        .to_string();
    let pid = wait_for("the job", Duration::from_secs(20), || async {
        let jobs = curl(&[
            "-H",
            "Authorization: OAuth carol-token",
            &format!("{url}/api/v4/list_jobs?operation_id={op}&job_state=running"),
        ])
        .await
        .json();
        let job = jobs["jobs"][0].clone();
        let path = format!(
            "//sys/exec_nodes/{}/orchid/exec_node/job_controller/active_jobs/{}/pid",
            job["address"].as_str()?,
            job["id"].as_str()?
        );
        let r = curl(&[
            "-H",
            "Authorization: OAuth carol-token",
            &format!("{url}/api/v4/get?path={path}"),
        ])
        .await;
        r.json()["value"].as_i64()
    })
    .await;
    assert!(alive(pid));
    // SAFETY: signalling the child this test started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the binary did not exit on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    assert!(!alive(pid), "the job died with the cluster");
}

/// The cluster has its own runtime: a single-threaded test may block on the CLI.
#[tokio::test]
async fn blocking_callers_on_a_current_thread_runtime() {
    let cluster = start(None).await;
    let out = std::process::Command::new(test_support::tool("yt"))
        .args(["list", "/"])
        .env("YT_PROXY", cluster.url())
        .env("YT_TOKEN", "root-token")
        .output()
        .expect("yt runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("home"));
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clusters_started_at_once_keep_their_sandboxes_apart() {
    // Tests start clusters at the same moment; one dropped must not remove another's jobs'
    // sandboxes (a job serving its working directory then answers 404).
    let starts = (0..16).map(|_| {
        tokio::spawn(yt_devcluster::DevCluster::start(
            yt_devcluster::DevClusterConfig::default(),
        ))
    });
    let mut clusters = Vec::new();
    for start in starts {
        clusters.push(start.await.expect("task").expect("start"));
    }
    let dirs: std::collections::HashSet<std::path::PathBuf> = clusters
        .iter()
        .map(|c| c.work_dir().to_path_buf())
        .collect();
    assert_eq!(dirs.len(), clusters.len(), "two clusters share a directory");
    let first = clusters.remove(0);
    let gone = first.work_dir().to_path_buf();
    drop(first);
    assert!(!gone.exists());
    for cluster in &clusters {
        assert!(
            cluster.work_dir().is_dir(),
            "{:?} removed",
            cluster.work_dir()
        );
    }
}
