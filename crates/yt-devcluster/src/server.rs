//! The HTTP server: routing (`/api`, `/api/v4/<command>`, `/auth/whoami`, `/hosts`,
//! `/devcluster/*`), credentials, parameters from the query string, headers and bodies, body
//! decompression, output formats, fault knobs, and YT-shaped error answers.

use crate::cluster::Shared;
use crate::commands::{self, Call, Output};
use crate::error::YtError;
use crate::knobs::{CommandKnob, Fault};
use crate::operations::SyntheticLoad;
use crate::params::{Encoding, Params};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use http::{Method, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::Incoming;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The largest request body accepted (uploads of files and tables).
const MAX_BODY: usize = 512 * 1024 * 1024;

type Body = BoxBody<Bytes, std::convert::Infallible>;

/// A complete body.
fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// The trailers a heavy command announces; it fills them only when it fails mid-stream.
const ERROR_TRAILERS: &str = "X-YT-Error, X-YT-Response-Code, X-YT-Response-Message";
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The banner shown at start and on `GET /`.
pub fn banner(shared: &Shared) -> String {
    let mut text = format!(
        "YTsaurus DEVELOPMENT cluster at http://{addr} -- for development and tests only, \
         NOT for production data (everything lives in memory; jobs run as local processes).\n\
         Point the yt CLI at it: YT_PROXY=http://{addr} YT_TOKEN=alice-token yt list /\n\
         Users (token / other credentials):\n",
        addr = shared.addr
    );
    for u in shared.users.all() {
        let mut creds: Vec<String> = u.tokens.iter().map(|t| format!("token {t}")).collect();
        creds.extend(u.bearer_tokens.iter().map(|t| format!("bearer {t}")));
        creds.extend(
            u.cookies
                .iter()
                .map(|c| format!("cookie YTCypressCookie={c}")),
        );
        let mut roles = Vec::new();
        if u.superuser {
            roles.push("superuser".to_string());
        }
        if !u.operations_permissions.is_empty() {
            roles.push(format!(
                "{} on all operations",
                u.operations_permissions.join(",")
            ));
        }
        text.push_str(&format!(
            "  {:<18} {}{}\n",
            u.name,
            creds.join(", "),
            if roles.is_empty() {
                String::new()
            } else {
                format!(" ({})", roles.join("; "))
            }
        ));
    }
    text
}

/// Accepts connections until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(shared.clone(), req));
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(io, service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
            _ = async { let _ = shutdown.wait_for(|&s| s).await; } => break,
        }
    }
    connections.abort_all();
}

fn json_response(status: u16, value: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(value.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// A YT error answer: status, JSON body and the `X-YT-Error` header.
pub fn error_response(error: &YtError) -> Response<Body> {
    let json = error.to_json();
    let mut r = json_response(error.status, &json);
    if let Ok(v) = HeaderValue::from_str(&json.to_string()) {
        r.headers_mut().insert("x-yt-error", v);
    }
    r.headers_mut()
        .insert("x-yt-response-code", HeaderValue::from(error.code));
    r
}

fn text_response(status: u16, text: String) -> Response<Body> {
    let mut r = Response::new(full(text));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn handle(
    shared: Arc<Shared>,
    req: http::Request<Incoming>,
) -> Result<Response<Body>, BoxError> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    tracing::debug!(%method, uri = %req.uri(), "request");
    let (command, is_api) = match path.as_str() {
        "/auth/whoami" => ("whoami".to_string(), true),
        p => match p
            .strip_prefix("/api/v4/")
            .or_else(|| p.strip_prefix("/api/v3/"))
        {
            Some(c) if !c.is_empty() => (c.trim_end_matches('/').to_string(), true),
            _ => (String::new(), false),
        },
    };
    if !is_api {
        return Ok(handle_service(&shared, &method, &path, req).await);
    }
    shared.count_request(&command);
    let bearer = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes().starts_with(b"Bearer "));
    // A control proxy redirects heavy reads unless told not to or serving a browser.
    let suppress_redirect = req.headers().contains_key("x-yt-suppress-redirect")
        || req.headers().contains_key(http::header::COOKIE)
        || addressed_to_data_proxy(&shared, &req);
    let knob = shared.knobs.get(&command);
    let heavy = commands::descriptor(&command).is_some_and(|d| d.is_heavy);
    if let Some(knob) = knob
        .as_ref()
        .filter(|k| k.redirect && heavy && !suppress_redirect)
    {
        let host = knob
            .redirect_host
            .clone()
            .unwrap_or_else(|| data_proxy_name(&shared));
        let location = format!(
            "http://{host}{}",
            req.uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or(&path)
        );
        let mut response = Response::new(full(Bytes::new()));
        *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(http::header::LOCATION, value);
        }
        response
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        return Ok(response);
    }
    let error_trailer = heavy && knob.as_ref().is_some_and(|k| k.error_trailer);
    let omit_trailers = req.headers().contains_key("x-yt-omit-trailers");
    if bearer && shared.knobs.get(&command).is_some_and(|k| k.reject_bearer) {
        return Ok(error_response(&YtError::new(
            crate::error::codes::INVALID_CREDENTIALS,
            401,
            "Malformed Authorization header",
        )));
    }
    let user_agent = req
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    match shared.knobs.decide(&command, &user_agent) {
        Fault::None => {}
        Fault::Delay(d) => tokio::time::sleep(d).await,
        Fault::Error {
            delay,
            status,
            code,
            retry_after,
            message,
        } => {
            tokio::time::sleep(delay).await;
            let message = message.unwrap_or_else(|| {
                format!("Injected failure of command {command:?} (development cluster knob)")
            });
            let mut response = error_response(&YtError::new(code, status, message));
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            return Ok(response);
        }
        Fault::Refuse { delay } => {
            tokio::time::sleep(delay).await;
            return Err(format!("refusing {command} (development cluster knob)").into());
        }
    }
    let response = match handle_command(&shared, &command, req).await {
        Ok(r) if heavy && !omit_trailers => with_error_trailers(r, error_trailer).await,
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(command, code = e.code, message = %e.message, "command failed");
            error_response(&e)
        }
    };
    Ok(response)
}

/// The name this server answers to as a data proxy while heavy reads are redirected.
fn data_proxy_name(shared: &Shared) -> String {
    format!("localhost:{}", shared.addr.port())
}

/// Whether a request came to the data proxy's name (its `Host`), not the control proxy's.
fn addressed_to_data_proxy(shared: &Shared, req: &http::Request<Incoming>) -> bool {
    req.headers()
        .get(http::header::HOST)
        .is_some_and(|h| h.as_bytes() == data_proxy_name(shared).as_bytes())
}

/// A heavy command's answer as a data proxy sends it: the error trailers announced, and when
/// `fail` (the `error_trailer` knob), only the first half of the body followed by the error
/// in those trailers, as when a read breaks after the head was sent.
async fn with_error_trailers(response: Response<Body>, fail: bool) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    parts
        .headers
        .insert("trailer", HeaderValue::from_static(ERROR_TRAILERS));
    if !fail {
        return Response::from_parts(parts, body);
    }
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let half = bytes.slice(..bytes.len() / 2);
    let error = YtError::new(
        crate::error::codes::GENERIC,
        500,
        "Error reading table chunk (development cluster knob)",
    );
    let mut trailers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&error.to_json().to_string()) {
        trailers.insert("x-yt-error", v);
    }
    trailers.insert("x-yt-response-code", HeaderValue::from(error.code));
    if let Ok(v) = HeaderValue::from_str(&error.message) {
        trailers.insert("x-yt-response-message", v);
    }
    parts.headers.remove(http::header::CONTENT_LENGTH);
    let frames = futures_util::stream::iter([
        Ok(hyper::body::Frame::data(half)),
        Ok(hyper::body::Frame::trailers(trailers)),
    ]);
    Response::from_parts(parts, StreamBody::new(frames).boxed())
}

async fn read_body(body: Incoming) -> Result<Bytes, YtError> {
    Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| YtError::bad_request(format!("Cannot read the request body: {e}")))
}

async fn handle_service(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    req: http::Request<Incoming>,
) -> Response<Body> {
    match (method, path) {
        (_, "/") => text_response(200, banner(shared)),
        (_, "/ping") => text_response(200, String::new()),
        (_, "/api") => json_response(200, &serde_json::json!(["v3", "v4"])),
        (_, "/api/v4" | "/api/v4/" | "/api/v3" | "/api/v3/") => {
            let mut descriptors = commands::descriptors_json();
            if let Some(list) = descriptors.as_array_mut() {
                list.retain(|d| {
                    d.get("name")
                        .and_then(|n| n.as_str())
                        .is_none_or(|name| !shared.knobs.is_unregistered(name))
                });
            }
            json_response(200, &descriptors)
        }
        (_, p) if p == "/hosts" || p.starts_with("/hosts/") => {
            let name = if shared.knobs.redirects() {
                data_proxy_name(shared)
            } else {
                shared.addr.to_string()
            };
            json_response(200, &serde_json::json!([name]))
        }
        (&Method::GET, "/devcluster/knobs") => json_response(
            200,
            &serde_json::to_value(shared.knobs.snapshot()).unwrap_or_default(),
        ),
        (&Method::POST | &Method::PUT, "/devcluster/knobs") => {
            let body = match read_body(req.into_body()).await {
                Ok(b) => b,
                Err(e) => return error_response(&e),
            };
            match serde_json::from_slice::<BTreeMap<String, CommandKnob>>(&body) {
                Ok(knobs) => {
                    shared.knobs.replace(knobs);
                    json_response(
                        200,
                        &serde_json::to_value(shared.knobs.snapshot()).unwrap_or_default(),
                    )
                }
                Err(e) => error_response(&YtError::bad_request(format!(
                    "Knobs must be a JSON map of command (or \"*\") to knob: {e}"
                ))),
            }
        }
        (&Method::GET, "/devcluster/stats") => {
            let counts = shared
                .request_counts
                .lock()
                .map(|c| c.clone())
                .unwrap_or_default();
            let live_jobs = shared.runner.live_job_count();
            json_response(
                200,
                &serde_json::json!({"request_counts": counts, "live_job_processes": live_jobs}),
            )
        }
        (&Method::DELETE, "/devcluster/stats") => {
            if let Ok(mut c) = shared.request_counts.lock() {
                c.clear();
            }
            json_response(200, &serde_json::json!({}))
        }
        (&Method::POST, "/devcluster/synthetic") => {
            let body = match read_body(req.into_body()).await {
                Ok(b) => b,
                Err(e) => return error_response(&e),
            };
            let load: Result<SyntheticLoad, _> = if body.is_empty() {
                Ok(SyntheticLoad::default())
            } else {
                serde_json::from_slice(&body)
            };
            match load {
                Ok(load) => match shared.add_synthetic(&load) {
                    Ok(summary) => {
                        json_response(200, &serde_json::to_value(summary).unwrap_or_default())
                    }
                    Err(e) => error_response(&e),
                },
                Err(e) => error_response(&YtError::bad_request(format!("Bad synthetic load: {e}"))),
            }
        }
        _ => error_response(
            &YtError::new(
                1,
                404,
                format!("{method} {path} is not served by the development cluster"),
            )
            .with_attribute("path", yson::Node::string(path)),
        ),
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Collects parameters from the query string, `X-YT-Parameters` and (for commands without
/// input) the body.
fn collect_params(
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
    body_is_params: bool,
) -> Result<Params, YtError> {
    let mut params = Params::default();
    if let Some(q) = query {
        params.merge(Params::from_query(q)?);
    }
    let header_encoding = match header_str(headers, "x-yt-header-format") {
        Some(f) => Encoding::from_format_text(f)?,
        None => Encoding::Json,
    };
    if let Some(raw) = headers.get("x-yt-parameters") {
        params.merge(Params::parse_map(
            "X-YT-Parameters",
            header_encoding,
            raw.as_bytes(),
        )?);
    }
    if body_is_params && !body.iter().all(u8::is_ascii_whitespace) {
        let encoding = match header_str(headers, "content-type") {
            Some(ct) if ct.contains("yson") => Encoding::Yson,
            _ => Encoding::Json,
        };
        params.merge(Params::parse_map("the request body", encoding, body)?);
    }
    Ok(params)
}

fn decode_body(headers: &HeaderMap, body: Bytes) -> Result<Bytes, YtError> {
    match header_str(headers, "content-encoding").map(|s| s.trim().to_ascii_lowercase()) {
        None => Ok(body),
        Some(e) if e.is_empty() || e == "identity" => Ok(body),
        Some(e) if e == "gzip" || e == "deflate" => crate::inflate::gunzip(&body)
            .map(Bytes::from)
            .map_err(|err| YtError::bad_request(format!("Cannot decode the {e} request body: {err}"))),
        Some(e) => Err(YtError::bad_request(format!(
            "Content-Encoding {e:?} is not supported by the development cluster (use gzip or identity; \
             e.g. YT_CONTENT_ENCODING=gzip)"
        ))),
    }
}

fn format_from(
    params: &Params,
    param: &str,
    headers: &HeaderMap,
    header: &str,
) -> Result<Option<Encoding>, YtError> {
    if let Some(node) = params.node(param)? {
        return Encoding::from_format_node(&node).map(Some);
    }
    match header_str(headers, header) {
        Some(text) => Encoding::from_format_text(text).map(Some),
        None => Ok(None),
    }
}

async fn handle_command(
    shared: &Arc<Shared>,
    command: &str,
    req: http::Request<Incoming>,
) -> Result<Response<Body>, YtError> {
    let (parts, body) = req.into_parts();
    let headers = &parts.headers;
    let user = shared
        .users
        .authenticate(
            header_str(headers, "authorization"),
            header_str(headers, "cookie"),
        )?
        .name
        .clone();
    if command == "whoami" {
        return Ok(json_response(200, &serde_json::json!({"login": user})));
    }
    let descriptor = commands::descriptor(command);
    let body = decode_body(headers, read_body(body).await?)?;
    let body_is_params = match descriptor {
        Some(d) => d.input_type == "null",
        None => true,
    };
    let params = collect_params(headers, parts.uri.query(), &body, body_is_params)?;
    if descriptor.is_none() {
        return Err(YtError::not_implemented(command));
    }
    let output_encoding = format_from(&params, "output_format", headers, "x-yt-output-format")?
        .unwrap_or(Encoding::Json);
    let input_encoding = match format_from(&params, "input_format", headers, "x-yt-input-format")? {
        Some(e) => e,
        None => match header_str(headers, "content-type") {
            Some(ct) if ct.contains("json") => Encoding::Json,
            _ => Encoding::Yson,
        },
    };
    let call = Call {
        user: &user,
        params,
        body: if body_is_params { &[] } else { &body },
        input: input_encoding,
    };
    let output = commands::execute(shared, command, call).await?;
    let content_type = match output_encoding {
        Encoding::Json => "application/json",
        Encoding::Yson => "application/x-yt-yson-text",
    };
    let mut response_parameters = None;
    let (bytes, content_type) = match output {
        Output::Structured(node) => (output_encoding.write_document(&node), content_type),
        Output::Rows {
            rows,
            start_row_index,
        } => {
            let parameters = format!(
                "{{\"start_row_index\"={start_row_index};\"approximate_row_count\"={}}}",
                rows.len()
            );
            response_parameters = HeaderValue::from_str(&parameters).ok();
            (output_encoding.write_rows(&rows), content_type)
        }
        Output::Binary(b) => (b, "application/octet-stream"),
        Output::Null => (Vec::new(), "text/plain"),
    };
    let mut r = Response::new(full(bytes));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(v) = response_parameters {
        r.headers_mut().insert("x-yt-response-parameters", v);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn parameters_merge_query_header_and_body() {
        let h = headers(&[
            ("x-yt-header-format", "<format=text>yson"),
            ("x-yt-parameters", r#"{path="//from-header";limit=5}"#),
            ("content-type", "application/x-yt-yson-text"),
        ]);
        let p = collect_params(
            &h,
            Some("path=%2F%2Fq&user=alice"),
            b"{state=running}",
            true,
        )
        .unwrap();
        assert_eq!(p.str("path").unwrap(), "//from-header");
        assert_eq!(p.str("user").unwrap(), "alice");
        assert_eq!(p.str("state").unwrap(), "running");
        assert_eq!(p.i64("limit").unwrap(), Some(5));
        // A body that is command input is not read as parameters.
        let p = collect_params(&h, None, b"not yson at all {", false).unwrap();
        assert!(p.get("state").is_none());
    }

    #[test]
    fn json_is_the_default_header_format() {
        let h = headers(&[(
            "x-yt-parameters",
            r#"{"path": "//a", "attributes": ["id"]}"#,
        )]);
        let p = collect_params(&h, None, b"", true).unwrap();
        assert_eq!(p.str("path").unwrap(), "//a");
        let h = headers(&[("x-yt-parameters", "{path=//a}")]);
        let err = collect_params(&h, None, b"", true).unwrap_err();
        assert!(
            err.message.contains("X-YT-Parameters") && err.message.contains("JSON"),
            "{}",
            err.message
        );
        assert_eq!(err.status, 400);
    }

    #[test]
    fn broken_yson_body_is_a_clear_error() {
        let h = headers(&[("content-type", "application/x-yt-yson-text")]);
        let err = collect_params(&h, None, b"{path=", true).unwrap_err();
        assert!(err.message.contains("request body"), "{}", err.message);
    }

    #[test]
    fn bodies_are_decoded() {
        let h = headers(&[("content-encoding", "br")]);
        assert!(decode_body(&h, Bytes::from_static(b"x")).is_err());
        let h = headers(&[("content-encoding", "identity")]);
        assert_eq!(
            decode_body(&h, Bytes::from_static(b"x")).unwrap(),
            Bytes::from_static(b"x")
        );
        let h = headers(&[("content-encoding", "gzip")]);
        assert!(decode_body(&h, Bytes::from_static(b"not gzip at all, really")).is_err());
    }

    #[test]
    fn errors_carry_the_header() {
        let r = error_response(&YtError::resolve("no such node"));
        assert_eq!(r.status(), 400);
        let header = r.headers().get("x-yt-error").unwrap().to_str().unwrap();
        let json: serde_json::Value = serde_json::from_str(header).unwrap();
        assert_eq!(json["code"], 500);
        assert_eq!(json["message"], "no such node");
    }
}
