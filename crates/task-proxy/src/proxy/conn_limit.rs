//! The cap on connections to one job: how many the proxy keeps open to an endpoint, busy and
//! idle together, and what happens to requests beyond it.
//!
//! One [`ConnLimit`] lives in each endpoint's state and is shared by every worker and by both
//! ways of forwarding (hyper's pools of the general path and the HTTP/1.1 relay's pool), so the
//! cap is per process: it bounds what the job sees and the descriptors the proxy spends on it,
//! whatever the number of workers (a per-worker cap would multiply with `--worker-threads` and
//! leave one worker refusing while another has room). Every connection to the job holds a
//! [`ConnPermit`] for its whole life, pooled or busy; it is given back when the connection
//! closes. A request that needs a new connection at the cap first closes an idle one anywhere
//! (in any worker's pool), then waits in a queue of bounded length for a bounded time; beyond
//! either it gets 503 with `Retry-After`. While requests wait, a connection that finishes its
//! exchange is closed rather than pooled, so its permit passes to the first waiter (in queue
//! order, whichever worker it is on). Queued and refused requests are counted for `/metrics`.
//!
//! WebSocket handshakes hold a permit until the job switched protocols; the tunnels that follow
//! are not counted (they are long-lived and bounded by the caller connection cap).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How many connections to a job, and how requests wait for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimitSettings {
    /// Most connections open to one endpoint (busy and idle).
    pub max_connections: usize,
    /// Most requests waiting for a connection to one endpoint.
    pub queue_length: usize,
    /// Longest wait for a connection.
    pub queue_timeout: Duration,
}

impl ConnLimitSettings {
    /// The per-job connection cap and queue of `limits`.
    pub fn from_limits(limits: &crate::config::Limits) -> ConnLimitSettings {
        ConnLimitSettings {
            max_connections: limits.upstream_max_connections_per_job,
            queue_length: limits.upstream_queue_length,
            queue_timeout: limits.upstream_queue_timeout,
        }
    }
}

impl Default for ConnLimitSettings {
    fn default() -> ConnLimitSettings {
        ConnLimitSettings {
            max_connections: 256,
            queue_length: 1024,
            queue_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a request got no connection to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Overloaded {
    #[error("too many requests are waiting for a connection to the job")]
    QueueFull,
    #[error("no connection to the job became free in {0:?}")]
    Timeout(Duration),
}

/// The right to keep one connection to a job open; given back on drop.
#[derive(Debug)]
pub struct ConnPermit {
    _permit: OwnedSemaphorePermit,
}

/// One endpoint's connection cap and queue (see the module docs).
#[derive(Debug)]
pub struct ConnLimit {
    permits: Arc<Semaphore>,
    settings: ConnLimitSettings,
    waiting: AtomicUsize,
    queued: AtomicU64,
    refused: AtomicU64,
}

/// Counts a request out of the queue however its wait ends.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnLimit {
    pub fn new(settings: ConnLimitSettings) -> ConnLimit {
        let max = settings.max_connections.clamp(1, Semaphore::MAX_PERMITS);
        ConnLimit {
            permits: Arc::new(Semaphore::new(max)),
            settings,
            waiting: AtomicUsize::new(0),
            queued: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// A permit if one is free now.
    pub fn try_acquire(&self) -> Option<ConnPermit> {
        self.permits
            .clone()
            .try_acquire_owned()
            .ok()
            .map(|permit| ConnPermit { _permit: permit })
    }

    /// Waits in the queue for a permit (after [`ConnLimit::try_acquire`] found none).
    pub async fn acquire_queued(&self) -> Result<ConnPermit, Overloaded> {
        if let Some(permit) = self.try_acquire() {
            return Ok(permit);
        }
        let ahead = self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting);
        if ahead >= self.settings.queue_length {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Overloaded::QueueFull);
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        let timeout = self.settings.queue_timeout;
        match tokio::time::timeout(timeout, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(ConnPermit { _permit: permit }),
            // The semaphore is never closed; a closed one would mean no connection either.
            Ok(Err(_)) | Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(Overloaded::Timeout(timeout))
            }
        }
    }

    /// Whether requests wait for a permit: a connection that finished its exchange is then
    /// closed instead of pooled, so its permit goes to the first of them.
    pub fn has_waiters(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }

    /// Connections open now (busy and idle).
    pub fn open(&self) -> usize {
        let max = self
            .settings
            .max_connections
            .clamp(1, Semaphore::MAX_PERMITS);
        max.saturating_sub(self.permits.available_permits())
    }

    /// Requests that had to wait for a connection, so far.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Requests refused (queue full or wait timed out), so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn permits_queue_and_refuse() {
        let limit = ConnLimit::new(ConnLimitSettings {
            max_connections: 1,
            queue_length: 1,
            queue_timeout: Duration::from_millis(50),
        });
        let first = limit.try_acquire().expect("one free");
        assert!(limit.try_acquire().is_none());
        assert_eq!(limit.open(), 1);
        assert_eq!(
            limit.acquire_queued().await.err(),
            Some(Overloaded::Timeout(Duration::from_millis(50)))
        );
        let (a, b) = tokio::join!(limit.acquire_queued(), async {
            tokio::task::yield_now().await;
            limit.acquire_queued().await
        });
        assert!(
            a.is_err() && matches!(b, Err(Overloaded::QueueFull)),
            "{a:?} {b:?}"
        );
        drop(first);
        assert!(limit.acquire_queued().await.is_ok());
        assert_eq!((limit.queued(), limit.refused()), (2, 3));
    }
}
