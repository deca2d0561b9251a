//! Auth: who the caller is and whether they may read the operation behind a service.
//!
//! The data plane calls [`Gate::admit`] for every request after routing it. The gate removes
//! the caller's YTsaurus credentials from the request (jobs never see them) and either admits
//! the request or refuses it with a [`Refusal`] that the data plane renders.

use crate::answer::{local_answer, CallerKind, ProxyBody};
use crate::routing::Route;
use http::{Response, StatusCode};

/// Who was admitted, for the access log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admitted {
    /// The caller's login when auth is on.
    pub user: Option<String>,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials, or credentials the cluster does not accept (401).
    Unauthenticated { reason: String },
    /// The user may not read the operation (403).
    Forbidden { user: String },
    /// The cluster failed while deciding and no recent decision is cached (503).
    Unavailable { retry_after_seconds: u32 },
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Refusal::Forbidden { .. } => StatusCode::FORBIDDEN,
            Refusal::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The answer for the caller.
    pub fn into_response(self, caller: CallerKind) -> Response<ProxyBody> {
        let status = self.status();
        let message = match &self {
            Refusal::Unauthenticated { reason } => format!("authentication required: {reason}"),
            Refusal::Forbidden { user } => format!("user {user} may not read this operation"),
            Refusal::Unavailable { .. } => {
                "the cluster cannot check access right now; retry later".to_string()
            }
        };
        let mut response = local_answer(caller, status, &message, None);
        if let Refusal::Unavailable {
            retry_after_seconds,
        } = self
        {
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from(retry_after_seconds),
            );
        }
        response
    }
}

/// The auth gate in front of every service. (Auth on: being built; for now only off.)
#[derive(Debug, Clone, Default)]
pub struct Gate {}

impl Gate {
    /// A gate that admits everyone (`--auth-enabled=false`).
    pub fn disabled() -> Gate {
        Gate {}
    }

    /// Decides on a routed request; removes the caller's YTsaurus credentials from `parts`.
    pub async fn admit(
        &self,
        _parts: &mut http::request::Parts,
        _route: &Route,
    ) -> Result<Admitted, Refusal> {
        Ok(Admitted::default())
    }
}
