//! HTTP/1.1 Upgrade (WebSocket) tunnels: after the job answers `101 Switching Protocols`, the
//! caller's connection and the job's are spliced byte for byte until either side closes or the
//! tunnel stays idle (no byte either way) for `--tunnel-idle-timeout`.
//!
//! `websocket` is the only protocol passed on, and only once the gate admitted the request: a
//! tunnel is a raw pipe to the job that no later request on it is checked against, so only a
//! protocol the proxy means to carry may open one. Any other `Upgrade` (`h2c` with its
//! `HTTP2-Settings`, anything unknown) is removed and the request goes to the job as a plain
//! HTTP/1.1 request; the caller gets the job's ordinary answer. An `Upgrade` list naming
//! `websocket` among others (`websocket, h2c`) is narrowed to `websocket`. A `101` the job
//! sends for anything but the WebSocket upgrade it was asked for becomes a 502.
//!
//! A tunnel keeps its caller's connection counted under `--max-connections` until it ends
//! (it holds the connection's [`ConnSlot`]). It is a live session ([`super::sessions`]) while
//! it runs: when the proxy closes it (the operation ended, access was revoked), the caller
//! gets a WebSocket close frame 1008 if the job's stream is between frames
//! ([`super::ws_close`]), and both connections are closed.
//!
//! WebSocket over HTTP/2 (RFC 8441 extended CONNECT, `:protocol = websocket`) is translated to
//! an HTTP/1.1 Upgrade for the job (jobs speak HTTP/1.1) and its `101` back to a `200` on the
//! caller's stream; the tunnel is the same.

use super::sessions::{self, Session};
use super::shared::{monotonic_ms, ConnSlot};
use super::ws_close::{self, FrameWatch};
use crate::proxy::metrics::ProxyMetrics;
use base64::Engine;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

/// The only protocol a tunnel is opened for.
const WEBSOCKET: &str = "websocket";

/// The comma-separated tokens of every line of header `name`, trimmed.
fn tokens(headers: &HeaderMap, name: header::HeaderName) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Whether an HTTP/1.1 request asks for a WebSocket: `GET` with `Connection: upgrade` and an
/// `Upgrade` naming `websocket` (case-insensitively, alone or in a list). Any other `Upgrade`
/// is not a protocol switch for the proxy: [`forward::prepare_request`] removes it.
///
/// [`forward::prepare_request`]: super::forward::prepare_request
pub fn is_websocket_request(parts: &http::request::Parts) -> bool {
    parts.version == http::Version::HTTP_11
        && parts.method == Method::GET
        && tokens(&parts.headers, header::UPGRADE).any(|t| t.eq_ignore_ascii_case(WEBSOCKET))
        && tokens(&parts.headers, header::CONNECTION).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

/// Narrows the request's `Upgrade` to `websocket` alone (the job may not pick another protocol
/// from a list).
pub fn only_websocket(parts: &mut http::request::Parts) {
    parts
        .headers
        .insert(header::UPGRADE, HeaderValue::from_static(WEBSOCKET));
}

/// Whether the job's `101` switches to the WebSocket protocol that was asked for.
pub fn is_websocket_switch(parts: &http::response::Parts) -> bool {
    let mut protocols = tokens(&parts.headers, header::UPGRADE);
    matches!((protocols.next(), protocols.next()), (Some(p), None) if p.eq_ignore_ascii_case(WEBSOCKET))
}

/// What a tunnel needs besides its two ends.
pub struct TunnelContext {
    pub metrics: Arc<ProxyMetrics>,
    /// `--tunnel-idle-timeout`.
    pub idle_timeout: Duration,
    /// The caller's place under `--max-connections`, held until the tunnel ends.
    pub slot: Arc<ConnSlot>,
    /// The tunnel's entry among the live sessions (the proxy may close it through it).
    pub session: Option<Session>,
}

/// How long the caller gets to take the close frame before its connection is closed anyway.
const CLOSE_FRAME_TIMEOUT: Duration = Duration::from_secs(1);

/// Splices the caller's and the job's upgraded connections once both are ready.
pub fn spawn_tunnel(client: OnUpgrade, upstream: OnUpgrade, context: TunnelContext) {
    tokio::spawn(async move {
        let TunnelContext {
            metrics,
            idle_timeout,
            slot,
            session,
        } = context;
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        metrics.tunnels_active.fetch_add(1, Ordering::Relaxed);
        metrics.tunnels_total.fetch_add(1, Ordering::Relaxed);
        let last_read = Arc::new(AtomicU64::new(monotonic_ms()));
        let mut client = FrameWatch::new(Watched::new(TokioIo::new(client), last_read.clone()));
        let mut upstream = Watched::new(TokioIo::new(upstream), last_read.clone());
        let idle_ms = u64::try_from(idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let closed_by_proxy = {
            let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
            tokio::pin!(copy);
            let mut check = idle_timeout;
            loop {
                tokio::select! {
                    ended = &mut copy => {
                        match ended {
                            Ok((up, down)) => tracing::debug!(up, down, "tunnel closed"),
                            Err(e) => tracing::debug!(error = %e, "tunnel ended"),
                        }
                        break None;
                    }
                    _ = sessions::closed(session.as_ref()) => {
                        break session.as_ref().and_then(Session::close_reason)
                    }
                    _ = tokio::time::sleep(check) => {
                        let idle = monotonic_ms().saturating_sub(last_read.load(Ordering::Relaxed));
                        if idle >= idle_ms {
                            metrics.tunnels_closed_idle.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(idle_ms = idle, "tunnel closed: idle");
                            break None;
                        }
                        check = Duration::from_millis(idle_ms - idle);
                    }
                }
            }
        };
        if let Some(reason) = closed_by_proxy {
            // The copy is gone; a frame may go in only between two of the job's frames.
            if client.at_boundary() {
                let frame = ws_close::close_frame(ws_close::POLICY_VIOLATION, reason.close_text());
                let sent = tokio::time::timeout(CLOSE_FRAME_TIMEOUT, async {
                    client.write_all(&frame).await?;
                    client.shutdown().await
                })
                .await;
                tracing::debug!(?sent, "tunnel closed by the proxy with a close frame");
            }
        }
        drop(session);
        metrics.tunnels_active.fetch_sub(1, Ordering::Relaxed);
        // Both connections close here, and the caller's place is given back.
        drop(slot);
    });
}

/// One end of a tunnel: notes when a read last brought bytes (every byte written to one end
/// was read from the other, so reads alone tell activity in both directions).
struct Watched<I> {
    inner: I,
    last_read: Arc<AtomicU64>,
}

impl<I> Watched<I> {
    fn new(inner: I, last_read: Arc<AtomicU64>) -> Watched<I> {
        Watched { inner, last_read }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.last_read.store(monotonic_ms(), Ordering::Relaxed);
        }
        polled
    }
}

super::io::delegate_async_write!(Watched);

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

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut builder = http::Request::builder().method(method).uri("/ws");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn only_websocket_is_an_upgrade() {
        for (method, headers) in [
            (
                "GET",
                &[("upgrade", "websocket"), ("connection", "Upgrade")][..],
            ),
            (
                "GET",
                &[
                    ("upgrade", "WebSocket"),
                    ("connection", "keep-alive, upgrade"),
                ],
            ),
            (
                "GET",
                &[("upgrade", "h2c, websocket"), ("connection", "upgrade")],
            ),
        ] {
            assert!(
                is_websocket_request(&request(method, headers)),
                "{headers:?}"
            );
        }
        for (method, headers) in [
            (
                "GET",
                &[
                    ("upgrade", "h2c"),
                    ("connection", "upgrade, http2-settings"),
                ][..],
            ),
            ("GET", &[("upgrade", "websocket")]),
            ("GET", &[("connection", "upgrade")]),
            (
                "GET",
                &[("upgrade", "websocketx"), ("connection", "upgrade")],
            ),
            (
                "POST",
                &[("upgrade", "websocket"), ("connection", "upgrade")],
            ),
        ] {
            assert!(
                !is_websocket_request(&request(method, headers)),
                "{method} {headers:?}"
            );
        }
        let mut parts = request("GET", &[("upgrade", "websocket, h2c")]);
        only_websocket(&mut parts);
        assert_eq!(parts.headers["upgrade"], "websocket");
    }

    #[test]
    fn only_a_switch_to_websocket_makes_a_tunnel() {
        let response = |upgrade: Option<&str>| {
            let mut builder = http::Response::builder().status(101);
            if let Some(upgrade) = upgrade {
                builder = builder.header("upgrade", upgrade);
            }
            builder.body(()).unwrap().into_parts().0
        };
        assert!(is_websocket_switch(&response(Some("websocket"))));
        assert!(is_websocket_switch(&response(Some("WebSocket"))));
        assert!(!is_websocket_switch(&response(Some("h2c"))));
        assert!(!is_websocket_switch(&response(Some("websocket, h2c"))));
        assert!(!is_websocket_switch(&response(None)));
    }
}
