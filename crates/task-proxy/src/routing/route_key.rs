//! Extracting a request's route key from its routing headers or from the `Host`/`:authority`
//! (see docs/user-guide.md). One function, [`route_request`], serves both data-plane paths.
//!
//! Three forms name a service:
//! - the hash: `Host: <hash>.<base-domain>` or `x-yt-taskproxy-id: <hash>`;
//! - the alias of its operation: `Host: <alias>-<task>-<service>.<base-domain>`, or the headers
//!   `x-yt-taskproxy-operation-alias`, `x-yt-taskproxy-task-name`, `x-yt-taskproxy-service`;
//! - its operation id: the headers `x-yt-taskproxy-operation-id`, `x-yt-taskproxy-task-name`,
//!   `x-yt-taskproxy-service`.
//!
//! Routing headers win over the host. `x-yt-taskproxy-id` and the triple headers are two forms
//! that cannot be mixed; a triple needs all three parts and exactly one of operation id and
//! alias; every routing header may appear once. Anything else is a clear 400.

use super::HASH_LEN;

/// The longest task or service name, and the longest alias, an alias domain may carry.
pub const ALIAS_NAME_MAX: usize = 30;
/// The longest operation id, task name or service accepted in the operation-id headers.
const OPERATION_PART_MAX: usize = 128;
/// `<alias>-<task>-<service>` at its longest.
const ALIAS_LABEL_MAX: usize = 3 * ALIAS_NAME_MAX + 2;

/// The headers that route a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutingHeader {
    Id,
    OperationId,
    OperationAlias,
    TaskName,
    Service,
}

impl RoutingHeader {
    pub const ALL: [RoutingHeader; 5] = [
        RoutingHeader::Id,
        RoutingHeader::OperationId,
        RoutingHeader::OperationAlias,
        RoutingHeader::TaskName,
        RoutingHeader::Service,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RoutingHeader::Id => "x-yt-taskproxy-id",
            RoutingHeader::OperationId => "x-yt-taskproxy-operation-id",
            RoutingHeader::OperationAlias => "x-yt-taskproxy-operation-alias",
            RoutingHeader::TaskName => "x-yt-taskproxy-task-name",
            RoutingHeader::Service => "x-yt-taskproxy-service",
        }
    }

    /// Which routing header `name` is (ASCII case-insensitive), if any.
    #[inline]
    pub fn of(name: &[u8]) -> Option<RoutingHeader> {
        const PREFIX: &[u8] = b"x-yt-taskproxy-";
        if name.len() < PREFIX.len() + 2 || !name[..PREFIX.len()].eq_ignore_ascii_case(PREFIX) {
            return None;
        }
        let rest = &name[PREFIX.len()..];
        let is = |known: &[u8]| rest.eq_ignore_ascii_case(known);
        match rest.len() {
            2 if is(b"id") => Some(RoutingHeader::Id),
            12 if is(b"operation-id") => Some(RoutingHeader::OperationId),
            15 if is(b"operation-alias") => Some(RoutingHeader::OperationAlias),
            9 if is(b"task-name") => Some(RoutingHeader::TaskName),
            7 if is(b"service") => Some(RoutingHeader::Service),
            _ => None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The routing headers of one request (borrowed values; nothing is copied).
#[derive(Debug, Clone, Copy, Default)]
pub struct RoutingHeaders<'a> {
    values: [Option<&'a [u8]>; 5],
    duplicate: Option<RoutingHeader>,
}

impl<'a> RoutingHeaders<'a> {
    /// Collects the routing headers among `(name, value)` pairs; other names are ignored.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Self {
        let mut headers = RoutingHeaders::default();
        for (name, value) in pairs {
            if let Some(header) = RoutingHeader::of(name) {
                headers.add(header, value);
            }
        }
        headers
    }

    /// Only `x-yt-taskproxy-id` values (the form before the triple headers existed).
    pub fn from_ids(ids: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut headers = RoutingHeaders::default();
        for id in ids {
            headers.add(RoutingHeader::Id, id);
        }
        headers
    }

    /// Records one value of `header`; a second value of the same header makes the request bad.
    pub fn add(&mut self, header: RoutingHeader, value: &'a [u8]) {
        let slot = &mut self.values[header.index()];
        if slot.is_some() {
            self.duplicate.get_or_insert(header);
        } else {
            *slot = Some(value);
        }
    }

    pub fn get(&self, header: RoutingHeader) -> Option<&'a [u8]> {
        self.values[header.index()]
    }

    pub fn is_empty(&self) -> bool {
        self.values.iter().all(Option::is_none)
    }
}

/// Why a request carries no usable route key. Each maps to a clear 400 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteKeyError {
    #[error("the request names no service: send Host: <hash>.{base_domain} (or <alias>-<task>-<service>.{base_domain}) or the header x-yt-taskproxy-id: <hash>")]
    Missing { base_domain: String },
    #[error("host {host:?} is not a service domain: expected <hash>.{base_domain} or <alias>-<task>-<service>.{base_domain}")]
    ForeignHost { host: String, base_domain: String },
    #[error("{value:?} is not a service hash: expected {HASH_LEN} to 64 hexadecimal characters")]
    BadHash { value: String },
    #[error("{value:?} is not an alias domain label <alias>-<task>-<service>: the alias must match ^[a-z0-9_]([a-z0-9_-]{{0,28}}[a-z0-9_])?$, the task name and service ^[a-z0-9_]{{1,30}}$")]
    BadAliasLabel { value: String },
    #[error("{header} {value:?} is not valid: {rule}")]
    BadHeader {
        header: &'static str,
        value: String,
        rule: &'static str,
    },
    #[error("more than one {0} header")]
    DuplicateHeader(&'static str),
    #[error("more than one Host header")]
    DuplicateHost,
    #[error("{0}")]
    ConflictingHeaders(&'static str),
    #[error("the header {missing} is missing: routing by operation needs x-yt-taskproxy-operation-id (or x-yt-taskproxy-operation-alias), x-yt-taskproxy-task-name and x-yt-taskproxy-service")]
    IncompleteHeaders { missing: &'static str },
}

/// What a route key names a service by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// Its hash (8 to 64 lowercase hex characters).
    Hash,
    /// Its alias domain label, `<alias>-<task>-<service>`, lowercase.
    Alias,
    /// Its `(operation id, task, service)`, as [`operation_route_key`] writes it.
    Operation,
}

const INLINE: usize = 96;

/// A route key. The hash and alias forms are held inline (routing by host or by
/// `x-yt-taskproxy-id` allocates nothing); only the operation-id headers allocate. Dereferences
/// to the text the snapshot indexes.
#[derive(Clone, PartialEq, Eq)]
pub struct RouteKey {
    kind: RouteKind,
    bytes: [u8; INLINE],
    len: u8,
    long: Option<Box<str>>,
}

impl RouteKey {
    pub fn kind(&self) -> RouteKind {
        self.kind
    }

    /// An inline key from lowercased ASCII `parts`, which fit `INLINE` (callers check).
    fn inline(kind: RouteKind, parts: &[&[u8]]) -> RouteKey {
        let mut key = RouteKey {
            kind,
            bytes: [0; INLINE],
            len: 0,
            long: None,
        };
        let mut at = 0;
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                key.bytes[at] = b'-';
                at += 1;
            }
            for (slot, b) in key.bytes[at..].iter_mut().zip(part.iter()) {
                *slot = b.to_ascii_lowercase();
            }
            at += part.len();
        }
        key.len = at as u8;
        key
    }
}

impl std::ops::Deref for RouteKey {
    type Target = str;
    fn deref(&self) -> &str {
        match &self.long {
            Some(long) => long,
            // Only ASCII is ever stored inline.
            None => std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for RouteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            RouteKind::Operation => {
                for (i, part) in self.split('\n').enumerate() {
                    if i > 0 {
                        f.write_str("/")?;
                    }
                    f.write_str(part)?;
                }
                Ok(())
            }
            _ => f.write_str(self),
        }
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

/// The key under which the snapshot indexes a service by operation id.
pub fn operation_route_key(operation_id: &str, task_name: &str, service: &str) -> String {
    let mut key = String::with_capacity(operation_id.len() + task_name.len() + service.len() + 2);
    key.push_str(&operation_id.to_ascii_lowercase());
    key.push('\n');
    key.push_str(task_name);
    key.push('\n');
    key.push_str(service);
    key
}

/// A task or service name usable in an alias domain: `^[a-z0-9_]{1,30}$`.
pub fn is_alias_part(name: &str) -> bool {
    (1..=ALIAS_NAME_MAX).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// An operation alias (without its `*`) usable in a domain:
/// `^[a-z0-9_]([a-z0-9_-]{0,28}[a-z0-9_])?$`.
pub fn is_valid_alias(alias: &str) -> bool {
    let b = alias.as_bytes();
    let edge = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_';
    (1..=ALIAS_NAME_MAX).contains(&b.len())
        && edge(b[0])
        && edge(b[b.len() - 1])
        && b.iter().all(|&c| edge(c) || c == b'-')
}

/// The alias domain label `<alias>-<task>-<service>` of a service, when all three names follow
/// the rules (else the service has no alias route).
pub fn alias_label(alias: &str, task_name: &str, service: &str) -> Option<String> {
    (is_valid_alias(alias) && is_alias_part(task_name) && is_alias_part(service))
        .then(|| format!("{alias}-{task_name}-{service}"))
}

/// Splits an alias domain label (lowercase) into `(alias, task, service)`, from the right: the
/// task and service hold no `-`, the alias may. `None` when a name breaks its rule.
pub fn parse_alias_label(label: &str) -> Option<(&str, &str, &str)> {
    let (rest, service) = label.rsplit_once('-')?;
    let (alias, task) = rest.rsplit_once('-')?;
    (is_valid_alias(alias) && is_alias_part(task) && is_alias_part(service))
        .then_some((alias, task, service))
}

/// The route key of a request routed by `x-yt-taskproxy-id` (its values) or by the host; the
/// form from before the triple headers. See [`route_request`].
pub fn route_key<'a>(
    taskproxy_ids: impl IntoIterator<Item = &'a [u8]>,
    host: Option<&str>,
    base_domain: &str,
) -> Result<RouteKey, RouteKeyError> {
    route_request(&RoutingHeaders::from_ids(taskproxy_ids), host, base_domain)
}

/// The route key of a request: by its routing headers when it has any, else by its host
/// (`Host` or `:authority`, port optional).
pub fn route_request(
    headers: &RoutingHeaders<'_>,
    host: Option<&str>,
    base_domain: &str,
) -> Result<RouteKey, RouteKeyError> {
    if let Some(duplicate) = headers.duplicate {
        return Err(RouteKeyError::DuplicateHeader(duplicate.name()));
    }
    if !headers.is_empty() {
        return route_by_headers(headers);
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
    if label.contains('-') {
        return parse_alias_host_label(label);
    }
    parse_hash(label)
}

fn parse_alias_host_label(label: &str) -> Result<RouteKey, RouteKeyError> {
    let bad = || RouteKeyError::BadAliasLabel {
        value: label.chars().take(100).collect(),
    };
    if label.len() > ALIAS_LABEL_MAX || !label.is_ascii() {
        return Err(bad());
    }
    let key = RouteKey::inline(RouteKind::Alias, &[label.as_bytes()]);
    parse_alias_label(&key).ok_or_else(bad)?;
    Ok(key)
}

fn route_by_headers(headers: &RoutingHeaders<'_>) -> Result<RouteKey, RouteKeyError> {
    let id = headers.get(RoutingHeader::Id);
    let operation_id = headers.get(RoutingHeader::OperationId);
    let alias = headers.get(RoutingHeader::OperationAlias);
    let task = headers.get(RoutingHeader::TaskName);
    let service = headers.get(RoutingHeader::Service);
    if let Some(id) = id {
        if operation_id.is_some() || alias.is_some() || task.is_some() || service.is_some() {
            return Err(RouteKeyError::ConflictingHeaders(
                "x-yt-taskproxy-id cannot be combined with x-yt-taskproxy-operation-id, \
                 x-yt-taskproxy-operation-alias, x-yt-taskproxy-task-name or \
                 x-yt-taskproxy-service: send one form",
            ));
        }
        return parse_hash(text(id).unwrap_or("\u{fffd}"));
    }
    if operation_id.is_some() && alias.is_some() {
        return Err(RouteKeyError::ConflictingHeaders(
            "send x-yt-taskproxy-operation-id or x-yt-taskproxy-operation-alias, not both",
        ));
    }
    let missing = |header: RoutingHeader| RouteKeyError::IncompleteHeaders {
        missing: header.name(),
    };
    let (Some(task), Some(service)) = (task, service) else {
        return Err(missing(if task.is_none() {
            RoutingHeader::TaskName
        } else {
            RoutingHeader::Service
        }));
    };
    let bad = |header: RoutingHeader, value: &[u8], rule: &'static str| RouteKeyError::BadHeader {
        header: header.name(),
        value: String::from_utf8_lossy(value).chars().take(100).collect(),
        rule,
    };
    if let Some(alias) = alias {
        let alias_text = text(alias)
            .map(|a| a.strip_prefix('*').unwrap_or(a).to_ascii_lowercase())
            .filter(|a| is_valid_alias(a))
            .ok_or_else(|| {
                bad(
                    RoutingHeader::OperationAlias,
                    alias,
                    "an alias matches ^\\*?[a-z0-9_]([a-z0-9_-]{0,28}[a-z0-9_])?$",
                )
            })?;
        let part = |header: RoutingHeader, value: &[u8]| {
            text(value)
                .map(str::to_ascii_lowercase)
                .filter(|v| is_alias_part(v))
                .ok_or_else(|| bad(header, value, "names match ^[a-z0-9_]{1,30}$"))
        };
        let task = part(RoutingHeader::TaskName, task)?;
        let service = part(RoutingHeader::Service, service)?;
        return Ok(RouteKey::inline(
            RouteKind::Alias,
            &[alias_text.as_bytes(), task.as_bytes(), service.as_bytes()],
        ));
    }
    let Some(operation_id) = operation_id else {
        return Err(missing(RoutingHeader::OperationId));
    };
    fn visible(
        header: RoutingHeader,
        value: &[u8],
        bad: impl Fn(RoutingHeader, &[u8], &'static str) -> RouteKeyError,
    ) -> Result<&str, RouteKeyError> {
        text(value)
            .filter(|v| {
                !v.is_empty()
                    && v.len() <= OPERATION_PART_MAX
                    && v.bytes().all(|b| b.is_ascii_graphic())
            })
            .ok_or_else(|| bad(header, value, "expected 1 to 128 visible ASCII characters"))
    }
    let operation_id = visible(RoutingHeader::OperationId, operation_id, bad)?;
    let task = visible(RoutingHeader::TaskName, task, bad)?;
    let service = visible(RoutingHeader::Service, service, bad)?;
    Ok(RouteKey {
        kind: RouteKind::Operation,
        bytes: [0; INLINE],
        len: 0,
        long: Some(operation_route_key(operation_id, task, service).into_boxed_str()),
    })
}

fn text(value: &[u8]) -> Option<&str> {
    std::str::from_utf8(value).ok().map(str::trim)
}

/// A hash is 8 hex characters; longer ones (up to 64) name services whose short hash collides.
fn parse_hash(value: &str) -> Result<RouteKey, RouteKeyError> {
    let ok = (HASH_LEN..=64).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_hexdigit());
    if !ok {
        return Err(RouteKeyError::BadHash {
            value: value.chars().take(80).collect(),
        });
    }
    Ok(RouteKey::inline(RouteKind::Hash, &[value.as_bytes()]))
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

    fn by_headers(pairs: &[(&str, &str)]) -> Result<RouteKey, RouteKeyError> {
        let headers =
            RoutingHeaders::from_pairs(pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
        route_request(&headers, Some("ae5cf6f5.tp.example.net"), BASE)
    }

    #[test]
    fn host_forms() {
        assert_eq!(by_host("ae5cf6f5.tp.example.net").unwrap(), "ae5cf6f5");
        assert_eq!(by_host("AE5CF6F5.TP.Example.NET:8080").unwrap(), "ae5cf6f5");
        assert_eq!(by_host("ae5cf6f5.tp.example.net.").unwrap(), "ae5cf6f5");
        assert_eq!(
            by_host("ae5cf6f5.tp.example.net").unwrap().kind(),
            RouteKind::Hash
        );
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
    fn alias_domains_parse_from_the_right() {
        let key = by_host("my_nb-main-ui.tp.example.net").unwrap();
        assert_eq!(key.kind(), RouteKind::Alias);
        assert_eq!(key, "my_nb-main-ui");
        assert_eq!(parse_alias_label(&key), Some(("my_nb", "main", "ui")));
        // The alias may hold dashes; the task and service never do.
        let key = by_host("My-Spark-Cluster-master-rest.TP.example.net:443").unwrap();
        assert_eq!(key, "my-spark-cluster-master-rest");
        assert_eq!(
            parse_alias_label(&key),
            Some(("my-spark-cluster", "master", "rest"))
        );
        assert_eq!(parse_alias_label("a-b-c"), Some(("a", "b", "c")));
        let longest = format!("{}-{}-{}", "a".repeat(30), "b".repeat(30), "c".repeat(30));
        assert_eq!(
            by_host(&format!("{longest}.{BASE}")).unwrap().kind(),
            RouteKind::Alias
        );
    }

    #[test]
    fn alias_domains_follow_the_rules() {
        for bad in [
            "a-b",           // two parts only
            "-task-svc",     // empty alias
            "al--svc",       // empty task
            "al-task-",      // empty service
            "al_-task-svc-", // empty service
            "-al-task-svc",  // alias starts with '-'
            "al--task-svc",  // alias ends with '-'
            "al-ta.sk-svc",  // a dot (another label)
            "al-tä-svc",     // not ASCII
            "al-ta sk-svc",  // a space
            "al-task-s+c",   // '+'
            "ae5cf6f5-",     // a hash with a dash
        ] {
            let result = by_host(&format!("{bad}.{BASE}"));
            assert!(
                matches!(
                    result,
                    Err(RouteKeyError::BadAliasLabel { .. } | RouteKeyError::ForeignHost { .. })
                ),
                "{bad}: {result:?}"
            );
        }
        let long_alias = format!("{}-task-svc.{BASE}", "a".repeat(31));
        assert!(matches!(
            by_host(&long_alias),
            Err(RouteKeyError::BadAliasLabel { .. })
        ));
        let long_task = format!("al-{}-svc.{BASE}", "t".repeat(31));
        assert!(matches!(
            by_host(&long_task),
            Err(RouteKeyError::BadAliasLabel { .. })
        ));
        let huge = format!("{}-t-s.{BASE}", "a".repeat(500));
        assert!(matches!(
            by_host(&huge),
            Err(RouteKeyError::BadAliasLabel { .. })
        ));
        assert!(is_valid_alias("a"));
        assert!(is_valid_alias("my-nb_1"));
        assert!(!is_valid_alias("*my"));
        assert!(!is_valid_alias("My"));
        assert!(!is_valid_alias(""));
        assert!(is_alias_part("port_0"));
        assert!(!is_alias_part("a-b"));
        assert!(!is_alias_part("A"));
        assert_eq!(
            alias_label("nb", "main", "ui").as_deref(),
            Some("nb-main-ui")
        );
        assert_eq!(alias_label("nb", "Main", "ui"), None);
        assert_eq!(alias_label("nb", "main", "web-ui"), None);
        assert_eq!(alias_label("-nb", "main", "ui"), None);
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
            Err(RouteKeyError::DuplicateHeader("x-yt-taskproxy-id"))
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

    #[test]
    fn triple_headers() {
        let key = by_headers(&[
            ("X-YT-TaskProxy-Operation-Alias", "*My_NB"),
            ("x-yt-taskproxy-task-name", "main"),
            ("x-yt-taskproxy-service", "ui"),
        ])
        .unwrap();
        assert_eq!(key.kind(), RouteKind::Alias);
        assert_eq!(key, "my_nb-main-ui", "the same key as the alias domain");
        let key = by_headers(&[
            ("x-yt-taskproxy-operation-alias", "my-nb"),
            ("x-yt-taskproxy-task-name", "main"),
            ("x-yt-taskproxy-service", "ui"),
        ])
        .unwrap();
        assert_eq!(key, "my-nb-main-ui");
        let key = by_headers(&[
            (
                "x-yt-taskproxy-operation-id",
                "A6E04B98-bf982394-5103e8-55754a49",
            ),
            ("x-yt-taskproxy-task-name", "Master"),
            ("x-yt-taskproxy-service", "port_0"),
        ])
        .unwrap();
        assert_eq!(key.kind(), RouteKind::Operation);
        assert_eq!(
            &*key,
            operation_route_key("a6e04b98-bf982394-5103e8-55754a49", "Master", "port_0")
        );
        assert_eq!(
            key.to_string(),
            "a6e04b98-bf982394-5103e8-55754a49/Master/port_0"
        );
    }

    #[test]
    fn partial_and_conflicting_headers_are_refused() {
        use RouteKeyError::*;
        let op = ("x-yt-taskproxy-operation-id", "op-1");
        let alias = ("x-yt-taskproxy-operation-alias", "nb");
        let task = ("x-yt-taskproxy-task-name", "main");
        let service = ("x-yt-taskproxy-service", "ui");
        let id = ("x-yt-taskproxy-id", "ae5cf6f5");
        assert_eq!(
            by_headers(&[task, service]),
            Err(IncompleteHeaders {
                missing: "x-yt-taskproxy-operation-id"
            })
        );
        assert_eq!(
            by_headers(&[op, service]),
            Err(IncompleteHeaders {
                missing: "x-yt-taskproxy-task-name"
            })
        );
        assert_eq!(
            by_headers(&[alias, task]),
            Err(IncompleteHeaders {
                missing: "x-yt-taskproxy-service"
            })
        );
        assert!(matches!(
            by_headers(&[service]),
            Err(IncompleteHeaders { .. })
        ));
        assert!(matches!(
            by_headers(&[op, alias, task, service]),
            Err(ConflictingHeaders(_))
        ));
        assert!(matches!(
            by_headers(&[id, task]),
            Err(ConflictingHeaders(_))
        ));
        assert!(matches!(
            by_headers(&[id, op, task, service]),
            Err(ConflictingHeaders(_))
        ));
        assert_eq!(
            by_headers(&[op, task, task, service]),
            Err(DuplicateHeader("x-yt-taskproxy-task-name"))
        );
        assert_eq!(
            by_headers(&[alias, alias, task, service]),
            Err(DuplicateHeader("x-yt-taskproxy-operation-alias"))
        );
        assert!(matches!(
            by_headers(&[("x-yt-taskproxy-operation-alias", "-nb"), task, service]),
            Err(BadHeader { .. })
        ));
        assert!(matches!(
            by_headers(&[alias, ("x-yt-taskproxy-task-name", "a-b"), service]),
            Err(BadHeader { .. })
        ));
        assert!(matches!(
            by_headers(&[op, ("x-yt-taskproxy-task-name", ""), service]),
            Err(BadHeader { .. })
        ));
        // Other x-yt-taskproxy-* names do not route.
        assert_eq!(
            by_headers(&[("x-yt-taskproxy-other", "x")]).unwrap(),
            "ae5cf6f5"
        );
    }

    #[test]
    fn header_names() {
        for header in RoutingHeader::ALL {
            assert_eq!(RoutingHeader::of(header.name().as_bytes()), Some(header));
            assert_eq!(
                RoutingHeader::of(header.name().to_ascii_uppercase().as_bytes()),
                Some(header)
            );
        }
        assert_eq!(RoutingHeader::of(b"x-yt-taskproxy-"), None);
        assert_eq!(RoutingHeader::of(b"host"), None);
        assert_eq!(RoutingHeader::of(b"x-yt-taskproxy-ids"), None);
    }
}
