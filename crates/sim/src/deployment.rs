//! Deployment → ReplicaSets → pods, as two pure controllers plus a tiny scheduler.
//!
//! ```text
//!  deployment::plan(policy, update_revision, [ReplicaSetView]) → ReplicaSet scales
//!      RollingUpdate: scale the new RS up to replicas + maxSurge (total), then scale old
//!                     RSs down while available ≥ replicas − maxUnavailable
//!      Recreate:      old RSs to 0, wait until their pods are gone, then the new RS up
//!      paused:        no rollout; only a lone active RS follows spec.replicas
//!  replicaset::plan(replicas, revision, [PodView])       → pods to create / delete
//!      scale down by Kubernetes' ranking: unscheduled, pending, not ready, ready for the
//!      shortest time, most restarts, newest first
//!  schedule(nodes, fit, pods per node)                   → the node for a pending pod
//! ```
//!
//! As in Kubernetes, one Deployment pass either scales up or scales down, never both,
//! and its decisions use the ReplicaSets' *spec* replicas for totals (so a surge is
//! bounded before any pod exists) and their *status* for availability. maxSurge rounds
//! up, maxUnavailable rounds down (`ResolveFenceposts`); both 0 make maxUnavailable 1.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Toleration;
use shoal_core::FieldError;
use shoal_core::kinds::IntOrPercent;

use crate::pod::{NodeView, PodPhase, PodView, Revision, fit};

/// How a Deployment rolls, parsed from `apps/v1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeploymentPolicy {
    pub replicas: u32,
    pub strategy: DeploymentStrategy,
    pub paused: bool,
    pub min_ready: SignedDuration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeploymentStrategy {
    Recreate,
    RollingUpdate {
        max_surge: IntOrPercent,
        max_unavailable: IntOrPercent,
    },
}

impl DeploymentPolicy {
    /// The policy of an `apps/v1` Deployment (defaults: 1 replica, RollingUpdate 25%/25%).
    ///
    /// # Errors
    /// A [`FieldError`] naming the field for negative counts, an unknown strategy or a
    /// bad int-or-percent.
    pub fn from_apps_v1(
        spec: &k8s_openapi::api::apps::v1::DeploymentSpec,
    ) -> Result<Self, FieldError> {
        let replicas = spec.replicas.unwrap_or(1);
        let replicas = u32::try_from(replicas).map_err(|_| {
            FieldError::invalid(
                "spec.replicas",
                format!("{replicas}: must be greater than or equal to 0"),
            )
        })?;
        let st = spec.strategy.as_ref();
        let strategy = match st
            .and_then(|s| s.type_.as_deref())
            .unwrap_or("RollingUpdate")
        {
            "Recreate" => DeploymentStrategy::Recreate,
            "RollingUpdate" => {
                let ru = st.and_then(|s| s.rolling_update.as_ref());
                let parse = |field: &str,
                             v: Option<
                    &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString,
                >| match v {
                    None => Ok(IntOrPercent::Percent(25)),
                    Some(v) => IntOrPercent::from_k8s(v).map_err(|e| FieldError::invalid(field, e)),
                };
                DeploymentStrategy::RollingUpdate {
                    max_surge: parse(
                        "spec.strategy.rollingUpdate.maxSurge",
                        ru.and_then(|r| r.max_surge.as_ref()),
                    )?,
                    max_unavailable: parse(
                        "spec.strategy.rollingUpdate.maxUnavailable",
                        ru.and_then(|r| r.max_unavailable.as_ref()),
                    )?,
                }
            }
            other => {
                return Err(FieldError::new(
                    "spec.strategy.type",
                    shoal_core::FieldErrorKind::NotSupported,
                    format!("{other:?}: supported values: \"Recreate\", \"RollingUpdate\""),
                ));
            }
        };
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        if min_ready < 0 {
            return Err(FieldError::invalid(
                "spec.minReadySeconds",
                format!("{min_ready}: must be greater than or equal to 0"),
            ));
        }
        Ok(DeploymentPolicy {
            replicas,
            strategy,
            paused: spec.paused.unwrap_or(false),
            min_ready: SignedDuration::from_secs(i64::from(min_ready)),
        })
    }
}

/// A ReplicaSet of the Deployment, as the Deployment controller sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaSetView {
    pub revision: Revision,
    /// `spec.replicas`.
    pub replicas: u32,
    /// `status.replicas`: pods that exist.
    pub pods: u32,
    pub ready: u32,
    pub available: u32,
    /// Creation order (older first when scaling down).
    pub created: Timestamp,
}

/// `(revision, new spec.replicas)`; a revision with no ReplicaSet yet means "create it".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    pub revision: Revision,
    pub replicas: u32,
}

/// The status counts of a Deployment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeploymentCounts {
    pub replicas: u32,
    pub updated_replicas: u32,
    pub ready_replicas: u32,
    pub available_replicas: u32,
    pub unavailable_replicas: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeploymentPlan {
    pub scale: Vec<Scale>,
    pub status: DeploymentCounts,
}

/// The effective (maxSurge, maxUnavailable) for `replicas`.
pub fn resolve_fenceposts(
    max_surge: IntOrPercent,
    max_unavailable: IntOrPercent,
    replicas: u32,
) -> (u32, u32) {
    let surge = max_surge.scaled(replicas, true);
    let unavailable = max_unavailable.scaled(replicas, false);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

/// A sum that saturates: replica counts come from users and may be absurd.
fn total(counts: impl Iterator<Item = u32>) -> u32 {
    counts.fold(0, u32::saturating_add)
}

/// One pass of the Deployment controller.
pub fn plan(
    policy: &DeploymentPolicy,
    update_revision: Revision,
    sets: &[ReplicaSetView],
) -> DeploymentPlan {
    let mut out = DeploymentPlan::default();
    let new = sets.iter().find(|s| s.revision == update_revision);
    let mut olds: Vec<&ReplicaSetView> = sets
        .iter()
        .filter(|s| s.revision != update_revision)
        .collect();
    olds.sort_by_key(|s| (s.created, s.revision));
    out.status = DeploymentCounts {
        replicas: total(sets.iter().map(|s| s.pods)),
        updated_replicas: new.map_or(0, |s| s.pods),
        ready_replicas: total(sets.iter().map(|s| s.ready)),
        available_replicas: total(sets.iter().map(|s| s.available)),
        unavailable_replicas: 0,
    };
    out.status.unavailable_replicas = policy
        .replicas
        .saturating_sub(out.status.available_replicas);
    let want = policy.replicas;

    if policy.paused {
        // Only scaling: a lone active ReplicaSet follows spec.replicas.
        let active: Vec<&ReplicaSetView> = sets.iter().filter(|s| s.replicas > 0).collect();
        let target = match (active.as_slice(), new) {
            ([only], _) => Some(*only),
            ([], Some(n)) => Some(n),
            _ => None,
        };
        if let Some(t) = target
            && t.replicas != want
        {
            out.scale.push(Scale {
                revision: t.revision,
                replicas: want,
            });
        }
        return out;
    }

    match policy.strategy {
        DeploymentStrategy::Recreate => {
            let old_active: Vec<&&ReplicaSetView> =
                olds.iter().filter(|s| s.replicas > 0).collect();
            if !old_active.is_empty() {
                out.scale.extend(old_active.iter().map(|s| Scale {
                    revision: s.revision,
                    replicas: 0,
                }));
                return out;
            }
            if olds.iter().any(|s| s.pods > 0) {
                return out; // wait for the old pods to be gone
            }
            if new.is_none_or(|n| n.replicas != want) {
                out.scale.push(Scale {
                    revision: update_revision,
                    replicas: want,
                });
            }
        }
        DeploymentStrategy::RollingUpdate {
            max_surge,
            max_unavailable,
        } => {
            let (max_surge, max_unavailable) = resolve_fenceposts(max_surge, max_unavailable, want);
            let new_replicas = new.map_or(0, |n| n.replicas);
            // Scale the new ReplicaSet up (or down to `want`).
            if new.is_none() || new_replicas != want {
                let target = if new_replicas > want {
                    want
                } else {
                    let all = total(sets.iter().map(|s| s.replicas));
                    let max_total = want.saturating_add(max_surge);
                    let up = max_total.saturating_sub(all).min(want - new_replicas);
                    new_replicas + up
                };
                if new.is_none() || target != new_replicas {
                    out.scale.push(Scale {
                        revision: update_revision,
                        replicas: target,
                    });
                    return out;
                }
            }
            // Scale old ReplicaSets down without going under minAvailable.
            let old_total = total(olds.iter().map(|s| s.replicas));
            if old_total == 0 {
                return out;
            }
            let all = total(sets.iter().map(|s| s.replicas));
            let min_available = want.saturating_sub(max_unavailable);
            let new_unavailable = new.map_or(0, |n| n.replicas.saturating_sub(n.available));
            let max_scaled_down =
                i64::from(all) - i64::from(min_available) - i64::from(new_unavailable);
            if max_scaled_down <= 0 {
                return out;
            }
            let mut budget = max_scaled_down as u32;
            let mut targets: BTreeMap<Revision, u32> =
                olds.iter().map(|s| (s.revision, s.replicas)).collect();
            // First the old pods that are not available anyway.
            for s in &olds {
                if budget == 0 {
                    break;
                }
                let unhealthy = s.replicas.saturating_sub(s.available).min(budget);
                if unhealthy > 0 {
                    *targets.entry(s.revision).or_default() -= unhealthy;
                    budget -= unhealthy;
                }
            }
            // Then available ones, down to minAvailable, counting what was just removed.
            let cleaned = total(olds.iter().map(|s| s.replicas - targets[&s.revision]));
            let available = total(sets.iter().map(|s| s.available));
            if available > min_available {
                let mut down = (available - min_available)
                    .min((max_scaled_down as u32).saturating_sub(cleaned));
                for s in &olds {
                    if down == 0 {
                        break;
                    }
                    let t = targets.entry(s.revision).or_default();
                    let d = (*t).min(down);
                    *t -= d;
                    down -= d;
                }
            }
            out.scale.extend(
                olds.iter()
                    .filter(|s| targets[&s.revision] != s.replicas)
                    .map(|s| Scale {
                        revision: s.revision,
                        replicas: targets[&s.revision],
                    }),
            );
        }
    }
    out
}

/// Status counts of a ReplicaSet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicaSetCounts {
    pub replicas: u32,
    pub ready_replicas: u32,
    pub available_replicas: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaSetPlan {
    /// How many pods to create (unscheduled; see [`schedule`]).
    pub create: u32,
    pub delete: Vec<u64>,
    pub status: ReplicaSetCounts,
    pub requeue_at: Option<Timestamp>,
}

/// Kubernetes' `ReplicaSet` burst: at most this many pods created in one pass.
pub const BURST_REPLICAS: u32 = 500;

/// One pass of the ReplicaSet controller over its own pods.
pub fn replicaset_plan(
    replicas: u32,
    min_ready: SignedDuration,
    pods: &[PodView],
    now: Timestamp,
) -> ReplicaSetPlan {
    let active: Vec<&PodView> = pods.iter().filter(|p| p.is_live()).collect();
    let mut out = ReplicaSetPlan {
        status: ReplicaSetCounts {
            replicas: active.len() as u32,
            ready_replicas: active.iter().filter(|p| p.is_ready()).count() as u32,
            available_replicas: active
                .iter()
                .filter(|p| p.is_available(min_ready, now))
                .count() as u32,
        },
        requeue_at: active
            .iter()
            .filter_map(|p| p.available_at(min_ready, now))
            .min(),
        ..Default::default()
    };
    let have = active.len() as u32;
    if have < replicas {
        out.create = (replicas - have).min(BURST_REPLICAS);
    } else if have > replicas {
        let mut ranked = active;
        ranked.sort_by_key(|p| deletion_rank(p));
        out.delete = ranked
            .iter()
            .take((have - replicas) as usize)
            .map(|p| p.id)
            .collect();
    }
    out
}

/// Smaller sorts first = deleted first (`controller.ActivePodsWithRanks`, minus
/// co-location): unscheduled, then pending, then not ready, then ready for the shortest
/// time, then most restarts, then newest.
type DeletionRank = (
    bool,
    u8,
    bool,
    Reverse<Option<Timestamp>>,
    Reverse<u32>,
    Reverse<Timestamp>,
    Reverse<u64>,
);

fn deletion_rank(p: &PodView) -> DeletionRank {
    let phase = match p.phase {
        PodPhase::Pending => 0,
        PodPhase::Running => 2,
        _ => 1,
    };
    (
        p.node.is_some(),
        phase,
        p.is_ready(),
        Reverse(p.ready_since),
        Reverse(p.restarts),
        Reverse(p.created),
        Reverse(p.id),
    )
}

/// Picks a node for a pending pod: one the pod fits (nodeSelector, taints, cordon,
/// readiness), with the fewest pods, ties broken by node order. `pods_on` counts the
/// pods already on each node.
pub fn schedule(
    nodes: &[NodeView<'_>],
    node_selector: &BTreeMap<String, String>,
    tolerations: &[Toleration],
    pods_on: &[u32],
) -> Option<u32> {
    nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| fit(n, node_selector, tolerations, false).should_run)
        .min_by_key(|(i, _)| (pods_on.get(*i).copied().unwrap_or(0), *i))
        .map(|(i, _)| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::fixtures::{mk_pod, t0};
    use proptest::prelude::*;

    const OLD: Revision = 0;
    const NEW: Revision = 1;

    /// Deployment + ReplicaSet controllers over pods without nodes (scheduling is not
    /// what these tests are about).
    struct World {
        sets: Vec<(Revision, u32, Timestamp)>,
        pods: Vec<PodView>,
        next_id: u64,
        now: Timestamp,
        rng: u64,
    }

    impl World {
        fn new(replicas: u32, seed: u64) -> Self {
            World {
                sets: vec![(OLD, replicas, t0())],
                pods: (0..u64::from(replicas))
                    .map(|i| mk_pod(i, 0, OLD, true))
                    .collect(),
                next_id: u64::from(replicas),
                now: t0() + SignedDuration::from_hours(1),
                rng: seed | 1,
            }
        }

        fn views(&self, min_ready: SignedDuration) -> Vec<ReplicaSetView> {
            self.sets
                .iter()
                .map(|(rev, replicas, created)| {
                    let mine: Vec<&PodView> =
                        self.pods.iter().filter(|p| p.revision == *rev).collect();
                    ReplicaSetView {
                        revision: *rev,
                        replicas: *replicas,
                        pods: mine.len() as u32,
                        ready: mine.iter().filter(|p| p.is_ready()).count() as u32,
                        available: mine
                            .iter()
                            .filter(|p| p.is_available(min_ready, self.now))
                            .count() as u32,
                        created: *created,
                    }
                })
                .collect()
        }

        fn step(&mut self, policy: &DeploymentPolicy) -> DeploymentPlan {
            let p = plan(policy, NEW, &self.views(policy.min_ready));
            for s in &p.scale {
                match self.sets.iter_mut().find(|x| x.0 == s.revision) {
                    Some(x) => x.1 = s.replicas,
                    None => self.sets.push((s.revision, s.replicas, self.now)),
                }
            }
            for (rev, replicas, _) in self.sets.clone() {
                let mine: Vec<PodView> = self
                    .pods
                    .iter()
                    .filter(|p| p.revision == rev)
                    .copied()
                    .collect();
                let rp = replicaset_plan(replicas, policy.min_ready, &mine, self.now);
                self.pods.retain(|p| !rp.delete.contains(&p.id));
                for _ in 0..rp.create {
                    let mut pod = mk_pod(self.next_id, 0, rev, false);
                    pod.created = self.now;
                    self.pods.push(pod);
                    self.next_id += 1;
                }
            }
            p
        }

        fn tick(&mut self, up: f64) {
            self.now += SignedDuration::from_secs(1);
            for i in 0..self.pods.len() {
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                let coin = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
                if self.pods[i].ready_since.is_none() && coin <= up {
                    self.pods[i].ready_since = Some(self.now);
                    self.pods[i].phase = PodPhase::Running;
                }
            }
        }

        fn available(&self, min_ready: SignedDuration) -> u32 {
            self.pods
                .iter()
                .filter(|p| p.is_available(min_ready, self.now))
                .count() as u32
        }
    }

    fn rolling(surge: IntOrPercent, unavailable: IntOrPercent, replicas: u32) -> DeploymentPolicy {
        DeploymentPolicy {
            replicas,
            strategy: DeploymentStrategy::RollingUpdate {
                max_surge: surge,
                max_unavailable: unavailable,
            },
            paused: false,
            min_ready: SignedDuration::ZERO,
        }
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        assert_eq!(
            resolve_fenceposts(IntOrPercent::Percent(25), IntOrPercent::Percent(25), 10),
            (3, 2)
        );
        assert_eq!(
            resolve_fenceposts(IntOrPercent::Int(0), IntOrPercent::Percent(10), 5),
            (0, 1)
        );
    }

    #[test]
    fn a_rolling_update_surges_first_then_scales_old_down() {
        let mut w = World::new(4, 1);
        let policy = rolling(IntOrPercent::Int(1), IntOrPercent::Int(0), 4);
        let p = w.step(&policy);
        assert_eq!(
            p.scale,
            vec![Scale {
                revision: NEW,
                replicas: 1
            }]
        );
        assert_eq!(w.pods.len(), 5);
        // Not ready yet: nothing more.
        assert!(w.step(&policy).scale.is_empty());
        w.tick(1.0);
        let p = w.step(&policy);
        assert_eq!(
            p.scale,
            vec![Scale {
                revision: OLD,
                replicas: 3
            }]
        );
    }

    #[test]
    fn absurd_replica_counts_saturate_instead_of_overflowing() {
        let huge = i32::MAX as u32;
        let mk = |revision, created| ReplicaSetView {
            revision,
            replicas: huge,
            pods: huge,
            ready: huge,
            available: huge,
            created,
        };
        let sets = [mk(2, t0()), mk(3, t0()), mk(OLD, t0())];
        let policy = rolling(IntOrPercent::Percent(1000), IntOrPercent::Int(huge), huge);
        let p = plan(&policy, NEW, &sets);
        assert_eq!(
            p.scale,
            vec![Scale {
                revision: NEW,
                replicas: 0
            }]
        );
        assert_eq!(p.status.replicas, u32::MAX);
    }

    #[test]
    fn recreate_waits_for_old_pods_to_be_gone() {
        let mut w = World::new(3, 1);
        let policy = DeploymentPolicy {
            strategy: DeploymentStrategy::Recreate,
            ..rolling(IntOrPercent::Int(1), IntOrPercent::Int(1), 3)
        };
        let p = w.step(&policy);
        assert_eq!(
            p.scale,
            vec![Scale {
                revision: OLD,
                replicas: 0
            }]
        );
        assert!(w.pods.is_empty());
        let p = w.step(&policy);
        assert_eq!(
            p.scale,
            vec![Scale {
                revision: NEW,
                replicas: 3
            }]
        );
    }

    #[test]
    fn a_paused_deployment_only_scales_its_lone_replicaset() {
        let mut w = World::new(3, 1);
        let mut policy = rolling(IntOrPercent::Int(1), IntOrPercent::Int(1), 5);
        policy.paused = true;
        let p = w.step(&policy);
        assert_eq!(
            p.scale,
            vec![Scale {
                revision: OLD,
                replicas: 5
            }]
        );
        assert!(w.pods.iter().all(|p| p.revision == OLD));
    }

    #[test]
    fn replicasets_delete_the_least_useful_pods_first() {
        let mut pods = vec![
            mk_pod(1, 0, 0, true),
            mk_pod(2, 0, 0, false),
            mk_pod(3, 0, 0, true),
        ];
        pods[2].ready_since = Some(t0() + SignedDuration::from_secs(30));
        pods.push(PodView {
            node: None,
            ..mk_pod(4, 0, 0, false)
        });
        let p = replicaset_plan(
            1,
            SignedDuration::ZERO,
            &pods,
            t0() + SignedDuration::from_mins(5),
        );
        assert_eq!(p.delete, vec![4, 2, 3]);
        assert_eq!(p.status.ready_replicas, 2);
    }

    #[test]
    fn the_scheduler_spreads_pods_over_fitting_nodes() {
        let a: BTreeMap<String, String> = [("pool".to_string(), "a".to_string())].into();
        let b: BTreeMap<String, String> = [("pool".to_string(), "b".to_string())].into();
        let mk = |name, labels| NodeView {
            name,
            labels,
            taints: &[],
            unschedulable: false,
            ready: true,
        };
        let mut nodes = vec![mk("n0", &a), mk("n1", &a), mk("n2", &b)];
        assert_eq!(schedule(&nodes, &a, &[], &[3, 1, 0]), Some(1));
        nodes[1].unschedulable = true;
        assert_eq!(schedule(&nodes, &a, &[], &[3, 1, 0]), Some(0));
        nodes[0].ready = false;
        assert_eq!(schedule(&nodes, &a, &[], &[3, 1, 0]), None);
    }

    fn int_or_percent() -> impl Strategy<Value = IntOrPercent> {
        prop_oneof![
            (0u32..4).prop_map(IntOrPercent::Int),
            (0u32..=100).prop_map(IntOrPercent::Percent)
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Deployment + ReplicaSet controllers with pods that only become ready: never
        /// fewer available pods than replicas − maxUnavailable, never more pods than
        /// replicas + maxSurge, nothing rolls while paused, and the rollout converges.
        #[test]
        fn deployment_rollouts_stay_within_surge_and_unavailability(
            replicas in 1u32..20,
            surge in int_or_percent(),
            unavailable in int_or_percent(),
            min_ready in 0i64..3,
            paused in proptest::bool::weighted(0.2),
            up in 0.05f64..0.9,
            seed in any::<u64>(),
        ) {
            let mut w = World::new(replicas, seed);
            let mut policy = rolling(surge, unavailable, replicas);
            policy.min_ready = SignedDuration::from_secs(min_ready);
            policy.paused = paused;
            let (max_surge, max_unavailable) = resolve_fenceposts(surge, unavailable, replicas);
            for step in 0..400 {
                w.step(&policy);
                let avail = w.available(policy.min_ready);
                prop_assert!(avail + max_unavailable >= replicas,
                    "step {}: {} available of {} (maxUnavailable {})", step, avail, replicas, max_unavailable);
                prop_assert!(w.pods.len() as u32 <= replicas + max_surge,
                    "step {}: {} pods (maxSurge {})", step, w.pods.len(), max_surge);
                if paused {
                    prop_assert!(w.pods.iter().all(|p| p.revision == OLD));
                }
                w.tick(if step >= 300 { 1.0 } else { up });
            }
            w.now += SignedDuration::from_secs(5);
            let last = plan(&policy, NEW, &w.views(policy.min_ready));
            prop_assert!(last.scale.is_empty(), "{:?}", last.scale);
            let want_rev = if paused { OLD } else { NEW };
            prop_assert_eq!(w.pods.iter().filter(|p| p.revision == want_rev).count() as u32, replicas);
            prop_assert_eq!(w.pods.len() as u32, replicas);
        }
    }
}
