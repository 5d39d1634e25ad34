//! How simulated controllers make pods: one shared template per workload revision, names,
//! revision hashes and storage keys as Kubernetes makes them.
//!
//! ```text
//!  workload (DaemonSet uid, template) ──hash──▶ revision "6d4f8b9c7d"
//!        │                                         │
//!        └──▶ PodTemplate (Arc, shared) = template metadata + spec
//!                  + labels controller-revision-hash / pod-template-generation
//!                  + ownerReferences (controller: true)
//!  each pod = PodRecord { template: Arc, uid, node, lifecycle }  (state.rs)
//! ```
//!
//! The key decision: the revision hash is computed the way the pure rollout logic and
//! clients both see it (a label on every pod), from the template's JSON, so "is this pod
//! updated" is a string comparison and survives restarts of the simulator.

use std::sync::Arc;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::{Value as Json, json};

use crate::state::PodTemplate;

/// Kubernetes' alphabet for generated name suffixes and hashes (no vowels, no look-alikes).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// FNV-1a (64 bit) of `parts`, each followed by a 0xff separator so ("ab","c") and
/// ("a","bc") differ: stable across runs and platforms (std's hasher is not).
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    use std::hash::Hasher;
    let mut h = fnv::FnvHasher::default();
    for part in parts {
        h.write(part);
        h.write_u8(0xff);
    }
    h.finish()
}

/// `n` characters of Kubernetes' safe alphabet from `seed`.
pub fn safe_string(mut seed: u64, n: usize) -> String {
    let base = SAFE_ALPHABET.len() as u64;
    (0..n)
        .map(|_| {
            let c = SAFE_ALPHABET[(seed % base) as usize] as char;
            seed = (seed / base) ^ seed.rotate_left(17);
            c
        })
        .collect()
}

/// The revision hash of a pod template (the `controller-revision-hash` label).
///
/// Empty values (`null`, `{}`, `[]`) do not count: clients written in Go send
/// `"resources": {}` where Rust ones send nothing (`kubectl rollout undo` copies a
/// ReplicaSet's template back that way), and both must name the same revision.
pub fn revision_hash(template: &PodTemplateSpec) -> String {
    let mut v = serde_json::to_value(template).unwrap_or(Json::Null);
    drop_empty(&mut v);
    let bytes = serde_json::to_vec(&v).unwrap_or_default();
    safe_string(fnv1a(&[&bytes]), 10)
}

/// Removes `null`, `{}` and `[]` values from objects, innermost first.
fn drop_empty(v: &mut Json) {
    match v {
        Json::Object(map) => {
            for x in map.values_mut() {
                drop_empty(x);
            }
            map.retain(|_, x| match x {
                Json::Null => false,
                Json::Object(m) => !m.is_empty(),
                Json::Array(a) => !a.is_empty(),
                _ => true,
            });
        }
        Json::Array(items) => items.iter_mut().for_each(drop_empty),
        _ => {}
    }
}

/// A pod name for `owner` from `(owner_uid, counter)`: `owner-xxxxx`. Like Kubernetes'
/// generated names these can collide (27⁵ suffixes); the caller tries the next counter when
/// the name is taken.
pub fn pod_name(owner: &str, owner_uid: &str, counter: u64) -> String {
    let seed = fnv1a(&[owner_uid.as_bytes(), &counter.to_le_bytes()]);
    format!("{owner}-{}", safe_string(seed, 5))
}

/// The storage key of an object (the API server's layout: `/registry/{group}/{plural}/…`).
pub fn key(group: &str, plural: &str, namespace: Option<&str>, name: &str) -> String {
    let group = if group.is_empty() { "core" } else { group };
    match namespace {
        Some(ns) => format!("/registry/{group}/{plural}/{ns}/{name}"),
        None => format!("/registry/{group}/{plural}/{name}"),
    }
}

/// The collection prefix of a kind (all namespaces).
pub fn prefix(group: &str, plural: &str) -> String {
    let group = if group.is_empty() { "core" } else { group };
    format!("/registry/{group}/{plural}/")
}

/// The workload a pod belongs to, as its owner reference names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    pub namespace: String,
}

/// The shared template of the pods of one revision of `owner`.
pub fn pod_template(
    owner: &Owner,
    template: &PodTemplateSpec,
    extra_labels: &[(&str, String)],
) -> Arc<PodTemplate> {
    let meta = template.metadata.clone().unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    for (k, v) in extra_labels {
        labels.insert((*k).to_string(), v.clone());
    }
    let spec = template.spec.clone().unwrap_or_default();
    let mut spec_json = serde_json::to_value(&spec).unwrap_or_else(|_| json!({}));
    if let Some(obj) = spec_json.as_object_mut() {
        obj.entry("restartPolicy").or_insert(json!("Always"));
        obj.entry("schedulerName")
            .or_insert(json!("default-scheduler"));
        obj.entry("terminationGracePeriodSeconds")
            .or_insert(json!(30));
    }
    let mut metadata = json!({
        "generateName": format!("{}-", owner.name),
        "labels": labels,
        "ownerReferences": [{
            "apiVersion": owner.api_version,
            "kind": owner.kind,
            "name": owner.name,
            "uid": owner.uid,
            "controller": true,
            "blockOwnerDeletion": true,
        }],
    });
    if let Some(annotations) = meta.annotations.filter(|a| !a.is_empty()) {
        metadata["annotations"] = json!(annotations);
    }
    Arc::new(PodTemplate::from_base(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec_json}),
    ))
}

/// The owner (controller) reference of a pod object, if any: `(kind, name, uid)`.
pub fn controller_of(pod: &Json) -> Option<(&str, &str, &str)> {
    pod.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r.get("controller").and_then(Json::as_bool) == Some(true))
        .and_then(|r| {
            Some((
                r.get("kind")?.as_str()?,
                r.get("name")?.as_str()?,
                r.get("uid")?.as_str()?,
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(json!({
            "metadata": {"labels": {"app": "agent"}},
            "spec": {"containers": [{"name": "agent", "image": image}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_revision_hash_is_stable_and_changes_with_the_template() {
        let a = revision_hash(&template("agent:1"));
        assert_eq!(a, revision_hash(&template("agent:1")));
        assert_ne!(a, revision_hash(&template("agent:2")));
        assert_eq!(a.len(), 10);
        assert!(a.bytes().all(|b| SAFE_ALPHABET.contains(&b)));
    }

    #[test]
    fn a_revision_hash_ignores_empty_fields_as_go_clients_send_them() {
        let with_empty: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "agent"}, "annotations": {}},
            "spec": {"containers": [{"name": "agent", "image": "agent:1", "resources": {}}]}
        }))
        .unwrap();
        assert_eq!(
            revision_hash(&with_empty),
            revision_hash(&template("agent:1"))
        );
    }

    #[test]
    fn pod_names_spread_over_counters_and_look_like_kubernetes_ones() {
        let names: std::collections::HashSet<_> =
            (0..10_000).map(|i| pod_name("agent", "uid-1", i)).collect();
        // 10,000 draws from 27^5 suffixes: a handful of collisions at most.
        assert!(names.len() > 9_980, "{} distinct", names.len());
        assert!(
            names
                .iter()
                .all(|n| n.starts_with("agent-") && n.len() == 11)
        );
    }

    #[test]
    fn a_pod_template_carries_the_owner_and_the_revision_labels() {
        let owner = Owner {
            api_version: "apps/v1".into(),
            kind: "DaemonSet".into(),
            name: "agent".into(),
            uid: "u-1".into(),
            namespace: "kube-system".into(),
        };
        let t = pod_template(
            &owner,
            &template("agent:1"),
            &[("controller-revision-hash", "abc".into())],
        );
        assert_eq!(
            t.base["metadata"]["labels"]["controller-revision-hash"],
            "abc"
        );
        assert_eq!(t.base["metadata"]["labels"]["app"], "agent");
        let pod = &t.base;
        assert_eq!(controller_of(pod), Some(("DaemonSet", "agent", "u-1")));
        assert_eq!(
            t.containers,
            vec![("agent".to_string(), "agent:1".to_string())]
        );
    }

    #[test]
    fn keys_follow_the_api_servers_layout() {
        assert_eq!(key("", "pods", Some("ns"), "p"), "/registry/core/pods/ns/p");
        assert_eq!(
            key("apps", "daemonsets", Some("ns"), "d"),
            "/registry/apps/daemonsets/ns/d"
        );
        assert_eq!(key("", "nodes", None, "n"), "/registry/core/nodes/n");
    }
}
