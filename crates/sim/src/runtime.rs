//! A running simulation: the fleet's clusters, seeded with their nodes, and one driver task
//! per cluster on the shared clock.
//!
//! ```text
//!  Fleet (fleet.rs, expanded) ──build──▶ Simulation
//!                                          ├─ members: Vec<Member { SimCluster, labels }>
//!                                          ├─ by_name: HashMap<name, index>
//!                                          ├─ faults:  RwLock<Arc<FaultModel>>   (swappable at run time)
//!                                          ├─ ledger(name), ledgers() ─▶ each cluster's ledger
//!                                          │            (what happened, recorded by its driver)
//!                                          └─ spawn() ─▶ one `driver::run` task per cluster
//! ```
//!
//! The key decision: clusters share nothing mutable. Each has its own lock, revision and
//! driver task, so 10,000 clusters scale across the runtime's threads and a hot cluster
//! never stalls a quiet one; what they share (node classes, the fault model, the clock)
//! is immutable or swapped whole.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use serde_json::{Value as Json, json};
use shoal_apiserver::cluster::ClusterDirectory;
use shoal_apiserver::{Registry, ResourceDef};
use shoal_core::clock::SharedClock;
use shoal_store::{Precondition, Store};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backend::{FaultSlot, SimCluster};
use crate::driver;
use crate::faults::FaultModel;
use crate::fleet::{Fleet, NodeClass};
use crate::ledger::ClusterLedger;
use crate::state::{NodeProfile, NodeRecord, Value};
use crate::template::key;

/// The namespaces every simulated cluster starts with, as a kubeadm cluster has them.
pub const NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Tunables of a simulation.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// How much history each cluster keeps for watchers (real time, memory-capped).
    pub history: shoal_store::history::Retention,
    /// How long a pod takes from scheduled to running (virtual time).
    pub startup_latency: jiff::SignedDuration,
    /// How long a running pod takes to pass readiness (virtual time).
    pub ready_after: jiff::SignedDuration,
    /// How long a run-to-completion (BroadcastJob) pod runs before it exits 0 (virtual
    /// time).
    pub job_duration: jiff::SignedDuration,
    /// How long a node a client creates takes to boot and report Ready (virtual time).
    pub node_boot: jiff::SignedDuration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            history: crate::state::DEFAULT_RETENTION,
            startup_latency: jiff::SignedDuration::from_secs(5),
            ready_after: jiff::SignedDuration::from_secs(5),
            job_duration: jiff::SignedDuration::from_secs(10),
            node_boot: jiff::SignedDuration::from_secs(30),
        }
    }
}

/// One simulated cluster and its attribute labels.
#[derive(Debug)]
pub struct Member {
    pub cluster: SimCluster,
    pub labels: Arc<BTreeMap<String, String>>,
}

/// A fleet of simulated clusters.
#[derive(Debug)]
pub struct Simulation {
    members: Vec<Member>,
    by_name: HashMap<String, usize>,
    clock: SharedClock,
    config: SimConfig,
    faults: FaultSlot,
}

impl Simulation {
    /// Builds every cluster of `fleet` with its nodes and namespaces, at the clock's now.
    pub fn build(fleet: &Fleet, clock: SharedClock, config: SimConfig) -> Self {
        let now = clock.now();
        let faults: FaultSlot = Arc::new(RwLock::new(Arc::new(FaultModel::none())));
        let mut profiles: HashMap<*const NodeClass, Arc<NodeProfile>> = HashMap::new();
        let mut members = Vec::with_capacity(fleet.clusters.len());
        let mut by_name = HashMap::with_capacity(fleet.clusters.len());
        for fc in &fleet.clusters {
            let labels = Arc::new(fc.labels.clone());
            let cluster = SimCluster::new(
                fc.name.clone(),
                labels.clone(),
                clock.clone(),
                faults.clone(),
                config.history,
            );
            cluster.apply(|state| {
                for ns in NAMESPACES {
                    let obj = json!({"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": ns, "uid": uuid::Uuid::new_v4().to_string(),
                                     "creationTimestamp": now.to_string()},
                        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
                    let bytes = bytes::Bytes::from(obj.to_string());
                    let _ = state.put(
                        &key("", "namespaces", None, ns),
                        Value::Raw(bytes),
                        Precondition::None,
                    );
                }
                for node in &fc.nodes {
                    let class = fc.class_of(*node);
                    let profile = profiles
                        .entry(Arc::as_ptr(class))
                        .or_insert_with(|| Arc::new(node_profile(class)))
                        .clone();
                    let record = NodeRecord {
                        profile,
                        uid: uuid::Uuid::new_v4(),
                        created: now,
                        ready: true,
                        ready_since: now,
                        not_ready_reason: None,
                        unschedulable: false,
                        boot_until: None,
                    };
                    let _ = state.put(
                        &key("", "nodes", None, &fc.node_name(node.index)),
                        Value::Node(Arc::new(record)),
                        Precondition::None,
                    );
                }
            });
            by_name.insert(fc.name.clone(), members.len());
            members.push(Member { cluster, labels });
        }
        Simulation {
            members,
            by_name,
            clock,
            config,
            faults,
        }
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn get(&self, name: &str) -> Option<&Member> {
        self.by_name.get(name).map(|i| &self.members[*i])
    }

    /// What happened in cluster `name` so far (see [`crate::ledger`]); `None` for a
    /// cluster the simulation does not have.
    pub fn ledger(&self, name: &str) -> Option<ClusterLedger> {
        self.get(name).map(|m| m.cluster.ledger())
    }

    /// Every cluster's ledger, in the fleet's order.
    pub fn ledgers(&self) -> Vec<ClusterLedger> {
        self.members.iter().map(|m| m.cluster.ledger()).collect()
    }

    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Replaces the fault model (a fault profile changed at run time).
    pub fn set_faults(&self, model: FaultModel) {
        *self.faults.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(model);
        for m in &self.members {
            m.cluster.poke();
        }
    }

    /// The shared slot of the fault model (what drivers read each step).
    pub fn fault_handle(&self) -> FaultSlot {
        self.faults.clone()
    }

    /// The fault model in force.
    pub fn faults(&self) -> Arc<FaultModel> {
        self.faults
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Starts one driver per cluster; they stop when `cancel` is cancelled.
    pub fn spawn(&self, cancel: &CancellationToken) -> JoinSet<()> {
        let mut set = JoinSet::new();
        for m in &self.members {
            let ctx = driver::Context {
                cluster: m.cluster.clone(),
                labels: m.labels.clone(),
                faults: self.faults.clone(),
                config: self.config.clone(),
            };
            let span = tracing::info_span!("sim_driver", cluster = %m.cluster.name());
            set.spawn(driver::run(ctx, cancel.child_token()).instrument(span));
        }
        set
    }
}

/// The Node object shared by every node of `class`, without identity and conditions.
fn node_profile(class: &NodeClass) -> NodeProfile {
    let p = &class.profile;
    let mut labels: BTreeMap<String, Json> = class
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    labels
        .entry("kubernetes.io/os".into())
        .or_insert(json!("linux"));
    labels
        .entry("kubernetes.io/arch".into())
        .or_insert(json!("amd64"));
    let mut base = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"labels": labels},
        "spec": {},
        "status": {
            "capacity": p.capacity,
            "allocatable": p.capacity,
            "nodeInfo": {
                "kernelVersion": p.kernel,
                "osImage": p.os_image,
                "kubeletVersion": p.kubelet_version,
                "kubeProxyVersion": p.kubelet_version,
                "containerRuntimeVersion": p.container_runtime_version,
                "architecture": "amd64",
                "operatingSystem": "linux",
                "machineID": "", "systemUUID": "", "bootID": "",
            },
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        },
    });
    if !p.taints.is_empty() {
        base["spec"]["taints"] = serde_json::to_value(&p.taints).unwrap_or(json!([]));
    }
    NodeProfile::from_base(base)
}

impl ClusterDirectory for Simulation {
    fn lookup(&self, name: &str) -> Option<Store> {
        self.get(name).map(|m| m.cluster.store())
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.by_name.keys().cloned().collect();
        names.sort();
        names
    }
}

/// The kinds every simulated cluster serves: the member-cluster built-ins and OpenKruise's
/// Advanced DaemonSet and BroadcastJob.
pub fn registry() -> Registry {
    use kube::CustomResourceExt;
    use shoal_core::kinds::{AdvancedDaemonSet, BroadcastJob};
    let mut r = Registry::member_cluster();
    r.add(ResourceDef::from_crd::<AdvancedDaemonSet>(
        AdvancedDaemonSet::crd(),
    ));
    r.add(ResourceDef::from_crd::<BroadcastJob>(BroadcastJob::crd()));
    r
}
