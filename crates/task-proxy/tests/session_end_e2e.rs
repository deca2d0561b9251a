//! Access ends, sessions end: live WebSocket tunnels and streaming responses are closed within
//! the re-check interval after the user loses `read` on the operation (`yt
//! update-op-parameters` with a new ACL) or after the operation stops (`yt abort-op`), and a
//! user who keeps access keeps the session. Real parts throughout: the dev cluster driven by the
//! real `yt` CLI, discovery, the proxy binary (its log is read), the demo HTTP job running
//! as the operation's job, tungstenite as the WebSocket client and curl for SSE.

mod support;

use futures_util::StreamExt;
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::{set_acl, start_operation, yt, BASE_DOMAIN};
use task_proxy::routing::service_hash;
use test_support::{tool, wait_for, Proxy};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use yt_devcluster::DevCluster;

/// The re-check interval the proxy runs with.
const RECHECK: Duration = Duration::from_secs(1);

/// Slack on top of the bound for the permission call, the close and the client seeing it.
const SLACK: Duration = Duration::from_millis(1500);

type Ws = WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

type H2Ws = support::H2WebSocket;

/// An operation alice started (so she always may read it) that grants bob `read`, its job the
/// demo HTTP job (WebSocket echo at `/ws`, SSE at `/sse`), found by a proxy that discovers
/// every second and re-checks live sessions every [`RECHECK`].
struct Env {
    cluster: DevCluster,
    op: String,
    proxy: Proxy,
    _survivor: Option<Survivor>,
}

/// A demo job started out of its job's process group, so that it outlives the operation: the
/// abort test then sees the proxy end the session, not the job's exit (as with a job that is
/// slow to die, or on a node the scheduler lost). Killed when dropped.
struct Survivor {
    dir: tempfile::TempDir,
}

impl Drop for Survivor {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("pid")) {
            let _ = std::process::Command::new("kill")
                .args(["-9", pid.trim()])
                .status();
        }
    }
}

impl Env {
    /// `survivor`: the demo job outlives the operation (see [`Survivor`]).
    async fn start(survivor: bool) -> Env {
        let cluster = support::dev_cluster().await;
        let bin = env!("CARGO_BIN_EXE_task-proxy");
        assert!(!bin.contains([' ', '\'', '"']), "{bin}");
        let (job, survivor) = if survivor {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let pid = dir.path().join("pid");
            let job = format!(
                "setsid -f sh -c 'echo $$ > {}; exec {bin} demo-job http'; exec sleep 1000",
                pid.display()
            );
            (job, Some(Survivor { dir }))
        } else {
            (format!("exec {bin} demo-job http"), None)
        };
        let op = start_operation(
            &cluster,
            &format!("{{main={{job_count=1; command=\"{job}\"; port_count=1}}}}"),
            "{annotations={task_proxy={enabled=%true}}; \
              acl=[{action=allow;subjects=[bob];permissions=[read]}]}",
        );
        let recheck = format!("{}ms", RECHECK.as_millis());
        let proxy = Proxy::builder()
            .flags(&[
                "--yt-proxy",
                &cluster.url(),
                "--yt-token",
                "robot-token",
                "--discovery-period-seconds",
                "1",
                "--session-recheck-interval",
                &recheck,
            ])
            .binary()
            .no_wait()
            .start();
        let env = Env {
            cluster,
            op,
            proxy,
            _survivor: survivor,
        };
        // Routable once discovery found the job and the job listens.
        wait_for(
            "the job's WebSocket through the proxy",
            Duration::from_secs(30),
            || async { env.websocket("alice-token").await.ok() },
        )
        .await;
        env
    }

    fn domain(&self) -> String {
        format!("{}.{BASE_DOMAIN}", service_hash(&self.op, "main", "port_0"))
    }

    async fn websocket(&self, token: &str) -> Result<Ws, String> {
        let mut request = format!("ws://{}/ws", self.proxy.plain)
            .into_client_request()
            .map_err(|e| e.to_string())?;
        let headers = request.headers_mut();
        headers.insert("host", self.domain().parse().map_err(|_| "host")?);
        headers.insert(
            "authorization",
            format!("OAuth {token}").parse().map_err(|_| "token")?,
        );
        let (ws, response) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| e.to_string())?;
        if response.status() != 101 {
            return Err(format!("status {}", response.status()));
        }
        Ok(ws)
    }

    /// A WebSocket over HTTP/2 (RFC 8441 extended CONNECT) on the plain port.
    async fn h2_websocket(&self, token: &str) -> H2Ws {
        let authorization = format!("OAuth {token}");
        support::h2_websocket(
            self.proxy.plain,
            &self.domain(),
            "/ws",
            &[("authorization", &authorization)],
        )
        .await
    }

    /// An SSE stream of many events through the proxy as `token`'s holder, over HTTP/1.1 (the
    /// relay) or HTTP/2 (`--http2-prior-knowledge`, hyper's path); returns once the first event
    /// came.
    async fn sse(&self, token: &str, http2: bool) -> tokio::process::Child {
        let mut curl = tokio::process::Command::new(tool("curl"));
        curl.args(["-sS", "-N", "--max-time", "60"])
            .args(["-H", &format!("Host: {}", self.domain())])
            .args(["-H", &format!("Authorization: OAuth {token}")]);
        if http2 {
            curl.arg("--http2-prior-knowledge");
        }
        let mut child = curl
            .arg(self.proxy.url("/sse?count=100000&interval_ms=200"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("run curl");
        let stdout = child.stdout.take().expect("curl's stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("the first event in time")
            .expect("read curl's output");
        assert_eq!(first.as_deref(), Some("data: 0"), "http2 {http2}");
        // Keep reading so curl never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        child
    }

    /// Waits for `n` lines of the proxy's log that say a session was closed (its log is
    /// read from a pipe, a little behind) and returns them.
    async fn closes_seen(&self, n: usize) -> Vec<String> {
        let what = format!("{n} session closes in the proxy's log");
        wait_for(&what, Duration::from_secs(5), || async {
            let closes = self.closes();
            (closes.len() >= n).then_some(closes)
        })
        .await
    }

    /// The lines of the proxy's log that say a session was closed.
    fn closes(&self) -> Vec<String> {
        self.proxy
            .log()
            .lines()
            .filter(|l| l.contains("session closed"))
            .map(str::to_string)
            .collect()
    }

    fn closed_total(&self, reason: &str) -> u64 {
        let metrics = self.proxy.metrics();
        let series = format!("task_proxy_sessions_closed_total{{reason=\"{reason}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in {metrics}"))
    }
}

/// Waits (up to `bound`) for the server to close `ws`; returns the close frame's code and
/// reason (None: the connection closed without one).
async fn closed_by_server<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    bound: Duration,
) -> Option<(CloseCode, String)> {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("the WebSocket is still open after {bound:?}"),
            Ok(Some(Ok(Message::Close(frame)))) => {
                return frame.map(|f| (f.code, f.reason.to_string()))
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_read_closes_the_users_sessions_and_keeps_the_others() {
    let env = Env::start(false).await;
    let mut bob = env.websocket("bob-token").await.expect("bob's WebSocket");
    let mut alice = env
        .websocket("alice-token")
        .await
        .expect("alice's WebSocket");
    support::assert_echoes(&mut bob, "bob here").await;
    let mut bob_h2 = env.h2_websocket("bob-token").await;
    support::assert_echoes(&mut bob_h2, "bob over h2").await;
    let mut bob_sse_relay = env.sse("bob-token", false).await;
    let mut bob_sse_h2 = env.sse("bob-token", true).await;
    // Several re-checks pass with access unchanged: nothing is closed.
    tokio::time::sleep(RECHECK * 3).await;
    support::assert_echoes(&mut bob, "still open").await;
    assert!(env.closes().is_empty(), "{:?}", env.closes());

    // Alice (the operation's owner) takes bob off the ACL with the real CLI. The change lands
    // somewhere inside the CLI's run: the clock starts before it, and the bound is the CLI's
    // time plus the interval and the slack.
    let revoking = Instant::now();
    set_acl(&env.cluster, &env.op, "[]");
    let cli = revoking.elapsed();
    let bound = RECHECK + SLACK;
    let frame = closed_by_server(&mut bob, bound).await;
    let took = revoking.elapsed();
    assert_eq!(
        frame,
        Some((
            CloseCode::Policy,
            "access to the operation was revoked".to_string()
        )),
        "bob's WebSocket is closed with 1008 and the reason"
    );
    assert!(took <= cli + bound, "closed {took:?} after the CLI started");
    eprintln!("bob's WebSocket closed {took:?} after `yt update-op-parameters` started (the CLI ran {cli:?})");
    assert_eq!(
        closed_by_server(&mut bob_h2, bound).await,
        Some((
            CloseCode::Policy,
            "access to the operation was revoked".to_string()
        )),
        "bob's WebSocket over HTTP/2 too"
    );
    for (name, curl) in [("relay", &mut bob_sse_relay), ("h2", &mut bob_sse_h2)] {
        let status = tokio::time::timeout(bound, curl.wait())
            .await
            .unwrap_or_else(|_| panic!("bob's SSE stream ({name}) still open"))
            .expect("curl's exit");
        assert!(
            !status.success(),
            "the {name} stream was cut, not ended: {status}"
        );
    }

    // One line per closed session, naming the user, the operation and the reason; no token.
    let closes = env.closes_seen(4).await;
    assert_eq!(closes.len(), 4, "{closes:?}");
    for line in &closes {
        for wanted in ["bob", env.op.as_str(), "access_revoked", "age_ms"] {
            assert!(line.contains(wanted), "{wanted} not in {line}");
        }
        assert!(!line.contains("bob-token"), "{line}");
    }
    for kind in ["websocket", "relayed_body", "stream"] {
        assert!(
            closes.iter().any(|l| l.contains(kind)),
            "no {kind} close in {closes:?}"
        );
    }
    assert_eq!(env.closed_total("access_revoked"), 4);
    assert_eq!(env.closed_total("operation_ended"), 0);

    // Alice keeps her session across several more re-checks, and bob cannot come back.
    tokio::time::sleep(RECHECK * 3).await;
    support::assert_echoes(&mut alice, "alice stays").await;
    assert_eq!(env.closes().len(), 4);
    let again = env.websocket("bob-token").await;
    assert!(
        matches!(&again, Err(e) if e.contains("403")),
        "bob reconnects: {:?}",
        again.as_ref().map(|_| "101")
    );

    // Sessions that end by themselves leave the registry: none is left once alice closes hers.
    alice.close(None).await.expect("alice closes");
    drop(alice);
    wait_for("no live session left", Duration::from_secs(5), || async {
        let metrics = env.proxy.metrics();
        metrics
            .lines()
            .any(|l| l == "task_proxy_sessions_live 0")
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_the_operation_closes_its_sessions() {
    let env = Env::start(true).await;
    let mut alice = env
        .websocket("alice-token")
        .await
        .expect("alice's WebSocket");
    support::assert_echoes(&mut alice, "hello").await;
    let mut alice_sse = env.sse("alice-token", false).await;
    let aborting = Instant::now();
    yt(&env.cluster, "alice-token", &["abort-op", &env.op]);
    let cli = aborting.elapsed();
    // Discovery notices within its period, the re-checker within its interval.
    let bound = Duration::from_secs(1) + RECHECK + SLACK;
    let frame = closed_by_server(&mut alice, bound).await;
    let took = aborting.elapsed();
    assert_eq!(
        frame,
        Some((CloseCode::Policy, "the operation ended".to_string()))
    );
    assert!(took <= cli + bound, "closed {took:?} after the CLI started");
    eprintln!(
        "alice's WebSocket closed {took:?} after `yt abort-op` started (the CLI ran {cli:?})"
    );
    let status = tokio::time::timeout(bound, alice_sse.wait())
        .await
        .expect("the SSE stream is cut too")
        .expect("curl's exit");
    assert!(!status.success(), "{status}");
    let closes = env.closes_seen(2).await;
    assert_eq!(closes.len(), 2, "{closes:?}");
    assert!(
        closes
            .iter()
            .all(|l| l.contains("operation_ended") && l.contains("alice")),
        "{closes:?}"
    );
    assert_eq!(env.closed_total("operation_ended"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_read_ends_a_grpc_stream_with_permission_denied() {
    let cluster = support::dev_cluster().await;
    let op = start_operation(
        &cluster,
        "{main={command=\"sleep 1000\";job_count=1;port_count=1}}",
        support::BOB_READS,
    );
    // A Greeter whose stream of five replies takes eight seconds.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port for the gRPC job");
    let job_addr = listener.local_addr().expect("its address");
    let job = tokio::spawn(demo_services::serve_grpc_with_interval(
        listener,
        "grpc-job".into(),
        Duration::from_secs(2),
    ));
    let recheck = format!("{}ms", RECHECK.as_millis());
    let proxy = support::proxy_with_services(
        serde_json::json!([{"operation_id": op, "task_name": "main", "service": "api",
            "protocol": "grpc", "endpoints": [job_addr.to_string()]}]),
        &[
            "--yt-proxy".into(),
            cluster.url(),
            "--yt-token".into(),
            "robot-token".into(),
            "--session-recheck-interval".into(),
            recheck,
        ],
    );
    let domain = format!("{}.{BASE_DOMAIN}", service_hash(&op, "main", "api"));
    let addr = proxy.plain;
    let stream = tokio::task::spawn_blocking(move || {
        support::grpcurl(
            addr,
            &domain,
            &[
                "-H",
                "Authorization: OAuth bob-token",
                "-d",
                r#"{"name": "bob"}"#,
            ],
            "helloworld.Greeter/SayHelloStream",
        )
    });
    // The stream is open (its first reply comes at once) when bob loses access.
    wait_for("bob's gRPC stream", Duration::from_secs(10), || async {
        (proxy
            .metrics()
            .lines()
            .any(|l| l == "task_proxy_sessions_live 1"))
        .then_some(())
    })
    .await;
    let revoking = Instant::now();
    set_acl(&cluster, &op, "[]");
    let cli = revoking.elapsed();
    let (code, output) = tokio::time::timeout(RECHECK + SLACK, stream)
        .await
        .expect("the stream ends within the bound")
        .expect("grpcurl ran");
    assert_ne!(code, 0, "{output}");
    assert!(output.contains("#1"), "{output}");
    assert!(
        !output.contains("#5"),
        "the stream ran to its end: {output}"
    );
    assert!(output.contains("PermissionDenied"), "{output}");
    assert!(
        output.contains("access to the operation was revoked"),
        "{output}"
    );
    let took = revoking.elapsed();
    assert!(took <= cli + RECHECK + SLACK, "{took:?}");
    eprintln!("bob's gRPC stream ended {took:?} after `yt update-op-parameters` started (the CLI ran {cli:?})");
    job.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_permission_check_closes_nothing_until_the_cluster_answers() {
    let env = Env::start(false).await;
    let mut bob = env.websocket("bob-token").await.expect("bob's WebSocket");
    support::assert_echoes(&mut bob, "bob here").await;
    let failing = yt_devcluster::CommandKnob {
        error_rate: 1.0,
        ..yt_devcluster::CommandKnob::default()
    };
    env.cluster
        .knobs()
        .set("check_operation_permission", failing);
    set_acl(&env.cluster, &env.op, "[]");
    // Re-checks run and fail: bob's session stays, whatever the ACL says now.
    let failed_checks = || {
        env.proxy
            .metrics()
            .lines()
            .filter(|l| l.starts_with("task_proxy_auth_cluster_call_seconds_count{"))
            .filter(|l| l.contains("check_permission") && l.contains("\"error\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    wait_for(
        "three failed re-checks",
        Duration::from_secs(10),
        || async { (failed_checks() >= 3).then_some(()) },
    )
    .await;
    support::assert_echoes(&mut bob, "still here").await;
    assert!(env.closes().is_empty(), "{:?}", env.closes());

    // The cluster answers again: the deny closes the session within the bound.
    env.cluster.knobs().clear();
    let answered = Instant::now();
    let bound = RECHECK + SLACK;
    assert_eq!(
        closed_by_server(&mut bob, bound).await,
        Some((
            CloseCode::Policy,
            "access to the operation was revoked".to_string()
        ))
    );
    assert!(answered.elapsed() <= bound);
    let closes = env.closes_seen(1).await;
    assert!(closes[0].contains("access_revoked"), "{closes:?}");
}
