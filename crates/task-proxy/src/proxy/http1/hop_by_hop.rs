//! What a header name means to the proxy's HTTP/1 handling ([`Kind`], [`kind_of`]), and the
//! hop-by-hop policy built on it: the relay's head writer ([`super::head`]) and hyper's head
//! rewriting (`proxy/forward.rs`, through [`strip`]) classify names the same way, so both
//! paths drop the same headers.
//!
//! Hop-by-hop (RFC 9110 §7.6.1), never forwarded: `Connection` and the names it lists,
//! `Keep-Alive`, `Transfer-Encoding` (each hop frames its own body), `TE` except
//! `TE: trailers` (gRPC needs it end to end), `Upgrade` except on a WebSocket handshake the
//! proxy passes on, `HTTP2-Settings` (RFC 9113 §3.2.1: it only goes with `Upgrade: h2c`, which
//! is never passed on), and every `Proxy-*` header and `Proxy` itself (httpoxy). `Trailer` is
//! kept on purpose: it only announces trailer fields (RFC 9110 §6.6.2, not hop-by-hop there),
//! and hyper writes HTTP/1.1 trailers only for fields a message announced in it.

use crate::proxy::headers;
use http::header::{self as names, HeaderMap, HeaderName, HeaderValue};

/// What a header means to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Host,
    /// A routing header: `x-yt-taskproxy-id` or one of the operation triple headers.
    TaskProxyId,
    /// `Authorization`: a credential, for the auth gate (not forwarded as it came).
    Authorization,
    /// `Cookie`: may carry a credential, for the auth gate (not forwarded as it came).
    Cookie,
    /// `X-Forwarded-For`: merged into the proxy's one line.
    XForwardedFor,
    /// `X-Forwarded-Proto`, `X-Forwarded-Host`, `Forwarded`, `X-Real-IP`: set by the proxy,
    /// the caller's dropped.
    Forwarding,
    /// A name with `_`: dropped unless `--underscores-in-headers`.
    Underscored,
    /// `Set-Cookie` (responses: checked against the cookie policy).
    SetCookie,
    /// `Connection`: hop-by-hop, and its tokens matter.
    Connection,
    /// `Upgrade`: hop-by-hop; a request with it takes the general path.
    Upgrade,
    /// `TE`: hop-by-hop, except `TE: trailers` (gRPC needs it).
    Te,
    /// `Expect`: a request with it takes the general path.
    Expect,
    /// Not forwarded (`Keep-Alive`, `HTTP2-Settings` and `Proxy-*`).
    HopByHop,
    /// `Transfer-Encoding`: hop-by-hop (the relay keeps it on a chunked body it passes on
    /// unchanged).
    TransferEncoding,
    ContentLength,
    Location,
    Other,
}

impl Kind {
    /// Whether a header of this kind with this value concerns this hop only (the names a
    /// `Connection` header lists come on top, see [`listed`]).
    #[inline]
    pub fn is_hop_by_hop(self, value: &[u8]) -> bool {
        match self {
            Kind::Connection | Kind::Upgrade | Kind::HopByHop | Kind::TransferEncoding => true,
            Kind::Te => !value.eq_ignore_ascii_case(b"trailers"),
            _ => false,
        }
    }
}

pub fn kind_of(name: &[u8]) -> Kind {
    let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
    // By length first: one comparison for most names.
    let kind = match name.len() {
        2 if is(b"te") => Kind::Te,
        4 if is(b"host") => Kind::Host,
        6 if is(b"cookie") => Kind::Cookie,
        6 if is(b"expect") => Kind::Expect,
        7 if is(b"upgrade") => Kind::Upgrade,
        8 if is(b"location") => Kind::Location,
        9 if is(b"forwarded") || is(b"x-real-ip") => Kind::Forwarding,
        10 if is(b"connection") => Kind::Connection,
        10 if is(b"set-cookie") => Kind::SetCookie,
        10 if is(b"keep-alive") => Kind::HopByHop,
        13 if is(b"authorization") => Kind::Authorization,
        14 if is(b"content-length") => Kind::ContentLength,
        // Only meaningful with `Upgrade: h2c`, which is never passed on (RFC 9113 §3.2.1 makes
        // it hop-by-hop): a job must not see it either.
        14 if is(b"http2-settings") => Kind::HopByHop,
        15 if is(b"x-forwarded-for") => Kind::XForwardedFor,
        16 if is(b"x-forwarded-host") => Kind::Forwarding,
        // The identity headers are the proxy's to set (like the forwarding ones).
        19 if is(b"x-yt-taskproxy-user") => Kind::Forwarding,
        24 if is(b"x-yt-taskproxy-assertion") => Kind::Forwarding,
        17 | 22 | 24 | 27 | 30 if crate::routing::RoutingHeader::of(name).is_some() => {
            Kind::TaskProxyId
        }
        17 if is(b"transfer-encoding") => Kind::TransferEncoding,
        17 if is(b"x-forwarded-proto") => Kind::Forwarding,
        _ => Kind::Other,
    };
    if kind != Kind::Other {
        return kind;
    }
    // Every `Proxy-*` header, and `Proxy` itself (httpoxy): they concern this hop only.
    if name.len() >= 5 && name[..5].eq_ignore_ascii_case(b"proxy") {
        return Kind::HopByHop;
    }
    if headers::is_underscored(name) {
        return Kind::Underscored;
    }
    kind
}

/// The comma-separated tokens of a header value (`Connection`), trimmed.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// The header names a `Connection` value lists besides its own options (`close`,
/// `keep-alive`, `upgrade`): hop-by-hop too.
pub fn listed(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    tokens(value).filter(|t| {
        !t.eq_ignore_ascii_case(b"close")
            && !t.eq_ignore_ascii_case(b"keep-alive")
            && !t.eq_ignore_ascii_case(b"upgrade")
    })
}

/// Removes the hop-by-hop headers from a head hyper parsed (see the module docs). With
/// `keep_upgrade` (a WebSocket handshake whose `Upgrade` the caller has narrowed to
/// `websocket`), `Upgrade` stays and `Connection: upgrade` is set.
pub fn strip(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the names says which kinds the head carries; each hashed removal below
    // then runs only for those. Most heads carry none, and most responses of HTTP/1.1 jobs
    // only `Connection: keep-alive`: no allocation for either.
    let (mut connection, mut te, mut upgrade, mut others) = (false, false, false, false);
    for name in headers.keys() {
        match kind_of(name.as_str().as_bytes()) {
            Kind::Connection => connection = true,
            Kind::Te => te = true,
            Kind::Upgrade => upgrade = true,
            Kind::HopByHop | Kind::TransferEncoding => others = true,
            _ => {}
        }
    }
    if connection {
        // Every Connection line counts.
        let named: Vec<HeaderName> = headers
            .get_all(names::CONNECTION)
            .iter()
            .flat_map(|v| listed(v.as_bytes()))
            .filter_map(|t| HeaderName::from_bytes(t).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(names::CONNECTION);
    }
    if others {
        let hop: Vec<HeaderName> = headers
            .keys()
            .filter(|n| {
                matches!(
                    kind_of(n.as_str().as_bytes()),
                    Kind::HopByHop | Kind::TransferEncoding
                )
            })
            .cloned()
            .collect();
        for name in hop {
            headers.remove(name);
        }
    }
    if te {
        let first = headers
            .get(names::TE)
            .map_or(&b""[..], HeaderValue::as_bytes);
        if Kind::Te.is_hop_by_hop(first) {
            headers.remove(names::TE);
        }
    }
    if keep_upgrade {
        headers.insert(names::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if upgrade {
        headers.remove(names::UPGRADE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_classified_whatever_their_case() {
        for (name, kind) in [
            ("TE", Kind::Te),
            ("Keep-Alive", Kind::HopByHop),
            ("HTTP2-Settings", Kind::HopByHop),
            ("Proxy", Kind::HopByHop),
            ("proxy-authorization", Kind::HopByHop),
            ("Proxy-Connection", Kind::HopByHop),
            ("Connection", Kind::Connection),
            ("upgrade", Kind::Upgrade),
            ("Transfer-Encoding", Kind::TransferEncoding),
            ("Authorization", Kind::Authorization),
            ("COOKIE", Kind::Cookie),
            ("X-Real-IP", Kind::Forwarding),
            ("X-YT-TaskProxy-User", Kind::Forwarding),
            ("x-yt-taskproxy-assertion", Kind::Forwarding),
            ("x-yt-taskproxy-id", Kind::TaskProxyId),
            ("Content_Length", Kind::Underscored),
            ("Trailer", Kind::Other),
            ("proxyx", Kind::HopByHop),
            ("prox", Kind::Other),
        ] {
            assert_eq!(kind_of(name.as_bytes()), kind, "{name}");
        }
        assert!(Kind::Te.is_hop_by_hop(b"gzip") && !Kind::Te.is_hop_by_hop(b"Trailers"));
        assert!(!Kind::Other.is_hop_by_hop(b"") && Kind::Upgrade.is_hop_by_hop(b"websocket"));
        let listed: Vec<&[u8]> = listed(b" keep-alive, X-One ,,close, Upgrade,x-two").collect();
        assert_eq!(listed, [&b"X-One"[..], b"x-two"]);
    }

    #[test]
    fn hop_by_hop_named_on_any_connection_line() {
        let mut headers = HeaderMap::new();
        headers.append("connection", HeaderValue::from_static("keep-alive"));
        headers.append("connection", HeaderValue::from_static("x-one, close"));
        headers.append("connection", HeaderValue::from_static("X-Two"));
        for name in ["x-one", "x-two", "x-kept", "transfer-encoding", "te"] {
            headers.insert(name, HeaderValue::from_static("1"));
        }
        strip(&mut headers, false);
        let left: Vec<&str> = headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(left, ["x-kept"]);

        // The common response of a keep-alive job: only Connection goes.
        let mut headers = HeaderMap::new();
        headers.insert("connection", HeaderValue::from_static("keep-alive"));
        headers.insert("content-length", HeaderValue::from_static("15"));
        headers.insert("te", HeaderValue::from_static("trailers"));
        strip(&mut headers, false);
        let mut left: Vec<&str> = headers.keys().map(|n| n.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-length", "te"]);

        // An upgrade keeps Upgrade and gets `Connection: upgrade`.
        let mut headers = HeaderMap::new();
        headers.insert("upgrade", HeaderValue::from_static("websocket"));
        strip(&mut headers, true);
        assert_eq!(headers["connection"], "upgrade");
        assert_eq!(headers["upgrade"], "websocket");
    }

    /// Every name the relay would not forward, hyper's path removes too (and the other way
    /// round): one rule for both.
    #[test]
    fn strip_and_the_kind_rule_agree() {
        let names = [
            "te",
            "keep-alive",
            "http2-settings",
            "proxy",
            "proxy-authorization",
            "transfer-encoding",
            "upgrade",
            "x-other",
            "trailer",
            "host",
            "expect",
        ];
        for name in names {
            for value in ["trailers", "gzip"] {
                let mut headers = HeaderMap::new();
                headers.insert(
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                );
                strip(&mut headers, false);
                assert_eq!(
                    headers.is_empty(),
                    kind_of(name.as_bytes()).is_hop_by_hop(value.as_bytes()),
                    "{name}: {value}"
                );
            }
        }
    }
}
