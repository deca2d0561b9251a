//! The data plane's counters: atomics updated on the request path (no labels formatted per
//! request, no locks). The data plane owns them; the admin server's Prometheus collector
//! (`admin/metrics.rs`) only reads them at scrape time.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the upstream latency buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A histogram of atomics: observing is a few relaxed adds.
#[derive(Debug, Default)]
pub struct AtomicHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl AtomicHistogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Per-bucket counts (the last bucket is `+Inf`), the total count and the sum in seconds,
    /// as a scrape reads them.
    pub fn read(&self) -> HistogramReading {
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
        let mut counted = 0;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            let n = self.buckets[i].load(Ordering::Relaxed);
            counted += n;
            buckets.push((*bound, n));
        }
        let count = self.count.load(Ordering::Relaxed).max(counted);
        buckets.push((f64::MAX, count - counted));
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        HistogramReading {
            buckets,
            count,
            sum,
        }
    }
}

/// What [`AtomicHistogram::read`] saw: per-bucket counts (not cumulative), upper bound first.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramReading {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

/// Request statistics of one service (kept across snapshot swaps while the service exists).
#[derive(Debug, Default)]
pub struct RouteStats {
    /// Responses by status class: 1xx..5xx.
    responses: [AtomicU64; 5],
    /// Time from sending the request to the job until its response head.
    pub upstream_latency: AtomicHistogram,
}

impl RouteStats {
    pub fn count_status(&self, status: http::StatusCode) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Responses so far by status class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub fn responses_by_class(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.responses[i].load(Ordering::Relaxed))
    }
}

/// Why a request was answered without a route.
#[derive(Debug, Clone, Copy)]
#[repr(usize)]
pub enum Unrouted {
    BadRequest = 0,
    NoSuchTask = 1,
}

/// Process-wide counters of the data plane.
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    pub active_connections: AtomicUsize,
    pub connections_total: AtomicU64,
    pub connections_refused: AtomicU64,
    pub tunnels_active: AtomicUsize,
    /// Tunnels opened (a `101` passed on and both sides upgraded).
    pub tunnels_total: AtomicU64,
    /// Tunnels closed by `--tunnel-idle-timeout`.
    pub tunnels_closed_idle: AtomicU64,
    /// `Set-Cookie` lines of jobs dropped (scoped beyond the service's host, or named like
    /// the auth cookie).
    pub set_cookies_dropped: AtomicU64,
    /// HTTP/2 caller connections ended for a flood of control frames.
    pub h2_floods: AtomicU64,
    /// Long sessions (tunnels, streaming response bodies) open now (`sessions.rs`).
    pub sessions_live: AtomicUsize,
    /// Long sessions the proxy closed, by [`super::sessions::CloseReason`].
    pub sessions_closed: [AtomicU64; 2],
    /// Response bytes taken from jobs for HTTP/2 callers and not yet written to them (all
    /// connections; each is bounded by `h2_budget::H2_CONNECTION_BUDGET`).
    pub h2_response_bytes_held: AtomicU64,
    unrouted: [AtomicU64; 2],
}

impl ProxyMetrics {
    pub fn count_unrouted(&self, why: Unrouted) {
        self.unrouted[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests answered without a route so far, for `why`.
    pub fn unrouted(&self, why: Unrouted) -> u64 {
        self.unrouted[why as usize].load(Ordering::Relaxed)
    }

    /// Counts `Set-Cookie` lines dropped from a response (none: no atomic operation).
    pub fn count_set_cookies_dropped(&self, dropped: usize) {
        if dropped > 0 {
            self.set_cookies_dropped
                .fetch_add(dropped as u64, Ordering::Relaxed);
        }
    }
}
