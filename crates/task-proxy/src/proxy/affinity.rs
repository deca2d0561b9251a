//! The affinity cookie of sticky services: which job a browser keeps reaching.
//!
//! A sticky service's response carries `tp_affinity=<token>` (`__Host-tp_affinity` under
//! TLS or behind an ingress that ends it, `--portal-scheme https`: `Secure`, and browsers
//! refuse it with a `Domain`), host-only, `Path=/`, `HttpOnly`,
//! `SameSite=Lax`, for the browser session. The token is a keyed MAC of the service's domain
//! and the endpoint's address (HMAC-SHA256 under the portal's key when `--portal-key-file` is
//! given, so every replica reads every replica's cookies; else a key of this process), cut to
//! 128 bits: it says nothing about the job, and the proxy maps it back by comparing it with
//! the tokens of the service's current endpoints ([`super::balance::ServiceBackends`]). A
//! forged, tampered or stale token matches none and is ignored like a missing one.
//!
//! The job never sees the cookie: [`take`] removes it (both names, joined forms too) with the
//! auth cookie's own code ([`crate::auth::credentials::take_cookie`]), and a job's
//! `Set-Cookie` of either name is dropped ([`super::headers::CookiePolicy`]).
//!
//! Hand-written rather than a cookie crate: one name, one fixed value shape, and the parsing
//! must be the one that already strips the auth cookie.

use crate::auth::credentials::take_cookie;
use crate::auth::session::{Kind, SessionKey};
use crate::routing::Endpoint;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderMap, HeaderValue};

/// The cookie's name on plain HTTP.
pub const COOKIE: &str = "tp_affinity";
/// The cookie's name under TLS (the `__Host-` prefix: `Secure`, host-only, `Path=/`).
pub const SECURE_COOKIE: &str = "__Host-tp_affinity";

/// The token's length in bytes (a truncated HMAC-SHA256).
const TOKEN_LEN: usize = 16;

/// Whether a cookie name is one of the affinity cookie's (case-insensitive: a job must not
/// shadow it with another spelling either).
pub fn is_cookie_name(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(COOKIE.as_bytes())
        || name.eq_ignore_ascii_case(SECURE_COOKIE.as_bytes())
}

/// An opaque affinity token: which endpoint of which service, under the key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Token([u8; TOKEN_LEN]);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// The cookie value: 22 characters of base64url.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// A token from a cookie value; `None` for anything that is not one.
    pub fn decode(value: &str) -> Option<Token> {
        // 22 characters, and nothing longer is decoded at all.
        if value.len() != 22 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
        Some(Token(bytes.try_into().ok()?))
    }

    /// Compares without an early exit, so response times do not tell how much of a guessed
    /// token was right.
    pub fn matches(&self, other: &Token) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// The key affinity tokens are made with. `Debug` never prints it.
#[derive(Debug, Clone)]
pub struct AffinityKey(SessionKey);

impl AffinityKey {
    pub fn new(key: SessionKey) -> AffinityKey {
        AffinityKey(key)
    }

    /// A random key: cookies are understood by this process only.
    pub fn generate() -> AffinityKey {
        AffinityKey(SessionKey::generate())
    }

    /// The token of `endpoint` as an endpoint of the service at `service_domain`.
    pub fn token(&self, service_domain: &str, endpoint: &Endpoint) -> Token {
        let authority = endpoint.authority();
        let mut payload = Vec::with_capacity(service_domain.len() + authority.len() + 1);
        payload.extend_from_slice(service_domain.to_ascii_lowercase().as_bytes());
        payload.push(0);
        payload.extend_from_slice(authority.as_bytes());
        let tag = self.0.tag(Kind::Affinity, &payload);
        let mut token = [0u8; TOKEN_LEN];
        token.copy_from_slice(&tag[..TOKEN_LEN]);
        Token(token)
    }
}

/// Removes both affinity cookies from a request's `Cookie` headers and returns the token of
/// the one that counts on this connection (`__Host-` under TLS, the plain name otherwise), if
/// it is well-formed. Cheap when there is no `Cookie` header.
pub fn take(headers: &mut HeaderMap, tls: bool) -> Option<Token> {
    if !headers.contains_key(http::header::COOKIE) {
        return None;
    }
    let secure = take_cookie(headers, SECURE_COOKIE).value;
    let plain = take_cookie(headers, COOKIE).value;
    let value = if tls { secure } else { plain }?;
    Token::decode(value.expose())
}

/// Whether a request is gRPC by its `Content-Type`.
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The `Set-Cookie` value that makes a browser send `token` back.
pub fn set_cookie(token: &Token, tls: bool) -> HeaderValue {
    let value = if tls {
        format!(
            "{SECURE_COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Lax",
            token.encode()
        )
    } else {
        format!(
            "{COOKIE}={}; Path=/; HttpOnly; SameSite=Lax",
            token.encode()
        )
    };
    // base64url and fixed ASCII: always a valid header value.
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        s.parse().unwrap()
    }

    #[test]
    fn tokens_round_trip_and_name_nothing() {
        let key = AffinityKey::generate();
        let t = key.token("abc.tp.test", &ep("10.0.0.7:8080"));
        let text = t.encode();
        assert_eq!(text.len(), 22);
        assert!(!text.contains("10.0.0.7") && !text.contains("8080"));
        assert_eq!(Token::decode(&text), Some(t));
        // Deterministic for one key, service and endpoint; different for any other.
        assert!(t.matches(&key.token("ABC.tp.test", &ep("10.0.0.7:8080"))));
        assert!(!t.matches(&key.token("abc.tp.test", &ep("10.0.0.7:8081"))));
        assert!(!t.matches(&key.token("abd.tp.test", &ep("10.0.0.7:8080"))));
    }

    #[test]
    fn another_key_tampering_and_garbage_match_nothing() {
        let key = AffinityKey::generate();
        let endpoint = ep("10.0.0.7:8080");
        let t = key.token("s.tp.test", &endpoint);
        let other = AffinityKey::generate().token("s.tp.test", &endpoint);
        assert!(!t.matches(&other), "a token of another key");
        // Every single-character change of the value is another token or none.
        let text = t.encode();
        for i in 0..text.len() {
            let mut chars: Vec<char> = text.chars().collect();
            chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
            let tampered: String = chars.into_iter().collect();
            if let Some(d) = Token::decode(&tampered) {
                assert!(!d.matches(&t), "{tampered}");
            }
        }
        for garbage in [
            "",
            "x",
            "10.0.0.7:8080",
            "!!!!!!!!!!!!!!!!!!!!!!",
            "AAAAAAAAAAAAAAAAAAAAAAAA",
            &format!("{text}="),
            &"A".repeat(10_000),
        ] {
            assert!(Token::decode(garbage).is_none(), "{garbage}");
        }
    }

    #[test]
    fn taking_strips_both_names_and_joined_forms() {
        let key = AffinityKey::generate();
        let t = key.token("s.tp.test", &ep("10.0.0.7:8080")).encode();
        let cases: Vec<(String, bool, Option<&str>)> = vec![
            (
                format!("a=1; tp_affinity={t}; b=2"),
                false,
                Some("a=1; b=2"),
            ),
            (format!("tp_affinity={t}"), false, None),
            (format!("__Host-tp_affinity={t}; a=1"), true, Some("a=1")),
            // Joined with a comma or after whitespace: removed, never used.
            (format!("a=1, tp_affinity={t}"), false, Some("a=1")),
            (format!("a=1 tp_affinity={t}; b=2"), false, Some("b=2")),
            // A look-alike stays.
            ("tp_affinityX=1".to_string(), false, Some("tp_affinityX=1")),
        ];
        for (cookie, tls, left) in cases {
            let mut headers = HeaderMap::new();
            headers.insert(
                http::header::COOKIE,
                HeaderValue::from_str(&cookie).unwrap(),
            );
            let _ = take(&mut headers, tls);
            assert_eq!(
                headers
                    .get(http::header::COOKIE)
                    .map(|v| v.to_str().unwrap()),
                left,
                "{cookie}"
            );
        }
        // The name of the connection's kind counts; the other is only removed.
        let both = format!("tp_affinity={t}; __Host-tp_affinity={t}");
        for tls in [false, true] {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::COOKIE, HeaderValue::from_str(&both).unwrap());
            assert_eq!(take(&mut headers, tls).map(|x| x.encode()), Some(t.clone()));
            assert!(headers.get(http::header::COOKIE).is_none());
        }
        let mut headers = HeaderMap::new();
        let plain_only = format!("tp_affinity={t}");
        headers.insert(
            http::header::COOKIE,
            HeaderValue::from_str(&plain_only).unwrap(),
        );
        assert_eq!(
            take(&mut headers, true),
            None,
            "under TLS only __Host- counts"
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            HeaderValue::from_static("a=1, tp_affinity=x"),
        );
        assert_eq!(take(&mut headers, false), None);
    }

    #[test]
    fn the_cookie_is_host_only_and_http_only() {
        let t = AffinityKey::generate().token("s.tp.test", &ep("10.0.0.7:8080"));
        let plain = set_cookie(&t, false);
        let plain = plain.to_str().unwrap();
        assert!(plain.starts_with("tp_affinity="));
        let secure = set_cookie(&t, true);
        let secure = secure.to_str().unwrap();
        assert!(secure.starts_with("__Host-tp_affinity="));
        assert!(secure.contains("; Secure"));
        for c in [plain, secure] {
            assert!(c.contains("; HttpOnly") && c.contains("; SameSite=Lax"));
            assert!(c.contains("; Path=/"));
            assert!(!c.to_ascii_lowercase().contains("domain="), "host-only");
        }
        assert!(is_cookie_name(b"TP_AFFINITY") && is_cookie_name(b"__host-tp_affinity"));
        assert!(!is_cookie_name(b"tp_affinityx"));
    }
}
