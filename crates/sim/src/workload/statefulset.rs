//! StatefulSets (`apps/v1`): pods `<name>-<ordinal>` by [`crate::statefulset::plan`], and
//! the status `kubectl rollout status sts/x` follows (current/update revision, counts).
//!
//! ```text
//!  revision "<name>-<hash(template)>"   = status.updateRevision = pods' controller-revision-hash
//!  status.currentRevision               = what pods below the partition keep running
//!  pod <name>-<i>: the revision's template + statefulset.kubernetes.io/pod-name,
//!                  apps.kubernetes.io/pod-index, spec.hostname (and subdomain)
//! ```
//!
//! Unlike ReplicaSet pods, each pod has its own name in its labels, so its template is
//! its own (StatefulSets are small; the revision's template is still built once). A pod
//! recreated below the partition needs the *current* revision's template, which is no
//! longer in the spec: Kubernetes keeps it in a ControllerRevision, the simulator takes it
//! from its template cache or from a surviving pod of that revision — and, when neither
//! exists (a restarted simulator whose old pods are all gone), from the update revision.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::{Value as Json, json};
use shoal_core::FieldError;

use super::{Object, Pass, REVISION_LABEL, pod_revision_hash, read_kind, set, view};
use crate::event::Source;
use crate::pod::{PodView, Revision};
use crate::state::{ClusterState, PodRecord, PodTemplate};
use crate::statefulset::{StatefulSetPolicy, StatefulStrategy, plan};
use crate::template::{pod_template, revision_hash};

const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

#[derive(Debug)]
pub(super) struct Spec {
    policy: StatefulSetPolicy,
    template: PodTemplateSpec,
    service_name: Option<String>,
}

/// One StatefulSet, as read at the start of a step.
#[derive(Debug)]
pub(super) struct StatefulSet {
    pub(super) o: Object,
    spec: Result<Spec, FieldError>,
}

fn parse_spec(o: &Object) -> Result<Spec, FieldError> {
    let spec: k8s_openapi::api::apps::v1::StatefulSetSpec = o.spec()?;
    Ok(Spec {
        policy: StatefulSetPolicy::from_apps_v1(&spec)?,
        service_name: spec.service_name.clone().filter(|s| !s.is_empty()),
        template: spec.template,
    })
}

pub(super) fn read(state: &ClusterState) -> Vec<StatefulSet> {
    read_kind(state, "apps", "statefulsets", "apps/v1", "StatefulSet")
        .into_iter()
        .map(|o| {
            let spec = parse_spec(&o);
            StatefulSet { o, spec }
        })
        .collect()
}

/// The ordinal of pod `name` of set `set`; names that are not `<set>-<n>` sort past
/// every slot, so the plan deletes them.
fn ordinal(set: &str, name: &str) -> u32 {
    name.strip_prefix(set)
        .and_then(|r| r.strip_prefix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(u32::MAX)
}

/// Pod `name`'s own template: the revision's, with its identity labels and hostname.
fn per_pod(base: &Json, name: &str, ordinal: u32, service: Option<&str>) -> Arc<PodTemplate> {
    let mut v = base.clone();
    set(&mut v, &["metadata", "labels", POD_NAME_LABEL], json!(name));
    set(
        &mut v,
        &["metadata", "labels", POD_INDEX_LABEL],
        json!(ordinal.to_string()),
    );
    if let Some(m) = v.get_mut("metadata").and_then(Json::as_object_mut) {
        m.remove("generateName");
    }
    set(&mut v, &["spec", "hostname"], json!(name));
    if let Some(s) = service {
        set(&mut v, &["spec", "subdomain"], json!(s));
    }
    Arc::new(PodTemplate::from_base(v))
}

pub(super) fn reconcile(state: &mut ClusterState, pass: &mut Pass<'_, '_>, s: &StatefulSet) {
    let spec = match &s.spec {
        Ok(sp) => sp,
        Err(e) => return s.o.write_invalid(state, e, pass.now()),
    };
    let now = pass.now();
    let owner = &s.o.owner;
    let update_hash = format!("{}-{}", owner.name, revision_hash(&spec.template));
    let update_template = pass.template(owner, &update_hash, || {
        pod_template(
            owner,
            &spec.template,
            &[(REVISION_LABEL, update_hash.clone())],
        )
    });
    let current_hash =
        s.o.status("/currentRevision")
            .and_then(Json::as_str)
            .filter(|h| !h.is_empty())
            .unwrap_or(&update_hash)
            .to_string();
    let pods = pass.owned_pods(state, &owner.uid);
    // 0: update revision; 1: current revision (when it differs); then any other hash.
    let mut numbers: BTreeMap<String, Revision> = BTreeMap::new();
    numbers.insert(update_hash.clone(), 0);
    let n = numbers.len() as Revision;
    let current = *numbers.entry(current_hash.clone()).or_insert(n);
    let views: Vec<PodView> = pods
        .iter()
        .enumerate()
        .map(|(i, (key, rec))| {
            let n = numbers.len() as Revision;
            let rev = *numbers
                .entry(pod_revision_hash(rec).to_string())
                .or_insert(n);
            PodView {
                ordinal: ordinal(&owner.name, super::name_of(key)),
                ..view(i as u64, rec, rev, &pass.node_index)
            }
        })
        .collect();
    let p = plan(&spec.policy, current, 0, &views, now);
    let replicas = spec.policy.replicas;
    let allowed = match spec.policy.strategy {
        StatefulStrategy::RollingUpdate {
            max_unavailable, ..
        } => max_unavailable.scaled(replicas, true).max(1),
        StatefulStrategy::OnDelete => replicas,
    };
    pass.targets.push(super::target(
        &s.o,
        &spec.template,
        replicas,
        allowed,
        spec.policy.min_ready,
        false,
    ));
    pass.env.next.at(p.requeue_at);
    if !p.is_empty() {
        pass.env.next.at(Some(now));
    }
    let source = Source::controller("statefulset-controller");
    for id in &p.delete {
        if let Some((key, rec)) = pods.get(*id as usize) {
            pass.delete_pod(state, key, rec);
            pass.env.events.normal(
                source.clone(),
                s.o.event_ref(),
                "SuccessfulDelete",
                format!(
                    "delete Pod {} in StatefulSet {} successful",
                    super::name_of(key),
                    owner.name
                ),
            );
        }
    }
    let deleted: HashSet<u64> = p.delete.iter().copied().collect();
    pass.bind_pending(state, &spec.template, &pods, &deleted);
    for c in &p.create {
        let base: Option<Arc<PodTemplate>> = if c.revision == 0 {
            Some(update_template.clone())
        } else {
            pass.env
                .templates
                .get(&(owner.uid.clone(), current_hash.clone()))
                .cloned()
                .or_else(|| surviving_template(&pods, &current_hash))
        };
        let base = base.unwrap_or_else(|| update_template.clone());
        let name = format!("{}-{}", owner.name, c.ordinal);
        let template = per_pod(&base.base, &name, c.ordinal, spec.service_name.as_deref());
        let node = pass
            .schedule(state, &spec.template)
            .and_then(|n| pass.node_name(n));
        if pass
            .create_pod(state, owner, &template, node, Some(&name))
            .is_some()
        {
            pass.env.events.normal(
                source.clone(),
                s.o.event_ref(),
                "SuccessfulCreate",
                format!("create Pod {name} in StatefulSet {} successful", owner.name),
            );
        }
    }
    let hash_of = |rev: Revision| {
        numbers
            .iter()
            .find(|(_, n)| **n == rev)
            .map_or_else(|| update_hash.clone(), |(h, _)| h.clone())
    };
    let st = p.status;
    s.o.write_status(
        state,
        json!({
            "observedGeneration": s.o.generation,
            "replicas": st.replicas,
            "readyReplicas": st.ready_replicas,
            "availableReplicas": st.available_replicas,
            "currentReplicas": st.current_replicas,
            "updatedReplicas": st.updated_replicas,
            "currentRevision": hash_of(p.current_revision),
            "updateRevision": update_hash,
            "collisionCount": 0,
        }),
    );
}

/// The template of a surviving pod at revision `hash` (its identity is rewritten by
/// [`per_pod`]).
fn surviving_template(pods: &[(Arc<str>, Arc<PodRecord>)], hash: &str) -> Option<Arc<PodTemplate>> {
    pods.iter()
        .find(|(_, rec)| pod_revision_hash(rec) == hash)
        .map(|(_, rec)| rec.template.clone())
}
