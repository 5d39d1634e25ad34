//! shoal-sim: a fleet simulator — thousands of logical Kubernetes clusters in one process.
//!
//! ```text
//!  fleet.yaml ──▶ fleet (expand: clusters × nodes with attributes)
//!                    │
//!  per cluster:  compact state (nodes, pods, workloads)   ◀── API writes (kubectl, fleet driver)
//!                    │ step(now) on the shared virtual clock
//!                    ▼
//!  pure decisions: workload rollouts (DaemonSet, Advanced DaemonSet, Deployment,
//!                  StatefulSet, BroadcastJob), kubelet (pod lifecycle), faults (seeded)
//!                    │ after each step that changed something
//!                    ▼
//!  ledger (per cluster): per workload, versions (where they ran, crash-looped), peak
//!                        unavailability against maxUnavailable ──▶ Simulation::ledger(s)
//! ```
//!
//! The key design decision: the decisions (which pod to replace next, when a pod becomes
//! ready, whether a fault fires) are pure functions over small views, property-tested
//! without a server; the state they act on is compact (a pod is a few dozen bytes, its
//! Kubernetes object is rendered on read), so 100,000 nodes fit in one process.
//!
//! The pure modules (no IO, no async, no clock reads: `now` is always an argument):
//!
//! - [`fleet`]: the fleet definition (YAML) and its deterministic expansion;
//! - [`faults`]: fault profiles (YAML) compiled to a seeded, stateless [`faults::FaultModel`];
//! - [`kubelet`]: a pod's lifecycle on its node as a state machine over time;
//! - [`pod`]: the compact pod and node views, and node fit (selector, taints);
//! - [`daemonset`]: `apps/v1` DaemonSet and OpenKruise Advanced DaemonSet rollouts;
//! - [`deployment`]: Deployment → ReplicaSets → pods, and pod scheduling;
//! - [`statefulset`]: StatefulSet ordinals, partitions and update order;
//! - [`broadcastjob`]: OpenKruise BroadcastJob.
//!
//! - [`ledger`]: the history of each workload as the driver saw it — per version the first
//!   time it ran, the nodes that ever ran it and ever crash-looped it, and the peak number
//!   of pods unavailable against the budget (pods down with their NotReady node are counted
//!   apart). [`Simulation::ledger`] and [`Simulation::ledgers`] read it; `shoal` serves it
//!   as `GET /sim/history`. It is what a test asserts a release did, from the simulator's
//!   own record rather than by sampling the API.
//!
//! Each controller module has a `plan` function: views in, a plan out (pods to create and
//! delete, status counts, when to look again). The driver applies the plan to its compact
//! state and calls again; plans are idempotent for an unchanged input.

pub mod backend;
pub mod broadcastjob;
pub mod daemonset;
pub mod deployment;
pub mod driver;
pub mod event;
pub mod faults;
pub mod fleet;
pub mod kubelet;
pub mod ledger;
pub mod pod;
pub mod runtime;
pub mod state;
pub mod statefulset;
pub mod template;
pub mod workload;

pub use backend::SimCluster;
pub use runtime::Simulation;
