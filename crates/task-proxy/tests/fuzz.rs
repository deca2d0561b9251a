//! Hostile-input property tests (bounded fuzzing) of everything the proxy parses from callers
//! and from the cluster: Host/authority and `x-yt-taskproxy-id` route keys, endpoints,
//! `Authorization` and `Cookie` credentials, the `/static` exemption, discovery's annotations,
//! `tasks_info`, specs and job ports, SPYT annotations, and the services file.
//!
//! The property everywhere: no panic, no hang, and what is accepted is well-formed. CI runs
//! the default case count; `PROPTEST_CASES=200000 cargo test -p task-proxy --test fuzz` runs
//! longer on demand.

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use std::io::Write;
use task_proxy::auth::credentials::take_credentials;
use task_proxy::auth::{Credential, Presented, StaticSkip};
use task_proxy::discovery::operation::{classify, OperationInfo};
use task_proxy::discovery::spyt;
use task_proxy::discovery::vanilla::{
    parse_annotation, parse_job_ports, services, AnnotationOutcome, JobPorts, TaskLayout,
};
use task_proxy::routing::{
    alias_label, parse_alias_label, route_key, route_request, Endpoint, Protocol, RouteKind,
    RoutingHeader, RoutingHeaders, RoutingSnapshot, ServiceSpec,
};
use task_proxy::source::services_file;
use yson::Node;

const BASE: &str = "tp.example.net";
const COOKIE_NAME: &str = "YTCypressCookie";

/// Cases per property: `PROPTEST_CASES` when set, else `default`.
fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Hosts near the interesting shapes: service domains, ports, brackets, dots, case, junk.
fn arb_host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-fA-F]{0,70}(\\.tp\\.example\\.net)?\\.?(:[0-9]{0,6})?",
        "\\[[0-9a-f:]{0,20}\\]?(:[0-9a-z]{0,4})?",
        "[a-zA-Z0-9.:\\[\\]@%_ -]{0,40}",
        "[a-zA-Z0-9_-]{0,40}-[a-zA-Z0-9_]{0,32}-[a-zA-Z0-9_.]{0,32}(\\.tp\\.example\\.net)?\\.?(:[0-9]{0,6})?",
        any::<String>(),
    ]
}

/// Routing header names (some real, some near misses) with arbitrary values.
fn arb_routing_pairs() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let name = prop_oneof![
        Just("x-yt-taskproxy-id".to_string()),
        Just("X-YT-TaskProxy-Operation-Id".to_string()),
        Just("x-yt-taskproxy-operation-alias".to_string()),
        Just("x-yt-taskproxy-task-name".to_string()),
        Just("x-yt-taskproxy-service".to_string()),
        "x-yt-taskproxy-[a-z-]{0,16}",
        "[a-z-]{1,20}",
    ];
    let value = prop_oneof![
        "\\*?[a-z0-9_-]{0,34}".prop_map(String::into_bytes),
        "[0-9a-f]{8}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..80),
    ];
    prop::collection::vec((name, value), 0..6)
}

fn lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

proptest! {
    #![proptest_config(cases(10_000))]

    #[test]
    fn route_key_never_panics_and_returns_a_lowercase_hash(
        ids in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 0..3),
        host in prop::option::of(arb_host()),
    ) {
        let result = route_key(ids.iter().map(Vec::as_slice), host.as_deref(), BASE);
        if let Ok(key) = result {
            if key.kind() == RouteKind::Alias {
                // Only a host carries an alias domain, and its label follows the rules.
                prop_assert!(ids.is_empty());
                prop_assert!(parse_alias_label(&key).is_some(), "{key}");
            } else {
                prop_assert_eq!(key.kind(), RouteKind::Hash);
                prop_assert!((8..=64).contains(&key.len()), "{key}");
                prop_assert!(lower_hex(&key), "{key}");
            }
            if ids.is_empty() {
                // Routed by host: the host names exactly this key under the base domain.
                let host = host.unwrap_or_default().to_ascii_lowercase();
                prop_assert!(host.trim().starts_with(&format!("{key}.{BASE}")), "{host}");
            } else {
                prop_assert_eq!(ids.len(), 1);
            }
        }
    }

    #[test]
    fn endpoint_parsing_never_panics_and_round_trips(text in prop_oneof![
        "\\[?[0-9a-z.:-]{0,24}\\]?:[0-9]{0,6}",
        any::<String>(),
    ]) {
        if let Ok(endpoint) = text.parse::<Endpoint>() {
            prop_assert!(endpoint.port != 0);
            prop_assert!(!endpoint.host.is_empty());
            let again: Endpoint = endpoint.to_string().parse().expect("display parses back");
            prop_assert_eq!(again, endpoint);
        }
    }

    #[test]
    fn credentials_are_parsed_without_panics_and_always_removed(
        authorizations in prop::collection::vec(prop_oneof![
            "(OAuth|oauth|Bearer|BEARER|Basic|Negotiate|)[ \t]{0,3}[ -~]{0,40}",
            prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ], 0..3),
        cookies in prop::collection::vec(prop_oneof![
            "([a-z]{1,5}=[a-z0-9]{0,5}; ?){0,3}(YTCypressCookie|ytcypresscookie|YTCypressCookieX)[ =]{0,2}\"?[ -~]{0,30}(; [a-z]{1,4}=1)?",
            // Every separator a front proxy or a job's parser may use between cookies.
            "([a-z]{1,5}=\"?[a-z0-9]{0,5}\"?(;|,|, |,\t| |\t|; ,|,;| , )){0,3}(YTCypressCookie|YTCypressCookieX)[ =\t]{0,2}\"?[a-z0-9]{0,12}\"?((;|,|, | )[a-z]{1,4}=1)?",
            "[ -~\t]{0,60}",
        ], 0..3),
    ) {
        let mut headers = HeaderMap::new();
        for a in &authorizations {
            if let Ok(v) = HeaderValue::from_bytes(a.as_bytes()) {
                headers.append(AUTHORIZATION, v);
            }
        }
        for c in &cookies {
            if let Ok(v) = HeaderValue::from_bytes(c.as_bytes()) {
                headers.append(COOKIE, v);
            }
        }
        let presented = take_credentials(&mut headers, COOKIE_NAME);
        // No YTsaurus Authorization scheme is left for the job.
        for v in headers.get_all(AUTHORIZATION) {
            let scheme = v.as_bytes().trim_ascii_start().split(|b| *b == b' ' || *b == b'\t').next().unwrap_or_default();
            prop_assert!(!scheme.eq_ignore_ascii_case(b"oauth") && !scheme.eq_ignore_ascii_case(b"bearer"), "{v:?}");
        }
        // No auth cookie is left in any Cookie header, whatever separates it from the others
        // (`;`, `,` as broken front proxies join them, whitespace as some parsers split).
        for v in headers.get_all(COOKIE) {
            for pair in v.as_bytes().split(|b| matches!(b, b';' | b',' | b' ' | b'\t')) {
                let name = pair.split(|b| *b == b'=').next().unwrap_or_default();
                prop_assert!(name != COOKIE_NAME.as_bytes(), "{v:?}");
            }
        }
        if let Presented::Credential(credential) = presented {
            let secret = match &credential {
                Credential::OAuth(s) | Credential::Bearer(s) => s.clone(),
                Credential::Cookie { value, .. } => value.clone(),
            };
            prop_assert!(!secret.expose().is_empty());
            // Debug output never shows the secret (it goes into logs).
            let shown = format!("{:?}", credential);
            prop_assert!(!shown.contains(secret.expose()) || secret.expose().len() < 4, "{}", shown);
        }
    }

    #[test]
    fn static_skip_only_admits_paths_that_stay_under_the_prefix(path in prop_oneof![
        "(/|//)?(static|STATIC|Static|%73tatic)?(/|%2f|%2F|\\\\|;)?([a-z.]{0,3}|%2e|%2E|%252e|%00|%)(/|%2f|%5c|;)?[a-z.]{0,5}(/[a-z.]{0,3})?",
        any::<String>(),
    ]) {
        if StaticSkip::default().applies("ui", &path) {
            let resolved = resolve(&path);
            prop_assert!(resolved.first().map(String::as_str) == Some("static") && resolved.len() >= 2,
                "{path:?} skips auth but resolves to {resolved:?}");
        }
    }
}

/// How a lenient server could resolve a path: percent-decoded (twice), `\` as `/`, `;` params
/// dropped, dot segments applied. Returns the segments.
fn resolve(path: &str) -> Vec<String> {
    let decoded = percent_decode(&percent_decode(path));
    let mut out: Vec<String> = Vec::new();
    for segment in decoded.split(['/', '\\']) {
        let segment = segment.split(';').next().unwrap_or_default();
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s.to_string()),
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// YSON documents shaped like what discovery reads (operations, annotations, specs, job ports),
/// with wrong types, huge and negative numbers and odd names mixed in.
fn arb_discovery_node() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        Just("#".to_string()),
        Just("%true".to_string()),
        Just("%false".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| format!("{n}u")),
        (0u64..70000).prop_map(|n| n.to_string()),
        Just("1.5".to_string()),
        "[a-z_ ]{0,8}".prop_map(|s| format!("\"{s}\"")),
        Just("\"http\"".to_string()),
        Just("\"grpc\"".to_string()),
        Just("\"http://127.0.0.1:8080/x\"".to_string()),
        Just("\"1-2-3-4\"".to_string()),
    ];
    let key = prop_oneof![
        Just("id"),
        Just("task_proxy"),
        Just("enabled"),
        Just("tasks_info"),
        Just("port_index"),
        Just("protocol"),
        Just("tasks"),
        Just("port_count"),
        Just("main"),
        Just("web"),
        Just("runtime_parameters"),
        Just("annotations"),
        Just("brief_spec"),
        Just("start_time"),
        Just("spark_master_address"),
        Just("spyt"),
        Just("description"),
        Just(""),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5)
                .prop_map(|items| format!("[{}]", items.join(";"))),
            prop::collection::vec((key.clone(), inner), 0..6).prop_map(|entries| {
                let mut seen = std::collections::BTreeSet::new();
                let body: Vec<String> = entries
                    .into_iter()
                    .filter(|(k, _)| seen.insert(*k))
                    .map(|(k, v)| format!("\"{k}\"={v}"))
                    .collect();
                format!("{{{}}}", body.join(";"))
            }),
        ]
    })
    .prop_map(|text| yson::parse(text.as_bytes()).expect("generated YSON parses"))
}

proptest! {
    #![proptest_config(cases(4_000))]

    #[test]
    fn discovery_parsers_never_panic(node in arb_discovery_node(), wrapped in arb_discovery_node()) {
        // Annotations, tasks_info and the services they name.
        let outcome = parse_annotation(Some(&node));
        let layout = TaskLayout::from_spec(&wrapped).ok();
        let jobs: Vec<JobPorts> = parse_job_ports(&node)
            .map(|ports| vec![JobPorts {
                job_id: "j".into(),
                task_name: "main".into(),
                host: "127.0.0.1".into(),
                ports,
            }])
            .unwrap_or_default();
        if let AnnotationOutcome::Enabled { annotation, .. } = &outcome {
            let (specs, _) = services("1-2-3-4", None, annotation, layout.as_ref(), &jobs);
            prop_assert!(specs.len() <= 64 * 1024, "bounded by port counts");
            let _ = RoutingSnapshot::build(BASE, specs);
        }
        // Operations and SPYT annotations.
        if let Ok(info) = OperationInfo::from_node(&node) {
            let _ = classify(&info);
        }
        let _ = spyt::parse_direct(Some(&node));
        let _ = spyt::parse_standalone(Some(&node));
        if let Some(url) = node.as_str() {
            let _ = spyt::endpoint_from_url(url);
        }
    }

    #[test]
    fn spyt_urls_never_panic(url in prop_oneof![
        "(https?://)?[a-z0-9.:\\[\\]@-]{0,30}(/[a-z]{0,5})?",
        any::<String>(),
    ]) {
        if let Ok(endpoint) = spyt::endpoint_from_url(&url) {
            prop_assert!(endpoint.port != 0 && !endpoint.host.is_empty());
        }
    }
}

/// Services files near the real shape, with wrong types and broken JSON mixed in.
fn arb_services_file() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        "\"[ -~]{0,12}\"",
        Just("\"http\"".to_string()),
        Just("\"grpc\"".to_string()),
        Just("[\"127.0.0.1:8080\", \"[::1]:1\"]".to_string()),
        Just("[\"host\", \"h:0\", \"h:99999\"]".to_string()),
        Just("null".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
    ];
    let field = prop_oneof![
        Just("operation_id"),
        Just("task_name"),
        Just("service"),
        Just("protocol"),
        Just("endpoints"),
        Just("operation_start_time"),
        Just("unknown"),
    ];
    let service = prop::collection::vec((field, value), 0..7).prop_map(|fields| {
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("\"{k}\": {v}"))
            .collect();
        format!("{{{}}}", body.join(", "))
    });
    prop_oneof![
        prop::collection::vec(service, 0..4)
            .prop_map(|s| format!("{{\"services\": [{}]}}", s.join(", "))),
        "[ -~]{0,80}",
    ]
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn services_file_never_panics(text in arb_services_file()) {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(text.as_bytes()).expect("write");
        if let Ok(specs) = services_file::load(file.path()) {
            let snapshot = RoutingSnapshot::build(BASE, specs);
            for route in snapshot.routes() {
                // Every route is reachable by its own key, and its domain parses back to it.
                prop_assert!(snapshot.get(&route.hash).is_some());
                let none: [&[u8]; 0] = [];
                prop_assert_eq!(route_key(none, Some(&route.domain), BASE).map(|k| k.to_string()), Ok(route.hash.clone()));
            }
        }
    }
}

proptest! {
    #![proptest_config(cases(10_000))]

    #[test]
    fn routing_headers_never_panic_and_give_well_formed_keys(
        pairs in arb_routing_pairs(),
        host in prop::option::of(arb_host()),
    ) {
        let headers = RoutingHeaders::from_pairs(
            pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_slice())),
        );
        let routing = pairs
            .iter()
            .filter(|(n, _)| RoutingHeader::of(n.as_bytes()).is_some())
            .count();
        if let Ok(key) = route_request(&headers, host.as_deref(), BASE) {
            match key.kind() {
                RouteKind::Hash => prop_assert!(lower_hex(&key) && (8..=64).contains(&key.len())),
                RouteKind::Alias => prop_assert!(parse_alias_label(&key).is_some(), "{key}"),
                RouteKind::Operation => {
                    // Only the full triple, each header once.
                    prop_assert_eq!(routing, 3);
                    prop_assert_eq!(key.split('\n').count(), 3);
                }
            }
            if routing > 0 && key.kind() != RouteKind::Hash {
                prop_assert_eq!(routing, 3, "a triple is complete");
            }
        }
    }

    #[test]
    fn accepted_aliases_round_trip(
        alias in "[a-z0-9_-]{1,32}",
        task in "[a-z0-9_-]{1,32}",
        service in "[a-zA-Z0-9_-]{1,32}",
        start in 0u32..3,
    ) {
        let Some(label) = alias_label(&alias, &task, &service) else {
            // Rejected names never come back from a domain either.
            let host = format!("{alias}-{task}-{service}.{BASE}");
            if let Ok(key) = route_key(std::iter::empty(), Some(&host), BASE) {
                prop_assert_ne!(
                    parse_alias_label(&key),
                    Some((alias.as_str(), task.as_str(), service.as_str()))
                );
            }
            return Ok(());
        };
        // The domain parses back to the same names, from the right.
        let host = format!("{}.{}:443", label.to_ascii_uppercase(), BASE.to_ascii_uppercase());
        let key = route_key(std::iter::empty(), Some(&host), BASE).unwrap();
        prop_assert_eq!(key.kind(), RouteKind::Alias);
        prop_assert_eq!(&*key, label.as_str());
        prop_assert_eq!(
            parse_alias_label(&key),
            Some((alias.as_str(), task.as_str(), service.as_str()))
        );
        // The operation-alias headers name the same key.
        let star = format!("*{alias}");
        let headers = RoutingHeaders::from_pairs([
            (&b"x-yt-taskproxy-operation-alias"[..], star.as_bytes()),
            (&b"x-yt-taskproxy-task-name"[..], task.as_bytes()),
            (&b"x-yt-taskproxy-service"[..], service.as_bytes()),
        ]);
        prop_assert_eq!(&route_request(&headers, None, BASE).unwrap(), &key);
        // And the snapshot routes it to the service.
        let spec = ServiceSpec {
            operation_id: "op-1".into(),
            task_name: task.clone(),
            service: service.clone(),
            protocol: Protocol::Http,
            endpoints: vec![],
            operation_start_time: Some(format!("2026-0{}-01T00:00:00Z", start + 1)),
            timeouts: Default::default(),
            sticky: None,
        };
        let aliases: std::collections::HashMap<String, String> = [("op-1".to_string(), alias.clone())].into_iter().collect();
        let snapshot = RoutingSnapshot::build_with_aliases(BASE, [spec], &aliases);
        let route = snapshot.route(&key).unwrap();
        prop_assert_eq!(route.alias_domain.clone(), Some(format!("{label}.{BASE}")));
    }
}
