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

/// The route key of a request: the lowercase hash of the service it names.
///
/// `taskproxy_ids` are the values of every `x-yt-taskproxy-id` header (one is allowed; it wins
/// over the host). `host` is the `Host` header or `:authority`, port optional.
pub fn route_key<'a>(
    taskproxy_ids: impl IntoIterator<Item = &'a [u8]>,
    host: Option<&str>,
    base_domain: &str,
) -> Result<String, RouteKeyError> {
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
    let name = strip_port(host).trim_end_matches('.').to_ascii_lowercase();
    let base = base_domain.trim_end_matches('.').to_ascii_lowercase();
    let foreign = || RouteKeyError::ForeignHost {
        host: host.to_string(),
        base_domain: base_domain.to_string(),
    };
    let label = name
        .strip_suffix(base.as_str())
        .and_then(|rest| rest.strip_suffix('.'))
        .ok_or_else(foreign)?;
    if label.is_empty() || label.contains('.') {
        return Err(foreign());
    }
    parse_hash(label)
}

/// A hash is 8 hex characters; longer ones (up to 64) name services whose short hash collides.
fn parse_hash(value: &str) -> Result<String, RouteKeyError> {
    let ok = (HASH_LEN..=64).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(RouteKeyError::BadHash {
            value: value.chars().take(80).collect(),
        })
    }
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

    fn by_host(host: &str) -> Result<String, RouteKeyError> {
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
