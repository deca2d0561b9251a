//! `GET /ws`: a WebSocket echo over an HTTP/1.1 upgrade. The handshake is answered here; the
//! upgraded socket is then driven by tokio-tungstenite in a task tied to the server's life.

use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::body::{self, Body};
use crate::server::Lifetime;

/// Answers the handshake with `101 Switching Protocols` and echoes on the upgraded socket.
pub(super) fn echo(mut request: Request<Incoming>, lifetime: &Lifetime) -> Response<Body> {
    let accept = match handshake_accept(request.headers()) {
        Ok(accept) => accept,
        Err(problem) => return body::text(StatusCode::BAD_REQUEST, format!("{problem}\n")),
    };
    let upgrade = hyper::upgrade::on(&mut request);
    lifetime.spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let socket =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                if let Err(error) = echo_messages(socket).await {
                    tracing::debug!(%error, "websocket echo ended with an error");
                }
            }
            Err(error) => tracing::debug!(%error, "websocket upgrade failed"),
        }
    });
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    response
}

/// Checks that `headers` ask for a version 13 WebSocket upgrade and returns the
/// `Sec-WebSocket-Accept` value answering its key.
fn handshake_accept(headers: &HeaderMap) -> Result<HeaderValue, &'static str> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .map(|value| {
                    value
                        .split(',')
                        .any(|part| part.trim().eq_ignore_ascii_case(token))
                })
                .unwrap_or(false)
        })
    };
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        return Err(
            "expected an HTTP/1.1 WebSocket upgrade (Connection: upgrade, Upgrade: websocket)",
        );
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err("expected Sec-WebSocket-Version: 13");
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or("missing Sec-WebSocket-Key")?;
    HeaderValue::from_str(&derive_accept_key(key.as_bytes())).map_err(|_| "bad Sec-WebSocket-Key")
}

/// Sends every text and binary message back. Pings are answered and a close is returned by
/// tungstenite itself; the loop ends when the peer's close has been answered.
async fn echo_messages<S>(
    mut socket: WebSocketStream<S>,
) -> Result<(), tokio_tungstenite::tungstenite::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(message) = socket.next().await {
        match message? {
            message @ (Message::Text(_) | Message::Binary(_)) => socket.send(message).await?,
            Message::Close(_) => {
                // tungstenite queued the close reply; flushing sends it.
                socket.flush().await?;
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
    Ok(())
}
