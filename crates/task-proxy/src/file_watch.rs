//! Watching files that are replaced while the proxy runs (TLS certificates, identity keys):
//! their modification times are polled, and a change is reported once the files settled.
//! Shared by the TLS listener's certificates and auth's identity keys.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// Files replaced together are usually written one after the other: after a change is seen,
/// wait this long for the rest to land.
const SETTLE: Duration = Duration::from_millis(200);

/// The modification time of `path` (`None` when it is absent or unreadable).
fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Polls `paths` every `period` and calls `reload` after any of them changed, until
/// `shutdown`.
pub async fn on_change(
    paths: Vec<PathBuf>,
    period: Duration,
    shutdown: CancellationToken,
    mut reload: impl FnMut(),
) {
    let stamp = || paths.iter().map(|p| modified(p)).collect::<Vec<_>>();
    let mut last = stamp();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        if stamp() == last {
            continue;
        }
        tokio::time::sleep(SETTLE).await;
        last = stamp();
        reload();
    }
}
