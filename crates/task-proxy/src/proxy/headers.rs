//! The header policy both forwarding paths apply — hyper's ([`super::forward`]) and the
//! HTTP/1.1 relay's ([`super::relay`]) — in one place, so a job and a caller see the same bytes
//! whichever path served the exchange:
//!
//! - **Forwarding headers.** The proxy is the edge: callers' `X-Forwarded-Host`,
//!   `X-Forwarded-Proto`, `Forwarded` and `X-Real-IP` are dropped and set by the proxy from
//!   what it routed on; every `X-Forwarded-For` line of the caller is merged into one, in
//!   order, with the peer's address appended.
//! - **Identity headers.** `X-YT-TaskProxy-User` and `X-YT-TaskProxy-Assertion` come from
//!   the proxy only ([`crate::auth::identity`]): the caller's copies are dropped.
//! - **Header names with `_`** are dropped from requests unless `--underscores-in-headers`
//!   (as nginx's `underscores_in_headers off`): CGI/WSGI servers map `Content_Length` onto
//!   `CONTENT_LENGTH`, the same variable as `Content-Length`.
//! - **`Set-Cookie` from jobs**: a cookie scoped to any domain but the service's own host, or
//!   named like the auth cookie or the affinity cookie ([`super::affinity`]), is dropped (one
//!   service must not plant or shadow cookies for the others or for the proxy's own). The
//!   proxy's affinity cookie is added after the job's lines.
//! - **Response framing**: `Transfer-Encoding` together with `Content-Length`, or transfer
//!   codings that do not end in exactly one `chunked`, make a response malformed (RFC 9112
//!   §6.1, §6.3; refused like HAProxy does rather than read until close).

use crate::auth::identity::{ASSERTION_HEADER, USER_HEADER};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Whether a request header name contains `_` (dropped unless `--underscores-in-headers`).
pub fn is_underscored(name: &[u8]) -> bool {
    name.contains(&b'_')
}

/// Removes every header whose name contains `_` (hyper's path). No allocation unless one does.
pub fn drop_underscored(headers: &mut HeaderMap) {
    if !headers
        .keys()
        .any(|n| is_underscored(n.as_str().as_bytes()))
    {
        return;
    }
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_underscored(n.as_str().as_bytes()))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

/// What the proxy knows about the hop it forwards: the values of the forwarding headers.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    /// The caller's address as text (`127.0.0.1`, `::1`).
    pub peer: &'a [u8],
    /// The host the request was routed on (`Host` or `:authority`), if any.
    pub host: Option<&'a [u8]>,
    /// `http` or `https`.
    pub scheme: &'a str,
}

impl Forwarding<'_> {
    /// Appends the forwarding header lines (CRLF-terminated), for the relay. `client_xff`: the
    /// values of the caller's `X-Forwarded-For` lines, in order.
    pub fn write_lines<'v>(&self, client_xff: impl Iterator<Item = &'v [u8]>, out: &mut Vec<u8>) {
        out.extend_from_slice(b"x-forwarded-for: ");
        x_forwarded_for(client_xff, self.peer, out);
        out.extend_from_slice(b"\r\nx-forwarded-proto: ");
        out.extend_from_slice(self.scheme.as_bytes());
        if let Some(host) = self.host {
            out.extend_from_slice(b"\r\nx-forwarded-host: ");
            out.extend_from_slice(host);
        }
        out.extend_from_slice(b"\r\nforwarded: ");
        self.forwarded(out);
        out.extend_from_slice(b"\r\nx-real-ip: ");
        out.extend_from_slice(self.peer);
        out.extend_from_slice(b"\r\n");
    }

    /// Replaces the caller's forwarding headers in `headers` by the proxy's (hyper's path).
    pub fn apply(&self, headers: &mut HeaderMap) -> Result<(), http::header::InvalidHeaderValue> {
        // Called for every request on hyper's path: the two built values are handed over
        // without a copy, the scheme is static, and the map grows once for the new names.
        let mut xff = Vec::with_capacity(self.peer.len() + 32);
        x_forwarded_for(
            headers
                .get_all(X_FORWARDED_FOR)
                .iter()
                .map(HeaderValue::as_bytes),
            self.peer,
            &mut xff,
        );
        let mut forwarded = Vec::with_capacity(64);
        self.forwarded(&mut forwarded);
        headers.reserve(5);
        // `insert` replaces every line of a name: the caller's values are gone.
        headers.insert(
            X_FORWARDED_FOR,
            HeaderValue::from_maybe_shared(Bytes::from(xff))?,
        );
        headers.insert(X_FORWARDED_PROTO, scheme_value(self.scheme)?);
        match self.host {
            Some(host) => {
                headers.insert(X_FORWARDED_HOST, HeaderValue::from_bytes(host)?);
            }
            None => {
                headers.remove(X_FORWARDED_HOST);
            }
        }
        headers.insert(
            FORWARDED,
            HeaderValue::from_maybe_shared(Bytes::from(forwarded))?,
        );
        headers.insert(X_REAL_IP, HeaderValue::from_bytes(self.peer)?);
        // Only the proxy speaks for the caller's identity (added after this, when signed).
        headers.remove(USER_HEADER);
        headers.remove(ASSERTION_HEADER);
        Ok(())
    }

    /// The `Forwarded` value (RFC 7239): `for=<peer>;host=<host>;proto=<scheme>`, an IPv6
    /// address as `"[addr]"` and a host that is not a token (e.g. with a port) quoted.
    fn forwarded(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"for=");
        if self.peer.contains(&b':') {
            out.extend_from_slice(b"\"[");
            out.extend_from_slice(self.peer);
            out.extend_from_slice(b"]\"");
        } else {
            token_or_quoted(self.peer, out);
        }
        if let Some(host) = self.host {
            out.extend_from_slice(b";host=");
            token_or_quoted(host, out);
        }
        out.extend_from_slice(b";proto=");
        out.extend_from_slice(self.scheme.as_bytes());
    }
}

/// The `X-Forwarded-Proto` value: the two schemes the proxy serves without an allocation.
fn scheme_value(scheme: &str) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    match scheme {
        "http" => Ok(HeaderValue::from_static("http")),
        "https" => Ok(HeaderValue::from_static("https")),
        other => HeaderValue::from_bytes(other.as_bytes()),
    }
}

/// The merged `X-Forwarded-For` value: the caller's values (trimmed, empty ones skipped) in
/// order, then the peer.
fn x_forwarded_for<'v>(client: impl Iterator<Item = &'v [u8]>, peer: &[u8], out: &mut Vec<u8>) {
    for value in client {
        let value = value.trim_ascii();
        if !value.is_empty() {
            out.extend_from_slice(value);
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(peer);
}

/// `value` as an RFC 9110 token when it is one, else as a quoted string.
fn token_or_quoted(value: &[u8], out: &mut Vec<u8>) {
    let is_tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    if !value.is_empty() && value.iter().all(is_tchar) {
        out.extend_from_slice(value);
        return;
    }
    out.push(b'"');
    for b in value {
        if *b == b'"' || *b == b'\\' {
            out.push(b'\\');
        }
        out.push(*b);
    }
    out.push(b'"');
}

/// Which `Set-Cookie` lines of a job's response reach the caller.
#[derive(Debug, Clone, Copy)]
pub struct CookiePolicy<'a> {
    /// The service's own host (`<hash>.<base-domain>`): the only `Domain` a job may scope a
    /// cookie to.
    pub service_host: &'a str,
    /// The auth cookie's name: no job may set a cookie of that name.
    pub auth_cookie: &'a str,
    /// The proxy's own `Set-Cookie` for this response (a sticky service's affinity cookie).
    pub add: Option<&'a HeaderValue>,
}

impl CookiePolicy<'_> {
    /// Whether the `Set-Cookie` value may reach the caller: not named like the auth cookie
    /// (case-insensitive), and either host-only or scoped to the service's own host (every
    /// `Domain` attribute compared case-insensitively, leading dot ignored).
    pub fn allows(&self, set_cookie: &[u8]) -> bool {
        let mut parts = set_cookie.split(|b| *b == b';');
        let pair = parts.next().unwrap_or_default().trim_ascii();
        // The name ends at `=`; a pair without `=` is a nameless cookie that browsers send
        // back as the bare value, which the credential parser may read as
        // `<auth cookie> <value>`: its first word counts as the name.
        let name = pair
            .split(|b| matches!(b, b'=' | b' ' | b'\t'))
            .next()
            .unwrap_or_default();
        if name.eq_ignore_ascii_case(self.auth_cookie.as_bytes())
            || super::affinity::is_cookie_name(name)
        {
            return false;
        }
        for attribute in parts {
            let mut kv = attribute.splitn(2, |b| *b == b'=');
            let key = kv.next().unwrap_or_default().trim_ascii();
            if !key.eq_ignore_ascii_case(b"domain") {
                continue;
            }
            let domain = kv.next().unwrap_or_default().trim_ascii();
            let domain = domain.strip_prefix(b".").unwrap_or(domain);
            // An empty Domain is ignored by browsers (RFC 6265 §5.2.3): host-only.
            if !domain.is_empty() && !domain.eq_ignore_ascii_case(self.service_host.as_bytes()) {
                return false;
            }
        }
        true
    }

    /// Drops the `Set-Cookie` lines that may not reach the caller and adds the proxy's own;
    /// returns how many were dropped (hyper's path). No allocation unless one is dropped.
    pub fn filter(&self, headers: &mut HeaderMap) -> usize {
        let refused = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter(|v| !self.allows(v.as_bytes()))
            .count();
        if refused != 0 {
            let kept: Vec<HeaderValue> = headers
                .get_all(header::SET_COOKIE)
                .iter()
                .filter(|v| self.allows(v.as_bytes()))
                .cloned()
                .collect();
            headers.remove(header::SET_COOKIE);
            for value in kept {
                headers.append(header::SET_COOKIE, value);
            }
        }
        if let Some(add) = self.add {
            // After the job's lines were checked: ours is named what jobs may not set.
            headers.append(header::SET_COOKIE, add.clone());
        }
        refused
    }
}

/// Why a job's response framing is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingConflict {
    #[error("the job's response has both Transfer-Encoding and Content-Length")]
    CodingAndLength,
    #[error("the job's response has transfer codings that do not end in one chunked")]
    NotChunked,
}

/// Checks a message's transfer codings (the values of all its `Transfer-Encoding` lines) and
/// whether it has a `Content-Length`. `Ok(true)`: chunked; `Ok(false)`: no transfer coding.
///
/// RFC 9112 §6.3 lets a response with codings not ending in `chunked` run until close, and
/// lets `Transfer-Encoding` override `Content-Length`; a proxy that keeps one of the two
/// views while the caller keeps the other passes on bytes past the message (response
/// splitting), so both shapes are refused (§6.1: chunked at most once and last). The framing
/// guard holds requests to the same rule (request smuggling is the same disagreement).
pub fn transfer_codings<'v>(
    codings: impl Iterator<Item = &'v [u8]>,
    has_length: bool,
) -> Result<bool, FramingConflict> {
    let (mut any, mut chunked, mut last_chunked) = (false, 0usize, false);
    for value in codings {
        any = true;
        for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            if token.is_empty() {
                continue;
            }
            last_chunked = token.eq_ignore_ascii_case(b"chunked");
            chunked += usize::from(last_chunked);
        }
    }
    if !any {
        return Ok(false);
    }
    if has_length {
        return Err(FramingConflict::CodingAndLength);
    }
    if chunked != 1 || !last_chunked {
        return Err(FramingConflict::NotChunked);
    }
    Ok(true)
}

/// [`transfer_codings`] for a response hyper parsed.
pub fn check_response_framing(headers: &HeaderMap) -> Result<(), FramingConflict> {
    transfer_codings(
        headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .map(HeaderValue::as_bytes),
        headers.contains_key(header::CONTENT_LENGTH),
    )
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarding_lines_and_values_agree() {
        let f = Forwarding {
            peer: b"::1",
            host: Some(b"abc.d:8080"),
            scheme: "https",
        };
        let mut out = Vec::new();
        f.write_lines(
            [&b" 1.1.1.1 "[..], b"", b"2.2.2.2, 3.3.3.3"].into_iter(),
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "x-forwarded-for: 1.1.1.1, 2.2.2.2, 3.3.3.3, ::1\r\nx-forwarded-proto: https\r\n\
             x-forwarded-host: abc.d:8080\r\nforwarded: for=\"[::1]\";host=\"abc.d:8080\";proto=https\r\n\
             x-real-ip: ::1\r\n"
        );
        let mut h = HeaderMap::new();
        for v in ["1.1.1.1", "2.2.2.2, 3.3.3.3"] {
            h.append(X_FORWARDED_FOR, HeaderValue::from_static(v));
        }
        h.insert(X_FORWARDED_HOST, HeaderValue::from_static("evil"));
        h.insert(X_REAL_IP, HeaderValue::from_static("6.6.6.6"));
        h.insert(FORWARDED, HeaderValue::from_static("for=6.6.6.6"));
        f.apply(&mut h).unwrap();
        assert_eq!(h.get_all(X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(h[X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 3.3.3.3, ::1");
        assert_eq!(h[X_FORWARDED_HOST], "abc.d:8080");
        assert_eq!(h[X_REAL_IP], "::1");
        assert_eq!(
            h[FORWARDED],
            "for=\"[::1]\";host=\"abc.d:8080\";proto=https"
        );

        let v4 = Forwarding {
            peer: b"10.0.0.1",
            host: Some(b"abc.d"),
            scheme: "http",
        };
        let mut out = Vec::new();
        v4.forwarded(&mut out);
        assert_eq!(out, b"for=10.0.0.1;host=abc.d;proto=http");
        let mut out = Vec::new();
        token_or_quoted(b"a\"b\\c", &mut out);
        assert_eq!(out, b"\"a\\\"b\\\\c\"");
    }

    #[test]
    fn set_cookie_scopes() {
        let p = CookiePolicy {
            service_host: "abc123.tp.test",
            auth_cookie: "YTCypressCookie",
            add: None,
        };
        for kept in [
            "a=1",
            "a=1; Path=/; HttpOnly",
            "a=1; Domain=abc123.tp.test",
            "a=1; domain=.ABC123.TP.TEST; Secure",
            "a=1; Domain=",
            "YTCypressCookieX=1",
        ] {
            assert!(p.allows(kept.as_bytes()), "{kept}");
        }
        for dropped in [
            "a=1; Domain=tp.test",
            "a=1; Domain=.tp.test",
            "a=1; domain=TP.test",
            "a=1; Domain=test",
            "a=1; Domain=abc123.tp.test; Domain=tp.test",
            "a=1; Domain=other.tp.test",
            "YTCypressCookie=x",
            "ytcypresscookie=x; Path=/",
            " YTCypressCookie = x",
            "YTCypressCookie x",
            "YTCypressCookie",
            "tp_affinity=x; Path=/",
            "__Host-tp_affinity=x",
            "TP_Affinity=x",
        ] {
            assert!(!p.allows(dropped.as_bytes()), "{dropped}");
        }
        let mut h = HeaderMap::new();
        for v in ["a=1", "b=2; Domain=tp.test", "c=3"] {
            h.append(header::SET_COOKIE, HeaderValue::from_static(v));
        }
        assert_eq!(p.filter(&mut h), 1);
        let left: Vec<_> = h.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(left, ["a=1", "c=3"]);

        // The proxy's affinity cookie replaces a job's attempt at it.
        let ours = HeaderValue::from_static("tp_affinity=ours; Path=/");
        let with_ours = CookiePolicy {
            add: Some(&ours),
            ..p
        };
        let mut h = HeaderMap::new();
        for v in ["tp_affinity=job", "a=1"] {
            h.append(header::SET_COOKIE, HeaderValue::from_static(v));
        }
        assert_eq!(with_ours.filter(&mut h), 1);
        let left: Vec<_> = h.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(left, ["a=1", "tp_affinity=ours; Path=/"]);
    }

    #[test]
    fn framing() {
        let check = |te: &[&str], cl| transfer_codings(te.iter().map(|v| v.as_bytes()), cl);
        assert_eq!(check(&[], true), Ok(false));
        assert_eq!(check(&["chunked"], false), Ok(true));
        assert_eq!(check(&["gzip, Chunked"], false), Ok(true));
        assert_eq!(check(&["gzip", "chunked"], false), Ok(true));
        assert_eq!(
            check(&["chunked"], true),
            Err(FramingConflict::CodingAndLength)
        );
        assert_eq!(
            check(&["gzip"], true),
            Err(FramingConflict::CodingAndLength)
        );
        for te in [
            &["gzip"][..],
            &["chunked, gzip"],
            &["chunked", "chunked"],
            &[""],
        ] {
            assert_eq!(check(te, false), Err(FramingConflict::NotChunked), "{te:?}");
        }
        assert!(is_underscored(b"x_a") && !is_underscored(b"x-a"));
    }
}
