//! HTML for the pages the proxy serves itself (the portal, the login and error pages, the admin
//! status page): escaping, the one inline stylesheet and the page frame.

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The one stylesheet of every page the proxy renders itself (inline: no external assets).
pub const STYLE: &str = "\
:root{--fg:#1d2433;--muted:#5b6478;--line:#dfe3ea;--bg:#f5f7fa;--card:#fff;--accent:#2756c8;\
--bad:#b3261e;--warn:#8a5a00;--ok:#1c7c3a}\
*{box-sizing:border-box}\
body{margin:0;font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:var(--fg);background:var(--bg)}\
header{background:#1d2433;color:#fff;padding:10px 24px;display:flex;align-items:center;gap:16px}\
header .brand{font-weight:600;letter-spacing:.2px}header .who{margin-left:auto;font-size:14px;opacity:.9}\
header form{margin:0}header button{padding:4px 12px;font-size:13px}\
main{max-width:1100px;margin:32px auto;padding:0 24px}\
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:24px 28px;margin-bottom:20px}\
.narrow{max-width:560px;margin-left:auto;margin-right:auto}\
h1{font-size:22px;margin:0 0 12px}h2{font-size:17px;margin:20px 0 8px}\
.status{display:inline-block;font-size:13px;font-weight:600;border-radius:6px;padding:2px 8px;margin-bottom:10px;background:#eef1f6;color:var(--muted)}\
.status.bad{background:#fbe9e7;color:var(--bad)}.status.warn{background:#fff4db;color:var(--warn)}\
p{margin:8px 0}.muted{color:var(--muted)}code{background:#eef1f6;border-radius:4px;padding:1px 5px;font-size:13px}\
a{color:var(--accent)}\
label{display:block;font-weight:600;margin:12px 0 6px}\
input[type=password],input[type=search]{width:100%;padding:9px 11px;border:1px solid var(--line);border-radius:7px;font:inherit}\
button,.button{display:inline-block;background:var(--accent);color:#fff;border:0;border-radius:7px;padding:9px 18px;font:inherit;\
font-weight:600;cursor:pointer;text-decoration:none}.button.secondary,button.secondary{background:#e6eaf2;color:var(--fg)}\
.actions{display:flex;gap:10px;align-items:center;margin-top:16px;flex-wrap:wrap}\
.or{margin:18px 0 6px;color:var(--muted);font-size:13px;text-transform:uppercase;letter-spacing:.5px}\
.error{background:#fbe9e7;color:var(--bad);border-radius:7px;padding:8px 12px}\
table{border-collapse:collapse;width:100%;font-size:14px}th,td{text-align:left;padding:8px 10px;border-bottom:1px solid var(--line);vertical-align:top}\
th{color:var(--muted);font-weight:600;font-size:13px}td.num{text-align:right}\
.state{font-weight:600}.state.running{color:var(--ok)}\
.facts{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:12px 0}.facts dt{color:var(--muted)}.facts dd{margin:0}\
footer{color:var(--muted);font-size:12px;text-align:center;margin:24px 0}";

/// A full page: `title`, the header's right side (`who`: already HTML), and `body` (HTML).
pub fn page(title: &str, who: &str, body: &str) -> String {
    let title = escape(title);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"referrer\" content=\"same-origin\">\n\
         <title>{title}: YTsaurus task proxy</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <header><span class=\"brand\">YTsaurus task proxy</span><span class=\"who\">{who}</span></header>\n\
         <main>\n{body}\n</main>\n</body>\n</html>\n"
    )
}

/// A styled page for a status the proxy answers itself, with `message` (plain text) and
/// `extra` (HTML) below it.
pub fn status_page(status: http::StatusCode, message: &str, extra: &str) -> String {
    let (title, hint) = match status.as_u16() {
        400 => ("Bad request", "The request cannot be routed to a service."),
        401 => ("Log in required", ""),
        403 => ("Access denied", ""),
        404 => ("No such service", "No running service has this address."),
        502 => (
            "The service is not answering",
            "The job behind this service refused or dropped the connection: it may be starting or restarting. Retry in a few seconds.",
        ),
        503 => (
            "The service is unavailable",
            "No job of this service can take the request right now: it is starting, restarting, or busy. Retry in a few seconds.",
        ),
        504 => (
            "The service did not answer in time",
            "The job accepted the request but did not answer in time. Retry, or ask the service's owner.",
        ),
        429 => ("Too many requests", "Retry in a few seconds."),
        _ => ("Error", ""),
    };
    let retry = if matches!(status.as_u16(), 429 | 502..=504) {
        "<div class=\"actions\"><a class=\"button\" id=\"retry\" href=\"\">Retry</a></div>"
    } else {
        ""
    };
    status_page_with(status, title, hint, message, &format!("{extra}{retry}"))
}

/// [`status_page`] with its own `title` and `hint` (plain text).
pub fn status_page_with(
    status: http::StatusCode,
    title: &str,
    hint: &str,
    message: &str,
    extra: &str,
) -> String {
    let class = if status.is_server_error() || status.as_u16() == 429 {
        "warn"
    } else {
        "bad"
    };
    let code = status.as_u16();
    let hint = if hint.is_empty() {
        String::new()
    } else {
        format!("<p>{}</p>", escape(hint))
    };
    let message = if message.is_empty() {
        String::new()
    } else {
        format!("<p class=\"muted\" id=\"message\">{}</p>", escape(message))
    };
    page(
        title,
        "",
        &format!(
            "<div class=\"card narrow\"><span class=\"status {class}\">{code}</span>\
             <h1>{}</h1>{hint}{message}{extra}</div>",
            escape(title)
        ),
    )
}
