//! The browser portal: log in once, land on your services, understand every error.
//!
//! It owns the proxy's own host names (the base domain and `--portal-hosts`) for requests
//! without routing headers, and the browser side of service domains:
//!
//! - **Login** (`/login`): a YTsaurus token in a form (`POST`, CSRF-protected: a signed token
//!   bound to a `SameSite=Strict` cookie, and the `Origin` checked), or the YTsaurus cookie
//!   when it reaches this host, or a link to `--auth-login-url`. The credential is checked with
//!   `whoami` through the gate's identity cache; the portal then keeps a signed session cookie
//!   on its own host ([`crate::auth::session`]).
//! - **The redirect flow**: a browser opening a service without credentials is sent to
//!   `/login?return=<the exact URL>`; with a session the portal sends it back to
//!   `/.task-proxy/session?ticket=...&to=<path and query>` on that service host, which turns
//!   the single-use, host-bound ticket into the host's own session cookie and redirects to the
//!   URL asked for. A second service needs no second form. The return URL must be a service
//!   domain routed by this proxy (no open redirects).
//! - **Logout** (`POST /logout`, CSRF-protected) revokes the session id: its cookies on every
//!   service host are refused from then on.
//! - **The landing page** (`/`): the services of running operations the user may read.
//! - **Pages for 401, 403 (who, which operation, its ACL) and 404 (a service that finished
//!   recently says when)** for browsers; programs and gRPC keep the plain answers.
//!
//! The data plane calls [`Portal::owns`]/[`Portal::serve`] where routing finds no service
//! header, [`Portal::is_session_path`]/[`Portal::redeem`] before the gate, and
//! [`Portal::refusal`]/[`Portal::not_found`] where it answers. Nothing here forwards to jobs,
//! so the session cookie, tickets and tokens never reach one (the gate removes the service
//! cookie from forwarded requests).

pub mod pages;
pub mod recent;
pub mod revocations;

use crate::answer::{full_body, local_answer, CallerKind, ProxyBody};
use crate::auth::credentials::take_credentials;
use crate::auth::session::{
    random_id, Claims, Kind, SessionKey, SessionTtls, Sessions, CSRF_COOKIE, PORTAL_COOKIE,
    SECURE_PREFIX, SERVICE_COOKIE,
};
use crate::auth::{Credential, Gate, Presented, Refusal, Secret};
use crate::config::PortalConfig;
use crate::routing::{route_request, Route, RoutingHeaders, RoutingTable};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use yt_client::YtClient;

/// The path on every service host that turns a ticket into the host's session cookie.
pub const SESSION_PATH: &str = "/.task-proxy/session";

/// The largest login form accepted (bytes).
const MAX_FORM: usize = 16 * 1024;

/// How long a 403 page waits for the operation's ACL.
const ACL_TIMEOUT: Duration = Duration::from_secs(2);

/// See the module docs.
pub struct Portal {
    base_domain: String,
    /// `--portal-hosts`, then the base domain: the first is where browsers log in.
    hosts: Vec<String>,
    sessions: Arc<Sessions>,
    gate: Gate,
    table: Arc<RoutingTable>,
    login_url: Option<String>,
    cookie_name: String,
    /// The robot's client (the operation's ACL on 403 pages).
    cluster: Option<YtClient>,
    recent: recent::Recent,
    /// `--portal-scheme` (`None`: the connection's).
    scheme: Option<&'static str>,
    /// Logouts shared with the other replicas (`None` without a cluster client).
    shared: Option<revocations::SharedRevocations>,
}

impl std::fmt::Debug for Portal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Portal")
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

/// Why the portal cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    #[error(transparent)]
    Key(#[from] crate::auth::session::KeyError),
}

impl Portal {
    /// The portal for `base_domain`; attaches its sessions to `gate`. Without a key file a
    /// random key is generated (with a warning: sessions end at restart and are not shared
    /// with other replicas).
    /// `cluster` is the robot's client (ACLs and operation states on pages; logouts shared
    /// under `dir_path`).
    pub fn new(
        config: &PortalConfig,
        base_domain: &str,
        gate: Gate,
        login_url: Option<String>,
        table: Arc<RoutingTable>,
        cluster: Option<YtClient>,
        dir_path: &str,
    ) -> Result<Arc<Portal>, PortalError> {
        let key = match &config.key_file {
            Some(path) => SessionKey::from_file(path)?,
            None => {
                tracing::warn!(
                    "no --portal-key-file: browser sessions are signed with a random key; they end when this process restarts and other replicas do not accept them"
                );
                SessionKey::generate()
            }
        };
        let sessions = Arc::new(Sessions::new(
            key,
            SessionTtls {
                portal: config.session_ttl,
                service: config.service_session_ttl.min(config.session_ttl),
                ..SessionTtls::default()
            },
        ));
        gate.attach_sessions(sessions.clone());
        let base_domain = base_domain.to_ascii_lowercase();
        let mut hosts = config.hosts.clone();
        hosts.push(base_domain.clone());
        Ok(Arc::new(Portal {
            base_domain,
            hosts,
            sessions,
            cookie_name: gate.cookie_name().to_string(),
            gate,
            table,
            login_url,
            shared: cluster
                .clone()
                .map(|c| revocations::SharedRevocations::new(c, dir_path)),
            cluster,
            recent: recent::Recent::default(),
            scheme: config.scheme,
        }))
    }

    /// The signed-session state (revocations), shared with the gate.
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    /// Follows the routing table to remember services that finished (for 404 pages), until
    /// `stop`.
    pub async fn follow_routes(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let mut generations = self.table.subscribe();
        loop {
            self.recent.observe(&self.table.load());
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = generations.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Reads the other replicas' logouts until `stop` (nothing without a cluster client).
    pub async fn follow_logouts(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        if let Some(shared) = self.shared.clone() {
            shared.run(self.sessions.clone(), stop).await;
        }
    }

    /// Whether a request to `host` (the `Host` header or the URI's authority) without routing
    /// headers is the portal's.
    pub fn owns(&self, host: Option<&str>, routing: &RoutingHeaders<'_>) -> bool {
        routing.is_empty()
            && host.is_some_and(|h| {
                let name = host_name(h);
                self.hosts.iter().any(|p| p.eq_ignore_ascii_case(name))
            })
    }

    /// [`Portal::owns`] for a request (one `Host`, no routing headers, a portal host) from a
    /// browser: a page load (`Accept: text/html`) or a form post to `/login` or `/logout`.
    /// Programs keep the data plane's answer for a request that names no service.
    pub fn owns_request<B>(&self, req: &Request<B>) -> bool {
        let headers = req.headers();
        let form_post =
            req.method() == Method::POST && matches!(req.uri().path(), "/login" | "/logout");
        if !form_post && CallerKind::of(headers) != CallerKind::Browser {
            return false;
        }
        let mut hosts = headers.get_all(header::HOST).iter();
        let (first, second) = (hosts.next(), hosts.next());
        if second.is_some() {
            return false;
        }
        let host = match req.uri().authority() {
            Some(a) => Some(a.as_str()),
            None => first.and_then(|h| h.to_str().ok()),
        };
        let routing = RoutingHeaders::from_pairs(
            headers
                .iter()
                .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes())),
        );
        self.owns(host, &routing)
    }

    /// Whether `path` is the service hosts' ticket path.
    pub fn is_session_path(path: &str) -> bool {
        path == SESSION_PATH
    }

    /// A request to the portal's own host.
    pub async fn serve<B>(&self, req: Request<B>, peer: IpAddr, scheme: &str) -> Response<ProxyBody>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<crate::answer::BoxError>,
    {
        let (parts, body) = req.into_parts();
        let ctx = Ctx::new(
            &parts.headers,
            parts.uri.authority().map(|a| a.as_str()),
            self.scheme.unwrap_or(scheme),
        );
        let path = parts.uri.path();
        let query = parts.uri.query().unwrap_or("");
        let result = match (&parts.method, path) {
            (&Method::GET | &Method::HEAD, "/") => Ok(self.home(&ctx, &parts.headers).await),
            (&Method::GET | &Method::HEAD, "/login") => {
                Ok(self.login_get(&ctx, &parts.headers, query, peer).await)
            }
            (&Method::POST, "/login") => match read_form(body).await {
                Ok(form) => Ok(self.login_post(&ctx, &parts.headers, &form, peer).await),
                Err(message) => Err((StatusCode::BAD_REQUEST, message)),
            },
            (&Method::POST, "/logout") => match read_form(body).await {
                Ok(form) => Ok(self.logout(&ctx, &parts.headers, &form).await),
                Err(message) => Err((StatusCode::BAD_REQUEST, message)),
            },
            (_, "/" | "/login" | "/logout") => Err((
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed".to_string(),
            )),
            _ => Err((StatusCode::NOT_FOUND, format!("no page {path} here"))),
        };
        match result {
            Ok(response) => response,
            Err((status, message)) => with_page_headers(local_answer(
                CallerKind::of(&parts.headers),
                status,
                &message,
                None,
            )),
        }
    }

    async fn home(&self, ctx: &Ctx, headers: &HeaderMap) -> Response<ProxyBody> {
        let Some(session) = self.portal_session(headers, ctx.secure()) else {
            return self.login_form(ctx, headers, None, None, None, StatusCode::OK);
        };
        let snapshot = self.table.load();
        let mut operations: Vec<String> = snapshot
            .routes()
            .iter()
            .map(|r| r.key.operation_id.clone())
            .collect();
        operations.sort_unstable();
        operations.dedup();
        // One cached decision per operation, a few at a time.
        let mut allowed = std::collections::HashSet::new();
        for chunk in operations.chunks(16) {
            let mut checks = Vec::with_capacity(chunk.len());
            for op in chunk {
                checks.push(self.gate.may_read(&session.user, op));
            }
            let results = futures_util::future::join_all(checks).await;
            for (op, result) in chunk.iter().zip(results) {
                if result.unwrap_or(false) {
                    allowed.insert(op.clone());
                }
            }
        }
        let states = self.operation_states(&allowed).await;
        let port = ctx.port_suffix();
        let mut hidden = 0;
        let mut rows: Vec<pages::Row> = Vec::new();
        for route in snapshot.routes() {
            if !allowed.contains(&route.key.operation_id) {
                hidden += 1;
                continue;
            }
            rows.push(pages::Row {
                url: format!("{}://{}{port}/", ctx.scheme, route.domain),
                domain: route.domain.clone(),
                alias_url: route
                    .alias_domain
                    .as_ref()
                    .map(|d| format!("{}://{d}{port}/", ctx.scheme)),
                alias_domain: route.alias_domain.clone(),
                operation_id: route.key.operation_id.clone(),
                task: route.key.task_name.clone(),
                service: route.key.service.clone(),
                protocol: route.protocol.as_str(),
                jobs: route.endpoints.len(),
                state: states
                    .get(&route.key.operation_id)
                    .cloned()
                    .unwrap_or_else(|| "unknown".to_string()),
            });
        }
        rows.sort_by(|a, b| {
            (&a.operation_id, &a.task, &a.service).cmp(&(&b.operation_id, &b.task, &b.service))
        });
        let csrf = self.sessions.csrf_token(&session.sid);
        html_response(
            StatusCode::OK,
            pages::landing(&session.user, &csrf, &rows, hidden),
        )
    }

    async fn login_get(
        &self,
        ctx: &Ctx,
        headers: &HeaderMap,
        query: &str,
        peer: IpAddr,
    ) -> Response<ProxyBody> {
        let requested = form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "return")
            .map(|(_, v)| v.into_owned());
        let return_url = match self.wanted_return(
            ctx,
            headers,
            requested.as_deref().unwrap_or(""),
            "The address to return to is not a service of this proxy; log in to see your services.",
        ) {
            Ok(url) => url,
            Err(refused) => return *refused,
        };
        if let Some(session) = self.portal_session(headers, ctx.secure()) {
            return self.send_back(&session, return_url.as_ref(), Vec::new());
        }
        // The YTsaurus UI's cookie (or a token header) reaching this host logs in by itself.
        let mut probe = headers.clone();
        if let Presented::Credential(credential) = take_credentials(&mut probe, &self.cookie_name) {
            if let Ok(user) = self.gate.identify(&credential, peer).await {
                return self.start_session(ctx, &user, return_url.as_ref());
            }
        }
        self.login_form(
            ctx,
            headers,
            return_url.as_ref().map(|u| u.as_str()),
            None,
            None,
            StatusCode::OK,
        )
    }

    async fn login_post(
        &self,
        ctx: &Ctx,
        headers: &HeaderMap,
        form: &[(String, String)],
        peer: IpAddr,
    ) -> Response<ProxyBody> {
        let field = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        let return_url = match self.wanted_return(
            ctx,
            headers,
            field("return"),
            "The address to return to is not a service of this proxy.",
        ) {
            Ok(url) => url,
            Err(refused) => return *refused,
        };
        let nonce = cookie(headers, CSRF_COOKIE, ctx.secure()).unwrap_or_default();
        if !ctx.same_origin(headers) || !self.sessions.csrf_ok(field("csrf"), &nonce) {
            tracing::info!("portal login refused: the form's anti-forgery check failed");
            return self.login_form(
                ctx,
                headers,
                return_url.as_ref().map(|u| u.as_str()),
                Some("The login form expired or was not sent from this page; please try again."),
                None,
                StatusCode::FORBIDDEN,
            );
        }
        let token = field("token").trim();
        let error = if token.is_empty() {
            "Enter a token.".to_string()
        } else if token.len() > crate::auth::credentials::MAX_SECRET_LEN
            || !token.bytes().all(|b| b.is_ascii_graphic())
        {
            "That is not a YTsaurus token.".to_string()
        } else {
            let credential = Credential::OAuth(Secret::new(token.to_string()));
            match self.gate.identify(&credential, peer).await {
                Ok(user) => return self.start_session(ctx, &user, return_url.as_ref()),
                Err(Refusal::Unauthenticated { reason, .. }) => {
                    format!("The cluster did not accept this token: {reason}.")
                }
                Err(Refusal::Limited { .. }) => {
                    "Too many login attempts; retry in a few seconds.".to_string()
                }
                Err(_) => "The cluster cannot check the token right now; retry later.".to_string(),
            }
        };
        self.login_form(
            ctx,
            headers,
            return_url.as_ref().map(|u| u.as_str()),
            Some(&error),
            None,
            StatusCode::UNAUTHORIZED,
        )
    }

    async fn logout(
        &self,
        ctx: &Ctx,
        headers: &HeaderMap,
        form: &[(String, String)],
    ) -> Response<ProxyBody> {
        let csrf = form
            .iter()
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        let Some(session) = self.portal_session(headers, ctx.secure()) else {
            return self.login_form(
                ctx,
                headers,
                None,
                None,
                Some("You are logged out."),
                StatusCode::OK,
            );
        };
        if !ctx.same_origin(headers) || !self.sessions.csrf_ok(csrf, &session.sid) {
            return with_page_headers(local_answer(
                CallerKind::Browser,
                StatusCode::FORBIDDEN,
                "the logout form was not sent from this portal's page",
                None,
            ));
        }
        self.sessions.revoke(&session);
        tracing::info!(user = %session.user, "portal logout");
        if let Some(shared) = &self.shared {
            let published =
                tokio::time::timeout(ACL_TIMEOUT, shared.publish(&session.sid, session.exp)).await;
            if !matches!(published, Ok(Ok(()))) {
                tracing::warn!(
                    "cannot record a logout for the other replicas; they accept the session's service cookies until those expire"
                );
            }
        }
        let mut response = self.login_form(
            ctx,
            headers,
            None,
            None,
            Some("You are logged out, on every service of this proxy."),
            StatusCode::OK,
        );
        response
            .headers_mut()
            .append(header::SET_COOKIE, ctx.clear_cookie(PORTAL_COOKIE));
        response
    }

    /// A new session for `user`: its cookie, and the browser sent back (or to the landing
    /// page).
    fn start_session(
        &self,
        ctx: &Ctx,
        user: &str,
        return_url: Option<&url::Url>,
    ) -> Response<ProxyBody> {
        let (value, claims) = self.sessions.new_portal_session(user);
        tracing::info!(%user, "portal login");
        let set = ctx.set_cookie(
            PORTAL_COOKIE,
            &value,
            self.sessions.ttls.portal.as_secs(),
            "Lax",
        );
        self.send_back(&claims, return_url, vec![set])
    }

    /// 303 to `return_url` through its host's ticket path, or to the landing page.
    fn send_back(
        &self,
        session: &Claims,
        return_url: Option<&url::Url>,
        cookies: Vec<HeaderValue>,
    ) -> Response<ProxyBody> {
        let location = match return_url {
            Some(url) => {
                let host = authority(url);
                let ticket = self.sessions.ticket(session, &host);
                let to = match url.query() {
                    Some(q) => format!("{}?{q}", url.path()),
                    None => url.path().to_string(),
                };
                let query: String = form_urlencoded::Serializer::new(String::new())
                    .append_pair("ticket", &ticket)
                    .append_pair("to", &to)
                    .finish();
                format!("{}://{host}{SESSION_PATH}?{query}", url.scheme())
            }
            None => "/".to_string(),
        };
        let mut response = redirect(StatusCode::SEE_OTHER, &location);
        for c in cookies {
            response.headers_mut().append(header::SET_COOKIE, c);
        }
        response
    }

    /// The login page (its CSRF cookie set when the browser has none).
    fn login_form(
        &self,
        ctx: &Ctx,
        headers: &HeaderMap,
        return_url: Option<&str>,
        error: Option<&str>,
        notice: Option<&str>,
        status: StatusCode,
    ) -> Response<ProxyBody> {
        let existing = cookie(headers, CSRF_COOKIE, ctx.secure())
            .filter(|n| n.len() == 32 && n.bytes().all(|b| b.is_ascii_hexdigit()));
        let nonce = existing.clone().unwrap_or_else(random_id);
        let csrf = self.sessions.csrf_token(&nonce);
        let page = pages::login(&pages::Login {
            return_url,
            csrf: &csrf,
            login_url: self.login_url.as_deref(),
            cookie_name: &self.cookie_name,
            error,
            notice,
        });
        let mut response = html_response(status, page);
        if existing.is_none() {
            response.headers_mut().append(
                header::SET_COOKIE,
                ctx.set_cookie(
                    CSRF_COOKIE,
                    &nonce,
                    self.sessions.ttls.csrf.as_secs(),
                    "Strict",
                ),
            );
        }
        response
    }

    /// The valid portal session the request carries.
    fn portal_session(&self, headers: &HeaderMap, secure: bool) -> Option<Claims> {
        all_cookies(headers, PORTAL_COOKIE, secure)
            .into_iter()
            .find_map(|v| self.sessions.verify(Kind::Portal, &v, "").ok())
    }

    /// The `return` address a login asks for (`raw`, empty for none), or the login form
    /// refusing it with `why` when it is not a service of this proxy.
    fn wanted_return(
        &self,
        ctx: &Ctx,
        headers: &HeaderMap,
        raw: &str,
        why: &str,
    ) -> Result<Option<url::Url>, Box<Response<ProxyBody>>> {
        if raw.is_empty() {
            return Ok(None);
        }
        match self.checked_return(raw) {
            Some(url) => Ok(Some(url)),
            None => Err(Box::new(self.login_form(
                ctx,
                headers,
                None,
                Some(why),
                None,
                StatusCode::BAD_REQUEST,
            ))),
        }
    }

    /// `raw` as a URL of a service this proxy routes (http or https, no user info); `None`
    /// for anything else, so the portal never redirects elsewhere.
    fn checked_return(&self, raw: &str) -> Option<url::Url> {
        let mut url = url::Url::parse(raw).ok()?;
        if !matches!(url.scheme(), "http" | "https")
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return None;
        }
        url.set_fragment(None);
        let host = authority(&url);
        let snapshot = self.table.current();
        let key = route_request(&RoutingHeaders::default(), Some(&host), &self.base_domain).ok()?;
        snapshot.route(&key)?;
        Some(url)
    }

    /// The answer on a service host's ticket path: the host's session cookie and a redirect
    /// to the page asked for, or a page saying the link is spent.
    pub fn redeem(
        &self,
        parts: &http::request::Parts,
        route: &Route,
        scheme: &str,
    ) -> Response<ProxyBody> {
        let ctx = Ctx::new(
            &parts.headers,
            parts.uri.authority().map(|a| a.as_str()),
            self.scheme.unwrap_or(scheme),
        );
        let mut ticket = String::new();
        let mut to = String::from("/");
        for (k, v) in form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()) {
            match &*k {
                "ticket" => ticket = v.into_owned(),
                "to" => to = v.into_owned(),
                _ => {}
            }
        }
        // Only a path on this host: never `//other` or `/\other`, which browsers treat as
        // another host.
        if !to.starts_with('/') || to.starts_with("//") || to.starts_with("/\\") {
            to = "/".to_string();
        }
        match self.sessions.redeem_ticket(&ticket, &ctx.host) {
            Ok(claims) => {
                let (value, max_age) = self.sessions.service_session(&claims, &route.domain);
                let mut response = redirect(StatusCode::SEE_OTHER, &to);
                // The ticket's URL travels nowhere, not even to the service's own pages.
                response.headers_mut().insert(
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("no-referrer"),
                );
                response.headers_mut().append(
                    header::SET_COOKIE,
                    ctx.set_cookie(SERVICE_COOKIE, &value, max_age, "Lax"),
                );
                response
            }
            Err(invalid) => {
                tracing::info!(service = %route.key, %invalid, "a service session ticket was refused");
                let login =
                    self.login_href(&ctx, Some(&format!("{}://{}{to}", ctx.scheme, ctx.host)));
                html_response(
                    StatusCode::UNAUTHORIZED,
                    pages::unauthorized(
                        &format!("the login link is not valid here ({invalid})"),
                        &login,
                    ),
                )
            }
        }
    }

    /// The answer for a refused request on a service domain: browsers navigating without
    /// credentials go to the portal; other browser requests get styled pages; programs and
    /// gRPC get the gate's own answer.
    pub async fn refusal(
        &self,
        refusal: Refusal,
        caller: CallerKind,
        parts: &http::request::Parts,
        route: &Route,
        scheme: &str,
    ) -> Response<ProxyBody> {
        if caller != CallerKind::Browser {
            return refusal.into_response(caller);
        }
        let ctx = Ctx::new(
            &parts.headers,
            parts.uri.authority().map(|a| a.as_str()),
            self.scheme.unwrap_or(scheme),
        );
        match &refusal {
            Refusal::Unauthenticated { reason, .. } => {
                let target = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                let here = format!("{}://{}{target}", ctx.scheme, ctx.host);
                let login = self.login_href(&ctx, Some(&here));
                let navigation = matches!(parts.method, Method::GET | Method::HEAD)
                    && !parts.headers.contains_key(header::UPGRADE);
                let mut response = if navigation {
                    redirect(StatusCode::FOUND, &login)
                } else {
                    html_response(
                        StatusCode::UNAUTHORIZED,
                        pages::unauthorized(reason, &login),
                    )
                };
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("OAuth realm=\"YTsaurus\""),
                );
                response
            }
            Refusal::Forbidden { user } => {
                let (acl, owner) = self.operation_acl(&route.key.operation_id).await;
                html_response(
                    StatusCode::FORBIDDEN,
                    pages::forbidden(
                        user,
                        &route.key.operation_id,
                        &route.key.task_name,
                        &route.key.service,
                        acl.as_deref(),
                        owner.as_deref(),
                        &self.portal_href(&ctx),
                    ),
                )
            }
            Refusal::Unavailable { .. } | Refusal::Unsupported { .. } | Refusal::Limited { .. } => {
                // The gate's answer (status, Retry-After), with a page that says it is the
                // access check, not the job, that cannot answer.
                let status = refusal.status();
                let mut response = refusal.into_response(CallerKind::Other);
                let message = std::mem::replace(response.body_mut(), full_body(Bytes::new()));
                let message = message
                    .collect()
                    .await
                    .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
                    .unwrap_or_default();
                let page = crate::html::status_page_with(
                    status,
                    "Access cannot be checked right now",
                    "The proxy asks the cluster whether you may read the operation behind this \
                     service, and cannot get an answer now. Retry in a few seconds.",
                    &message,
                    "<div class=\"actions\"><a class=\"button\" id=\"retry\" href=\"\">Retry</a></div>",
                );
                *response.body_mut() = full_body(page);
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                with_page_headers(response)
            }
        }
    }

    /// A browser's 404 on a service domain (`None` for other callers: their answer stays).
    pub fn not_found(
        &self,
        caller: CallerKind,
        headers: &HeaderMap,
        authority: Option<&str>,
        scheme: &str,
    ) -> Option<Response<ProxyBody>> {
        if caller != CallerKind::Browser {
            return None;
        }
        let ctx = Ctx::new(headers, authority, self.scheme.unwrap_or(scheme));
        let name = host_name(&ctx.host);
        let label = name
            .strip_suffix(&self.base_domain)
            .and_then(|l| l.strip_suffix('.'))
            .unwrap_or(name);
        let gone = self.recent.gone(label);
        let page = pages::not_found(
            name,
            gone.as_ref().map(|g| {
                (
                    g.route.key.operation_id.as_str(),
                    g.route.key.task_name.as_str(),
                    g.route.key.service.as_str(),
                    g.at,
                )
            }),
            &self.portal_href(&ctx),
        );
        Some(html_response(StatusCode::NOT_FOUND, page))
    }

    /// Each operation's state (`running`, ...) as the cluster tells it, within the ACL
    /// timeout; operations it did not answer for are left out.
    async fn operation_states(
        &self,
        operations: &std::collections::HashSet<String>,
    ) -> std::collections::HashMap<String, String> {
        let Some(cluster) = &self.cluster else {
            return Default::default();
        };
        let mut asks = Vec::with_capacity(operations.len());
        for op in operations {
            asks.push(async move {
                let node = tokio::time::timeout(ACL_TIMEOUT, cluster.get_operation(op, &["state"]))
                    .await
                    .ok()?
                    .ok()?;
                let state = node.get("state")?.as_str()?.to_string();
                Some((op.clone(), state))
            });
        }
        futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// The operation's ACL as (action, subjects, permissions) rows, and who started it.
    async fn operation_acl(
        &self,
        operation_id: &str,
    ) -> (Option<Vec<(String, String, String)>>, Option<String>) {
        let Some(cluster) = &self.cluster else {
            return (None, None);
        };
        let fetched = tokio::time::timeout(
            ACL_TIMEOUT,
            cluster.get_operation(operation_id, &["runtime_parameters", "authenticated_user"]),
        )
        .await;
        let Ok(Ok(node)) = fetched else {
            return (None, None);
        };
        let owner = node
            .get("authenticated_user")
            .and_then(|u| u.as_str())
            .map(str::to_string);
        let join = |n: Option<&yson::Node>| {
            n.and_then(|l| l.as_list())
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|i| i.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default()
        };
        let acl = node
            .pointer("/runtime_parameters/acl")
            .and_then(|a| a.as_list())
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        (
                            e.get("action")
                                .and_then(|a| a.as_str())
                                .unwrap_or("allow")
                                .to_string(),
                            join(e.get("subjects")),
                            join(e.get("permissions")),
                        )
                    })
                    .collect()
            });
        (acl.or(Some(Vec::new())), owner)
    }

    /// The portal's login URL, returning to `here` (same scheme and port as the request).
    fn login_href(&self, ctx: &Ctx, here: Option<&str>) -> String {
        let mut href = format!("{}login", self.portal_href(ctx));
        if let Some(here) = here {
            href.push('?');
            href.push_str(
                &form_urlencoded::Serializer::new(String::new())
                    .append_pair("return", here)
                    .finish(),
            );
        }
        href
    }

    /// The portal's landing page URL, on the request's scheme and port.
    fn portal_href(&self, ctx: &Ctx) -> String {
        let primary = self
            .hosts
            .first()
            .map(String::as_str)
            .unwrap_or(&self.base_domain);
        format!("{}://{primary}{}/", ctx.scheme, ctx.port_suffix())
    }
}

/// What a request says about where it was sent.
struct Ctx {
    scheme: &'static str,
    /// `Host` as the browser sent it (port included), lowercase.
    host: String,
}

impl Ctx {
    fn new(headers: &HeaderMap, authority: Option<&str>, scheme: &str) -> Ctx {
        let host = authority
            .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
            .unwrap_or("")
            .to_ascii_lowercase();
        Ctx {
            scheme: if scheme == "https" { "https" } else { "http" },
            host,
        }
    }

    fn secure(&self) -> bool {
        self.scheme == "https"
    }

    /// `:port` when the request named one.
    fn port_suffix(&self) -> String {
        match self.host.rsplit_once(':') {
            Some((_, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
                format!(":{port}")
            }
            _ => String::new(),
        }
    }

    /// Whether the request's `Origin` (when sent: browsers send it on every POST) is this
    /// host's.
    fn same_origin(&self, headers: &HeaderMap) -> bool {
        match headers.get(header::ORIGIN) {
            None => true,
            Some(origin) => origin
                .to_str()
                .is_ok_and(|o| o.eq_ignore_ascii_case(&format!("{}://{}", self.scheme, self.host))),
        }
    }

    /// A host-only cookie: `__Host-` prefixed and `Secure` under TLS.
    fn set_cookie(&self, name: &str, value: &str, max_age: u64, same_site: &str) -> HeaderValue {
        let (prefix, secure) = if self.secure() {
            (SECURE_PREFIX, "; Secure")
        } else {
            ("", "")
        };
        HeaderValue::from_str(&format!(
            "{prefix}{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite={same_site}{secure}"
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("tp_invalid=; Max-Age=0"))
    }

    fn clear_cookie(&self, name: &str) -> HeaderValue {
        self.set_cookie(name, "", 0, "Lax")
    }
}

/// The host name without a port.
fn host_name(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && !name.contains(':') =>
        {
            name
        }
        _ => host,
    }
}

/// `host[:port]` of a URL as a browser sends it in `Host`.
fn authority(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or("").to_ascii_lowercase();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    }
}

/// The value of the cookie `name`, the first one (see [`all_cookies`]).
fn cookie(headers: &HeaderMap, name: &str, secure: bool) -> Option<String> {
    all_cookies(headers, name, secure).into_iter().next()
}

/// The values of the cookie `name`: under TLS only `__Host-<name>`, which browsers accept only
/// from this very host over TLS; a sibling host (a job's page) can set a plain `<name>` for the
/// parent domain from script, and such a tossed cookie must not count.
fn all_cookies(headers: &HeaderMap, name: &str, secure: bool) -> Vec<String> {
    let wanted = if secure {
        format!("{SECURE_PREFIX}{name}")
    } else {
        name.to_string()
    };
    let mut values = Vec::new();
    for header in headers.get_all(header::COOKIE) {
        let Ok(text) = header.to_str() else {
            continue;
        };
        for pair in text.split(';') {
            if let Some((n, v)) = pair.trim().split_once('=') {
                if n.trim() == wanted {
                    values.push(v.trim().trim_matches('"').to_string());
                }
            }
        }
    }
    values
}

async fn read_form<B>(body: B) -> Result<Vec<(String, String)>, String>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<crate::answer::BoxError>,
{
    let limited = http_body_util::Limited::new(body, MAX_FORM);
    let bytes = limited
        .collect()
        .await
        .map_err(|e| format!("cannot read the form: {e}"))?
        .to_bytes();
    Ok(form_urlencoded::parse(&bytes)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect())
}

fn redirect(status: StatusCode, location: &str) -> Response<ProxyBody> {
    let mut response = Response::new(full_body(Bytes::new()));
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    with_page_headers(response)
}

fn html_response(status: StatusCode, page: String) -> Response<ProxyBody> {
    let mut response = Response::new(full_body(page));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    with_page_headers(response)
}

/// Headers of every portal answer: never cached, never framed, a referrer only within the
/// origin (`no-referrer` would make browsers send `Origin: null` with the forms, which the
/// CSRF check refuses), scripts and styles only inline.
fn with_page_headers(mut response: Response<ProxyBody>) -> Response<ProxyBody> {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{Endpoint, Protocol, RouteTimeouts, RoutingSnapshot, ServiceSpec};

    /// One HTTP service (`web` of task `main` of `op-1`) with one endpoint.
    pub(super) fn web_spec() -> ServiceSpec {
        ServiceSpec {
            operation_id: "op-1".into(),
            task_name: "main".into(),
            service: "web".into(),
            protocol: Protocol::Http,
            endpoints: vec![Endpoint::new("127.0.0.1", 1)],
            operation_start_time: None,
            timeouts: RouteTimeouts::default(),
            sticky: None,
        }
    }

    fn portal() -> (Arc<Portal>, String) {
        let table = Arc::new(RoutingTable::new("tp.test"));
        table.publish(RoutingSnapshot::build("tp.test", [web_spec()]));
        let domain = table.load().routes()[0].domain.clone();
        let config = PortalConfig {
            hosts: vec!["task-proxy.tp.test".into()],
            key_file: None,
            scheme: None,
            session_ttl: Duration::from_secs(3600),
            service_session_ttl: Duration::from_secs(600),
        };
        let portal = Portal::new(
            &config,
            "tp.test",
            Gate::disabled(),
            None,
            table,
            None,
            "//sys/task_proxies",
        )
        .expect("portal");
        (portal, domain)
    }

    #[test]
    fn only_routed_service_urls_are_return_addresses() {
        let (portal, domain) = portal();
        for good in [
            format!("http://{domain}/"),
            format!("https://{domain}:8443/a?b=c#frag"),
            format!("http://{}/x", domain.to_uppercase()),
        ] {
            let url = portal
                .checked_return(&good)
                .unwrap_or_else(|| panic!("{good}"));
            assert!(url.fragment().is_none());
        }
        for bad in [
            "http://evil.example/".to_string(),
            "http://tp.test/".to_string(),
            "http://task-proxy.tp.test/".to_string(),
            "http://0badc0de.tp.test/".to_string(),
            format!("http://{domain}.evil.example/"),
            format!("ftp://{domain}/"),
            format!("http://user:pw@{domain}/"),
            format!("//{domain}/"),
            "/relative".to_string(),
            "javascript:alert(1)".to_string(),
        ] {
            assert!(portal.checked_return(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn portal_hosts_and_cookies() {
        let (portal, domain) = portal();
        let none = RoutingHeaders::default();
        assert!(portal.owns(Some("tp.test:8080"), &none));
        assert!(portal.owns(Some("TASK-PROXY.tp.test"), &none));
        assert!(!portal.owns(Some(&domain), &none));
        assert!(!portal.owns(Some("other.example"), &none));
        let routed = RoutingHeaders::from_pairs([(&b"x-yt-taskproxy-id"[..], &b"abc"[..])]);
        assert!(!portal.owns(Some("tp.test"), &routed));

        let tls = Ctx::new(&HeaderMap::new(), Some("tp.test:8443"), "https");
        let cookie = tls.set_cookie(PORTAL_COOKIE, "v", 60, "Lax");
        assert_eq!(
            cookie,
            "__Host-tp_portal=v; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure"
        );
        assert_eq!(tls.port_suffix(), ":8443");
        let plain = Ctx::new(&HeaderMap::new(), Some("tp.test"), "http");
        assert_eq!(
            plain.set_cookie(PORTAL_COOKIE, "v", 60, "Lax"),
            "tp_portal=v; Path=/; Max-Age=60; HttpOnly; SameSite=Lax"
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!plain.same_origin(&headers));
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://tp.test"));
        assert!(plain.same_origin(&headers));
        // Under TLS a cookie tossed without the prefix (from a sibling host's script) is not
        // the portal's.
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("tp_portal=tossed; __Host-tp_portal=own"),
        );
        assert_eq!(all_cookies(&headers, PORTAL_COOKIE, true), vec!["own"]);
        assert_eq!(all_cookies(&headers, PORTAL_COOKIE, false), vec!["tossed"]);
        assert_eq!(host_name("tp.test:80"), "tp.test");
        assert_eq!(host_name("tp.test"), "tp.test");
    }
}
