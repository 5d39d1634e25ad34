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
//! ```
//!
//! The key design decision: the decisions (which pod to replace next, when a pod becomes
//! ready, whether a fault fires) are pure functions over small views, property-tested
//! without a server; the state they act on is compact (a pod is a few dozen bytes, its
//! Kubernetes object is rendered on read), so 100,000 nodes fit in one process.

pub mod broadcastjob;
pub mod daemonset;
pub mod deployment;
pub mod faults;
pub mod fleet;
pub mod kubelet;
pub mod pod;
pub mod statefulset;
