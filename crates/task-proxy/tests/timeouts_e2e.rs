//! Per-operation timeouts end to end: operations submitted by the real `yt` CLI with
//! `route_timeout_seconds` / `stream_idle_timeout_seconds` in their `task_proxy` annotation,
//! discovered on the dev cluster by the real `task-proxy serve` binary (auth on). A slow
//! streaming response of the operation with a 1 s route timeout is cut at about 1 s, over the
//! HTTP/1.1 relay and over hyper (h2c) alike; the same response of an operation without it is
//! not; `/services` and the status page show the values; an operation with an invalid value
//! is not exposed.

mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::{curl, dev_cluster, start_operation, Proxy, BASE_DOMAIN};
use task_proxy::routing::service_hash;

const ALICE: &str = "Authorization: OAuth alice-token";

/// A job's server: `/slow` streams `part0`..`part5`, one chunk every 0.5 s (3 s in all);
/// anything else answers `ok` at once.
const JOB: &str = r#"
import os, socket, threading, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", int(os.environ["YT_PORT_0"])))
s.listen(64)
def serve(c):
    f = c.makefile("rb")
    while True:
        first = f.readline()
        if not first:
            return
        while f.readline() not in (b"\r\n", b"\n", b""):
            pass
        if b"/slow" in first:
            c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(6):
                chunk = ("part%d\n" % i).encode()
                c.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                time.sleep(0.5)
            c.sendall(b"0\r\n\r\n")
        else:
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

fn tasks(script: &std::path::Path) -> String {
    format!(
        r#"{{main={{job_count=1; command="python3 {}"; port_count=1}}}}"#,
        script.display()
    )
}

fn spec(timeouts: &str) -> String {
    format!("{{annotations={{task_proxy={{enabled=%true; {timeouts} tasks_info={{main={{web={{port_index=0}}}}}}}}}}}}")
}

/// (body, seconds taken) of `GET path` on `op`'s `web` service.
fn fetch(proxy: &Proxy, protocol: &str, op: &str, path: &str) -> (String, Duration) {
    let host = format!("Host: {}.{BASE_DOMAIN}", service_hash(op, "main", "web"));
    let url = format!("http://{}{path}", proxy.plain);
    let started = Instant::now();
    let (_, body) = curl(&[protocol, "--max-time", "20", "-H", &host, "-H", ALICE, &url]);
    (body, started.elapsed())
}

fn services(proxy: &Proxy) -> Vec<Value> {
    let (_, body) = curl(&[&format!("http://{}/services", proxy.admin)]);
    let json: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    json["services"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_operation_route_timeout_cuts_only_its_operation() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("job.py");
    std::fs::write(&script, JOB).unwrap();
    let cluster = dev_cluster().await;
    let proxy = support::discovering_proxy(
        &cluster.url(),
        &["--discovery-period-seconds".into(), "1".into()],
    );
    let tasks = tasks(&script);
    let timed = start_operation(
        &cluster,
        &tasks,
        &spec("route_timeout_seconds=1; stream_idle_timeout_seconds=30;"),
    );
    let untimed = start_operation(&cluster, &tasks, &spec(""));
    let invalid = start_operation(&cluster, &tasks, &spec("route_timeout_seconds=-1;"));

    // Wait for discovery and the jobs' servers.
    let deadline = Instant::now() + Duration::from_secs(30);
    for op in [&timed, &untimed] {
        loop {
            if fetch(&proxy, "--http1.1", op, "/").0 == "ok" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{op} never answered: {:?}",
                services(&proxy)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    for protocol in ["--http1.1", "--http2-prior-knowledge"] {
        let (body, took) = fetch(&proxy, protocol, &timed, "/slow");
        assert!(body.contains("part0"), "{protocol}: {body}");
        assert!(!body.contains("part5"), "{protocol}: not cut: {body}");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
            "{protocol}: cut after {took:?}"
        );
        let (body, took) = fetch(&proxy, protocol, &untimed, "/slow");
        assert!(body.contains("part5"), "{protocol}: {body}");
        assert!(took >= Duration::from_millis(2900), "{took:?}");
    }

    let services = services(&proxy);
    let of = |op: &str| {
        services
            .iter()
            .find(|s| s["operation_id"] == op)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(of(&timed)["route_timeout_seconds"], 1, "{services:?}");
    assert_eq!(of(&timed)["stream_idle_timeout_seconds"], 30);
    assert!(of(&untimed).get("route_timeout_seconds").is_none());
    assert!(of(&untimed).get("stream_idle_timeout_seconds").is_none());
    // The status page shows them too (the untimed operation's services follow the flags).
    let (_, page) = curl(&[&format!("http://{}/", proxy.admin)]);
    assert!(page.contains("<th>timeouts</th>"), "{page}");
    assert!(page.contains("route 1 s, stream idle 30 s"), "{page}");
    assert!(page.contains("<td>flags</td>"), "{page}");
    // As with the original, an invalid value leaves the operation unexposed.
    assert_eq!(of(&invalid), Value::Null, "{services:?}");
    let (_, status) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        &format!(
            "Host: {}.{BASE_DOMAIN}",
            service_hash(&invalid, "main", "web")
        ),
        "-H",
        ALICE,
        &format!("http://{}/", proxy.plain),
    ]);
    assert_eq!(status, "404");
}
