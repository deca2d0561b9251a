//! HTTP/1.1 Upgrade (WebSocket) tunnels: after the job answers `101 Switching Protocols`, the
//! caller's connection and the job's are spliced byte for byte until either side closes.

use crate::admin::metrics::ProxyMetrics;
use http::header;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Whether a request asks to switch protocols (`Connection: upgrade` with an `Upgrade`).
pub fn is_upgrade_request(parts: &http::request::Parts) -> bool {
    parts.version == http::Version::HTTP_11
        && parts.headers.contains_key(header::UPGRADE)
        && parts
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Splices the caller's and the job's upgraded connections once both are ready.
pub fn spawn_tunnel(client: OnUpgrade, upstream: OnUpgrade, metrics: Arc<ProxyMetrics>) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        metrics.tunnels_active.fetch_add(1, Ordering::Relaxed);
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((up, down)) => tracing::debug!(up, down, "tunnel closed"),
            Err(e) => tracing::debug!(error = %e, "tunnel ended"),
        }
        metrics.tunnels_active.fetch_sub(1, Ordering::Relaxed);
    });
}
