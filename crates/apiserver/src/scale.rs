//! The `scale` subresource of Deployments, ReplicaSets and StatefulSets: what
//! `kubectl scale` (and a HorizontalPodAutoscaler) reads and writes.
//!
//! ```text
//! GET   …/deployments/web/scale   {"kind": "Scale", "apiVersion": "autoscaling/v1",
//! PUT   (a Scale)                  "spec": {"replicas": 2},
//! PATCH (merge, JSON, strategic)   "status": {"replicas": 1, "selector": "app=web"}}
//!                                    ▲ spec.replicas ⇄ the object's .spec.replicas
//! ```
//!
//! A Scale is a view: it is rendered from the object on every read, and a write changes
//! only the object's `spec.replicas` — through the same update path as any other write
//! (defaults, schema, generation, compare-and-swap), so it conflicts and retries like one.

use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::object;
use crate::registry::ResourceDef;

/// Where a kind keeps what its Scale shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScalePaths {
    /// JSON pointer of the desired replicas (`/spec/replicas`).
    pub spec_replicas: &'static str,
    /// JSON pointer of the observed replicas (`/status/replicas`).
    pub status_replicas: &'static str,
    /// JSON pointer of the pod label selector (`/spec/selector`).
    pub selector: &'static str,
}

/// The paths of the apps/v1 workloads.
pub const WORKLOAD: ScalePaths = ScalePaths {
    spec_replicas: "/spec/replicas",
    status_replicas: "/status/replicas",
    selector: "/spec/selector",
};

/// A label selector in its string form (`app=web,tier in (a,b)`), empty when it selects
/// everything.
fn selector_string(sel: Option<&Value>) -> String {
    match sel {
        Some(s) => match crate::printers::label_selector(s) {
            none if none == "<none>" => String::new(),
            text => text,
        },
        None => String::new(),
    }
}

/// The Scale view of `obj`.
pub fn to_scale(obj: &Value, paths: &ScalePaths) -> Value {
    let meta = object::meta(obj);
    let mut m = serde_json::Map::new();
    for k in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = meta.get(k) {
            m.insert(k.to_string(), v.clone());
        }
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": m,
        "spec": {"replicas": obj.pointer(paths.spec_replicas).and_then(Value::as_i64).unwrap_or(0)},
        "status": {
            "replicas": obj.pointer(paths.status_replicas).and_then(Value::as_i64).unwrap_or(0),
            "selector": selector_string(obj.pointer(paths.selector)),
        },
    })
}

/// Applies the desired replicas of `scale` to `obj`.
///
/// # Errors
/// `Invalid` when `spec.replicas` is missing, not an integer or negative.
pub fn apply_scale(
    def: &ResourceDef,
    obj: &mut Value,
    scale: &Value,
    paths: &ScalePaths,
) -> ApiResult<()> {
    let replicas = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .filter(|r| (0..=i64::from(i32::MAX)).contains(r))
        .ok_or_else(|| ApiError::Invalid {
            target: object::target(def, object::name(obj)),
            causes: vec![shoal_core::FieldError::invalid(
                "spec.replicas",
                format!(
                    "{}: must be a non-negative 32-bit integer",
                    scale.pointer("/spec/replicas").unwrap_or(&Value::Null)
                ),
            )],
        })?;
    let Some(slot) = obj.pointer_mut(paths.spec_replicas) else {
        // The object has no spec.replicas yet (defaults put one there): create it.
        let spec = object_at(obj, "spec");
        spec.insert("replicas".into(), json!(replicas));
        return Ok(());
    };
    *slot = json!(replicas);
    Ok(())
}

fn object_at<'a>(obj: &'a mut Value, key: &str) -> &'a mut serde_json::Map<String, Value> {
    if !obj.get(key).is_some_and(Value::is_object) {
        obj[key] = json!({});
    }
    obj[key].as_object_mut().expect("just made an object")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scale_shows_desired_and_observed_replicas_and_the_selector() {
        let d = json!({"metadata": {"name": "web", "namespace": "default", "resourceVersion": "7", "labels": {"x": "y"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"replicas": 2}});
        let s = to_scale(&d, &WORKLOAD);
        assert_eq!(s["spec"]["replicas"], 3);
        assert_eq!(s["status"], json!({"replicas": 2, "selector": "app=web"}));
        assert_eq!(s["metadata"]["resourceVersion"], "7");
        assert!(s["metadata"].get("labels").is_none());
    }

    #[test]
    fn writing_a_scale_changes_only_spec_replicas_and_rejects_negatives() {
        let def = crate::registry::ResourceDef::namespace();
        let mut d = json!({"metadata": {"name": "web"}, "spec": {"replicas": 3, "paused": true}});
        apply_scale(&def, &mut d, &json!({"spec": {"replicas": 5}}), &WORKLOAD).unwrap();
        assert_eq!(d["spec"], json!({"replicas": 5, "paused": true}));
        let err =
            apply_scale(&def, &mut d, &json!({"spec": {"replicas": -1}}), &WORKLOAD).unwrap_err();
        assert_eq!(err.code_reason().0.as_u16(), 422);
        let mut bare = json!({"metadata": {"name": "web"}});
        apply_scale(
            &def,
            &mut bare,
            &json!({"spec": {"replicas": 1}}),
            &WORKLOAD,
        )
        .unwrap();
        assert_eq!(bare["spec"]["replicas"], 1);
    }
}
