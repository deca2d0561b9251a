//! Helpers of this package's integration tests on top of the `test-support` harness: a dev
//! cluster with demo operations started by the real `yt` CLI, grpcurl with the demo protos,
//! and shorthands for the proxies the tests start.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use yt_devcluster::{DevCluster, DevClusterConfig};

/// Runs the real `yt` CLI against `cluster` as the holder of `token`; returns stdout.
pub fn yt(cluster: &DevCluster, token: &str, args: &[&str]) -> String {
    test_support::yt(&cluster.url(), token, args)
}

/// Starts a dev cluster.
pub async fn dev_cluster() -> DevCluster {
    DevCluster::start(DevClusterConfig::default())
        .await
        .expect("start the dev cluster")
}

/// Starts a vanilla operation as alice (`--async`) with `spec` (YSON) and tasks (YSON); returns
/// its id.
pub fn start_operation(cluster: &DevCluster, tasks: &str, spec: &str) -> String {
    let id = yt(
        cluster,
        "alice-token",
        &["vanilla", "--tasks", tasks, "--spec", spec, "--async"],
    );
    let id = id.lines().last().unwrap_or_default().trim().to_string();
    assert!(yt_devcluster::is_yt_id(&id), "not an operation id: {id:?}");
    id
}

/// Auth flags for a cluster-outage test: caches that expire fast (so the outage shows), a long
/// grace (so cached callers keep passing), a short hold after a failure, and `auth_timeout`.
pub fn outage_auth_flags(auth_timeout: &str) -> [&str; 10] {
    [
        "--auth-identity-ttl",
        "300ms",
        "--auth-allow-ttl",
        "300ms",
        "--auth-grace",
        "60s",
        "--auth-failure-hold",
        "200ms",
        "--auth-timeout",
        auth_timeout,
    ]
}

/// The ACL spec granting bob `read`.
pub const BOB_READS: &str = "{acl=[{action=allow;subjects=[bob];permissions=[read]}]}";

/// Sets the operation's ACL (as alice, its owner) with the real CLI.
pub fn set_acl(cluster: &DevCluster, operation_id: &str, acl: &str) {
    yt(
        cluster,
        "alice-token",
        &[
            "update-op-parameters",
            operation_id,
            &format!("{{acl={acl}}}"),
        ],
    );
}

/// This test file's directory (for the Python helpers next to it).
pub fn support_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("support")
}

/// The base domain of the e2e tests.
#[allow(unused_imports)]
pub use test_support::{curl, status_of, Proxy, BASE_DOMAIN};

/// A proxy in process on free ports serving `services` (the services file's JSON list) with
/// `extra` flags.
pub fn proxy_with_services(services: serde_json::Value, extra: &[String]) -> Proxy {
    let services = services.as_array().cloned().unwrap_or_default();
    Proxy::builder().services(&services).flags(extra).start()
}

/// A proxy in process on free ports discovering services on the cluster at `yt_proxy` (as the
/// robot), with `extra` flags. Returns once bound: routes appear after the first pass.
pub fn discovering_proxy(yt_proxy: &str, extra: &[String]) -> Proxy {
    Proxy::builder()
        .flags(&["--yt-proxy", yt_proxy, "--yt-token", "robot-token"])
        .flags(extra)
        .no_wait()
        .start()
}

/// Runs grpcurl (plaintext, the demo protos, `-authority domain`); returns (exit code,
/// stdout + stderr).
pub fn grpcurl(
    addr: std::net::SocketAddr,
    domain: &str,
    args: &[&str],
    method: &str,
) -> (i32, String) {
    let protos = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("demo-services")
        .join("proto");
    let output = Command::new(test_support::tool("grpcurl"))
        .arg("-plaintext")
        .args(["-max-time", "20"])
        .arg("-import-path")
        .arg(&protos)
        .args(["-proto", "helloworld.proto", "-proto", "inspect.proto"])
        .args(["-authority", domain])
        .args(args)
        .arg(addr.to_string())
        .arg(method)
        .output()
        .expect("run grpcurl");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), text)
}

pub mod file_proxy;
pub mod load;

/// An operation bob may read, served by an HTTP demo job (service `main/web`, and each of
/// `more_http` too) and a gRPC demo job (`main/api`), behind a proxy with auth on against the
/// dev cluster, started with `flags`.
pub struct AuthEnv {
    pub cluster: DevCluster,
    pub op: String,
    pub proxy: Proxy,
    _http_job: demo_services::Running,
    _grpc_job: demo_services::Running,
}

impl AuthEnv {
    pub async fn with(more_http: &[&str], flags: &[&str]) -> AuthEnv {
        const TASKS: &str = "{main={command=\"sleep 1000\";job_count=1;port_count=1}}";
        let cluster = dev_cluster().await;
        let op = start_operation(&cluster, TASKS, BOB_READS);
        let http_job = demo_services::spawn_http("http-job").await;
        let grpc_job = demo_services::spawn_grpc("grpc-job").await;
        let http_service = |service: &str| {
            serde_json::json!({"operation_id": op, "task_name": "main", "service": service,
                "protocol": "http", "endpoints": [http_job.addr.to_string()]})
        };
        let mut services: Vec<serde_json::Value> = std::iter::once("web")
            .chain(more_http.iter().copied())
            .map(http_service)
            .collect();
        services.push(serde_json::json!({"operation_id": op, "task_name": "main",
            "service": "api", "protocol": "grpc", "endpoints": [grpc_job.addr.to_string()]}));
        let mut all_flags: Vec<String> = vec![
            "--yt-proxy".into(),
            cluster.url(),
            "--yt-token".into(),
            "robot-token".into(),
        ];
        all_flags.extend(flags.iter().map(|s| s.to_string()));
        let proxy = proxy_with_services(serde_json::Value::Array(services), &all_flags);
        AuthEnv {
            cluster,
            op,
            proxy,
            _http_job: http_job,
            _grpc_job: grpc_job,
        }
    }

    /// The hash domain of `main/<service>`.
    pub fn domain(&self, service: &str) -> String {
        format!(
            "{}.{BASE_DOMAIN}",
            task_proxy::routing::service_hash(&self.op, "main", service)
        )
    }
}

/// A WebSocket through HTTP/2.
pub type H2WebSocket =
    tokio_tungstenite::WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

/// Opens a WebSocket over HTTP/2 (RFC 8441 extended CONNECT) to `http://<domain><path>` on
/// the h2c port `addr`, with `headers` on the CONNECT request. Panics unless the proxy
/// answers 200.
pub async fn h2_websocket(
    addr: std::net::SocketAddr,
    domain: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> H2WebSocket {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    // The server's SETTINGS (with ENABLE_CONNECT_PROTOCOL) must arrive before the CONNECT.
    let mut response = None;
    for _ in 0..50 {
        let mut req = http::Request::builder()
            .method(http::Method::CONNECT)
            .version(http::Version::HTTP_2)
            .uri(format!("http://{domain}{path}"))
            .header("sec-websocket-version", "13");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let mut req = req
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request");
        req.extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        match sender.send_request(req).await {
            Ok(r) => {
                response = Some(r);
                break;
            }
            Err(e) => {
                eprintln!("extended CONNECT: {e:?}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
        }
    }
    let mut response = response.expect("extended CONNECT accepted");
    assert_eq!(response.status(), 200);
    let upgraded = hyper::upgrade::on(&mut response).await.expect("upgraded");
    tokio_tungstenite::WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(upgraded),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await
}

/// Sends `text` on `ws` and asserts that the echo job answers it within 5 s.
pub async fn assert_echoes<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, text: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::Text(text.into())).await.expect("send");
    let echoed = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
        .await
        .expect("echo in time")
        .expect("a message")
        .expect("no error");
    assert_eq!(echoed.into_text().expect("text"), text);
}

/// curl arguments that make its request a WebSocket handshake (RFC 6455's sample key).
pub const WEBSOCKET_HANDSHAKE: [&str; 8] = [
    "-H",
    "Connection: Upgrade",
    "-H",
    "Upgrade: websocket",
    "-H",
    "Sec-WebSocket-Version: 13",
    "-H",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
];
