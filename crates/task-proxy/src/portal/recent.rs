//! Services seen recently that are gone now: a 404 for a browser can then say that the
//! operation finished, and when, instead of "no such service".
//!
//! Fed by the routing table's generations: whatever left the snapshot since the previous one
//! is remembered by its hash and alias labels for [`KEEP`], at most [`MAX_GONE`] of them.

use crate::routing::{Route, RoutingSnapshot};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// How long a finished service is remembered.
pub const KEEP: Duration = Duration::from_secs(24 * 3600);
/// Bound on remembered services (the oldest go first).
const MAX_GONE: usize = 10_000;

/// A service that left the routing table.
#[derive(Debug, Clone)]
pub struct Gone {
    pub route: Arc<Route>,
    pub at: SystemTime,
}

#[derive(Debug, Default)]
struct State {
    /// Domain labels (hash, alias label) of the last snapshot.
    current: HashMap<String, Arc<Route>>,
    gone: HashMap<String, Gone>,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Recent(Mutex<State>);

fn labels(route: &Route) -> impl Iterator<Item = String> + '_ {
    std::iter::once(route.hash.clone()).chain(
        route
            .alias_domain
            .as_deref()
            .and_then(|d| d.split('.').next())
            .map(str::to_string),
    )
}

impl Recent {
    /// Takes the routes of a new snapshot: those no longer in it become gone now.
    pub fn observe(&self, snapshot: &RoutingSnapshot) {
        self.observe_at(snapshot, SystemTime::now());
    }

    fn observe_at(&self, snapshot: &RoutingSnapshot, now: SystemTime) {
        let Ok(mut state) = self.0.lock() else {
            return;
        };
        let mut current = HashMap::new();
        for route in snapshot.routes() {
            for label in labels(route) {
                current.insert(label, route.clone());
            }
        }
        let present: HashSet<&String> = current.keys().collect();
        let left: Vec<(String, Arc<Route>)> = state
            .current
            .iter()
            .filter(|(label, _)| !present.contains(label))
            .map(|(l, r)| (l.clone(), r.clone()))
            .collect();
        for label in current.keys() {
            state.gone.remove(label);
        }
        for (label, route) in left {
            state.gone.insert(label, Gone { route, at: now });
        }
        state
            .gone
            .retain(|_, g| now.duration_since(g.at).unwrap_or_default() < KEEP);
        if state.gone.len() > MAX_GONE {
            let mut ages: Vec<(SystemTime, String)> =
                state.gone.iter().map(|(l, g)| (g.at, l.clone())).collect();
            ages.sort();
            for (_, label) in ages.iter().take(state.gone.len() - MAX_GONE) {
                state.gone.remove(label);
            }
        }
        state.current = current;
    }

    /// The service that had the domain label `label` (hash or alias label), if it left
    /// recently.
    pub fn gone(&self, label: &str) -> Option<Gone> {
        let state = self.0.lock().ok()?;
        state.gone.get(&label.to_ascii_lowercase()).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_what_left_and_forgets_what_came_back() {
        let snapshot = RoutingSnapshot::build("tp.test", [crate::portal::tests::web_spec()]);
        let hash = snapshot.routes()[0].hash.clone();
        let recent = Recent::default();
        recent.observe(&snapshot);
        assert!(recent.gone(&hash).is_none());
        recent.observe(&RoutingSnapshot::empty("tp.test"));
        let gone = recent.gone(&hash).expect("remembered");
        assert_eq!(gone.route.key.operation_id, "op-1");
        recent.observe(&snapshot);
        assert!(recent.gone(&hash).is_none());
        // Forgotten after KEEP.
        recent.observe(&RoutingSnapshot::empty("tp.test"));
        recent.observe_at(
            &RoutingSnapshot::empty("tp.test"),
            SystemTime::now() + KEEP + Duration::from_secs(1),
        );
        assert!(recent.gone(&hash).is_none());
    }
}
