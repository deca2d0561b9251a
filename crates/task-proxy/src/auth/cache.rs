//! The look-up caches of the gate: a bounded moka cache whose entries carry their own
//! freshness, so one structure gives TTLs per value (denials expire sooner), a grace period
//! during cluster failures, and collapsing of concurrent identical look-ups.
//!
//! An entry is *fresh* for its TTL and *usable* for TTL + grace; moka keeps it at most
//! `max TTL + grace`. A look-up:
//! 1. returns a fresh entry straight away (the hot path: one hash, one moka `get`);
//! 2. otherwise enters moka's per-key compute lock: the first caller fetches and stores the
//!    result; callers queued behind it find the fresh entry and return it without fetching
//!    (so 100 concurrent first requests cause one fetch);
//! 3. when the fetch fails, an entry still within its grace period is returned as stale;
//!    without one, the error is returned (and nothing is cached).

use moka::future::Cache;
use moka::ops::compute::{CompResult, Op};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a look-up's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A fresh cached entry.
    Hit,
    /// Fetched by this call.
    Fetched,
    /// Another call fetched it while this one waited (a collapsed look-up).
    Collapsed,
    /// The fetch failed; an expired entry within its grace period was used.
    Stale,
}

/// The time source of the caches; manual in tests.
#[derive(Debug, Clone)]
pub enum Clock {
    System,
    /// A clock that moves only when told to.
    Manual {
        base: Instant,
        offset: Arc<AtomicU64>,
    },
}

impl Clock {
    /// A manual clock starting now.
    pub fn manual() -> Clock {
        Clock::Manual {
            base: Instant::now(),
            offset: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn now(&self) -> Instant {
        match self {
            Clock::System => Instant::now(),
            Clock::Manual { base, offset } => {
                *base + Duration::from_nanos(offset.load(Ordering::Relaxed))
            }
        }
    }

    /// Moves a manual clock forward (no effect on the system clock).
    pub fn advance(&self, by: Duration) {
        if let Clock::Manual { offset, .. } = self {
            let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
            offset.fetch_add(nanos, Ordering::Relaxed);
        }
    }
}

/// Why a look-up has no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError<E> {
    /// The fetch failed and no entry within its grace period exists.
    Fetch(E),
    /// The cache lost the entry between storing and reading it (not expected).
    Vanished,
}

#[derive(Debug, Clone)]
struct Stamped<V> {
    value: V,
    fresh_until: Instant,
    usable_until: Instant,
}

/// A bounded cache of look-up results with per-value TTLs and a grace period.
pub struct GraceCache<K, V> {
    entries: Cache<K, Stamped<V>>,
    grace: Duration,
    clock: Clock,
}

impl<K, V> GraceCache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// `max_ttl` is the longest TTL any value gets; entries are dropped after `max_ttl + grace`
    /// or when more than `capacity` are held.
    pub fn new(capacity: u64, max_ttl: Duration, grace: Duration, clock: Clock) -> Self {
        GraceCache {
            entries: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(max_ttl.saturating_add(grace).max(Duration::from_millis(1)))
                .build(),
            grace,
            clock,
        }
    }

    /// The cached value for `key` when fresh, else the result of `fetch` (see the module docs).
    /// `ttl_of` gives each fetched value its TTL.
    pub async fn get_or_fetch<Q, E, Fut>(
        &self,
        key: &Q,
        to_owned: impl FnOnce(&Q) -> K,
        ttl_of: impl FnOnce(&V) -> Duration,
        fetch: impl FnOnce() -> Fut,
    ) -> Result<(V, Source), LookupError<E>>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        E: Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<V, E>>,
    {
        if let Some(stamped) = self.entries.get(key).await {
            if self.clock.now() < stamped.fresh_until {
                return Ok((stamped.value, Source::Hit));
            }
        }
        let grace = self.grace;
        let clock = &self.clock;
        let mut fetched = false;
        let fetched_flag = &mut fetched;
        let result = self
            .entries
            .entry(to_owned(key))
            .and_try_compute_with(|current| async move {
                let now = clock.now();
                if let Some(entry) = &current {
                    if now < entry.value().fresh_until {
                        return Ok(Op::Nop);
                    }
                }
                *fetched_flag = true;
                match fetch().await {
                    Ok(value) => {
                        let now = clock.now();
                        let fresh_until = now + ttl_of(&value);
                        Ok(Op::Put(Stamped {
                            value,
                            fresh_until,
                            usable_until: fresh_until + grace,
                        }))
                    }
                    Err(error) => match &current {
                        Some(entry) if now < entry.value().usable_until => Ok(Op::Nop),
                        _ => Err(error),
                    },
                }
            })
            .await
            .map_err(LookupError::Fetch)?;
        match result {
            CompResult::Inserted(entry) | CompResult::ReplacedWith(entry) => {
                Ok((entry.into_value().value, Source::Fetched))
            }
            CompResult::Unchanged(entry) => {
                let source = if fetched {
                    Source::Stale
                } else {
                    Source::Collapsed
                };
                Ok((entry.into_value().value, source))
            }
            // Not produced by the closure above (it never removes, and returns `Nop` only when
            // an entry exists); reported rather than assumed away.
            CompResult::StillNone(_) | CompResult::Removed(_) => Err(LookupError::Vanished),
        }
    }

    /// How many entries are held (approximate; for tests and status pages).
    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// Drops every entry.
    pub fn clear(&self) {
        self.entries.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    const TTL: Duration = Duration::from_secs(60);
    const GRACE: Duration = Duration::from_secs(300);

    fn cache(clock: &Clock) -> GraceCache<String, u32> {
        GraceCache::new(100, TTL, GRACE, clock.clone())
    }

    async fn look(
        cache: &GraceCache<String, u32>,
        calls: &AtomicUsize,
        answer: Result<u32, &'static str>,
        ttl: Duration,
    ) -> Result<(u32, Source), LookupError<&'static str>> {
        cache
            .get_or_fetch(
                "k",
                |k: &str| k.to_string(),
                |_| ttl,
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    answer
                },
            )
            .await
    }

    #[tokio::test]
    async fn fresh_entries_are_hits_until_their_ttl() {
        let clock = Clock::manual();
        let c = cache(&clock);
        let calls = AtomicUsize::new(0);
        assert_eq!(look(&c, &calls, Ok(1), TTL).await, Ok((1, Source::Fetched)));
        assert_eq!(look(&c, &calls, Ok(2), TTL).await, Ok((1, Source::Hit)));
        clock.advance(TTL - Duration::from_millis(1));
        assert_eq!(look(&c, &calls, Ok(2), TTL).await, Ok((1, Source::Hit)));
        clock.advance(Duration::from_millis(1));
        assert_eq!(look(&c, &calls, Ok(2), TTL).await, Ok((2, Source::Fetched)));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn shorter_ttl_per_value() {
        let clock = Clock::manual();
        let c = cache(&clock);
        let calls = AtomicUsize::new(0);
        let short = Duration::from_secs(5);
        assert_eq!(
            look(&c, &calls, Ok(0), short).await,
            Ok((0, Source::Fetched))
        );
        clock.advance(Duration::from_secs(4));
        assert_eq!(look(&c, &calls, Ok(1), TTL).await, Ok((0, Source::Hit)));
        clock.advance(Duration::from_secs(1));
        assert_eq!(look(&c, &calls, Ok(1), TTL).await, Ok((1, Source::Fetched)));
    }

    #[tokio::test]
    async fn grace_serves_stale_only_on_failure_and_only_within_grace() {
        let clock = Clock::manual();
        let c = cache(&clock);
        let calls = AtomicUsize::new(0);
        look(&c, &calls, Ok(7), TTL).await.unwrap();
        clock.advance(TTL + GRACE - Duration::from_secs(1));
        assert_eq!(
            look(&c, &calls, Err("down"), TTL).await,
            Ok((7, Source::Stale))
        );
        // Failures are not cached: the next look-up tries again.
        assert_eq!(
            look(&c, &calls, Err("down"), TTL).await,
            Ok((7, Source::Stale))
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            look(&c, &calls, Err("down"), TTL).await,
            Err(LookupError::Fetch("down"))
        );
        // Recovery refreshes the entry.
        assert_eq!(look(&c, &calls, Ok(8), TTL).await, Ok((8, Source::Fetched)));
        assert_eq!(
            look(&c, &calls, Err("down"), TTL).await,
            Ok((8, Source::Hit))
        );
    }

    #[tokio::test]
    async fn failures_without_entries_are_errors_and_not_cached() {
        let clock = Clock::manual();
        let c = cache(&clock);
        let calls = AtomicUsize::new(0);
        assert_eq!(
            look(&c, &calls, Err("down"), TTL).await,
            Err(LookupError::Fetch("down"))
        );
        assert_eq!(look(&c, &calls, Ok(1), TTL).await, Ok((1, Source::Fetched)));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_collapse_into_one_fetch() {
        let c = Arc::new(cache(&Clock::System));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let c = c.clone();
            let calls = calls.clone();
            tasks.push(tokio::spawn(async move {
                c.get_or_fetch(
                    "k",
                    |k: &str| k.to_string(),
                    |_| TTL,
                    || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<u32, ()>(5)
                    },
                )
                .await
            }));
        }
        let mut sources = Vec::new();
        for t in tasks {
            let (value, source) = t.await.unwrap().unwrap();
            assert_eq!(value, 5);
            sources.push(source);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(sources.iter().filter(|s| **s == Source::Fetched).count(), 1);
    }
}
