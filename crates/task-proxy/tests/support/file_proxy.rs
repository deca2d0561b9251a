//! A proxy serving a services file on loopback ports: in process by default, the real binary
//! when the test needs the process (signals, log, memory, descriptors).

use serde_json::Value;
use std::path::PathBuf;
#[allow(unused_imports)]
pub use test_support::write_services;
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
}

impl FileProxy {
    /// Starts the proxy in process on `services` (services-file entries) with `extra` flags;
    /// environment variables (when given) need the binary, so they start it instead.
    pub fn start(services: &[Value], extra: &[&str], env: &[(&str, &str)]) -> FileProxy {
        let builder = Proxy::builder().services(services).flags(extra);
        let builder = if env.is_empty() {
            builder
        } else {
            builder.env(env)
        };
        FileProxy::from(builder.start())
    }

    /// [`FileProxy::start`] as the real binary.
    pub fn start_binary(services: &[Value], extra: &[&str], env: &[(&str, &str)]) -> FileProxy {
        let proxy = Proxy::builder()
            .services(services)
            .flags(extra)
            .env(env)
            .binary()
            .start();
        FileProxy::from(proxy)
    }

    /// `/services` as JSON.
    pub fn services(&self) -> Value {
        self.proxy.services()
    }
}

impl From<Proxy> for FileProxy {
    fn from(proxy: Proxy) -> FileProxy {
        let path = proxy.services_file().path().to_path_buf();
        FileProxy { proxy, path }
    }
}
