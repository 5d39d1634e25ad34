//! The DaemonSet controller — `apps/v1` and OpenKruise's Advanced DaemonSet — as one
//! pure function: [`plan`] (policy, nodes, pods, now) → pods to create and delete, the
//! status counts and when to look again.
//!
//! ```text
//!  DaemonSetPolicy (parsed once per spec: apps/v1 = partition 0, no selector, never paused)
//!        │
//!  plan ─┼─ 1. fit every node: nodeSelector + taints/tolerations (daemon tolerations added)
//!        ├─ 2. manage: create on eligible nodes without a pod, delete pods that must not
//!        │     stay (misscheduled, failed, duplicates). Any change ends the pass, like the
//!        │     real controller waiting for its expectations.
//!        └─ 3. rolling update (unless OnDelete or paused):
//!              order = Kruise's: nodes sorted by name, descending; already-updated first,
//!                      then updating (terminating), then rollingUpdate.selector matches
//!                      (or all); truncated to desired − partition
//!              maxSurge = 0: delete old pods within maxUnavailable (the next pass
//!                            creates their replacements)
//!              maxSurge > 0: create new pods next to old ones within maxSurge, delete an
//!                            old pod once the new one on its node is available
//! ```
//!
//! Pause and partition act on the *update*, not on placement: a node with no daemon pod
//! (a new node, or one whose pod died) gets one at the update revision even while paused
//! or partitioned, exactly as Kruise's `manage` step does. So "paused" means no old pod
//! is deleted and no pod is surged next to a live one; "partition P" means at most
//! desired − P nodes are touched by the update.
//!
//! Percentages scale against `desiredNumberScheduled` and round **up** for both
//! maxUnavailable and maxSurge (as `updatedDesiredNodeCounts` does); if both come out 0,
//! maxUnavailable is 1.
//!
//! The key decision, where this departs from upstream on purpose: the unavailability
//! budget is counted over *every* node that should run a pod, including old pods that are
//! already unavailable (upstream replaces those "for free" without counting them, and
//! Kruise counts only the nodes left after the partition filter). Unavailable old pods are
//! still replaced at once, but they use up budget, so the simulator can promise what a
//! release relies on: a rollout never makes more than maxUnavailable nodes lack an
//! available daemon pod.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{PodTemplateSpec, Toleration};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use shoal_core::FieldError;
use shoal_core::kinds::{AdvancedDaemonSetSpec, DaemonSetUpdateStrategyType, IntOrPercent};
use shoal_core::selector::LabelSelector;

use crate::pod::{Fit, NodeView, PodPhase, PodView, Revision, fit};

/// How a DaemonSet replaces its pods, parsed from either API.
#[derive(Clone, Debug, PartialEq)]
pub struct DaemonSetPolicy {
    /// `template.spec.nodeSelector`.
    pub node_selector: BTreeMap<String, String>,
    /// `template.spec.tolerations`.
    pub tolerations: Vec<Toleration>,
    /// `minReadySeconds`.
    pub min_ready: SignedDuration,
    pub strategy: DaemonStrategy,
}

#[derive(Clone, Debug, PartialEq)]
pub enum DaemonStrategy {
    /// Old pods are replaced only when someone deletes them.
    OnDelete,
    RollingUpdate(DaemonRollingUpdate),
}

/// `updateStrategy.rollingUpdate`, with Kruise's extras (zero/empty for apps/v1).
#[derive(Clone, Debug, PartialEq)]
pub struct DaemonRollingUpdate {
    pub max_unavailable: IntOrPercent,
    pub max_surge: IntOrPercent,
    /// Number of nodes kept at the old revision.
    pub partition: u32,
    pub paused: bool,
    /// Only nodes matching it are updated.
    pub selector: Option<LabelSelector>,
}

impl Default for DaemonRollingUpdate {
    fn default() -> Self {
        DaemonRollingUpdate {
            max_unavailable: IntOrPercent::Int(1),
            max_surge: IntOrPercent::Int(0),
            partition: 0,
            paused: false,
            selector: None,
        }
    }
}

fn int_or_percent(
    field: &str,
    v: Option<&IntOrString>,
    default: u32,
) -> Result<IntOrPercent, FieldError> {
    match v {
        None => Ok(IntOrPercent::Int(default)),
        Some(v) => IntOrPercent::from_k8s(v).map_err(|e| FieldError::invalid(field, e)),
    }
}

fn template_parts(template: &PodTemplateSpec) -> (BTreeMap<String, String>, Vec<Toleration>) {
    let spec = template.spec.as_ref();
    (
        spec.and_then(|s| s.node_selector.clone())
            .unwrap_or_default(),
        spec.and_then(|s| s.tolerations.clone()).unwrap_or_default(),
    )
}

fn min_ready(field: &str, v: Option<i32>) -> Result<SignedDuration, FieldError> {
    match v.unwrap_or(0) {
        s if s < 0 => Err(FieldError::invalid(
            field,
            format!("{s}: must be greater than or equal to 0"),
        )),
        s => Ok(SignedDuration::from_secs(i64::from(s))),
    }
}

impl DaemonSetPolicy {
    /// The policy of an `apps/v1` DaemonSet.
    ///
    /// # Errors
    /// A [`FieldError`] naming the field for an unknown strategy type or a bad
    /// int-or-percent value.
    pub fn from_apps_v1(
        spec: &k8s_openapi::api::apps::v1::DaemonSetSpec,
    ) -> Result<Self, FieldError> {
        let (node_selector, tolerations) = template_parts(&spec.template);
        let us = spec.update_strategy.as_ref();
        let strategy = match us
            .and_then(|u| u.type_.as_deref())
            .unwrap_or("RollingUpdate")
        {
            "OnDelete" => DaemonStrategy::OnDelete,
            "RollingUpdate" => {
                let ru = us.and_then(|u| u.rolling_update.as_ref());
                DaemonStrategy::RollingUpdate(DaemonRollingUpdate {
                    max_unavailable: int_or_percent(
                        "spec.updateStrategy.rollingUpdate.maxUnavailable",
                        ru.and_then(|r| r.max_unavailable.as_ref()),
                        1,
                    )?,
                    max_surge: int_or_percent(
                        "spec.updateStrategy.rollingUpdate.maxSurge",
                        ru.and_then(|r| r.max_surge.as_ref()),
                        0,
                    )?,
                    ..DaemonRollingUpdate::default()
                })
            }
            other => {
                return Err(FieldError::new(
                    "spec.updateStrategy.type",
                    shoal_core::FieldErrorKind::NotSupported,
                    format!("{other:?}: supported values: \"OnDelete\", \"RollingUpdate\""),
                ));
            }
        };
        Ok(DaemonSetPolicy {
            node_selector,
            tolerations,
            min_ready: min_ready("spec.minReadySeconds", spec.min_ready_seconds)?,
            strategy,
        })
    }

    /// The policy of an OpenKruise Advanced DaemonSet. `rollingUpdateType` is not
    /// consulted: like current Kruise, a maxSurge above 0 means surging.
    ///
    /// # Errors
    /// A [`FieldError`] naming the field for a negative partition, a bad int-or-percent
    /// value or a bad rollingUpdate selector.
    pub fn from_kruise(spec: &AdvancedDaemonSetSpec) -> Result<Self, FieldError> {
        const RU: &str = "spec.updateStrategy.rollingUpdate";
        let (node_selector, tolerations) = template_parts(&spec.template);
        let us = spec.update_strategy.as_ref();
        let strategy = match us
            .and_then(|u| u.type_)
            .unwrap_or(DaemonSetUpdateStrategyType::RollingUpdate)
        {
            DaemonSetUpdateStrategyType::OnDelete => DaemonStrategy::OnDelete,
            DaemonSetUpdateStrategyType::RollingUpdate => {
                let ru = us.and_then(|u| u.rolling_update.as_ref());
                let partition = ru.and_then(|r| r.partition).unwrap_or(0);
                let partition = u32::try_from(partition).map_err(|_| {
                    FieldError::invalid(
                        format!("{RU}.partition"),
                        format!("{partition}: must be greater than or equal to 0"),
                    )
                })?;
                let selector = match ru.and_then(|r| r.selector.as_ref()) {
                    None => None,
                    Some(s) => Some(
                        LabelSelector::from_k8s(s)
                            .map_err(|e| FieldError::invalid(format!("{RU}.selector"), e.0))?,
                    ),
                };
                DaemonStrategy::RollingUpdate(DaemonRollingUpdate {
                    max_unavailable: int_or_percent(
                        &format!("{RU}.maxUnavailable"),
                        ru.and_then(|r| r.max_unavailable.as_ref()),
                        1,
                    )?,
                    max_surge: int_or_percent(
                        &format!("{RU}.maxSurge"),
                        ru.and_then(|r| r.max_surge.as_ref()),
                        0,
                    )?,
                    partition,
                    paused: ru.and_then(|r| r.paused).unwrap_or(false),
                    selector,
                })
            }
        };
        Ok(DaemonSetPolicy {
            node_selector,
            tolerations,
            min_ready: min_ready("spec.minReadySeconds", spec.min_ready_seconds)?,
            strategy,
        })
    }
}

/// A pod to create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodCreate {
    /// Index into the `nodes` slice.
    pub node: u32,
    pub revision: Revision,
}

/// The status counts of a DaemonSet (both APIs use these names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DaemonSetCounts {
    pub desired_number_scheduled: u32,
    pub current_number_scheduled: u32,
    pub updated_number_scheduled: u32,
    pub number_ready: u32,
    pub number_available: u32,
    pub number_unavailable: u32,
    pub number_misscheduled: u32,
}

/// What the controller does in one pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DaemonSetPlan {
    pub create: Vec<PodCreate>,
    /// Ids of pods to delete.
    pub delete: Vec<u64>,
    /// Counts over the pods as given (before this plan is applied).
    pub status: DaemonSetCounts,
    /// When a ready pod becomes available (minReadySeconds), so the driver looks again.
    pub requeue_at: Option<Timestamp>,
}

impl DaemonSetPlan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.delete.is_empty()
    }
}

/// The effective (maxUnavailable, maxSurge) for `desired` nodes.
pub fn effective_budget(ru: &DaemonRollingUpdate, desired: u32) -> (u32, u32) {
    let surge = ru.max_surge.scaled(desired, true);
    let unavailable = ru.max_unavailable.scaled(desired, true);
    if surge == 0 && unavailable == 0 {
        (1, 0)
    } else {
        (unavailable, surge)
    }
}

/// The live pods on one node, split by revision (oldest first within each).
#[derive(Default)]
struct OnNode<'p> {
    new: Vec<&'p PodView>,
    old: Vec<&'p PodView>,
    terminating: bool,
}

/// One pass of the DaemonSet controller. See the module docs.
pub fn plan(
    policy: &DaemonSetPolicy,
    update_revision: Revision,
    nodes: &[NodeView<'_>],
    pods: &[PodView],
    now: Timestamp,
) -> DaemonSetPlan {
    let fits: Vec<Fit> = nodes
        .iter()
        .map(|n| fit(n, &policy.node_selector, &policy.tolerations, true))
        .collect();
    let mut on: Vec<OnNode<'_>> = (0..nodes.len()).map(|_| OnNode::default()).collect();
    let mut out = DaemonSetPlan::default();
    let mut sorted: Vec<&PodView> = pods.iter().collect();
    sorted.sort_by_key(|p| (p.created, p.id));
    for p in sorted {
        let slot = p.node.and_then(|n| on.get_mut(n as usize));
        match slot {
            // A pod on no node, or a node the caller did not pass: not ours to keep.
            None => {
                if !p.terminating {
                    out.delete.push(p.id);
                }
            }
            Some(_) if p.terminating => {
                if let Some(s) = slot {
                    s.terminating = true;
                }
            }
            Some(_) if p.phase == PodPhase::Failed || p.phase == PodPhase::Succeeded => {
                // Daemon pods must run forever: the controller deletes finished ones.
                out.delete.push(p.id);
            }
            Some(s) if p.revision == update_revision => s.new.push(p),
            Some(s) => s.old.push(p),
        }
    }

    // Status, over the pods as given.
    let min_ready = policy.min_ready;
    let st = &mut out.status;
    for (i, node) in on.iter().enumerate() {
        let live = node.new.iter().chain(&node.old);
        let has_live = !node.new.is_empty() || !node.old.is_empty();
        if fits[i].should_run {
            st.desired_number_scheduled += 1;
            if has_live {
                st.current_number_scheduled += 1;
                if live.clone().any(|p| p.is_ready()) {
                    st.number_ready += 1;
                }
                if live.clone().any(|p| p.is_available(min_ready, now)) {
                    st.number_available += 1;
                }
                if !node.new.is_empty() {
                    st.updated_number_scheduled += 1;
                }
            }
        } else if has_live {
            st.number_misscheduled += 1;
        }
    }
    st.number_unavailable = st.desired_number_scheduled - st.number_available;
    out.requeue_at = pods
        .iter()
        .filter(|p| p.is_live())
        .filter_map(|p| p.available_at(min_ready, now))
        .min();

    let rolling = match &policy.strategy {
        DaemonStrategy::RollingUpdate(ru) => Some(ru),
        DaemonStrategy::OnDelete => None,
    };
    let (max_unavailable, max_surge) = rolling
        .map(|ru| effective_budget(ru, out.status.desired_number_scheduled))
        .unwrap_or((1, 0));
    let surging = max_surge > 0;

    // Manage: the right number of pods on the right nodes.
    for (i, node) in on.iter().enumerate() {
        let f = fits[i];
        if !f.should_continue {
            out.delete
                .extend(node.new.iter().chain(&node.old).map(|p| p.id));
            continue;
        }
        match (node.new.len(), node.old.len()) {
            (0, 0) => {
                if f.should_run {
                    out.create.push(PodCreate {
                        node: i as u32,
                        revision: update_revision,
                    });
                }
            }
            // Surging allows one old and one new pod per node; keep the oldest of each.
            (n, o) if surging => {
                out.delete
                    .extend(node.new.iter().skip(1.min(n)).map(|p| p.id));
                out.delete
                    .extend(node.old.iter().skip(1.min(o)).map(|p| p.id));
            }
            // Otherwise one pod per node: keep the oldest.
            _ => {
                let mut all: Vec<&&PodView> = node.new.iter().chain(&node.old).collect();
                all.sort_by_key(|p| (p.created, p.id));
                out.delete.extend(all.iter().skip(1).map(|p| p.id));
            }
        }
    }
    if !out.is_empty() {
        return out;
    }

    let Some(ru) = rolling else { return out };
    if ru.paused {
        return out;
    }

    // Which nodes may update, in Kruise's order.
    let mut names: Vec<usize> = (0..nodes.len())
        .filter(|i| {
            fits[*i].should_run
                && (!on[*i].new.is_empty() || !on[*i].old.is_empty() || on[*i].terminating)
        })
        .collect();
    names.sort_by(|a, b| nodes[*b].name.cmp(nodes[*a].name));
    let (mut updated, mut updating, mut selected) = (Vec::new(), Vec::new(), Vec::new());
    for i in &names {
        let n = &on[*i];
        if !n.new.is_empty() {
            updated.push(*i);
        } else if n.terminating {
            updating.push(*i);
        } else if ru
            .selector
            .as_ref()
            .is_none_or(|s| s.matches(nodes[*i].labels))
        {
            selected.push(*i);
        }
    }
    let max_update = names.len().saturating_sub(ru.partition as usize);
    let mut may_update: Vec<usize> = updated;
    may_update.extend(updating);
    may_update.extend(selected);
    may_update.truncate(max_update);
    let mut rank = vec![usize::MAX; nodes.len()];
    for (r, i) in may_update.iter().enumerate() {
        rank[*i] = r;
    }
    let eligible = |i: usize| rank[i] != usize::MAX;

    if !surging {
        let mut num_unavailable = 0u32;
        let mut replace_now = Vec::new();
        let mut candidates = Vec::new();
        for (i, node) in on.iter().enumerate() {
            if !fits[i].should_run {
                continue;
            }
            match (node.new.first(), node.old.first()) {
                (None, None) | (Some(_), Some(_)) => num_unavailable += 1,
                (Some(new), None) => {
                    if !new.is_available(min_ready, now) {
                        num_unavailable += 1;
                    }
                }
                (None, Some(old)) => {
                    if !old.is_available(min_ready, now) {
                        num_unavailable += 1;
                        if eligible(i) {
                            replace_now.push(old.id);
                        }
                    } else if eligible(i) {
                        candidates.push((rank[i], old.id));
                    }
                }
            }
        }
        candidates.sort_unstable();
        let remaining = max_unavailable.saturating_sub(num_unavailable) as usize;
        out.delete.extend(replace_now);
        out.delete
            .extend(candidates.iter().take(remaining).map(|c| c.1));
    } else {
        let mut num_surge = 0u32;
        let mut replace_now = Vec::new();
        let mut candidates = Vec::new();
        for (i, node) in on.iter().enumerate() {
            if !fits[i].should_run {
                continue;
            }
            match (node.new.first(), node.old.first()) {
                (_, None) => {}
                (None, Some(old)) => {
                    if !eligible(i) {
                        continue;
                    }
                    if !old.is_available(min_ready, now) {
                        replace_now.push(i);
                    } else {
                        candidates.push((rank[i], i));
                    }
                }
                (Some(new), Some(old)) => {
                    if new.is_available(min_ready, now) {
                        out.delete.push(old.id);
                    } else {
                        num_surge += 1;
                    }
                }
            }
        }
        candidates.sort_unstable();
        let remaining = max_surge.saturating_sub(num_surge) as usize;
        let create = replace_now
            .into_iter()
            .chain(candidates.iter().take(remaining).map(|c| c.1));
        out.create.extend(create.map(|i| PodCreate {
            node: i as u32,
            revision: update_revision,
        }));
    }
    out
}

#[cfg(test)]
mod tests;
