//! Defaulting of built-in kinds: the fields Kubernetes fills in when a client leaves
//! them out, so objects read back as they would from a real cluster.
//!
//! ```text
//! Deployment  spec.replicas 1, strategy RollingUpdate 25%/25%, revisionHistoryLimit 10,
//!             progressDeadlineSeconds 600, template → pod spec defaults
//! DaemonSet   updateStrategy RollingUpdate maxUnavailable 1 maxSurge 0, revisionHistoryLimit 10
//! StatefulSet replicas 1, updateStrategy RollingUpdate partition 0, OrderedReady, …
//! Pod spec    restartPolicy Always, dnsPolicy ClusterFirst, schedulerName, grace 30s,
//!             containers: imagePullPolicy, terminationMessage*, ports[].protocol TCP
//! Service     type ClusterIP, sessionAffinity None, ports[].protocol TCP, targetPort
//! ```
//!
//! Clients depend on these: `kubectl rollout status` refuses a DaemonSet or StatefulSet
//! whose `updateStrategy.type` is not `RollingUpdate`, and `kubectl describe` prints the
//! strategy. Defaulting only fills what is missing, so it is idempotent and runs on every
//! write, as Kubernetes decodes every request through its defaulters. A subset of
//! Kubernetes' `SetDefaults_*` functions: the fields fleet tooling reads.

use serde_json::{Map, Value, json};

/// A Secret's `stringData` is write-only: its entries go into `data` (base64), over any
/// of the same key, and it is not kept, as Kubernetes converts it. Values that are not
/// strings are left for the schema check to name.
fn merge_string_data(root: &mut Map<String, Value>) {
    use base64::Engine as _;
    let Some(Value::Object(strings)) = root.get("stringData") else {
        return;
    };
    if strings.values().any(|v| !v.is_string()) || root.get("data").is_some_and(|d| !d.is_object())
    {
        return;
    }
    let Some(Value::Object(strings)) = root.remove("stringData") else {
        return;
    };
    let data = root
        .entry("data")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .expect("checked above");
    for (key, value) in strings {
        let text = value.as_str().unwrap_or_default();
        let encoded = base64::engine::general_purpose::STANDARD.encode(text);
        data.insert(key, Value::String(encoded));
    }
}

/// Fills in the defaults of a built-in kind (`group`, `kind`); other kinds are left
/// alone, and so are parts of the wrong type (the schema check names those).
pub fn apply(group: &str, kind: &str, obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    if (group, kind) == ("", "Secret") {
        or_insert(root, "type", json!("Opaque"));
        merge_string_data(root);
        return;
    }
    let has_spec_defaults = matches!(
        (group, kind),
        ("", "Pod" | "Service")
            | (
                "apps",
                "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet"
            )
    );
    if !has_spec_defaults {
        return;
    }
    let Some(spec) = child(root, "spec") else {
        return;
    };
    match (group, kind) {
        ("", "Pod") => pod_spec(spec),
        ("", "Service") => service_spec(spec),
        ("apps", "Deployment") => {
            or_insert(spec, "replicas", json!(1));
            or_insert(spec, "revisionHistoryLimit", json!(10));
            or_insert(spec, "progressDeadlineSeconds", json!(600));
            if let Some(strategy) = child(spec, "strategy") {
                or_insert(strategy, "type", json!("RollingUpdate"));
                if strategy.get("type") == Some(&json!("RollingUpdate"))
                    && let Some(ru) = child(strategy, "rollingUpdate")
                {
                    or_insert(ru, "maxUnavailable", json!("25%"));
                    or_insert(ru, "maxSurge", json!("25%"));
                }
            }
            template(spec);
        }
        ("apps", "ReplicaSet") => {
            or_insert(spec, "replicas", json!(1));
            template(spec);
        }
        ("apps", "DaemonSet") => {
            or_insert(spec, "revisionHistoryLimit", json!(10));
            if let Some(strategy) = child(spec, "updateStrategy") {
                or_insert(strategy, "type", json!("RollingUpdate"));
                if strategy.get("type") == Some(&json!("RollingUpdate"))
                    && let Some(ru) = child(strategy, "rollingUpdate")
                {
                    or_insert(ru, "maxUnavailable", json!(1));
                    or_insert(ru, "maxSurge", json!(0));
                }
            }
            template(spec);
        }
        ("apps", "StatefulSet") => {
            or_insert(spec, "replicas", json!(1));
            or_insert(spec, "revisionHistoryLimit", json!(10));
            or_insert(spec, "podManagementPolicy", json!("OrderedReady"));
            if let Some(strategy) = child(spec, "updateStrategy") {
                or_insert(strategy, "type", json!("RollingUpdate"));
                if strategy.get("type") == Some(&json!("RollingUpdate"))
                    && let Some(ru) = child(strategy, "rollingUpdate")
                {
                    or_insert(ru, "partition", json!(0));
                }
            }
            template(spec);
        }
        _ => {}
    }
}

/// The map at `key`, created when absent or null; `None` when it is something else.
fn child<'a>(m: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    let v = m
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if v.is_null() {
        *v = Value::Object(Map::new());
    }
    v.as_object_mut()
}

fn or_insert(m: &mut Map<String, Value>, key: &str, v: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_string(), v);
    }
}

fn template(spec: &mut Map<String, Value>) {
    if let Some(pod) = child(spec, "template").and_then(|t| child(t, "spec")) {
        pod_spec(pod);
    }
}

fn pod_spec(spec: &mut Map<String, Value>) {
    or_insert(spec, "restartPolicy", json!("Always"));
    or_insert(spec, "dnsPolicy", json!("ClusterFirst"));
    or_insert(spec, "schedulerName", json!("default-scheduler"));
    or_insert(spec, "terminationGracePeriodSeconds", json!(30));
    or_insert(spec, "securityContext", json!({}));
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(list) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                container(c);
            }
        }
    }
}

fn container(c: &mut Map<String, Value>) {
    let image = c.get("image").and_then(Value::as_str).unwrap_or("");
    or_insert(c, "imagePullPolicy", json!(pull_policy(image)));
    or_insert(c, "terminationMessagePath", json!("/dev/termination-log"));
    or_insert(c, "terminationMessagePolicy", json!("File"));
    if let Some(Value::Array(ports)) = c.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            or_insert(p, "protocol", json!("TCP"));
        }
    }
}

/// `Always` for `:latest` or untagged images, else `IfNotPresent` (a digest counts as
/// a tag).
pub fn pull_policy(image: &str) -> &'static str {
    let name = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        return "IfNotPresent";
    }
    match name.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn service_spec(spec: &mut Map<String, Value>) {
    or_insert(spec, "type", json!("ClusterIP"));
    or_insert(spec, "sessionAffinity", json!("None"));
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            or_insert(p, "protocol", json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                or_insert(p, "targetPort", port);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secrets_string_data_goes_into_data_over_the_same_key_and_is_not_kept() {
        let mut secret = json!({
            "data": {"a": "b2xk", "keep": "eA=="},
            "stringData": {"a": "new", "kubeconfig": "apiVersion: v1"}
        });
        apply("", "Secret", &mut secret);
        assert_eq!(
            secret,
            json!({
                "type": "Opaque",
                "data": {"a": "bmV3", "keep": "eA==", "kubeconfig": "YXBpVmVyc2lvbjogdjE="}
            })
        );
        let mut odd = json!({"stringData": {"n": 1}});
        apply("", "Secret", &mut odd);
        assert_eq!(
            odd["stringData"],
            json!({"n": 1}),
            "left for the schema check"
        );
    }

    #[test]
    fn a_daemonset_gets_a_rolling_update_strategy_so_rollout_status_works() {
        let mut ds = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "agent:1.2"}]}}}});
        apply("apps", "DaemonSet", &mut ds);
        assert_eq!(
            ds["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        let c = &ds["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(ds["spec"]["template"]["spec"]["restartPolicy"], "Always");
    }

    #[test]
    fn explicit_values_are_kept_and_on_delete_gets_no_rolling_update() {
        let mut ds =
            json!({"spec": {"updateStrategy": {"type": "OnDelete"}, "revisionHistoryLimit": 3}});
        apply("apps", "DaemonSet", &mut ds);
        assert_eq!(ds["spec"]["updateStrategy"], json!({"type": "OnDelete"}));
        assert_eq!(ds["spec"]["revisionHistoryLimit"], 3);
    }

    #[test]
    fn kinds_without_defaults_get_no_spec() {
        let mut cm = json!({"data": {"a": "b"}});
        apply("", "ConfigMap", &mut cm);
        assert_eq!(cm, json!({"data": {"a": "b"}}));
        let mut secret = json!({});
        apply("", "Secret", &mut secret);
        assert_eq!(secret, json!({"type": "Opaque"}));
    }

    #[test]
    fn image_pull_policy_follows_the_tag() {
        assert_eq!(pull_policy("nginx"), "Always");
        assert_eq!(pull_policy("nginx:latest"), "Always");
        assert_eq!(pull_policy("registry:5000/nginx"), "Always");
        assert_eq!(pull_policy("registry:5000/nginx:1.27"), "IfNotPresent");
        assert_eq!(pull_policy("nginx@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn services_default_their_type_and_target_ports() {
        let mut svc = json!({"spec": {"ports": [{"port": 80}]}});
        apply("", "Service", &mut svc);
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        assert_eq!(
            svc["spec"]["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
    }

    proptest::proptest! {
        #[test]
        fn defaulting_is_idempotent_and_never_panics(spec in proptest::prelude::any::<Option<u8>>(), kind in proptest::sample::select(vec!["Deployment", "DaemonSet", "StatefulSet", "ReplicaSet"])) {
            let mut obj = match spec {
                Some(n) => json!({"spec": {"replicas": n, "template": {"spec": {"containers": [{"image": "x"}, 3]}}}}),
                None => json!({"spec": "not a map"}),
            };
            apply("apps", kind, &mut obj);
            let once = obj.clone();
            apply("apps", kind, &mut obj);
            proptest::prop_assert_eq!(once, obj);
        }
    }
}
