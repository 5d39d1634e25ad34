//! The compact views of pods and nodes that every workload decision reads.
//!
//! ```text
//!  PodView  { id: u64, node: Option<u32>, revision: u32, created, ready_since, phase, terminating }
//!  NodeView { name: &str, labels: &BTreeMap (shared per node class), taints: &[Taint], unschedulable, ready }
//! ```
//!
//! A pod view is a few words: ids are integers (the driver maps them to names), a pod's
//! node is an index into the `nodes` slice passed alongside, and a revision is a small
//! integer the driver assigns to each distinct template (its `controller-revision-hash`).
//! Views are built per decision and thrown away; nothing here owns state.
//!
//! Node eligibility follows the scheduler's and the DaemonSet controller's basics:
//! `nodeSelector`, and taints with effect `NoSchedule` / `NoExecute` against the pod's
//! tolerations. A NotReady node carries `node.kubernetes.io/not-ready` and a cordoned one
//! `node.kubernetes.io/unschedulable` implicitly, as the node lifecycle controller would
//! add them; DaemonSet pods tolerate both automatically, as Kubernetes adds those
//! tolerations to every daemon pod.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Taint, Toleration};

/// A small integer naming one pod template (one `controller-revision-hash`).
pub type Revision = u32;

/// `status.phase` of a pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PodPhase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
}

/// What a workload controller needs to know about one of its pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodView {
    pub id: u64,
    /// Index into the `nodes` slice; `None` while unscheduled.
    pub node: Option<u32>,
    pub revision: Revision,
    pub created: Timestamp,
    /// Since when the pod has been Ready; `None` when not ready.
    pub ready_since: Option<Timestamp>,
    pub phase: PodPhase,
    /// Being deleted (graceful termination); ignored by decisions except for ordering.
    pub terminating: bool,
    /// Ordinal of a StatefulSet pod; 0 elsewhere.
    pub ordinal: u32,
    /// Container restarts.
    pub restarts: u32,
}

impl PodView {
    pub fn is_ready(&self) -> bool {
        self.ready_since.is_some()
    }

    /// Ready for at least `min_ready` at `now` (`podutil.IsPodAvailable`).
    pub fn is_available(&self, min_ready: SignedDuration, now: Timestamp) -> bool {
        self.ready_since.is_some_and(|t| {
            min_ready.is_zero() || t.saturating_add(min_ready).is_ok_and(|a| a <= now)
        })
    }

    /// When the pod becomes available if it stays ready, if that is after `now`.
    pub fn available_at(&self, min_ready: SignedDuration, now: Timestamp) -> Option<Timestamp> {
        let t = self.ready_since?.saturating_add(min_ready).ok()?;
        (t > now).then_some(t)
    }

    /// Neither terminating nor finished.
    pub fn is_live(&self) -> bool {
        !self.terminating && !matches!(self.phase, PodPhase::Succeeded | PodPhase::Failed)
    }
}

/// A node, as workload decisions see it.
#[derive(Clone, Copy, Debug)]
pub struct NodeView<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub taints: &'a [Taint],
    /// Cordoned (`spec.unschedulable`).
    pub unschedulable: bool,
    /// The node's `Ready` condition.
    pub ready: bool,
}

pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// Taint keys every DaemonSet pod tolerates (`util.AddOrUpdateDaemonPodTolerations`).
const DAEMON_TOLERATED: [&str; 7] = [
    TAINT_NOT_READY,
    TAINT_UNREACHABLE,
    TAINT_UNSCHEDULABLE,
    "node.kubernetes.io/disk-pressure",
    "node.kubernetes.io/memory-pressure",
    "node.kubernetes.io/pid-pressure",
    "node.kubernetes.io/network-unavailable",
];

/// Whether `toleration` tolerates `taint` (`Toleration.ToleratesTaint`).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref()
        && !effect.is_empty()
        && effect != taint.effect
    {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        // An empty key with Exists tolerates everything.
        "Exists" => true,
        "Equal" | "" => {
            !key.is_empty()
                && toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// Where a pod template may run on a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fit {
    /// A new pod may be placed there.
    pub should_run: bool,
    /// An existing pod may stay there (only `NoExecute` taints evict).
    pub should_continue: bool,
}

/// Checks `nodeSelector` and taints of `node` for a pod with `tolerations`; `daemon`
/// adds the tolerations Kubernetes gives every DaemonSet pod.
pub fn fit(
    node: &NodeView<'_>,
    node_selector: &BTreeMap<String, String>,
    tolerations: &[Toleration],
    daemon: bool,
) -> Fit {
    if !node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v))
    {
        return Fit {
            should_run: false,
            should_continue: false,
        };
    }
    let implicit_not_ready = [
        mk_taint(TAINT_NOT_READY, "NoSchedule"),
        mk_taint(TAINT_NOT_READY, "NoExecute"),
    ];
    let implicit_cordon = [mk_taint(TAINT_UNSCHEDULABLE, "NoSchedule")];
    let implicit: &[Taint] = match (node.ready, node.unschedulable) {
        (false, _) => &implicit_not_ready,
        (true, true) => &implicit_cordon,
        (true, false) => &[],
    };
    let mut out = Fit {
        should_run: true,
        should_continue: true,
    };
    let extra_cordon = (!node.ready && node.unschedulable).then(|| &implicit_cordon[0]);
    for taint in node.taints.iter().chain(implicit).chain(extra_cordon) {
        let (no_schedule, no_execute) = match taint.effect.as_str() {
            "NoSchedule" => (true, false),
            "NoExecute" => (true, true),
            _ => (false, false), // PreferNoSchedule never blocks.
        };
        if !no_schedule {
            continue;
        }
        let tolerated = (daemon && DAEMON_TOLERATED.contains(&taint.key.as_str()))
            || tolerations.iter().any(|t| tolerates(t, taint));
        if !tolerated {
            out.should_run = false;
            if no_execute {
                out.should_continue = false;
            }
        }
    }
    out
}

fn mk_taint(key: &str, effect: &str) -> Taint {
    Taint {
        key: key.into(),
        effect: effect.into(),
        ..Taint::default()
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub fn t0() -> Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    pub fn mk_pod(id: u64, node: u32, revision: Revision, ready: bool) -> PodView {
        PodView {
            id,
            node: Some(node),
            revision,
            created: t0(),
            ready_since: ready.then(t0),
            phase: if ready {
                PodPhase::Running
            } else {
                PodPhase::Pending
            },
            terminating: false,
            ordinal: 0,
            restarts: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_toleration(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
        Toleration {
            key: (!key.is_empty()).then(|| key.into()),
            operator: Some(op.into()),
            value: (!value.is_empty()).then(|| value.into()),
            effect: (!effect.is_empty()).then(|| effect.into()),
            toleration_seconds: None,
        }
    }

    fn mk_node<'a>(labels: &'a BTreeMap<String, String>, taints: &'a [Taint]) -> NodeView<'a> {
        NodeView {
            name: "n",
            labels,
            taints,
            unschedulable: false,
            ready: true,
        }
    }

    #[test]
    fn tolerations_match_like_kubernetes() {
        let taint = Taint {
            key: "gpu".into(),
            value: Some("true".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        };
        assert!(tolerates(
            &mk_toleration("gpu", "Equal", "true", ""),
            &taint
        ));
        assert!(tolerates(
            &mk_toleration("gpu", "Exists", "", "NoSchedule"),
            &taint
        ));
        assert!(tolerates(&mk_toleration("", "Exists", "", ""), &taint));
        assert!(!tolerates(
            &mk_toleration("gpu", "Equal", "false", ""),
            &taint
        ));
        assert!(!tolerates(
            &mk_toleration("gpu", "Exists", "", "NoExecute"),
            &taint
        ));
        assert!(!tolerates(&mk_toleration("", "Equal", "", ""), &taint));
    }

    #[test]
    fn daemon_pods_run_on_cordoned_and_not_ready_nodes_but_respect_other_taints() {
        let labels: BTreeMap<String, String> = [("pool".to_string(), "a".to_string())].into();
        let sel: BTreeMap<String, String> = [("pool".to_string(), "a".to_string())].into();
        let mut node = mk_node(&labels, &[]);
        node.unschedulable = true;
        node.ready = false;
        assert!(fit(&node, &sel, &[], true).should_run);
        assert!(!fit(&node, &sel, &[], false).should_run);
        assert!(!fit(&node, &sel, &[], false).should_continue);
        let other: BTreeMap<String, String> = [("pool".to_string(), "b".to_string())].into();
        assert!(!fit(&node, &other, &[], true).should_continue);

        let taints = [Taint {
            key: "dedicated".into(),
            value: Some("db".into()),
            effect: "NoExecute".into(),
            time_added: None,
        }];
        let node = mk_node(&labels, &taints);
        let f = fit(&node, &sel, &[], true);
        assert_eq!((f.should_run, f.should_continue), (false, false));
        let tol = [mk_toleration("dedicated", "Equal", "db", "NoExecute")];
        assert!(fit(&node, &sel, &tol, true).should_run);
        let soft = [Taint {
            effect: "NoSchedule".into(),
            ..taints[0].clone()
        }];
        let f = fit(&mk_node(&labels, &soft), &sel, &[], true);
        assert_eq!((f.should_run, f.should_continue), (false, true));
    }
}
