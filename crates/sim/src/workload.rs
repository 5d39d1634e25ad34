//! The simulated workload controllers, driver side: reads workload objects, asks the pure
//! rollout decisions what to do, and applies their plans to the cluster's objects.

use std::collections::HashSet;

use jiff::Timestamp;

use crate::driver::{Next, NodeInfo};
use crate::state::ClusterState;

/// The workloads of one cluster, as read at the start of a step.
#[derive(Debug, Default)]
pub struct Workloads {
    uids: HashSet<String>,
}

impl Workloads {
    pub fn read(_state: &ClusterState) -> Self {
        Workloads::default()
    }

    /// Whether a live workload has this uid.
    pub fn owns(&self, uid: &str) -> bool {
        self.uids.contains(uid)
    }

    pub fn reconcile(
        &mut self,
        _state: &mut ClusterState,
        _nodes: &[NodeInfo],
        _now: Timestamp,
        _names: &mut u64,
        _next: &mut Next,
    ) {
    }
}
