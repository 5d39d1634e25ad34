//! Computed table cells for the built-in kinds: what `kubectl get` prints for nodes,
//! pods, workloads, services and events on a real cluster.
//!
//! ```text
//! ResourceDef.columns   NAME  READY  STATUS            RESTARTS    AGE
//!                             │      │                 │           └ JSONPath .metadata.creationTimestamp
//!                             └──────┴─────────────────┴ CellFn(obj, now) -> cell
//! ```
//!
//! A printer column is a JSONPath for custom resources, but several columns of the
//! built-in kinds are not a single field: a pod's STATUS is derived from the phase, the
//! init containers and every container's state, a node's ROLES from label names. Those
//! are [`CellFn`]s: pure functions of the object and the server's clock, ported from
//! Kubernetes' `pkg/printers/internalversion`, and unit-tested here without a server.

use std::sync::Arc;

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::table::human_duration;

/// Computes one table cell from an object and the current time.
pub type CellFn = Arc<dyn Fn(&Value, Timestamp) -> Value + Send + Sync>;

/// What kubectl prints for an empty cell.
const NONE: &str = "<none>";

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn i(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn arr<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn or_none(s: String) -> Value {
    if s.is_empty() { json!(NONE) } else { json!(s) }
}

/// The age of a timestamp string, as kubectl shows it (`5m`), or `<unknown>`.
fn age(t: &str, now: Timestamp) -> String {
    match t.parse::<Timestamp>() {
        Ok(t) => human_duration(now.as_second() - t.as_second()),
        Err(_) => "<unknown>".into(),
    }
}

/// An integer field, `0` when absent (Kubernetes' Go structs print zero values).
pub fn int(pointer: &'static str) -> CellFn {
    Arc::new(move |o, _| json!(i(o, pointer)))
}

/// A string field, `<none>` when absent or empty.
pub fn string_or_none(pointer: &'static str) -> CellFn {
    Arc::new(move |o, _| or_none(s(o, pointer).to_string()))
}

/// `ready/desired`, as the READY column of deployments and statefulsets.
pub fn ready_of(ready: &'static str, desired: &'static str) -> CellFn {
    Arc::new(move |o, _| json!(format!("{}/{}", i(o, ready), i(o, desired))))
}

/// The container names of a pod template (`CONTAINERS`, wide).
pub fn containers(spec: &'static str) -> CellFn {
    Arc::new(move |o, _| {
        or_none(
            arr(o, &format!("{spec}/containers"))
                .iter()
                .map(|c| s(c, "/name"))
                .collect::<Vec<_>>()
                .join(","),
        )
    })
}

/// The container images of a pod template (`IMAGES`, wide).
pub fn images(spec: &'static str) -> CellFn {
    Arc::new(move |o, _| {
        or_none(
            arr(o, &format!("{spec}/containers"))
                .iter()
                .map(|c| s(c, "/image"))
                .collect::<Vec<_>>()
                .join(","),
        )
    })
}

/// A label selector as kubectl formats it (`app=web,tier in (a,b)`); `<none>` if empty.
pub fn label_selector(sel: &Value) -> String {
    let mut parts: Vec<String> = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = s(e, "/key");
        let values: Vec<&str> = arr(e, "/values").iter().filter_map(Value::as_str).collect();
        parts.push(match s(e, "/operator") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            op => format!("{key} {op} ({})", values.join(",")),
        });
    }
    if parts.is_empty() {
        NONE.into()
    } else {
        parts.join(",")
    }
}

/// A workload's `.spec.selector` (`SELECTOR`, wide).
pub fn selector(o: &Value, _: Timestamp) -> Value {
    json!(label_selector(
        o.pointer("/spec/selector").unwrap_or(&Value::Null)
    ))
}

/// A `map[string]string` as a selector (`a=b,c=d`, sorted), `<none>` if empty.
fn map_selector(m: Option<&Value>) -> String {
    let mut parts: Vec<String> = m
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    parts.sort();
    if parts.is_empty() {
        NONE.into()
    } else {
        parts.join(",")
    }
}

/// A DaemonSet's `NODE SELECTOR`.
pub fn daemonset_node_selector(o: &Value, _: Timestamp) -> Value {
    json!(map_selector(o.pointer("/spec/template/spec/nodeSelector")))
}

/// A Service's `SELECTOR` (wide).
pub fn service_selector(o: &Value, _: Timestamp) -> Value {
    json!(map_selector(o.pointer("/spec/selector")))
}

/// A node's STATUS: `Ready`, `NotReady` or `Unknown`, plus `SchedulingDisabled` when
/// cordoned.
pub fn node_status(o: &Value, _: Timestamp) -> Value {
    let ready = arr(o, "/status/conditions")
        .iter()
        .find(|c| s(c, "/type") == "Ready");
    let mut parts = vec![match ready.map(|c| s(c, "/status")) {
        Some("True") => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        parts.push("SchedulingDisabled");
    }
    json!(parts.join(","))
}

/// A node's ROLES: from `node-role.kubernetes.io/<role>` and `kubernetes.io/role` labels.
pub fn node_roles(o: &Value, _: Timestamp) -> Value {
    let mut roles: Vec<String> = Vec::new();
    if let Some(labels) = o.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.push(role.to_string());
                }
            } else if k == "kubernetes.io/role"
                && let Some(role) = v.as_str().filter(|r| !r.is_empty())
            {
                roles.push(role.to_string());
            }
        }
    }
    roles.sort();
    roles.dedup();
    or_none(roles.join(","))
}

/// The first node address of `kind` (`InternalIP`, `ExternalIP`).
pub fn node_address(kind: &'static str) -> CellFn {
    Arc::new(move |o, _| {
        or_none(
            arr(o, "/status/addresses")
                .iter()
                .find(|a| s(a, "/type") == kind)
                .map(|a| s(a, "/address").to_string())
                .unwrap_or_default(),
        )
    })
}

/// What kubectl derives for one pod: READY, STATUS and RESTARTS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSummary {
    pub ready: String,
    pub status: String,
    pub restarts: String,
}

/// Kubernetes' `printPod`: the phase, overridden by the pod's reason, a failing or
/// pending init container (`Init:1/2`, `Init:CrashLoopBackOff`), a waiting or
/// terminated container (`ContainerCreating`, `CrashLoopBackOff`, `Error`,
/// `ExitCode:1`), and `Terminating` once deleted.
pub fn pod_summary(pod: &Value, now: Timestamp) -> PodSummary {
    let total = arr(pod, "/spec/containers").len();
    let mut ready = 0;
    let mut restarts = 0;
    let mut last_restart: Option<Timestamp> = None;
    let mut reason = s(pod, "/status/phase").to_string();
    if !s(pod, "/status/reason").is_empty() {
        reason = s(pod, "/status/reason").to_string();
    }
    let conditions = arr(pod, "/status/conditions");
    if conditions
        .iter()
        .any(|c| s(c, "/type") == "PodScheduled" && s(c, "/reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".into();
    }
    let mut note_restart = |c: &Value| {
        if let Ok(t) = s(c, "/lastState/terminated/finishedAt").parse::<Timestamp>()
            && last_restart.is_none_or(|l| l < t)
        {
            last_restart = Some(t);
        }
    };

    let init_specs = arr(pod, "/spec/initContainers");
    let init_statuses = arr(pod, "/status/initContainerStatuses");
    let mut initializing = false;
    for (idx, c) in init_statuses.iter().enumerate() {
        restarts = i(c, "/restartCount").saturating_add(restarts);
        note_restart(c);
        let sidecar = init_specs
            .iter()
            .find(|sp| s(sp, "/name") == s(c, "/name"))
            .is_some_and(|sp| s(sp, "/restartPolicy") == "Always");
        let terminated = c.pointer("/state/terminated");
        let waiting_reason = s(c, "/state/waiting/reason");
        if terminated.is_some_and(|t| i(t, "/exitCode") == 0) {
            continue;
        }
        if sidecar && c.get("started").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        reason = if let Some(t) = terminated {
            match (s(t, "/reason"), i(t, "/signal")) {
                ("", 0) => format!("Init:ExitCode:{}", i(t, "/exitCode")),
                ("", sig) => format!("Init:Signal:{sig}"),
                (r, _) => format!("Init:{r}"),
            }
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{idx}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    let initialized = conditions
        .iter()
        .any(|c| s(c, "/type") == "Initialized" && s(c, "/status") == "True");
    if !initializing || initialized {
        let mut has_running = false;
        for c in arr(pod, "/status/containerStatuses").iter().rev() {
            restarts = i(c, "/restartCount").saturating_add(restarts);
            note_restart(c);
            let waiting = s(c, "/state/waiting/reason");
            let terminated = c.pointer("/state/terminated");
            if !waiting.is_empty() {
                reason = waiting.to_string();
            } else if let Some(t) = terminated {
                reason = match (s(t, "/reason"), i(t, "/signal")) {
                    ("", 0) => format!("ExitCode:{}", i(t, "/exitCode")),
                    ("", sig) => format!("Signal:{sig}"),
                    (r, _) => r.to_string(),
                };
            } else if c.get("ready").and_then(Value::as_bool) == Some(true)
                && c.pointer("/state/running").is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = conditions
                .iter()
                .any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.into();
        }
    }

    let deleting = pod.pointer("/metadata/deletionTimestamp").is_some();
    let phase = s(pod, "/status/phase");
    if deleting && s(pod, "/status/reason") == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting && !matches!(phase, "Succeeded" | "Failed") {
        reason = "Terminating".into();
    }
    let restarts = match last_restart {
        Some(t) if restarts != 0 => format!(
            "{restarts} ({} ago)",
            human_duration(now.as_second() - t.as_second())
        ),
        _ => restarts.to_string(),
    };
    PodSummary {
        ready: format!("{ready}/{total}"),
        status: reason,
        restarts,
    }
}

pub fn pod_ready(o: &Value, now: Timestamp) -> Value {
    json!(pod_summary(o, now).ready)
}

pub fn pod_status(o: &Value, now: Timestamp) -> Value {
    json!(pod_summary(o, now).status)
}

pub fn pod_restarts(o: &Value, now: Timestamp) -> Value {
    json!(pod_summary(o, now).restarts)
}

/// A Service's EXTERNAL-IP.
pub fn service_external_ip(o: &Value, _: Timestamp) -> Value {
    let external: Vec<&str> = arr(o, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let v = match s(o, "/spec/type") {
        "ExternalName" => s(o, "/spec/externalName").to_string(),
        "LoadBalancer" => {
            let mut ips: Vec<&str> = arr(o, "/status/loadBalancer/ingress")
                .iter()
                .map(|i| match s(i, "/ip") {
                    "" => s(i, "/hostname"),
                    ip => ip,
                })
                .filter(|a| !a.is_empty())
                .collect();
            ips.extend(external);
            if ips.is_empty() {
                "<pending>".into()
            } else {
                ips.join(",")
            }
        }
        _ => external.join(","),
    };
    or_none(v)
}

/// A Service's PORT(S): `80/TCP,443:30443/TCP`.
pub fn service_ports(o: &Value, _: Timestamp) -> Value {
    or_none(
        arr(o, "/spec/ports")
            .iter()
            .map(|p| {
                let proto = match s(p, "/protocol") {
                    "" => "TCP",
                    other => other,
                };
                match i(p, "/nodePort") {
                    0 => format!("{}/{proto}", i(p, "/port")),
                    np => format!("{}:{np}/{proto}", i(p, "/port")),
                }
            })
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// The number of entries in `data` plus `binaryData` (ConfigMap, Secret).
pub fn data_count(o: &Value, _: Timestamp) -> Value {
    let n = |k: &str| o.get(k).and_then(Value::as_object).map_or(0, |m| m.len());
    json!(n("data") + n("binaryData"))
}

/// An Event's LAST SEEN: its last timestamp, event time or first timestamp, as an age.
pub fn event_last_seen(o: &Value, now: Timestamp) -> Value {
    let t = [
        "/series/lastObservedTime",
        "/lastTimestamp",
        "/eventTime",
        "/firstTimestamp",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .map(|p| s(o, p))
    .find(|t| !t.is_empty())
    .unwrap_or("");
    json!(age(t, now))
}

/// An Event's OBJECT: `kind/name` of what it is about, kind in lower case.
pub fn event_object(o: &Value, _: Timestamp) -> Value {
    json!(format!(
        "{}/{}",
        s(o, "/involvedObject/kind").to_lowercase(),
        s(o, "/involvedObject/name")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-01-01T01:00:00Z".parse().unwrap()
    }

    fn mk_pod(status: Value) -> Value {
        json!({"metadata": {"name": "p"},
               "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
               "status": status})
    }

    #[test]
    fn a_running_pod_with_all_containers_ready_reads_2_of_2_running() {
        let pod = mk_pod(json!({"phase": "Running", "containerStatuses": [
            {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
            {"name": "b", "ready": true, "restartCount": 0, "state": {"running": {}}}]}));
        let p = pod_summary(&pod, now());
        assert_eq!(
            (p.ready.as_str(), p.status.as_str(), p.restarts.as_str()),
            ("2/2", "Running", "0")
        );
    }

    #[test]
    fn a_crash_looping_container_shows_crash_loop_back_off_and_its_restarts() {
        let pod = mk_pod(json!({"phase": "Running", "containerStatuses": [
            {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
            {"name": "b", "ready": false, "restartCount": 4,
             "state": {"waiting": {"reason": "CrashLoopBackOff"}},
             "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-01-01T00:55:00Z"}}}]}));
        let p = pod_summary(&pod, now());
        assert_eq!(p.ready, "1/2");
        assert_eq!(p.status, "CrashLoopBackOff");
        assert_eq!(p.restarts, "4 (5m ago)");
    }

    #[test]
    fn a_pending_pod_shows_container_creating_or_init_progress() {
        let pod = mk_pod(json!({"phase": "Pending", "containerStatuses": [
            {"name": "a", "ready": false, "state": {"waiting": {"reason": "ContainerCreating"}}}]}));
        assert_eq!(pod_summary(&pod, now()).status, "ContainerCreating");
        let mut pod = mk_pod(json!({"phase": "Pending", "initContainerStatuses": [
            {"name": "i0", "state": {"terminated": {"exitCode": 0}}},
            {"name": "i1", "state": {"running": {}}}]}));
        pod["spec"]["initContainers"] = json!([{"name": "i0"}, {"name": "i1"}]);
        assert_eq!(pod_summary(&pod, now()).status, "Init:1/2");
    }

    #[test]
    fn terminated_containers_show_their_reason_or_exit_code_and_deleted_pods_terminate() {
        let pod = mk_pod(json!({"phase": "Failed", "containerStatuses": [
            {"name": "a", "state": {"terminated": {"exitCode": 2}}}]}));
        assert_eq!(pod_summary(&pod, now()).status, "ExitCode:2");
        let mut pod = mk_pod(json!({"phase": "Running"}));
        pod["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:59:00Z");
        assert_eq!(pod_summary(&pod, now()).status, "Terminating");
    }

    #[test]
    fn node_status_and_roles_read_like_kubectl() {
        let node = json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": "",
                                                   "node-role.kubernetes.io/worker": "", "zone": "a"}},
                          "spec": {"unschedulable": true},
                          "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(node_status(&node, now()), "Ready,SchedulingDisabled");
        assert_eq!(node_roles(&node, now()), "control-plane,worker");
        let bare = json!({"metadata": {}});
        assert_eq!(node_status(&bare, now()), "Unknown");
        assert_eq!(node_roles(&bare, now()), "<none>");
    }

    #[test]
    fn services_print_ports_and_external_ips() {
        let svc = json!({"spec": {"type": "NodePort", "clusterIP": "10.0.0.1",
            "ports": [{"port": 80, "protocol": "TCP"}, {"port": 443, "nodePort": 30443}]}});
        assert_eq!(service_ports(&svc, now()), "80/TCP,443:30443/TCP");
        assert_eq!(service_external_ip(&svc, now()), "<none>");
        let lb = json!({"spec": {"type": "LoadBalancer"}});
        assert_eq!(service_external_ip(&lb, now()), "<pending>");
    }

    #[test]
    fn selectors_format_labels_and_expressions() {
        let sel = json!({"matchLabels": {"app": "web"},
                         "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]});
        assert_eq!(label_selector(&sel), "app=web,tier in (a,b)");
        assert_eq!(label_selector(&json!({})), "<none>");
        let ds =
            json!({"spec": {"template": {"spec": {"nodeSelector": {"os": "linux", "a": "b"}}}}});
        assert_eq!(daemonset_node_selector(&ds, now()), "a=b,os=linux");
    }

    proptest::proptest! {
        #[test]
        fn pod_summaries_never_panic_on_arbitrary_status_shapes(
            phase in "[A-Za-z]{0,8}", restarts in proptest::prelude::any::<i64>(),
            waiting in proptest::option::of("[A-Za-z]{0,12}"), exit in proptest::prelude::any::<i64>()
        ) {
            let mut c = json!({"name": "a", "restartCount": restarts, "state": {}});
            match waiting {
                Some(w) => c["state"]["waiting"] = json!({"reason": w}),
                None => c["state"]["terminated"] = json!({"exitCode": exit, "finishedAt": "garbage"}),
            }
            let pod = mk_pod(json!({"phase": phase, "containerStatuses": [c.clone()], "initContainerStatuses": [c]}));
            let _ = pod_summary(&pod, now());
        }
    }
}
