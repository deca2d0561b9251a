//! Limits on the cluster look-ups that credentials unknown to the gate cause.
//!
//! Every credential the identity cache does not know costs one `whoami` on the cluster, so a
//! client sending fresh random tokens would turn each request into a cluster call. The gate
//! therefore takes a token from two buckets before such a look-up: one per client address
//! (refused with 429) and one for the whole gate (refused with 503: the cluster is protected,
//! whoever is asking). Known credentials (any cached answer, or a login the cache still holds)
//! never reach the limiter.
//!
//! The per-address map is bounded: buckets that have refilled completely carry no state and
//! are swept; when the map is full of active addresses, a new address is not tracked and only
//! the overall bucket applies to it.

use super::cache::Clock;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often idle buckets are swept from the per-address map.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// While the map is full, sweeps run at most this often (each one walks the whole map).
const FULL_SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Look-up limits. A rate of 0 turns that limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupLimits {
    /// Look-ups per second for one client address (IPv6: its /64).
    pub per_client_rate: u32,
    /// Look-ups one client address may make at once after being idle.
    pub per_client_burst: u32,
    /// Look-ups per second for all clients together.
    pub overall_rate: u32,
    pub overall_burst: u32,
    /// Client addresses tracked at once.
    pub max_clients: usize,
}

impl Default for LookupLimits {
    /// 20/s (burst 40) per address: a person or a script brings a handful of credentials, and
    /// a browser's first page load with a new cookie sends its parallel requests before the
    /// first answer is cached (each counts). 200/s (burst 400) overall: far above what new
    /// sessions need (a known credential costs one look-up per identity TTL, 5 min), far below
    /// what one cluster HTTP proxy serves, so one task proxy replica cannot be turned into a
    /// `whoami` flood.
    fn default() -> Self {
        LookupLimits {
            per_client_rate: 20,
            per_client_burst: 40,
            overall_rate: 200,
            overall_burst: 400,
            max_clients: 65_536,
        }
    }
}

/// Why a look-up was not allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// The client address used its share (429).
    Client { retry_after_seconds: u32 },
    /// All clients together used the gate's share (503).
    Overall { retry_after_seconds: u32 },
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(burst: u32, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(burst),
            updated: now,
        }
    }

    /// Adds what `rate` refilled since the last update.
    fn refill(&mut self, rate: u32, burst: u32, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(burst));
        self.updated = now;
    }

    fn is_full(&self, burst: u32) -> bool {
        self.tokens >= f64::from(burst)
    }

    /// Whole seconds until one token is back (at least 1, for `Retry-After`).
    fn retry_after(&self, rate: u32) -> u32 {
        let missing = (1.0 - self.tokens).max(0.0);
        let seconds = (missing / f64::from(rate.max(1))).ceil();
        // `as` saturates; the value is small and non-negative anyway.
        (seconds as u32).max(1)
    }
}

struct State {
    overall: Bucket,
    clients: HashMap<IpAddr, Bucket>,
    last_sweep: Instant,
}

/// Token buckets per client address and overall. Owned by the gate.
pub struct LookupLimiter {
    limits: LookupLimits,
    clock: Clock,
    state: Mutex<State>,
}

impl LookupLimiter {
    pub fn new(limits: LookupLimits, clock: Clock) -> LookupLimiter {
        let now = clock.now();
        LookupLimiter {
            state: Mutex::new(State {
                overall: Bucket::full(limits.overall_burst, now),
                clients: HashMap::new(),
                last_sweep: now,
            }),
            limits,
            clock,
        }
    }

    /// Takes a look-up for `client`, or says which limit refuses it. A refused look-up takes
    /// nothing (a client refused per address does not use the overall share).
    pub fn try_acquire(&self, client: IpAddr) -> Result<(), Limited> {
        let limits = &self.limits;
        let per_client = limits.per_client_rate > 0;
        let overall = limits.overall_rate > 0;
        if !per_client && !overall {
            return Ok(());
        }
        let now = self.clock.now();
        // Held for a few arithmetic operations (and a sweep every few seconds); only requests
        // with unknown credentials get here.
        let mut state = match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        let key = client_key(client);
        let mut client_bucket = None;
        if per_client {
            if !state.clients.contains_key(&key) {
                self.make_room(&mut state, now);
            }
            if state.clients.len() < limits.max_clients || state.clients.contains_key(&key) {
                let bucket = state
                    .clients
                    .entry(key)
                    .or_insert_with(|| Bucket::full(limits.per_client_burst, now));
                bucket.refill(limits.per_client_rate, limits.per_client_burst, now);
                if bucket.tokens < 1.0 {
                    return Err(Limited::Client {
                        retry_after_seconds: bucket.retry_after(limits.per_client_rate),
                    });
                }
                client_bucket = Some(key);
            }
        }
        if overall {
            state
                .overall
                .refill(limits.overall_rate, limits.overall_burst, now);
            if state.overall.tokens < 1.0 {
                return Err(Limited::Overall {
                    retry_after_seconds: state.overall.retry_after(limits.overall_rate),
                });
            }
            state.overall.tokens -= 1.0;
        }
        if let Some(bucket) = client_bucket.and_then(|key| state.clients.get_mut(&key)) {
            bucket.tokens -= 1.0;
        }
        Ok(())
    }

    /// Sweeps buckets that refilled completely (they hold nothing a new bucket would not)
    /// every [`SWEEP_EVERY`], or sooner when the map is full.
    fn make_room(&self, state: &mut State, now: Instant) {
        let since = now.saturating_duration_since(state.last_sweep);
        let full = state.clients.len() >= self.limits.max_clients;
        if since < SWEEP_EVERY && !(full && since >= FULL_SWEEP_EVERY) {
            return;
        }
        let (rate, burst) = (self.limits.per_client_rate, self.limits.per_client_burst);
        state.clients.retain(|_, bucket| {
            bucket.refill(rate, burst, now);
            !bucket.is_full(burst)
        });
        state.last_sweep = now;
    }

    /// Client addresses currently tracked (for tests).
    pub fn tracked_clients(&self) -> usize {
        match self.state.lock() {
            Ok(state) => state.clients.len(),
            Err(poisoned) => poisoned.into_inner().clients.len(),
        }
    }
}

/// The address a bucket belongs to: IPv4 (also IPv4-mapped IPv6) as is, IPv6 by its /64, since
/// one host usually holds a whole /64 and could otherwise pick a fresh address per request.
fn client_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_client: (u32, u32), overall: (u32, u32), max_clients: usize) -> LookupLimits {
        LookupLimits {
            per_client_rate: per_client.0,
            per_client_burst: per_client.1,
            overall_rate: overall.0,
            overall_burst: overall.1,
            max_clients,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_client_gets_its_burst_then_its_rate() {
        let clock = Clock::manual();
        let limiter = LookupLimiter::new(limits((2, 4), (0, 0), 10), clock.clone());
        let a = ip("10.0.0.1");
        for _ in 0..4 {
            assert_eq!(limiter.try_acquire(a), Ok(()));
        }
        assert_eq!(
            limiter.try_acquire(a),
            Err(Limited::Client {
                retry_after_seconds: 1
            })
        );
        // Another address is not affected.
        assert_eq!(limiter.try_acquire(ip("10.0.0.2")), Ok(()));
        clock.advance(Duration::from_millis(500));
        assert_eq!(limiter.try_acquire(a), Ok(()));
        assert!(limiter.try_acquire(a).is_err());
    }

    #[test]
    fn the_overall_limit_refuses_with_503_and_takes_nothing_per_client() {
        let clock = Clock::manual();
        let limiter = LookupLimiter::new(limits((10, 10), (1, 3), 10), clock.clone());
        for i in 0..3 {
            assert_eq!(limiter.try_acquire(ip(&format!("10.0.0.{i}"))), Ok(()));
        }
        assert_eq!(
            limiter.try_acquire(ip("10.0.0.9")),
            Err(Limited::Overall {
                retry_after_seconds: 1
            })
        );
        clock.advance(Duration::from_secs(1));
        assert_eq!(limiter.try_acquire(ip("10.0.0.9")), Ok(()));
    }

    #[test]
    fn ipv6_clients_share_their_slash_64_and_mapped_ipv4_is_ipv4() {
        let limiter = LookupLimiter::new(limits((1, 1), (0, 0), 10), Clock::manual());
        assert_eq!(limiter.try_acquire(ip("2001:db8::1")), Ok(()));
        assert!(limiter.try_acquire(ip("2001:db8::ffff:2")).is_err());
        assert_eq!(limiter.try_acquire(ip("2001:db8:0:1::1")), Ok(()));
        assert_eq!(limiter.try_acquire(ip("192.0.2.1")), Ok(()));
        assert!(limiter.try_acquire(ip("::ffff:192.0.2.1")).is_err());
    }

    #[test]
    fn the_map_is_bounded_and_idle_buckets_are_swept() {
        let clock = Clock::manual();
        let limiter = LookupLimiter::new(limits((1, 2), (0, 0), 3), clock.clone());
        for i in 0..10 {
            assert_eq!(limiter.try_acquire(ip(&format!("10.0.1.{i}"))), Ok(()));
        }
        // Full: the later addresses were not tracked (only the overall limit applied).
        assert_eq!(limiter.tracked_clients(), 3);
        // Their buckets refill within 2 s; the next sweep drops them.
        clock.advance(SWEEP_EVERY);
        assert_eq!(limiter.try_acquire(ip("10.0.2.1")), Ok(()));
        assert_eq!(limiter.tracked_clients(), 1);
    }

    #[test]
    fn zero_rates_turn_the_limits_off() {
        let limiter = LookupLimiter::new(limits((0, 0), (0, 0), 1), Clock::manual());
        for _ in 0..1000 {
            assert_eq!(limiter.try_acquire(ip("10.0.0.1")), Ok(()));
        }
    }
}
