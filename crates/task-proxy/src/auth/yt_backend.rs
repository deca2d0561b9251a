//! [`AuthBackend`] over the cluster's HTTP API (`yt_client::YtClient`): `whoami` with the
//! caller's credential, `check_operation_permission(op, user, read)` with the robot token the
//! client was configured with.

use super::backend::{AuthBackend, BackendError};
use super::credentials::Credential;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use yt_client::{codes, Credentials, Error, YtClient};

/// Why auth cannot work on a cluster without `check_operation_permission`.
pub const NO_PERMISSION_COMMAND: &str = "the cluster has no check_operation_permission command \
    (its HTTP proxy answers \"Command is not registered\"); auth needs a YTsaurus server that \
    has it (a newer release), or --auth-enabled=false";

/// Whether the cluster's HTTP proxy has `check_operation_permission` (asked at start-up).
pub async fn probe_permission_command(client: &YtClient) -> Result<(), BackendError> {
    match client.has_command("check_operation_permission").await {
        Ok(true) => Ok(()),
        Ok(false) => Err(BackendError::Unsupported(NO_PERMISSION_COMMAND.to_string())),
        Err(e) => Err(unavailable(&e)),
    }
}

impl AuthBackend for YtClient {
    fn whoami<'a>(
        &'a self,
        credential: &'a Credential,
    ) -> BoxFuture<'a, Result<String, BackendError>> {
        async move {
            let credentials = match credential {
                Credential::OAuth(token) => Credentials::OAuth(token.expose().to_string()),
                Credential::Bearer(token) => Credentials::Bearer(token.expose().to_string()),
                Credential::Cookie { name, value } => Credentials::Cookie {
                    name: name.clone(),
                    value: value.expose().to_string(),
                },
            };
            YtClient::whoami(self, &credentials)
                .await
                .map_err(|e| whoami_error(credential, e))
        }
        .boxed()
    }

    fn check_read<'a>(
        &'a self,
        operation_id: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        async move {
            self.check_operation_permission(operation_id, user, "read")
                .await
                .map_err(|e| {
                    if e.is_unregistered_command() {
                        BackendError::Unsupported(NO_PERMISSION_COMMAND.to_string())
                    } else {
                        unavailable(&e)
                    }
                })
        }
        .boxed()
    }
}

/// 401/403 and other definitive client errors of `whoami` reject the credential, with a
/// reason made from the error codes (never from the cluster's text, which is not shown to
/// callers); everything else (timeouts, transport, 5xx, 429, banned or overloaded proxies,
/// undecodable answers) means the cluster is unavailable.
fn whoami_error(credential: &Credential, error: Error) -> BackendError {
    match &error {
        Error::Unauthenticated(text) => BackendError::Rejected(rejection_reason(credential, text)),
        Error::Yt { status, error: yt }
            if yt.is_authentication_error()
                || ((400..500).contains(status) && !matches!(status, 408 | 429)) =>
        {
            BackendError::Rejected(rejection_reason(credential, &yt.to_string()))
        }
        _ => unavailable(&error),
    }
}

fn unavailable(error: &Error) -> BackendError {
    BackendError::Unavailable {
        kind: error.failure_kind(),
        reason: error.to_string(),
    }
}

/// Why the cluster refused `credential`, from the codes in its error (`text` is the error as
/// shown by `yt_client`: `message (code N): ...`).
fn rejection_reason(credential: &Credential, text: &str) -> String {
    let has = |code: i64| text.contains(&format!("(code {code})"));
    if matches!(credential, Credential::Bearer(_))
        && text.contains("Malformed Authorization header")
    {
        return "the cluster does not accept Bearer tokens (its HTTP proxy takes only \
                `Authorization: OAuth <token>`); send the token with the OAuth scheme"
            .to_string();
    }
    if has(codes::INVALID_CREDENTIALS) {
        return format!(
            "the cluster says these credentials ({}) are invalid (code {})",
            credential.kind(),
            codes::INVALID_CREDENTIALS
        );
    }
    if has(codes::INVALID_CSRF_TOKEN) {
        return format!(
            "the cluster refused the CSRF token (code {})",
            codes::INVALID_CSRF_TOKEN
        );
    }
    if has(codes::AUTHENTICATION_ERROR) {
        return format!(
            "the cluster could not authenticate these credentials ({}) (code {})",
            credential.kind(),
            codes::AUTHENTICATION_ERROR
        );
    }
    format!(
        "the cluster does not accept these credentials ({})",
        credential.kind()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::credentials::{take_credentials, Presented};
    use yt_client::YtError;

    fn credential(header: &str) -> Credential {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, header.parse().unwrap());
        match take_credentials(&mut headers, "YTCypressCookie") {
            Presented::Credential(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invalid_credentials_reject_with_a_reason_and_bans_are_unavailability() {
        let oauth = credential("OAuth t");
        let bearer = credential("Bearer t");
        let invalid = YtError::new(111, "Malformed Authorization header");
        let rejected = whoami_error(&bearer, Error::Unauthenticated(invalid.to_string()));
        assert!(
            matches!(&rejected, BackendError::Rejected(r) if r.contains("Bearer")),
            "{rejected:?}"
        );
        let rejected = whoami_error(
            &oauth,
            Error::Yt {
                status: 503,
                error: YtError::new(111, "Invalid token"),
            },
        );
        assert!(
            matches!(&rejected, BackendError::Rejected(r) if r.contains("invalid (code 111)")),
            "{rejected:?}"
        );
        for code in [105, 2100, 115, 118] {
            let answer = whoami_error(
                &oauth,
                Error::Yt {
                    status: 503,
                    error: YtError::new(code, "x"),
                },
            );
            assert!(matches!(answer, BackendError::Unavailable { .. }), "{code}");
        }
    }
}
