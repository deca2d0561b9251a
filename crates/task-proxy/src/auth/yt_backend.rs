//! [`AuthBackend`] over the cluster's HTTP API (`yt_client::YtClient`): `whoami` with the
//! caller's credential, `check_operation_permission(op, user, read)` with the robot token the
//! client was configured with.

use super::backend::{AuthBackend, BackendError};
use super::credentials::Credential;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use yt_client::{Credentials, Error, YtClient};

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
                .map_err(whoami_error)
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
                .map_err(|e| BackendError::Unavailable(e.to_string()))
        }
        .boxed()
    }
}

/// 401/403 and other definitive client errors of `whoami` reject the credential; everything
/// else (timeouts, transport, 5xx, 429, undecodable answers) means the cluster is unavailable.
fn whoami_error(error: Error) -> BackendError {
    match &error {
        Error::Unauthenticated(_) => BackendError::Rejected(error.to_string()),
        Error::Yt { status, .. } if (400..500).contains(status) && !matches!(status, 408 | 429) => {
            BackendError::Rejected(error.to_string())
        }
        _ => BackendError::Unavailable(error.to_string()),
    }
}
