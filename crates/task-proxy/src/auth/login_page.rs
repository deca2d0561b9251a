//! The page a browser gets instead of a bare 401 when the portal is off
//! (`--portal-enabled=false`; with it, browsers are sent to the portal's login instead): what
//! happened and how to log in (through the YTsaurus UI, whose session cookie the proxy
//! accepts; or with a token for scripts). The login
//! link is configurable (`--auth-login-url`); everything inserted is HTML-escaped.

use crate::html::escape;

/// Why a login link was refused at configuration time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--auth-login-url must be an absolute http(s) URL without spaces or quotes, got {0:?}")]
pub struct BadLoginUrl(pub String);

/// Checks a login URL: absolute `http://` or `https://`, printable ASCII, no quotes or spaces.
pub fn validate_login_url(url: &str) -> Result<(), BadLoginUrl> {
    let lower = url.to_ascii_lowercase();
    let scheme_ok = lower.starts_with("https://") || lower.starts_with("http://");
    let chars_ok = url
        .bytes()
        .all(|b| (0x21..=0x7e).contains(&b) && !matches!(b, b'"' | b'\'' | b'<' | b'>' | b'`'));
    if scheme_ok && chars_ok && url.len() > "https://".len() {
        Ok(())
    } else {
        Err(BadLoginUrl(url.to_string()))
    }
}

/// The full HTML page for a 401 with `reason`; `login_url` links to the YTsaurus UI.
pub fn render(reason: &str, login_url: Option<&str>, cookie_name: &str) -> String {
    let reason = escape(reason);
    let cookie_name = escape(cookie_name);
    let login = match login_url {
        Some(url) => {
            let url = escape(url);
            format!(
                "<p><a id=\"login\" href=\"{url}\">Log in to YTsaurus</a>, then reload this \
                 page.</p>"
            )
        }
        None => "<p>Log in to the YTsaurus web interface of this cluster, then reload this \
                 page.</p>"
            .to_string(),
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Log in required: YTsaurus task proxy</title>\n</head>\n<body>\n\
         <h1>Log in required</h1>\n\
         <p>This service runs in a YTsaurus operation; only users who may read the operation \
         can open it. The request was not authenticated: {reason}.</p>\n\
         {login}\n\
         <p>Programs authenticate with a header: <code>Authorization: OAuth &lt;token&gt;</code> \
         or <code>Authorization: Bearer &lt;IAM token&gt;</code>, or with the \
         <code>{cookie_name}</code> cookie.</p>\n</body>\n</html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_links_to_login_and_escapes() {
        let page = render(
            "no <credentials>",
            Some("https://yt.example.net/login?back=x&y=1"),
            "YTCypressCookie",
        );
        assert!(page.contains("href=\"https://yt.example.net/login?back=x&amp;y=1\""));
        assert!(page.contains("no &lt;credentials&gt;"));
        assert!(page.contains("YTCypressCookie"));
        let page = render("no credentials", None, "YTCypressCookie");
        assert!(!page.contains("href="));
        assert!(page.contains("Log in required"));
    }

    #[test]
    fn login_urls_are_validated() {
        assert!(validate_login_url("https://yt.example.net/").is_ok());
        assert!(validate_login_url("http://localhost:8000/login?x=1").is_ok());
        for bad in [
            "",
            "javascript:alert(1)",
            "https://",
            "//evil",
            "https://a\"b",
            "https://a b",
            "ftp://x",
        ] {
            assert!(validate_login_url(bad).is_err(), "{bad}");
        }
    }
}
