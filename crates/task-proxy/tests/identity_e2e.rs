//! The signed identity jobs get, end to end: the proxy with auth on against the dev cluster,
//! the demo HTTP echo (its `/headers` shows what the job received) and gRPC job, real clients
//! (curl over HTTP/1.1 and h2c, grpcurl), and PyJWT as the job's verifier.

mod support;

use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use support::{curl, grpcurl, AuthEnv as Env, Proxy, BASE_DOMAIN};
use task_proxy::routing::service_hash;

const ALICE: &str = "Authorization: OAuth alice-token";
const SPOOF_USER: &str = "X-YT-TaskProxy-User: root";
const SPOOF_ASSERTION: &str = "x-yt-taskproxy-assertion: eyJhbGciOiJub25lIn0.eyJzdWIiOiJyb290In0.";

impl Env {
    async fn start(extra: &[&str]) -> Env {
        Env::with(&[], extra).await
    }

    /// What the HTTP job received for `/headers` with curl `args`: every header line, in order.
    fn job_headers(&self, args: &[&str]) -> Vec<(String, String)> {
        let host = format!("Host: {}", self.domain("web"));
        let url = format!("http://{}/headers", self.proxy.plain);
        let mut all = vec!["--max-time", "20", "-H", host.as_str()];
        all.extend_from_slice(args);
        all.push(&url);
        let (code, body) = curl(&all);
        assert_eq!(code, 0, "curl {args:?}: {body}");
        let echoed: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {args:?}: {body}"));
        echoed["header_list"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"))
            .iter()
            .map(|pair| {
                (
                    pair[0].as_str().unwrap_or_default().to_ascii_lowercase(),
                    pair[1].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    fn jwks(&self, host: &str) -> (u16, String) {
        let url = format!("http://{}/.well-known/jwks.json", self.proxy.plain);
        let host = format!("Host: {host}");
        let (_, out) = curl(&[
            "--max-time",
            "20",
            "-H",
            &host,
            "-w",
            "\n%{http_code}",
            &url,
        ]);
        let (body, status) = out.rsplit_once('\n').unwrap_or((&out, "0"));
        (status.trim().parse().unwrap_or(0), body.to_string())
    }
}

/// The values of `name` among `headers`.
fn values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The one assertion the job got for alice (and no spoofed copy); returns it.
fn alice_assertion(headers: &[(String, String)], what: &str) -> String {
    assert_eq!(
        values(headers, "x-yt-taskproxy-user"),
        ["alice"],
        "{what}: {headers:?}"
    );
    let assertions = values(headers, "x-yt-taskproxy-assertion");
    assert_eq!(assertions.len(), 1, "{what}: {headers:?}");
    assert!(
        assertions[0].starts_with("eyJ") && !assertions[0].contains("eyJzdWIiOiJyb290In0"),
        "{what}: {headers:?}"
    );
    assertions[0].to_string()
}

/// Runs the PyJWT verifier on `token` for `audience` with the JWKS document `jwks`.
fn verify(jwks: &str, token: &str, audience: &str) -> Value {
    verify_with(
        Command::new(test_support::tool("python3")),
        jwks,
        token,
        audience,
    )
}

/// [`verify`] with `python` (its environment set up by the caller).
fn verify_with(mut python: Command, jwks: &str, token: &str, audience: &str) -> Value {
    let script = support::support_dir().join("verify_identity.py");
    let output = python
        .arg(&script)
        .args([jwks, token, audience])
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the verifier refused the proxy's token: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn write_key(dir: &Path, name: &str) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
    let path = dir.join(name);
    std::fs::write(&path, key.serialize_pem()).expect("write the key");
    path.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_verifies_the_assertion_against_the_published_keys_and_rejects_forgeries() {
    let dir = tempfile::tempdir().expect("temp dir");
    let current = write_key(dir.path(), "current.pem");
    let previous = write_key(dir.path(), "previous.pem");
    let env = Env::start(&[
        "--identity-key-file",
        &current,
        "--identity-previous-key-file",
        &previous,
    ])
    .await;

    let headers = env.job_headers(&["-H", ALICE, "-H", SPOOF_USER, "-H", SPOOF_ASSERTION]);
    let token = alice_assertion(&headers, "relay");

    // The portal host (the base domain) publishes both keys during the rotation.
    let (status, jwks) = env.jwks(BASE_DOMAIN);
    assert_eq!(status, 200, "{jwks}");
    let doc: Value = serde_json::from_str(&jwks).unwrap_or_else(|e| panic!("{e}: {jwks}"));
    assert_eq!(doc["keys"].as_array().map(Vec::len), Some(2), "{jwks}");
    // Service hosts do not answer for it: the path is the job's there (behind the gate).
    let (status, _) = env.jwks(&env.domain("web"));
    assert_eq!(status, 401);

    let domain = env.domain("web");
    let verified = verify(&jwks, &token, &domain);
    let claims = &verified["claims"];
    assert_eq!(claims["sub"], "alice", "{verified}");
    assert_eq!(claims["login"], "alice");
    assert_eq!(claims["aud"], domain.as_str());
    assert_eq!(claims["operation_id"], env.op.as_str());
    assert_eq!(claims["task"], "main");
    assert_eq!(claims["service"], "web");
    let lifetime = claims["exp"].as_u64().unwrap_or(0) - claims["iat"].as_u64().unwrap_or(0);
    assert_eq!(lifetime, 300, "{verified}");
    // Signed with the current key, named by the kid the JWKS lists first.
    assert_eq!(verified["kid"], doc["keys"][0]["kid"]);
    assert_eq!(verified["foreign_key"], "rejected: InvalidSignatureError");
    assert_eq!(verified["tampered"], "rejected: InvalidSignatureError");
    assert_eq!(verified["other_service"], "rejected: InvalidAudienceError");

    // The next request reuses the cached token.
    let again = alice_assertion(&env.job_headers(&["-H", ALICE]), "relay, again");
    assert_eq!(again, token);

    // The metrics count the one signature (not the reuse) and the two published keys.
    let (status, metrics) = env.proxy.admin_get("/metrics");
    assert_eq!(status, 200);
    for line in [
        "task_proxy_identity_assertions_signed_total 1",
        "task_proxy_identity_signing_errors_total 0",
        "task_proxy_identity_published_keys 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in {metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_headers_never_reach_the_job_on_any_path() {
    // With the portal off the base domain still serves the keys (taken from the relay).
    let env = Env::start(&["--portal-enabled=false"]).await;
    let spoofs = [
        "-H",
        SPOOF_USER,
        "-H",
        SPOOF_ASSERTION,
        "-H",
        "X-Yt-Taskproxy-User: admin",
    ];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut args = vec!["-H", ALICE];
        args.extend_from_slice(&spoofs);
        args.extend_from_slice(extra);
        args
    };
    let (status, jwks) = env.jwks(BASE_DOMAIN);
    assert_eq!(status, 200, "{jwks}");
    let domain = env.domain("web");
    for (what, extra) in [
        ("relay (HTTP/1.1 GET)", vec![]),
        // A chunked upload is not the relay's: hyper's HTTP/1.1 path forwards it.
        (
            "hyper HTTP/1.1 (chunked POST)",
            vec!["-H", "Transfer-Encoding: chunked", "--data-binary", "x=1"],
        ),
        ("hyper HTTP/2 (h2c)", vec!["--http2-prior-knowledge"]),
        ("WebSocket handshake", support::WEBSOCKET_HANDSHAKE.to_vec()),
    ] {
        let headers = env.job_headers(&with(&extra));
        let token = alice_assertion(&headers, what);
        let verified = verify(&jwks, &token, &domain);
        assert_eq!(verified["claims"]["login"], "alice", "{what}");
    }

    // gRPC: the job's view of the metadata.
    let (code, out) = grpcurl(
        env.proxy.plain,
        &env.domain("api"),
        &[
            "-H",
            ALICE,
            "-H",
            SPOOF_USER,
            "-H",
            SPOOF_ASSERTION,
            "-d",
            "{}",
        ],
        "demo.Inspect/Metadata",
    );
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("root"), "{out}");
    assert!(!out.contains("eyJzdWIiOiJyb290In0"), "{out}");
    assert!(out.contains("alice"), "{out}");
    assert!(out.contains("x-yt-taskproxy-assertion"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_identity_no_headers_reach_the_job_and_spoofs_are_still_removed() {
    // The feature off, with auth on.
    let env = Env::start(&["--identity-headers=false"]).await;
    let headers = env.job_headers(&["-H", ALICE, "-H", SPOOF_USER, "-H", SPOOF_ASSERTION]);
    assert!(
        !headers.iter().any(|(n, _)| n.starts_with("x-yt-taskproxy")),
        "{headers:?}"
    );
    let (status, body) = env.jwks(BASE_DOMAIN);
    assert!(
        status >= 400 && !body.contains("\"keys\""),
        "{status} {body}"
    );

    // Auth off: anonymous requests, and no identity to send.
    let job = demo_services::spawn_http("anon-job").await;
    let services = vec![json!({"operation_id": "1-2-3-4", "task_name": "main",
        "service": "web", "protocol": "http", "endpoints": [job.addr.to_string()]})];
    let proxy = Proxy::builder()
        .services(&services)
        .flags(&["--auth-enabled=false"])
        .start();
    let host = format!(
        "Host: {}.{BASE_DOMAIN}",
        service_hash("1-2-3-4", "main", "web")
    );
    let url = format!("http://{}/headers", proxy.plain);
    for extra in [&[][..], &["--http2-prior-knowledge"][..]] {
        let mut args = vec!["-H", host.as_str(), "-H", SPOOF_USER, "-H", SPOOF_ASSERTION];
        args.extend_from_slice(extra);
        args.push(&url);
        let (_, body) = curl(&args);
        assert!(body.contains("\"header_list\""), "{body}");
        assert!(
            !body.to_ascii_lowercase().contains("x-yt-taskproxy"),
            "{extra:?}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_discovering_proxy_publishes_the_keys_in_cypress_for_jobs() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Two replicas share the key (as from one Kubernetes secret): one discovers and writes the
    // keys to Cypress, the other (a services file) signs what its job gets.
    let key = write_key(dir.path(), "key.pem");
    let env = Env::start(&["--identity-key-file", &key]).await;
    let cluster = env.cluster.url();
    let _discovering =
        support::discovering_proxy(&cluster, &["--identity-key-file".into(), key.clone()]);
    let path = "//sys/task_proxies/jwks";
    let published = test_support::wait_for(
        "the keys in Cypress",
        std::time::Duration::from_secs(15),
        || async {
            let mut yt =
                tokio::process::Command::from(test_support::yt_command(&cluster, "alice-token"));
            let out = yt
                .args(["get", path, "--format", "json"])
                .output()
                .await
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        },
    )
    .await;
    let (_, served) = env.jwks(BASE_DOMAIN);
    let published: Value = serde_json::from_str(&published).expect("JSON from yt get");
    let served: Value = serde_json::from_str(&served).expect("JSON JWKS");
    assert_eq!(published, served);
    let node_type = test_support::yt(&cluster, "alice-token", &["get", &format!("{path}/@type")]);
    assert_eq!(node_type.trim_matches('"'), "document");

    // The job's check: the keys read with the YTsaurus Python client.
    let token = alice_assertion(&env.job_headers(&["-H", ALICE]), "relay");
    let mut python = Command::new(test_support::tool("python3"));
    python
        .env("YT_PROXY", &cluster)
        .env("YT_TOKEN", "alice-token")
        .env_remove("YT_CONFIG_PATCHES");
    let verified = verify_with(python, path, &token, &env.domain("web"));
    assert_eq!(verified["claims"]["login"], "alice", "{verified}");
    assert_eq!(verified["foreign_key"], "rejected: InvalidSignatureError");
}

/// A rotation through the key files, as a Kubernetes Secret update does it: the running proxy
/// publishes the new key with the old one within seconds, signs with the new one, and the
/// old one's tokens still verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_key_files_needs_no_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let current = write_key(dir.path(), "current.pem");
    let previous = dir.path().join("previous.pem");
    let env = Env::start(&[
        "--identity-key-file",
        &current,
        "--identity-previous-key-file",
        &previous.to_string_lossy(),
    ])
    .await;
    let domain = env.domain("web");
    let kids = |jwks: &str| -> Vec<String> {
        let doc: Value = serde_json::from_str(jwks).unwrap_or_else(|e| panic!("{e}: {jwks}"));
        doc["keys"]
            .as_array()
            .unwrap_or_else(|| panic!("{jwks}"))
            .iter()
            .map(|k| k["kid"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let (_, before) = env.jwks(BASE_DOMAIN);
    let old_kids = kids(&before);
    assert_eq!(old_kids.len(), 1, "{before}");
    let old_token = alice_assertion(&env.job_headers(&["-H", ALICE]), "before");

    // The old key becomes the previous one, a new key the current one.
    std::fs::copy(&current, &previous).expect("copy the old key");
    write_key(dir.path(), "current.pem");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let after = loop {
        let (_, jwks) = env.jwks(BASE_DOMAIN);
        if kids(&jwks).len() == 2 {
            break jwks;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new key is not published: {jwks}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let new_kids = kids(&after);
    assert_ne!(new_kids[0], old_kids[0]);
    assert_eq!(new_kids[1], old_kids[0]);

    let new_token = alice_assertion(&env.job_headers(&["-H", ALICE]), "after");
    assert_ne!(new_token, old_token, "a cached token of the old key");
    assert_eq!(
        verify(&after, &new_token, &domain)["kid"],
        new_kids[0].as_str()
    );
    assert_eq!(
        verify(&after, &old_token, &domain)["kid"],
        old_kids[0].as_str()
    );
    let (_, metrics) = env.proxy.admin_get("/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l == "task_proxy_identity_published_keys 2"),
        "{metrics}"
    );
}
