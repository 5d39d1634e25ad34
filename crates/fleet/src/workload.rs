//! Reading a workload and its pods on a member cluster: what the fleet view of a
//! component (which version runs where, and drift) is computed from.
//!
//! ```text
//!  read_workload(kind, ns/name) ──GET──▶ None (404: not installed)
//!                                  └───▶ Some(Workload { object (JSON),
//!                                                        pods: settled? n × the template
//!                                                              else LIST by spec.selector.matchLabels })
//! ```
//!
//! The key decision: objects come back as JSON with the last-applied copy parsed next to
//! them, so the pure code that judges versions and drift (`shoal_core::inventory`) sees
//! exactly what an apply would see, for any workload kind the cluster serves.
//!
//! A workload whose own status says every one of its pods runs its current template
//! ([`settled_pods`]: the controller observed the latest generation, and all pods are
//! updated and available, none left over from an older template) is not listed: its
//! pods are that many copies of the template, which is what the list would show. That
//! is the state of nearly every cluster nearly all the time, so the census reads the
//! hundred pods of a cluster only while a rollout is moving there (kube-state-metrics
//! counts rollouts from the same status fields).

use std::borrow::Cow;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::api::{Api, ListParams};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Error, Fleet, LAST_APPLIED, Member, Result};

/// A workload as it is on a member cluster.
#[derive(Clone, Debug)]
pub struct Workload {
    /// The live object.
    pub object: Value,
    /// What shoal applied last (the [`LAST_APPLIED`] annotation), if shoal applied it.
    pub last_applied: Option<Value>,
    /// Its pods (matched by `spec.selector.matchLabels`), as JSON, with what the fleet
    /// view reads of them: `spec.containers[].image`. (A whole Pod is several KiB to
    /// parse and copy; the view reads a hundred per cluster on every pass.)
    pub pods: Vec<Value>,
}

/// A pod's container images, all [`read_workload`] reads of it: the rest of each Pod in
/// the list is skipped by the parser, not built.
#[derive(Clone, Debug, Deserialize)]
struct PodImages {
    #[serde(skip)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<PodImagesSpec>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct PodImagesSpec {
    #[serde(default)]
    containers: Vec<ContainerImage>,
}

#[derive(Clone, Debug, Deserialize)]
struct ContainerImage {
    #[serde(default)]
    image: Option<String>,
}

impl PodImages {
    /// The pod as JSON, as far as it was read.
    fn to_json(&self) -> Value {
        let containers: Vec<Value> = self
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .map(|c| serde_json::json!({ "image": c.image }))
            .collect();
        serde_json::json!({ "spec": { "containers": containers } })
    }
}

impl Resource for PodImages {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Pod::kind(&())
    }
    fn group(_: &()) -> Cow<'_, str> {
        Pod::group(&())
    }
    fn version(_: &()) -> Cow<'_, str> {
        Pod::version(&())
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Pod::plural(&())
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The parsed [`LAST_APPLIED`] annotation of `object`, if it has one that parses.
pub fn last_applied(object: &Value) -> Option<Value> {
    object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str(s).ok())
}

/// Reads `kind` `namespace`/`name` (`apiVersion` given) on `member` and its pods;
/// `None` when the object does not exist.
///
/// # Errors
/// Discovery (the cluster does not serve the kind) or API errors.
pub async fn read_workload(
    fleet: &Fleet,
    member: &Member,
    api_version: &str,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<Option<Workload>> {
    let probe = serde_json::json!({"apiVersion": api_version, "kind": kind,
        "metadata": {"name": name, "namespace": namespace}});
    let (api, target) = fleet.api_for(member, &probe).await?;
    let Some(obj) = api.get_opt(name).await.map_err(|source| Error::Kube {
        verb: "read",
        target: target.to_string(),
        source,
    })?
    else {
        return Ok(None);
    };
    let object = serde_json::to_value(&obj).map_err(|e| Error::Object(e.to_string()))?;
    let pods = match settled_pods(kind, &object) {
        Some(n) => template_pods(&object, n),
        None => pods_of::<PodImages>(member, namespace, &object, &target.to_string())
            .await?
            .iter()
            .map(PodImages::to_json)
            .collect(),
    };
    Ok(Some(Workload {
        last_applied: last_applied(&object),
        object,
        pods,
    }))
}

/// How many pods workload `object` (of `kind`, as JSON) has when its own status says
/// all of them run its current template and are available, with none left from an
/// older one or a partition holding some back; `None` when a rollout is moving, the
/// controller has not observed the latest generation, or the kind has no such status.
///
/// - DaemonSet (apps/v1 and Advanced): desired = current = updated = available
///   scheduled, none misscheduled;
/// - Deployment: `spec.replicas` = `status.replicas` (pods of every ReplicaSet) =
///   updated = available;
/// - StatefulSet: `currentRevision` = `updateRevision`, `spec.replicas` = `status.replicas`
///   = updated = ready.
pub fn settled_pods(kind: &str, object: &Value) -> Option<i64> {
    let int = |path: &str| object.pointer(path).and_then(Value::as_i64);
    let generation = int("/metadata/generation")?;
    if int("/status/observedGeneration")? < generation {
        return None;
    }
    let all_equal = |counts: &[Option<i64>]| -> Option<i64> {
        let first = (*counts.first()?)?;
        (first >= 0 && counts.iter().all(|c| *c == Some(first))).then_some(first)
    };
    match kind {
        "DaemonSet" => {
            if int("/status/numberMisscheduled").unwrap_or(0) != 0 {
                return None;
            }
            all_equal(&[
                int("/status/desiredNumberScheduled"),
                int("/status/currentNumberScheduled"),
                int("/status/updatedNumberScheduled"),
                int("/status/numberAvailable"),
            ])
        }
        "Deployment" => all_equal(&[
            Some(int("/spec/replicas").unwrap_or(1)),
            int("/status/replicas"),
            int("/status/updatedReplicas"),
            int("/status/availableReplicas"),
        ]),
        "StatefulSet" => {
            let revision = |path: &str| object.pointer(path).and_then(Value::as_str);
            if revision("/status/currentRevision")? != revision("/status/updateRevision")? {
                return None;
            }
            all_equal(&[
                Some(int("/spec/replicas").unwrap_or(1)),
                int("/status/replicas"),
                int("/status/updatedReplicas"),
                int("/status/readyReplicas"),
            ])
        }
        _ => None,
    }
}

/// `n` pods as [`read_workload`] reads them (their container images), made from the
/// template of workload `object`.
fn template_pods(object: &Value, n: i64) -> Vec<Value> {
    let containers: Vec<Value> = object
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| serde_json::json!({ "image": c.get("image") }))
        .collect();
    let pod = serde_json::json!({ "spec": { "containers": containers } });
    vec![pod; usize::try_from(n).unwrap_or(0)]
}

/// The pods of a workload (`object`, as JSON) in `namespace`, by its
/// `spec.selector.matchLabels`; none when it has no such selector. `target` names the
/// workload in errors.
pub(crate) async fn pods_of<K>(
    member: &Member,
    namespace: &str,
    object: &Value,
    target: &str,
) -> Result<Vec<K>>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let Some(labels) = object
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
    else {
        return Ok(Vec::new());
    };
    let selector: Vec<String> = labels
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
        .collect();
    let pods: Api<K> = Api::namespaced(member.client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(&selector.join(",")))
        .await
        .map_err(|source| Error::Kube {
            verb: "list pods of",
            target: target.to_string(),
            source,
        })?;
    Ok(list.items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_is_read_for_its_images_alone_and_keeps_its_version() {
        let pod = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "agent-x", "labels": {"app": "agent"}},
            "spec": {"nodeName": "n1", "containers": [
                {"name": "init", "image": "busybox:1"},
                {"name": "agent", "image": "registry.example.com/agent:2.0",
                 "resources": {"limits": {"cpu": "1"}}}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "agent", "ready": true,
                "restartCount": 0, "image": "x", "imageID": "y"}]}});
        let lean: PodImages = serde_json::from_value(pod).unwrap();
        let json = lean.to_json();
        assert_eq!(
            json,
            serde_json::json!({"spec": {"containers": [
                {"image": "busybox:1"}, {"image": "registry.example.com/agent:2.0"}]}})
        );
        assert_eq!(
            shoal_core::inventory::pod_version(&json, "registry.example.com/agent").as_deref(),
            Some("2.0")
        );
        let bare: PodImages = serde_json::from_value(serde_json::json!({"metadata": {}})).unwrap();
        assert_eq!(
            bare.to_json(),
            serde_json::json!({"spec": {"containers": []}})
        );
    }

    fn daemonset(status: serde_json::Value) -> Value {
        let mut ds = serde_json::json!({
            "metadata": {"generation": 3},
            "spec": {"template": {"spec": {"containers": [
                {"name": "agent", "image": "registry.example.com/agent:2.0"}]}}},
            "status": {"observedGeneration": 3, "desiredNumberScheduled": 4,
                       "currentNumberScheduled": 4, "updatedNumberScheduled": 4,
                       "numberAvailable": 4, "numberMisscheduled": 0}});
        for (k, v) in status.as_object().unwrap() {
            ds["status"][k] = v.clone();
        }
        ds
    }

    #[test]
    fn a_settled_daemonset_stands_for_its_pods_and_a_moving_one_does_not() {
        let settled = daemonset(serde_json::json!({}));
        assert_eq!(settled_pods("DaemonSet", &settled), Some(4));
        let pods = template_pods(&settled, 4);
        assert_eq!(pods.len(), 4);
        assert_eq!(
            shoal_core::inventory::pods_per_version(&pods, "registry.example.com/agent"),
            [("2.0".to_string(), 4)].into()
        );
        for (moving, why) in [
            (
                serde_json::json!({"updatedNumberScheduled": 3}),
                "one pod still on the old template",
            ),
            (
                serde_json::json!({"numberAvailable": 3}),
                "one pod not available yet",
            ),
            (
                serde_json::json!({"currentNumberScheduled": 3}),
                "one node without its pod",
            ),
            (
                serde_json::json!({"numberMisscheduled": 1}),
                "a pod where none belongs",
            ),
            (
                serde_json::json!({"observedGeneration": 2}),
                "the spec change is not observed",
            ),
            (
                serde_json::json!({"updatedNumberScheduled": null}),
                "no count at all",
            ),
        ] {
            assert_eq!(settled_pods("DaemonSet", &daemonset(moving)), None, "{why}");
        }
        assert_eq!(
            settled_pods("ConfigMap", &settled),
            None,
            "no rollout status"
        );
    }

    #[test]
    fn deployments_and_statefulsets_settle_on_their_own_counts() {
        let deploy = |replicas: i64, updated: i64| {
            serde_json::json!({"metadata": {"generation": 1}, "spec": {"replicas": 3},
                "status": {"observedGeneration": 1, "replicas": replicas,
                           "updatedReplicas": updated, "availableReplicas": 3}})
        };
        assert_eq!(settled_pods("Deployment", &deploy(3, 3)), Some(3));
        assert_eq!(
            settled_pods("Deployment", &deploy(4, 3)),
            None,
            "a surge pod of the old ReplicaSet is still there"
        );
        let sts = |current: &str| {
            serde_json::json!({"metadata": {"generation": 2}, "spec": {"replicas": 2},
                "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
                           "readyReplicas": 2, "currentRevision": current,
                           "updateRevision": "web-b"}})
        };
        assert_eq!(settled_pods("StatefulSet", &sts("web-b")), Some(2));
        assert_eq!(settled_pods("StatefulSet", &sts("web-a")), None);
    }
}
