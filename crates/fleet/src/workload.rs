//! Reading a workload and its pods on a member cluster: what the fleet view of a
//! component (which version runs where, and drift) is computed from.
//!
//! ```text
//!  read_workload(kind, ns/name) ──GET──▶ None (404: not installed)
//!                                  └───▶ Some(Workload { object (JSON),
//!                                                        pods: LIST by spec.selector.matchLabels })
//! ```
//!
//! The key decision: objects come back as JSON with the last-applied copy parsed next to
//! them, so the pure code that judges versions and drift (`shoal_core::inventory`) sees
//! exactly what an apply would see, for any workload kind the cluster serves.

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
    let pods = pods_of::<PodImages>(member, namespace, &object, &target.to_string())
        .await?
        .iter()
        .map(PodImages::to_json)
        .collect();
    Ok(Some(Workload {
        last_applied: last_applied(&object),
        object,
        pods,
    }))
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
}
