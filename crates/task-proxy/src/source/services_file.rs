//! The static services file (see docs/serve.md): `{"services": [ServiceSpec...]}`, routed exactly like
//! discovered services. It is read at start (a bad file refuses the start), then re-read when its
//! metadata changes (polled) or on SIGHUP; a bad file later is logged and changes nothing.

use crate::routing::{RoutingSnapshot, RoutingTable, ServiceSpec};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// The file's JSON shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServicesFile {
    services: Vec<ServiceSpec>,
}

/// Why the services file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ServicesFileError {
    #[error("cannot read services file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("services file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Reads and parses the services file.
pub fn load(path: &Path) -> Result<Vec<ServiceSpec>, ServicesFileError> {
    let bytes = std::fs::read(path).map_err(|source| ServicesFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &bytes)
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<ServiceSpec>, ServicesFileError> {
    serde_json::from_slice::<ServicesFile>(bytes)
        .map(|f| f.services)
        .map_err(|source| ServicesFileError::Parse {
            path: path.to_path_buf(),
            source,
        })
}

/// What identifies one version of the file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// Keeps the routing table in step with the services file.
pub struct ServicesFileSource {
    path: PathBuf,
    base_domain: String,
    table: Arc<RoutingTable>,
    last: Option<(Stamp, Vec<ServiceSpec>)>,
}

impl ServicesFileSource {
    pub fn new(path: PathBuf, base_domain: String, table: Arc<RoutingTable>) -> Self {
        ServicesFileSource {
            path,
            base_domain,
            table,
            last: None,
        }
    }

    /// Loads the file and publishes it if its services changed. Returns whether it published.
    pub fn reload(&mut self) -> Result<bool, ServicesFileError> {
        let before = stamp(&self.path);
        let specs = load(&self.path)?;
        let Some(stamp) = before else {
            return Err(ServicesFileError::Read {
                path: self.path.clone(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        };
        if matches!(&self.last, Some((_, last)) if *last == specs) {
            self.last = Some((stamp, specs));
            return Ok(false);
        }
        let snapshot = RoutingSnapshot::build(&self.base_domain, specs.clone());
        for c in snapshot.collisions() {
            tracing::warn!(short_hash = %c.short_hash, kept = %c.kept, renamed = %c.renamed,
                renamed_hash = %c.renamed_hash, "service hash collision resolved");
        }
        let services = snapshot.len();
        let generation = self.table.publish(snapshot);
        tracing::info!(path = %self.path.display(), services, generation, "services file loaded");
        self.last = Some((stamp, specs));
        Ok(true)
    }

    /// Whether the file looks different from the version last loaded.
    fn changed(&self) -> bool {
        match (&self.last, stamp(&self.path)) {
            (Some((last, _)), Some(now)) => *last != now,
            (None, Some(_)) => true,
            (_, None) => false,
        }
    }

    /// Polls the file every `period` and reloads on SIGHUP, until `shutdown`.
    pub async fn watch(mut self, period: Duration, shutdown: CancellationToken) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; polling only");
                None
            }
        };
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            if !forced && !self.changed() {
                continue;
            }
            if let Err(e) = self.reload() {
                tracing::error!(error = %e, "services file not reloaded; the routing table is unchanged");
                // Remember this version so a broken file is reported once, not every tick.
                if let (Some(stamp), Some((_, specs))) = (stamp(&self.path), self.last.take()) {
                    self.last = Some((stamp, specs));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_shape() {
        let specs = parse(
            Path::new("f"),
            br#"{"services": [{"operation_id": "op", "task_name": "t", "service": "s",
                "protocol": "http", "endpoints": ["127.0.0.1:19001", "127.0.0.1:19002"]}]}"#,
        )
        .unwrap();
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].endpoints.len(), 2);
        assert!(parse(Path::new("f"), b"{\"services\": [{}]}").is_err());
        assert!(parse(Path::new("f"), b"nonsense").is_err());
    }

    #[test]
    fn reload_publishes_changes_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("services.json");
        let table = Arc::new(RoutingTable::new("d"));
        std::fs::write(&path, br#"{"services": []}"#).unwrap();
        let mut source = ServicesFileSource::new(path.clone(), "d".into(), table.clone());
        assert!(source.reload().unwrap());
        assert!(
            !source.reload().unwrap(),
            "same services: nothing published"
        );
        std::fs::write(&path, b"{broken").unwrap();
        assert!(source.reload().is_err());
        assert_eq!(table.load().generation(), 1, "a bad file changes nothing");
    }
}
