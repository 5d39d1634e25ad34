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

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::Value;

use crate::{Error, Fleet, LAST_APPLIED, Member, Result};

/// A workload as it is on a member cluster.
#[derive(Clone, Debug)]
pub struct Workload {
    /// The live object.
    pub object: Value,
    /// What shoal applied last (the [`LAST_APPLIED`] annotation), if shoal applied it.
    pub last_applied: Option<Value>,
    /// Its pods (matched by `spec.selector.matchLabels`), as JSON.
    pub pods: Vec<Value>,
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
    let pods = pods_of(member, namespace, &object, &target.to_string())
        .await?
        .iter()
        .map(|p| serde_json::to_value(p).map_err(|e| Error::Object(e.to_string())))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(Workload {
        last_applied: last_applied(&object),
        object,
        pods,
    }))
}

/// The pods of a workload (`object`, as JSON) in `namespace`, by its
/// `spec.selector.matchLabels`; none when it has no such selector. `target` names the
/// workload in errors.
pub(crate) async fn pods_of(
    member: &Member,
    namespace: &str,
    object: &Value,
    target: &str,
) -> Result<Vec<Pod>> {
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
    let pods: Api<Pod> = Api::namespaced(member.client.clone(), namespace);
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
