//! The routing table: the one owner of the current [`RoutingSnapshot`]. Sources (discovery, the
//! services file) publish whole snapshots; the data plane loads the current one per request
//! without locks (arc-swap), and watchers learn of new generations through a watch channel.

use super::RoutingSnapshot;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Debug)]
pub struct RoutingTable {
    current: ArcSwap<RoutingSnapshot>,
    loaded: AtomicBool,
    generations: watch::Sender<u64>,
}

impl RoutingTable {
    /// An empty table, not yet loaded (so `/readyz` says not ready).
    pub fn new(base_domain: &str) -> RoutingTable {
        RoutingTable {
            current: ArcSwap::from_pointee(RoutingSnapshot::empty(base_domain)),
            loaded: AtomicBool::new(false),
            generations: watch::Sender::new(0),
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

    /// Makes `snapshot` the one in force, atomically; returns its generation.
    pub fn publish(&self, mut snapshot: RoutingSnapshot) -> u64 {
        let generation = *self.generations.borrow() + 1;
        snapshot.set_generation(generation);
        self.current.store(Arc::new(snapshot));
        self.loaded.store(true, Ordering::Release);
        self.generations.send_replace(generation);
        generation
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
