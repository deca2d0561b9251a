//! Browser sessions: signed cookies and tickets that stand for a login the portal checked.
//!
//! A person logs in once on the portal host (a YTsaurus token or cookie, checked with
//! `whoami`). The portal then keeps a *portal session* cookie on its own host, and hands each
//! service host a short-lived, single-use *ticket* through a redirect; the service host turns
//! the ticket into a *service session* cookie of its own (host-only). No cookie is ever set for
//! the parent domain, where every job could read or plant it.
//!
//! All three are `v1.<payload>.<mac>`: the payload is JSON (kind, session id, login, audience,
//! expiry), the MAC is HMAC-SHA256 over the kind and the payload with the key every replica
//! shares (`--portal-key-file`). The kind is part of the MAC, so a ticket never passes for a
//! cookie or the other way round; the audience binds a ticket to one host and a service
//! session to one service.
//!
//! Logout revokes the session id ([`Revocations`]): every cookie and ticket of that session is
//! refused from then on, on this replica at once and on the others as soon as they learn the
//! id (the portal shares revocations through the cluster). Service cookies live shorter than
//! the portal session, which bounds what a replica that has not heard of a revocation yet can
//! still admit.
//!
//! Hand-written on `hmac`/`sha2`/`base64` rather than a JWT crate: three fixed claims, one
//! algorithm, nothing negotiated by the token itself.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

type HmacSha256 = Hmac<Sha256>;

/// The shortest key accepted (bytes).
pub const MIN_KEY_LEN: usize = 32;

/// The longest signed value accepted (bytes); real ones are a few hundred.
const MAX_SIGNED_LEN: usize = 2048;

/// Bound on remembered revocations and used tickets (each entry leaves at its expiry).
const MAX_REMEMBERED: usize = 100_000;

/// The signing key shared by all replicas. `Debug` never prints it.
#[derive(Clone)]
pub struct SessionKey(HmacSha256);

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(<redacted>)")
    }
}

/// Why a key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the portal key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the portal key must be at least {MIN_KEY_LEN} bytes (got {0}); generate one with `openssl rand -base64 48`")]
    TooShort(usize),
}

impl SessionKey {
    /// A key from secret bytes (surrounding whitespace of a key file is not part of it).
    pub fn from_bytes(bytes: &[u8]) -> Result<SessionKey, KeyError> {
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort(trimmed.len()));
        }
        HmacSha256::new_from_slice(trimmed)
            .map(SessionKey)
            .map_err(|_| KeyError::TooShort(trimmed.len()))
    }

    /// The key in `path`.
    pub fn from_file(path: &std::path::Path) -> Result<SessionKey, KeyError> {
        let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        SessionKey::from_bytes(&bytes)
    }

    /// A random key (for one replica alone: sessions end when it restarts).
    pub fn generate() -> SessionKey {
        use rand::RngCore;
        let mut key = vec![0u8; 48];
        rand::rng().fill_bytes(&mut key);
        // Hex: 96 bytes without whitespace, which `from_bytes` takes as they are.
        SessionKey::from_bytes(hex::encode(key).as_bytes())
            .unwrap_or_else(|_| unreachable!("96 hex characters are a valid key"))
    }

    /// HMAC-SHA256 of `payload` under this key, for `kind`: values other parts of the proxy
    /// derive from the shared key (the affinity cookie) are bound to their kind, so none of
    /// them ever passes for a session value.
    pub fn tag(&self, kind: Kind, payload: &[u8]) -> [u8; 32] {
        self.mac(kind, payload).finalize().into_bytes().into()
    }

    fn mac(&self, kind: Kind, payload: &[u8]) -> HmacSha256 {
        let mut mac = self.0.clone();
        mac.update(kind.label().as_bytes());
        mac.update(b"\0");
        mac.update(payload);
        mac
    }
}

/// What a signed value stands for (part of its MAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// The portal host's session cookie.
    Portal,
    /// A one-time ticket for one service host.
    Ticket,
    /// A service host's session cookie.
    Service,
    /// The login form's anti-forgery token.
    Csrf,
    /// A sticky service's affinity cookie (the data plane's; never a session).
    Affinity,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Portal => "portal",
            Kind::Ticket => "ticket",
            Kind::Service => "service",
            Kind::Csrf => "csrf",
            Kind::Affinity => "affinity",
        }
    }
}

/// The claims of a signed value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The session id (hex, 128 random bits); for a CSRF token, the nonce of its cookie.
    pub sid: String,
    /// The login `whoami` returned (empty for a CSRF token).
    pub user: String,
    /// Who may accept it: the portal (`""`), a service host (tickets), a service domain
    /// (service sessions).
    pub aud: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// A ticket's own id (single use); empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jti: String,
    /// A ticket's session's expiry (a service session never outlives it); 0 otherwise.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub end: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Why a signed value was refused. Safe to show: it never contains the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("malformed session value")]
    Malformed,
    #[error("bad signature")]
    Signature,
    #[error("expired")]
    Expired,
    #[error("issued for another host")]
    Audience,
    #[error("the session was logged out")]
    Revoked,
    #[error("the ticket was already used")]
    Used,
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// 128 random bits, hex.
pub fn random_id() -> String {
    use rand::RngCore;
    let mut id = [0u8; 16];
    rand::rng().fill_bytes(&mut id);
    hex::encode(id)
}

/// Session ids revoked by logout, each until the latest expiry a value of it can carry.
#[derive(Debug, Default)]
pub struct Revocations {
    /// Most requests meet an empty set: checked without the lock.
    any: AtomicBool,
    until: RwLock<HashMap<String, u64>>,
}

impl Revocations {
    /// Revokes `sid` until `until` (epoch seconds).
    pub fn revoke(&self, sid: &str, until: u64) {
        let Ok(mut map) = self.until.write() else {
            return;
        };
        let now = now_secs();
        if map.len() >= MAX_REMEMBERED {
            map.retain(|_, until| *until > now);
        }
        if map.len() < MAX_REMEMBERED {
            map.insert(sid.to_string(), until);
            self.any.store(true, Ordering::Release);
        } else {
            tracing::warn!("too many revoked sessions remembered; this logout is not recorded");
        }
    }

    pub fn is_revoked(&self, sid: &str) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        self.until
            .read()
            .map(|map| map.get(sid).is_some_and(|until| *until > now_secs()))
            .unwrap_or(false)
    }

    /// The revoked ids and until when (for sharing them with other replicas).
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let now = now_secs();
        self.until
            .read()
            .map(|map| {
                map.iter()
                    .filter(|(_, until)| **until > now)
                    .map(|(sid, until)| (sid.clone(), *until))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Ticket ids already redeemed on this replica, until the ticket's expiry.
#[derive(Debug, Default)]
struct UsedTickets(Mutex<HashMap<String, u64>>);

impl UsedTickets {
    /// Marks `jti` used; false when it already was (or cannot be recorded).
    fn first_use(&self, jti: &str, exp: u64) -> bool {
        let Ok(mut map) = self.0.lock() else {
            return false;
        };
        let now = now_secs();
        if map.len() >= MAX_REMEMBERED {
            map.retain(|_, exp| *exp > now);
            if map.len() >= MAX_REMEMBERED {
                return false;
            }
        }
        map.insert(jti.to_string(), exp).is_none()
    }
}

/// Lifetimes of the signed values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTtls {
    /// The portal session (`--portal-session-ttl`).
    pub portal: Duration,
    /// A service host's session (never beyond the portal session's expiry).
    pub service: Duration,
    /// A ticket: the time a redirect takes.
    pub ticket: Duration,
    /// The login form's CSRF token.
    pub csrf: Duration,
}

impl Default for SessionTtls {
    fn default() -> Self {
        SessionTtls {
            portal: Duration::from_secs(12 * 3600),
            service: Duration::from_secs(3600),
            ticket: Duration::from_secs(30),
            csrf: Duration::from_secs(3600),
        }
    }
}

/// Names of the cookies, with the `__Host-` prefix browsers enforce for secure host-only
/// cookies under TLS (no `Domain`, `Path=/`, `Secure`).
pub const PORTAL_COOKIE: &str = "tp_portal";
pub const SERVICE_COOKIE: &str = "tp_session";
pub const CSRF_COOKIE: &str = "tp_csrf";
pub const SECURE_PREFIX: &str = "__Host-";

/// Signs and checks the portal's values; remembers revocations and used tickets.
#[derive(Debug)]
pub struct Sessions {
    key: SessionKey,
    pub ttls: SessionTtls,
    revocations: Revocations,
    used: UsedTickets,
}

impl Sessions {
    pub fn new(key: SessionKey, ttls: SessionTtls) -> Sessions {
        Sessions {
            key,
            ttls,
            revocations: Revocations::default(),
            used: UsedTickets::default(),
        }
    }

    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// `v1.<payload>.<mac>` for `claims` of `kind`.
    pub fn sign(&self, kind: Kind, claims: &Claims) -> String {
        // Serializing plain strings and integers cannot fail.
        let payload = serde_json::to_vec(claims).unwrap_or_default();
        let mac = self.key.mac(kind, &payload).finalize().into_bytes();
        format!(
            "v1.{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(mac)
        )
    }

    /// The claims of `value` if it is a genuine, unexpired `kind` for `aud` whose session was
    /// not revoked. Tickets are not consumed here: see [`Sessions::redeem_ticket`].
    pub fn verify(&self, kind: Kind, value: &str, aud: &str) -> Result<Claims, Invalid> {
        if value.len() > MAX_SIGNED_LEN {
            return Err(Invalid::Malformed);
        }
        let mut parts = value.split('.');
        let (Some("v1"), Some(payload), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Invalid::Malformed);
        };
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| Invalid::Malformed)?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| Invalid::Malformed)?;
        // Constant-time comparison.
        self.key
            .mac(kind, &payload)
            .verify_slice(&mac)
            .map_err(|_| Invalid::Signature)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| Invalid::Malformed)?;
        if claims.exp <= now_secs() {
            return Err(Invalid::Expired);
        }
        if !claims.aud.eq_ignore_ascii_case(aud) {
            return Err(Invalid::Audience);
        }
        if self.revocations.is_revoked(&claims.sid) {
            return Err(Invalid::Revoked);
        }
        Ok(claims)
    }

    /// A new portal session for `user`.
    pub fn new_portal_session(&self, user: &str) -> (String, Claims) {
        let claims = Claims {
            sid: random_id(),
            user: user.to_string(),
            aud: String::new(),
            exp: now_secs() + self.ttls.portal.as_secs(),
            jti: String::new(),
            end: 0,
        };
        (self.sign(Kind::Portal, &claims), claims)
    }

    /// A ticket of `session` for the service host `host` (exactly as the browser names it,
    /// port included).
    pub fn ticket(&self, session: &Claims, host: &str) -> String {
        let claims = Claims {
            sid: session.sid.clone(),
            user: session.user.clone(),
            aud: host.to_ascii_lowercase(),
            exp: (now_secs() + self.ttls.ticket.as_secs()).min(session.exp),
            jti: random_id(),
            end: session.exp,
        };
        self.sign(Kind::Ticket, &claims)
    }

    /// Checks a ticket presented on `host` and consumes it: a second use is refused.
    pub fn redeem_ticket(&self, value: &str, host: &str) -> Result<Claims, Invalid> {
        let claims = self.verify(Kind::Ticket, value, &host.to_ascii_lowercase())?;
        if claims.jti.is_empty() || !self.used.first_use(&claims.jti, claims.exp) {
            return Err(Invalid::Used);
        }
        Ok(claims)
    }

    /// The service session cookie's value for `service_domain`, from a redeemed ticket, and
    /// its lifetime in seconds.
    pub fn service_session(&self, ticket: &Claims, service_domain: &str) -> (String, u64) {
        let now = now_secs();
        let exp = (now + self.ttls.service.as_secs()).min(ticket.end);
        let claims = Claims {
            sid: ticket.sid.clone(),
            user: ticket.user.clone(),
            aud: service_domain.to_ascii_lowercase(),
            exp,
            jti: String::new(),
            end: 0,
        };
        (self.sign(Kind::Service, &claims), exp.saturating_sub(now))
    }

    /// Ends `session` everywhere: its cookies and tickets are refused from now on.
    pub fn revoke(&self, session: &Claims) {
        self.revocations.revoke(&session.sid, session.exp);
    }

    /// A CSRF token bound to `nonce` (the value of the form's cookie).
    pub fn csrf_token(&self, nonce: &str) -> String {
        let claims = Claims {
            sid: nonce.to_string(),
            user: String::new(),
            aud: String::new(),
            exp: now_secs() + self.ttls.csrf.as_secs(),
            jti: String::new(),
            end: 0,
        };
        self.sign(Kind::Csrf, &claims)
    }

    /// Whether `token` was issued by this portal for `nonce`, and is unexpired.
    pub fn csrf_ok(&self, token: &str, nonce: &str) -> bool {
        !nonce.is_empty()
            && self
                .verify(Kind::Csrf, token, "")
                .is_ok_and(|claims| claims.sid == nonce)
    }

    /// Takes the service session cookies (both names) out of `headers`, the job never sees
    /// them; returns the login of a valid one for `service_domain`.
    pub fn take_service_cookie(
        &self,
        headers: &mut http::HeaderMap,
        service_domain: &str,
    ) -> Option<Result<String, Invalid>> {
        // The portal's own cookies never reach a job either (a browser sends them only to the
        // portal host, but a client may send anything anywhere).
        let taken = take_cookies(headers, &[SERVICE_COOKIE, PORTAL_COOKIE, CSRF_COOKIE]);
        let mut result = None;
        for (_, value) in taken.iter().filter(|(name, _)| *name == SERVICE_COOKIE) {
            match self.verify(Kind::Service, value, service_domain) {
                Ok(claims) => return Some(Ok(claims.user)),
                Err(e) => result = Some(Err(e)),
            }
        }
        result
    }
}

/// Removes every cookie named one of `names` (or `__Host-` + one of them) from `headers`
/// and returns them as (which of `names`, value); the other cookies are kept (one `Cookie`
/// header).
pub fn take_cookies(
    headers: &mut http::HeaderMap,
    names: &[&'static str],
) -> Vec<(&'static str, String)> {
    use http::header::COOKIE;
    let matches = |name: &str| {
        let bare = name.strip_prefix(SECURE_PREFIX).unwrap_or(name);
        names.iter().find(|n| n.eq_ignore_ascii_case(bare)).copied()
    };
    let mentioned = headers.get_all(COOKIE).iter().any(|v| {
        let v = String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase();
        names.iter().any(|n| v.contains(&n.to_ascii_lowercase()))
    });
    if !mentioned {
        return Vec::new();
    }
    let mut taken = Vec::new();
    let mut kept: Vec<String> = Vec::new();
    for value in headers.get_all(COOKIE) {
        for pair in value.as_bytes().split(|b| *b == b';') {
            let pair = String::from_utf8_lossy(pair);
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if let Some(which) = matches(name.trim()) {
                taken.push((which, value.trim().trim_matches('"').to_string()));
            } else {
                kept.push(pair.to_string());
            }
        }
    }
    headers.remove(COOKIE);
    if !kept.is_empty() {
        if let Ok(value) = http::HeaderValue::from_str(&kept.join("; ")) {
            headers.insert(COOKIE, value);
        }
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions() -> Sessions {
        Sessions::new(SessionKey::generate(), SessionTtls::default())
    }

    #[test]
    fn kinds_audiences_and_forgeries() {
        let s = sessions();
        let (cookie, claims) = s.new_portal_session("alice");
        assert_eq!(s.verify(Kind::Portal, &cookie, "").unwrap().user, "alice");
        // A portal cookie is no ticket, and the other way round.
        assert_eq!(s.verify(Kind::Ticket, &cookie, ""), Err(Invalid::Signature));
        let ticket = s.ticket(&claims, "A.tp.test:8080");
        assert_eq!(
            s.redeem_ticket(&ticket, "b.tp.test:8080"),
            Err(Invalid::Audience)
        );
        assert!(s.redeem_ticket(&ticket, "a.tp.test:8080").is_ok());
        assert_eq!(
            s.redeem_ticket(&ticket, "a.tp.test:8080"),
            Err(Invalid::Used)
        );
        // Another key's values are forgeries.
        let other = sessions();
        assert_eq!(
            other.verify(Kind::Portal, &cookie, ""),
            Err(Invalid::Signature)
        );
        // A changed payload breaks the signature.
        let forged = cookie.replacen("v1.", "v1.e", 1);
        assert!(s.verify(Kind::Portal, &forged, "").is_err());
        for junk in ["", "v1", "v1..", "v2.a.b", "v1.!!.??", "v1.a.b.c"] {
            assert!(s.verify(Kind::Portal, junk, "").is_err(), "{junk}");
        }
    }

    #[test]
    fn expiry_and_revocation() {
        let s = sessions();
        let mut claims = Claims {
            sid: random_id(),
            user: "alice".into(),
            aud: String::new(),
            exp: now_secs() - 1,
            jti: String::new(),
            end: 0,
        };
        let expired = s.sign(Kind::Portal, &claims);
        assert_eq!(s.verify(Kind::Portal, &expired, ""), Err(Invalid::Expired));
        claims.exp = now_secs() + 60;
        let ticket = s.ticket(&claims, "a.tp.test");
        let redeemed = s.redeem_ticket(&ticket, "a.tp.test").unwrap();
        let (service, max_age) = s.service_session(&redeemed, "a.tp.test");
        assert!(max_age > 0 && max_age <= 3600);
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            http::HeaderValue::from_str(&format!("x=1; __Host-tp_session={service}; y=2")).unwrap(),
        );
        assert_eq!(
            s.take_service_cookie(&mut headers, "a.tp.test"),
            Some(Ok("alice".into()))
        );
        assert_eq!(headers[http::header::COOKIE], "x=1; y=2");
        s.revoke(&claims);
        assert_eq!(
            s.verify(Kind::Service, &service, "a.tp.test"),
            Err(Invalid::Revoked)
        );
    }

    #[test]
    fn csrf_tokens_are_bound_to_their_nonce() {
        let s = sessions();
        let token = s.csrf_token("nonce-1");
        assert!(s.csrf_ok(&token, "nonce-1"));
        assert!(!s.csrf_ok(&token, "nonce-2"));
        assert!(!s.csrf_ok(&token, ""));
        assert!(!s.csrf_ok("v1.x.y", "nonce-1"));
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(matches!(
            SessionKey::from_bytes(b"  short \n"),
            Err(KeyError::TooShort(5))
        ));
        assert!(SessionKey::from_bytes(&[b'k'; 32]).is_ok());
    }
}
