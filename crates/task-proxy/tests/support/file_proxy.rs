//! The real `task-proxy` binary serving a services file (re-read on SIGHUP), on loopback ports.

use super::BASE_DOMAIN;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use test_support::Proxy;

/// Listeners on free loopback ports, two workers.
pub const LOOPBACK: [&str; 6] = [
    "--listen",
    "127.0.0.1:0",
    "--admin-listen",
    "127.0.0.1:0",
    "--worker-threads",
    "2",
];

/// The proxy with its services file.
pub struct FileProxy {
    pub proxy: Proxy,
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl FileProxy {
    /// Starts the proxy on `services` (services-file entries) with `extra` flags and
    /// environment variables.
    pub fn start(services: &[Value], extra: &[&str], env: &[(&str, &str)]) -> FileProxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("services.json");
        write_services(&path, services);
        let mut args = vec![
            "--services-file",
            path.to_str().expect("utf-8 path"),
            "--base-domain",
            BASE_DOMAIN,
        ];
        args.extend_from_slice(&LOOPBACK);
        args.extend_from_slice(extra);
        FileProxy {
            proxy: Proxy::start_with_env(Path::new(env!("CARGO_BIN_EXE_task-proxy")), &args, env),
            path,
            _dir: dir,
        }
    }

    /// `/services` as JSON.
    pub fn services(&self) -> Value {
        let (_, body) = self.proxy.admin_get("/services");
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }
}

/// Replaces the services file as deploy tools do (write, then rename): the proxy never reads a
/// half-written file.
pub fn write_services(path: &Path, services: &[Value]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json!({ "services": services }).to_string()).expect("write services");
    std::fs::rename(&tmp, path).expect("rename services");
}
