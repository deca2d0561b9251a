//! The dev cluster driven by the real `yt` CLI (ytsaurus-client) and curl: the user guide's
//! quick start, job ports through the orchid, ACLs, credentials, job restarts, abort, files,
//! tables, errors, knobs and synthetic bulk load.

mod common;

use common::*;
use std::time::{Duration, Instant};

const QUICK_START_TASKS: &str = r#"{example_http_server={job_count=2; command="python3 -m http.server ${YT_PORT_0}"; port_count=1}}"#;
const QUICK_START_SPEC: &str = "{annotations={task_proxy={enabled=%true;}}}";

/// Reads a job's port 0 and pid from the orchid with the CLI.
async fn orchid_job(cluster: &yt_devcluster::DevCluster, address: &str, job: &str) -> (u16, i64) {
    let base =
        format!("//sys/exec_nodes/{address}/orchid/exec_node/job_controller/active_jobs/{job}");
    let ports = yt_ok(
        cluster,
        "robot-token",
        &["get", &format!("{base}/job_ports"), "--format", "json"],
    )
    .await;
    let ports: Vec<u16> = serde_json::from_str(ports.trim()).expect("job_ports is a JSON list");
    assert_eq!(ports.len(), 1, "one port per job");
    let pid = api(cluster, "robot-token", "get", &format!("path={base}/pid"))
        .await
        .json()["value"]
        .as_i64()
        .expect("pid in the orchid");
    (ports[0], pid)
}

/// GETs `/` of a job's HTTP server on its node's host.
async fn job_serves(address: &str, port: u16) -> bool {
    let host = address.split(':').next().unwrap_or("127.0.0.1");
    let r = curl(&[&format!("http://{host}:{port}/")]).await;
    r.status == 200 && r.body.contains("stderr")
}

async fn wait_two_running(cluster: &yt_devcluster::DevCluster, op: &str) -> Vec<(String, String)> {
    wait_for("two running jobs", Duration::from_secs(20), || async {
        let jobs = running_jobs(cluster, op).await;
        (jobs.len() == 2).then_some(jobs)
    })
    .await
}

async fn check_permission(
    cluster: &yt_devcluster::DevCluster,
    op: &str,
    user: &str,
    permission: &str,
) -> String {
    let params = format!("{{operation_id=\"{op}\";user=\"{user}\";permission={permission}}}");
    let out = yt_ok(
        cluster,
        "robot-token",
        &["execute", "check_operation_permission", &params],
    )
    .await;
    if out.contains("\"allow\"") {
        "allow".into()
    } else if out.contains("\"deny\"") {
        "deny".into()
    } else {
        panic!("unexpected answer {out}")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_async_ports_acl_restart_and_abort() {
    let cluster = start(None).await;
    let op = yt_ok(
        &cluster,
        "alice-token",
        &[
            "vanilla",
            "--tasks",
            QUICK_START_TASKS,
            "--spec",
            QUICK_START_SPEC,
            "--async",
        ],
    )
    .await;
    let op = op.trim().to_string();
    assert!(yt_devcluster::is_yt_id(&op), "operation id {op:?}");

    // The operation as discovery sees it.
    let got = yt_ok(
        &cluster,
        "robot-token",
        &["get-operation", &op, "--format", "json"],
    )
    .await;
    let got: serde_json::Value = serde_json::from_str(&got).expect("json");
    assert_eq!(got["state"], "running");
    assert_eq!(got["authenticated_user"], "alice");
    assert_eq!(
        got["runtime_parameters"]["annotations"]["task_proxy"]["enabled"],
        true
    );
    assert!(got["start_time"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z') && t.len() == 27));

    // Two jobs on distinct nodes, each serving on the port the orchid reports.
    let jobs = wait_two_running(&cluster, &op).await;
    assert_ne!(jobs[0].1, jobs[1].1, "jobs spread over nodes");
    let listed = yt_ok(
        &cluster,
        "alice-token",
        &["list-jobs", &op, "--format", "json"],
    )
    .await;
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("json");
    let first = &listed["jobs"][0];
    assert_eq!(first["type"], "vanilla");
    assert_eq!(first["task_name"], "example_http_server");
    let mut pids = Vec::new();
    let mut ports = Vec::new();
    for (job, address) in &jobs {
        let (port, pid) = orchid_job(&cluster, address, job).await;
        let serving = wait_for("the job serves", Duration::from_secs(15), || async {
            job_serves(address, port).await.then_some(())
        })
        .await;
        let () = serving;
        pids.push(pid);
        ports.push(port);
    }

    // ACL: owner, superuser, robot allowed; bob denied until granted, then revoked.
    assert_eq!(
        check_permission(&cluster, &op, "alice", "read").await,
        "allow"
    );
    assert_eq!(
        check_permission(&cluster, &op, "root", "manage").await,
        "allow"
    );
    assert_eq!(
        check_permission(&cluster, &op, "robot-task-proxy", "read").await,
        "allow"
    );
    assert_eq!(
        check_permission(&cluster, &op, "robot-task-proxy", "manage").await,
        "deny"
    );
    assert_eq!(check_permission(&cluster, &op, "bob", "read").await, "deny");
    yt_ok(
        &cluster,
        "alice-token",
        &[
            "update-op-parameters",
            &op,
            "{acl=[{action=allow;subjects=[bob];permissions=[read]}]}",
        ],
    )
    .await;
    assert_eq!(
        check_permission(&cluster, &op, "bob", "read").await,
        "allow"
    );
    assert_eq!(
        check_permission(&cluster, &op, "bob", "manage").await,
        "deny"
    );
    yt_ok(
        &cluster,
        "alice-token",
        &["update-op-parameters", &op, "{acl=[]}"],
    )
    .await;
    assert_eq!(check_permission(&cluster, &op, "bob", "read").await, "deny");
    let denied = yt(&cluster, "bob-token", &["abort-op", &op], None)
        .await
        .expect_err();
    assert!(denied.contains("Access denied"), "{denied}");

    // Credentials: tokens, bearer, cookie; unknown and missing ones get 401.
    assert_eq!(
        yt_ok(&cluster, "bob-token", &["whoami"]).await.trim(),
        "bob"
    );
    let bad = yt(&cluster, "wrong-token", &["list", "/"], None)
        .await
        .expect_err();
    assert!(bad.contains("unknown token"), "{bad}");
    let whoami = format!("{}/auth/whoami", cluster.url());
    let r = curl(&["-X", "POST", &whoami]).await;
    assert_eq!(r.status, 401);
    assert!(r.headers.to_ascii_lowercase().contains("x-yt-error"));
    let r = curl(&["-X", "POST", "-H", "Authorization: bearer bob-iam", &whoami]).await;
    assert_eq!(r.json()["login"], "bob");
    let r = curl(&[
        "-H",
        "Cookie: YTCypressCookie=alice-cookie",
        &format!("{}/api/v4/get_current_user", cluster.url()),
    ])
    .await;
    assert_eq!(r.json()["user"], "alice");

    // A job that dies is replaced: new id, new port, still serving.
    let (old_job, _) = jobs[0].clone();
    // SAFETY: signalling a process this test's cluster started.
    unsafe {
        libc::kill(pids[0] as i32, libc::SIGKILL);
    }
    let replacement = wait_for("a replacement job", Duration::from_secs(20), || async {
        let now = running_jobs(&cluster, &op).await;
        (now.len() == 2 && now.iter().all(|(id, _)| *id != old_job))
            .then(|| now.into_iter().find(|(id, _)| *id != jobs[1].0))
            .flatten()
    })
    .await;
    let (new_port, new_pid) = orchid_job(&cluster, &replacement.1, &replacement.0).await;
    assert!(
        !ports.contains(&new_port),
        "a restarted job gets a new port"
    );
    wait_for(
        "the replacement serves",
        Duration::from_secs(15),
        || async { job_serves(&replacement.1, new_port).await.then_some(()) },
    )
    .await;
    pids.push(new_pid);

    // Abort kills every job process.
    yt_ok(&cluster, "alice-token", &["abort-op", &op]).await;
    let state = yt_ok(
        &cluster,
        "alice-token",
        &[
            "get-operation",
            &op,
            "--attribute",
            "state",
            "--format",
            "json",
        ],
    )
    .await;
    assert!(state.contains("aborted"), "{state}");
    for pid in pids {
        wait_for("job processes to die", Duration::from_secs(10), || async {
            (!alive(pid)).then_some(())
        })
        .await;
    }
    assert_eq!(cluster.live_job_count(), 0);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_tracked_and_shutdown_kills_jobs() {
    let cluster = start(None).await;
    let mut tracker = tokio::process::Command::new(test_support::tool("yt"))
        .args([
            "vanilla",
            "--tasks",
            QUICK_START_TASKS,
            "--spec",
            QUICK_START_SPEC,
        ])
        .env("YT_PROXY", cluster.url())
        .env("YT_TOKEN", "alice-token")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("yt starts");
    let op = wait_for("the tracked operation", Duration::from_secs(30), || async {
        let r = api(&cluster, "root-token", "list_operations", "state=running").await;
        r.json()["operations"][0]["id"].as_str().map(str::to_string)
    })
    .await;
    let jobs = wait_two_running(&cluster, &op).await;
    // The CLI keeps tracking (it polls get_operation).
    wait_for("the CLI to poll", Duration::from_secs(40), || async {
        (cluster
            .request_counts()
            .get("get_operation")
            .copied()
            .unwrap_or(0)
            >= 2)
            .then_some(())
    })
    .await;
    let mut pids = Vec::new();
    for (job, address) in &jobs {
        let (port, pid) = orchid_job(&cluster, address, job).await;
        wait_for("the job serves", Duration::from_secs(15), || async {
            job_serves(address, port).await.then_some(())
        })
        .await;
        pids.push(pid);
    }
    assert!(
        tracker.try_wait().expect("poll").is_none(),
        "the CLI still tracks"
    );
    tracker.kill().await.expect("kill the CLI");
    cluster.shutdown().await;
    for pid in pids {
        wait_for(
            "jobs to die at shutdown",
            Duration::from_secs(10),
            || async { (!alive(pid)).then_some(()) },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_tables_and_cypress() {
    let work = tempfile::tempdir().expect("tempdir");
    let cluster = start(Some(work.path().to_path_buf())).await;
    let script = b"#!/bin/sh\necho hello-from-some-binary\n";
    yt(
        &cluster,
        "alice-token",
        &["write-file", "//home/some-binary"],
        Some(script),
    )
    .await
    .expect_ok();
    assert_eq!(
        yt_ok(
            &cluster,
            "alice-token",
            &["read-file", "//home/some-binary"]
        )
        .await
        .as_bytes(),
        script
    );
    let tasks = r#"{runner={job_count=1; command="./some-binary > out.txt; sleep 600"; file_paths=["//home/some-binary"]}}"#;
    let op = yt_ok(
        &cluster,
        "alice-token",
        &["vanilla", "--tasks", tasks, "--async"],
    )
    .await;
    let op = op.trim().to_string();
    let out = wait_for("the job's output", Duration::from_secs(20), || async {
        let dir = work.path().join(&op);
        let job = std::fs::read_dir(&dir).ok()?.next()?.ok()?.path();
        let text = std::fs::read_to_string(job.join("out.txt")).ok()?;
        (!text.is_empty()).then_some(text)
    })
    .await;
    assert_eq!(out, "hello-from-some-binary\n");
    yt_ok(&cluster, "alice-token", &["abort-op", &op]).await;

    // Cypress basics.
    yt_ok(
        &cluster,
        "alice-token",
        &["create", "map_node", "//home/project/dir", "--recursive"],
    )
    .await;
    yt_ok(
        &cluster,
        "alice-token",
        &["set", "//home/project/@owner_team", "\"search\""],
    )
    .await;
    let v = yt_ok(
        &cluster,
        "alice-token",
        &["get", "//home/project/@owner_team", "--format", "json"],
    )
    .await;
    assert_eq!(v.trim(), "\"search\"");
    assert_eq!(
        yt_ok(&cluster, "alice-token", &["exists", "//home/project/dir"])
            .await
            .trim(),
        "true"
    );
    let listed = yt_ok(&cluster, "alice-token", &["list", "//home"]).await;
    assert!(
        listed.contains("project") && listed.contains("some-binary"),
        "{listed}"
    );
    yt_ok(
        &cluster,
        "alice-token",
        &["create", "document", "//home/project/doc"],
    )
    .await;
    yt_ok(
        &cluster,
        "alice-token",
        &["set", "//home/project/doc", "{a={b=[1;2]}}"],
    )
    .await;
    let v = yt_ok(
        &cluster,
        "alice-token",
        &["get", "//home/project/doc/a/b/1", "--format", "json"],
    )
    .await;
    assert_eq!(v.trim(), "2");
    yt_ok(
        &cluster,
        "alice-token",
        &["remove", "//home/project", "--recursive"],
    )
    .await;
    assert_eq!(
        yt_ok(&cluster, "alice-token", &["exists", "//home/project"])
            .await
            .trim(),
        "false"
    );

    // Tables: schema attribute, JSON and YSON formats.
    yt_ok(
        &cluster,
        "alice-token",
        &[
            "create",
            "table",
            "//home/t",
            "--attributes",
            "{schema=[{name=a;type=int64};{name=b;type=string}]}",
        ],
    )
    .await;
    let schema = yt_ok(
        &cluster,
        "alice-token",
        &["get", "//home/t/@schema", "--format", "json"],
    )
    .await;
    assert!(schema.contains("\"int64\""), "{schema}");
    yt(
        &cluster,
        "alice-token",
        &["write-table", "//home/t", "--format", "json"],
        Some(b"{\"a\":1,\"b\":\"x\"}\n{\"a\":2,\"b\":\"y\"}\n"),
    )
    .await
    .expect_ok();
    let rows = yt_ok(
        &cluster,
        "alice-token",
        &["read-table", "//home/t", "--format", "json"],
    )
    .await;
    assert_eq!(rows, "{\"a\":1,\"b\":\"x\"}\n{\"a\":2,\"b\":\"y\"}\n");
    // Without the YSON C bindings the client can only stream YSON with retries off.
    let no_retries = [
        "--config",
        "{write_retries={enable=%false};read_retries={enable=%false}}",
    ];
    let mut args = vec!["write-table", "<append=%true>//home/t", "--format", "yson"];
    args.extend(no_retries);
    yt(&cluster, "alice-token", &args, Some(b"{a=3;b=\"z\"};\n"))
        .await
        .expect_ok();
    let mut args = vec!["read-table", "//home/t", "--format", "yson"];
    args.extend(no_retries);
    let rows = yt(&cluster, "alice-token", &args, None).await.expect_ok();
    assert!(rows.contains("\"a\"=3;\"b\"=\"z\""), "{rows}");
    assert!(rows.matches(';').count() >= 3, "{rows}");
    let count = yt_ok(&cluster, "alice-token", &["get", "//home/t/@row_count"]).await;
    assert_eq!(count.trim(), "3");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_yt_shaped() {
    let cluster = start(None).await;
    let missing = yt(&cluster, "alice-token", &["get", "//home/missing"], None)
        .await
        .expect_err();
    assert!(
        missing.contains("has no child with key \"missing\""),
        "{missing}"
    );
    assert!(missing.contains("code            500"), "{missing}");
    let exists = yt(
        &cluster,
        "alice-token",
        &["create", "map_node", "//home"],
        None,
    )
    .await
    .expect_err();
    assert!(exists.contains("already exists"), "{exists}");
    assert_eq!(
        yt_ok(&cluster, "alice-token", &["exists", "//home/missing"])
            .await
            .trim(),
        "false"
    );
    let unknown = yt(
        &cluster,
        "alice-token",
        &["execute", "no_such_command", "{}"],
        None,
    )
    .await
    .expect_err();
    assert!(unknown.contains("no_such_command"), "{unknown}");

    // Directly over HTTP.
    let r = api(&cluster, "alice-token", "no_such_command", "").await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"]
        .as_str()
        .is_some_and(|m| m.contains("no_such_command")));
    let url = format!("{}/api/v4/get", cluster.url());
    let r = curl(&[
        "-H",
        "Authorization: OAuth alice-token",
        "-H",
        "X-YT-Header-Format: <format=text>yson",
        "-H",
        "X-YT-Parameters: {path=\"//home\";",
        &url,
    ])
    .await;
    assert_eq!(r.status, 400);
    let message = r.json()["message"].as_str().unwrap_or_default().to_string();
    assert!(
        message.contains("X-YT-Parameters") && message.contains("YSON"),
        "{message}"
    );
    let err_header = r
        .headers
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("x-yt-error:"));
    assert!(err_header.is_some(), "{}", r.headers);
    let r = curl(&[
        "-H",
        "Authorization: OAuth alice-token",
        "-H",
        "X-YT-Header-Format: <format=text>yson",
        "-H",
        "X-YT-Output-Format: <format=text>yson",
        &format!("{}/api/v4/get?path=//sys/exec_nodes", cluster.url()),
    ])
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.body.starts_with("{\"value\"={\"127.0.0.1:9012\"=#;"),
        "{}",
        r.body
    );
    let r = api(&cluster, "alice-token", "get", "path=//home/missing").await;
    assert_eq!(r.json()["code"], 500);
    let r = api(&cluster, "alice-token", "list_operations", "limit=lots").await;
    assert!(r.json()["message"]
        .as_str()
        .is_some_and(|m| m.contains("limit")));
    let r = api(
        &cluster,
        "alice-token",
        "get_operation",
        "operation_id=1-2-3-4",
    )
    .await;
    assert_eq!(r.json()["code"], 1915);
    let r = curl(&[&format!("{}/", cluster.url())]).await;
    assert!(
        r.body.contains("DEVELOPMENT cluster") && r.body.contains("alice-token"),
        "{}",
        r.body
    );
    let r = curl(&[&format!("{}/api/v4", cluster.url())]).await;
    for d in r.json().as_array().expect("descriptors") {
        let keys: Vec<&String> = d.as_object().expect("object").keys().collect();
        assert_eq!(
            keys,
            [
                "input_type",
                "is_heavy",
                "is_volatile",
                "name",
                "output_type"
            ]
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knobs_and_request_counts() {
    let cluster = start(None).await;
    cluster.reset_request_counts();
    assert_eq!(
        yt_ok(&cluster, "alice-token", &["whoami"]).await.trim(),
        "alice"
    );
    assert!(
        cluster
            .request_counts()
            .get("get_current_user")
            .copied()
            .unwrap_or(0)
            >= 1
    );
    let whoami = format!("{}/auth/whoami", cluster.url());
    let r = curl(&[
        "-X",
        "POST",
        "-H",
        "Authorization: OAuth alice-token",
        &whoami,
    ])
    .await;
    assert_eq!(r.json()["login"], "alice");
    assert_eq!(cluster.request_counts().get("whoami").copied(), Some(1));
    cluster.knobs().set(
        "get_current_user",
        yt_devcluster::CommandKnob {
            error_rate: 1.0,
            ..Default::default()
        },
    );
    let r = api(&cluster, "alice-token", "get_current_user", "").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["code"], 105);
    let knobs_url = format!("{}/devcluster/knobs", cluster.url());
    let r = curl(&[
        "-X",
        "POST",
        "-d",
        r#"{"*": {"latency_ms": 300}}"#,
        &knobs_url,
    ])
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let started = Instant::now();
    let r = api(&cluster, "alice-token", "get_current_user", "").await;
    assert_eq!(r.json()["user"], "alice");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let r = curl(&[
        "-X",
        "POST",
        "-d",
        r#"{"whoami": {"refuse": true}}"#,
        &knobs_url,
    ])
    .await;
    assert_eq!(r.status, 200);
    let r = curl(&[
        "-X",
        "POST",
        "-H",
        "Authorization: OAuth alice-token",
        &format!("{}/auth/whoami", cluster.url()),
    ])
    .await;
    assert_eq!(r.status, 0, "the connection is refused without an answer");
    cluster.knobs().set(
        "get_current_user",
        yt_devcluster::CommandKnob {
            hang: true,
            hang_ms: Some(30_000),
            ..Default::default()
        },
    );
    let hung = curl(&[
        "--max-time",
        "1",
        "-H",
        "Authorization: OAuth alice-token",
        &format!("{}/api/v4/get_current_user", cluster.url()),
    ])
    .await;
    assert_eq!(hung.status, 0, "a hung command does not answer in time");
    cluster.knobs().clear();
    let stats = curl(&[&format!("{}/devcluster/stats", cluster.url())])
        .await
        .json();
    assert!(
        stats["request_counts"]["get_current_user"]
            .as_u64()
            .unwrap_or(0)
            >= 2,
        "{stats}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_bulk_load_pages_fast() {
    let cluster = start(None).await;
    let started = Instant::now();
    let summary = cluster
        .add_synthetic_operations(yt_devcluster::SyntheticLoad {
            operations: 10_000,
            jobs_per_operation: 10,
            ..Default::default()
        })
        .expect("synthetic load");
    let load_time = started.elapsed();
    // Finished operations do not slow down pages of running ones.
    cluster
        .add_synthetic_operations(yt_devcluster::SyntheticLoad {
            operations: 2_000,
            state: "completed".into(),
            ..Default::default()
        })
        .expect("finished operations");
    assert_eq!(summary.operations, 10_000);
    assert_eq!(summary.jobs, 100_000);
    assert!(
        load_time < Duration::from_secs(10),
        "load took {load_time:?}"
    );

    // Page through all running operations, newest first, as discovery does.
    let mut cursor: Option<String> = None;
    let mut seen = std::collections::HashSet::new();
    let mut slowest = Duration::ZERO;
    loop {
        let mut query = "state=running&limit=100&cursor_direction=past&attributes=%5B%22id%22%3B%22start_time%22%3B%22runtime_parameters%22%5D".to_string();
        if let Some(c) = &cursor {
            query.push_str(&format!("&cursor_time={c}"));
        }
        let t = Instant::now();
        let page = api(&cluster, "robot-token", "list_operations", &query)
            .await
            .json();
        slowest = slowest.max(t.elapsed());
        let ops = page["operations"].as_array().expect("operations").clone();
        for op in &ops {
            assert!(
                seen.insert(op["id"].as_str().expect("id").to_string()),
                "no duplicates"
            );
            assert_eq!(
                op["runtime_parameters"]["annotations"]["task_proxy"]["enabled"],
                true
            );
        }
        if !page["incomplete"].as_bool().expect("incomplete") {
            break;
        }
        let last = ops.last().expect("a full page")["start_time"]
            .as_str()
            .expect("start_time");
        let micros = yt_devcluster::parse_time(last).expect("time") - 1;
        cursor = Some(yt_devcluster::format_time(micros));
    }
    assert_eq!(seen.len(), 10_000);
    eprintln!("synthetic load of 10k operations / 100k jobs: {load_time:?}; slowest list_operations page (with curl): {slowest:?}");
    // curl's own start-up dominates this bound; the server answers in about a millisecond.
    assert!(
        slowest < Duration::from_millis(500),
        "slowest page {slowest:?}"
    );

    // Many orchid reads in one execute_batch.
    let op = summary.first_operation_id.expect("an operation");
    let jobs = api(
        &cluster,
        "robot-token",
        "list_jobs",
        &format!("operation_id={op}&job_state=running"),
    )
    .await
    .json();
    let requests: Vec<serde_json::Value> = jobs["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| {
            serde_json::json!({"command": "get", "parameters": {"path": format!(
                "//sys/exec_nodes/{}/orchid/exec_node/job_controller/active_jobs/{}/job_ports",
                j["address"].as_str().unwrap_or_default(), j["id"].as_str().unwrap_or_default())}})
        })
        .collect();
    assert_eq!(requests.len(), 10);
    let body = serde_json::json!({"requests": requests, "concurrency": 8}).to_string();
    let r = curl(&[
        "-X",
        "POST",
        "-H",
        "Authorization: OAuth robot-token",
        "-H",
        "Content-Type: application/json",
        "-d",
        &body,
        &format!("{}/api/v4/execute_batch", cluster.url()),
    ])
    .await;
    let results = r.json()["results"].as_array().expect("results").clone();
    assert_eq!(results.len(), 10);
    for item in results {
        assert_eq!(
            item["output"]["value"].as_array().map(Vec::len),
            Some(1),
            "{item}"
        );
    }

    // The real CLI lists them too.
    let out = yt_ok(
        &cluster,
        "alice-token",
        &["list-operations", "--limit", "5", "--format", "json"],
    )
    .await;
    let out: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(out["operations"].as_array().map(Vec::len), Some(5));
    cluster.shutdown().await;
}

/// `list_operations` refuses a page over 1000 with the server's error, as the real CLI shows.
#[tokio::test]
async fn list_operations_limit_over_1000_is_refused() {
    let cluster = start(None).await;
    let refused = yt(
        &cluster,
        "alice-token",
        &["list-operations", "--limit", "1001"],
        None,
    )
    .await
    .expect_err();
    assert!(
        refused.contains("Requested result limit (1001) exceeds maximum allowed limit (1000)"),
        "{refused}"
    );
    yt_ok(
        &cluster,
        "alice-token",
        &["list-operations", "--limit", "1000"],
    )
    .await;
    cluster.shutdown().await;
}

/// Transactions and locks through the real CLI: a waitable exclusive lock waits behind the
/// holder and is granted when the holder aborts; a second plain lock fails with the master's
/// conflict error; an expired transaction releases its lock; revisions move on every write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_locks_and_revisions_through_the_cli() {
    let cluster = start(None).await;
    let run = |args: Vec<String>| {
        let cluster = &cluster;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            yt(cluster, "alice-token", &args, None).await
        }
    };
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    run(s(&["create", "map_node", "//tmp/lock", "--recursive"]))
        .await
        .expect_ok();
    let holder = run(s(&["start-tx", "--timeout", "60000"]))
        .await
        .expect_ok();
    let holder = holder.trim().trim_matches('"').to_string();
    let waiter = run(s(&["start-tx", "--timeout", "60000"]))
        .await
        .expect_ok();
    let waiter = waiter.trim().trim_matches('"').to_string();
    run(s(&[
        "lock",
        "//tmp/lock",
        "--mode",
        "exclusive",
        "--tx",
        &holder,
    ]))
    .await
    .expect_ok();
    let refused = run(s(&[
        "lock",
        "//tmp/lock",
        "--mode",
        "exclusive",
        "--tx",
        &waiter,
    ]))
    .await
    .expect_err();
    assert!(
        refused.contains(&format!(
            "Cannot take \"exclusive\" lock for node //tmp/lock since \"exclusive\" lock is taken by concurrent transaction {holder}"
        )),
        "{refused}"
    );
    let lock_id = run(s(&[
        "lock",
        "//tmp/lock",
        "--mode",
        "exclusive",
        "--waitable",
        "--tx",
        &waiter,
    ]))
    .await
    .expect_ok();
    // The CLI prints the answer `{lock_id; node_id; revision}` as a Python dict.
    let lock_id = lock_id
        .split("'lock_id': '")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or_else(|| panic!("no lock_id in {lock_id:?}"))
        .to_string();
    let state = |id: String| run(vec!["get".into(), format!("#{id}/@state")]);
    assert_eq!(
        state(lock_id.clone()).await.expect_ok().trim(),
        "\"pending\""
    );
    // A write outside the holder conflicts.
    run(s(&["set", "//tmp/lock/@x", "1"])).await.expect_err();
    run(s(&["abort-tx", &holder])).await.expect_ok();
    assert_eq!(
        state(lock_id.clone()).await.expect_ok().trim(),
        "\"acquired\""
    );

    // Expiry: a short transaction without pings releases its lock.
    let short = run(s(&["start-tx", "--timeout", "4000"])).await.expect_ok();
    let short = short.trim().trim_matches('"').to_string();
    run(s(&["create", "document", "//tmp/doc"]))
        .await
        .expect_ok();
    run(s(&["lock", "//tmp/doc", "--tx", &short]))
        .await
        .expect_ok();
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let error = run(s(&["ping-tx", &short])).await.expect_err();
    assert!(
        error.contains(&format!("No such transaction {short}")),
        "{error}"
    );
    let locks = run(s(&["get", "//tmp/doc/@locks", "--format", "json"]))
        .await
        .expect_ok();
    assert_eq!(locks.trim(), "[]");

    // Revisions move on every write.
    let revision = || run(s(&["get", "//tmp/doc/@revision"]));
    let before: u64 = revision()
        .await
        .expect_ok()
        .trim()
        .trim_end_matches('u')
        .parse()
        .unwrap();
    run(s(&["set", "//tmp/doc", "{a=1}"])).await.expect_ok();
    let after: u64 = revision()
        .await
        .expect_ok()
        .trim()
        .trim_end_matches('u')
        .parse()
        .unwrap();
    assert!(after > before, "{before} -> {after}");
}
