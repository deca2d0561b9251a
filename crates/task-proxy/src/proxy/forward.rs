//! Rewriting requests for jobs and responses for callers: hop-by-hop headers removed (by the
//! rule of [`super::http1::hop_by_hop`], which the relay applies too),
//! forwarding headers and `Set-Cookie` treated as [`super::headers`] says (the policy the
//! relay applies too), the caller's Host kept (`:authority` becomes `Host` for HTTP/1.1 jobs),
//! the URI put in the form the upstream protocol needs, and absolute redirects to a job's own
//! `host:port` rewritten to the service domain the caller used.

use super::balance::ServiceBackends;
use super::headers::{self as policy, CookiePolicy, Forwarding};
use super::http1::hop_by_hop;
use crate::routing::Protocol;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::Version;

/// What the proxy knows about the caller's side of a request.
#[derive(Debug, Clone)]
pub struct ClientView {
    /// `http` or `https`: how the caller reached the proxy.
    pub scheme: &'static str,
    /// The caller's address, ready for `X-Forwarded-For`.
    pub peer_ip: HeaderValue,
}

/// Why a request cannot be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("the request has no usable host")]
    BadHost,
    #[error("the request target is not valid for the job")]
    BadTarget,
    #[error("the forwarding headers could not be built from the request")]
    BadForwarding,
}

/// The host the caller named (`:authority` for HTTP/2 and absolute-form targets, else `Host`).
pub fn client_host(parts: &http::request::Parts) -> Option<HeaderValue> {
    match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => parts.headers.get(header::HOST).cloned(),
    }
}

/// Rewrites the request head for the job.
pub fn prepare_request(
    parts: &mut http::request::Parts,
    protocol: Protocol,
    upgrade: bool,
    host: Option<&HeaderValue>,
    client: &ClientView,
    underscores_in_headers: bool,
) -> Result<(), ForwardError> {
    let headers = &mut parts.headers;
    hop_by_hop::strip(headers, upgrade);
    // Room for the five forwarding names, `TE` and `Host` at once: growing the map for the
    // last two cost more than all the forwarding headers together (callgrind).
    headers.reserve(7);

    if !underscores_in_headers {
        policy::drop_underscored(headers);
    }
    Forwarding {
        peer: client.peer_ip.as_bytes(),
        host: host.map(HeaderValue::as_bytes),
        scheme: client.scheme,
    }
    .apply(headers)
    .map_err(|_| ForwardError::BadForwarding)?;

    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    match protocol {
        // An https job may pick either version: the request is made for HTTP/1.1 here and
        // turned into HTTP/2 form on an h2 connection (`fit_version`), so its host must be one
        // that can become `:authority`.
        Protocol::Https if host.is_some_and(|h| Authority::try_from(h.as_bytes()).is_err()) => {
            return Err(ForwardError::BadHost);
        }
        Protocol::Http | Protocol::Https => {
            if parts.version == Version::HTTP_2 {
                // HTTP/2 callers can always take trailers; HTTP/1.1 jobs send them when asked.
                headers.insert(header::TE, HeaderValue::from_static("trailers"));
            }
            parts.version = Version::HTTP_11;
            if let Some(host) = host {
                headers.insert(header::HOST, host.clone());
            }
            if parts.uri.authority().is_some() {
                parts.uri = Uri::from(path);
            }
        }
        Protocol::Grpc => {
            parts.version = Version::HTTP_2;
            headers.remove(header::HOST);
            let authority = match (parts.uri.authority(), host) {
                (Some(a), _) => a.clone(),
                (None, Some(h)) => {
                    Authority::try_from(h.as_bytes()).map_err(|_| ForwardError::BadHost)?
                }
                (None, None) => Authority::from_static("localhost"),
            };
            parts.uri = Uri::builder()
                .scheme(Scheme::HTTP)
                .authority(authority)
                .path_and_query(path)
                .build()
                .map_err(|_| ForwardError::BadTarget)?;
        }
    }
    Ok(())
}

/// Puts a request made for an `https` service (HTTP/1.1 form, see [`prepare_request`]) in the
/// form of the connection it goes on: HTTP/2 (`:authority` from `Host`, `https` scheme) or
/// back to HTTP/1.1 (a request returned unsent by an HTTP/2 connection).
pub fn fit_version<B>(req: &mut http::Request<B>, h2: bool) -> Result<(), ForwardError> {
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    if h2 && req.version() != Version::HTTP_2 {
        let authority = match req.headers_mut().remove(header::HOST) {
            Some(h) => Authority::try_from(h.as_bytes()).map_err(|_| ForwardError::BadHost)?,
            None => Authority::from_static("localhost"),
        };
        *req.uri_mut() = Uri::builder()
            .scheme(Scheme::HTTPS)
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|_| ForwardError::BadTarget)?;
        *req.version_mut() = Version::HTTP_2;
    } else if !h2 && req.version() == Version::HTTP_2 {
        if let Some(authority) = req.uri().authority() {
            let host =
                HeaderValue::from_str(authority.as_str()).map_err(|_| ForwardError::BadHost)?;
            req.headers_mut().insert(header::HOST, host);
        }
        *req.uri_mut() = Uri::from(path);
        *req.version_mut() = Version::HTTP_11;
    }
    Ok(())
}

/// Rewrites the response head for the caller; returns how many `Set-Cookie` lines `cookies`
/// dropped.
pub fn prepare_response(
    parts: &mut http::response::Parts,
    upgrade: bool,
    backend: &ServiceBackends,
    host: Option<&HeaderValue>,
    client: &ClientView,
    cookies: &CookiePolicy<'_>,
) -> usize {
    let switching = upgrade && parts.status == http::StatusCode::SWITCHING_PROTOCOLS;
    hop_by_hop::strip(&mut parts.headers, switching);
    let dropped = cookies.filter(&mut parts.headers);
    if let (Some(location), Some(host)) = (parts.headers.get(header::LOCATION), host) {
        if let Some(rewritten) = rewrite_location(location, backend, host, client.scheme) {
            parts.headers.insert(header::LOCATION, rewritten);
        }
    }
    dropped
}

/// `scheme://<endpoint host:port>/rest` -> `<client scheme>://<client host>/rest` when the
/// authority is one of the service's endpoints.
pub(super) fn rewrite_location(
    location: &HeaderValue,
    backend: &ServiceBackends,
    host: &HeaderValue,
    scheme: &str,
) -> Option<HeaderValue> {
    let s = location.to_str().ok()?;
    let (_, rest) = s
        .split_once("://")
        .filter(|(sch, _)| sch.eq_ignore_ascii_case("http") || sch.eq_ignore_ascii_case("https"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let ours = backend
        .endpoints
        .iter()
        .any(|ep| ep.authority.eq_ignore_ascii_case(authority));
    if !ours {
        return None;
    }
    let host = host.to_str().ok()?;
    let tail = if tail.is_empty() { "/" } else { tail };
    HeaderValue::from_str(&format!("{scheme}://{host}{tail}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{RoutingSnapshot, ServiceSpec};

    fn client() -> ClientView {
        ClientView {
            scheme: "http",
            peer_ip: HeaderValue::from_static("10.0.0.9"),
        }
    }

    /// [`prepare_request`] for a plain request (no upgrade, underscored headers dropped).
    fn prepare(req: &mut http::request::Parts, protocol: Protocol, host: Option<&HeaderValue>) {
        prepare_request(req, protocol, false, host, &client(), false).unwrap();
    }

    #[test]
    fn hop_by_hop_and_forwarded() {
        let mut req = http::Request::builder()
            .uri("/p?q=1")
            .header("host", "abcdef12.d:8080")
            .header("connection", "keep-alive, x-secret")
            .header("x-secret", "1")
            .header("keep-alive", "timeout=5")
            .header("te", "trailers")
            .header("upgrade", "h2c")
            .header("http2-settings", "AAMAAABkAAQAoAAAAAIAAAAA")
            .header("proxy-authorization", "Basic x")
            .header("proxy", "http://evil")
            .header("proxy-connection", "keep-alive")
            .header("x-forwarded-for", "1.2.3.4")
            .header("x-forwarded-for", "5.6.7.8")
            .header("x-forwarded-host", "evil")
            .header("x-real-ip", "6.6.6.6")
            .header("content_length", "5")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let host = client_host(&req);
        prepare(&mut req, Protocol::Http, host.as_ref());
        let h = &req.headers;
        for gone in [
            "connection",
            "x-secret",
            "keep-alive",
            "upgrade",
            "http2-settings",
            "proxy-authorization",
            "proxy",
            "proxy-connection",
        ] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        assert_eq!(h["te"], "trailers");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 5.6.7.8, 10.0.0.9");
        assert_eq!(h["x-real-ip"], "10.0.0.9");
        assert_eq!(
            h["forwarded"],
            "for=10.0.0.9;host=\"abcdef12.d:8080\";proto=http"
        );
        assert!(!h.contains_key("content_length"));
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "abcdef12.d:8080");
        assert_eq!(h["host"], "abcdef12.d:8080");
        assert_eq!(req.uri, "/p?q=1");
    }

    #[test]
    fn authority_becomes_host_and_grpc_gets_absolute_uri() {
        let mut req = http::Request::builder()
            .version(Version::HTTP_2)
            .uri("http://abcdef12.d/svc/M")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let host = client_host(&req);
        let mut h1 = req.clone();
        prepare(&mut h1, Protocol::Http, host.as_ref());
        assert_eq!(h1.headers["host"], "abcdef12.d");
        assert_eq!(h1.uri, "/svc/M");
        assert_eq!(h1.version, Version::HTTP_11);
        prepare(&mut req, Protocol::Grpc, host.as_ref());
        assert_eq!(req.uri, "http://abcdef12.d/svc/M");
    }

    #[test]
    fn https_requests_fit_either_version() {
        let parts = http::Request::builder()
            .version(Version::HTTP_2)
            .uri("http://abcdef12.d:8080/p?q=1")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let mut h1 = parts.clone();
        let host = client_host(&h1);
        prepare(&mut h1, Protocol::Https, host.as_ref());
        assert_eq!(h1.version, Version::HTTP_11);
        assert_eq!(h1.headers["host"], "abcdef12.d:8080");
        assert_eq!(h1.uri, "/p?q=1");
        let mut req = http::Request::from_parts(h1, ());
        fit_version(&mut req, true).unwrap();
        assert_eq!(req.version(), Version::HTTP_2);
        assert_eq!(req.uri(), "https://abcdef12.d:8080/p?q=1");
        assert!(!req.headers().contains_key("host"));
        assert_eq!(req.headers()["te"], "trailers");
        fit_version(&mut req, true).unwrap();
        assert_eq!(req.uri(), "https://abcdef12.d:8080/p?q=1");
        fit_version(&mut req, false).unwrap();
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.uri(), "/p?q=1");
        assert_eq!(req.headers()["host"], "abcdef12.d:8080");

        // A Host that cannot be an :authority is refused before anything is sent.
        let mut bad = parts;
        let host = HeaderValue::from_static("a b");
        assert!(matches!(
            prepare_request(
                &mut bad,
                Protocol::Https,
                false,
                Some(&host),
                &client(),
                false
            ),
            Err(ForwardError::BadHost)
        ));
    }

    #[test]
    fn location_rewrite() {
        let snap = std::sync::Arc::new(RoutingSnapshot::build(
            "d",
            [ServiceSpec {
                operation_id: "o".into(),
                task_name: "t".into(),
                service: "s".into(),
                protocol: Protocol::Http,
                endpoints: vec!["127.0.0.1:9000".parse().unwrap()],
                operation_start_time: None,
                timeouts: Default::default(),
                sticky: None,
            }],
        ));
        let balancer = super::super::balance::Balancer::new(
            1,
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(1),
        );
        balancer.rebuild(&snap);
        let routes = balancer.current();
        let backend = routes.backend(&snap.routes()[0].hash).unwrap();
        let host = HeaderValue::from_static("abcdef12.d:8080");
        let got = rewrite_location(
            &HeaderValue::from_static("http://127.0.0.1:9000/x?y#z"),
            backend,
            &host,
            "https",
        );
        assert_eq!(got.unwrap(), "https://abcdef12.d:8080/x?y#z");
        assert!(rewrite_location(
            &HeaderValue::from_static("http://other:9000/x"),
            backend,
            &host,
            "http"
        )
        .is_none());
        assert!(rewrite_location(
            &HeaderValue::from_static("/relative"),
            backend,
            &host,
            "http"
        )
        .is_none());
    }
}
