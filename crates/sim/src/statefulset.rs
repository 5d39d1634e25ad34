//! The StatefulSet controller as a pure function over a set's pods (by ordinal).
//!
//! ```text
//!  ordinals 0 … replicas−1 ("slots")                  ordinals ≥ replicas ("condemned")
//!  ┌───┬───┬───┬───┬───┐                              ┌───┬───┐
//!  │ 0 │ 1 │ 2 │ 3 │ 4 │  create missing, ascending   │ 5 │ 6 │ delete, descending
//!  └───┴───┴───┴───┴───┘                              └───┴───┘
//!    ◀─ partition ─▶ ◀── rolling update: descending, within maxUnavailable
//!    kept at current    (ordinals ≥ partition get the update revision)
//! ```
//!
//! `OrderedReady` stops at the first pod that is not running and ready (creation waits
//! for its predecessors, scale-down and updates for every pod to be healthy);
//! `Parallel` creates and deletes without waiting. A missing pod is recreated at the
//! current revision below the partition and at the update revision from it on, so a
//! partitioned rollout stays partitioned even when pods die. The rolling update follows
//! Kubernetes' `maxUnavailable` for StatefulSets (default 1, percentages of replicas
//! rounded up, at least 1): unavailable pods anywhere in the set use up the budget.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use shoal_core::FieldError;
use shoal_core::kinds::IntOrPercent;

use crate::pod::{PodPhase, PodView, Revision};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodManagement {
    OrderedReady,
    Parallel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatefulStrategy {
    OnDelete,
    RollingUpdate {
        partition: u32,
        max_unavailable: IntOrPercent,
    },
}

/// How a StatefulSet manages its pods, parsed from `apps/v1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatefulSetPolicy {
    pub replicas: u32,
    pub management: PodManagement,
    pub strategy: StatefulStrategy,
    pub min_ready: SignedDuration,
}

impl StatefulSetPolicy {
    /// The policy of an `apps/v1` StatefulSet.
    ///
    /// # Errors
    /// A [`FieldError`] naming the field for negative counts, unknown policy names or a
    /// bad maxUnavailable.
    pub fn from_apps_v1(
        spec: &k8s_openapi::api::apps::v1::StatefulSetSpec,
    ) -> Result<Self, FieldError> {
        let non_negative = |field: &str, v: i32| {
            u32::try_from(v).map_err(|_| {
                FieldError::invalid(field, format!("{v}: must be greater than or equal to 0"))
            })
        };
        let replicas = non_negative("spec.replicas", spec.replicas.unwrap_or(1))?;
        let management = match spec
            .pod_management_policy
            .as_deref()
            .unwrap_or("OrderedReady")
        {
            "OrderedReady" => PodManagement::OrderedReady,
            "Parallel" => PodManagement::Parallel,
            other => {
                return Err(FieldError::new(
                    "spec.podManagementPolicy",
                    shoal_core::FieldErrorKind::NotSupported,
                    format!("{other:?}: supported values: \"OrderedReady\", \"Parallel\""),
                ));
            }
        };
        let us = spec.update_strategy.as_ref();
        let strategy = match us
            .and_then(|u| u.type_.as_deref())
            .unwrap_or("RollingUpdate")
        {
            "OnDelete" => StatefulStrategy::OnDelete,
            "RollingUpdate" => {
                let ru = us.and_then(|u| u.rolling_update.as_ref());
                StatefulStrategy::RollingUpdate {
                    partition: non_negative(
                        "spec.updateStrategy.rollingUpdate.partition",
                        ru.and_then(|r| r.partition).unwrap_or(0),
                    )?,
                    max_unavailable: match ru.and_then(|r| r.max_unavailable.as_ref()) {
                        None => IntOrPercent::Int(1),
                        Some(v) => IntOrPercent::from_k8s(v).map_err(|e| {
                            FieldError::invalid(
                                "spec.updateStrategy.rollingUpdate.maxUnavailable",
                                e,
                            )
                        })?,
                    },
                }
            }
            other => {
                return Err(FieldError::new(
                    "spec.updateStrategy.type",
                    shoal_core::FieldErrorKind::NotSupported,
                    format!("{other:?}: supported values: \"OnDelete\", \"RollingUpdate\""),
                ));
            }
        };
        Ok(StatefulSetPolicy {
            replicas,
            management,
            strategy,
            min_ready: SignedDuration::from_secs(i64::from(non_negative(
                "spec.minReadySeconds",
                spec.min_ready_seconds.unwrap_or(0),
            )?)),
        })
    }
}

/// A pod to create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrdinalCreate {
    pub ordinal: u32,
    pub revision: Revision,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatefulSetCounts {
    pub replicas: u32,
    pub ready_replicas: u32,
    pub available_replicas: u32,
    pub current_replicas: u32,
    pub updated_replicas: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatefulSetPlan {
    pub create: Vec<OrdinalCreate>,
    pub delete: Vec<u64>,
    pub status: StatefulSetCounts,
    /// `status.currentRevision` after this pass: it becomes the update revision once
    /// every replica runs it and is ready.
    pub current_revision: Revision,
    pub requeue_at: Option<Timestamp>,
}

impl StatefulSetPlan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.delete.is_empty()
    }
}

/// At most this many pods created in one pass (like the ReplicaSet controller's burst).
pub const BURST_CREATES: usize = 500;

fn healthy(p: &PodView) -> bool {
    !p.terminating && p.phase == PodPhase::Running && p.is_ready()
}

/// One pass of the StatefulSet controller. See the module docs.
pub fn plan(
    policy: &StatefulSetPolicy,
    current_revision: Revision,
    update_revision: Revision,
    pods: &[PodView],
    now: Timestamp,
) -> StatefulSetPlan {
    let n = policy.replicas;
    // Maps, not vectors indexed by ordinal: `replicas` comes from the user and may be
    // huge; memory and time follow the pods that exist plus one burst of creations.
    let mut slots: BTreeMap<u32, &PodView> = BTreeMap::new();
    let mut condemned: Vec<&PodView> = Vec::new();
    let mut out = StatefulSetPlan {
        create: Vec::new(),
        delete: Vec::new(),
        status: StatefulSetCounts::default(),
        current_revision,
        requeue_at: None,
    };
    let mut sorted: Vec<&PodView> = pods.iter().collect();
    sorted.sort_by_key(|p| (p.ordinal, p.created, p.id));
    let mut terminating_in_slots = BTreeSet::new();
    for p in sorted {
        let i = p.ordinal;
        if p.terminating {
            terminating_in_slots.insert(i);
            continue;
        }
        if i >= n {
            condemned.push(p);
            continue;
        }
        match slots.entry(i) {
            // A duplicate ordinal: keep the oldest.
            std::collections::btree_map::Entry::Occupied(_) => out.delete.push(p.id),
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(p);
            }
        }
    }

    let live = slots.values().chain(&condemned);
    let st = &mut out.status;
    for p in live.clone() {
        st.replicas += 1;
        st.ready_replicas += u32::from(p.is_ready());
        st.available_replicas += u32::from(p.is_available(policy.min_ready, now));
        st.current_replicas += u32::from(p.revision == current_revision);
        st.updated_replicas += u32::from(p.revision == update_revision);
    }
    out.requeue_at = live
        .filter_map(|p| p.available_at(policy.min_ready, now))
        .min();
    if out.status.updated_replicas == policy.replicas
        && out.status.ready_replicas == policy.replicas
        && condemned.is_empty()
    {
        out.current_revision = update_revision;
    }

    let monotonic = policy.management == PodManagement::OrderedReady;
    let partition = match policy.strategy {
        StatefulStrategy::RollingUpdate { partition, .. } => Some(partition),
        StatefulStrategy::OnDelete => None,
    };
    let revision_for = |ordinal: u32| match partition {
        Some(p) if ordinal < p => current_revision,
        _ => update_revision,
    };

    // Create and repair, in ordinal order.
    for i in 0..n {
        if out.create.len() >= BURST_CREATES {
            break;
        }
        match slots.get(&i).copied() {
            Some(p) if matches!(p.phase, PodPhase::Failed | PodPhase::Succeeded) => {
                out.delete.push(p.id);
                if monotonic {
                    return out;
                }
            }
            Some(p) => {
                if monotonic && !healthy(p) {
                    return out;
                }
            }
            None => {
                // Wait for a terminating pod of this ordinal to be gone.
                if !terminating_in_slots.contains(&i) {
                    out.create.push(OrdinalCreate {
                        ordinal: i,
                        revision: revision_for(i),
                    });
                }
                if monotonic {
                    return out;
                }
            }
        }
    }

    // Scale down, highest ordinal first.
    if !condemned.is_empty() {
        if monotonic {
            let target = condemned[condemned.len() - 1];
            let others_healthy = slots.values().all(|p| healthy(p))
                && condemned[..condemned.len() - 1].iter().all(|p| healthy(p));
            if others_healthy {
                out.delete.push(target.id);
            }
            return out;
        }
        out.delete.extend(condemned.iter().rev().map(|p| p.id));
    }
    if !out.is_empty() {
        return out;
    }

    let StatefulStrategy::RollingUpdate {
        partition,
        max_unavailable,
    } = policy.strategy
    else {
        return out;
    };
    let max_unavailable = max_unavailable.scaled(policy.replicas, true).max(1);
    let missing = n - slots.len() as u32;
    let unavailable = missing
        + slots
            .values()
            .filter(|p| !p.is_available(policy.min_ready, now) || !healthy(p))
            .count() as u32;
    let mut budget = max_unavailable.saturating_sub(unavailable);
    for p in slots.range(partition..).rev().map(|(_, p)| *p) {
        if p.revision == update_revision {
            continue;
        }
        let already_down = !healthy(p) || !p.is_available(policy.min_ready, now);
        if already_down {
            out.delete.push(p.id);
        } else if budget > 0 {
            out.delete.push(p.id);
            budget -= 1;
        } else {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::fixtures::{mk_pod, t0};
    use proptest::prelude::*;

    const OLD: Revision = 0;
    const NEW: Revision = 1;

    fn mk_set(replicas: u32) -> Vec<PodView> {
        (0..replicas)
            .map(|i| PodView {
                ordinal: i,
                ..mk_pod(u64::from(i), 0, OLD, true)
            })
            .collect()
    }

    fn policy(replicas: u32, partition: u32, management: PodManagement) -> StatefulSetPolicy {
        StatefulSetPolicy {
            replicas,
            management,
            strategy: StatefulStrategy::RollingUpdate {
                partition,
                max_unavailable: IntOrPercent::Int(1),
            },
            min_ready: SignedDuration::ZERO,
        }
    }

    fn now() -> Timestamp {
        t0() + SignedDuration::from_hours(1)
    }

    #[test]
    fn ordered_ready_creates_one_ordinal_at_a_time() {
        let p = plan(
            &policy(3, 0, PodManagement::OrderedReady),
            NEW,
            NEW,
            &[],
            now(),
        );
        assert_eq!(
            p.create,
            vec![OrdinalCreate {
                ordinal: 0,
                revision: NEW
            }]
        );
        let p = plan(&policy(3, 0, PodManagement::Parallel), NEW, NEW, &[], now());
        assert_eq!(p.create.len(), 3);
    }

    #[test]
    fn rolling_update_goes_from_the_highest_ordinal_down_to_the_partition() {
        let pods = mk_set(4);
        let p = plan(
            &policy(4, 2, PodManagement::OrderedReady),
            OLD,
            NEW,
            &pods,
            now(),
        );
        assert_eq!(p.delete, vec![3]);
        let rest: Vec<PodView> = pods.iter().filter(|p| p.id != 3).copied().collect();
        let p = plan(
            &policy(4, 2, PodManagement::OrderedReady),
            OLD,
            NEW,
            &rest,
            now(),
        );
        assert_eq!(
            p.create,
            vec![OrdinalCreate {
                ordinal: 3,
                revision: NEW
            }]
        );
        // A missing pod below the partition comes back at the current revision.
        let rest: Vec<PodView> = pods.iter().filter(|p| p.id != 0).copied().collect();
        let p = plan(
            &policy(4, 2, PodManagement::OrderedReady),
            OLD,
            NEW,
            &rest,
            now(),
        );
        assert_eq!(
            p.create,
            vec![OrdinalCreate {
                ordinal: 0,
                revision: OLD
            }]
        );
    }

    #[test]
    fn scale_down_removes_the_highest_ordinal_first() {
        let pods = mk_set(5);
        let p = plan(
            &policy(3, 0, PodManagement::OrderedReady),
            OLD,
            OLD,
            &pods,
            now(),
        );
        assert_eq!(p.delete, vec![4]);
        let p = plan(
            &policy(3, 0, PodManagement::Parallel),
            OLD,
            OLD,
            &pods,
            now(),
        );
        assert_eq!(p.delete, vec![4, 3]);
    }

    #[test]
    fn a_huge_replica_count_creates_one_burst_without_allocating_per_replica() {
        let pol = policy(i32::MAX as u32, 0, PodManagement::Parallel);
        let p = plan(&pol, NEW, NEW, &[], now());
        assert_eq!(p.create.len(), BURST_CREATES);
    }

    #[test]
    fn on_delete_updates_nothing_by_itself() {
        let pods = mk_set(3);
        let mut pol = policy(3, 0, PodManagement::OrderedReady);
        pol.strategy = StatefulStrategy::OnDelete;
        assert!(plan(&pol, OLD, NEW, &pods, now()).is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// plan → apply → pods become ready at random: ordinals below the partition are
        /// never updated, unavailability stays within maxUnavailable, OrderedReady only
        /// creates a pod once its predecessors are ready, and the update converges.
        #[test]
        fn statefulset_rollouts_respect_partition_and_budget(
            replicas in 1u32..15,
            partition in 0u32..20,
            max_unavailable in prop_oneof![(0u32..4).prop_map(IntOrPercent::Int), (0u32..=100).prop_map(IntOrPercent::Percent)],
            parallel in any::<bool>(),
            min_ready in 0i64..3,
            up in 0.05f64..0.9,
            seed in any::<u64>(),
        ) {
            let pol = StatefulSetPolicy {
                replicas,
                management: if parallel { PodManagement::Parallel } else { PodManagement::OrderedReady },
                strategy: StatefulStrategy::RollingUpdate { partition, max_unavailable },
                min_ready: SignedDuration::from_secs(min_ready),
            };
            let budget = max_unavailable.scaled(replicas, true).max(1);
            let mut pods = mk_set(replicas);
            let mut next_id = u64::from(replicas);
            let mut now = now();
            let mut rng = seed | 1;
            let mut current = OLD;
            for step in 0..400 {
                let p = plan(&pol, current, NEW, &pods, now);
                current = p.current_revision;
                for c in &p.create {
                    if !parallel {
                        for j in 0..c.ordinal {
                            prop_assert!(pods.iter().any(|q| q.ordinal == j && healthy(q)),
                                "ordinal {} created before {} was ready", c.ordinal, j);
                        }
                    }
                    prop_assert_eq!(c.revision, if c.ordinal < partition { OLD } else { NEW });
                }
                pods.retain(|q| !p.delete.contains(&q.id));
                for c in &p.create {
                    let mut pod = mk_pod(next_id, 0, c.revision, false);
                    pod.ordinal = c.ordinal;
                    pod.created = now;
                    pods.push(pod);
                    next_id += 1;
                }
                let unavailable = (0..replicas)
                    .filter(|i| !pods.iter().any(|q| q.ordinal == *i && q.is_available(pol.min_ready, now)))
                    .count() as u32;
                prop_assert!(unavailable <= budget, "step {}: {} unavailable > {}", step, unavailable, budget);
                for q in &pods {
                    prop_assert!(q.ordinal >= partition || q.revision == OLD,
                        "ordinal {} below partition {} updated", q.ordinal, partition);
                }
                now += SignedDuration::from_secs(1);
                for q in pods.iter_mut() {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let coin = (rng >> 11) as f64 / (1u64 << 53) as f64;
                    if q.ready_since.is_none() && (step >= 300 || coin <= up) {
                        q.ready_since = Some(now);
                        q.phase = PodPhase::Running;
                    }
                }
            }
            now += SignedDuration::from_secs(5);
            let last = plan(&pol, current, NEW, &pods, now);
            prop_assert!(last.is_empty());
            prop_assert_eq!(pods.len() as u32, replicas);
            for q in &pods {
                prop_assert_eq!(q.revision, if q.ordinal < partition { OLD } else { NEW });
            }
            prop_assert_eq!(last.current_revision == NEW, partition == 0);
        }
    }
}
