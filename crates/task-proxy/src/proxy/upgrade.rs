//! HTTP/1.1 Upgrade (WebSocket) tunnels: after the job answers `101 Switching Protocols`, the
//! caller's connection and the job's are spliced byte for byte until either side closes.
//!
//! WebSocket over HTTP/2 (RFC 8441 extended CONNECT, `:protocol = websocket`) is translated to
//! an HTTP/1.1 Upgrade for the job (jobs speak HTTP/1.1) and its `101` back to a `200` on the
//! caller's stream; the tunnel is the same.

use crate::admin::metrics::ProxyMetrics;
use base64::Engine;
use http::{header, HeaderValue, Method, StatusCode};
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

/// Whether a request is a WebSocket over HTTP/2 (extended CONNECT with `:protocol websocket`).
pub fn is_h2_websocket(parts: &http::request::Parts) -> bool {
    parts.method == Method::CONNECT
        && parts
            .extensions
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// Rewrites an HTTP/2 WebSocket request into the HTTP/1.1 Upgrade handshake a job expects.
/// (RFC 8441 §5: the key is the proxy's own; the job's accept value goes no further.)
pub fn h2_websocket_to_h1(parts: &mut http::request::Parts) {
    parts.method = Method::GET;
    parts.extensions.remove::<hyper::ext::Protocol>();
    let headers = &mut parts.headers;
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    let key: [u8; 16] = rand::random();
    let key = base64::engine::general_purpose::STANDARD.encode(key);
    if let Ok(key) = HeaderValue::from_str(&key) {
        headers.insert(header::SEC_WEBSOCKET_KEY, key);
    }
    if !headers.contains_key(header::SEC_WEBSOCKET_VERSION) {
        headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
    }
}

/// Turns the job's `101` into the `200` an HTTP/2 extended CONNECT expects.
pub fn h1_switch_to_h2_ok(parts: &mut http::response::Parts) {
    parts.status = StatusCode::OK;
    parts.headers.remove(header::CONNECTION);
    parts.headers.remove(header::UPGRADE);
    parts.headers.remove(header::SEC_WEBSOCKET_ACCEPT);
    parts.headers.remove(header::CONTENT_LENGTH);
}
