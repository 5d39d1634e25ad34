//! OpenKruise's BroadcastJob controller as a pure function: one run-to-completion pod per
//! eligible node, at most `parallelism` at a time, until the job completes or fails.
//!
//! ```text
//!            ┌──────── paused ◀── spec.paused, or failurePolicy Pause on a failed pod
//!            ▼   ▲
//!  running ──┴───┴──▶ completed   completionPolicy Always: every desired node has a
//!     │                           finished pod (Never: the job keeps running, so new
//!     │                           nodes get a pod too)
//!     └─────────────▶ failed      a failed pod with failurePolicy FailFast (default),
//!                                 restarts over restartLimit, or activeDeadlineSeconds
//!                                 passed — active pods are deleted
//! ```
//!
//! `desired` counts the nodes the pod fits (nodeSelector, taints, cordon, readiness) plus
//! nodes that already ran one. The caller keeps the start time and the terminal phase
//! (the job's status); [`plan`] says what to do next and when to look again (deadline,
//! TTL after finishing).

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Toleration;
use shoal_core::FieldError;
use shoal_core::kinds::{
    BroadcastJobPhase, BroadcastJobSpec, CompletionPolicyType, FailurePolicyType, IntOrPercent,
};

use crate::pod::{NodeView, PodPhase, PodView, fit};

/// A BroadcastJob's spec, parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct BroadcastJobPolicy {
    pub parallelism: Option<IntOrPercent>,
    pub completion: CompletionPolicyType,
    pub active_deadline: Option<SignedDuration>,
    pub ttl_after_finished: Option<SignedDuration>,
    pub failure: FailurePolicyType,
    pub restart_limit: Option<u32>,
    pub paused: bool,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
}

impl BroadcastJobPolicy {
    /// # Errors
    /// A [`FieldError`] naming the field for a bad parallelism or negative limits.
    pub fn from_kruise(spec: &BroadcastJobSpec) -> Result<Self, FieldError> {
        let secs = |field: &str, v: Option<i64>| -> Result<Option<SignedDuration>, FieldError> {
            match v {
                None => Ok(None),
                Some(s) if s < 0 => Err(FieldError::invalid(
                    field,
                    format!("{s}: must be greater than or equal to 0"),
                )),
                Some(s) => Ok(Some(SignedDuration::from_secs(s))),
            }
        };
        let cp = &spec.completion_policy;
        let fp = spec.failure_policy.as_ref();
        let tspec = spec.template.spec.as_ref();
        Ok(BroadcastJobPolicy {
            parallelism: spec
                .parallelism
                .as_ref()
                .map(|p| {
                    IntOrPercent::from_k8s(p)
                        .map_err(|e| FieldError::invalid("spec.parallelism", e))
                })
                .transpose()?,
            completion: cp.type_.unwrap_or(CompletionPolicyType::Always),
            active_deadline: secs(
                "spec.completionPolicy.activeDeadlineSeconds",
                cp.active_deadline_seconds,
            )?,
            ttl_after_finished: secs(
                "spec.completionPolicy.ttlSecondsAfterFinished",
                cp.ttl_seconds_after_finished.map(i64::from),
            )?,
            failure: fp
                .and_then(|f| f.type_)
                .unwrap_or(FailurePolicyType::FailFast),
            restart_limit: fp
                .and_then(|f| f.restart_limit)
                .map(|l| {
                    u32::try_from(l).map_err(|_| {
                        FieldError::invalid(
                            "spec.failurePolicy.restartLimit",
                            format!("{l}: must be greater than or equal to 0"),
                        )
                    })
                })
                .transpose()?,
            paused: spec.paused.unwrap_or(false),
            node_selector: tspec
                .and_then(|s| s.node_selector.clone())
                .unwrap_or_default(),
            tolerations: tspec
                .and_then(|s| s.tolerations.clone())
                .unwrap_or_default(),
        })
    }
}

/// What the job's status already says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobProgress {
    /// `status.startTime`.
    pub started: Timestamp,
    /// `status.completionTime` and the terminal phase, once finished.
    pub finished: Option<(Timestamp, BroadcastJobPhase)>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BroadcastJobCounts {
    pub desired: u32,
    pub active: u32,
    pub succeeded: u32,
    pub failed: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BroadcastJobPlan {
    /// Nodes (indexes) to start a pod on.
    pub create: Vec<u32>,
    pub delete: Vec<u64>,
    pub status: BroadcastJobCounts,
    pub phase: BroadcastJobPhase,
    /// Set when the job finishes in this pass: when, and the condition's reason.
    pub finished_now: Option<(Timestamp, &'static str)>,
    /// The failure policy asks to set `spec.paused`.
    pub pause: bool,
    /// The TTL after finishing has passed: delete the job.
    pub expired: bool,
    pub requeue_at: Option<Timestamp>,
}

/// One pass of the BroadcastJob controller. See the module docs.
pub fn plan(
    policy: &BroadcastJobPolicy,
    progress: JobProgress,
    nodes: &[NodeView<'_>],
    pods: &[PodView],
    now: Timestamp,
) -> BroadcastJobPlan {
    let mut has_pod = vec![false; nodes.len()];
    let mut st = BroadcastJobCounts::default();
    let mut active_ids = Vec::new();
    let mut restarts: u64 = 0;
    for p in pods.iter().filter(|p| !p.terminating) {
        if let Some(h) = p.node.and_then(|n| has_pod.get_mut(n as usize)) {
            *h = true;
        }
        restarts += u64::from(p.restarts);
        match p.phase {
            PodPhase::Succeeded => st.succeeded += 1,
            PodPhase::Failed => st.failed += 1,
            PodPhase::Pending | PodPhase::Running => {
                st.active += 1;
                active_ids.push(p.id);
            }
        }
    }
    let fits: Vec<bool> = nodes
        .iter()
        .map(|n| fit(n, &policy.node_selector, &policy.tolerations, false).should_run)
        .collect();
    st.desired = (0..nodes.len()).filter(|i| fits[*i] || has_pod[*i]).count() as u32;

    let mut out = BroadcastJobPlan {
        create: Vec::new(),
        delete: Vec::new(),
        status: st,
        phase: BroadcastJobPhase::Running,
        finished_now: None,
        pause: false,
        expired: false,
        requeue_at: None,
    };

    if let Some((at, phase)) = progress.finished {
        out.phase = phase;
        if let Some(ttl) = policy.ttl_after_finished {
            let expiry = at.saturating_add(ttl).unwrap_or(Timestamp::MAX);
            out.expired = now >= expiry;
            out.requeue_at = (!out.expired).then_some(expiry);
        }
        return out;
    }

    let fail = |out: &mut BroadcastJobPlan, reason: &'static str| {
        out.phase = BroadcastJobPhase::Failed;
        out.finished_now = Some((now, reason));
        out.delete = active_ids.clone();
    };
    if let Some(deadline) = policy.active_deadline
        && policy.completion == CompletionPolicyType::Always
    {
        let at = progress
            .started
            .saturating_add(deadline)
            .unwrap_or(Timestamp::MAX);
        if now >= at {
            fail(&mut out, "DeadlineExceeded");
            return out;
        }
        out.requeue_at = Some(at);
    }
    if policy
        .restart_limit
        .is_some_and(|l| restarts > u64::from(l))
    {
        fail(&mut out, "BackoffLimitExceeded");
        return out;
    }
    if st.failed > 0 {
        match policy.failure {
            FailurePolicyType::FailFast => {
                fail(&mut out, "FailedPodsFound");
                return out;
            }
            FailurePolicyType::Pause if !policy.paused => out.pause = true,
            FailurePolicyType::Pause | FailurePolicyType::Continue => {}
        }
    }
    if policy.paused || out.pause {
        out.phase = BroadcastJobPhase::Paused;
        return out;
    }

    let waiting: Vec<u32> = (0..nodes.len())
        .filter(|i| fits[*i] && !has_pod[*i])
        .map(|i| i as u32)
        .collect();
    if policy.completion == CompletionPolicyType::Always && waiting.is_empty() && st.active == 0 {
        out.phase = BroadcastJobPhase::Completed;
        out.finished_now = Some((now, "Complete"));
        return out;
    }
    let limit = policy
        .parallelism
        .map_or(u32::MAX, |p| p.scaled(st.desired, true));
    let room = limit.saturating_sub(st.active) as usize;
    out.create = waiting.into_iter().take(room).collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::fixtures::{mk_pod, t0};
    use proptest::prelude::*;

    fn mk_policy() -> BroadcastJobPolicy {
        BroadcastJobPolicy {
            parallelism: None,
            completion: CompletionPolicyType::Always,
            active_deadline: None,
            ttl_after_finished: None,
            failure: FailurePolicyType::FailFast,
            restart_limit: None,
            paused: false,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
        }
    }

    struct Nodes {
        names: Vec<String>,
        labels: BTreeMap<String, String>,
    }

    impl Nodes {
        fn new(n: usize) -> Self {
            Nodes {
                names: (0..n).map(|i| format!("n{i}")).collect(),
                labels: BTreeMap::new(),
            }
        }

        fn views(&self) -> Vec<NodeView<'_>> {
            self.names
                .iter()
                .map(|name| NodeView {
                    name,
                    labels: &self.labels,
                    taints: &[],
                    unschedulable: false,
                    ready: true,
                })
                .collect()
        }
    }

    fn progress() -> JobProgress {
        JobProgress {
            started: t0(),
            finished: None,
        }
    }

    fn finished_pod(id: u64, node: u32, phase: PodPhase) -> PodView {
        PodView {
            phase,
            ready_since: None,
            ..mk_pod(id, node, 0, false)
        }
    }

    #[test]
    fn a_job_runs_one_pod_per_node_within_parallelism_then_completes() {
        let nodes = Nodes::new(4);
        let mut pol = mk_policy();
        pol.parallelism = Some(IntOrPercent::Percent(50));
        let p = plan(&pol, progress(), &nodes.views(), &[], t0());
        assert_eq!(p.create, vec![0, 1]);
        assert_eq!(p.status.desired, 4);
        let pods: Vec<PodView> = (0..4)
            .map(|i| finished_pod(u64::from(i), i, PodPhase::Succeeded))
            .collect();
        let p = plan(&pol, progress(), &nodes.views(), &pods, t0());
        assert_eq!(p.phase, BroadcastJobPhase::Completed);
        assert_eq!(p.finished_now.map(|f| f.1), Some("Complete"));
        assert_eq!(p.status.succeeded, 4);
    }

    #[test]
    fn a_failed_pod_fails_fast_pauses_or_is_ignored_by_policy() {
        let nodes = Nodes::new(3);
        let pods = vec![finished_pod(0, 0, PodPhase::Failed), mk_pod(1, 1, 0, true)];
        let p = plan(&mk_policy(), progress(), &nodes.views(), &pods, t0());
        assert_eq!(p.phase, BroadcastJobPhase::Failed);
        assert_eq!(p.delete, vec![1], "active pods of a failed job are deleted");
        let mut pol = mk_policy();
        pol.failure = FailurePolicyType::Pause;
        let p = plan(&pol, progress(), &nodes.views(), &pods, t0());
        assert!(p.pause && p.create.is_empty());
        assert_eq!(p.phase, BroadcastJobPhase::Paused);
        pol.failure = FailurePolicyType::Continue;
        let p = plan(&pol, progress(), &nodes.views(), &pods, t0());
        assert_eq!(p.create, vec![2]);
    }

    #[test]
    fn the_deadline_fails_the_job_and_the_ttl_expires_it() {
        let nodes = Nodes::new(2);
        let mut pol = mk_policy();
        pol.active_deadline = Some(SignedDuration::from_secs(60));
        pol.ttl_after_finished = Some(SignedDuration::from_secs(30));
        let p = plan(&pol, progress(), &nodes.views(), &[], t0());
        assert_eq!(p.requeue_at, Some(t0() + SignedDuration::from_secs(60)));
        let late = t0() + SignedDuration::from_secs(61);
        let p = plan(
            &pol,
            progress(),
            &nodes.views(),
            &[mk_pod(0, 0, 0, true)],
            late,
        );
        assert_eq!(p.finished_now.map(|f| f.1), Some("DeadlineExceeded"));
        let done = JobProgress {
            started: t0(),
            finished: Some((late, BroadcastJobPhase::Failed)),
        };
        assert!(!plan(&pol, done, &nodes.views(), &[], late).expired);
        assert!(
            plan(
                &pol,
                done,
                &nodes.views(),
                &[],
                late + SignedDuration::from_secs(30)
            )
            .expired
        );
    }

    #[test]
    fn completion_policy_never_keeps_serving_new_nodes() {
        let mut pol = mk_policy();
        pol.completion = CompletionPolicyType::Never;
        let nodes = Nodes::new(3);
        let pods: Vec<PodView> = (0..2)
            .map(|i| finished_pod(u64::from(i), i, PodPhase::Succeeded))
            .collect();
        let p = plan(&pol, progress(), &nodes.views(), &pods, t0());
        assert_eq!(p.phase, BroadcastJobPhase::Running);
        assert_eq!(p.create, vec![2]);
    }

    proptest! {
        /// Pods finish at random: active pods never exceed parallelism, no node gets two
        /// pods, and the job completes with every node succeeded.
        #[test]
        fn broadcast_jobs_respect_parallelism_and_complete(
            n in 1usize..30,
            par in prop_oneof![(1u32..6).prop_map(IntOrPercent::Int), (1u32..=100).prop_map(IntOrPercent::Percent)],
            seed in any::<u64>(),
        ) {
            let nodes = Nodes::new(n);
            let mut pol = mk_policy();
            pol.parallelism = Some(par);
            let limit = par.scaled(n as u32, true);
            let mut pods: Vec<PodView> = Vec::new();
            let mut rng = seed | 1;
            let mut done = None;
            for step in 0..2000 {
                let p = plan(&pol, progress(), &nodes.views(), &pods, t0());
                if p.phase == BroadcastJobPhase::Completed {
                    done = Some(step);
                    break;
                }
                for node in &p.create {
                    prop_assert!(!pods.iter().any(|q| q.node == Some(*node)));
                    pods.push(mk_pod(pods.len() as u64, *node, 0, false));
                }
                let active = pods.iter().filter(|q| q.is_live()).count() as u32;
                prop_assert!(active <= limit, "{} active > parallelism {}", active, limit);
                for q in pods.iter_mut().filter(|q| q.is_live()) {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    if rng % 3 == 0 {
                        q.phase = PodPhase::Succeeded;
                    }
                }
            }
            prop_assert!(done.is_some());
            prop_assert_eq!(pods.len(), n);
        }
    }
}
