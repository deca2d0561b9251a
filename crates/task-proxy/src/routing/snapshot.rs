//! The immutable routing snapshot: every service by its hash, built in one go from specs.
//!
//! Building is where names are given: each service gets the compatible 8-character hash; when
//! two services share one, the one whose operation started first (then the smaller key) keeps it
//! and the other gets a longer suffix of its SHA-256 (12 characters or more), so no request is
//! ever routed to the wrong operation and the outcome does not depend on discovery order.
//!
//! Services of an operation with an alias also get `<alias>-<task>-<service>.<base-domain>`
//! when the three names follow the rules (see [`super::alias_label`]). The scheduler lets one
//! running operation hold an alias; if a listing still shows two (one finishing, one new), the
//! newer operation (by start time, then the greater operation id) gets the alias domain.

use super::route_key::{alias_label, operation_route_key, RouteKey, RouteKind};
use super::{
    service_hash, service_hash_with_len, Endpoint, Protocol, RouteTimeouts, ServiceKey, ServiceSpec,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// One routable service of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The route key: 8 hex characters, longer only for a service that lost a collision.
    pub hash: String,
    /// `<hash>.<base-domain>`.
    pub domain: String,
    pub key: ServiceKey,
    pub protocol: Protocol,
    /// Where the service's jobs listen, sorted and without duplicates.
    pub endpoints: Vec<Endpoint>,
    pub operation_start_time: Option<String>,
    /// `<alias>-<task>-<service>.<base-domain>`, when the service has an alias route.
    pub alias_domain: Option<String>,
    /// Per-operation timeouts from the annotation (default: the global flags).
    pub timeouts: RouteTimeouts,
    /// An affinity cookie keeps a browser on one job (unset: the data plane's default).
    pub sticky: Option<bool>,
}

/// Two services whose 8-character hashes are equal, and how that was resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collision {
    pub short_hash: String,
    /// The service that keeps `short_hash`.
    pub kept: ServiceKey,
    /// The service that was given `renamed_hash` instead.
    pub renamed: ServiceKey,
    pub renamed_hash: String,
}

/// All services routable at one moment. Never mutated after it is built.
#[derive(Debug, Default)]
pub struct RoutingSnapshot {
    base_domain: String,
    /// Looked up on every request: foldhash (randomly seeded, like std's, but cheaper).
    by_hash: HashMap<String, Arc<Route>, foldhash::fast::RandomState>,
    /// Alias domain label (`<alias>-<task>-<service>`) -> service.
    by_alias: HashMap<String, Arc<Route>, foldhash::fast::RandomState>,
    /// [`operation_route_key`] -> service.
    by_operation: HashMap<String, Arc<Route>, foldhash::fast::RandomState>,
    by_domain: Vec<Arc<Route>>,
    collisions: Vec<Collision>,
    generation: u64,
}

impl RoutingSnapshot {
    /// A snapshot with no services.
    pub fn empty(base_domain: &str) -> RoutingSnapshot {
        RoutingSnapshot {
            base_domain: base_domain.to_ascii_lowercase(),
            ..RoutingSnapshot::default()
        }
    }

    /// Names the services and indexes them. Specs with the same key are merged (their
    /// endpoints joined); the first spec's protocol wins.
    pub fn build(
        base_domain: &str,
        specs: impl IntoIterator<Item = ServiceSpec>,
    ) -> RoutingSnapshot {
        Self::build_with_aliases(base_domain, specs, &HashMap::new())
    }

    /// Like [`RoutingSnapshot::build`]; `aliases` maps operation ids to their alias (without
    /// the leading `*`), which gives their services alias domains.
    pub fn build_with_aliases<S: std::hash::BuildHasher>(
        base_domain: &str,
        specs: impl IntoIterator<Item = ServiceSpec>,
        aliases: &HashMap<String, String, S>,
    ) -> RoutingSnapshot {
        let base_domain = base_domain.to_ascii_lowercase();
        let mut merged: BTreeMap<ServiceKey, ServiceSpec> = BTreeMap::new();
        for spec in specs {
            match merged.get_mut(&spec.key()) {
                Some(existing) => {
                    existing.endpoints.extend(spec.endpoints);
                    if existing.operation_start_time.is_none() {
                        existing.operation_start_time = spec.operation_start_time;
                    }
                }
                None => {
                    merged.insert(spec.key(), spec);
                }
            }
        }

        let mut by_short: BTreeMap<String, Vec<ServiceSpec>> = BTreeMap::new();
        for (key, spec) in merged {
            by_short
                .entry(service_hash(
                    &key.operation_id,
                    &key.task_name,
                    &key.service,
                ))
                .or_default()
                .push(spec);
        }
        let taken: HashSet<String> = by_short.keys().cloned().collect();

        let mut named: Vec<(String, ServiceSpec)> = Vec::new();
        let mut collisions = Vec::new();
        for (short, mut group) in by_short {
            // Older operations first (unknown start times last), then by key: deterministic.
            group.sort_by(|a, b| {
                let a_time = (a.operation_start_time.is_none(), &a.operation_start_time);
                let b_time = (b.operation_start_time.is_none(), &b.operation_start_time);
                a_time.cmp(&b_time).then_with(|| a.key().cmp(&b.key()))
            });
            let mut group = group.into_iter();
            let Some(first) = group.next() else { continue };
            let kept = first.key();
            named.push((short.clone(), first));
            for spec in group {
                let key = spec.key();
                let renamed_hash = (12..=64)
                    .map(|len| {
                        service_hash_with_len(&key.operation_id, &key.task_name, &key.service, len)
                    })
                    .find(|h| !taken.contains(h) && !named.iter().any(|(n, _)| n == h))
                    .unwrap_or_else(|| {
                        service_hash_with_len(&key.operation_id, &key.task_name, &key.service, 64)
                    });
                collisions.push(Collision {
                    short_hash: short.clone(),
                    kept: kept.clone(),
                    renamed: key,
                    renamed_hash: renamed_hash.clone(),
                });
                named.push((renamed_hash, spec));
            }
        }

        // Alias label -> the service that gets it: the newest operation's (start time, then
        // operation id), whatever the order of discovery.
        let mut alias_owner: HashMap<String, &ServiceSpec> = HashMap::new();
        for (_, spec) in &named {
            let Some(label) = aliases
                .get(&spec.operation_id)
                .and_then(|alias| alias_label(alias, &spec.task_name, &spec.service))
            else {
                continue;
            };
            let newer = |a: &ServiceSpec, b: &ServiceSpec| {
                let a_time = (a.operation_start_time.is_some(), &a.operation_start_time);
                let b_time = (b.operation_start_time.is_some(), &b.operation_start_time);
                a_time
                    .cmp(&b_time)
                    .then_with(|| a.operation_id.cmp(&b.operation_id))
                    .is_gt()
            };
            match alias_owner.get(&label) {
                Some(owner) if !newer(spec, owner) => {}
                _ => {
                    alias_owner.insert(label, spec);
                }
            }
        }
        let alias_of: HashMap<ServiceKey, String> = alias_owner
            .into_iter()
            .map(|(label, spec)| (spec.key(), label))
            .collect();

        let hasher = foldhash::fast::RandomState::default;
        let mut by_hash = HashMap::with_capacity_and_hasher(named.len(), hasher());
        let mut by_alias = HashMap::with_capacity_and_hasher(alias_of.len(), hasher());
        let mut by_operation = HashMap::with_capacity_and_hasher(named.len(), hasher());
        let mut by_domain = Vec::with_capacity(named.len());
        for (hash, spec) in named {
            let mut endpoints = spec.endpoints.clone();
            endpoints.sort();
            endpoints.dedup();
            let key = spec.key();
            let alias = alias_of.get(&key);
            let route = Arc::new(Route {
                domain: format!("{hash}.{base_domain}"),
                hash: hash.clone(),
                alias_domain: alias.map(|label| format!("{label}.{base_domain}")),
                key,
                protocol: spec.protocol,
                endpoints,
                operation_start_time: spec.operation_start_time,
                timeouts: spec.timeouts,
                sticky: spec.sticky,
            });
            if let Some(label) = alias {
                by_alias.insert(label.clone(), route.clone());
            }
            by_operation.insert(
                operation_route_key(&spec.operation_id, &spec.task_name, &spec.service),
                route.clone(),
            );
            by_domain.push(route.clone());
            by_hash.insert(hash, route);
        }
        by_domain.sort_by(|a, b| a.domain.cmp(&b.domain));
        RoutingSnapshot {
            base_domain,
            by_hash,
            by_alias,
            by_operation,
            by_domain,
            collisions,
            generation: 0,
        }
    }

    /// The service with this route key (a lowercase hash), if any.
    pub fn get(&self, hash: &str) -> Option<&Arc<Route>> {
        self.by_hash.get(hash)
    }

    /// The service a request's route key names, if any: one hash lookup whatever its form.
    #[inline]
    pub fn route(&self, key: &RouteKey) -> Option<&Arc<Route>> {
        match key.kind() {
            RouteKind::Hash => self.by_hash.get(&**key),
            RouteKind::Alias => self.by_alias.get(&**key),
            RouteKind::Operation => self.by_operation.get(&**key),
        }
    }

    /// The service with this alias domain label (`<alias>-<task>-<service>`), if any.
    pub fn get_alias(&self, label: &str) -> Option<&Arc<Route>> {
        self.by_alias.get(label)
    }

    /// Every service, sorted by domain.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.by_domain
    }

    pub fn len(&self) -> usize {
        self.by_domain.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }

    pub fn base_domain(&self) -> &str {
        &self.base_domain
    }

    /// Collisions resolved while building, for logs and metrics.
    pub fn collisions(&self) -> &[Collision] {
        &self.collisions
    }

    /// The number the routing table gave this snapshot when it was published (0 before).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub(super) fn set_generation(&mut self, generation: u64) {
        self.generation = generation;
    }

    /// True when both snapshots route the same services the same way.
    pub fn same_routes(&self, other: &RoutingSnapshot) -> bool {
        self.base_domain == other.base_domain
            && self.by_domain.len() == other.by_domain.len()
            && self
                .by_domain
                .iter()
                .zip(&other.by_domain)
                .all(|(a, b)| a == b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(
        op: &str,
        task: &str,
        service: &str,
        start: Option<&str>,
        endpoints: &[&str],
    ) -> ServiceSpec {
        ServiceSpec {
            operation_id: op.into(),
            task_name: task.into(),
            service: service.into(),
            protocol: Protocol::Http,
            endpoints: endpoints.iter().map(|e| e.parse().unwrap()).collect(),
            operation_start_time: start.map(str::to_string),
            timeouts: Default::default(),
            sticky: None,
        }
    }

    #[test]
    fn names_and_indexes() {
        let snap = RoutingSnapshot::build(
            "TP.example.net",
            [
                spec(
                    "a6e04b98-bf982394-5103e8-55754a49",
                    "master",
                    "ui",
                    None,
                    &["127.0.0.1:2", "127.0.0.1:1"],
                ),
                spec(
                    "a6e04b98-bf982394-5103e8-55754a49",
                    "master",
                    "ui",
                    None,
                    &["127.0.0.1:1"],
                ),
                spec(
                    "a6e04b98-bf982394-5103e8-55754a49",
                    "history",
                    "ui",
                    None,
                    &[],
                ),
            ],
        );
        assert_eq!(snap.len(), 2);
        let master = snap.get("2ef4261c").unwrap();
        assert_eq!(master.domain, "2ef4261c.tp.example.net");
        assert_eq!(master.endpoints.len(), 2, "merged and deduplicated");
        assert_eq!(snap.routes()[0].hash, "2ef4261c", "sorted by domain");
        assert!(snap.collisions().is_empty());
    }

    #[test]
    fn collisions_resolve_deterministically() {
        // Find two keys whose short hashes collide (a birthday search over a small space).
        let mut seen: HashMap<String, String> = HashMap::new();
        let (a, b) = (0..200_000u32)
            .find_map(|i| {
                let op = format!("op-{i}");
                let h = service_hash(&op, "t", "s");
                seen.insert(h, op.clone()).map(|prev| (prev, op))
            })
            .expect("a collision within 200k keys");
        let older = spec(
            &b,
            "t",
            "s",
            Some("2026-01-01T00:00:00.000000Z"),
            &["127.0.0.1:1"],
        );
        let newer = spec(
            &a,
            "t",
            "s",
            Some("2026-02-01T00:00:00.000000Z"),
            &["127.0.0.1:2"],
        );
        for order in [
            vec![older.clone(), newer.clone()],
            vec![newer.clone(), older.clone()],
        ] {
            let snap = RoutingSnapshot::build("d", order);
            assert_eq!(snap.len(), 2);
            let short = service_hash(&a, "t", "s");
            assert_eq!(
                snap.get(&short).unwrap().key,
                older.key(),
                "older keeps the short hash"
            );
            let c = &snap.collisions()[0];
            assert_eq!(c.renamed, newer.key());
            assert_eq!(c.renamed_hash.len(), 12);
            assert_eq!(snap.get(&c.renamed_hash).unwrap().key, newer.key());
        }
    }

    fn aliases(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(op, alias)| (op.to_string(), alias.to_string()))
            .collect()
    }

    fn key_of(label: &str) -> RouteKey {
        crate::routing::route_key(std::iter::empty(), Some(&format!("{label}.d")), "d").unwrap()
    }

    #[test]
    fn alias_routes_are_indexed_when_names_follow_the_rules() {
        let snap = RoutingSnapshot::build_with_aliases(
            "D",
            [
                spec("op-a", "main", "ui", None, &["127.0.0.1:1"]),
                spec("op-a", "main", "web-ui", None, &["127.0.0.1:2"]),
                spec("op-b", "main", "ui", None, &["127.0.0.1:3"]),
            ],
            &aliases(&[("op-a", "my-nb")]),
        );
        let route = snap.route(&key_of("my-nb-main-ui")).unwrap();
        assert_eq!(route.key.operation_id, "op-a");
        assert_eq!(route.alias_domain.as_deref(), Some("my-nb-main-ui.d"));
        assert!(
            Arc::ptr_eq(route, snap.get(&route.hash).unwrap()),
            "the same route"
        );
        // "web-ui" breaks the service rule: no alias route, the hash route stays.
        let web = snap
            .routes()
            .iter()
            .find(|r| r.key.service == "web-ui")
            .unwrap();
        assert_eq!(web.alias_domain, None);
        assert!(snap.get(&web.hash).is_some());
        assert!(snap.get_alias("my-nb-main-web-ui").is_none());
        // No alias: no alias domain.
        let b = snap
            .routes()
            .iter()
            .find(|r| r.key.operation_id == "op-b")
            .unwrap();
        assert_eq!(b.alias_domain, None);
        assert!(snap.route(&key_of("op-b-main-ui")).is_none());
        // By operation id.
        let headers = crate::routing::RoutingHeaders::from_pairs([
            (&b"x-yt-taskproxy-operation-id"[..], &b"OP-B"[..]),
            (&b"x-yt-taskproxy-task-name"[..], &b"main"[..]),
            (&b"x-yt-taskproxy-service"[..], &b"ui"[..]),
        ]);
        let key = crate::routing::route_request(&headers, None, "d").unwrap();
        assert_eq!(snap.route(&key).unwrap().key, b.key);
    }

    #[test]
    fn newest_operation_wins_a_shared_alias() {
        let old = spec(
            "op-old",
            "main",
            "ui",
            Some("2026-01-01T00:00:00.000000Z"),
            &["127.0.0.1:1"],
        );
        let new = spec(
            "op-new",
            "main",
            "ui",
            Some("2026-02-01T00:00:00.000000Z"),
            &["127.0.0.1:2"],
        );
        // Same start time: the greater operation id wins.
        let tie_a = spec(
            "op-a",
            "main",
            "ui",
            Some("2026-03-01T00:00:00.000000Z"),
            &[],
        );
        let tie_b = spec(
            "op-b",
            "main",
            "ui",
            Some("2026-03-01T00:00:00.000000Z"),
            &[],
        );
        let unknown = spec("op-zzz", "main", "ui", None, &[]);
        let names = aliases(&[
            ("op-old", "nb"),
            ("op-new", "nb"),
            ("op-a", "tie"),
            ("op-b", "tie"),
            ("op-zzz", "nb"),
        ]);
        let orders = [
            vec![
                old.clone(),
                new.clone(),
                tie_a.clone(),
                tie_b.clone(),
                unknown.clone(),
            ],
            vec![
                unknown.clone(),
                tie_b.clone(),
                new.clone(),
                tie_a.clone(),
                old.clone(),
            ],
            vec![
                tie_a.clone(),
                old.clone(),
                unknown.clone(),
                tie_b.clone(),
                new.clone(),
            ],
        ];
        for order in orders {
            let snap = RoutingSnapshot::build_with_aliases("d", order, &names);
            assert_eq!(snap.len(), 5, "every service keeps its hash route");
            assert_eq!(
                snap.route(&key_of("nb-main-ui")).unwrap().key.operation_id,
                "op-new",
                "the newest start time wins; unknown start times count as oldest"
            );
            assert_eq!(
                snap.route(&key_of("tie-main-ui")).unwrap().key.operation_id,
                "op-b"
            );
            let with_alias: Vec<&str> = snap
                .routes()
                .iter()
                .filter(|r| r.alias_domain.is_some())
                .map(|r| r.key.operation_id.as_str())
                .collect();
            assert_eq!(with_alias.len(), 2, "{with_alias:?}: one owner per alias");
        }
    }
}
