//! The shared state of one running dev cluster: the Cypress tree, the operations store, the job
//! runner, users, knobs and request counters. Owned by the server and the [`crate::DevCluster`]
//! handle through an `Arc`.

use crate::auth::Users;
use crate::cypress::Cypress;
use crate::ids::UniqueClock;
use crate::knobs::Knobs;
use crate::operations::{synthetic_operations, OpsStore, SyntheticLoad, SyntheticSummary};
use crate::runner::Runner;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

pub struct Shared {
    pub addr: SocketAddr,
    pub cypress: Mutex<Cypress>,
    pub store: Arc<Mutex<OpsStore>>,
    pub runner: Runner,
    pub users: Users,
    pub knobs: Knobs,
    pub request_counts: Mutex<BTreeMap<String, u64>>,
    pub clock: UniqueClock,
    pub transactions: Mutex<crate::transactions::Transactions>,
}

impl Shared {
    /// Adds synthetic operations (no processes).
    pub fn add_synthetic(
        &self,
        load: &SyntheticLoad,
    ) -> Result<SyntheticSummary, crate::error::YtError> {
        let mut store = self
            .store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        synthetic_operations(&mut store, load, || self.clock.next())
    }

    pub fn count_request(&self, command: &str) {
        let mut counts = self
            .request_counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *counts.entry(command.to_string()).or_insert(0) += 1;
    }
}
