//! The look-up caches of the gate: a bounded moka cache whose entries carry their own
//! freshness, so one structure gives TTLs per value (denials expire sooner), a grace period
//! during cluster failures, and collapsing of concurrent identical look-ups.
//!
//! An entry holds the last good value, *fresh* for its TTL and *usable* for TTL + grace, and
//! the last failure, remembered for a short `failure_hold`. moka keeps an entry at most
//! `max TTL + grace` and bounds their number. A look-up:
//! 1. returns a fresh value straight away (the hot path: one hash, one moka `get`);
//! 2. within a failure hold, answers without asking the cluster: the usable stale value, else
//!    the remembered error (so an outage costs one cluster call per key per hold, not one per
//!    request);
//! 3. otherwise enters moka's per-key compute lock: the first caller fetches and stores the
//!    outcome; callers queued behind it find that outcome and return it without fetching (so
//!    100 concurrent first requests cause one fetch, and a hanging cluster is waited for once).
//!    When the entry still has a usable stale value, the wait is bounded by
//!    [`STALE_REFRESH_WAIT`]: past it the refresh counts as failed (held at least
//!    [`TIMED_OUT_HOLD`]) and the stale value is used, so a hanging cluster costs a caller that
//!    short wait once per hold, not the cluster call's whole timeout on every expiry.
//!
//! With a refresh window (the original's `-auth-cache-refresh-before-seconds`), a fresh hit
//! within that long of its expiry is still answered from the cache, and the caller may start
//! one background refresh of the key ([`GraceCache::claim_refresh`]); at most one runs per key.

use moka::future::Cache;
use moka::ops::compute::{CompResult, Op};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a look-up that could fall back on a stale value waits for the cluster.
pub const STALE_REFRESH_WAIT: Duration = Duration::from_millis(500);

/// The shortest hold after a refresh that timed out: a hanging cluster would otherwise cost
/// callers [`STALE_REFRESH_WAIT`] after every (short) failure hold.
pub const TIMED_OUT_HOLD: Duration = Duration::from_secs(2);

/// A refresh that took longer than [`STALE_REFRESH_WAIT`] (the cache's error types convert it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshTimedOut;

impl From<RefreshTimedOut> for String {
    fn from(_: RefreshTimedOut) -> String {
        format!("no answer within {STALE_REFRESH_WAIT:?}: a stale value was used")
    }
}

impl From<RefreshTimedOut> for &'static str {
    fn from(_: RefreshTimedOut) -> &'static str {
        "refresh timed out"
    }
}

/// How a failed fetch is treated. A cluster failure is remembered for the failure hold (so an
/// outage costs one call per key per hold); a fetch the caller declined without asking the
/// cluster (a look-up the gate's limits refused) is not: it goes back to that caller only and
/// leaves the entry as it was, so the next caller may try again.
pub trait FetchError {
    fn is_held(&self) -> bool {
        true
    }
}

impl FetchError for String {}

impl FetchError for &'static str {}

/// Where a look-up's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A fresh cached value.
    Hit,
    /// Fetched by this call.
    Fetched,
    /// Another call fetched it while this one waited (a collapsed look-up).
    Collapsed,
    /// The cluster failed; an expired value within its grace period was used.
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

/// A look-up's value, where it came from, and until when it is fresh (`None` for a stale
/// value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found<V> {
    pub value: V,
    pub source: Source,
    pub fresh_until: Option<Instant>,
}

/// Why a look-up has no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError<E> {
    /// The fetch failed (now or within the failure hold) and no value within its grace period
    /// exists.
    Fetch(E),
    /// The cache lost the entry between storing and reading it (not expected).
    Vanished,
}

#[derive(Debug, Clone)]
struct Good<V> {
    value: V,
    fresh_until: Instant,
    usable_until: Instant,
}

#[derive(Debug, Clone)]
struct Stamped<V, E> {
    good: Option<Good<V>>,
    /// The last failure and until when it is remembered.
    failure: Option<(E, Instant)>,
}

impl<V: Clone, E: Clone> Stamped<V, E> {
    /// The answer this entry gives at `now` without a fetch, if any.
    fn answer(&self, now: Instant) -> Option<Result<Found<V>, E>> {
        if let Some(good) = &self.good {
            if now < good.fresh_until {
                return Some(Ok(Found {
                    value: good.value.clone(),
                    source: Source::Hit,
                    fresh_until: Some(good.fresh_until),
                }));
            }
        }
        match &self.failure {
            Some((error, until)) if now < *until => Some(self.after_failure(error, now)),
            _ => None,
        }
    }

    /// The answer after a failure: the stale value when usable, else the error.
    fn after_failure(&self, error: &E, now: Instant) -> Result<Found<V>, E> {
        match &self.good {
            Some(good) if now < good.usable_until => Ok(Found {
                value: good.value.clone(),
                source: Source::Stale,
                fresh_until: None,
            }),
            _ => Err(error.clone()),
        }
    }
}

/// A bounded cache of look-up results with per-value TTLs, a grace period and a failure hold.
pub struct GraceCache<K, V, E> {
    entries: Cache<K, Stamped<V, E>>,
    grace: Duration,
    failure_hold: Duration,
    clock: Clock,
    /// Hits this close to expiry start a background refresh (zero: never).
    refresh_before: Duration,
    /// Keys being refreshed in the background.
    refreshing: std::sync::Mutex<std::collections::HashSet<K>>,
}

impl<K, V, E> GraceCache<K, V, E>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + From<RefreshTimedOut> + FetchError + 'static,
{
    /// `max_ttl` is the longest TTL any value gets; entries are dropped after `max_ttl + grace`
    /// or when more than `capacity` are held. A failure is remembered for `failure_hold`.
    pub fn new(
        capacity: u64,
        max_ttl: Duration,
        grace: Duration,
        failure_hold: Duration,
        clock: Clock,
    ) -> Self {
        let keep = max_ttl
            .saturating_add(grace)
            .max(failure_hold)
            .max(Duration::from_millis(1));
        GraceCache {
            entries: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(keep)
                .build(),
            grace,
            failure_hold,
            clock,
            refresh_before: Duration::ZERO,
            refreshing: std::sync::Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// Hits within `before` of their expiry ask for a background refresh (zero: never).
    pub fn with_refresh_before(mut self, before: Duration) -> Self {
        self.refresh_before = before;
        self
    }

    /// How long before expiry a hit asks for a refresh (zero: never).
    pub fn refresh_before(&self) -> Duration {
        self.refresh_before
    }

    /// For a look-up answered `found`: true when it was a fresh hit inside the refresh window
    /// and no refresh of `key` runs, in which case the caller owns the refresh: it must call
    /// [`GraceCache::store_refreshed`] on success and [`GraceCache::end_refresh`] in any case.
    pub fn claim_refresh(&self, key: &K, found: &Found<V>) -> bool {
        if self.refresh_before.is_zero() || found.source != Source::Hit {
            return false;
        }
        let Some(fresh_until) = found.fresh_until else {
            return false;
        };
        if fresh_until.saturating_duration_since(self.clock.now()) >= self.refresh_before {
            return false;
        }
        let mut refreshing = self.refreshing.lock().unwrap_or_else(|e| e.into_inner());
        refreshing.insert(key.clone())
    }

    /// Stores a value a background refresh fetched, fresh for `ttl`.
    pub async fn store_refreshed(&self, key: K, value: V, ttl: Duration) {
        let fresh_until = self.clock.now() + ttl;
        self.entries
            .insert(
                key,
                Stamped {
                    good: Some(Good {
                        value,
                        fresh_until,
                        usable_until: fresh_until + self.grace,
                    }),
                    failure: None,
                },
            )
            .await;
    }

    /// Ends the refresh of `key` that [`GraceCache::claim_refresh`] granted.
    pub fn end_refresh(&self, key: &K) {
        let mut refreshing = self.refreshing.lock().unwrap_or_else(|e| e.into_inner());
        refreshing.remove(key);
    }

    /// Whether a look-up of `key` now can be answered without a fetch that matters: the entry
    /// answers on its own (fresh value, or a failure still held), or it holds a value
    /// `known` accepts (even an expired one). The gate limits cluster look-ups only for keys
    /// this is false for.
    pub async fn knows<Q>(&self, key: &Q, known: impl FnOnce(&V) -> bool) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self.entries.get(key).await {
            None => false,
            Some(entry) => {
                entry.answer(self.clock.now()).is_some()
                    || entry.good.as_ref().is_some_and(|good| known(&good.value))
            }
        }
    }

    /// [`GraceCache::lookup`] without the freshness deadline.
    pub async fn get_or_fetch<Q, Fut>(
        &self,
        key: &Q,
        to_owned: impl FnOnce(&Q) -> K,
        ttl_of: impl FnOnce(&V) -> Duration,
        fetch: impl FnOnce() -> Fut,
    ) -> Result<(V, Source), LookupError<E>>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        Fut: std::future::Future<Output = Result<V, E>>,
    {
        self.lookup(key, to_owned, ttl_of, fetch)
            .await
            .map(|found| (found.value, found.source))
    }

    /// The cached value for `key` when fresh, else the result of `fetch` (see the module docs).
    /// `ttl_of` gives each fetched value its TTL.
    pub async fn lookup<Q, Fut>(
        &self,
        key: &Q,
        to_owned: impl FnOnce(&Q) -> K,
        ttl_of: impl FnOnce(&V) -> Duration,
        fetch: impl FnOnce() -> Fut,
    ) -> Result<Found<V>, LookupError<E>>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        Fut: std::future::Future<Output = Result<V, E>>,
    {
        let mut stale = None;
        if let Some(entry) = self.entries.get(key).await {
            let now = self.clock.now();
            if let Some(answer) = entry.answer(now) {
                return answer.map_err(LookupError::Fetch);
            }
            stale = entry.good.filter(|good| now < good.usable_until);
        }
        let owned = to_owned(key);
        let grace = self.grace;
        let failure_hold = self.failure_hold;
        let clock = &self.clock;
        let mut fetched = false;
        let fetched_flag = &mut fetched;
        let mut declined = None;
        let declined_slot = &mut declined;
        let compute = self
            .entries
            .entry(owned.clone())
            .and_compute_with(|current| async move {
                let now = clock.now();
                let current = current.map(|entry| entry.into_value());
                if let Some(entry) = &current {
                    if entry.answer(now).is_some() {
                        return Op::Nop;
                    }
                }
                *fetched_flag = true;
                match fetch().await {
                    Ok(value) => {
                        let now = clock.now();
                        let fresh_until = now + ttl_of(&value);
                        Op::Put(Stamped {
                            good: Some(Good {
                                value,
                                fresh_until,
                                usable_until: fresh_until + grace,
                            }),
                            failure: None,
                        })
                    }
                    Err(error) if !error.is_held() => {
                        *declined_slot = Some(error);
                        Op::Nop
                    }
                    Err(error) => Op::Put(Stamped {
                        good: current.and_then(|entry| entry.good),
                        failure: Some((error, clock.now() + failure_hold)),
                    }),
                }
            });
        let result = match stale {
            None => compute.await,
            Some(stale) => match tokio::time::timeout(STALE_REFRESH_WAIT, compute).await {
                Ok(result) => result,
                Err(_) => {
                    // The refresh (or the one this call queued behind) was cancelled: remember
                    // a failure for the hold and use the stale value meanwhile.
                    let until = self.clock.now() + failure_hold.max(TIMED_OUT_HOLD);
                    self.entries
                        .insert(
                            owned,
                            Stamped {
                                good: Some(stale.clone()),
                                failure: Some((E::from(RefreshTimedOut), until)),
                            },
                        )
                        .await;
                    return Ok(Found {
                        value: stale.value,
                        source: Source::Stale,
                        fresh_until: None,
                    });
                }
            },
        };
        if let Some(error) = declined {
            return Err(LookupError::Fetch(error));
        }
        let now = self.clock.now();
        let entry = match result {
            CompResult::Inserted(entry)
            | CompResult::ReplacedWith(entry)
            | CompResult::Unchanged(entry) => entry.into_value(),
            // Not produced by the closure above (it never removes, and returns `Nop` only when
            // an entry exists); reported rather than assumed away.
            CompResult::StillNone(_) | CompResult::Removed(_) => return Err(LookupError::Vanished),
        };
        let answer = match (&entry.failure, fetched) {
            // This call fetched and failed.
            (Some((error, _)), true) => entry.after_failure(error, now),
            _ => match entry.answer(now) {
                Some(Ok(found)) if found.source == Source::Hit => Ok(Found {
                    source: if fetched {
                        Source::Fetched
                    } else {
                        Source::Collapsed
                    },
                    ..found
                }),
                Some(other) => other,
                // Expired between storing and reading (a TTL shorter than the wait).
                None => match &entry.good {
                    Some(good) => Ok(Found {
                        value: good.value.clone(),
                        source: Source::Fetched,
                        fresh_until: None,
                    }),
                    None => return Err(LookupError::Vanished),
                },
            },
        };
        answer.map_err(LookupError::Fetch)
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

    const HOLD: Duration = Duration::from_secs(1);

    fn cache(clock: &Clock) -> GraceCache<String, u32, &'static str> {
        GraceCache::new(100, TTL, GRACE, HOLD, clock.clone())
    }

    async fn look(
        cache: &GraceCache<String, u32, &'static str>,
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
    async fn a_hanging_refresh_falls_back_on_the_stale_value_quickly_and_is_held() {
        let clock = Clock::manual();
        let c = cache(&clock);
        let calls = AtomicUsize::new(0);
        assert_eq!(look(&c, &calls, Ok(1), TTL).await, Ok((1, Source::Fetched)));
        clock.advance(TTL);
        let hang = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<u32, &'static str>(2)
        };
        let started = Instant::now();
        let found = c
            .get_or_fetch("k", |k: &str| k.to_string(), |_| TTL, hang)
            .await;
        assert_eq!(found, Ok((1, Source::Stale)));
        assert!(started.elapsed() < STALE_REFRESH_WAIT * 2);
        // Within the hold the cluster is not asked again.
        let found = c
            .get_or_fetch("k", |k: &str| k.to_string(), |_| TTL, hang)
            .await;
        assert_eq!(found, Ok((1, Source::Stale)));
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
        clock.advance(TTL + GRACE - HOLD - HOLD);
        assert_eq!(
            look(&c, &calls, Err("down"), TTL).await,
            Ok((7, Source::Stale))
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Within the failure hold the cluster is not asked again.
        assert_eq!(
            look(&c, &calls, Err("down"), TTL).await,
            Ok((7, Source::Stale))
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        clock.advance(HOLD);
        assert_eq!(
            look(&c, &calls, Err("down"), TTL).await,
            Ok((7, Source::Stale))
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Past the grace period: the error.
        clock.advance(HOLD);
        assert_eq!(
            look(&c, &calls, Err("down"), TTL).await,
            Err(LookupError::Fetch("down"))
        );
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        // Recovery shows after the hold, and refreshes the entry.
        assert_eq!(
            look(&c, &calls, Ok(8), TTL).await,
            Err(LookupError::Fetch("down"))
        );
        clock.advance(HOLD);
        assert_eq!(look(&c, &calls, Ok(8), TTL).await, Ok((8, Source::Fetched)));
        assert_eq!(
            look(&c, &calls, Err("down"), TTL).await,
            Ok((8, Source::Hit))
        );
        assert_eq!(calls.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn failures_without_values_are_errors_held_briefly() {
        let clock = Clock::manual();
        let c = cache(&clock);
        let calls = AtomicUsize::new(0);
        assert_eq!(
            look(&c, &calls, Err("down"), TTL).await,
            Err(LookupError::Fetch("down"))
        );
        assert_eq!(
            look(&c, &calls, Ok(1), TTL).await,
            Err(LookupError::Fetch("down"))
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        clock.advance(HOLD);
        assert_eq!(look(&c, &calls, Ok(1), TTL).await, Ok((1, Source::Fetched)));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    /// Runs `n` concurrent look-ups of one key whose fetch takes 50 ms and returns `answer`;
    /// gives every look-up's result and how many fetches ran.
    async fn concurrent_lookups(
        n: usize,
        answer: Result<u32, &'static str>,
    ) -> (Vec<Result<(u32, Source), LookupError<&'static str>>>, usize) {
        let c = Arc::new(cache(&Clock::System));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..n {
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
                        answer
                    },
                )
                .await
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        (results, calls.load(Ordering::SeqCst))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_failures_ask_once() {
        let (results, calls) = concurrent_lookups(50, Err("down")).await;
        for result in results {
            assert_eq!(result, Err(LookupError::Fetch("down")));
        }
        assert_eq!(calls, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_collapse_into_one_fetch() {
        let (results, calls) = concurrent_lookups(100, Ok(5)).await;
        let mut sources = Vec::new();
        for result in results {
            let (value, source) = result.unwrap();
            assert_eq!(value, 5);
            sources.push(source);
        }
        assert_eq!(calls, 1);
        assert_eq!(sources.iter().filter(|s| **s == Source::Fetched).count(), 1);
    }
}
