//! The browser portal end to end: the real `task-proxy serve` binary with auth on the dev
//! cluster (alice and bob, operations started by the real `yt` CLI), demo jobs behind it, and
//! real clients: headless Chromium over the DevTools protocol for what a person does, curl for
//! the security properties (tickets, cookies, redirects, CSRF).

mod support;

use serde_json::{json, Value};
use std::io::Write;
use std::process::Command;
use std::time::Duration;
use support::file_proxy::{write_services, FileProxy};
use support::{curl, dev_cluster, start_operation, BASE_DOMAIN, BOB_READS};
use task_proxy::auth::session::{
    now_secs, random_id, Claims, Kind, SessionKey, SessionTtls, Sessions,
};
use task_proxy::routing::service_hash;
use yt_devcluster::DevCluster;

const TASKS: &str = "{main={command=\"sleep 1000\";job_count=1;port_count=1}}";

struct Env {
    _cluster: DevCluster,
    /// alice's operation (bob may not read it).
    op_a: String,
    /// An operation bob may read (the failure pages).
    op_b: String,
    /// bob's operation (alice may not read it).
    op_c: String,
    proxy: FileProxy,
    services: Vec<Value>,
    /// The key the proxy signs sessions with (from --portal-key-file).
    key: Vec<u8>,
    _key_file: tempfile::NamedTempFile,
    _http_job: demo_services::Running,
    _hanging: std::net::TcpListener,
}

impl Env {
    async fn start() -> Env {
        Env::start_with(&[]).await
    }

    /// With `extra` flags.
    async fn start_with(extra: &[&str]) -> Env {
        let cluster = dev_cluster().await;
        let op_a = start_operation(&cluster, TASKS, "{}");
        let op_b = start_operation(&cluster, TASKS, BOB_READS);
        // bob's own operation, which alice may not read.
        let op_c = support::yt(
            &cluster,
            "bob-token",
            &["vanilla", "--tasks", TASKS, "--spec", "{}", "--async"],
        );
        let op_c = op_c.lines().last().unwrap_or_default().trim().to_string();
        let http_job = demo_services::spawn_http("portal-job").await;
        // Accepts connections and never answers: the 504 page.
        let hanging = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        // A port nobody listens on: the 502 page.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr");
        let job = http_job.addr.to_string();
        let services = vec![
            json!({"operation_id": op_a, "task_name": "main", "service": "web", "protocol": "http", "endpoints": [job]}),
            json!({"operation_id": op_a, "task_name": "main", "service": "lab", "protocol": "http", "endpoints": [job]}),
            json!({"operation_id": op_b, "task_name": "main", "service": "dead", "protocol": "http", "endpoints": [closed.to_string()]}),
            json!({"operation_id": op_b, "task_name": "main", "service": "slow", "protocol": "http", "endpoints": [hanging.local_addr().expect("addr").to_string()]}),
            json!({"operation_id": op_b, "task_name": "main", "service": "gone", "protocol": "http", "endpoints": [job]}),
            json!({"operation_id": op_c, "task_name": "main", "service": "bobs", "protocol": "http", "endpoints": [job]}),
        ];
        let key = random_id().repeat(2).into_bytes();
        let mut key_file = tempfile::NamedTempFile::new().expect("key file");
        key_file.write_all(&key).expect("write key");
        let key_path = key_file.path().to_string_lossy().into_owned();
        let cluster_url = cluster.url();
        let mut flags = vec![
            "--yt-proxy",
            &cluster_url,
            "--yt-token",
            "robot-token",
            "--portal-key-file",
            &key_path,
            "--upstream-response-timeout",
            "2s",
        ];
        flags.extend_from_slice(extra);
        let proxy = FileProxy::start(&services, &flags, &[("RUST_LOG", "warn")]);
        Env {
            _cluster: cluster,
            op_a,
            op_b,
            op_c,
            proxy,
            services,
            key,
            _key_file: key_file,
            _http_job: http_job,
            _hanging: hanging,
        }
    }

    fn port(&self) -> u16 {
        self.proxy.proxy.plain.port()
    }

    fn host(&self, op: &str, service: &str) -> String {
        format!(
            "{}.{BASE_DOMAIN}:{}",
            service_hash(op, "main", service),
            self.port()
        )
    }

    fn portal(&self) -> String {
        format!("{BASE_DOMAIN}:{}", self.port())
    }

    /// Another replica: the same services, key and cluster.
    fn replica(&self) -> FileProxy {
        let key_path = self._key_file.path().to_string_lossy().into_owned();
        let cluster_url = self._cluster.url();
        FileProxy::start(
            &self.services,
            &[
                "--yt-proxy",
                &cluster_url,
                "--yt-token",
                "robot-token",
                "--portal-key-file",
                &key_path,
            ],
            &[("RUST_LOG", "warn")],
        )
    }

    /// The same key the proxy signs with, to mint values the proxy should or should not take.
    fn sessions(&self) -> Sessions {
        Sessions::new(
            SessionKey::from_bytes(&self.key).expect("key"),
            SessionTtls::default(),
        )
    }

    /// Removes the `gone` service, as discovery does when its operation finishes.
    fn finish_gone_service(&self) {
        let kept: Vec<Value> = self
            .services
            .iter()
            .filter(|s| s["service"] != "gone")
            .cloned()
            .collect();
        write_services(&self.proxy.path, &kept);
        self.proxy.proxy.signal("HUP");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.proxy.services().to_string().contains("\"gone\"") {
            assert!(std::time::Instant::now() < deadline, "gone is still routed");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// One HTTP exchange through curl: status, headers (lowercase names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == "set-cookie")
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The value of the cookie `name` this answer sets.
    fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookies().into_iter().find_map(|c| {
            let pair = c.split(';').next()?;
            let (n, v) = pair.split_once('=')?;
            (n == name).then(|| v.to_string())
        })
    }
}

/// `method url` to the proxy at `env`'s port with `Host: host` and extra curl args.
fn request(env: &Env, method: &str, host: &str, path: &str, args: &[&str]) -> Answer {
    let url = format!("http://127.0.0.1:{}{path}", env.port());
    let host_header = format!("Host: {host}");
    let mut all = vec![
        "-i",
        "--path-as-is",
        "--max-time",
        "20",
        "-X",
        method,
        "-H",
        &host_header,
    ];
    all.extend_from_slice(args);
    all.push(&url);
    let (_, out) = curl(&all);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((out.as_str(), ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

const BROWSER: &str = "Accept: text/html,application/xhtml+xml";

/// The login form's CSRF cookie and field, as a browser gets them.
fn login_form(env: &Env) -> (String, String) {
    let page = request(env, "GET", &env.portal(), "/login", &["-H", BROWSER]);
    assert_eq!(page.status, 200, "{}", page.body);
    let nonce = page.cookie("tp_csrf").expect("csrf cookie");
    let field = page
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf field")
        .to_string();
    (nonce, field)
}

/// Submits the login form with `token`, returning to `return_url`.
fn log_in(env: &Env, token: &str, return_url: &str, csrf: &(String, String)) -> Answer {
    post_login(env, &csrf.0, &csrf.1, &env.portal(), token, return_url)
}

/// The login form's POST with the CSRF cookie, the CSRF field and the `Origin` host given
/// apart, so a test can forge any of them.
fn post_login(
    env: &Env,
    csrf_cookie: &str,
    csrf_field: &str,
    origin: &str,
    token: &str,
    return_url: &str,
) -> Answer {
    let cookie = format!("Cookie: tp_csrf={csrf_cookie}");
    let origin = format!("Origin: http://{origin}");
    let form = format!("csrf={csrf_field}");
    let token = format!("token={token}");
    let ret = format!("return={return_url}");
    request(
        env,
        "POST",
        &env.portal(),
        "/login",
        &[
            "-H",
            &cookie,
            "-H",
            &origin,
            "--data-urlencode",
            &form,
            "--data-urlencode",
            &token,
            "--data-urlencode",
            &ret,
        ],
    )
}

/// Splits a ticket redirect into (host, path and query).
fn split_location(location: &str) -> (String, String) {
    let rest = location.strip_prefix("http://").expect("http location");
    let (host, path) = rest.split_at(rest.find('/').expect("a path"));
    (host.to_string(), path.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_logs_in_once_and_sees_understandable_pages() {
    let env = Env::start().await;
    let web = format!("http://{}/headers?x=1&y=two", env.host(&env.op_a, "web"));
    let second = format!("http://{}/headers?second=1", env.host(&env.op_a, "lab"));
    let shots = test_support::workspace_root().join("target");
    // The 404 for a service that finished: the proxy saw it, then it left.
    env.finish_gone_service();
    let config = json!({
        "resolve": format!("MAP *.{BASE_DOMAIN} 127.0.0.1, MAP {BASE_DOMAIN} 127.0.0.1"),
        "portal": format!("http://{}/", env.portal()),
        "web": web,
        "second": second,
        "ws_page": format!("http://{}/", env.host(&env.op_a, "web")),
        "listed": [env.host(&env.op_a, "lab").split(':').next().unwrap(), env.host(&env.op_a, "web").split(':').next().unwrap()],
        "not_listed": [env.host(&env.op_c, "bobs").split(':').next().unwrap()],
        "operation": env.op_a,
        "alice": "alice-token",
        "bob": "bob-token",
        "bad_ticket": format!("http://{}/.task-proxy/session?ticket=v1.forged.x&to=/", env.host(&env.op_a, "web")),
        "errors": [
            ["404", format!("http://0badc0de.{BASE_DOMAIN}:{}/", env.port()), "No such service"],
            ["404-finished", format!("http://{}/", env.host(&env.op_b, "gone")), "has finished"],
            ["502", format!("http://{}/", env.host(&env.op_b, "dead")), "not answering"],
            ["504", format!("http://{}/", env.host(&env.op_b, "slow")), "did not answer in time"],
        ],
        "shots": shots,
    });
    let output = Command::new(test_support::tool("python3"))
        .arg(support::support_dir().join("portal_browser.py"))
        .arg(config.to_string())
        .output()
        .expect("run the browser");
    assert!(
        output.status.success(),
        "the browser scenario failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("summary");
    assert_eq!(summary["web_uri"], "/headers?x=1&y=two");
    assert_eq!(summary["websocket"], "hello portal");
    // 503: the cluster cannot check a new credential (whoami fails), so access cannot be
    // decided.
    env._cluster.knobs().set(
        "whoami",
        yt_devcluster::CommandKnob {
            error_rate: 1.0,
            ..yt_devcluster::CommandKnob::default()
        },
    );
    let output = Command::new(test_support::tool("python3"))
        .arg(support::support_dir().join("browser_page.py"))
        .arg(format!("http://{}/", env.host(&env.op_a, "web")))
        .args(["--resolve", &format!("MAP *.{BASE_DOMAIN} 127.0.0.1")])
        .args(["--cookie", "YTCypressCookie=a-cookie-nobody-checked"])
        .arg("--screenshot")
        .arg(shots.join("error-503.png"))
        .output()
        .expect("run the browser");
    let page = String::from_utf8_lossy(&output.stdout);
    assert!(
        page.contains("503") && page.contains("Access cannot be checked"),
        "{page}"
    );
    for shot in [
        "error-503.png",
        "portal-login.png",
        "portal-landing.png",
        "error-401.png",
        "error-403.png",
        "error-404.png",
        "error-404-finished.png",
        "error-502.png",
        "error-504.png",
    ] {
        let path = shots.join(shot);
        assert!(
            std::fs::metadata(&path).is_ok_and(|m| m.len() > 5000),
            "{path:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_cookies_redirects_and_forms_hold() {
    let env = Env::start().await;
    let host_a = env.host(&env.op_a, "web");
    let host_b = env.host(&env.op_a, "lab");
    let return_a = format!("http://{host_a}/headers?q=1");

    // Programs keep today's answers: 400 on the portal host, 401 plain text on a service.
    let base = request(&env, "GET", &env.portal(), "/", &[]);
    assert_eq!(base.status, 400, "{}", base.body);
    assert!(base
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/plain"));
    let program = request(&env, "GET", &host_a, "/headers", &[]);
    assert_eq!(program.status, 401);
    assert!(program.header("location").is_none());
    assert!(program
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/plain"));
    // A browser is sent to the portal with the exact URL to come back to.
    let browser = request(&env, "GET", &host_a, "/headers?q=1", &["-H", BROWSER]);
    assert_eq!(browser.status, 302, "{}", browser.body);
    let location = browser.header("location").expect("location");
    assert!(
        location.starts_with(&format!("http://{}/login?return=", env.portal())),
        "{location}"
    );
    assert!(location.contains("%2Fheaders%3Fq%3D1"), "{location}");

    // CSRF: no cookie, a wrong field, another origin: refused, no session.
    let csrf = login_form(&env);
    for (cookie, field, origin) in [
        ("", csrf.1.as_str(), env.portal()),
        (csrf.0.as_str(), "v1.forged.x", env.portal()),
        (csrf.0.as_str(), csrf.1.as_str(), "evil.example".to_string()),
    ] {
        let refused = post_login(&env, cookie, field, &origin, "alice-token", "");
        assert_eq!(
            refused.status, 403,
            "{cookie} {field} {origin}: {}",
            refused.body
        );
        assert!(refused.cookie("tp_portal").is_none());
    }
    // Another session's CSRF token is not this browser's.
    let other = login_form(&env);
    let mixed = log_in(
        &env,
        "alice-token",
        &return_a,
        &(csrf.0.clone(), other.1.clone()),
    );
    assert_eq!(mixed.status, 403);

    // Open redirects: the return address must be a service domain routed here.
    for evil in [
        "http://evil.example/".to_string(),
        format!("http://{BASE_DOMAIN}.evil.example/"),
        format!("http://0badc0de.{BASE_DOMAIN}:{}/", env.port()),
        "//evil.example/".to_string(),
        "javascript:alert(1)".to_string(),
        format!("http://user@{host_a}/"),
    ] {
        let refused = log_in(&env, "alice-token", &evil, &csrf);
        assert_eq!(refused.status, 400, "{evil}: {}", refused.body);
        assert!(refused.header("location").is_none(), "{evil}");
        let path = format!("/login?return={}", form_urlencode(&evil));
        let refused = request(&env, "GET", &env.portal(), &path, &["-H", BROWSER]);
        assert_eq!(refused.status, 400, "{evil}");
        assert!(refused.header("location").is_none(), "{evil}");
    }

    // A good login: the portal cookie, and a ticket redirect to host A.
    let login = log_in(&env, "alice-token", &return_a, &csrf);
    assert_eq!(login.status, 303, "{}", login.body);
    let portal_cookie = login.cookie("tp_portal").expect("portal cookie");
    let set = login.set_cookies().join("\n");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.contains("Max-Age="),
        "{set}"
    );
    assert!(
        !set.to_ascii_lowercase().contains("domain="),
        "host-only: {set}"
    );
    let (ticket_host, ticket_path) = split_location(login.header("location").expect("location"));
    assert_eq!(ticket_host, host_a);

    // The ticket on host B is refused; on host A it works once.
    let wrong_host = request(&env, "GET", &host_b, &ticket_path, &["-H", BROWSER]);
    assert_eq!(wrong_host.status, 401, "{}", wrong_host.body);
    assert!(wrong_host.cookie("tp_session").is_none());
    let redeemed = request(&env, "GET", &host_a, &ticket_path, &["-H", BROWSER]);
    assert_eq!(redeemed.status, 303, "{}", redeemed.body);
    assert_eq!(redeemed.header("location"), Some("/headers?q=1"));
    let service_cookie = redeemed.cookie("tp_session").expect("service cookie");
    let again = request(&env, "GET", &host_a, &ticket_path, &["-H", BROWSER]);
    assert_eq!(again.status, 401, "a ticket works once");

    // The service cookie admits on host A (relay and hyper paths); the job never sees the
    // session cookie, the portal cookie or the ticket.
    let cookie =
        format!("Cookie: a=1; tp_session={service_cookie}; tp_portal={portal_cookie}; b=2");
    for extra in [vec![], vec!["-H", BROWSER], vec!["--http2-prior-knowledge"]] {
        let mut args = vec!["-H", cookie.as_str()];
        args.extend(extra.iter().copied());
        let seen = request(&env, "GET", &host_a, "/headers?q=1", &args);
        assert_eq!(seen.status, 200, "{extra:?}: {}", seen.body);
        let view: Value = serde_json::from_str(&seen.body).expect("job json");
        let dump = view.to_string();
        assert!(
            !dump.contains("tp_session") && !dump.contains("tp_portal"),
            "{dump}"
        );
        assert!(
            !dump.contains(&service_cookie) && !dump.contains("ticket"),
            "{dump}"
        );
        assert!(dump.contains("a=1; b=2"), "other cookies pass: {dump}");
    }
    // ... but not on host B (another service's cookie).
    let cookie_b = format!("Cookie: tp_session={service_cookie}");
    assert_eq!(
        request(&env, "GET", &host_b, "/headers", &["-H", &cookie_b]).status,
        401
    );
    // The ticket path is never forwarded, with credentials either.
    let with_token = request(
        &env,
        "GET",
        &host_a,
        "/.task-proxy/session?ticket=x",
        &["-H", "Authorization: OAuth alice-token"],
    );
    assert_eq!(with_token.status, 401);
    assert!(!with_token.body.contains("portal-job"));

    // A second service: the portal session gives a ticket without a form.
    let portal_cookie_header = format!("Cookie: tp_portal={portal_cookie}");
    let path = format!(
        "/login?return={}",
        form_urlencode(&format!("http://{host_b}/"))
    );
    let direct = request(
        &env,
        "GET",
        &env.portal(),
        &path,
        &["-H", BROWSER, "-H", &portal_cookie_header],
    );
    assert_eq!(direct.status, 303, "{}", direct.body);
    let (host, _) = split_location(direct.header("location").expect("location"));
    assert_eq!(host, host_b);

    // Forged and expired values are refused.
    let sessions = env.sessions();
    let forger = Sessions::new(SessionKey::generate(), SessionTtls::default());
    let claims = |aud: &str, exp: u64| Claims {
        sid: random_id(),
        user: "alice".into(),
        aud: aud.into(),
        exp,
        jti: String::new(),
        end: 0,
    };
    let domain_a = host_a.split(':').next().unwrap().to_string();
    let genuine = sessions.sign(Kind::Service, &claims(&domain_a, now_secs() + 60));
    let forged = forger.sign(Kind::Service, &claims(&domain_a, now_secs() + 60));
    let expired = sessions.sign(Kind::Service, &claims(&domain_a, now_secs() - 1));
    let as_user_bob = sessions.sign(
        Kind::Service,
        &Claims {
            user: "bob".into(),
            ..claims(&domain_a, now_secs() + 60)
        },
    );
    for (value, status) in [
        (&genuine, 200),
        (&forged, 401),
        (&expired, 401),
        (&as_user_bob, 403),
    ] {
        let cookie = format!("Cookie: tp_session={value}");
        assert_eq!(
            request(&env, "GET", &host_a, "/headers", &["-H", &cookie]).status,
            status,
            "{value}"
        );
    }
    let forged_portal = forger.sign(Kind::Portal, &claims("", now_secs() + 60));
    let expired_portal = sessions.sign(Kind::Portal, &claims("", now_secs() - 1));
    for value in [forged_portal, expired_portal] {
        let cookie = format!("Cookie: tp_portal={value}");
        let page = request(
            &env,
            "GET",
            &env.portal(),
            "/",
            &["-H", BROWSER, "-H", &cookie],
        );
        assert!(
            page.body.contains("name=\"token\""),
            "a login form, not the landing page"
        );
    }
    // An expired ticket (signed with the right key) is refused.
    let mut ticket_claims = claims(&host_a, now_secs() - 1);
    ticket_claims.jti = random_id();
    let stale = sessions.sign(Kind::Ticket, &ticket_claims);
    let path = format!("/.task-proxy/session?ticket={stale}&to=/");
    assert_eq!(
        request(&env, "GET", &host_a, &path, &["-H", BROWSER]).status,
        401
    );
    // `to` never leaves the host.
    let t = sessions.ticket(&claims("", now_secs() + 60), &host_a);
    let path = format!("/.task-proxy/session?ticket={t}&to=//evil.example/");
    let redeemed = request(&env, "GET", &host_a, &path, &["-H", BROWSER]);
    assert_eq!(redeemed.header("location"), Some("/"));

    // Logout (CSRF-checked) ends the session on the service host too.
    let landing = request(
        &env,
        "GET",
        &env.portal(),
        "/",
        &["-H", BROWSER, "-H", &portal_cookie_header],
    );
    assert!(landing.body.contains("Your services") && landing.body.contains(&domain_a));
    let logout_csrf = landing
        .body
        .split("action=\"/logout\"")
        .nth(1)
        .and_then(|r| r.split("value=\"").nth(1))
        .and_then(|r| r.split('"').next())
        .expect("logout csrf")
        .to_string();
    let refused = request(
        &env,
        "POST",
        &env.portal(),
        "/logout",
        &["-H", &portal_cookie_header, "--data", "csrf=forged"],
    );
    assert_eq!(refused.status, 403);
    let cookie_a = format!("Cookie: tp_session={service_cookie}");
    assert_eq!(
        request(&env, "GET", &host_a, "/headers", &["-H", &cookie_a]).status,
        200
    );
    let form = format!("csrf={logout_csrf}");
    let out = request(
        &env,
        "POST",
        &env.portal(),
        "/logout",
        &["-H", &portal_cookie_header, "--data-urlencode", &form],
    );
    assert_eq!(out.status, 200, "{}", out.body);
    assert_eq!(
        request(&env, "GET", &host_a, "/headers", &["-H", &cookie_a]).status,
        401
    );
    let after = request(
        &env,
        "GET",
        &env.portal(),
        "/",
        &["-H", BROWSER, "-H", &portal_cookie_header],
    );
    assert!(after.body.contains("name=\"token\""));
}

/// `GET /headers` on `host` through `proxy` with `cookie`: the status.
fn status_with_cookie(proxy: &FileProxy, host: &str, cookie: &str) -> u16 {
    let url = format!("http://127.0.0.1:{}/headers", proxy.proxy.plain.port());
    let host = format!("Host: {host}");
    let cookie = format!("Cookie: {cookie}");
    support::status_of(&url, &["-H", &host, "-H", &cookie])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_on_one_replica_ends_the_session_on_the_others() {
    let env = Env::start().await;
    let other = env.replica();
    let host_a = env.host(&env.op_a, "web");
    // Log in on the first replica and take the ticket to the second: the key is shared.
    let csrf = login_form(&env);
    let login = log_in(&env, "alice-token", &format!("http://{host_a}/"), &csrf);
    assert_eq!(login.status, 303, "{}", login.body);
    let portal_cookie = login.cookie("tp_portal").expect("portal cookie");
    let (_, ticket_path) = split_location(login.header("location").expect("location"));
    // Behind one load balancer the browser names the same host whichever replica answers.
    let url = format!("http://127.0.0.1:{}{ticket_path}", other.proxy.plain.port());
    let host = format!("Host: {host_a}");
    let (_, redeemed) = curl(&["-i", "-H", &host, "-H", BROWSER, &url]);
    assert!(redeemed.starts_with("HTTP/1.1 303"), "{redeemed}");
    let value = redeemed
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: tp_session="))
        .and_then(|rest| rest.split(';').next())
        .expect("service cookie");
    let service_cookie = format!("tp_session={value}");
    assert_eq!(
        status_with_cookie(&env.proxy, &host_a, &service_cookie),
        200
    );
    assert_eq!(
        status_with_cookie(&other, &host_a, &service_cookie),
        200,
        "the other replica takes it"
    );

    // Logout on the first replica: the second refuses the session within its poll period.
    let portal_cookie_header = format!("Cookie: tp_portal={portal_cookie}");
    let landing = request(
        &env,
        "GET",
        &env.portal(),
        "/",
        &["-H", BROWSER, "-H", &portal_cookie_header],
    );
    let logout_csrf = landing
        .body
        .split("action=\"/logout\"")
        .nth(1)
        .and_then(|r| r.split("value=\"").nth(1))
        .and_then(|r| r.split('"').next())
        .expect("logout csrf")
        .to_string();
    let form = format!("csrf={logout_csrf}");
    let out = request(
        &env,
        "POST",
        &env.portal(),
        "/logout",
        &["-H", &portal_cookie_header, "--data-urlencode", &form],
    );
    assert_eq!(out.status, 200);
    let started = std::time::Instant::now();
    while status_with_cookie(&other, &host_a, &service_cookie) != 401 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the other replica still admits the session"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "the other replica refused the session {:?} after the logout",
        started.elapsed()
    );
    // ... and its portal cookie too.
    let url = format!("http://127.0.0.1:{}/", other.proxy.plain.port());
    let (_, page) = curl(&[
        "-H",
        &format!("Host: {}", env.portal()),
        "-H",
        BROWSER,
        "-H",
        &portal_cookie_header,
        &url,
    ]);
    assert!(
        page.contains("name=\"token\""),
        "a login form on the other replica"
    );
}

/// `GET`/`POST` over TLS to `host` (no port) on the proxy's TLS port: status line and head,
/// and body.
fn tls_request(port: u16, host: &str, method: &str, path: &str, args: &[&str]) -> (String, String) {
    let resolve = format!("{host}:{port}:127.0.0.1");
    let url = format!("https://{host}:{port}{path}");
    let mut all = vec![
        "-k",
        "-i",
        "--resolve",
        &resolve,
        "-X",
        method,
        "-H",
        BROWSER,
    ];
    all.extend_from_slice(args);
    all.push(&url);
    let (_, out) = curl(&all);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((out.as_str(), ""));
    (head.to_string(), body.to_string())
}

/// The value of `Set-Cookie: <name>=...` in a head.
fn set_cookie<'a>(head: &'a str, name: &str) -> Option<(&'a str, &'a str)> {
    head.lines().find_map(|l| {
        let line = l.strip_prefix("set-cookie: ")?;
        let rest = line.strip_prefix(name)?.strip_prefix('=')?;
        Some((rest.split(';').next()?, line))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_tls_cookies_are_secure_host_prefixed_and_tossed_ones_do_not_count() {
    let certs = tempfile::tempdir().expect("tempdir");
    let certified = rcgen::generate_simple_self_signed(vec![
        BASE_DOMAIN.to_string(),
        format!("*.{BASE_DOMAIN}"),
    ])
    .expect("cert");
    let (cert, key) = (certs.path().join("tls.crt"), certs.path().join("tls.key"));
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("write key");
    let env = Env::start_with(&[
        "--tls-cert",
        cert.to_str().unwrap_or_default(),
        "--tls-key",
        key.to_str().unwrap_or_default(),
        "--tls-listen",
        "127.0.0.1:0",
    ])
    .await;
    let port = env.proxy.proxy.tls.expect("tls listener").port();
    let domain = service_hash(&env.op_a, "main", "web") + "." + BASE_DOMAIN;

    // A page load without credentials: to the portal over https.
    let (head, _) = tls_request(port, &domain, "GET", "/headers?q=1", &[]);
    assert!(
        head.starts_with("HTTP/1.1 302") || head.starts_with("HTTP/2 302"),
        "{head}"
    );
    assert!(
        head.contains(&format!(
            "location: https://{BASE_DOMAIN}:{port}/login?return=https%3A%2F%2F"
        )),
        "{head}"
    );

    let (head, body) = tls_request(port, BASE_DOMAIN, "GET", "/login", &[]);
    let (nonce, line) = set_cookie(&head, "__Host-tp_csrf").expect("prefixed csrf cookie");
    assert!(
        line.contains("; Secure")
            && line.contains("Path=/")
            && !line.to_ascii_lowercase().contains("domain="),
        "{line}"
    );
    let field = body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("csrf field");
    let origin = format!("Origin: https://{BASE_DOMAIN}:{port}");
    let ret = format!("return=https://{domain}:{port}/headers?q=1");
    let form = format!("csrf={field}");
    // The login POST over TLS, with one CSRF cookie or another.
    let tls_log_in = |cookie: &str| {
        tls_request(
            port,
            BASE_DOMAIN,
            "POST",
            "/login",
            &[
                "-H",
                cookie,
                "-H",
                &origin,
                "--data-urlencode",
                &form,
                "--data-urlencode",
                "token=alice-token",
                "--data-urlencode",
                &ret,
            ],
        )
    };
    // The same nonce in a plain (tossable) cookie does not count under TLS.
    let tossed = format!("Cookie: tp_csrf={nonce}");
    let (head, _) = tls_log_in(&tossed);
    assert!(head.contains(" 403"), "{head}");
    let own = format!("Cookie: __Host-tp_csrf={nonce}");
    let (head, _) = tls_log_in(&own);
    assert!(head.contains(" 303"), "{head}");
    let (portal, line) = set_cookie(&head, "__Host-tp_portal").expect("prefixed portal cookie");
    assert!(
        line.contains("; Secure") && line.contains("HttpOnly") && line.contains("SameSite=Lax"),
        "{line}"
    );
    let location = head
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .expect("location");
    let path = location
        .split_once(&format!(":{port}"))
        .map(|(_, p)| p)
        .expect("ticket path");
    assert!(
        location.starts_with(&format!("https://{domain}:{port}/.task-proxy/session?")),
        "{location}"
    );

    let (head, _) = tls_request(port, &domain, "GET", path, &[]);
    let (session, line) = set_cookie(&head, "__Host-tp_session").expect("prefixed service cookie");
    assert!(line.contains("; Secure"), "{line}");
    let cookie = format!("Cookie: __Host-tp_session={session}");
    let (head, body) = tls_request(port, &domain, "GET", "/headers?q=1", &["-H", &cookie]);
    assert!(head.contains(" 200"), "{head}");
    assert!(
        !body.contains("tp_session") && !body.contains(session),
        "{body}"
    );

    // The portal session under its plain name (as a sibling host could toss it) is ignored.
    let tossed = format!("Cookie: tp_portal={portal}");
    let (_, page) = tls_request(port, BASE_DOMAIN, "GET", "/", &["-H", &tossed]);
    assert!(page.contains("name=\"token\""), "a login form");
    let own = format!("Cookie: __Host-tp_portal={portal}");
    let (_, page) = tls_request(port, BASE_DOMAIN, "GET", "/", &["-H", &own]);
    assert!(page.contains("Your services"), "{page}");
}

fn form_urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
