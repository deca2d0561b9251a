//! The small request/response endpoints: the index page, the header echo, redirects, delays,
//! chosen statuses and static text.

use std::net::SocketAddr;
use std::time::Duration;

use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Map, Value};

use super::body::{self, Body};
use super::numeric_param;
use crate::server::ConnectionInfo;

/// `GET /`: a small page naming the job.
pub(super) fn index(name: &str) -> Response<Body> {
    let page = format!(
        "<!doctype html>\n<html><head><title>demo job {name}</title></head>\n\
         <body><h1>demo job {name}</h1></body></html>\n",
        name = escape_html(name)
    );
    body::full(StatusCode::OK, "text/html; charset=utf-8", page)
}

/// `* /headers`: what reached the job, as JSON:
/// `{"job", "method", "uri", "path", "authority", "version", "headers": {name: value}, "header_list": [[name, value]],
/// "body_bytes", "peer_addr", "local_addr", "tls"}` (`tls`: `{"version", "alpn"}` or null). In `headers` the values of a repeated name are joined with `", "`;
/// `header_list` keeps every entry in order. The request body is read (streamed) and counted.
pub(super) async fn headers(
    request: Request<Incoming>,
    name: &str,
    connection: &ConnectionInfo,
) -> Response<Body> {
    let (parts, mut incoming) = request.into_parts();
    let mut joined = Map::new();
    let mut list = Vec::new();
    for (key, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        list.push(json!([key.as_str(), value]));
        match joined.get_mut(key.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                joined.insert(key.as_str().to_owned(), Value::String(value));
            }
        }
    }
    // HTTP/2 carries the authority in the URI (`:authority`), HTTP/1.1 in `Host`.
    let authority = parts
        .uri
        .authority()
        .map(|authority| authority.as_str().to_owned())
        .or_else(|| {
            joined
                .get("host")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
    let mut body_bytes: u64 = 0;
    while let Some(frame) = incoming.frame().await {
        match frame {
            Ok(frame) => body_bytes += frame.data_ref().map_or(0, |data| data.len() as u64),
            Err(error) => {
                return body::text(
                    StatusCode::BAD_REQUEST,
                    format!("reading the body failed: {error}\n"),
                )
            }
        }
    }
    body::json(
        StatusCode::OK,
        &json!({
            "job": name,
            "method": parts.method.as_str(),
            "uri": parts.uri.to_string(),
            "path": parts.uri.path_and_query().map_or("/", |path| path.as_str()),
            "authority": authority,
            "version": format!("{:?}", parts.version),
            "headers": joined,
            "header_list": list,
            "body_bytes": body_bytes,
            "peer_addr": connection.peer_addr.to_string(),
            "local_addr": connection.local_addr.to_string(),
            "tls": connection.tls.as_ref().map(|tls| json!({
                "version": tls.version,
                "alpn": tls.alpn,
            })),
        }),
    )
}

/// `GET /redirect`: 302 to `/target` on the address the client actually connected to.
pub(super) fn redirect(local_addr: SocketAddr) -> Response<Body> {
    let location = format!("http://{local_addr}/target");
    let mut response = body::text(StatusCode::FOUND, format!("redirecting to {location}\n"));
    // A socket address and a fixed path only hold valid header characters.
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// `GET /target`: where `/redirect` points.
pub(super) fn target(name: &str) -> Response<Body> {
    body::text(
        StatusCode::OK,
        format!("redirect target of demo job {name}\n"),
    )
}

/// `GET /delay?ms=N`: answers after N milliseconds.
pub(super) async fn delay<B>(request: &Request<B>) -> Response<Body> {
    let ms = match numeric_param(request, "ms", 0) {
        Ok(ms) => ms,
        Err(bad) => return bad.into_response(),
    };
    tokio::time::sleep(Duration::from_millis(ms)).await;
    body::text(StatusCode::OK, format!("delayed {ms} ms\n"))
}

/// `GET /status/N`: answers with status N (200..=999; informational codes are refused since
/// they cannot end a response).
pub(super) fn status(code: &str) -> Response<Body> {
    let status = match code
        .parse::<u16>()
        .ok()
        .and_then(|n| StatusCode::from_u16(n).ok())
    {
        Some(status) if !status.is_informational() => status,
        _ => {
            return body::text(
                StatusCode::BAD_REQUEST,
                format!("not a final status code: `{code}`\n"),
            )
        }
    };
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        let mut response = Response::new(body::empty());
        *response.status_mut() = status;
        return response;
    }
    body::text(status, format!("status {}\n", status.as_u16()))
}

/// `GET /static/...`: any path answers 200 with a line naming it.
pub(super) fn static_file(path: &str, name: &str) -> Response<Body> {
    let mut response = body::text(
        StatusCode::OK,
        format!("static {path} from demo job {name}\n"),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=60"),
    );
    response
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
