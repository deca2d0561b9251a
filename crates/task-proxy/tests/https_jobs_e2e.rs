//! Jobs that serve HTTPS, end to end: a vanilla operation submitted by the real `yt` CLI whose
//! jobs run the demo HTTP job over TLS (`task-proxy demo-job http --tls`), annotated with
//! `protocol="https"`, discovered on the dev cluster and reached through the proxy over
//! HTTP/1.1, h2c and its own TLS listener; WebSocket over a TLS job; certificates not verified
//! by default, verified against `--job-tls-ca-file` (chain and the job's address) when given; a
//! plain-HTTP job marked https answered with 502 at once; the auth gate as for any service.

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::{dev_cluster, start_operation, yt, Proxy, BASE_DOMAIN};
use task_proxy::routing::service_hash;
use test_support::{body_of, curl_async};

const BIN: &str = env!("CARGO_BIN_EXE_task-proxy");
const ALICE: &str = "Authorization: OAuth alice-token";
const BOB: &str = "Authorization: OAuth bob-token";

/// The tasks of the operation, each serving `web` on port 0 (all marked https).
const TASKS: [&str; 6] = [
    "selfsigned",
    "h1only",
    "signed",
    "wrongname",
    "plain",
    "grpc",
];

/// A CA and the PEM files of certificates it issued.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca { cert, key }
    }

    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, self.cert.pem()).expect("write CA");
        path
    }

    /// A job certificate for `names`; returns (cert, key) files.
    fn issue(&self, dir: &Path, file: &str, names: Vec<String>) -> (PathBuf, PathBuf) {
        let params = rcgen::CertificateParams::new(names).expect("params");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("job certificate");
        let (cert_path, key_path) = (
            dir.join(format!("{file}.crt")),
            dir.join(format!("{file}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        (cert_path, key_path)
    }
}

fn domain(op: &str, task: &str) -> String {
    format!("{}.{BASE_DOMAIN}", service_hash(op, task, "web"))
}

/// curl to the proxy's plain listener with `Host: <domain>`; returns (status, body).
async fn get(
    proxy: &Proxy,
    protocol: &str,
    domain: &str,
    path: &str,
    auth: &[&str],
) -> (u16, String) {
    let host = format!("Host: {domain}");
    let url = format!("http://{}{path}", proxy.plain);
    let mut args = vec![protocol, "-H", &host];
    for a in auth {
        args.extend(["-H", a]);
    }
    args.push(&url);
    let (code, text) = curl_async(&args).await;
    (code, body_of(&text).to_string())
}

/// The job's `/headers` echo for a request that reached it.
async fn echo(proxy: &Proxy, protocol: &str, domain: &str) -> Value {
    let (code, body) = get(proxy, protocol, domain, "/headers", &[ALICE]).await;
    assert_eq!(code, 200, "{protocol} {domain}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

async fn wait_for_200(proxy: &Proxy, domain: &str) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (code, body) = get(proxy, "--http1.1", domain, "/", &[ALICE]).await;
        if code == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{domain} never answered: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn discovering(cluster: &str, extra: &[&str]) -> test_support::ProxyBuilder {
    Proxy::builder()
        .flags(&[
            "--yt-proxy",
            cluster,
            "--yt-token",
            "robot-token",
            "--discovery-period-seconds",
            "1",
        ])
        .flags(extra)
        .no_wait()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_jobs_through_the_proxy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let job_ca = Ca::new("job CA");
    let job_ca_file = job_ca.write(dir.path(), "job-ca");
    let other_ca_file = Ca::new("unrelated CA").write(dir.path(), "other-ca");
    // Jobs run on the dev cluster's simulated nodes, 127.0.0.<i>.
    let node_ips: Vec<String> = (1..=16).map(|i| format!("127.0.0.{i}")).collect();
    let (signed_cert, signed_key) = job_ca.issue(dir.path(), "signed", node_ips);
    let (wrong_cert, wrong_key) =
        job_ca.issue(dir.path(), "wrongname", vec!["elsewhere.invalid".into()]);
    let proxy_cert = rcgen::generate_simple_self_signed(vec![format!("*.{BASE_DOMAIN}")])
        .expect("proxy certificate");
    let (proxy_cert_file, proxy_key_file) =
        (dir.path().join("proxy.crt"), dir.path().join("proxy.key"));
    std::fs::write(&proxy_cert_file, proxy_cert.cert.pem()).expect("write");
    std::fs::write(&proxy_key_file, proxy_cert.key_pair.serialize_pem()).expect("write");

    let path = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    let job = |args: String| {
        format!(
            r#"{{job_count=1; port_count=1; command="exec {BIN} demo-job {args} --port ${{YT_PORT_0}}"}}"#
        )
    };
    let tasks = format!(
        "{{selfsigned={}; h1only={}; signed={}; wrongname={}; plain={}; grpc={}}}",
        job("http --tls".into()),
        job("http --tls --tls-alpn http/1.1".into()),
        job(format!(
            "http --tls --tls-cert {} --tls-key {}",
            path(&signed_cert),
            path(&signed_key)
        )),
        job(format!(
            "http --tls --tls-cert {} --tls-key {}",
            path(&wrong_cert),
            path(&wrong_key)
        )),
        job("http".into()),
        job("grpc --tls".into()),
    );
    let tasks_info: Vec<String> = TASKS
        .iter()
        .map(|t| format!(r#"{t}={{web={{protocol="https";port_index=0}}}}"#))
        .collect();
    let spec = format!(
        "{{annotations={{task_proxy={{enabled=%true; tasks_info={{{}}}}}}}}}",
        tasks_info.join(";")
    );

    let cluster = dev_cluster().await;
    let op = start_operation(&cluster, &tasks, &spec);
    let d = |task: &str| domain(&op, task);

    // Verification off (the default); one worker, so connection reuse shows; a TLS listener.
    let proxy = discovering(
        &cluster.url(),
        &[
            "--worker-threads",
            "1",
            "--tls-cert",
            &path(&proxy_cert_file),
            "--tls-key",
            &path(&proxy_key_file),
            "--tls-listen",
            "127.0.0.1:0",
        ],
    )
    .binary()
    .start();
    for task in ["selfsigned", "h1only", "signed", "wrongname"] {
        wait_for_200(&proxy, &d(task)).await;
    }

    // HTTP/1.1 (the relay hands https services to hyper) and h2c callers: the job served TLS
    // and picked h2.
    for protocol in ["--http1.1", "--http2-prior-knowledge"] {
        let seen = echo(&proxy, protocol, &d("selfsigned")).await;
        assert_eq!(seen["tls"]["alpn"], "h2", "{protocol}: {seen}");
        assert_eq!(seen["tls"]["version"], "TLSv1_3", "{seen}");
        assert_eq!(seen["version"], "HTTP/2.0", "{seen}");
        assert_eq!(seen["authority"], d("selfsigned").as_str(), "{seen}");
        assert_eq!(seen["headers"]["x-forwarded-proto"], "http", "{seen}");
        assert!(seen["headers"].get("authorization").is_none(), "{seen}");
    }
    // Bodies stream both ways over TLS: an upload (chunked from HTTP/1.1 callers) and a
    // download, checked byte for byte.
    let upload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let upload_file = dir.path().join("upload.bin");
    std::fs::write(&upload_file, &upload).expect("write upload");
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&upload))
    };
    for (protocol, framing) in [
        ("--http1.1", "Transfer-Encoding: chunked"),
        ("--http2-prior-knowledge", "X-Unused: 1"),
    ] {
        let (code, text) = curl_async(&[
            protocol,
            "-H",
            &format!("Host: {}", d("selfsigned")),
            "-H",
            ALICE,
            "-H",
            framing,
            "--data-binary",
            &format!("@{}", path(&upload_file)),
            &format!("http://{}/upload", proxy.plain),
        ])
        .await;
        assert_eq!(code, 200, "{protocol}: {text}");
        let seen: Value = serde_json::from_str(body_of(&text)).expect("json");
        assert_eq!(seen["bytes"], upload.len(), "{protocol}: {seen}");
        assert_eq!(seen["sha256"], digest.as_str(), "{protocol}: {seen}");
        let (code, text) = curl_async(&[
            protocol,
            "-o",
            "/dev/null",
            "-H",
            &format!("Host: {}", d("selfsigned")),
            "-H",
            ALICE,
            &format!("http://{}/bytes?size=5000000", proxy.plain),
        ])
        .await;
        assert_eq!(code, 200, "{protocol}: {text}");
        assert!(text.ends_with(" 5000000"), "{protocol}: {text}");
    }

    // Through the proxy's own TLS listener, h2 on both sides.
    let tls_port = proxy.tls.expect("tls listener").port();
    let (code, text) = curl_async(&[
        "-k",
        "--http2",
        "-H",
        ALICE,
        "--resolve",
        &format!("{}:{tls_port}:127.0.0.1", d("selfsigned")),
        &format!("https://{}:{tls_port}/headers", d("selfsigned")),
    ])
    .await;
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("\t2 "), "h2 to the proxy: {text}");
    let seen: Value = serde_json::from_str(body_of(&text)).expect("json");
    assert_eq!(seen["tls"]["alpn"], "h2", "{seen}");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https", "{seen}");

    // gRPC callers of a job serving gRPC over TLS: h2 end to end, trailers included.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, out) = support::grpcurl(
            proxy.plain,
            &d("grpc"),
            &["-H", ALICE, "-d", r#"{"name": "tls"}"#],
            "helloworld.Greeter/SayHello",
        );
        if code == 0 {
            assert!(out.contains("Hello tls"), "{out}");
            break;
        }
        assert!(Instant::now() < deadline, "gRPC over TLS: {out}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (code, out) = support::grpcurl(
        proxy.plain,
        &d("grpc"),
        &["-H", ALICE, "-d", r#"{"name": "stream"}"#],
        "helloworld.Greeter/SayHelloStream",
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.matches("Hello stream").count(),
        demo_services::STREAM_REPLIES,
        "{out}"
    );
    let (code, out) = support::grpcurl(
        proxy.plain,
        &d("grpc"),
        &["-H", BOB, "-d", "{}"],
        "helloworld.Greeter/SayHello",
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("PermissionDenied"), "{out}");

    // A job that offers only HTTP/1.1: spoken over TLS, its connections pooled and reused.
    let mut peers = BTreeSet::new();
    for _ in 0..6 {
        let seen = echo(&proxy, "--http1.1", &d("h1only")).await;
        assert_eq!(seen["tls"]["alpn"], "http/1.1", "{seen}");
        assert_eq!(seen["version"], "HTTP/1.1", "{seen}");
        peers.insert(seen["peer_addr"].as_str().unwrap_or_default().to_string());
    }
    assert!(peers.len() <= 2, "TLS connections reused: {peers:?}");

    // WebSocket over a TLS job (HTTP/1.1 upgrade on a connection of its own).
    {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{}/ws", proxy.plain)
            .into_client_request()
            .expect("request");
        let headers = request.headers_mut();
        headers.insert("host", d("selfsigned").parse().expect("host"));
        headers.insert("authorization", "OAuth alice-token".parse().expect("auth"));
        let (mut ws, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket handshake through the proxy");
        assert_eq!(response.status(), 101);
        support::assert_echoes(&mut ws, "over tls").await;
        ws.close(None).await.expect("close");
    }

    // The auth gate applies as to any service.
    for protocol in ["--http1.1", "--http2-prior-knowledge"] {
        let (code, _) = get(&proxy, protocol, &d("selfsigned"), "/", &[BOB]).await;
        assert_eq!(code, 403, "{protocol}");
        let (code, _) = get(&proxy, protocol, &d("selfsigned"), "/", &[]).await;
        assert_eq!(code, 401, "{protocol}");
    }

    // A plain-HTTP job marked https: 502 at once, and the log says why.
    let started = Instant::now();
    let (code, body) = get(&proxy, "--http1.1", &d("plain"), "/", &[ALICE]).await;
    assert_eq!(code, 502, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(body.contains("TLS handshake"), "{body}");
    assert!(
        proxy
            .log()
            .contains("TLS handshake with the job failed (does it serve TLS on this port?)"),
        "{}",
        proxy.log()
    );

    // Listed with their protocol: /services, the status page, the services table.
    let services = proxy.services();
    let listed = services["services"].as_array().cloned().unwrap_or_default();
    for task in TASKS {
        let service = listed
            .iter()
            .find(|s| s["task_name"] == task)
            .unwrap_or_else(|| panic!("{task} not in {services}"));
        assert_eq!(service["protocol"], "https", "{service}");
    }
    let (_, page) = proxy.admin_get("/");
    assert!(page.contains(">https<"), "{page}");
    let deadline = Instant::now() + Duration::from_secs(15);
    let rows = loop {
        let rows = yt(
            &cluster,
            "root-token",
            &[
                "read-table",
                "//sys/task_proxies/services",
                "--format",
                "json",
            ],
        );
        if rows.lines().filter(|l| l.contains(&op)).count() == TASKS.len() {
            break rows;
        }
        assert!(Instant::now() < deadline, "services table: {rows}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for row in rows.lines().filter(|l| l.contains(&op)) {
        let row: Value = serde_json::from_str(row).expect("row");
        assert_eq!(row["protocol"], "https", "{row}");
    }
    let schema = yt(
        &cluster,
        "root-token",
        &[
            "get",
            "//sys/task_proxies/services/@schema",
            "--format",
            "json",
        ],
    );
    let schema: Value = serde_json::from_str(&schema).expect("schema");
    let columns: Vec<(String, String)> = schema["$value"]
        .as_array()
        .or(schema.as_array())
        .expect("columns")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_string(),
                c["type"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> =
        ["domain", "operation_id", "task_name", "service", "protocol"]
            .iter()
            .map(|n| (n.to_string(), "string".to_string()))
            .collect();
    assert_eq!(columns, expected);
    drop(proxy);

    // Verification against a CA that issued none of the jobs' certificates: refused.
    let proxy = discovering(
        &cluster.url(),
        &["--job-tls-ca-file", &path(&other_ca_file)],
    )
    .start();
    wait_until_routed(&proxy, &d("signed")).await;
    for task in ["signed", "selfsigned"] {
        let (code, body) = get(&proxy, "--http1.1", &d(task), "/", &[ALICE]).await;
        assert_eq!(code, 502, "{task}: {body}");
    }
    drop(proxy);

    // Against the jobs' CA: the certificate issued for the job's address passes; one issued
    // for another name, and a self-signed one, do not.
    let proxy = discovering(&cluster.url(), &["--job-tls-ca-file", &path(&job_ca_file)]).start();
    wait_until_routed(&proxy, &d("signed")).await;
    for protocol in ["--http1.1", "--http2-prior-knowledge"] {
        let seen = echo(&proxy, protocol, &d("signed")).await;
        assert_eq!(seen["tls"]["alpn"], "h2", "{seen}");
    }
    for task in ["wrongname", "selfsigned"] {
        let (code, body) = get(&proxy, "--http1.1", &d(task), "/", &[ALICE]).await;
        assert_eq!(code, 502, "{task}: {body}");
    }
    drop(proxy);
    cluster.shutdown().await;
}

/// Waits until `domain` is routed (any answer but 404).
async fn wait_until_routed(proxy: &Proxy, domain: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, _) = get(proxy, "--http1.1", domain, "/", &[ALICE]).await;
        if code != 404 && code != 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{domain} never routed");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[test]
fn a_bad_job_ca_file_stops_the_start_with_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_pem = dir.path().join("not-pem.pem");
    std::fs::write(&not_pem, "not a certificate\n").expect("write");
    let broken = dir.path().join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let missing = dir.path().join("missing.pem");
    for (file, why) in [
        (&missing, "No such file"),
        (&not_pem, "no PEM certificate"),
        (&broken, "certificate 1"),
    ] {
        let out = std::process::Command::new(BIN)
            .args([
                "serve",
                "--base-domain",
                BASE_DOMAIN,
                "--auth-enabled=false",
            ])
            .arg("--services-file")
            .arg(dir.path().join("services.json"))
            .arg("--job-tls-ca-file")
            .arg(file)
            .env_remove("YT_PROXY")
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("--job-tls-ca-file") && stderr.contains(why),
            "{stderr}"
        );
    }
}

/// One address listed as an `http` and as an `https` service (a services file can say so):
/// a pooled plain connection never carries a request of the https service, nor a pooled TLS
/// connection one of the http service (either would go to the job in the wrong form).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_plain_connections_to_one_address_never_mix() {
    use std::net::{Ipv4Addr, SocketAddr};
    let plain_job = demo_services::spawn_http("plain-job").await;
    let tls = demo_services::DemoTls::self_signed(&[]).expect("certificate");
    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    // HTTP/1.1 only, so the TLS connection goes to the HTTP/1.1 pool, next to plain ones.
    let tls_job = demo_services::spawn_https_on(any, "tls-job", tls.with_alpn(&["http/1.1"]))
        .await
        .expect("tls job");
    let service = |name: &str, protocol: &str, addr: SocketAddr| {
        serde_json::json!({"operation_id": "op", "task_name": "t", "service": name,
            "protocol": protocol, "endpoints": [addr.to_string()]})
    };
    let services = serde_json::json!([
        service("plain-as-http", "http", plain_job.addr),
        service("plain-as-https", "https", plain_job.addr),
        service("tls-as-https", "https", tls_job.addr),
        service("tls-as-http", "http", tls_job.addr),
    ]);
    // One worker: one set of pools. h2c callers take hyper's path, whose pools are in question.
    let proxy = support::proxy_with_services(
        services,
        &[
            "--auth-enabled=false".into(),
            "--worker-threads".into(),
            "1".into(),
        ],
    );
    let d = |s: &str| format!("{}.{BASE_DOMAIN}", service_hash("op", "t", s));
    let h2c = "--http2-prior-knowledge";
    for _ in 0..3 {
        let (code, body) = get(&proxy, h2c, &d("plain-as-http"), "/headers", &[]).await;
        assert_eq!(code, 200, "{body}");
        let (code, body) = get(&proxy, h2c, &d("plain-as-https"), "/headers", &[]).await;
        assert_eq!(
            code, 502,
            "a plain connection carried an https request: {body}"
        );
        let (code, body) = get(&proxy, h2c, &d("tls-as-https"), "/headers", &[]).await;
        assert_eq!(code, 200, "{body}");
        let seen: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(seen["tls"]["alpn"], "http/1.1", "{seen}");
        let (code, body) = get(&proxy, h2c, &d("tls-as-http"), "/headers", &[]).await;
        assert_ne!(
            code, 200,
            "a TLS connection carried an http request: {body}"
        );
    }
}

/// A WebSocket over HTTP/2 (RFC 8441 extended CONNECT) to a job that serves TLS and prefers
/// h2: the proxy offers it only HTTP/1.1 for the upgrade, and the tunnel echoes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_http2_reaches_a_tls_job_that_prefers_h2() {
    use std::net::{Ipv4Addr, SocketAddr};
    let tls = demo_services::DemoTls::self_signed(&[]).expect("certificate");
    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let job = demo_services::spawn_https_on(any, "tls-job", tls)
        .await
        .expect("tls job");
    let services = serde_json::json!([{"operation_id": "op", "task_name": "t", "service": "ws",
        "protocol": "https", "endpoints": [job.addr.to_string()]}]);
    let proxy = support::proxy_with_services(services, &["--auth-enabled=false".into()]);
    let domain = format!("{}.{BASE_DOMAIN}", service_hash("op", "t", "ws"));

    let mut ws = support::h2_websocket(proxy.plain, &domain, "/ws", &[]).await;
    support::assert_echoes(&mut ws, "h2 to tls").await;
}
