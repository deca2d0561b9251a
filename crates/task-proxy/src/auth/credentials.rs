//! Credential parsing and removal: what YTsaurus credentials a request carries, taken out of
//! its headers so the job behind the proxy never sees them.
//!
//! Accepted, in order of preference:
//! 1. `Authorization: OAuth <token>` or `Authorization: Bearer <token>` (scheme
//!    case-insensitive);
//! 2. the auth cookie (name configurable, conventionally `YTCypressCookie`), as a normal cookie
//!    pair `YTCypressCookie=<value>` (optionally quoted) in any of the request's `Cookie`
//!    headers, or in the user guide's form `Cookie: YTCypressCookie <value>`.
//!
//! An auth cookie inside another cookie's `;`-separated pair — joined with `,` as some broken
//! front proxies do (`Cookie: a=1, YTCypressCookie=<secret>`), or after whitespace — is
//! removed too (a job's cookie parser may split there) but never authenticates: it is
//! reported as malformed unless another credential was presented.
//!
//! Input is parsed as bytes and never trusted: anything malformed is reported as
//! [`Presented::Malformed`] (never a panic), and is removed from the request all the same.
//! Other `Authorization` schemes, other cookies and all other headers pass untouched; the
//! `Cookie` header is rebuilt without the auth cookie.
//!
//! Secrets live in [`Secret`], whose `Debug` output is redacted; the caches key identities by
//! [`Credential::fingerprint`] (SHA-256), never by the secret itself.

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};
use std::fmt;

/// The longest secret accepted (tokens and session cookies are far shorter).
pub const MAX_SECRET_LEN: usize = 8 * 1024;

/// A secret value: a token or a cookie value. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret the caller typed (the portal's login form).
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The secret itself, for sending it to the cluster. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The YTsaurus credentials a caller presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: OAuth <token>`.
    OAuth(Secret),
    /// `Authorization: Bearer <token>` (IAM-style).
    Bearer(Secret),
    /// The session cookie.
    Cookie { name: String, value: Secret },
}

impl Credential {
    /// Which kind of credential this is, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Credential::OAuth(_) => "oauth",
            Credential::Bearer(_) => "bearer",
            Credential::Cookie { .. } => "cookie",
        }
    }

    /// SHA-256 over the kind, the cookie name and the secret: the key of the identity cache.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        match self {
            Credential::OAuth(secret) => {
                hasher.update(b"oauth\0");
                hasher.update(secret.0.as_bytes());
            }
            Credential::Bearer(secret) => {
                hasher.update(b"bearer\0");
                hasher.update(secret.0.as_bytes());
            }
            Credential::Cookie { name, value } => {
                hasher.update(b"cookie\0");
                hasher.update(name.as_bytes());
                hasher.update(b"\0");
                hasher.update(value.0.as_bytes());
            }
        }
        hasher.finalize().into()
    }
}

/// What a request presented, after its credentials were taken out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    /// A usable credential (the first one, in the order of the module docs).
    Credential(Credential),
    /// No YTsaurus credentials at all.
    Missing,
    /// Something that looked like YTsaurus credentials but could not be used; the reason is
    /// safe to show (it never contains the secret).
    Malformed(&'static str),
}

/// Removes the caller's YTsaurus credentials from `headers` and returns what was presented.
///
/// Removed: every `Authorization` header with the `OAuth` or `Bearer` scheme (used or not,
/// well-formed or not) and every occurrence of the cookie `cookie_name`. Kept: everything else.
pub fn take_credentials(headers: &mut HeaderMap, cookie_name: &str) -> Presented {
    let mut found: Option<Credential> = None;
    let mut malformed: Option<&'static str> = None;

    if headers.contains_key(AUTHORIZATION) {
        let mut kept: Vec<HeaderValue> = Vec::new();
        let mut removed_any = false;
        for value in headers.get_all(AUTHORIZATION) {
            match parse_authorization(value.as_bytes()) {
                AuthorizationValue::Other => kept.push(value.clone()),
                AuthorizationValue::Yt(parsed) => {
                    removed_any = true;
                    match parsed {
                        Ok(credential) => {
                            if found.is_none() {
                                found = Some(credential);
                            }
                        }
                        Err(reason) => {
                            malformed.get_or_insert(reason);
                        }
                    }
                }
            }
        }
        if removed_any {
            headers.remove(AUTHORIZATION);
            for value in kept {
                headers.append(AUTHORIZATION, value);
            }
        }
    }

    let cookie = take_cookie(headers, cookie_name);
    if found.is_none() {
        found = cookie.value.map(|value| Credential::Cookie {
            name: cookie_name.to_string(),
            value,
        });
    }
    if let Some(reason) = cookie.malformed {
        malformed.get_or_insert(reason);
    }

    match (found, malformed) {
        (Some(credential), _) => Presented::Credential(credential),
        (None, Some(reason)) => Presented::Malformed(reason),
        (None, None) => Presented::Missing,
    }
}

/// What [`take_cookie`] took out of a request's `Cookie` headers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TakenCookie {
    /// The first well-formed occurrence's value.
    pub value: Option<Secret>,
    /// Why another occurrence could not be used (the first reason), e.g. joined into another
    /// cookie's pair.
    pub malformed: Option<&'static str>,
}

/// Removes every occurrence of the cookie `cookie_name` from `headers` (the forms the module
/// docs list, joined ones included) and returns its first well-formed value. The `Cookie`
/// headers are rebuilt without it; other cookies are kept as they came. The auth cookie goes
/// through this, and so does any other cookie of the proxy's own that a job must never see.
pub fn take_cookie(headers: &mut HeaderMap, cookie_name: &str) -> TakenCookie {
    let mut taken = TakenCookie::default();
    if !cookie_name.is_empty() && headers.contains_key(COOKIE) {
        let name = cookie_name.as_bytes();
        let mentions_name = headers
            .get_all(COOKIE)
            .iter()
            .any(|v| contains(v.as_bytes(), name));
        if mentions_name {
            let mut rebuilt: Vec<HeaderValue> = Vec::new();
            for value in headers.get_all(COOKIE) {
                let mut others: Vec<&[u8]> = Vec::new();
                for pair in value.as_bytes().split(|b| *b == b';') {
                    let pair = trim(pair);
                    if pair.is_empty() {
                        continue;
                    }
                    if contains(pair, name) && (pair.contains(&b',') || embedded(pair, name)) {
                        // Another cookie's value with this cookie inside it: joined with `,`
                        // (broken front proxies do that) or after whitespace (parsers such as
                        // Python's split there). The job could read it as this cookie, so it
                        // never reaches the job; it is never used either (which part is the
                        // cookie is ambiguous).
                        let pieces: Vec<&[u8]> = pair
                            .split(|b| *b == b',')
                            .map(trim)
                            .filter(|p| !p.is_empty())
                            .collect();
                        let ours = |p: &&[u8]| {
                            parse_auth_cookie_pair(p, name).is_some() || embedded(p, name)
                        };
                        if pieces.iter().any(ours) {
                            others.extend(pieces.into_iter().filter(|p| !ours(p)));
                            taken.malformed.get_or_insert(JOINED);
                        } else {
                            // Only look-alikes (e.g. `YTCypressCookieX`): kept as it came.
                            others.push(pair);
                        }
                        continue;
                    }
                    match parse_auth_cookie_pair(pair, name) {
                        None => others.push(pair),
                        Some(Ok(secret)) => {
                            taken.value.get_or_insert(secret);
                        }
                        Some(Err(reason)) => {
                            taken.malformed.get_or_insert(reason);
                        }
                    }
                }
                if !others.is_empty() {
                    if let Ok(v) = HeaderValue::from_bytes(&others.join(&b"; "[..])) {
                        rebuilt.push(v);
                    }
                }
            }
            headers.remove(COOKIE);
            for value in rebuilt {
                headers.append(COOKIE, value);
            }
        }
    }
    taken
}

/// Why an auth cookie inside another cookie's pair does not authenticate.
const JOINED: &str = "auth cookie joined into another cookie (separate cookies with \"; \")";

/// Whether `name` appears in `pair` after whitespace, as a cookie name (followed by `=`,
/// whitespace or the end).
fn embedded(pair: &[u8], name: &[u8]) -> bool {
    if name.is_empty() || pair.len() <= name.len() {
        return false;
    }
    (1..=pair.len() - name.len()).any(|i| {
        matches!(pair[i - 1], b' ' | b'\t')
            && &pair[i..i + name.len()] == name
            && matches!(pair.get(i + name.len()), None | Some(b'=' | b' ' | b'\t'))
    })
}

enum AuthorizationValue {
    /// Not a YTsaurus scheme (e.g. `Basic`): left for the job.
    Other,
    /// `OAuth`/`Bearer`: removed; usable or not.
    Yt(Result<Credential, &'static str>),
}

fn parse_authorization(value: &[u8]) -> AuthorizationValue {
    let value = trim(value);
    let scheme_end = value
        .iter()
        .position(|b| *b == b' ' || *b == b'\t')
        .unwrap_or(value.len());
    let (scheme, rest) = value.split_at(scheme_end);
    let make: fn(Secret) -> Credential = if scheme.eq_ignore_ascii_case(b"oauth") {
        Credential::OAuth
    } else if scheme.eq_ignore_ascii_case(b"bearer") {
        Credential::Bearer
    } else {
        return AuthorizationValue::Other;
    };
    AuthorizationValue::Yt(parse_secret(trim(rest), "malformed Authorization header").map(make))
}

/// `Some` when `pair` is the auth cookie (`name=value`, `name="value"` or `name value`).
fn parse_auth_cookie_pair(pair: &[u8], name: &[u8]) -> Option<Result<Secret, &'static str>> {
    const REASON: &str = "malformed auth cookie";
    let rest = pair.strip_prefix(name)?;
    let value = match rest.first() {
        // The user guide's form: `YTCypressCookie <value>`.
        Some(b' ') | Some(b'\t') => {
            let rest = trim(rest);
            match rest.strip_prefix(b"=") {
                Some(after_eq) => trim(after_eq), // `name = value`
                None => rest,
            }
        }
        Some(b'=') => trim(&rest[1..]),
        // The bare name: ours, and unusable.
        None => return Some(Err(REASON)),
        // Another cookie whose name starts with ours, e.g. `YTCypressCookieX=1`.
        _ => return None,
    };
    let value = match value {
        [b'"', inner @ .., b'"'] => inner,
        other => other,
    };
    Some(parse_secret(value, REASON))
}

fn parse_secret(value: &[u8], reason: &'static str) -> Result<Secret, &'static str> {
    if value.is_empty() || value.len() > MAX_SECRET_LEN {
        return Err(reason);
    }
    // Visible ASCII only, no quotes or separators inside.
    if !value
        .iter()
        .all(|b| (0x21..=0x7e).contains(b) && *b != b'"' && *b != b',' && *b != b'\\')
    {
        return Err(reason);
    }
    match std::str::from_utf8(value) {
        Ok(s) => Ok(Secret(s.to_string())),
        Err(_) => Err(reason),
    }
}

fn trim(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "YTCypressCookie";

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                http::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        h
    }

    fn oauth(t: &str) -> Presented {
        Presented::Credential(Credential::OAuth(Secret(t.into())))
    }

    fn cookie(v: &str) -> Presented {
        Presented::Credential(Credential::Cookie {
            name: NAME.into(),
            value: Secret(v.into()),
        })
    }

    fn cookies(h: &HeaderMap) -> Vec<String> {
        h.get_all(COOKIE)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    #[test]
    fn authorization_schemes_case_insensitive() {
        for (value, expected) in [
            ("OAuth alice-token", oauth("alice-token")),
            ("oauth   alice-token  ", oauth("alice-token")),
            ("OAUTH\talice-token", oauth("alice-token")),
            (
                "Bearer bob-iam",
                Presented::Credential(Credential::Bearer(Secret("bob-iam".into()))),
            ),
            (
                "bEaReR bob-iam",
                Presented::Credential(Credential::Bearer(Secret("bob-iam".into()))),
            ),
        ] {
            let mut h = headers(&[("authorization", value.as_bytes())]);
            assert_eq!(take_credentials(&mut h, NAME), expected, "{value}");
            assert!(h.get(AUTHORIZATION).is_none(), "{value} must be removed");
        }
    }

    #[test]
    fn malformed_authorization_is_removed_and_reported() {
        for value in [
            &b"OAuth"[..],
            b"OAuth ",
            b"Bearer a b",
            b"OAuth \"quoted\"",
            b"OAuth t\tken",
            b"Bearer \xff\xfe",
        ] {
            let mut h = headers(&[("authorization", value)]);
            assert_eq!(
                take_credentials(&mut h, NAME),
                Presented::Malformed("malformed Authorization header")
            );
            assert!(h.get(AUTHORIZATION).is_none());
        }
        let long = format!("OAuth {}", "x".repeat(MAX_SECRET_LEN + 1));
        let mut h = headers(&[("authorization", long.as_bytes())]);
        assert!(matches!(
            take_credentials(&mut h, NAME),
            Presented::Malformed(_)
        ));
    }

    #[test]
    fn other_schemes_pass_through() {
        let mut h = headers(&[
            ("authorization", b"Basic dXNlcjpwYXNz"),
            ("authorization", b"OAuth alice-token"),
        ]);
        assert_eq!(take_credentials(&mut h, NAME), oauth("alice-token"));
        let left: Vec<_> = h.get_all(AUTHORIZATION).iter().collect();
        assert_eq!(left, vec!["Basic dXNlcjpwYXNz"]);

        let mut h = headers(&[("authorization", b"Basic dXNlcjpwYXNz")]);
        assert_eq!(take_credentials(&mut h, NAME), Presented::Missing);
        assert_eq!(h[AUTHORIZATION], "Basic dXNlcjpwYXNz");
    }

    #[test]
    fn cookie_forms() {
        for value in [
            "YTCypressCookie=alice-cookie",
            "YTCypressCookie=\"alice-cookie\"",
            "YTCypressCookie alice-cookie",
            "YTCypressCookie  alice-cookie ",
            "YTCypressCookie = alice-cookie",
            "a=1; YTCypressCookie=alice-cookie; b=2",
            "a=1;YTCypressCookie alice-cookie;b=2",
        ] {
            let mut h = headers(&[("cookie", value.as_bytes())]);
            assert_eq!(
                take_credentials(&mut h, NAME),
                cookie("alice-cookie"),
                "{value}"
            );
            for left in cookies(&h) {
                assert!(!left.contains("alice-cookie"), "{value} -> {left}");
            }
        }
    }

    #[test]
    fn cookie_header_rebuilt_without_auth_cookie() {
        let mut h = headers(&[
            ("cookie", b"a=1; YTCypressCookie=alice-cookie; b=\"2\""),
            ("cookie", b"YTCypressCookie=alice-cookie"),
            ("cookie", b"c=3"),
            ("x-other", b"kept"),
        ]);
        assert_eq!(take_credentials(&mut h, NAME), cookie("alice-cookie"));
        assert_eq!(cookies(&h), vec!["a=1; b=\"2\"", "c=3"]);
        assert_eq!(h["x-other"], "kept");
    }

    #[test]
    fn similar_cookie_names_are_not_ours() {
        let mut h = headers(&[("cookie", b"YTCypressCookieX=1; xYTCypressCookie=2")]);
        assert_eq!(take_credentials(&mut h, NAME), Presented::Missing);
        assert_eq!(cookies(&h), vec!["YTCypressCookieX=1; xYTCypressCookie=2"]);
    }

    #[test]
    fn garbage_cookies_never_panic() {
        let samples: Vec<&[u8]> = vec![
            b"YTCypressCookie=",
            b"YTCypressCookie",
            b"a=1; YTCypressCookie",
            b"YTCypressCookie=\"",
            b"YTCypressCookie=\"\"",
            b";;;; ;",
            b"=",
            b"YTCypressCookie=a b",
            b"YTCypressCookie=\xff\xfe",
            b"YTCypressCookie=x\x80\x81; \x80=\x81",
        ];
        for value in samples {
            let mut h = headers(&[("cookie", value)]);
            let presented = take_credentials(&mut h, NAME);
            assert!(
                !matches!(presented, Presented::Credential(Credential::OAuth(_))),
                "{value:?}"
            );
            for left in cookies(&h) {
                assert!(!left.contains("YTCypressCookie"), "{value:?} -> {left}");
            }
        }
        let mut h = headers(&[("cookie", b"YTCypressCookie=")]);
        assert_eq!(
            take_credentials(&mut h, NAME),
            Presented::Malformed("malformed auth cookie")
        );
        assert!(h.get(COOKIE).is_none());
    }

    #[test]
    fn joined_auth_cookies_are_removed_and_never_authenticate() {
        for (value, left) in [
            ("a=1, YTCypressCookie=alice-cookie", vec!["a=1"]),
            ("a=1,YTCypressCookie=alice-cookie, b=2", vec!["a=1; b=2"]),
            ("YTCypressCookie=alice-cookie, a=1", vec!["a=1"]),
            ("x=0; a=1 ,\tYTCypressCookie alice-cookie", vec!["x=0; a=1"]),
            ("a=1 YTCypressCookie=alice-cookie; b=2", vec!["b=2"]),
            ("a=\"1 YTCypressCookie=alice-cookie\"", vec![]),
        ] {
            let mut h = headers(&[("cookie", value.as_bytes())]);
            assert_eq!(
                take_credentials(&mut h, NAME),
                Presented::Malformed(JOINED),
                "{value}"
            );
            assert_eq!(cookies(&h), left, "{value}");
        }
        // Look-alikes in a comma-joined pair are left alone.
        let mut h = headers(&[("cookie", b"a=1, YTCypressCookieX=2; b=x YTCypressCookies")]);
        assert_eq!(take_credentials(&mut h, NAME), Presented::Missing);
        assert_eq!(
            cookies(&h),
            vec!["a=1, YTCypressCookieX=2; b=x YTCypressCookies"]
        );
        // A separate auth cookie still authenticates; the joined one is removed all the same.
        let mut h = headers(&[
            ("cookie", b"a=1, YTCypressCookie=other"),
            ("cookie", b"YTCypressCookie=alice-cookie"),
        ]);
        assert_eq!(take_credentials(&mut h, NAME), cookie("alice-cookie"));
        assert_eq!(cookies(&h), vec!["a=1"]);
    }

    #[test]
    fn authorization_wins_over_cookie_and_both_are_removed() {
        let mut h = headers(&[
            ("cookie", b"YTCypressCookie=alice-cookie"),
            ("authorization", b"OAuth bob-token"),
        ]);
        assert_eq!(take_credentials(&mut h, NAME), oauth("bob-token"));
        assert!(h.get(COOKIE).is_none());
        assert!(h.get(AUTHORIZATION).is_none());
    }

    #[test]
    fn malformed_header_falls_back_to_cookie() {
        let mut h = headers(&[
            ("authorization", b"OAuth"),
            ("cookie", b"YTCypressCookie=alice-cookie"),
        ]);
        assert_eq!(take_credentials(&mut h, NAME), cookie("alice-cookie"));
    }

    #[test]
    fn custom_cookie_name() {
        let mut h = headers(&[("cookie", b"Session_id=s1; YTCypressCookie=x")]);
        assert_eq!(
            take_credentials(&mut h, "Session_id"),
            Presented::Credential(Credential::Cookie {
                name: "Session_id".into(),
                value: Secret("s1".into())
            })
        );
        assert_eq!(cookies(&h), vec!["YTCypressCookie=x"]);
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = Credential::Cookie {
            name: NAME.into(),
            value: Secret("alice-cookie".into()),
        };
        let shown = format!("{c:?} {:?}", Presented::Credential(c.clone()));
        assert!(!shown.contains("alice-cookie"), "{shown}");
        assert!(!format!("{:?}", Credential::OAuth(Secret("t0k".into()))).contains("t0k"));
    }

    #[test]
    fn fingerprints_differ_by_kind() {
        let a = Credential::OAuth(Secret("x".into())).fingerprint();
        let b = Credential::Bearer(Secret("x".into())).fingerprint();
        assert_ne!(a, b);
        assert_eq!(a, Credential::OAuth(Secret("x".into())).fingerprint());
    }
}
