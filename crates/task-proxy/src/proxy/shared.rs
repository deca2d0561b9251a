//! What every worker shares: the state each request reads ([`Shared`]: routing table,
//! balancer, gate, limits, TLS to jobs, counters), a client connection's place under the connection cap
//! ([`ConnSlot`]) and the cheap clock idle timeouts use ([`monotonic_ms`]).

use super::balance::Balancer;
use super::metrics::ProxyMetrics;
use super::sessions::LiveSessions;
use crate::auth::Gate;
use crate::config::Limits;
use crate::routing::RoutingTable;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// State every worker reads.
#[derive(Debug)]
pub struct Shared {
    pub table: Arc<RoutingTable>,
    pub balancer: Arc<Balancer>,
    pub gate: Gate,
    /// The browser portal (login, sessions, pages), when on.
    pub portal: Option<Arc<crate::portal::Portal>>,
    pub limits: Limits,
    /// TLS to the jobs of `https` services.
    pub job_tls: Arc<super::job_tls::JobTls>,
    pub metrics: Arc<ProxyMetrics>,
    /// Live long sessions, registered while the re-checker runs (`--session-recheck-interval`).
    pub sessions: Option<Arc<LiveSessions>>,
    /// Fired on SIGTERM/SIGINT: stop accepting, finish what is in flight.
    pub shutdown: CancellationToken,
}

/// A client connection's place under `--max-connections`: the count goes down when the last
/// holder drops it. The connection's task holds it, and so does a tunnel the connection turned
/// into (hyper lets go of an upgraded connection, but its socket is still open).
#[derive(Debug)]
pub struct ConnSlot(pub(super) Arc<Shared>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0
            .metrics
            .active_connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Milliseconds since the process's first call; a cheap monotonic clock for idle tracking.
pub fn monotonic_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}
