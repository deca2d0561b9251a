//! The original task proxy's command line and logging configuration on the real binary: the
//! args its chart renders (single-dash, no subcommand) serve; `-logging-config` puts server and
//! access lines in files under its directory and rotates them; bad logging configurations are
//! refused with a clear error and exit code 2; `-route-timeout-seconds` cuts a response that is
//! not complete in time; `-stream-idle-timeout-seconds` cuts a response that stalls and not
//! one that keeps streaming; per-service timeouts (as discovery takes them from an operation's
//! annotation) cut only their own service's responses, over the HTTP/1.1 relay too.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use task_proxy::routing::service_hash;
use test_support::output_text;

const BASE: &str = "tp.test";
const BIN: &str = env!("CARGO_BIN_EXE_task-proxy");

struct Running {
    child: Child,
    plain: String,
    admin: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Running {
    /// Stops the proxy with SIGTERM and waits for it (its log buffers are written out).
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() {
            assert!(Instant::now() < deadline, "the proxy did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = self.log.lock().unwrap().clone();
        log
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary with exactly `args` (no subcommand added) and waits for its listening
/// line on stdout.
fn start(args: &[String]) -> Running {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("YT_TOKEN")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start task-proxy");
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let err = child.stderr.take().unwrap();
    let err_log = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let mut log = err_log.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.starts_with("task-proxy listening") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("task-proxy did not start: {}", log.lock().unwrap()));
    let plain = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("plain="))
        .expect("plain=")
        .to_string();
    let admin = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("admin="))
        .expect("admin=")
        .to_string();
    Running {
        child,
        plain,
        admin,
        log,
    }
}

/// `GET path` with `Host: host`: (status, body as far as it came, whether it was complete).
fn get(addr: &str, host: &str, path: &str, extra: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

/// A job: `/slow` sends its head and then one chunk a second for 5 s; `/stall` sends its head
/// and one chunk, stalls 4 s, then sends the rest; anything else `hello`.
fn job() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut first = String::new();
                    if reader.read_line(&mut first).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap_or(0) > 2 {
                        line.clear();
                    }
                    if first.contains("/stall") {
                        let _ = stream.write_all(
                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nstart\n\r\n",
                        );
                        std::thread::sleep(Duration::from_secs(4));
                        let _ = stream.write_all(b"4\r\nend\n\r\n0\r\n\r\n");
                        return;
                    }
                    if first.contains("/slow") {
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
                        for i in 0..5 {
                            let chunk = format!("part{i}\n");
                            let _ = write!(stream, "{:x}\r\n{chunk}\r\n", chunk.len());
                            std::thread::sleep(Duration::from_secs(1));
                        }
                        let _ = stream.write_all(b"0\r\n\r\n");
                        return;
                    }
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
                }
            });
        }
    });
    addr
}

/// A services file with one service on `job`; returns its domain.
fn services(dir: &Path, job: &str) -> (String, String) {
    let path = dir.join("services.json");
    let services = serde_json::json!({"services": [{
        "operation_id": "1-2-3-4", "task_name": "task", "service": "svc",
        "protocol": "http", "endpoints": [job]}]});
    std::fs::write(&path, services.to_string()).unwrap();
    (
        path.to_string_lossy().into_owned(),
        format!("{}.{BASE}", service_hash("1-2-3-4", "task", "svc")),
    )
}

/// The proxy with the logging config at `config`, started as the original is: single-dash
/// flags and no subcommand.
fn start_with_logging(config: &Path, services_file: &str) -> Running {
    start(&strings(&[
        &format!("-logging-config={}", config.display()),
        "-base-domain",
        BASE,
        "-auth-enabled=false",
        &format!("-services-file={services_file}"),
        "-listen=127.0.0.1:0",
        "-admin-listen=127.0.0.1:0",
        "-worker-threads=1",
    ]))
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Writes `logging.yaml` in `dir` with `directory: <dir>/logs` and then `rest`; the logs
/// directory and the file's path.
fn logging_config(dir: &Path, rest: &str) -> (PathBuf, PathBuf) {
    let config = dir.join("logging.yaml");
    let logs = dir.join("logs");
    std::fs::write(&config, format!("directory: {}\n{rest}", logs.display())).unwrap();
    (logs, config)
}

#[test]
fn logging_config_writes_server_and_access_logs_to_files_and_rotates_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let (services_file, domain) = services(dir.path(), &job());
    let (logs, config) = logging_config(
        dir.path(),
        "server:\n  writerType: file\n  minLogLevel: info\n  rotationPolicy:\n    \
             rotationPeriodMilliseconds: 3600000\n    maxSegmentCountToKeep: 10\n\
             proxy:\n  writerType: stderr\n  minLogLevel: info\n\
             accessLog:\n  enabled: true\n  writerType: file\n  rotationPolicy:\n    \
             maxSegmentSize: 2KiB\n    maxSegmentCountToKeep: 3\n",
    );
    let proxy = start_with_logging(&config, &services_file);
    for i in 0..200 {
        let (status, body) = get(&proxy.plain, &domain, &format!("/page/{i}"), "");
        assert_eq!(status, 200, "{body}");
        assert!(body.ends_with("hello"), "{body}");
    }
    let stderr = proxy.stop();
    assert!(
        !stderr.contains("/page/"),
        "access lines went to stderr: {stderr}"
    );

    let server = std::fs::read_to_string(logs.join("server.log")).expect("server.log");
    assert!(server.contains("task-proxy listening"), "{server}");
    assert!(!server.contains("/page/"), "access lines in server.log");
    let access = std::fs::read_to_string(logs.join("access.log")).expect("access.log");
    let mut archives: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("access.log."))
        .collect();
    archives.sort();
    assert_eq!(archives.len(), 3, "rotated, at most 3 kept: {archives:?}");
    for name in &archives {
        let size = std::fs::metadata(logs.join(name)).unwrap().len();
        assert!((2048..4096).contains(&size), "{name}: {size} bytes");
    }
    // The newest lines are in access.log (or, when the last line filled it, the newest
    // archive); the oldest were dropped with the archives beyond the count.
    let previous = std::fs::read_to_string(logs.join(archives.last().unwrap())).unwrap();
    let newest = format!("{previous}{access}");
    assert!(newest.contains("path=\"/page/199\""), "{newest}");
    assert!(!newest.contains("path=\"/page/0\""), "{newest}");
    assert!(!logs.join("envoy.log").exists(), "proxy writes to stderr");
}

/// Sends `count` keep-alive requests pipelined in batches and waits for every `hello`; a
/// response that does not come within 10 s fails.
fn get_many(addr: &str, host: &str, count: usize) {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0;
    while sent < count {
        let batch = (count - sent).min(100);
        let mut requests = String::new();
        for i in 0..batch {
            requests.push_str(&format!(
                "GET /page/{} HTTP/1.1\r\nHost: {host}\r\n\r\n",
                sent + i
            ));
        }
        stream.write_all(requests.as_bytes()).unwrap();
        let (mut seen, mut tail) = (0, Vec::new());
        while seen < batch {
            let n = stream
                .read(&mut buf)
                .unwrap_or_else(|e| panic!("response {} did not come: {e}", sent + seen));
            assert!(n > 0, "the proxy closed the connection");
            tail.extend_from_slice(&buf[..n]);
            seen += tail.windows(5).filter(|w| w == b"hello").count();
            // Keep a partial `hello` for the next read.
            let keep = tail.len().saturating_sub(4);
            tail.drain(..keep);
        }
        sent += batch;
    }
}

#[test]
fn access_log_to_a_stdout_nobody_reads_drops_and_counts_instead_of_stalling_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (services_file, domain) = services(dir.path(), &job());
    let config = dir.path().join("logging.yaml");
    std::fs::write(
        &config,
        format!(
            "directory: {}\naccessLog:\n  enabled: true\n  writerType: stdout\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args([
            &format!("-logging-config={}", config.display()),
            "-base-domain",
            BASE,
            "-auth-enabled=false",
            &format!("-services-file={services_file}"),
            "-listen=127.0.0.1:0",
            "-admin-listen=127.0.0.1:0",
            "-worker-threads=1",
        ])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start task-proxy");
    // Read stdout up to the listening line, then never again: the pipe fills with access
    // lines and a write to it blocks, as an unread or wedged log collector makes it.
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("task-proxy listening") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "no listening line");
    }
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap()
            .to_string()
    };
    let proxy = Running {
        child,
        plain: field("plain="),
        admin: field("admin="),
        log: Default::default(),
    };
    // More lines than the pipe (64 KiB) and the access log's queue hold together.
    get_many(
        &proxy.plain,
        &domain,
        task_proxy::logging::ACCESS_QUEUE_LINES + 4000,
    );
    let (status, metrics) = get(&proxy.admin, "admin", "/metrics", "");
    assert_eq!(status, 200, "{metrics}");
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("task_proxy_access_log_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no dropped counter: {metrics}"));
    assert!(dropped > 0, "{metrics}");
    drop(out);
}

#[test]
fn access_log_disabled_writes_no_access_lines_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let (services_file, domain) = services(dir.path(), &job());
    let (logs, config) = logging_config(
        dir.path(),
        "server:\n  writerType: file\n  minLogLevel: trace\n  rotationPolicy:\n    \
             maxSegmentSize: 10Mi\n    maxTotalSizeToKeep: 100Mi\n\
             proxy:\n  writerType: file\n  minLogLevel: trace\n  rotationPolicy:\n    \
             maxSegmentSize: 10Mi\n    maxSegmentCountToKeep: 2\n\
             accessLog:\n  enabled: false\n  writerType: file\n  rotationPolicy:\n    \
             maxSegmentSize: 10Mi\n    maxSegmentCountToKeep: 2\n",
    );
    let proxy = start_with_logging(&config, &services_file);
    for i in 0..5 {
        let (status, _) = get(&proxy.plain, &domain, &format!("/page/{i}"), "");
        assert_eq!(status, 200);
    }
    let stderr = proxy.stop();
    let server = std::fs::read_to_string(logs.join("server.log")).unwrap();
    let envoy = std::fs::read_to_string(logs.join("envoy.log")).unwrap();
    assert!(server.contains("task-proxy listening"), "{server}");
    for (name, text) in [
        ("stderr", &stderr),
        ("server.log", &server),
        ("envoy.log", &envoy),
    ] {
        assert!(!text.contains("/page/"), "access lines in {name}: {text}");
    }
    assert!(!logs.join("access.log").exists());
}

#[test]
fn bad_logging_configs_are_refused_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, expected) in [
        ("server:\n  writerType: file\n  colour: red\n", "colour"),
        ("accessLog: null\n", "accessLog cannot be null"),
        (
            "directory: logs\nserver:\n  writerType: stdout\n",
            "directory must be an absolute path",
        ),
        (
            "accessLog:\n  writerType: file\n",
            "accessLog: file writer requires rotationPolicy",
        ),
        (
            "server:\n  writerType: file\n  rotationPolicy:\n    maxSegmentCountToKeep: 3\n",
            "rotation requires period or size trigger",
        ),
    ] {
        let config = dir.path().join("logging.yaml");
        std::fs::write(&config, yaml).unwrap();
        for check in [true, false] {
            let mut args = strings(&[
                &format!("-logging-config={}", config.display()),
                "-base-domain=d",
                "-auth-enabled=false",
                "-services-file=/nonexistent.json",
            ]);
            if check {
                args.push("--check-config".into());
            }
            let output = Command::new(BIN).args(&args).output().unwrap();
            assert_eq!(
                output.status.code(),
                Some(2),
                "{yaml:?}: {}",
                output_text(&output)
            );
            let printed = output_text(&output);
            assert!(
                printed.contains("logging configuration") && printed.contains(expected),
                "{yaml:?}: {printed}"
            );
        }
    }
}

#[test]
fn route_timeout_seconds_cuts_responses_not_complete_in_time_only_when_given() {
    let dir = tempfile::tempdir().unwrap();
    let (services_file, domain) = services(dir.path(), &job());
    let base = [
        "-base-domain",
        BASE,
        "-auth-enabled=false",
        "-listen=127.0.0.1:0",
        "-admin-listen=127.0.0.1:0",
        "-worker-threads=1",
    ];
    let services_flag = format!("-services-file={services_file}");

    // Ours: a stream may run longer than the original's 15 s default would allow.
    let mut args = strings(&base);
    args.push(services_flag.clone());
    let proxy = start(&args);
    let started = Instant::now();
    let (status, body) = get(&proxy.plain, &domain, "/slow", "");
    assert_eq!(status, 200);
    assert!(body.contains("part4"), "{body}");
    assert!(started.elapsed() >= Duration::from_secs(4));
    drop(proxy);

    // The original's flag: the whole response within 2 s.
    args.push("-route-timeout-seconds=2".into());
    let proxy = start(&args);
    let started = Instant::now();
    let (status, body) = get(&proxy.plain, &domain, "/slow", "");
    let took = started.elapsed();
    assert_eq!(status, 200, "the head came in time");
    assert!(body.contains("part0"), "{body}");
    assert!(!body.contains("part4"), "cut at the route timeout: {body}");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    // A quick response is unaffected.
    let (status, body) = get(&proxy.plain, &domain, "/", "");
    assert_eq!(status, 200);
    assert!(body.ends_with("hello"));
}

#[test]
fn stream_idle_timeout_seconds_cuts_stalled_responses_not_slow_streams() {
    let dir = tempfile::tempdir().unwrap();
    let (services_file, domain) = services(dir.path(), &job());
    let mut args = strings(&[
        "-base-domain",
        BASE,
        "-auth-enabled=false",
        "-listen=127.0.0.1:0",
        "-admin-listen=127.0.0.1:0",
        "-worker-threads=1",
    ]);
    args.push(format!("-services-file={services_file}"));

    // Without the flag a stall of 4 s is waited out.
    let proxy = start(&args);
    let (status, body) = get(&proxy.plain, &domain, "/stall", "");
    assert_eq!(status, 200);
    assert!(body.contains("end"), "{body}");
    drop(proxy);

    args.push("-stream-idle-timeout-seconds=2".into());
    let proxy = start(&args);
    // Part of a body, then nothing for 2 s: cut.
    let started = Instant::now();
    let (status, body) = get(&proxy.plain, &domain, "/stall", "");
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert!(body.contains("start"), "{body}");
    assert!(!body.contains("end"), "cut after idling: {body}");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_millis(3500),
        "{took:?}"
    );
    // A chunk every second for 5 s keeps the stream alive past the idle timeout.
    let started = Instant::now();
    let (status, body) = get(&proxy.plain, &domain, "/slow", "");
    assert_eq!(status, 200);
    assert!(
        body.contains("part4") && body.ends_with("0\r\n\r\n"),
        "{body}"
    );
    assert!(started.elapsed() >= Duration::from_secs(4));
}

#[test]
fn per_service_timeouts_cut_only_their_service_over_the_relay_too() {
    let dir = tempfile::tempdir().unwrap();
    let job = job();
    let path = dir.path().join("services.json");
    let services = serde_json::json!({"services": [
        {"operation_id": "1-2-3-4", "task_name": "task", "service": "timed",
         "protocol": "http", "endpoints": [job],
         "timeouts": {"route_timeout_seconds": 1}},
        {"operation_id": "1-2-3-4", "task_name": "task", "service": "idle",
         "protocol": "http", "endpoints": [job],
         "timeouts": {"stream_idle_timeout_seconds": 2}},
        {"operation_id": "1-2-3-4", "task_name": "task", "service": "plain",
         "protocol": "http", "endpoints": [job]}]});
    std::fs::write(&path, services.to_string()).unwrap();
    let domain = |svc: &str| format!("{}.{BASE}", service_hash("1-2-3-4", "task", svc));
    // No global timeout flags: plain HTTP/1.1 connections start on the relay.
    let mut args = strings(&[
        "-base-domain",
        BASE,
        "-auth-enabled=false",
        "-listen=127.0.0.1:0",
        "-admin-listen=127.0.0.1:0",
        "-worker-threads=1",
    ]);
    args.push(format!("-services-file={}", path.display()));
    let proxy = start(&args);

    let started = Instant::now();
    let (status, body) = get(&proxy.plain, &domain("timed"), "/slow", "");
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert!(body.contains("part0") && !body.contains("part4"), "{body}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    let (_, body) = get(&proxy.plain, &domain("idle"), "/stall", "");
    assert!(body.contains("start") && !body.contains("end"), "{body}");
    let (_, body) = get(&proxy.plain, &domain("idle"), "/slow", "");
    assert!(body.contains("part4"), "{body}");
    for path in ["/slow", "/stall"] {
        let (status, body) = get(&proxy.plain, &domain("plain"), path, "");
        assert_eq!(status, 200);
        assert!(body.ends_with("0\r\n\r\n"), "{path} not cut: {body}");
    }
    // Quick answers of the timed service are unaffected.
    let (status, body) = get(&proxy.plain, &domain("timed"), "/", "");
    assert_eq!(status, 200);
    assert!(body.ends_with("hello"));

    let (_, body) = get(&proxy.admin, "admin", "/services", "");
    let json: serde_json::Value =
        serde_json::from_str(body.split("\r\n\r\n").nth(1).unwrap_or("")).unwrap();
    let by_service = |svc: &str| {
        json["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service"] == svc)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_service("timed")["route_timeout_seconds"], 1);
    assert!(by_service("timed")
        .get("stream_idle_timeout_seconds")
        .is_none());
    assert_eq!(by_service("idle")["stream_idle_timeout_seconds"], 2);
    assert!(by_service("plain").get("route_timeout_seconds").is_none());
}

#[test]
fn original_flags_show_in_check_config() {
    let output = Command::new(BIN)
        .args([
            "-base-domain=d",
            "-auth-enabled=false",
            "-services-file=/nonexistent.json",
            "-connect-timeout-seconds",
            "3",
            "-route-timeout-seconds=15",
            "-stream-idle-timeout-seconds=300",
            "-auth-cache-enabled",
            "-auth-cache-ttl-seconds=30",
            "-auth-cache-capacity=1000",
            "-auth-cache-max-concurrent-backend-requests=2",
            "-auth-cache-refresh-before-seconds=5",
            "--check-config",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", output_text(&output));
    let printed = output_text(&output);
    for expected in [
        "upstream_connect_timeout: 3s",
        "route_timeout: Some(\n            15s",
        "tunnel_idle_timeout: 300s",
        "allow_ttl: 30s",
        "max_decisions: 1000",
        "max_concurrent_backend_requests: Some(\n            2",
        "refresh_before_seconds: Some(\n            5",
    ] {
        assert!(printed.contains(expected), "{expected:?} not in {printed}");
    }
    // Negative values are refused as the original refuses them.
    let output = Command::new(BIN)
        .args([
            "-base-domain=d",
            "-auth-enabled=false",
            "-services-file=/nonexistent.json",
            "-auth-cache-capacity=-1",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(output_text(&output).contains("'auth-cache-capacity' argument must be non-negative"));
}

/// The args the original chart renders for its server container (values.yaml defaults), with
/// the cluster, token and a logging config of the test; only the listen addresses are added
/// (the test needs free ports).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_command_line_serves_with_auth() {
    let cluster = yt_devcluster::DevCluster::start(yt_devcluster::DevClusterConfig::default())
        .await
        .expect("dev cluster");
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "robot-token\n").unwrap();
    let (logs, config) = logging_config(
        dir.path(),
        "server:\n  writerType: stderr\n  minLogLevel: debug\n\
             proxy:\n  writerType: stderr\n  minLogLevel: info\n\
             accessLog:\n  enabled: true\n  writerType: file\n  rotationPolicy:\n    \
             rotationPeriodMilliseconds: 3600000\n    maxSegmentSize: 100Mi\n    \
             maxTotalSizeToKeep: 1Gi\n    maxSegmentCountToKeep: 10\n",
    );

    // An operation with a web service, submitted with the real CLI before the proxy starts
    // (the original's discovery period is 60 s; the first pass runs at start).
    let output = tokio::process::Command::new(test_support::tool("yt"))
        .args([
            "vanilla",
            "--tasks",
            r#"{example_http_server={job_count=1; command="python3 -m http.server ${YT_PORT_0}"; port_count=1}}"#,
            "--spec",
            "{annotations={task_proxy={enabled=%true;}}}",
            "--async",
        ])
        .env("YT_PROXY", cluster.url())
        .env("YT_TOKEN", "alice-token")
        .env_remove("YT_CONFIG_PATCHES")
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", output_text(&output));
    let op = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let op = op.lines().last().unwrap_or_default().trim().to_string();
    let domain = format!(
        "{}.{BASE}",
        service_hash(&op, "example_http_server", "port_0")
    );

    let args: Vec<String> = [
        format!("-logging-config={}", config.display()),
        format!("-yt-token-path={}", token.display()),
        format!("-yt-proxy={}", cluster.url()),
        format!("-base-domain={BASE}"),
        "-dir-path=//sys/task_proxies".into(),
        "-discovery-period-seconds=60".into(),
        "-connect-timeout-seconds=2".into(),
        "-route-timeout-seconds=15".into(),
        "-stream-idle-timeout-seconds=300".into(),
        "-auth-enabled=true".into(),
        "-auth-cookie-name=YTCypressCookie".into(),
        "-auth-cache-enabled=false".into(),
        "-auth-cache-ttl-seconds=30".into(),
        "-auth-cache-capacity=1000".into(),
        "-auth-cache-max-concurrent-backend-requests=2".into(),
        "-auth-cache-refresh-before-seconds=5".into(),
        "-listen=127.0.0.1:0".into(),
        "-admin-listen=127.0.0.1:0".into(),
        "-worker-threads=1".into(),
    ]
    .into();
    let proxy = tokio::task::spawn_blocking(move || start(&args))
        .await
        .unwrap();
    let plain = proxy.plain.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (plain, domain) = (plain.clone(), domain.clone());
        let (status, body) = tokio::task::spawn_blocking(move || {
            get(&plain, &domain, "/", "Authorization: OAuth alice-token\r\n")
        })
        .await
        .unwrap();
        if status == 200 {
            assert!(body.contains("Directory listing"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "not served: {body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Without credentials: refused (auth is on).
    let (p, d) = (plain.clone(), domain.clone());
    let (status, _) = tokio::task::spawn_blocking(move || get(&p, &d, "/", ""))
        .await
        .unwrap();
    assert_eq!(status, 401);
    let stderr = tokio::task::spawn_blocking(move || proxy.stop())
        .await
        .unwrap();
    let access = std::fs::read_to_string(logs.join("access.log")).expect("access.log");
    assert!(access.contains("user=\"alice\""), "{access}");
    assert!(access.contains("status=401"), "{access}");
    assert!(stderr.contains("task-proxy listening"), "{stderr}");
    cluster.shutdown().await;
}
