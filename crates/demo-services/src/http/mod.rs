//! The demo HTTP job: HTTP/1.1 (keep-alive, upgrades) and HTTP/2 with prior knowledge on one
//! port. This module owns the routing table and the headers every response carries; the
//! endpoints live in the submodules.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /` | a small page saying `demo job <name>` |
//! | `* /headers` | JSON: method, uri, version, the request headers, the body length, addresses |
//! | `GET /sse?count=N&interval_ms=M` | `text/event-stream`, N events `data: <i>` (i from 0), M ms apart |
//! | `GET /ws` | WebSocket echo (HTTP/1.1 upgrade) |
//! | `GET /bytes?size=N` | N bytes of [`pattern_byte`](crate::pattern_byte), with `Content-Length` |
//! | `POST /upload` (or `PUT`) | JSON `{"bytes": n, "sha256": "<hex>"}` of the streamed request body |
//! | `GET /redirect` | 302 to `http://<local ip:port of the connection>/target` |
//! | `GET /target` | 200 text |
//! | `GET /delay?ms=N` | 200 text after N ms |
//! | `GET /status/N` | status N |
//! | `GET /static/...` | 200 text naming the path |
//! | `GET /trailers` | chunked body followed by the trailer `x-demo-trailer: done` |
//! | anything else | 404 text, whatever the method |
//!
//! A known route asked with another method answers 405. Every response carries
//! `x-demo-job: <name>`.

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
    serve(listener, name, None).await
}

/// Serves the demo HTTP job over TLS (`tls`: its certificate and ALPN offer) on `listener`,
/// like [`serve_http`]; `/headers` then reports the TLS version and ALPN protocol.
pub async fn serve_https(
    listener: TcpListener,
    name: String,
    tls: crate::tls::DemoTls,
) -> std::io::Result<()> {
    serve(listener, name, Some(tls.acceptor())).await
}

async fn serve(
    listener: TcpListener,
    name: String,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> std::io::Result<()> {
    let job = Arc::new(Job::new(name));
    server::serve(listener, tls, move |connection| {
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
        let route = Route::parse(&path);
        if !route.allows(request.method()) {
            return method_not_allowed(route.allowed_methods());
        }
        match route {
            Route::Index => routes::index(&self.name),
            Route::Headers => routes::headers(request, &self.name, connection).await,
            Route::Sse => streaming::sse(&request),
            Route::WebSocket => websocket::echo(request, &connection.lifetime),
            Route::Bytes => streaming::bytes(&request),
            Route::Upload => streaming::upload(request).await,
            Route::Redirect => routes::redirect(connection.local_addr),
            Route::Target => routes::target(&self.name),
            Route::Delay => routes::delay(&request).await,
            Route::Status(code) => routes::status(code),
            Route::Static => routes::static_file(&path, &self.name),
            Route::Trailers => streaming::trailers(),
            Route::NotFound => body::text(StatusCode::NOT_FOUND, format!("not found: {path}\n")),
        }
    }
}

/// The endpoint a request path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route<'a> {
    Index,
    Headers,
    Sse,
    WebSocket,
    Bytes,
    Upload,
    Redirect,
    Target,
    Delay,
    /// `/status/<code>`, with the unparsed code.
    Status(&'a str),
    Static,
    Trailers,
    NotFound,
}

impl<'a> Route<'a> {
    fn parse(path: &'a str) -> Self {
        match path {
            "/" => Route::Index,
            "/headers" => Route::Headers,
            "/sse" => Route::Sse,
            "/ws" => Route::WebSocket,
            "/bytes" => Route::Bytes,
            "/upload" => Route::Upload,
            "/redirect" => Route::Redirect,
            "/target" => Route::Target,
            "/delay" => Route::Delay,
            "/trailers" => Route::Trailers,
            _ => match path.strip_prefix("/status/") {
                Some(code) => Route::Status(code),
                None if path.starts_with("/static/") => Route::Static,
                None => Route::NotFound,
            },
        }
    }

    /// The `Allow` header value of the route.
    fn allowed_methods(self) -> &'static str {
        match self {
            Route::Headers | Route::NotFound => "*",
            Route::Upload => "POST, PUT",
            _ => "GET, HEAD",
        }
    }

    fn allows(self, method: &Method) -> bool {
        match self {
            // The echo answers any method; unknown paths answer 404 whatever the method.
            Route::Headers | Route::NotFound => true,
            Route::Upload => method == Method::POST || method == Method::PUT,
            _ => method == Method::GET || method == Method::HEAD,
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
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str) -> Request<()> {
        Request::builder()
            .uri(uri)
            .body(())
            .expect("valid test request")
    }

    #[test]
    fn query_params_are_found_by_name() {
        let with_query = request("/sse?count=3&flag&interval_ms=20");
        assert_eq!(query_param(&with_query, "count"), Some("3"));
        assert_eq!(query_param(&with_query, "flag"), Some(""));
        assert_eq!(numeric_param(&with_query, "interval_ms", 1).ok(), Some(20));
        assert_eq!(numeric_param(&with_query, "missing", 7).ok(), Some(7));
        assert!(numeric_param(&with_query, "flag", 7).is_err());
        assert_eq!(query_param(&request("/sse"), "count"), None);
    }

    #[test]
    fn routes_are_parsed_from_paths_and_check_methods() {
        assert_eq!(Route::parse("/status/418"), Route::Status("418"));
        assert_eq!(Route::parse("/static/a/b.css"), Route::Static);
        assert_eq!(Route::parse("/headers/x"), Route::NotFound);
        assert!(Route::Upload.allows(&Method::PUT));
        assert!(!Route::Upload.allows(&Method::GET));
        assert!(!Route::Sse.allows(&Method::POST));
        assert!(Route::NotFound.allows(&Method::DELETE));
    }
}
