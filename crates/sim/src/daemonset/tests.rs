use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use shoal_core::kinds::{AdvancedDaemonSet, IntOrPercent};
use shoal_core::selector::LabelSelector;

use super::*;
use crate::pod::fixtures::{mk_pod, t0};
use crate::pod::{NodeView, PodPhase, PodView};

const OLD: Revision = 0;
const NEW: Revision = 1;

/// A tiny cluster the tests step through plan → apply → readiness.
struct World {
    names: Vec<String>,
    labels: Vec<BTreeMap<String, String>>,
    pods: Vec<PodView>,
    next_id: u64,
    now: Timestamp,
    rng: u64,
}

impl World {
    /// `n` nodes, each with a ready pod at the old revision; `group_a[i]` labels node i
    /// `group=a`.
    fn new(n: usize, group_a: &[bool], seed: u64) -> Self {
        let labels = (0..n)
            .map(|i| {
                let g = if group_a.get(i).copied().unwrap_or(false) {
                    "a"
                } else {
                    "b"
                };
                [("group".to_string(), g.to_string())].into()
            })
            .collect();
        World {
            names: (0..n).map(|i| format!("node-{i:03}")).collect(),
            labels,
            pods: (0..n)
                .map(|i| mk_pod(i as u64, i as u32, OLD, true))
                .collect(),
            next_id: n as u64,
            now: t0() + SignedDuration::from_hours(1),
            rng: seed | 1,
        }
    }

    fn nodes(&self) -> Vec<NodeView<'_>> {
        self.names
            .iter()
            .zip(&self.labels)
            .map(|(name, labels)| NodeView {
                name,
                labels,
                taints: &[],
                unschedulable: false,
                ready: true,
            })
            .collect()
    }

    fn plan(&self, policy: &DaemonSetPolicy) -> DaemonSetPlan {
        plan(policy, NEW, &self.nodes(), &self.pods, self.now)
    }

    fn apply(&mut self, p: &DaemonSetPlan) {
        self.pods.retain(|pod| !p.delete.contains(&pod.id));
        for c in &p.create {
            let mut pod = mk_pod(self.next_id, c.node, c.revision, false);
            pod.created = self.now;
            self.pods.push(pod);
            self.next_id += 1;
        }
    }

    fn coin(&mut self, p: f64) -> bool {
        // xorshift64: test-only randomness, seeded by proptest.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// Each not-ready pod becomes ready with probability `up`; with `flap`, each ready pod
    /// becomes not ready with probability `flap`.
    fn tick(&mut self, up: f64, flap: f64) {
        self.now += SignedDuration::from_secs(1);
        let now = self.now;
        for i in 0..self.pods.len() {
            let ready = self.pods[i].ready_since.is_some();
            if !ready && self.coin(up) {
                self.pods[i].ready_since = Some(now);
                self.pods[i].phase = PodPhase::Running;
            } else if ready && flap > 0.0 && self.coin(flap) {
                self.pods[i].ready_since = None;
            }
        }
    }

    fn on_node(&self, node: usize) -> impl Iterator<Item = &PodView> {
        self.pods
            .iter()
            .filter(move |p| p.node == Some(node as u32))
    }

    fn unavailable(&self, min_ready: SignedDuration) -> usize {
        (0..self.names.len())
            .filter(|i| {
                !self
                    .on_node(*i)
                    .any(|p| p.is_available(min_ready, self.now))
            })
            .count()
    }

    /// Nodes that have been touched by the update: a new pod, or no pod at all.
    fn touched(&self) -> Vec<usize> {
        (0..self.names.len())
            .filter(|i| {
                let mut pods = self.on_node(*i).peekable();
                pods.peek().is_none() || self.on_node(*i).any(|p| p.revision == NEW)
            })
            .collect()
    }

    fn old_nodes(&self) -> usize {
        (0..self.names.len())
            .filter(|i| self.on_node(*i).any(|p| p.revision == OLD))
            .count()
    }
}

fn mk_policy(ru: DaemonRollingUpdate, min_ready_secs: i64) -> DaemonSetPolicy {
    DaemonSetPolicy {
        node_selector: BTreeMap::new(),
        tolerations: Vec::new(),
        min_ready: SignedDuration::from_secs(min_ready_secs),
        strategy: DaemonStrategy::RollingUpdate(ru),
    }
}

fn group_a_selector() -> LabelSelector {
    LabelSelector::parse("group=a").unwrap()
}

#[test]
fn max_unavailable_percent_rounds_up_against_desired() {
    let w = World::new(10, &[], 1);
    let ru = DaemonRollingUpdate {
        max_unavailable: IntOrPercent::Percent(25),
        ..Default::default()
    };
    let p = w.plan(&mk_policy(ru, 0));
    assert_eq!(p.delete.len(), 3, "ceil(25% of 10) = 3");
    assert!(p.create.is_empty());
    assert_eq!(p.status.desired_number_scheduled, 10);
    assert_eq!(p.status.number_available, 10);
    assert_eq!(p.status.updated_number_scheduled, 0);
}

#[test]
fn kruise_updates_nodes_in_descending_name_order_and_keeps_the_partition() {
    let mut w = World::new(5, &[], 1);
    let ru = DaemonRollingUpdate {
        partition: 3,
        max_unavailable: IntOrPercent::Int(5),
        ..Default::default()
    };
    let policy = mk_policy(ru, 0);
    let p = w.plan(&policy);
    // node-004 and node-003 go first; three nodes stay at the old revision.
    assert_eq!(p.delete, vec![4, 3]);
    w.apply(&p);
    let p = w.plan(&policy);
    assert_eq!(
        p.create,
        vec![
            PodCreate {
                node: 3,
                revision: NEW
            },
            PodCreate {
                node: 4,
                revision: NEW
            }
        ]
    );
    w.apply(&p);
    w.tick(1.0, 0.0);
    assert!(w.plan(&policy).is_empty());
    assert_eq!(w.old_nodes(), 3);
}

#[test]
fn rolling_update_selector_limits_which_nodes_update() {
    let mut w = World::new(6, &[true, false, true, false, true, false], 1);
    let ru = DaemonRollingUpdate {
        max_unavailable: IntOrPercent::Percent(100),
        selector: Some(group_a_selector()),
        ..Default::default()
    };
    let policy = mk_policy(ru, 0);
    for _ in 0..5 {
        let p = w.plan(&policy);
        w.apply(&p);
        w.tick(1.0, 0.0);
    }
    let new: Vec<u32> = w
        .pods
        .iter()
        .filter(|p| p.revision == NEW)
        .map(|p| p.node.unwrap())
        .collect();
    let mut new = new;
    new.sort();
    assert_eq!(new, vec![0, 2, 4]);
}

#[test]
fn surging_creates_the_new_pod_before_deleting_the_old_one() {
    let mut w = World::new(3, &[], 1);
    let ru = DaemonRollingUpdate {
        max_unavailable: IntOrPercent::Int(0),
        max_surge: IntOrPercent::Int(1),
        ..Default::default()
    };
    let policy = mk_policy(ru, 0);
    let p = w.plan(&policy);
    assert!(p.delete.is_empty());
    assert_eq!(
        p.create,
        vec![PodCreate {
            node: 2,
            revision: NEW
        }]
    );
    w.apply(&p);
    // The new pod is not ready yet: nothing else happens.
    assert!(w.plan(&policy).is_empty());
    w.tick(1.0, 0.0);
    let p = w.plan(&policy);
    assert_eq!(
        p.delete,
        vec![2],
        "the old pod on node-002 goes once the new one is available"
    );
}

#[test]
fn on_delete_replaces_only_deleted_pods() {
    let mut w = World::new(3, &[], 1);
    let policy = DaemonSetPolicy {
        strategy: DaemonStrategy::OnDelete,
        ..mk_policy(DaemonRollingUpdate::default(), 0)
    };
    assert!(w.plan(&policy).is_empty());
    w.pods.retain(|p| p.id != 1);
    let p = w.plan(&policy);
    assert_eq!(
        p.create,
        vec![PodCreate {
            node: 1,
            revision: NEW
        }]
    );
}

#[test]
fn pods_on_nodes_that_no_longer_match_are_misscheduled_and_deleted() {
    let w = World::new(4, &[true, true, false, false], 1);
    let policy = DaemonSetPolicy {
        node_selector: [("group".to_string(), "a".to_string())].into(),
        ..mk_policy(DaemonRollingUpdate::default(), 0)
    };
    let p = w.plan(&policy);
    assert_eq!(p.status.desired_number_scheduled, 2);
    assert_eq!(p.status.number_misscheduled, 2);
    let mut del = p.delete.clone();
    del.sort();
    assert_eq!(del, vec![2, 3]);
}

#[test]
fn min_ready_seconds_delays_availability_and_asks_for_a_requeue() {
    let mut w = World::new(2, &[], 1);
    let policy = mk_policy(DaemonRollingUpdate::default(), 10);
    let p = w.plan(&policy);
    w.apply(&p);
    let p = w.plan(&policy);
    w.apply(&p);
    w.tick(1.0, 0.0);
    let p = w.plan(&policy);
    assert!(p.is_empty(), "the new pod is ready but not yet available");
    assert_eq!(p.status.number_ready, 2);
    assert_eq!(p.status.number_available, 1);
    assert_eq!(p.requeue_at, Some(w.now + SignedDuration::from_secs(10)));
}

#[test]
fn policies_parse_from_both_apis_and_name_bad_fields() {
    let ds: AdvancedDaemonSet = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps.kruise.io/v1alpha1", "kind": "DaemonSet",
        "metadata": {"name": "a"},
        "spec": {
            "selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "a"}},
                         "spec": {"containers": [], "nodeSelector": {"pool": "x"}}},
            "minReadySeconds": 5,
            "updateStrategy": {"rollingUpdate": {
                "partition": 2, "paused": true, "maxUnavailable": "10%",
                "selector": {"matchLabels": {"kernel": "5.10"}}}}
        }
    }))
    .unwrap();
    let p = DaemonSetPolicy::from_kruise(&ds.spec).unwrap();
    assert_eq!(p.node_selector["pool"], "x");
    assert_eq!(p.min_ready, SignedDuration::from_secs(5));
    let DaemonStrategy::RollingUpdate(ru) = &p.strategy else {
        panic!("rolling update expected")
    };
    assert_eq!((ru.partition, ru.paused), (2, true));
    assert_eq!(ru.max_unavailable, IntOrPercent::Percent(10));
    assert!(ru.selector.is_some());

    let mut bad = ds.spec.clone();
    bad.update_strategy
        .as_mut()
        .unwrap()
        .rolling_update
        .as_mut()
        .unwrap()
        .partition = Some(-1);
    assert_eq!(
        DaemonSetPolicy::from_kruise(&bad).unwrap_err().field,
        "spec.updateStrategy.rollingUpdate.partition"
    );

    let apps: k8s_openapi::api::apps::v1::DaemonSetSpec =
        serde_json::from_value(serde_json::json!({
            "selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": []}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "x"}}
        }))
        .unwrap();
    assert_eq!(
        DaemonSetPolicy::from_apps_v1(&apps).unwrap_err().field,
        "spec.updateStrategy.rollingUpdate.maxSurge"
    );
}

fn int_or_percent() -> impl Strategy<Value = IntOrPercent> {
    prop_oneof![
        (0u32..5).prop_map(IntOrPercent::Int),
        (0u32..=100).prop_map(IntOrPercent::Percent),
    ]
}

fn surge() -> impl Strategy<Value = IntOrPercent> {
    prop_oneof![
        2 => Just(IntOrPercent::Int(0)),
        1 => (1u32..4).prop_map(IntOrPercent::Int),
        1 => (1u32..=100).prop_map(IntOrPercent::Percent),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    nodes: usize,
    group_a: Vec<bool>,
    max_unavailable: IntOrPercent,
    max_surge: IntOrPercent,
    partition: u32,
    use_selector: bool,
    min_ready: i64,
    pause_at: Option<usize>,
    up: f64,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        1usize..25,
        proptest::collection::vec(any::<bool>(), 25),
        int_or_percent(),
        surge(),
        0u32..30,
        any::<bool>(),
        0i64..3,
        proptest::option::weighted(0.3, 0usize..40),
        0.05f64..0.9,
        any::<u64>(),
    )
        .prop_map(
            |(
                nodes,
                group_a,
                max_unavailable,
                max_surge,
                partition,
                use_selector,
                min_ready,
                pause_at,
                up,
                seed,
            )| Case {
                nodes,
                group_a,
                max_unavailable,
                max_surge,
                partition,
                use_selector,
                min_ready,
                pause_at,
                up,
                seed,
            },
        )
}

const STEPS: usize = 400;
/// After this step every pod becomes ready at once, so the rollout must converge.
const ALL_READY_FROM: usize = 300;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// plan → apply → random readiness (pods only ever become ready): the rollout never
    /// has more unavailable nodes than maxUnavailable (0 when surging), never updates
    /// more than desired − partition nodes or a node outside rollingUpdate.selector,
    /// does nothing new once paused, and converges to exactly min(desired − partition,
    /// selected) updated nodes.
    #[test]
    fn daemonset_rollouts_respect_budget_partition_selector_and_pause(c in case()) {
        let mut w = World::new(c.nodes, &c.group_a, c.seed);
        let ru = DaemonRollingUpdate {
            max_unavailable: c.max_unavailable,
            max_surge: c.max_surge,
            partition: c.partition,
            paused: false,
            selector: c.use_selector.then(group_a_selector),
        };
        let min_ready = SignedDuration::from_secs(c.min_ready);
        let (max_u, max_s) = effective_budget(&ru, c.nodes as u32);
        let mut policy = mk_policy(ru, c.min_ready);
        let selected: Vec<usize> = (0..c.nodes)
            .filter(|i| !c.use_selector || c.group_a[*i])
            .collect();
        let max_touched = c.nodes.saturating_sub(c.partition as usize);
        for step in 0..STEPS {
            if c.pause_at == Some(step)
                && let DaemonStrategy::RollingUpdate(ru) = &mut policy.strategy
            {
                ru.paused = true;
            }
            let paused = c.pause_at.is_some_and(|p| step >= p);
            let p = w.plan(&policy);
            if paused {
                for id in &p.delete {
                    let pod = w.pods.iter().find(|x| x.id == *id).unwrap();
                    prop_assert_ne!(pod.revision, OLD, "paused, yet deletes old pod {}", id);
                }
                for cr in &p.create {
                    prop_assert_eq!(w.on_node(cr.node as usize).count(), 0,
                        "paused, yet creates next to a live pod on node {}", cr.node);
                }
            }
            if max_s > 0 {
                for id in &p.delete {
                    let pod = w.pods.iter().find(|x| x.id == *id).unwrap();
                    let node = pod.node.unwrap() as usize;
                    prop_assert!(
                        w.on_node(node).any(|q| q.revision == NEW && q.is_available(min_ready, w.now)),
                        "surge deleted pod {} before its replacement was available", id
                    );
                }
                let doubled = (0..c.nodes).filter(|i| w.on_node(*i).count() > 1).count();
                prop_assert!(doubled as u32 <= max_s);
            }
            w.apply(&p);
            let unavailable = w.unavailable(min_ready);
            prop_assert!(unavailable as u32 <= max_u,
                "step {}: {} unavailable > maxUnavailable {}", step, unavailable, max_u);
            if max_s > 0 {
                prop_assert_eq!(unavailable, 0);
            }
            let touched = w.touched();
            prop_assert!(touched.len() <= max_touched,
                "step {}: {} nodes touched, partition {} of {}", step, touched.len(), c.partition, c.nodes);
            prop_assert!(w.old_nodes() >= (c.partition as usize).min(c.nodes));
            for t in &touched {
                prop_assert!(selected.contains(t), "node {} outside the selector was updated", t);
            }
            w.tick(if step >= ALL_READY_FROM { 1.0 } else { c.up }, 0.0);
        }
        // Converged: nothing left to do, one pod per node, and (unless paused early)
        // exactly the nodes the partition and selector allow carry the new revision.
        w.tick(1.0, 0.0);
        w.now += SignedDuration::from_secs(10);
        prop_assert!(w.plan(&policy).is_empty());
        for i in 0..c.nodes {
            // A pause can freeze a surged node with both pods (Kruise skips the whole
            // rolling update while paused).
            let pods = w.on_node(i).count();
            prop_assert!(pods == 1 || (pods == 2 && c.pause_at.is_some() && max_s > 0));
        }
        let updated = c.nodes - w.old_nodes();
        if c.pause_at.is_none() {
            prop_assert_eq!(updated, max_touched.min(selected.len()));
            prop_assert_eq!(w.old_nodes(), c.nodes - max_touched.min(selected.len()));
        } else {
            prop_assert!(updated <= max_touched.min(selected.len()));
        }
    }

    /// With pods that also fail readiness at random, a single pass never deletes more
    /// available pods than the budget left (maxUnavailable − currently unavailable).
    #[test]
    fn one_pass_never_spends_more_than_the_remaining_budget(c in case(), flap in 0.0f64..0.2) {
        let mut w = World::new(c.nodes, &c.group_a, c.seed);
        let ru = DaemonRollingUpdate {
            max_unavailable: c.max_unavailable,
            max_surge: IntOrPercent::Int(0),
            partition: c.partition,
            paused: false,
            selector: c.use_selector.then(group_a_selector),
        };
        let min_ready = SignedDuration::from_secs(c.min_ready);
        let (max_u, _) = effective_budget(&ru, c.nodes as u32);
        let policy = mk_policy(ru, c.min_ready);
        for _ in 0..150 {
            let before = w.unavailable(min_ready) as u32;
            let p = w.plan(&policy);
            let available_deleted = p
                .delete
                .iter()
                .filter(|id| {
                    w.pods
                        .iter()
                        .any(|q| q.id == **id && q.is_available(min_ready, w.now))
                })
                .count() as u32;
            prop_assert!(available_deleted <= max_u.saturating_sub(before),
                "deleted {} available pods with {} of {} unavailable", available_deleted, before, max_u);
            w.apply(&p);
            w.tick(c.up, flap);
        }
    }
}
