//! The `/static` exemption: requests for static assets of `ui` services (SPYT UIs load them
//! before any cookie logic runs) skip auth.
//!
//! Only a *clean* path under the prefix skips. The path is checked as the job will see it, and
//! anything that a server could interpret as leaving the prefix is refused the exemption (so it
//! goes through auth as usual): dot segments (`/static/../api`), encoded dots, slashes or
//! backslashes (`/static/%2e%2e/api`, `/static/..%2fapi`), empty segments (`//static`,
//! `/static//x`), backslashes, `;` path parameters (`/static/..;/api`), stray `%`, control and
//! non-ASCII bytes. Comparison is case-sensitive: `/STATIC/x` needs auth.
//!
//! Only a *plain fetch* skips ([`Fetch`]): `GET` or `HEAD`, no body, no `Upgrade` (nor
//! `HTTP2-Settings`, `Expect`, `Transfer-Encoding`), and a `Connection` header naming nothing
//! but `close`/`keep-alive`. Anything more than fetching a file (an upload, a protocol switch
//! that would turn the connection into a tunnel to the job, a request that asks the proxy to
//! drop headers) goes through auth like any other path.

use http::{header, HeaderMap, Method};

/// Which requests skip auth: paths under `path_prefix` of services named in `services`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticSkip {
    services: Vec<String>,
    /// Starts and ends with `/`.
    prefix: String,
}

impl Default for StaticSkip {
    /// `/static/` of services named `ui`.
    fn default() -> Self {
        StaticSkip::new(vec!["ui".to_string()], "/static")
    }
}

impl StaticSkip {
    /// `prefix` is normalized to start and end with `/`; an empty `services` list turns the
    /// exemption off.
    pub fn new(services: Vec<String>, prefix: &str) -> StaticSkip {
        let trimmed = prefix.trim_matches('/');
        let prefix = if trimmed.is_empty() {
            "/".to_string()
        } else {
            format!("/{trimmed}/")
        };
        StaticSkip { services, prefix }
    }

    /// An exemption that never applies.
    pub fn none() -> StaticSkip {
        StaticSkip::new(Vec::new(), "/static")
    }

    /// Whether a plain-fetch request for `path` (without the query) of service `service`
    /// skips auth.
    pub fn applies(&self, service: &str, path: &str) -> bool {
        self.services.iter().any(|s| s == service) && is_clean_path_under(path, &self.prefix)
    }

    /// Whether a request of shape `fetch` for `path` of `service` skips auth: only plain
    /// fetches do.
    pub fn admits(&self, service: &str, path: &str, fetch: Fetch) -> bool {
        fetch == Fetch::Plain && self.applies(service, path)
    }
}

/// What a request does beyond naming a path, as far as the exemption cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    /// `GET`/`HEAD` of a resource and nothing more: may skip auth on a static path.
    Plain,
    /// Anything else (another method, a body, an upgrade, ...): always checked.
    Other,
}

impl Fetch {
    /// The shape of a request with `method` and `headers`; `body_empty` says whether its body
    /// is known to be empty (an HTTP/2 request can carry DATA without a `Content-Length`).
    pub fn of(method: &Method, headers: &HeaderMap, body_empty: bool) -> Fetch {
        let method_ok = *method == Method::GET || *method == Method::HEAD;
        // A Content-Length of 0 is a plain fetch still (some clients send it on GET).
        let no_length = headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .all(|v| v.as_bytes().trim_ascii() == b"0");
        // `Connection` naming anything else asks the proxy to drop those headers: not plain.
        let connection_plain = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .all(|t| {
                t.is_empty()
                    || t.eq_ignore_ascii_case(b"close")
                    || t.eq_ignore_ascii_case(b"keep-alive")
            });
        let plain = method_ok
            && body_empty
            && no_length
            && connection_plain
            && !headers.contains_key(header::UPGRADE)
            && !headers.contains_key("http2-settings")
            && !headers.contains_key(header::TRANSFER_ENCODING)
            && !headers.contains_key(header::EXPECT);
        if plain {
            Fetch::Plain
        } else {
            Fetch::Other
        }
    }
}

/// Whether `path` lies strictly under `prefix` (which starts and ends with `/`) with nothing a
/// server could resolve to another place.
pub fn is_clean_path_under(path: &str, prefix: &str) -> bool {
    let Some(rest) = path.strip_prefix(prefix) else {
        return false;
    };
    if rest.is_empty() || prefix.contains("//") {
        return false;
    }
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {}
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@' => {}
            b'%' => {
                let decoded = match (bytes.get(i + 1), bytes.get(i + 2)) {
                    (Some(h), Some(l)) => match (hex_value(*h), hex_value(*l)) {
                        (Some(h), Some(l)) => h * 16 + l,
                        _ => return false,
                    },
                    _ => return false,
                };
                // An escape may only stand for a harmless byte.
                if !(0x20..0x7f).contains(&decoded)
                    || matches!(decoded, b'.' | b'/' | b'\\' | b'%' | b';')
                {
                    return false;
                }
                i += 3;
                continue;
            }
            _ => return false,
        }
        i += 1;
    }
    // Segments after the prefix: no empty ones (a trailing `/` is fine), no dot segments.
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if (segment.is_empty() && !last) || segment == "." || segment == ".." {
            return false;
        }
    }
    true
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetch(method: Method, headers: &[(&str, &str)], body_empty: bool) -> Fetch {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        Fetch::of(&method, &map, body_empty)
    }

    #[test]
    fn only_plain_fetches_skip() {
        let skip = StaticSkip::default();
        let plain = [
            fetch(Method::GET, &[], true),
            fetch(Method::HEAD, &[], true),
            fetch(Method::GET, &[("connection", "keep-alive")], true),
            fetch(
                Method::GET,
                &[("connection", "Close"), ("content-length", "0")],
                true,
            ),
        ];
        for f in plain {
            assert_eq!(f, Fetch::Plain);
            assert!(skip.admits("ui", "/static/app.js", f));
        }
        let other = [
            fetch(Method::POST, &[], true),
            fetch(Method::PUT, &[], true),
            fetch(Method::OPTIONS, &[], true),
            fetch(Method::CONNECT, &[], true),
            fetch(Method::GET, &[], false),
            fetch(Method::GET, &[("upgrade", "h2c")], true),
            fetch(
                Method::GET,
                &[("upgrade", "websocket"), ("connection", "upgrade")],
                true,
            ),
            fetch(
                Method::GET,
                &[("http2-settings", "AAMAAABkAAQAoAAAAAIAAAAA")],
                true,
            ),
            fetch(Method::GET, &[("connection", "upgrade")], true),
            fetch(Method::GET, &[("connection", "keep-alive, x-auth")], true),
            fetch(Method::GET, &[("content-length", "5")], true),
            fetch(Method::GET, &[("transfer-encoding", "chunked")], true),
            fetch(Method::GET, &[("expect", "100-continue")], true),
        ];
        for f in other {
            assert_eq!(f, Fetch::Other);
            assert!(!skip.admits("ui", "/static/app.js", f));
        }
    }

    #[test]
    fn clean_static_paths_skip() {
        let skip = StaticSkip::default();
        for path in [
            "/static/app.js",
            "/static/js/main.0a1b.chunk.js",
            "/static/css/",
            "/static/fonts/Open%20Sans.woff2",
            "/static/a..b.js",
            "/static/.hidden",
            "/static/x-y_z~1.png",
        ] {
            assert!(skip.applies("ui", path), "{path} should skip");
        }
    }

    #[test]
    fn only_listed_services_skip() {
        let skip = StaticSkip::default();
        assert!(!skip.applies("rest", "/static/app.js"));
        assert!(!skip.applies("port_0", "/static/app.js"));
        assert!(!StaticSkip::none().applies("ui", "/static/app.js"));
        let custom = StaticSkip::new(vec!["dash".into()], "assets/");
        assert!(custom.applies("dash", "/assets/a.js"));
        assert!(!custom.applies("dash", "/static/a.js"));
    }

    #[test]
    fn traversal_and_tricks_do_not_skip() {
        let skip = StaticSkip::default();
        for path in [
            "/static",
            "/static/",
            "/api",
            "/",
            "",
            "/static/../api",
            "/static/..",
            "/static/./app.js",
            "/static/%2e%2e/api",
            "/static/%2E%2E/api",
            "/static/.%2e/api",
            "/static/..%2fapi",
            "/static/..%2Fapi",
            "/static/%2fapi",
            "/static/..%5capi",
            "/static/..\\api",
            "/static/..;/api",
            "/static/x;jsessionid=1",
            "//static/app.js",
            "/static//app.js",
            "/static/a//b.js",
            "/./static/app.js",
            "/api/../static/app.js",
            "/static/%252e%252e/api",
            "/static/%",
            "/static/%2",
            "/static/%zz",
            "/static/%00",
            "/static/a\u{0}b",
            "/static/ü.js",
            "/STATIC/app.js",
            "/staticfoo/app.js",
            "/static%2fapp.js",
            "/static/a b.js",
            "/static/app.js?x=1",
            "/static/app.js#x",
        ] {
            assert!(!skip.applies("ui", path), "{path:?} must not skip");
        }
    }
}
