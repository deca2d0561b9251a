//! The routing table: the one owner of the current [`RoutingSnapshot`]. Sources (discovery, the
//! services file) publish whole snapshots; readers load the current one without locks
//! (arc-swap), and watchers learn of new generations through a watch channel.
//!
//! A reader that keeps state per snapshot (the data plane keeps its endpoints' states) attaches
//! a [`Follower`]: `publish` hands it each new snapshot before returning, so the follower's
//! state is derived once per generation, before any request can see that generation, and no
//! task has to keep the two in step. The follower is a trait so routing imports nothing of the
//! data plane.

use super::RoutingSnapshot;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Derives state from each snapshot the table publishes (see the module docs).
pub trait Follower: Send + Sync + std::fmt::Debug {
    /// `snapshot` is about to be in force (called under the table's publishing lock, so calls
    /// never overlap and come in generation order).
    fn follow(&self, snapshot: &Arc<RoutingSnapshot>);
}

#[derive(Debug)]
pub struct RoutingTable {
    current: ArcSwap<RoutingSnapshot>,
    loaded: AtomicBool,
    generations: watch::Sender<u64>,
    /// Held while publishing: one generation at a time reaches the follower and the table.
    follower: Mutex<Option<Arc<dyn Follower>>>,
}

impl RoutingTable {
    /// An empty table, not yet loaded (so `/readyz` says not ready).
    pub fn new(base_domain: &str) -> RoutingTable {
        RoutingTable {
            current: ArcSwap::from_pointee(RoutingSnapshot::empty(base_domain)),
            loaded: AtomicBool::new(false),
            generations: watch::Sender::new(0),
            follower: Mutex::new(None),
        }
    }

    /// The snapshot in force now.
    pub fn load(&self) -> Arc<RoutingSnapshot> {
        self.current.load_full()
    }

    /// The snapshot in force now, without touching its reference count (cheapest on the
    /// request path; do not hold the guard across awaits).
    pub fn current(&self) -> arc_swap::Guard<Arc<RoutingSnapshot>> {
        self.current.load()
    }

    /// Makes `snapshot` the one in force, atomically; returns its generation. The attached
    /// [`Follower`] has derived its state from it when this returns.
    pub fn publish(&self, mut snapshot: RoutingSnapshot) -> u64 {
        let follower = self.follower.lock().unwrap_or_else(|e| e.into_inner());
        let generation = *self.generations.borrow() + 1;
        snapshot.set_generation(generation);
        let snapshot = Arc::new(snapshot);
        if let Some(follower) = follower.as_ref() {
            follower.follow(&snapshot);
        }
        self.current.store(snapshot);
        self.loaded.store(true, Ordering::Release);
        self.generations.send_replace(generation);
        generation
    }

    /// Makes `follower` derive its state from every snapshot from now on, starting with the
    /// one in force (replacing any follower attached before).
    pub fn attach(&self, follower: Arc<dyn Follower>) {
        let mut slot = self.follower.lock().unwrap_or_else(|e| e.into_inner());
        follower.follow(&self.current.load_full());
        *slot = Some(follower);
    }

    /// Whether any snapshot has been published yet.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// A receiver that sees each new generation number.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generations.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_swaps_and_counts() {
        let table = RoutingTable::new("d");
        assert!(!table.is_loaded());
        let mut rx = table.subscribe();
        let old = table.load();
        assert_eq!(table.publish(RoutingSnapshot::empty("d")), 1);
        assert_eq!(table.publish(RoutingSnapshot::empty("d")), 2);
        assert!(table.is_loaded());
        assert_eq!(table.load().generation(), 2);
        assert_eq!(old.generation(), 0, "readers keep the snapshot they loaded");
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 2);
    }
}
