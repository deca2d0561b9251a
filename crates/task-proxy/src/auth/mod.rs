//! Auth: who the caller is and whether they may read the operation behind a service.
//!
//! The data plane calls [`Gate::admit`] for every request after routing it. The gate removes
//! the caller's YTsaurus credentials from the request (jobs never see them) and either admits
//! the request or refuses it with a [`Refusal`] that the data plane renders.
//!
//! - [`credentials`]: parsing the `Authorization` header and the auth cookie, and removing them;
//! - [`static_skip`]: the `/static` exemption of `ui` services, with path normalization;
//! - [`cache`]: bounded TTL caches with a grace period and collapsed look-ups;
//! - [`front`]: a per-thread copy of fresh allow decisions for the hot path;
//! - [`backend`]: the cluster calls (`whoami`, `check_operation_permission`) behind a trait,
//!   implemented for `yt_client::YtClient`;
//! - [`gate`]: the decision itself and its configuration;
//! - [`limit`]: limits on the cluster look-ups unknown credentials cause;
//! - [`login_page`]: the page browsers get instead of a bare 401 when the portal is off;
//! - [`identity`]: the signed identity (user header and JWT) jobs get, and its public keys;
//! - [`session`]: the portal's signed browser sessions and tickets, which the gate accepts;
//! - [`metrics`]: decisions, cache look-ups, cluster latency.

pub mod backend;
pub mod cache;
pub mod credentials;
pub mod front;
pub mod gate;
pub mod identity;
pub mod limit;
pub mod login_page;
pub mod metrics;
pub mod session;
pub mod static_skip;
mod yt_backend;

pub use backend::{AuthBackend, BackendError};
pub use credentials::{Credential, Presented, Secret};
pub use gate::{AuthConfig, AuthConfigError, Gate, RecheckError, DEFAULT_COOKIE_NAME};
pub use limit::LookupLimits;
pub use static_skip::{Fetch, StaticSkip};
pub use yt_backend::{probe_permission_command, NO_PERMISSION_COMMAND};

use crate::answer::{local_answer, CallerKind, ProxyBody};
use http::{HeaderValue, Response, StatusCode};
use std::sync::Arc;

/// Who was admitted, for the access log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admitted {
    /// The caller's login when auth is on.
    pub user: Option<String>,
}

/// How a browser is told to log in (rendered into the 401 page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginHint {
    /// `--auth-login-url`.
    pub login_url: Option<String>,
    pub cookie_name: String,
}

/// Which look-up limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    /// The client address's share (429).
    Client,
    /// The gate's share for all clients (503).
    Overall,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials, or credentials the cluster does not accept (401). `login` makes the
    /// browser answer a login page.
    Unauthenticated {
        reason: String,
        login: Option<Arc<LoginHint>>,
    },
    /// The user may not read the operation (403).
    Forbidden { user: String },
    /// The cluster failed while deciding and no recent decision is cached (503).
    Unavailable { retry_after_seconds: u32 },
    /// The cluster cannot decide at all (it lacks a command auth needs); 503 with the reason.
    Unsupported { reason: Arc<str> },
    /// The credential is unknown and checking it would exceed a look-up limit: 429 for the
    /// client's own limit, 503 for the overall one.
    Limited {
        scope: LimitScope,
        retry_after_seconds: u32,
    },
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Refusal::Forbidden { .. } => StatusCode::FORBIDDEN,
            Refusal::Unavailable { .. } | Refusal::Unsupported { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Refusal::Limited {
                scope: LimitScope::Client,
                ..
            } => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Limited {
                scope: LimitScope::Overall,
                ..
            } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The answer for the caller: trailers-only gRPC status, an HTML page for browsers (the
    /// login page for 401), plain text otherwise.
    pub fn into_response(self, caller: CallerKind) -> Response<ProxyBody> {
        let status = self.status();
        let message = match &self {
            Refusal::Unauthenticated { reason, .. } => format!("authentication required: {reason}"),
            Refusal::Forbidden { user } => format!("user {user} may not read this operation"),
            Refusal::Unavailable { .. } => {
                "the cluster cannot check access right now; retry later".to_string()
            }
            Refusal::Unsupported { reason } => format!("access cannot be checked: {reason}"),
            Refusal::Limited {
                scope: LimitScope::Client,
                ..
            } => "too many new credentials from your address to check; retry later".to_string(),
            Refusal::Limited {
                scope: LimitScope::Overall,
                ..
            } => "too many new credentials to check right now; retry later".to_string(),
        };
        let html = match (&self, caller) {
            (Refusal::Unauthenticated { reason, login }, CallerKind::Browser) => {
                Some(match login {
                    Some(hint) => {
                        login_page::render(reason, hint.login_url.as_deref(), &hint.cookie_name)
                    }
                    None => login_page::render(reason, None, DEFAULT_COOKIE_NAME),
                })
            }
            _ => None,
        };
        let mut response = local_answer(caller, status, &message, html);
        match self {
            Refusal::Unavailable {
                retry_after_seconds,
            }
            | Refusal::Limited {
                retry_after_seconds,
                ..
            } => {
                response.headers_mut().insert(
                    http::header::RETRY_AFTER,
                    HeaderValue::from(retry_after_seconds),
                );
            }
            Refusal::Unauthenticated { .. } if caller != CallerKind::Grpc => {
                response.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("OAuth realm=\"YTsaurus\""),
                );
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests;
