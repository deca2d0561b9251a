//! Extracting a request's route key (the service hash) from `x-yt-taskproxy-id` or from the
//! `Host`/`:authority` `<hash>.<base-domain>` (DESIGN §5).

use super::HASH_LEN;

/// Why a request carries no usable route key. Each maps to a clear 4xx answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteKeyError {
    #[error("the request names no service: send Host: <hash>.{base_domain} or the header x-yt-taskproxy-id: <hash>")]
    Missing { base_domain: String },
    #[error("host {host:?} is not a service domain: expected <hash>.{base_domain}")]
    ForeignHost { host: String, base_domain: String },
    #[error("{value:?} is not a service hash: expected {HASH_LEN} hexadecimal characters")]
    BadHash { value: String },
    #[error("more than one x-yt-taskproxy-id header")]
    DuplicateHeader,
    #[error("more than one Host header")]
    DuplicateHost,
}

/// A route key: the lowercase hash of a service, held inline (routing a request allocates
/// nothing). Dereferences to `&str`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RouteKey {
    bytes: [u8; 64],
    len: u8,
}

impl std::ops::Deref for RouteKey {
    type Target = str;
    fn deref(&self) -> &str {
        // Only ASCII hex digits are ever stored.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl std::fmt::Display for RouteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

impl std::fmt::Debug for RouteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl PartialEq<&str> for RouteKey {
    fn eq(&self, other: &&str) -> bool {
        **self == **other
    }
}

/// The route key of a request: the lowercase hash of the service it names.
///
/// `taskproxy_ids` are the values of every `x-yt-taskproxy-id` header (one is allowed; it wins
/// over the host). `host` is the `Host` header or `:authority`, port optional.
pub fn route_key<'a>(
    taskproxy_ids: impl IntoIterator<Item = &'a [u8]>,
    host: Option<&str>,
    base_domain: &str,
) -> Result<RouteKey, RouteKeyError> {
    let mut ids = taskproxy_ids.into_iter();
    if let Some(id) = ids.next() {
        if ids.next().is_some() {
            return Err(RouteKeyError::DuplicateHeader);
        }
        let id = std::str::from_utf8(id).map(str::trim).unwrap_or("\u{fffd}");
        return parse_hash(id);
    }
    let Some(host) = host.map(str::trim).filter(|h| !h.is_empty()) else {
        return Err(RouteKeyError::Missing {
            base_domain: base_domain.to_string(),
        });
    };
    let name = strip_port(host).trim_end_matches('.');
    let base = base_domain.trim_end_matches('.');
    let foreign = || RouteKeyError::ForeignHost {
        host: host.to_string(),
        base_domain: base_domain.to_string(),
    };
    // `<label>.<base>`, compared without lowercased copies.
    let label_len = name.len().checked_sub(base.len() + 1).ok_or_else(foreign)?;
    let bytes = name.as_bytes();
    if bytes.get(label_len) != Some(&b'.')
        || !bytes[label_len + 1..].eq_ignore_ascii_case(base.as_bytes())
    {
        return Err(foreign());
    }
    // An ASCII '.' sits at `label_len`: a character boundary.
    let label = &name[..label_len];
    if label.is_empty() || label.contains('.') {
        return Err(foreign());
    }
    parse_hash(label)
}

/// A hash is 8 hex characters; longer ones (up to 64) name services whose short hash collides.
fn parse_hash(value: &str) -> Result<RouteKey, RouteKeyError> {
    let ok = (HASH_LEN..=64).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_hexdigit());
    if !ok {
        return Err(RouteKeyError::BadHash {
            value: value.chars().take(80).collect(),
        });
    }
    let mut key = RouteKey {
        bytes: [0; 64],
        len: value.len() as u8,
    };
    for (slot, b) in key.bytes.iter_mut().zip(value.bytes()) {
        *slot = b.to_ascii_lowercase();
    }
    Ok(key)
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // An IPv6 literal is never a service domain; keep it whole so it is reported as foreign.
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "tp.example.net";

    fn by_host(host: &str) -> Result<RouteKey, RouteKeyError> {
        route_key(std::iter::empty(), Some(host), BASE)
    }

    #[test]
    fn host_forms() {
        assert_eq!(by_host("ae5cf6f5.tp.example.net").unwrap(), "ae5cf6f5");
        assert_eq!(by_host("AE5CF6F5.TP.Example.NET:8080").unwrap(), "ae5cf6f5");
        assert_eq!(by_host("ae5cf6f5.tp.example.net.").unwrap(), "ae5cf6f5");
        assert!(matches!(
            by_host("tp.example.net"),
            Err(RouteKeyError::ForeignHost { .. })
        ));
        assert!(matches!(
            by_host("x.ae5cf6f5.tp.example.net"),
            Err(RouteKeyError::ForeignHost { .. })
        ));
        assert!(matches!(
            by_host("ae5cf6f5.other.net"),
            Err(RouteKeyError::ForeignHost { .. })
        ));
        assert!(matches!(
            by_host("ae5cf6f5xtp.example.net"),
            Err(RouteKeyError::ForeignHost { .. })
        ));
        assert!(matches!(
            by_host("[::1]:80"),
            Err(RouteKeyError::ForeignHost { .. })
        ));
        assert!(matches!(
            by_host("ae5cf6.tp.example.net"),
            Err(RouteKeyError::BadHash { .. })
        ));
        assert!(matches!(
            by_host("zzzzzzzz.tp.example.net"),
            Err(RouteKeyError::BadHash { .. })
        ));
        assert!(matches!(by_host(""), Err(RouteKeyError::Missing { .. })));
        assert!(matches!(
            by_host("ü.tp.example.net"),
            Err(RouteKeyError::BadHash { .. })
        ));
        assert!(matches!(
            by_host("aü.example.net"),
            Err(RouteKeyError::ForeignHost { .. })
        ));
        assert!(matches!(
            route_key(std::iter::empty(), None, BASE),
            Err(RouteKeyError::Missing { .. })
        ));
    }

    #[test]
    fn header_wins_and_must_be_single() {
        let id: &[u8] = b"AE5CF6F5";
        assert_eq!(
            route_key([id], Some("other.host"), BASE).unwrap(),
            "ae5cf6f5"
        );
        assert_eq!(
            route_key([id, id], None, BASE),
            Err(RouteKeyError::DuplicateHeader)
        );
        let bad: &[u8] = b"ae5cf6f5.tp.example.net";
        assert!(matches!(
            route_key([bad], None, BASE),
            Err(RouteKeyError::BadHash { .. })
        ));
        let bin: &[u8] = b"\xff\xfe";
        assert!(matches!(
            route_key([bin], None, BASE),
            Err(RouteKeyError::BadHash { .. })
        ));
    }
}
