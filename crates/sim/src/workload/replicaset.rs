//! ReplicaSets (`apps/v1`), whether a Deployment made them or a client did: keep
//! `spec.replicas` pods of the template, by [`crate::deployment::replicaset_plan`].
//!
//! New pods are placed by [`crate::deployment::schedule`] (nodeSelector, taints, cordon,
//! readiness; fewest pods first). A pod that fits no node is created unbound — Pending,
//! `Unschedulable`, with a `FailedScheduling` event — and is bound by a later pass once a
//! node fits, as the scheduler's retry queue would.
//!
//! ReplicaSets controlled by a Deployment that no longer exists are deleted when read
//! (the garbage collector's background cascade); their pods follow in the same step.

use std::collections::HashSet;

use jiff::SignedDuration;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::{Value as Json, json};
use shoal_core::FieldError;
use shoal_store::Precondition;

use super::{Object, Pass, read_kind, view};
use crate::deployment::replicaset_plan;
use crate::event::Source;
use crate::pod::PodView;
use crate::state::ClusterState;
use crate::template::{controller_of, pod_template, revision_hash};

/// The label a Deployment puts on its ReplicaSets and their pods.
pub(super) const HASH_LABEL: &str = "pod-template-hash";
/// The annotation numbering a Deployment's ReplicaSets (its rollout history).
pub(super) const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";

#[derive(Debug)]
pub(super) struct Spec {
    pub(super) replicas: u32,
    min_ready: SignedDuration,
    template: PodTemplateSpec,
}

/// One ReplicaSet, as read at the start of a step (or after Deployments wrote some).
#[derive(Debug)]
pub(super) struct ReplicaSet {
    pub(super) o: Object,
    pub(super) spec: Result<Spec, FieldError>,
    /// The uid of the Deployment that controls it, if any.
    pub(super) deployment: Option<String>,
}

impl ReplicaSet {
    /// `metadata.labels[pod-template-hash]`.
    pub(super) fn hash(&self) -> &str {
        self.o
            .obj
            .pointer("/metadata/labels")
            .and_then(|l| l.get(HASH_LABEL))
            .and_then(Json::as_str)
            .unwrap_or("")
    }

    /// `deployment.kubernetes.io/revision`, 0 when absent.
    pub(super) fn revision(&self) -> u64 {
        self.o
            .obj
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(REVISION_ANNOTATION))
            .and_then(Json::as_str)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// A count from `status`, 0 when absent.
    pub(super) fn count(&self, field: &str) -> u32 {
        self.o
            .status(&format!("/{field}"))
            .and_then(Json::as_u64)
            .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
    }
}

fn parse_spec(o: &Object) -> Result<Spec, FieldError> {
    let spec: k8s_openapi::api::apps::v1::ReplicaSetSpec = o.spec()?;
    let replicas = spec.replicas.unwrap_or(1);
    let replicas = u32::try_from(replicas).map_err(|_| {
        FieldError::invalid(
            "spec.replicas",
            format!("{replicas}: must be greater than or equal to 0"),
        )
    })?;
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    if min_ready < 0 {
        return Err(FieldError::invalid(
            "spec.minReadySeconds",
            format!("{min_ready}: must be greater than or equal to 0"),
        ));
    }
    Ok(Spec {
        replicas,
        min_ready: SignedDuration::from_secs(i64::from(min_ready)),
        template: spec.template.unwrap_or_default(),
    })
}

/// Reads the ReplicaSets; deletes those whose controlling Deployment is not in `alive`.
pub(super) fn read(state: &mut ClusterState, alive: &HashSet<String>) -> Vec<ReplicaSet> {
    let mut out = Vec::new();
    let mut orphans = Vec::new();
    for o in read_kind(state, "apps", "replicasets", "apps/v1", "ReplicaSet") {
        let deployment = match controller_of(&o.obj) {
            Some(("Deployment", _, uid)) => Some(uid.to_string()),
            _ => None,
        };
        if let Some(uid) = &deployment
            && !alive.contains(uid)
        {
            orphans.push(o.key.clone());
            continue;
        }
        let spec = parse_spec(&o);
        out.push(ReplicaSet {
            o,
            spec,
            deployment,
        });
    }
    for key in orphans {
        let _ = state.delete(&key, Precondition::None);
    }
    out
}

pub(super) fn reconcile(state: &mut ClusterState, pass: &mut Pass<'_, '_>, rs: &ReplicaSet) {
    let spec = match &rs.spec {
        Ok(s) => s,
        Err(e) => return rs.o.write_invalid(state, e, pass.now()),
    };
    let now = pass.now();
    let owner = &rs.o.owner;
    let hash = revision_hash(&spec.template);
    let template = pass.template(owner, &hash, || pod_template(owner, &spec.template, &[]));
    let pods = pass.owned_pods(state, &owner.uid);
    let views: Vec<PodView> = pods
        .iter()
        .enumerate()
        .map(|(i, (_, rec))| view(i as u64, rec, 0, &pass.node_index))
        .collect();
    let plan = replicaset_plan(spec.replicas, spec.min_ready, &views, now);
    pass.env.next.at(plan.requeue_at);
    if plan.create > 0 || !plan.delete.is_empty() {
        pass.env.next.at(Some(now));
    }
    let source = Source::controller("replicaset-controller");
    for id in &plan.delete {
        if let Some((key, rec)) = pods.get(*id as usize) {
            pass.delete_pod(state, key, rec);
            pass.env.events.normal(
                source.clone(),
                rs.o.event_ref(),
                "SuccessfulDelete",
                format!("Deleted pod: {}", super::name_of(key)),
            );
        }
    }
    let deleted: HashSet<u64> = plan.delete.iter().copied().collect();
    pass.bind_pending(state, &spec.template, &pods, &deleted);
    for _ in 0..plan.create {
        let node = pass
            .schedule(state, &spec.template)
            .and_then(|n| pass.node_name(n));
        if let Some(name) = pass.create_pod(state, owner, &template, node, None) {
            pass.env.events.normal(
                source.clone(),
                rs.o.event_ref(),
                "SuccessfulCreate",
                format!("Created pod: {name}"),
            );
        }
    }
    let s = plan.status;
    let wrote = rs.o.write_status(
        state,
        json!({
            "replicas": s.replicas,
            "fullyLabeledReplicas": s.replicas,
            "readyReplicas": s.ready_replicas,
            "availableReplicas": s.available_replicas,
            "observedGeneration": rs.o.generation,
        }),
    );
    if wrote && rs.deployment.is_some() {
        // Its Deployment reads this status (it ran earlier in this pass): look again.
        pass.env.next.at(Some(now));
    }
}
