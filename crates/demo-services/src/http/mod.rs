//! The demo HTTP job: HTTP/1.1 (keep-alive, upgrades) and HTTP/2 with prior knowledge on one
//! port. This module owns the routing table and the headers every response carries; the
//! endpoints live in the submodules.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /` | a small page saying `demo job <name>` |
//! | `* /headers` | JSON: method, uri, version, the request headers, the body length, addresses |
//! | `GET /sse?count=N&interval_ms=M` | `text/event-stream`, N events `data: <i>` (i from 0), M ms apart |
//! | `GET /ws` | WebSocket echo |
//! | `GET /bytes?size=N` | N bytes of [`pattern_byte`](crate::pattern_byte), with `Content-Length` |
//! | `POST /upload` (or `PUT`) | JSON `{"bytes": n, "sha256": "<hex>"}` of the streamed request body |
//! | `GET /redirect` | 302 to `http://<local ip:port of the connection>/target` |
//! | `GET /target` | 200 text |
//! | `GET /delay?ms=N` | 200 text after N ms |
//! | `GET /status/N` | status N |
//! | `GET /static/...` | 200 text naming the path |
//! | `GET /trailers` | chunked body followed by the trailer `x-demo-trailer: done` |
//! | anything else | 404 text |
//!
//! Every response carries `x-demo-job: <name>`.

mod body;
mod routes;
mod streaming;
mod websocket;

use std::convert::Infallible;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;

pub use body::pattern_byte;
use body::Body;

use crate::server::{self, ConnectionInfo};

/// The response header naming the job that answered.
pub const JOB_HEADER: &str = "x-demo-job";

/// Serves the demo HTTP job on `listener` until the returned future is dropped or aborted;
/// dropping it also closes every connection it accepted.
pub async fn serve_http(listener: TcpListener, name: String) -> std::io::Result<()> {
    let job = Arc::new(Job::new(name));
    server::serve(listener, move |connection| {
        let job = job.clone();
        hyper::service::service_fn(move |request| {
            let job = job.clone();
            let connection = connection.clone();
            async move { Ok::<_, Infallible>(job.respond(request, &connection).await) }
        })
    })
    .await
}

/// One job's identity, shared by all its connections.
#[derive(Debug)]
struct Job {
    name: String,
    /// `name` as a header value; characters a header cannot hold are replaced by `_`.
    header: HeaderValue,
}

impl Job {
    fn new(name: String) -> Self {
        let header = HeaderValue::from_str(&name).unwrap_or_else(|_| {
            let printable: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_graphic() || c == ' ' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            HeaderValue::from_str(&printable).unwrap_or(HeaderValue::from_static("_"))
        });
        Self { name, header }
    }

    /// Routes the request, then stamps the job's name on the response.
    async fn respond(
        &self,
        request: Request<Incoming>,
        connection: &ConnectionInfo,
    ) -> Response<Body> {
        let mut response = self.route(request, connection).await;
        response
            .headers_mut()
            .insert(HeaderName::from_static(JOB_HEADER), self.header.clone());
        response
    }

    async fn route(
        &self,
        request: Request<Incoming>,
        connection: &ConnectionInfo,
    ) -> Response<Body> {
        let path = request.uri().path().to_owned();
        let method = request.method().clone();
        let readable = method == Method::GET || method == Method::HEAD;
        match path.as_str() {
            "/headers" => routes::headers(request, &self.name, connection).await,
            "/upload" if method == Method::POST || method == Method::PUT => {
                streaming::upload(request).await
            }
            "/upload" => method_not_allowed("POST, PUT"),
            _ if !readable => method_not_allowed("GET, HEAD"),
            "/" => routes::index(&self.name),
            "/sse" => streaming::sse(&request),
            "/ws" => websocket::echo(request, &connection.lifetime),
            "/bytes" => streaming::bytes(&request),
            "/redirect" => routes::redirect(connection.local_addr),
            "/target" => routes::target(&self.name),
            "/delay" => routes::delay(&request).await,
            "/trailers" => streaming::trailers(),
            _ => {
                if let Some(code) = path.strip_prefix("/status/") {
                    routes::status(code)
                } else if path.starts_with("/static/") {
                    routes::static_file(&path, &self.name)
                } else {
                    body::text(StatusCode::NOT_FOUND, format!("not found: {path}\n"))
                }
            }
        }
    }
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = body::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// The value of query parameter `name` of `request`, if present (no percent-decoding: the
/// demo parameters are numbers).
fn query_param<'a, B>(request: &'a Request<B>, name: &str) -> Option<&'a str> {
    request
        .uri()
        .query()?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A query parameter that does not parse; answered with 400.
#[derive(Debug)]
struct BadQuery(String);

impl BadQuery {
    fn into_response(self) -> Response<Body> {
        body::text(StatusCode::BAD_REQUEST, self.0)
    }
}

/// Query parameter `name` parsed as a number: its default when absent, [`BadQuery`] when it
/// does not parse.
fn numeric_param<B>(request: &Request<B>, name: &str, default: u64) -> Result<u64, BadQuery> {
    match query_param(request, name) {
        None => Ok(default),
        Some(raw) => raw.parse().map_err(|_| {
            BadQuery(format!(
                "query parameter `{name}` must be a non-negative integer, got `{raw}`\n"
            ))
        }),
    }
}
