//! What the gate asks the cluster: who a credential belongs to (`whoami`, with the caller's
//! credential) and whether a user may read an operation (`check_operation_permission`, with
//! the proxy's robot token). A trait, so the caches and decisions can be tested with a
//! counting fake; the real implementation wraps `yt_client::YtClient`.

use super::credentials::Credential;
use futures_util::future::BoxFuture;
use std::fmt;

/// Why the cluster gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The cluster does not accept the caller's credential (a definitive answer: 401).
    #[error("credentials rejected: {0}")]
    Rejected(String),
    /// The cluster failed or could not be reached (transient: 503 unless a cached answer is
    /// recent enough).
    #[error("cluster unavailable: {reason}")]
    Unavailable {
        /// The class of the failure, for counting.
        kind: yt_client::FailureKind,
        reason: String,
    },
    /// The cluster lacks a command the gate needs (an older server): no request can be
    /// decided until it is upgraded. The reason names the requirement.
    #[error("{0}")]
    Unsupported(String),
}

/// The cluster calls the gate makes. Implementations must not log credentials.
pub trait AuthBackend: Send + Sync + 'static {
    /// The login of the credential's owner.
    fn whoami<'a>(
        &'a self,
        credential: &'a Credential,
    ) -> BoxFuture<'a, Result<String, BackendError>>;

    /// Whether `user` has `read` on the operation.
    fn check_read<'a>(
        &'a self,
        operation_id: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<bool, BackendError>>;
}

impl fmt::Debug for dyn AuthBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthBackend")
    }
}
