//! Answers the proxy gives itself (not forwarded from a job): errors and refusals, rendered for
//! the caller — a trailers-only gRPC response for gRPC callers (so grpcurl prints the status),
//! a short HTML page for browsers when one is given, plain text otherwise.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

/// Errors of response bodies, whatever produced them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every response the proxy sends.
pub type ProxyBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// A body with fixed content.
pub fn full_body(data: impl Into<Bytes>) -> ProxyBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// gRPC status codes used by local answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum GrpcCode {
    NotFound = 5,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Unavailable = 14,
    DeadlineExceeded = 4,
    Unauthenticated = 16,
    Internal = 13,
    InvalidArgument = 3,
}

impl GrpcCode {
    /// The gRPC code for an HTTP status the proxy answers with.
    pub fn for_status(status: StatusCode) -> GrpcCode {
        match status.as_u16() {
            400 | 431 => GrpcCode::InvalidArgument,
            401 => GrpcCode::Unauthenticated,
            403 => GrpcCode::PermissionDenied,
            404 => GrpcCode::NotFound,
            429 => GrpcCode::ResourceExhausted,
            502 | 503 => GrpcCode::Unavailable,
            504 => GrpcCode::DeadlineExceeded,
            _ => GrpcCode::Internal,
        }
    }
}

/// How the caller wants a local answer rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerKind {
    Grpc,
    Browser,
    Other,
}

impl CallerKind {
    /// Classifies a request by its headers: `content-type: application/grpc*` is gRPC; an
    /// `Accept` that prefers `text/html` is a browser.
    pub fn of(headers: &HeaderMap) -> CallerKind {
        CallerKind::from_values(
            headers
                .get_all(header::CONTENT_TYPE)
                .iter()
                .map(HeaderValue::as_bytes),
            headers
                .get_all(header::ACCEPT)
                .iter()
                .map(HeaderValue::as_bytes),
        )
    }

    /// Classifies a request by the values of its `Content-Type` and `Accept` headers (for a
    /// head that was not parsed into a `HeaderMap`).
    pub fn from_values<'a>(
        content_types: impl IntoIterator<Item = &'a [u8]>,
        accepts: impl IntoIterator<Item = &'a [u8]>,
    ) -> CallerKind {
        // Called for every request: compare in place, without lowercasing copies.
        fn has<'a>(values: impl IntoIterator<Item = &'a [u8]>, needle: &str) -> bool {
            let needle = needle.as_bytes();
            values.into_iter().any(|v| {
                v.windows(needle.len())
                    .any(|w| w.eq_ignore_ascii_case(needle))
            })
        }
        if has(content_types, "application/grpc") {
            CallerKind::Grpc
        } else if has(accepts, "text/html") {
            CallerKind::Browser
        } else {
            CallerKind::Other
        }
    }
}

/// A local answer before it becomes a response: what each forwarding path writes its own way
/// (hyper's as a [`Response`], the relay straight into its output buffer, with no body to poll).
#[derive(Debug, Clone)]
pub struct LocalAnswer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl LocalAnswer {
    /// `status` with `message`, rendered for `caller`. `html` replaces the plain message for
    /// browsers when given (a full page).
    pub fn render(
        caller: CallerKind,
        status: StatusCode,
        message: &str,
        html: Option<String>,
    ) -> LocalAnswer {
        let mut headers = HeaderMap::new();
        // Browsers get a styled page even where the caller had no page of its own.
        let html = match (caller, html) {
            (CallerKind::Browser, None) => Some(crate::html::status_page(status, message, "")),
            (_, html) => html,
        };
        let (status, body) = match (caller, html) {
            (CallerKind::Grpc, _) => {
                // Trailers-only: HTTP 200, the gRPC status in the headers, no body.
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/grpc"),
                );
                headers.insert(
                    "grpc-status",
                    HeaderValue::from(GrpcCode::for_status(status) as u16),
                );
                headers.insert("grpc-message", grpc_message(message));
                return LocalAnswer {
                    status: StatusCode::OK,
                    headers,
                    body: Bytes::new(),
                };
            }
            (CallerKind::Browser, Some(page)) => {
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                (status, Bytes::from(page))
            }
            _ => {
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                (status, Bytes::from(format!("{message}\n")))
            }
        };
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        LocalAnswer {
            status,
            headers,
            body,
        }
    }

    pub fn into_response(self) -> Response<ProxyBody> {
        let mut response = Response::new(full_body(self.body));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response
    }
}

/// A local answer: `status` with `message`, rendered for `caller`. `html` replaces the plain
/// message for browsers when given (a full page); without it browsers get a styled page of
/// the status and the message.
pub fn local_answer(
    caller: CallerKind,
    status: StatusCode,
    message: &str,
    html: Option<String>,
) -> Response<ProxyBody> {
    LocalAnswer::render(caller, status, message, html).into_response()
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2 spec).
fn grpc_message(message: &str) -> HeaderValue {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static("error"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_callers_get_trailers_only() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert_eq!(CallerKind::of(&h), CallerKind::Grpc);
        let r = local_answer(
            CallerKind::Grpc,
            StatusCode::NOT_FOUND,
            "no such task: ü",
            None,
        );
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "5");
        assert_eq!(r.headers()["grpc-message"], "no such task: %C3%BC");
    }

    #[test]
    fn browsers_and_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html,application/xhtml+xml"),
        );
        assert_eq!(CallerKind::of(&h), CallerKind::Browser);
        let r = local_answer(
            CallerKind::Browser,
            StatusCode::UNAUTHORIZED,
            "x",
            Some("<p>x</p>".into()),
        );
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let r = local_answer(CallerKind::Other, StatusCode::BAD_GATEWAY, "x", None);
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
    }
}
