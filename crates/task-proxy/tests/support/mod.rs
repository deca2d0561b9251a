//! Shared helpers of the auth integration tests: a dev cluster with a demo operation started by
//! the real `yt` CLI, and requests to run through the gate.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use yt_devcluster::{DevCluster, DevClusterConfig};

/// Runs the real `yt` CLI against `cluster` as the holder of `token`; returns stdout.
pub fn yt(cluster: &DevCluster, token: &str, args: &[&str]) -> String {
    let output = Command::new(test_support::tool("yt"))
        .args(args)
        .env("YT_PROXY", cluster.url())
        .env("YT_TOKEN", token)
        .env_remove("YT_CONFIG_PATCHES")
        .output()
        .expect("run yt");
    assert!(
        output.status.success(),
        "yt {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
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
pub const BASE_DOMAIN: &str = "tp.test";

/// A `task-proxy serve` process (the real binary), killed on drop.
pub struct Proxy {
    child: std::process::Child,
    pub plain: std::net::SocketAddr,
    pub admin: std::net::SocketAddr,
    _services_file: Option<tempfile::NamedTempFile>,
}

impl Proxy {
    /// Starts the proxy on free ports with `services` (the services file's JSON list) and
    /// `extra` flags.
    pub fn start(services: serde_json::Value, extra: &[String]) -> Proxy {
        use std::io::Write;
        let mut file = tempfile::NamedTempFile::new().expect("services file");
        let body = serde_json::json!({ "services": services });
        file.write_all(body.to_string().as_bytes())
            .expect("write services");
        file.flush().expect("flush");
        let mut args: Vec<String> = vec![
            "--services-file".into(),
            file.path().to_string_lossy().into_owned(),
        ];
        args.extend(extra.iter().cloned());
        Self::spawn(&args, Some(file))
    }

    /// Starts the proxy on free ports discovering services on the cluster at `yt_proxy` (as
    /// the robot), with `extra` flags.
    pub fn discovering(yt_proxy: &str, extra: &[String]) -> Proxy {
        let mut args: Vec<String> = vec![
            "--yt-proxy".into(),
            yt_proxy.into(),
            "--yt-token".into(),
            "robot-token".into(),
        ];
        args.extend(extra.iter().cloned());
        Self::spawn(&args, None)
    }

    fn spawn(args: &[String], file: Option<tempfile::NamedTempFile>) -> Proxy {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_task-proxy"))
            .arg("serve")
            .args(["--base-domain", BASE_DOMAIN])
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--worker-threads", "2"])
            .args(args)
            .env("RUST_LOG", "warn")
            .env_remove("YT_TOKEN")
            .env_remove("YT_PROXY")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start task-proxy");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = |key: &str| -> std::net::SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        };
        let (plain, admin) = (addr("plain="), addr("admin="));
        Proxy {
            child,
            plain,
            admin,
            _services_file: file,
        }
    }

    /// Prometheus text from the admin listener.
    pub fn metrics(&self) -> String {
        curl(&[&format!("http://{}/metrics", self.admin)]).1
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs curl with `args` (plus `-s`); returns (exit code, stdout).
pub fn curl(args: &[&str]) -> (i32, String) {
    let output = Command::new("curl")
        .arg("-s")
        .args(args)
        .output()
        .expect("run curl");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// The HTTP status curl got for `url` with extra `args`.
pub fn status_of(url: &str, args: &[&str]) -> u16 {
    let mut all = vec!["-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20"];
    all.extend_from_slice(args);
    all.push(url);
    let (_, out) = curl(&all);
    out.trim().parse().unwrap_or(0)
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
