//! A services file for the proxy's `--services-file` source, in a temporary directory that
//! lives as long as the value.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// A services file (`{"services": [...]}`).
pub struct ServicesFile {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl ServicesFile {
    /// Writes `services` (services-file entries) to a new file.
    pub fn new(services: &[Value]) -> ServicesFile {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("services.json");
        write_services(&path, services);
        ServicesFile { path, _dir: dir }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the file's services (see [`write_services`]).
    pub fn write(&self, services: &[Value]) {
        write_services(&self.path, services);
    }

    /// Replaces the file with raw text (e.g. an invalid file), the same atomic way.
    pub fn write_raw(&self, text: &str) {
        replace(&self.path, text);
    }
}

/// Replaces the services file at `path` as deploy tools do (write, then rename): the proxy
/// never reads a half-written file.
pub fn write_services(path: &Path, services: &[Value]) {
    replace(path, &json!({ "services": services }).to_string());
}

fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write services");
    std::fs::rename(&tmp, path).expect("rename services");
}
