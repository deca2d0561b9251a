//! The signed identity the proxy hands each job: `X-YT-TaskProxy-User: <login>` and
//! `X-YT-TaskProxy-Assertion: <JWT>` on every forwarded request of an authenticated caller.
//!
//! The assertion is a compact JWS (ES256, P-256) with the claims `iss`, `sub` and `login` (the
//! caller), `aud` (the service domain), `operation_id`, `task`, `service`, `iat` and `exp`
//! (short-lived), and the signing key's `kid` in its header. Jobs verify it against the public
//! keys the proxy publishes ([`IdentitySigner::jwks`]: on the portal host at
//! `/.well-known/jwks.json` and in Cypress).
//!
//! Signing costs far more than forwarding a small request, so a token is cached per
//! `(login, service domain)` and reused until shortly before it expires.
//!
//! The keys: the current one signs, a previous one (during a rotation) is only published so
//! that tokens it signed stay verifiable until they expire. The kid is a hash of the public
//! key, so every replica that loads the same key names it the same way. Key files are watched
//! and reloaded when they change ([`IdentitySigner::watch`], as the TLS certificate is), so a
//! rotation through a Kubernetes Secret needs no restart; a file that does not load is logged
//! and the keys in use stay. Hand-written on
//! `ring` (already the TLS stack's crypto) rather than a JWT crate: one algorithm, fixed
//! claims, signing only.
//!
//! Key files are PEM, PKCS#8 (`BEGIN PRIVATE KEY`) or SEC1 (`BEGIN EC PRIVATE KEY`, what
//! `openssl ecparam -genkey` and Helm's `genPrivateKey "ecdsa"` write).

use super::metrics::IdentityMetrics;
use crate::answer::{full_body, ProxyBody};
use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use foldhash::HashMap;
use http::{header, HeaderName, HeaderValue, Response};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use yson::Node;
use yt_client::YtClient;

/// The header naming the caller for the job.
pub const USER_HEADER: HeaderName = HeaderName::from_static("x-yt-taskproxy-user");
/// The header carrying the signed assertion for the job.
pub const ASSERTION_HEADER: HeaderName = HeaderName::from_static("x-yt-taskproxy-assertion");

/// The assertion's `iss` claim.
pub const ISSUER: &str = "ytsaurus-task-proxy";

/// Where the proxy serves the public keys on the base domain and the portal hosts.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// How long an assertion is valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(300);
/// A cached assertion is replaced once it has less than this left, so a job never gets one
/// about to expire.
pub const RENEW_BEFORE: Duration = Duration::from_secs(60);

/// Bound on cached assertions; the cache starts over when it is full (each entry is cheap to
/// sign again).
const MAX_CACHED: usize = 100_000;

/// How often the JWKS document in Cypress is written again (it may have been removed, or
/// overwritten by a replica that still ran with the previous keys during a rollout).
const PUBLISH_PERIOD: Duration = Duration::from_secs(300);
/// The first retry of a failed write; doubled up to [`PUBLISH_PERIOD`].
const PUBLISH_RETRY: Duration = Duration::from_secs(2);

/// Why the identity keys cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityKeyError {
    #[error("cannot read the identity key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the identity key file {path} holds no PEM private key: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error(
        "the identity key file {path} is neither a PKCS#8 nor a SEC1 (EC) key (convert it with `openssl pkcs8 -topk8 -nocrypt`)"
    )]
    NotPkcs8 { path: PathBuf },
    #[error("the identity key file {path} is not a P-256 ECDSA key: {reason}")]
    Rejected { path: PathBuf, reason: String },
    #[error("cannot generate an identity key")]
    Generate,
}

/// Why an assertion could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the signature failed")]
    Sign,
    #[error("the login or the assertion is not a valid header value")]
    Header,
}

/// One P-256 key pair with its kid.
struct SigningKey {
    pair: EcdsaKeyPair,
    kid: String,
}

impl SigningKey {
    fn from_pkcs8(pkcs8: &[u8], path: &Path) -> Result<SigningKey, IdentityKeyError> {
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|e| IdentityKeyError::Rejected {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let kid = kid_of(pair.public_key().as_ref());
        Ok(SigningKey { pair, kid })
    }

    fn load(path: &Path) -> Result<SigningKey, IdentityKeyError> {
        let pem = std::fs::read(path).map_err(|source| IdentityKeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| IdentityKeyError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        match key {
            PrivateKeyDer::Pkcs8(der) => SigningKey::from_pkcs8(der.secret_pkcs8_der(), path),
            PrivateKeyDer::Sec1(der) => {
                SigningKey::from_pkcs8(&pkcs8_of_sec1(der.secret_sec1_der()), path)
            }
            _ => Err(IdentityKeyError::NotPkcs8 {
                path: path.to_path_buf(),
            }),
        }
    }

    fn generate() -> Result<SigningKey, IdentityKeyError> {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| IdentityKeyError::Generate)?;
        SigningKey::from_pkcs8(doc.as_ref(), Path::new("<generated>"))
    }

    fn jwk(&self) -> Jwk {
        // An uncompressed SEC1 point: 0x04 || x (32 bytes) || y (32 bytes).
        let point = self.pair.public_key().as_ref();
        let xy = point.get(1..).unwrap_or_default();
        let (x, y) = xy.split_at(xy.len() / 2);
        Jwk {
            kty: "EC",
            crv: "P-256",
            alg: "ES256",
            r#use: "sig",
            kid: self.kid.clone(),
            x: URL_SAFE_NO_PAD.encode(x),
            y: URL_SAFE_NO_PAD.encode(y),
        }
    }
}

/// The PKCS#8 `PrivateKeyInfo` (DER) wrapping the SEC1 `ECPrivateKey` `sec1` as a P-256 key.
/// ring reads PKCS#8 only; the wrapping is a fixed algorithm identifier (id-ecPublicKey,
/// prime256v1) around the same bytes, so it is written here rather than taken from an ASN.1
/// crate. ring then checks the inner key as for any PKCS#8 file: a key of another curve (its
/// SEC1 parameters differ) or without its public key is rejected.
fn pkcs8_of_sec1(sec1: &[u8]) -> Vec<u8> {
    const VERSION: [u8; 3] = [0x02, 0x01, 0x00];
    const ALGORITHM: [u8; 21] = [
        0x30, 0x13, // SEQUENCE
        0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, // 1.2.840.10045.2.1
        0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, // 1.2.840.10045.3.1.7
    ];
    let mut key = vec![0x04]; // OCTET STRING
    der_length(sec1.len(), &mut key);
    key.extend_from_slice(sec1);
    let mut out = vec![0x30]; // SEQUENCE
    der_length(VERSION.len() + ALGORITHM.len() + key.len(), &mut out);
    out.extend_from_slice(&VERSION);
    out.extend_from_slice(&ALGORITHM);
    out.extend_from_slice(&key);
    out
}

/// Appends the DER encoding of a length.
fn der_length(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// The kid of a public key: the first 16 bytes of its SHA-256, base64url.
fn kid_of(public_point: &[u8]) -> String {
    let digest = Sha256::digest(public_point);
    URL_SAFE_NO_PAD.encode(&digest[..16])
}

/// One public key of the JWKS document (RFC 7517/7518).
#[derive(Debug, Clone, Serialize)]
struct Jwk {
    kty: &'static str,
    crv: &'static str,
    alg: &'static str,
    r#use: &'static str,
    kid: String,
    x: String,
    y: String,
}

/// Where the keys come from (`--identity-key-file`, `--identity-previous-key-file`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityConfig {
    pub key_file: Option<PathBuf>,
    pub previous_key_file: Option<PathBuf>,
}

/// The claims of an assertion.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'static str,
    sub: &'a str,
    login: &'a str,
    aud: &'a str,
    operation_id: &'a str,
    task: &'a str,
    service: &'a str,
    iat: u64,
    exp: u64,
}

/// What the job is told about one request's caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeaders {
    pub user: HeaderValue,
    pub assertion: HeaderValue,
}

/// A cached assertion and when to replace it.
struct Cached {
    headers: IdentityHeaders,
    operation_id: Box<str>,
    renew_at: u64,
}

/// The service an assertion is for.
#[derive(Debug, Clone, Copy)]
pub struct Audience<'a> {
    /// The service domain (`aud`, and the cache key with the login).
    pub domain: &'a str,
    pub operation_id: &'a str,
    pub task: &'a str,
    pub service: &'a str,
}

/// The keys in use, with what is derived from them once.
struct Keys {
    current: SigningKey,
    previous: Option<SigningKey>,
    /// The JWS header (naming the current kid), base64url.
    header_b64: String,
    /// The JWKS document.
    jwks: Arc<str>,
    /// How many keys the document lists.
    published: usize,
}

impl Keys {
    fn new(current: SigningKey, previous: Option<SigningKey>) -> Keys {
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": current.kid});
        let header_b64 = URL_SAFE_NO_PAD.encode(header.to_string());
        let mut keys = vec![current.jwk()];
        if let Some(previous) = &previous {
            if previous.kid != current.kid {
                keys.push(previous.jwk());
            }
        }
        let published = keys.len();
        let jwks = serde_json::json!({ "keys": keys }).to_string().into();
        Keys {
            current,
            previous,
            header_b64,
            jwks,
            published,
        }
    }

    fn previous_kid(&self) -> Option<&str> {
        self.previous.as_ref().map(|k| k.kid.as_str())
    }
}

/// Signs assertions and publishes the public keys. Shared by all workers.
pub struct IdentitySigner {
    keys: ArcSwap<Keys>,
    /// Where the keys were read from (`None`: generated, nothing to reload).
    files: Option<IdentityConfig>,
    /// Told when the keys change (the Cypress publisher writes them at once).
    changed: tokio::sync::watch::Sender<()>,
    rng: SystemRandom,
    cache: RwLock<HashMap<String, Cached>>,
    clock: fn() -> u64,
    metrics: IdentityMetrics,
}

impl fmt::Debug for IdentitySigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.keys.load();
        f.debug_struct("IdentitySigner")
            .field("kid", &keys.current.kid)
            .field("previous_kid", &keys.previous_kid())
            .finish_non_exhaustive()
    }
}

/// The cache key of `(login, domain)`: a domain never holds `\n`, so the pair is unambiguous.
fn cache_key(login: &str, domain: &str) -> String {
    let mut key = String::with_capacity(domain.len() + 1 + login.len());
    key.push_str(domain);
    key.push('\n');
    key.push_str(login);
    key
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The keys in `key_file` and the configuration's previous key file.
fn load_files(
    key_file: &Path,
    config: &IdentityConfig,
) -> Result<(SigningKey, Option<SigningKey>), IdentityKeyError> {
    Ok((SigningKey::load(key_file)?, load_previous(config)?))
}

/// The previous key, when its file is given and there.
fn load_previous(config: &IdentityConfig) -> Result<Option<SigningKey>, IdentityKeyError> {
    let Some(path) = &config.previous_key_file else {
        return Ok(None);
    };
    // The file is there during a rotation only: a Kubernetes Secret volume shows the Secret's
    // keys, so removing `previous.pem` from the Secret ends the rotation.
    match SigningKey::load(path) {
        Ok(key) => Ok(Some(key)),
        Err(IdentityKeyError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            tracing::info!(path = %path.display(), "no previous identity key (the file is absent): only the current key is published");
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

impl IdentitySigner {
    /// The keys `config` names; without a key file a key is generated (logged as a warning:
    /// replicas then sign with different keys, each publishing only its own).
    pub fn load(config: &IdentityConfig) -> Result<IdentitySigner, IdentityKeyError> {
        let Some(key_file) = &config.key_file else {
            tracing::warn!(
                "no --identity-key-file: signing job identity assertions with a key generated at start-up (each replica has its own; give all replicas one key from a secret)"
            );
            let previous = load_previous(config)?;
            return Ok(IdentitySigner::with_keys(
                SigningKey::generate()?,
                previous,
                unix_now,
            ));
        };
        let (current, previous) = load_files(key_file, config)?;
        let mut signer = IdentitySigner::with_keys(current, previous, unix_now);
        signer.files = Some(config.clone());
        Ok(signer)
    }

    fn with_keys(
        current: SigningKey,
        previous: Option<SigningKey>,
        clock: fn() -> u64,
    ) -> IdentitySigner {
        tracing::info!(kid = %current.kid, "job identity assertions on");
        let keys = Keys::new(current, previous);
        let metrics = IdentityMetrics::default();
        metrics.set_published_keys(keys.published);
        IdentitySigner {
            keys: ArcSwap::from_pointee(keys),
            files: None,
            changed: tokio::sync::watch::Sender::new(()),
            rng: SystemRandom::new(),
            cache: RwLock::new(HashMap::default()),
            clock,
            metrics,
        }
    }

    /// Reads the key files again and, when they hold other keys, signs and publishes with
    /// those from now on (cached assertions are dropped, so the next ones carry the new kid).
    /// Returns whether the keys changed; on an error the keys in use stay. Generated keys
    /// (no `--identity-key-file`) never change.
    pub fn reload(&self) -> Result<bool, IdentityKeyError> {
        let Some(files) = &self.files else {
            return Ok(false);
        };
        let Some(key_file) = &files.key_file else {
            return Ok(false);
        };
        let (current, previous) = load_files(key_file, files)?;
        let old = self.keys.load();
        if current.kid == old.current.kid
            && previous.as_ref().map(|k| k.kid.as_str()) == old.previous_kid()
        {
            return Ok(false);
        }
        tracing::info!(
            kid = %current.kid,
            previous_kid = ?previous.as_ref().map(|k| k.kid.as_str()),
            was_kid = %old.current.kid,
            "identity keys reloaded"
        );
        let keys = Keys::new(current, previous);
        self.metrics.set_published_keys(keys.published);
        self.keys.store(Arc::new(keys));
        if let Ok(mut cache) = self.cache.write() {
            cache.clear();
        }
        self.changed.send_replace(());
        Ok(true)
    }

    /// Polls the key files' modification times every `period` and reloads on a change, until
    /// `shutdown`. A Kubernetes Secret volume swaps all of its files at once.
    pub async fn watch(self: Arc<Self>, period: Duration, shutdown: CancellationToken) {
        let Some(files) = &self.files else {
            return;
        };
        let paths = [&files.key_file, &files.previous_key_file]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        crate::file_watch::on_change(paths, period, shutdown, || {
            if let Err(error) = self.reload() {
                tracing::error!(%error, "identity keys not reloaded; the keys in use stay");
            }
        })
        .await
    }

    /// A receiver told each time the keys change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<()> {
        self.changed.subscribe()
    }

    /// The signer's metrics (registered with the auth metrics).
    pub fn metrics(&self) -> &IdentityMetrics {
        &self.metrics
    }

    /// The kid of the signing key.
    pub fn kid(&self) -> String {
        self.keys.load().current.kid.clone()
    }

    /// The JWKS document: the signing key, then the previous one when rotating.
    pub fn jwks(&self) -> Arc<str> {
        self.keys.load().jwks.clone()
    }

    /// The answer to `GET /.well-known/jwks.json`.
    pub fn jwks_response(&self) -> Response<ProxyBody> {
        let mut response = Response::new(full_body(self.jwks().to_string()));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/jwk-set+json"),
        );
        // Verifiers may cache it for as long as a token lives; a rotation publishes the new
        // key before it signs (see docs/auth.md).
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        response
    }

    /// The headers for `login`'s request to `audience`: a cached assertion while it has more
    /// than [`RENEW_BEFORE`] left, else a new one.
    pub fn headers(
        &self,
        login: &str,
        audience: Audience<'_>,
    ) -> Result<IdentityHeaders, SignError> {
        let now = (self.clock)();
        if let Ok(cache) = self.cache.read() {
            if let Some(cached) = cache.get(&cache_key(login, audience.domain)) {
                if cached.renew_at > now && *cached.operation_id == *audience.operation_id {
                    return Ok(cached.headers.clone());
                }
            }
        }
        let headers = match self.sign(login, audience, now) {
            Ok(headers) => {
                self.metrics.signed();
                headers
            }
            Err(error) => {
                self.metrics.signing_error();
                return Err(error);
            }
        };
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(
                cache_key(login, audience.domain),
                Cached {
                    headers: headers.clone(),
                    operation_id: Box::from(audience.operation_id),
                    renew_at: now + TOKEN_LIFETIME.as_secs() - RENEW_BEFORE.as_secs(),
                },
            );
        }
        Ok(headers)
    }

    fn sign(
        &self,
        login: &str,
        audience: Audience<'_>,
        now: u64,
    ) -> Result<IdentityHeaders, SignError> {
        let claims = Claims {
            iss: ISSUER,
            sub: login,
            login,
            aud: audience.domain,
            operation_id: audience.operation_id,
            task: audience.task,
            service: audience.service,
            iat: now,
            exp: now + TOKEN_LIFETIME.as_secs(),
        };
        let payload = serde_json::to_vec(&claims).map_err(|_| SignError::Sign)?;
        let keys = self.keys.load();
        let mut token = String::with_capacity(keys.header_b64.len() + payload.len() * 4 / 3 + 100);
        token.push_str(&keys.header_b64);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let signature = keys
            .current
            .pair
            .sign(&self.rng, token.as_bytes())
            .map_err(|_| SignError::Sign)?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        Ok(IdentityHeaders {
            user: HeaderValue::from_str(login).map_err(|_| SignError::Header)?,
            assertion: HeaderValue::from_str(&token).map_err(|_| SignError::Header)?,
        })
    }
}

/// Keeps the JWKS document at `path` (a Cypress document node, `<dir-path>/jwks`) until
/// `stop`, so a job can read the keys with the YTsaurus client it already has. Written with
/// the proxy's robot client at start (retried until it succeeds), again every
/// [`PUBLISH_PERIOD`], and at once when the keys are reloaded.
pub async fn publish_jwks(
    signer: Arc<IdentitySigner>,
    client: YtClient,
    path: String,
    stop: CancellationToken,
) {
    let mut changed = signer.subscribe();
    let mut retry = PUBLISH_RETRY;
    loop {
        let Some(document) = serde_json::from_str(&signer.jwks())
            .ok()
            .and_then(|json| Node::from_json(&json).ok())
        else {
            tracing::error!("the JWKS document is not valid JSON; not publishing it");
            return;
        };
        let written = async {
            client.create("document", &path, None, true, true).await?;
            client.set(&path, &document).await
        }
        .await;
        let wait = match written {
            Ok(()) => {
                tracing::debug!(%path, kid = %signer.kid(), "published the identity keys");
                retry = PUBLISH_RETRY;
                PUBLISH_PERIOD
            }
            Err(error) => {
                tracing::warn!(%path, %error, "cannot publish the identity keys in Cypress; retrying");
                let wait = retry;
                retry = (retry * 2).min(PUBLISH_PERIOD);
                wait
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            // A closed channel (the signer is gone) leaves the period's timer.
            Ok(()) = changed.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    static NOW: AtomicU64 = AtomicU64::new(1_700_000_000);

    fn fake_now() -> u64 {
        NOW.load(Ordering::SeqCst)
    }

    const AUD: Audience<'static> = Audience {
        domain: "abcdef12.example.net",
        operation_id: "1-2-3-4",
        task: "main",
        service: "http",
    };

    fn claims_of(token: &HeaderValue) -> serde_json::Value {
        let text = token.to_str().unwrap_or_default();
        let payload = text.split('.').nth(1).unwrap_or_default();
        let bytes = URL_SAFE_NO_PAD.decode(payload).unwrap_or_default();
        serde_json::from_slice(&bytes).unwrap_or_default()
    }

    #[test]
    fn caches_per_user_and_service_and_renews_before_expiry() {
        let identity = IdentitySigner::with_keys(SigningKey::generate().unwrap(), None, fake_now);
        let first = identity.headers("alice", AUD).unwrap();
        assert_eq!(first.user, "alice");
        let claims = claims_of(&first.assertion);
        assert_eq!(claims["login"], "alice");
        assert_eq!(claims["aud"], AUD.domain);
        assert_eq!(claims["operation_id"], AUD.operation_id);
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            300
        );

        // Reused while fresh (ECDSA signatures are randomized: a new one would differ).
        NOW.fetch_add(
            TOKEN_LIFETIME.as_secs() - RENEW_BEFORE.as_secs() - 1,
            Ordering::SeqCst,
        );
        assert_eq!(identity.headers("alice", AUD).unwrap(), first);
        // Another user or another service gets its own.
        assert_ne!(
            identity.headers("bob", AUD).unwrap().assertion,
            first.assertion
        );
        let other = Audience {
            domain: "99999999.example.net",
            ..AUD
        };
        assert_ne!(
            identity.headers("alice", other).unwrap().assertion,
            first.assertion
        );
        // A new operation behind the same domain is not told the old one.
        let rerun = Audience {
            operation_id: "5-6-7-8",
            ..AUD
        };
        let renamed = identity.headers("alice", rerun).unwrap();
        assert_eq!(claims_of(&renamed.assertion)["operation_id"], "5-6-7-8");

        // Renewed once less than RENEW_BEFORE is left.
        NOW.fetch_add(1, Ordering::SeqCst);
        let second = identity.headers("alice", AUD).unwrap();
        assert_ne!(second.assertion, first.assertion);
        assert!(claims_of(&second.assertion)["iat"].as_u64() > claims["iat"].as_u64());
    }

    #[test]
    fn jwks_lists_current_then_previous_with_stable_kids() {
        let current = SigningKey::generate().unwrap();
        let previous = SigningKey::generate().unwrap();
        let (kid, old_kid) = (current.kid.clone(), previous.kid.clone());
        let identity = IdentitySigner::with_keys(current, Some(previous), fake_now);
        let jwks: serde_json::Value = serde_json::from_str(&identity.jwks()).unwrap();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0]["kid"], kid.as_str());
        assert_eq!(keys[1]["kid"], old_kid.as_str());
        assert_eq!(keys[0]["crv"], "P-256");
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(keys[0]["x"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
        assert_eq!(
            kid,
            kid_of(identity.keys.load().current.pair.public_key().as_ref())
        );
    }

    /// One throwaway test key: as `openssl ecparam -genkey` (parameters first) and Helm's
    /// `genPrivateKey "ecdsa"` write it (SEC1), and as `openssl pkcs8 -topk8` converts it.
    const SEC1_P256: &str = "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEINwFlGqTa5kd+kIpU/o26jJm5Qq5RV4Uh42hr0tS98+QoAoGCCqGSM49\nAwEHoUQDQgAErUClPxkfsUejTeaNPPcaTIuN4byNg2G+Tgf+D6XHkBS7LH/a5YSd\n9+P1vYaEasvshdULruPsOlU5BQBaLbc1xQ==\n-----END EC PRIVATE KEY-----\n\n";
    const PKCS8_P256: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg3AWUapNrmR36QilT\n+jbqMmblCrlFXhSHjaGvS1L3z5ChRANCAAStQKU/GR+xR6NN5o089xpMi43hvI2D\nYb5OB/4PpceQFLssf9rlhJ334/W9hoRqy+yF1Quu4+w6VTkFAFottzXF\n-----END PRIVATE KEY-----\n";
    const SEC1_P384: &str = "-----BEGIN EC PRIVATE KEY-----\nMIGkAgEBBDDA+OticCGBZAYgEtVPhbfcYA5u8Bz1AdkCex3Kh5RVBqT1GPtQdwD5\nqlBAFv1pLmegBwYFK4EEACKhZANiAATt/YHSC8XlP4hD78kWnbxxTTYeh8uiEZ92\nMjwU6r6lMyMDpcUu7S+UnOrIMz1tMF4FXFe7r9tgYQsEFDOxBTcc9uIdHRH4KSfO\nDWKWQGQnYJ30ze7QcLQ7cZPR88E4L2Y=\n-----END EC PRIVATE KEY-----\n";

    fn key_file(dir: &Path, name: &str, pem: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    }

    #[test]
    fn sec1_and_pkcs8_files_of_one_key_load_as_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let sec1 = SigningKey::load(&key_file(dir.path(), "sec1.pem", SEC1_P256)).unwrap();
        let pkcs8 = SigningKey::load(&key_file(dir.path(), "pkcs8.pem", PKCS8_P256)).unwrap();
        assert_eq!(sec1.kid, pkcs8.kid);
        assert_eq!(
            sec1.pair.public_key().as_ref(),
            pkcs8.pair.public_key().as_ref()
        );
        // It signs what the other verifies.
        let signature = sec1.pair.sign(&SystemRandom::new(), b"msg").unwrap();
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            pkcs8.pair.public_key().as_ref(),
        )
        .verify(b"msg", signature.as_ref())
        .unwrap();

        let err = SigningKey::load(&key_file(dir.path(), "p384.pem", SEC1_P384))
            .err()
            .unwrap();
        assert!(matches!(err, IdentityKeyError::Rejected { .. }), "{err}");
    }

    #[test]
    fn an_absent_previous_key_file_means_no_rotation_but_an_absent_current_one_fails() {
        let dir = tempfile::tempdir().unwrap();
        let current = key_file(dir.path(), "current.pem", PKCS8_P256);
        let absent = dir.path().join("previous.pem");
        let identity = IdentitySigner::load(&IdentityConfig {
            key_file: Some(current.clone()),
            previous_key_file: Some(absent.clone()),
        })
        .unwrap();
        assert_eq!(identity.metrics().published_keys(), 1);
        let jwks: serde_json::Value = serde_json::from_str(&identity.jwks()).unwrap();
        assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(1));

        key_file(dir.path(), "previous.pem", SEC1_P384);
        let err = IdentitySigner::load(&IdentityConfig {
            key_file: Some(current),
            previous_key_file: Some(absent.clone()),
        })
        .unwrap_err();
        assert!(matches!(err, IdentityKeyError::Rejected { .. }), "{err}");
        let err = IdentitySigner::load(&IdentityConfig {
            key_file: Some(dir.path().join("nope.pem")),
            previous_key_file: None,
        })
        .unwrap_err();
        assert!(matches!(err, IdentityKeyError::Read { .. }), "{err}");
    }

    #[test]
    fn reloading_changed_files_switches_keys_and_a_bad_file_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let pem = |alg| rcgen::KeyPair::generate_for(alg).unwrap().serialize_pem();
        let p256 = || pem(&rcgen::PKCS_ECDSA_P256_SHA256);
        let current = key_file(dir.path(), "current.pem", &p256());
        let previous = dir.path().join("previous.pem");
        let identity = IdentitySigner::load(&IdentityConfig {
            key_file: Some(current.clone()),
            previous_key_file: Some(previous.clone()),
        })
        .unwrap();
        let changed = identity.subscribe();
        let old_kid = identity.kid();
        let first = identity.headers("alice", AUD).unwrap();
        assert!(!identity.reload().unwrap(), "the same files: no change");
        assert!(!changed.has_changed().unwrap());

        // A rotation's second step: a new current key, the old one as previous.
        std::fs::copy(&current, &previous).unwrap();
        key_file(dir.path(), "current.pem", &p256());
        assert!(identity.reload().unwrap());
        assert!(changed.has_changed().unwrap());
        let new_kid = identity.kid();
        assert_ne!(new_kid, old_kid);
        let jwks: serde_json::Value = serde_json::from_str(&identity.jwks()).unwrap();
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|k| k["kid"].as_str())
            .collect();
        assert_eq!(kids, [new_kid.as_str(), old_kid.as_str()]);
        assert_eq!(identity.metrics().published_keys(), 2);
        // The cached assertion is not reused: the next one names the new key.
        let second = identity.headers("alice", AUD).unwrap();
        assert_ne!(second.assertion, first.assertion);
        let header = second
            .assertion
            .to_str()
            .unwrap()
            .split('.')
            .next()
            .unwrap();
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
        assert_eq!(header["kid"], new_kid.as_str());

        // A broken current file is refused and the keys in use stay.
        std::fs::write(&current, "garbage").unwrap();
        assert!(identity.reload().is_err());
        assert_eq!(identity.kid(), new_kid);
        assert_eq!(identity.metrics().published_keys(), 2);

        // The rotation's end: the previous file goes.
        std::fs::remove_file(&previous).unwrap();
        let current_pem = p256();
        key_file(dir.path(), "current.pem", &current_pem);
        assert!(identity.reload().unwrap());
        assert_eq!(identity.metrics().published_keys(), 1);
    }

    #[tokio::test]
    async fn the_watcher_reloads_when_a_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let p256 = || {
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .unwrap()
                .serialize_pem()
        };
        let current = key_file(dir.path(), "current.pem", &p256());
        let identity = Arc::new(
            IdentitySigner::load(&IdentityConfig {
                key_file: Some(current),
                previous_key_file: Some(dir.path().join("previous.pem")),
            })
            .unwrap(),
        );
        let stop = CancellationToken::new();
        tokio::spawn(
            identity
                .clone()
                .watch(Duration::from_millis(20), stop.clone()),
        );
        let mut changed = identity.subscribe();
        // The watcher takes the files' first stamps once it runs.
        tokio::time::sleep(Duration::from_millis(100)).await;
        key_file(dir.path(), "previous.pem", &p256());
        tokio::time::timeout(Duration::from_secs(10), changed.changed())
            .await
            .expect("reloaded within 10 s")
            .unwrap();
        assert_eq!(identity.metrics().published_keys(), 2);
        stop.cancel();
    }

    #[test]
    fn metrics_count_signatures_not_cache_hits_and_the_published_keys() {
        let identity = IdentitySigner::with_keys(
            SigningKey::generate().unwrap(),
            Some(SigningKey::generate().unwrap()),
            unix_now,
        );
        assert_eq!(identity.metrics().published_keys(), 2);
        identity.headers("alice", AUD).unwrap();
        identity.headers("alice", AUD).unwrap();
        identity.headers("bob", AUD).unwrap();
        assert_eq!(identity.metrics().signed_count(), 2);
        // A login that is no header value fails to sign and is counted.
        assert!(identity.headers("al\nice", AUD).is_err());
        assert_eq!(identity.metrics().signing_errors(), 1);
        assert_eq!(identity.metrics().signed_count(), 2);
    }

    #[test]
    fn a_key_file_that_is_not_pkcs8_is_refused_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("identity-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key.pem");
        std::fs::write(&path, "not a key").unwrap();
        let err = IdentitySigner::load(&IdentityConfig {
            key_file: Some(path.clone()),
            previous_key_file: None,
        })
        .unwrap_err();
        assert!(matches!(err, IdentityKeyError::Pem { .. }), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
