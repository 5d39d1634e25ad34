//! Deployments (`apps/v1`): create, scale and number ReplicaSets by
//! [`crate::deployment::plan`], and report a status `kubectl rollout status` follows.
//!
//! ```text
//!  Deployment web (template T)            ReplicaSet web-<hash(T)>   (raw JSON, as Kubernetes writes it)
//!    status: replicas, updatedReplicas,     labels/selector/template += pod-template-hash=<hash(T)>
//!      ready/available/unavailable,         ownerReferences: Deployment web (controller)
//!      observedGeneration,                  annotations: deployment.kubernetes.io/revision = N
//!      conditions Available, Progressing    spec.replicas ◀── plan's scales
//! ```
//!
//! The plan reads each ReplicaSet's spec (for totals) and its status as the ReplicaSet
//! pass last wrote it (for availability), exactly what the real controller sees. The
//! `Progressing` condition carries the time of the last progress (`lastUpdateTime`); a
//! rollout that makes none for `progressDeadlineSeconds` (default 600) turns it
//! `False/ProgressDeadlineExceeded`, which `kubectl rollout status` reports as a failure.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::{Value as Json, json};
use shoal_core::FieldError;
use shoal_store::Precondition;

use super::replicaset::{HASH_LABEL, REVISION_ANNOTATION, ReplicaSet};
use super::{Object, Pass, condition, read_kind, set, time};
use crate::deployment::{DeploymentPolicy, DeploymentStrategy, ReplicaSetView, plan};
use crate::driver::raw;
use crate::event::Source;
use crate::state::ClusterState;
use crate::template::{self, revision_hash};

/// `spec.progressDeadlineSeconds` when unset.
const DEFAULT_PROGRESS_DEADLINE: i64 = 600;
/// `spec.revisionHistoryLimit` when unset.
const DEFAULT_HISTORY: i32 = 10;

#[derive(Debug)]
pub(super) struct Spec {
    policy: DeploymentPolicy,
    template: PodTemplateSpec,
    selector: Json,
    progress_deadline: SignedDuration,
    /// Old ReplicaSets kept at 0 replicas for rollbacks (`spec.revisionHistoryLimit`).
    history_limit: usize,
}

/// One Deployment, as read at the start of a step.
#[derive(Debug)]
pub(super) struct Deployment {
    pub(super) o: Object,
    spec: Result<Spec, FieldError>,
}

fn parse_spec(o: &Object) -> Result<Spec, FieldError> {
    let spec: k8s_openapi::api::apps::v1::DeploymentSpec = o.spec()?;
    let policy = DeploymentPolicy::from_apps_v1(&spec)?;
    let deadline = spec
        .progress_deadline_seconds
        .map_or(DEFAULT_PROGRESS_DEADLINE, i64::from);
    if deadline <= 0 {
        return Err(FieldError::invalid(
            "spec.progressDeadlineSeconds",
            format!("{deadline}: must be greater than 0"),
        ));
    }
    Ok(Spec {
        policy,
        selector: serde_json::to_value(&spec.selector).unwrap_or_else(|_| json!({})),
        template: spec.template,
        progress_deadline: SignedDuration::from_secs(deadline),
        history_limit: usize::try_from(spec.revision_history_limit.unwrap_or(DEFAULT_HISTORY))
            .map_err(|_| {
                FieldError::invalid(
                    "spec.revisionHistoryLimit",
                    "must be greater than or equal to 0",
                )
            })?,
    })
}

pub(super) fn read(state: &ClusterState) -> Vec<Deployment> {
    read_kind(state, "apps", "deployments", "apps/v1", "Deployment")
        .into_iter()
        .map(|o| {
            let spec = parse_spec(&o);
            Deployment { o, spec }
        })
        .collect()
}

/// The ReplicaSet of template `template` with hash `hash`: labels, selector and pod
/// template carry `pod-template-hash`, as the Deployment controller writes it.
fn new_replica_set(
    d: &Deployment,
    spec: &Spec,
    hash: &str,
    replicas: u32,
    revision: u64,
    now: Timestamp,
) -> Json {
    let owner = &d.o.owner;
    let mut tpl = serde_json::to_value(&spec.template).unwrap_or_else(|_| json!({}));
    set(&mut tpl, &["metadata", "labels", HASH_LABEL], json!(hash));
    let labels = tpl["metadata"]["labels"].clone();
    let mut selector = spec.selector.clone();
    set(&mut selector, &["matchLabels", HASH_LABEL], json!(hash));
    let (surge, _) = surge_unavailable(&spec.policy);
    json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{}-{hash}", owner.name),
            "namespace": owner.namespace,
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": time(now),
            "generation": 1,
            "labels": labels,
            "annotations": {
                REVISION_ANNOTATION: revision.to_string(),
                "deployment.kubernetes.io/desired-replicas": spec.policy.replicas.to_string(),
                "deployment.kubernetes.io/max-replicas": spec.policy.replicas.saturating_add(surge).to_string(),
            },
            "ownerReferences": [{
                "apiVersion": owner.api_version, "kind": owner.kind, "name": owner.name,
                "uid": owner.uid, "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "spec": {
            "replicas": replicas,
            "minReadySeconds": spec.policy.min_ready.as_secs(),
            "selector": selector,
            "template": tpl,
        },
        "status": {"replicas": 0},
    })
}

/// The effective (maxSurge, maxUnavailable); a Recreate Deployment allows neither.
fn surge_unavailable(policy: &DeploymentPolicy) -> (u32, u32) {
    match policy.strategy {
        DeploymentStrategy::RollingUpdate {
            max_surge,
            max_unavailable,
        } => crate::deployment::resolve_fenceposts(max_surge, max_unavailable, policy.replicas),
        DeploymentStrategy::Recreate => (0, 0),
    }
}

/// Runs one Deployment; returns whether it wrote a ReplicaSet.
pub(super) fn reconcile(
    state: &mut ClusterState,
    pass: &mut Pass<'_, '_>,
    d: &Deployment,
    all_sets: &[ReplicaSet],
) -> bool {
    let spec = match &d.spec {
        Ok(s) => s,
        Err(e) => {
            d.o.write_invalid(state, e, pass.now());
            return false;
        }
    };
    let now = pass.now();
    let owner = &d.o.owner;
    let hash = revision_hash(&spec.template);
    let mut sets: Vec<&ReplicaSet> = all_sets
        .iter()
        .filter(|rs| rs.deployment.as_deref() == Some(owner.uid.as_str()))
        .collect();
    sets.sort_by_key(|rs| (rs.o.created(), rs.o.owner.name.clone()));
    // Revision 0 is the update revision (the set of the current template); the others
    // are numbered in creation order.
    let numbers: BTreeMap<usize, u32> = sets
        .iter()
        .enumerate()
        .filter(|(_, rs)| rs.hash() != hash)
        .enumerate()
        .map(|(n, (i, _))| (i, n as u32 + 1))
        .collect();
    let number = |i: usize| numbers.get(&i).copied().unwrap_or(0);
    let views: Vec<ReplicaSetView> = sets
        .iter()
        .enumerate()
        .map(|(i, rs)| ReplicaSetView {
            revision: number(i),
            replicas: rs.spec.as_ref().map_or(0, |s| s.replicas),
            pods: rs.count("replicas"),
            ready: rs.count("readyReplicas"),
            available: rs.count("availableReplicas"),
            created: rs.o.created().unwrap_or(now),
        })
        .collect();
    let p = plan(&spec.policy, 0, &views);
    let replicas = spec.policy.replicas;
    let allowed = match spec.policy.strategy {
        DeploymentStrategy::RollingUpdate { .. } => surge_unavailable(&spec.policy).1,
        DeploymentStrategy::Recreate => replicas,
    };
    pass.targets.push(super::target(
        &d.o,
        &spec.template,
        replicas,
        allowed,
        spec.policy.min_ready,
        false,
    ));
    let new_index = views.iter().position(|v| v.revision == 0);
    let max_old = sets
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != new_index)
        .map(|(_, rs)| rs.revision())
        .max()
        .unwrap_or(0);
    let mut new_name = new_index.map(|i| sets[i].o.owner.name.clone());
    let mut new_revision = new_index.map_or(max_old + 1, |i| sets[i].revision());
    let source = Source::controller("deployment-controller");
    let mut wrote = false;
    let scaled = |pass: &mut Pass<'_, '_>, name: &str, from: u32, to: u32| {
        let dir = if to > from { "up" } else { "down" };
        pass.env.events.normal(
            source.clone(),
            d.o.event_ref(),
            "ScalingReplicaSet",
            format!("Scaled {dir} replica set {name} from {from} to {to}"),
        );
    };
    let (surge, _) = surge_unavailable(&spec.policy);
    // Rolling back to an older template makes its set the newest revision.
    let bump = new_index.is_some() && new_revision <= max_old;
    if bump {
        new_revision = max_old + 1;
    }
    let mut writes: Vec<(usize, u32)> = p
        .scale
        .iter()
        .filter_map(|s| {
            let i = views.iter().position(|v| v.revision == s.revision)?;
            Some((i, s.replicas))
        })
        .collect();
    if let Some(i) = new_index
        && bump
        && !writes.iter().any(|(w, _)| *w == i)
    {
        writes.push((i, views[i].replicas));
    }
    for (i, replicas) in writes {
        let rs = sets[i];
        let from = views[i].replicas;
        let bump = bump && Some(i) == new_index;
        let mut obj = rs.o.obj.clone();
        set(&mut obj, &["spec", "replicas"], json!(replicas));
        set(
            &mut obj,
            &["spec", "minReadySeconds"],
            json!(spec.policy.min_ready.as_secs()),
        );
        if obj.get("spec") != rs.o.obj.get("spec") {
            let generation = rs.o.generation.saturating_add(1);
            set(&mut obj, &["metadata", "generation"], json!(generation));
        }
        let ann = |k| ["metadata", "annotations", k];
        set(
            &mut obj,
            &ann("deployment.kubernetes.io/desired-replicas"),
            json!(spec.policy.replicas.to_string()),
        );
        set(
            &mut obj,
            &ann("deployment.kubernetes.io/max-replicas"),
            json!(spec.policy.replicas.saturating_add(surge).to_string()),
        );
        if bump {
            set(
                &mut obj,
                &ann(REVISION_ANNOTATION),
                json!(new_revision.to_string()),
            );
        }
        if state
            .put(
                &rs.o.key,
                raw(&obj),
                Precondition::ModRevision(rs.o.revision),
            )
            .is_ok()
            && from != replicas
        {
            scaled(pass, &rs.o.owner.name, from, replicas);
        }
        wrote = true;
    }
    if new_index.is_none()
        && let Some(s) = p.scale.iter().find(|s| s.revision == 0)
    {
        let obj = new_replica_set(d, spec, &hash, s.replicas, new_revision, now);
        let name = format!("{}-{hash}", owner.name);
        let key = template::key("apps", "replicasets", Some(&owner.namespace), &name);
        if state.put(&key, raw(&obj), Precondition::Absent).is_ok() {
            scaled(pass, &name, 0, s.replicas);
            new_name = Some(name);
            wrote = true;
        }
    }
    if wrote {
        pass.env.next.at(Some(now));
    }
    let c = p.status;
    let (_, max_unavailable) = surge_unavailable(&spec.policy);
    let want = spec.policy.replicas;
    let old_conditions = d.o.status("/conditions");
    let available_ok = c.available_replicas >= want.saturating_sub(max_unavailable);
    let available = if available_ok {
        (
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
        )
    } else {
        (
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        )
    };
    let mut conditions = vec![condition(
        old_conditions,
        "Available",
        available.0,
        available.1,
        available.2.to_string(),
        now,
    )];
    let rs_name = new_name.unwrap_or_else(|| format!("{}-{hash}", owner.name));
    let old_counts = [
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
    ]
    .map(|f| d.o.status(&format!("/{f}")).and_then(Json::as_u64));
    let counts = [
        c.replicas,
        c.updated_replicas,
        c.ready_replicas,
        c.available_replicas,
    ]
    .map(|n| Some(u64::from(n)));
    let progressed = wrote || old_counts != counts;
    let complete = c.updated_replicas == want && c.replicas == want && c.available_replicas >= want;
    let old_progressing = old_conditions
        .and_then(Json::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Progressing"));
    let last_update = old_progressing
        .and_then(|c| c["lastUpdateTime"].as_str())
        .and_then(|s| s.parse::<Timestamp>().ok());
    let (status, reason, message, updated) = if spec.policy.paused {
        (
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".to_string(),
            last_update.unwrap_or(now),
        )
    } else if complete {
        let keep = old_progressing.is_some_and(|c| c["reason"] == "NewReplicaSetAvailable");
        (
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
            if keep {
                last_update.unwrap_or(now)
            } else {
                now
            },
        )
    } else if progressed || last_update.is_none() {
        (
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{rs_name}\" is progressing."),
            now,
        )
    } else {
        let since = last_update.unwrap_or(now);
        let deadline = since
            .saturating_add(spec.progress_deadline)
            .unwrap_or(Timestamp::MAX);
        if now >= deadline {
            (
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
                since,
            )
        } else {
            pass.env.next.at(Some(deadline));
            (
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{rs_name}\" is progressing."),
                since,
            )
        }
    };
    if complete && !wrote {
        wrote = clean_up(state, spec, &sets, new_index);
    }
    let mut progressing = condition(old_conditions, "Progressing", status, reason, message, now);
    progressing["lastUpdateTime"] = time(updated);
    conditions.push(progressing);
    let mut status = json!({
        "observedGeneration": d.o.generation,
        "replicas": c.replicas,
        "updatedReplicas": c.updated_replicas,
        "readyReplicas": c.ready_replicas,
        "availableReplicas": c.available_replicas,
        "conditions": conditions,
    });
    if c.unavailable_replicas > 0 {
        status["unavailableReplicas"] = json!(c.unavailable_replicas);
    }
    let revision = new_revision.to_string();
    let has_new = new_index.is_some() || wrote;
    d.o.update(state, |obj| {
        set(obj, &["status"], status);
        if has_new {
            set(
                obj,
                &["metadata", "annotations", REVISION_ANNOTATION],
                json!(revision),
            );
        }
    });
    wrote
}

/// Deletes the oldest scaled-down ReplicaSets beyond the history limit, once a rollout is
/// complete (`cleanupDeployment`); returns whether it deleted any.
fn clean_up(
    state: &mut ClusterState,
    spec: &Spec,
    sets: &[&ReplicaSet],
    new_index: Option<usize>,
) -> bool {
    let mut idle: Vec<&ReplicaSet> = sets
        .iter()
        .enumerate()
        .filter(|(i, rs)| {
            Some(*i) != new_index
                && rs.spec.as_ref().is_ok_and(|s| s.replicas == 0)
                && rs.count("replicas") == 0
        })
        .map(|(_, rs)| *rs)
        .collect();
    if idle.len() <= spec.history_limit {
        return false;
    }
    idle.sort_by_key(|rs| (rs.revision(), rs.o.created()));
    let excess = idle.len() - spec.history_limit;
    for rs in idle.into_iter().take(excess) {
        let _ = state.delete(&rs.o.key, Precondition::ModRevision(rs.o.revision));
    }
    true
}
