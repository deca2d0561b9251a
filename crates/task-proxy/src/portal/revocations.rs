//! Logouts shared by all replicas through Cypress.
//!
//! A logout revokes its session id in the process that served it at once
//! ([`crate::auth::session::Revocations`]), and records it as an empty map node
//! `<dir-path>/portal_revocations/<session id>-<until>` with the robot's client. Every replica
//! lists that directory every [`POLL`] and revokes the ids it did not know, so the session's
//! cookies are refused everywhere within one period; the node name carries everything, so one
//! `list` call per period is the whole cost. Nodes past their `until` are removed by whichever
//! replica sees them first.
//!
//! Why Cypress and not a shorter cookie lifetime alone: replicas share nothing else, and the
//! cluster is already what they all depend on; a logout must not wait for cookies to expire.

use crate::auth::session::{now_secs, Sessions};
use std::sync::Arc;
use std::time::Duration;
use yt_client::YtClient;

/// How often each replica reads the revocations.
pub const POLL: Duration = Duration::from_secs(2);

/// The Cypress side of revocations; see the module docs.
#[derive(Clone)]
pub struct SharedRevocations {
    client: YtClient,
    dir: String,
}

impl std::fmt::Debug for SharedRevocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRevocations")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// A node name `<32 hex>-<epoch seconds>` as (session id, until).
fn parse(name: &str) -> Option<(&str, u64)> {
    let (sid, until) = name.split_once('-')?;
    let hex_ok = sid.len() == 32 && sid.bytes().all(|b| b.is_ascii_hexdigit());
    hex_ok.then_some(())?;
    Some((sid, until.parse().ok()?))
}

impl SharedRevocations {
    /// Revocations under `<dir_path>/portal_revocations`.
    pub fn new(client: YtClient, dir_path: &str) -> SharedRevocations {
        SharedRevocations {
            client,
            dir: format!("{}/portal_revocations", dir_path.trim_end_matches('/')),
        }
    }

    /// Records a logout for the other replicas.
    pub async fn publish(&self, sid: &str, until: u64) -> Result<(), yt_client::Error> {
        self.client
            .create(
                "map_node",
                &format!("{}/{sid}-{until}", self.dir),
                None,
                true,
                true,
            )
            .await
    }

    /// One pass: revokes the ids listed, removes the expired nodes. Returns how many ids are
    /// in force.
    pub async fn sync(&self, sessions: &Sessions) -> Result<usize, yt_client::Error> {
        let names = match self.client.list(&self.dir).await {
            Ok(names) => names,
            // Nobody logged out yet: the directory does not exist.
            Err(e) if e.is_resolve_error() => return Ok(0),
            Err(e) => return Err(e),
        };
        let now = now_secs();
        let mut in_force = 0;
        for name in names {
            let Some((sid, until)) = parse(&name) else {
                continue;
            };
            if until > now {
                if !sessions.revocations().is_revoked(sid) {
                    sessions.revocations().revoke(sid, until);
                }
                in_force += 1;
            } else {
                let _ = self
                    .client
                    .remove(&format!("{}/{name}", self.dir), false, true)
                    .await;
            }
        }
        Ok(in_force)
    }

    /// Syncs every [`POLL`] until `stop`.
    pub async fn run(self, sessions: Arc<Sessions>, stop: tokio_util::sync::CancellationToken) {
        let mut failing = false;
        loop {
            match self.sync(&sessions).await {
                Ok(_) => failing = false,
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, dir = %self.dir, "cannot read the portal's shared logouts; retrying");
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn node_names() {
        let sid = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            parse(&format!("{sid}-1700000000")),
            Some((sid, 1_700_000_000))
        );
        for bad in ["", "x-1", &format!("{sid}-"), &format!("{sid}-x"), "0123-5"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
