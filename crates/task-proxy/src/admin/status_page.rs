//! The status page for people (`/` on the admin listener): every service with its domain,
//! operation, task, protocol, endpoints and their health, requests and errors; the last
//! discovery pass; auth decisions and cache figures. Plain server-rendered HTML: every value
//! that comes from the cluster or the configuration is escaped, and no credential is ever
//! known here to be shown.

use super::Admin;
use crate::auth::metrics::{CacheName, CacheResult, Outcome};
use crate::discovery::Role;
use crate::html::escape as html_escape;
use std::fmt::Write;
use std::time::SystemTime;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.6em}\
.sub{color:#666}table{border-collapse:collapse;margin-top:.5em}\
th,td{border-bottom:1px solid #ddd;padding:.35em .8em;text-align:left;vertical-align:top}\
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}\
code{font-size:.95em}.ok{color:#17803d}.bad{color:#b91c1c;font-weight:600}\
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1.2em}dt{color:#666}dd{margin:0}";

/// Renders the page.
pub fn render(admin: &Admin) -> String {
    let snapshot = admin.table.load();
    let mut page = String::new();
    let readiness = if admin.draining.is_cancelled() {
        "<span class=bad>draining</span>"
    } else if admin.table.is_loaded() {
        "<span class=ok>ready</span>"
    } else {
        "<span class=bad>no routing table yet</span>"
    };
    let _ = write!(
        page,
        "<!doctype html><html><head><meta charset=utf-8><title>task-proxy</title>\
         <style>{STYLE}</style></head><body><h1>task-proxy</h1>\
         <p class=sub>{readiness} &middot; services at <code>&lt;hash&gt;.{0}</code> \
         (aliased operations also at <code>&lt;alias&gt;-&lt;task&gt;-&lt;service&gt;.{0}</code>) &middot; \
         routing generation {1} &middot; {2} services &middot; \
         <a href=\"/services\">/services</a> (JSON) &middot; <a href=\"/metrics\">/metrics</a></p>",
        html_escape(snapshot.base_domain()),
        snapshot.generation(),
        snapshot.len(),
    );
    services_section(admin, &mut page);
    discovery_section(admin, &mut page);
    auth_section(admin, &mut page);
    page.push_str("</body></html>");
    page
}

fn services_section(admin: &Admin, page: &mut String) {
    let snapshot = admin.table.load();
    let backends = admin.balancer.current();
    page.push_str("<h2>Services</h2>");
    if snapshot.is_empty() {
        page.push_str("<p>No services yet.</p>");
        return;
    }
    page.push_str(
        "<table><tr><th>domain</th><th>operation</th><th>task</th><th>service</th>\
         <th>protocol</th><th>timeouts</th><th>endpoints</th><th>requests</th><th>errors (5xx)</th></tr>",
    );
    for route in snapshot.routes() {
        let backend = backends.backend(&route.hash);
        let mut endpoints = String::new();
        let (mut requests, mut errors) = (0, 0);
        match backend {
            Some(b) => {
                for ep in &b.endpoints {
                    let health = match admin.balancer.ejected_for_ms(ep) {
                        None => "<span class=ok>healthy</span>".to_string(),
                        Some(ms) => format!("<span class=bad>ejected {ms} ms</span>"),
                    };
                    let _ = write!(
                        endpoints,
                        "<code>{}</code> {health}<br>",
                        html_escape(&ep.authority)
                    );
                }
                let by_class = b.stats.responses_by_class();
                requests = by_class.iter().sum::<u64>();
                errors = by_class[4];
            }
            None => {
                for ep in &route.endpoints {
                    let _ = write!(
                        endpoints,
                        "<code>{}</code><br>",
                        html_escape(&ep.authority())
                    );
                }
            }
        }
        let error_class = if errors > 0 { " bad" } else { "" };
        let link = |domain: &str| match admin.service_port {
            Some(port) => format!(
                "<a href=\"http://{0}:{port}/\"><code>{0}</code></a>",
                html_escape(domain)
            ),
            None => format!("<code>{}</code>", html_escape(domain)),
        };
        let alias = match &route.alias_domain {
            Some(domain) => format!("<br>{}", link(domain)),
            None => String::new(),
        };
        let _ = write!(
            page,
            "<tr><td>{}{alias}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{endpoints}</td><td class=num>{requests}</td><td class=\"num{error_class}\">{errors}</td></tr>",
            link(&route.domain),
            html_escape(&route.key.operation_id),
            html_escape(&route.key.task_name),
            html_escape(&route.key.service),
            route.protocol.as_str(),
            timeouts_cell(&route.timeouts),
        );
    }
    page.push_str("</table>");
}

/// The operation's own timeouts, or "flags" when the global flags apply.
fn timeouts_cell(timeouts: &crate::routing::RouteTimeouts) -> String {
    let show = |name: &str, seconds: Option<u64>| match seconds {
        None => None,
        Some(0) => Some(format!("{name} off")),
        Some(s) => Some(format!("{name} {s} s")),
    };
    let parts: Vec<String> = [
        show("route", timeouts.route_timeout_seconds),
        show("stream idle", timeouts.stream_idle_timeout_seconds),
    ]
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() {
        "flags".to_string()
    } else {
        parts.join(", ")
    }
}

fn discovery_section(admin: &Admin, page: &mut String) {
    page.push_str("<h2>Discovery</h2>");
    let Some(status) = &admin.discovery else {
        page.push_str("<p>Off: services come from the services file.</p>");
        return;
    };
    if let Some(election) = status.election() {
        let view = election.view();
        let role = match view.role {
            Role::Leader => {
                "<span class=ok>leader</span> (runs the passes, publishes the snapshot)"
            }
            Role::Follower => "follower (serves the leader's snapshot)",
        };
        let leader = view
            .leader
            .as_deref()
            .map(html_escape)
            .unwrap_or_else(|| "none seen yet".into());
        let age = view
            .snapshot_age()
            .map(|a| format!("{:.1} s", a.as_secs_f64()))
            .unwrap_or_else(|| "-".into());
        let _ = write!(
            page,
            "<dl><dt>role</dt><dd>{role}</dd><dt>leader</dt><dd>{leader}</dd>\
             <dt>snapshot</dt><dd>generation {}, published {age} ago</dd>",
            view.generation
        );
        if let Some(e) = &view.last_error {
            let _ = write!(
                page,
                "<dt>last problem</dt><dd class=bad>{}</dd>",
                html_escape(e)
            );
        }
        page.push_str("</dl>");
    }
    let Some(pass) = status.last_pass() else {
        page.push_str("<p>The first pass has not finished yet.</p>");
        return;
    };
    let ago = SystemTime::now()
        .duration_since(pass.finished_at)
        .map(|d| format!("{:.1} s ago", d.as_secs_f64()))
        .unwrap_or_else(|_| "just now".into());
    let outcome = match &pass.error {
        None => "<span class=ok>succeeded</span>".to_string(),
        Some(e) => format!(
            "<span class=bad>failed (last table kept): {}</span>",
            html_escape(e)
        ),
    };
    let _ = write!(
        page,
        "<dl><dt>last pass</dt><dd>{outcome}, finished {ago}, took {:.3} s</dd>\
         <dt>requests to the cluster</dt><dd>{}</dd><dt>tolerated read errors</dt><dd>{}</dd>\
         <dt>operations</dt><dd>{} running, {} exposing services</dd>\
         <dt>services / endpoints</dt><dd>{} / {}</dd><dt>hash collisions</dt><dd>{}</dd>",
        pass.duration.as_secs_f64(),
        pass.requests,
        pass.errors,
        pass.operations_seen,
        pass.operations_exposing,
        pass.services,
        pass.endpoints,
        pass.collisions,
    );
    if let Some(e) = &pass.table_error {
        let _ = write!(
            page,
            "<dt>services table</dt><dd class=bad>{}</dd>",
            html_escape(e)
        );
    }
    page.push_str("</dl>");
}

fn auth_section(admin: &Admin, page: &mut String) {
    page.push_str("<h2>Auth</h2>");
    if !admin.gate.is_enabled() {
        page.push_str("<p>Off: every routed request is forwarded.</p>");
        return;
    }
    let metrics = admin.gate.metrics();
    page.push_str("<dl><dt>decisions</dt><dd>");
    for (name, outcome) in [
        ("allowed", Outcome::Allowed),
        ("allowed on a stale answer", Outcome::AllowedStale),
        ("denied", Outcome::Denied),
        ("unauthenticated", Outcome::Unauthenticated),
        ("cluster unavailable", Outcome::Unavailable),
        ("static, skipped", Outcome::Skipped),
    ] {
        let _ = write!(page, "{name} {} &middot; ", metrics.decisions_with(outcome));
    }
    page.truncate(page.len() - " &middot; ".len());
    page.push_str("</dd>");
    for (title, cache) in [
        ("identity cache", CacheName::Identity),
        ("decision cache", CacheName::Decision),
    ] {
        let _ = write!(
            page,
            "<dt>{title}</dt><dd>hits {} &middot; misses {} &middot; collapsed {} &middot; \
             stale {} &middot; errors {}</dd>",
            metrics.lookups_with(cache, CacheResult::Hit),
            metrics.lookups_with(cache, CacheResult::Miss),
            metrics.lookups_with(cache, CacheResult::Collapsed),
            metrics.lookups_with(cache, CacheResult::Stale),
            metrics.lookups_with(cache, CacheResult::Error),
        );
    }
    page.push_str("</dl>");
}
