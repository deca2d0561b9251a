//! The portal's pages: login, landing (the user's services), and the pages a browser gets for
//! 401, 403 and 404 on a service domain. Everything inserted is HTML-escaped; the frame and
//! the one stylesheet come from [`crate::html`].

use crate::html::{escape, page};
use std::time::SystemTime;

/// What the login page shows.
pub struct Login<'a> {
    /// Where the browser goes after logging in (an already checked service URL).
    pub return_url: Option<&'a str>,
    pub csrf: &'a str,
    /// `--auth-login-url`: the cluster's UI.
    pub login_url: Option<&'a str>,
    pub cookie_name: &'a str,
    pub error: Option<&'a str>,
    pub notice: Option<&'a str>,
}

pub fn login(l: &Login<'_>) -> String {
    let mut body = String::from("<div class=\"card narrow\"><h1>Log in</h1>");
    if let Some(notice) = l.notice {
        body.push_str(&format!("<p class=\"muted\">{}</p>", escape(notice)));
    }
    match l.return_url {
        Some(url) => body.push_str(&format!(
            "<p>Log in to open <code>{}</code>. Only users who may read the operation behind a \
             service can open it.</p>",
            escape(&shorten(url, 90))
        )),
        None => body.push_str(
            "<p>Log in once to open every service of your YTsaurus operations in this browser.</p>",
        ),
    }
    if let Some(error) = l.error {
        body.push_str(&format!(
            "<p class=\"error\" id=\"error\">{}</p>",
            escape(error)
        ));
    }
    body.push_str(&format!(
        "<form method=\"post\" action=\"/login\" autocomplete=\"off\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <input type=\"hidden\" name=\"return\" value=\"{ret}\">\
         <label for=\"token\">YTsaurus token</label>\
         <input type=\"password\" id=\"token\" name=\"token\" required autofocus \
         placeholder=\"your token (yt issue-token, or the UI's settings)\">\
         <div class=\"actions\"><button type=\"submit\">Log in</button></div></form>",
        csrf = escape(l.csrf),
        ret = escape(l.return_url.unwrap_or("")),
    ));
    if let Some(url) = l.login_url {
        body.push_str(&format!(
            "<p class=\"or\">or</p><p><a class=\"button secondary\" id=\"ui-login\" href=\"{}\">\
             Log in to the YTsaurus UI</a></p><p class=\"muted\">Then come back: the UI's \
             <code>{}</code> cookie logs you in here when it reaches this host.</p>",
            escape(url),
            escape(l.cookie_name)
        ));
    }
    body.push_str(
        "<p class=\"muted\">Your token is checked with the cluster and never stored or passed \
         to any service; this browser gets a session instead.</p></div>",
    );
    page("Log in", "", &body)
}

/// One service on the landing page.
pub struct Row {
    pub url: String,
    pub domain: String,
    pub alias_url: Option<String>,
    pub alias_domain: Option<String>,
    pub operation_id: String,
    pub task: String,
    pub service: String,
    pub protocol: &'static str,
    pub jobs: usize,
    pub state: String,
}

/// The header's right side: who is logged in, and the logout button.
pub fn who(user: &str, logout_csrf: &str) -> String {
    format!(
        "Logged in as <b id=\"user\">{}</b> \
         <form method=\"post\" action=\"/logout\" style=\"display:inline\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <button class=\"secondary\" id=\"logout\" type=\"submit\">Log out</button></form>",
        escape(user),
        escape(logout_csrf)
    )
}

pub fn landing(user: &str, logout_csrf: &str, rows: &[Row], hidden: usize) -> String {
    let mut body = format!(
        "<div class=\"card\"><h1>Your services</h1>\
         <p class=\"muted\">Services of running operations that <b>{}</b> may read. Open one: \
         you stay logged in on every service of this proxy.</p>\
         <input type=\"search\" id=\"filter\" placeholder=\"Filter by domain, operation, task, \
         service...\" oninput=\"filterRows(this.value)\">",
        escape(user)
    );
    if rows.is_empty() {
        body.push_str(
            "<p id=\"empty\">No services yet. Start an operation with \
             <code>annotations={task_proxy={enabled=%true}}</code> and reload this page.</p>",
        );
    } else {
        body.push_str(
            "<table id=\"services\"><thead><tr><th>Domain</th><th>Operation</th><th>Task</th>\
             <th>Service</th><th>Protocol</th><th>Jobs</th><th>State</th></tr></thead><tbody>",
        );
        for row in rows {
            let alias = match (&row.alias_url, &row.alias_domain) {
                (Some(url), Some(domain)) => {
                    format!("<br><a href=\"{}\">{}</a>", escape(url), escape(domain))
                }
                _ => String::new(),
            };
            let link = if row.protocol == "grpc" {
                format!("<code>{}</code>", escape(&row.domain))
            } else {
                format!(
                    "<a href=\"{}\">{}</a>",
                    escape(&row.url),
                    escape(&row.domain)
                )
            };
            body.push_str(&format!(
                "<tr><td>{link}{alias}</td><td><code>{op}</code></td><td>{task}</td>\
                 <td>{service}</td><td>{protocol}</td><td class=\"num\">{jobs}</td>\
                 <td class=\"state {state}\">{state}</td></tr>",
                op = escape(&row.operation_id),
                task = escape(&row.task),
                service = escape(&row.service),
                protocol = row.protocol,
                jobs = row.jobs,
                state = escape(&row.state),
            ));
        }
        body.push_str("</tbody></table>");
    }
    if hidden > 0 {
        body.push_str(&format!(
            "<p class=\"muted\">{hidden} more service(s) run here that you may not read.</p>"
        ));
    }
    body.push_str(
        "</div><script>function filterRows(q){q=q.toLowerCase();\
         document.querySelectorAll('#services tbody tr').forEach(function(r){\
         r.style.display=r.textContent.toLowerCase().indexOf(q)<0?'none':''})}</script>",
    );
    page("Your services", &who(user, logout_csrf), &body)
}

/// 401 on a service domain (a request the portal cannot redirect: not a plain navigation).
pub fn unauthorized(reason: &str, login_href: &str) -> String {
    crate::html::status_page_with(
        http::StatusCode::UNAUTHORIZED,
        "Log in required",
        "This service runs in a YTsaurus operation; only users who may read the operation can \
         open it.",
        &format!("Not authenticated: {reason}."),
        &format!(
            "<div class=\"actions\"><a class=\"button\" id=\"login\" href=\"{}\">Log in</a></div>",
            escape(login_href)
        ),
    )
}

/// 403: who the user is, which operation, who may read it.
pub fn forbidden(
    user: &str,
    operation_id: &str,
    task: &str,
    service: &str,
    acl: Option<&[(String, String, String)]>,
    owner: Option<&str>,
    portal_href: &str,
) -> String {
    let mut extra = format!(
        "<dl class=\"facts\"><dt>You are</dt><dd id=\"user\">{}</dd>\
         <dt>Operation</dt><dd><code id=\"operation\">{}</code></dd>\
         <dt>Task, service</dt><dd>{}, {}</dd>",
        escape(user),
        escape(operation_id),
        escape(task),
        escape(service)
    );
    if let Some(owner) = owner {
        extra.push_str(&format!("<dt>Started by</dt><dd>{}</dd>", escape(owner)));
    }
    extra.push_str("</dl>");
    match acl {
        Some(entries) if !entries.is_empty() => {
            extra.push_str(
                "<h2>Who may read it</h2><table id=\"acl\"><thead><tr><th>Action</th>\
                 <th>Subjects</th><th>Permissions</th></tr></thead><tbody>",
            );
            for (action, subjects, permissions) in entries {
                extra.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(action),
                    escape(subjects),
                    escape(permissions)
                ));
            }
            extra.push_str("</tbody></table>");
        }
        Some(_) => extra.push_str(
            "<p>The operation's ACL is empty: only its owner and administrators may read it.</p>",
        ),
        None => extra.push_str("<p class=\"muted\">The operation's ACL cannot be read now.</p>"),
    }
    extra.push_str(&format!(
        "<p>To get access, ask the operation's owner to add you (or a group of yours) with the \
         <code>read</code> permission to the operation's ACL, e.g. \
         <code>yt update-op-parameters {} '{{acl=[...]}}'</code>.</p>\
         <div class=\"actions\"><a class=\"button secondary\" href=\"{}\">Your services</a></div>",
        escape(operation_id),
        escape(portal_href)
    ));
    crate::html::status_page_with(
        http::StatusCode::FORBIDDEN,
        "Access denied",
        "You are logged in, but you may not read the operation this service runs in.",
        "",
        &extra,
    )
}

/// 404 on a service domain; `gone`: the service that had this domain, finished at that time.
pub fn not_found(
    host: &str,
    gone: Option<(&str, &str, &str, SystemTime)>,
    portal_href: &str,
) -> String {
    let (title, hint, extra) = match gone {
        Some((operation_id, task, service, at)) => (
            "This service has finished",
            format!(
                "<code>{}</code> was the service <code>{}</code> of task <code>{}</code> in \
                 operation <code>{}</code>, which stopped running {} ({}).",
                escape(host),
                escape(service),
                escape(task),
                escape(operation_id),
                ago(at),
                crate::html::escape(&utc(at)),
            ),
            "<p>Start the operation again to bring the service back: its domain stays the \
             same for the same operation, task and service.</p>",
        ),
        None => (
            "No such service",
            format!(
                "No running service has the domain <code>{}</code>. Check the address, or find \
                 your services on the portal.",
                escape(host)
            ),
            "",
        ),
    };
    crate::html::status_page_with(
        http::StatusCode::NOT_FOUND,
        title,
        "",
        "",
        &format!(
            "<p id=\"reason\">{hint}</p>{extra}<div class=\"actions\">\
             <a class=\"button secondary\" href=\"{}\">Your services</a></div>",
            escape(portal_href)
        ),
    )
}

fn ago(at: SystemTime) -> String {
    let secs = SystemTime::now()
        .duration_since(at)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match secs {
        0..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        _ => format!("{} h {} min ago", secs / 3600, secs % 3600 / 60),
    }
}

fn utc(at: SystemTime) -> String {
    let secs = at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (y, m, d) = yt_client::time::civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max).collect();
    out.push('…');
    out
}
