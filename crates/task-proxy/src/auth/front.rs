//! A tiny per-thread front cache of fresh allow decisions, keyed by the credential's
//! fingerprint: the data plane's workers each run on their own thread, so the hot path (a
//! cached decision) reads thread-local memory instead of the shared moka caches.
//!
//! It never extends a decision: an entry is valid until the earlier of the identity's and the
//! decision's freshness deadlines, and only fresh (not stale-in-grace) allow decisions enter.
//! Denials, refusals and everything unusual take the normal path. A revocation found later
//! ([`FrontCache::invalidate`], by the re-checker of live sessions) retires every thread's
//! copies at once: each copy carries the generation it was made in. Each thread holds at most
//! [`MAX_ENTRIES`] credentials with [`OPERATIONS_PER_CREDENTIAL`] operations each; it is
//! emptied when full.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Credentials one thread remembers before it starts over.
pub const MAX_ENTRIES: usize = 4096;
/// Operations remembered per credential (the most recent ones).
pub const OPERATIONS_PER_CREDENTIAL: usize = 4;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

struct Decision {
    operation: Arc<str>,
    user: Arc<str>,
    fresh_until: Instant,
    generation: u64,
}

/// (gate id, credential fingerprint) -> the most recent allowed operations.
/// Looked up on every request: foldhash (randomly seeded, cheaper than std's SipHash).
type Entries = HashMap<(u64, [u8; 32]), Vec<Decision>, foldhash::fast::RandomState>;

thread_local! {
    static ENTRIES: RefCell<Entries> = RefCell::new(HashMap::default());
}

/// One gate's view of the per-thread front caches (gates never see each other's entries).
#[derive(Debug)]
pub struct FrontCache {
    id: u64,
    /// Copies made in an older generation are not used.
    generation: AtomicU64,
}

impl Default for FrontCache {
    fn default() -> Self {
        FrontCache::new()
    }
}

impl FrontCache {
    pub fn new() -> FrontCache {
        FrontCache {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
        }
    }

    /// Retires every copy on every thread (they refill from the shared caches).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// The user allowed to read `operation` with the credential `fingerprint`, if this thread
    /// holds a decision still fresh at `now`.
    pub fn get(&self, fingerprint: &[u8; 32], operation: &str, now: Instant) -> Option<Arc<str>> {
        let generation = self.generation.load(Ordering::Relaxed);
        ENTRIES.with(|entries| {
            let entries = entries.try_borrow().ok()?;
            entries
                .get(&(self.id, *fingerprint))?
                .iter()
                .find(|d| {
                    &*d.operation == operation && now < d.fresh_until && d.generation == generation
                })
                .map(|d| d.user.clone())
        })
    }

    /// Remembers that `user` (the credential's owner) may read `operation` until `fresh_until`.
    pub fn put(
        &self,
        fingerprint: [u8; 32],
        operation: Arc<str>,
        user: Arc<str>,
        fresh_until: Instant,
    ) {
        let generation = self.generation.load(Ordering::Relaxed);
        ENTRIES.with(|entries| {
            let Ok(mut entries) = entries.try_borrow_mut() else {
                return;
            };
            if entries.len() >= MAX_ENTRIES && !entries.contains_key(&(self.id, fingerprint)) {
                entries.clear();
            }
            let decisions = entries.entry((self.id, fingerprint)).or_default();
            decisions.retain(|d| d.operation != operation);
            if decisions.len() >= OPERATIONS_PER_CREDENTIAL {
                decisions.remove(0);
            }
            decisions.push(Decision {
                operation,
                user,
                fresh_until,
                generation,
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn entries_expire_and_are_per_gate_and_operation() {
        let now = Instant::now();
        let a = FrontCache::new();
        let b = FrontCache::new();
        let fp = [7u8; 32];
        a.put(
            fp,
            "op1".into(),
            "alice".into(),
            now + Duration::from_secs(1),
        );
        assert_eq!(a.get(&fp, "op1", now).as_deref(), Some("alice"));
        assert_eq!(a.get(&fp, "op2", now), None);
        assert_eq!(b.get(&fp, "op1", now), None);
        assert_eq!(a.get(&[8u8; 32], "op1", now), None);
        assert_eq!(a.get(&fp, "op1", now + Duration::from_secs(1)), None);
        // Invalidated: gone until put again.
        a.invalidate();
        assert_eq!(a.get(&fp, "op1", now), None);
        a.put(
            fp,
            "op1".into(),
            "alice".into(),
            now + Duration::from_secs(1),
        );
        assert_eq!(a.get(&fp, "op1", now).as_deref(), Some("alice"));
        // Other threads have their own.
        let other = std::thread::scope(|s| s.spawn(|| a.get(&fp, "op1", now)).join().unwrap());
        assert_eq!(other, None);
    }

    #[test]
    fn bounded_per_credential_and_per_thread() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let front = FrontCache::new();
        let fp = [1u8; 32];
        for i in 0..10 {
            front.put(fp, format!("op{i}").into(), "u".into(), later);
        }
        assert_eq!(front.get(&fp, "op0", now), None);
        assert!(front.get(&fp, "op9", now).is_some());
        for i in 0..(MAX_ENTRIES as u32 + 10) {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_le_bytes());
            key[31] = 9;
            front.put(key, "op".into(), "u".into(), later);
        }
        ENTRIES.with(|e| assert!(e.borrow().len() <= MAX_ENTRIES));
    }
}
