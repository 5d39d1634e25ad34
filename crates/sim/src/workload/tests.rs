//! The controllers end to end: a simulated cluster driven step by step on a manual clock,
//! objects written as a client would, read back as JSON as kubectl would.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value as Json, json};
use shoal_core::clock::{Clock, ManualClock};
use shoal_store::Precondition;

use crate::driver::{Context, Driver, json_of, raw};
use crate::event::MAX_EVENTS;
use crate::faults::{FaultModel, FaultProfile};
use crate::runtime::{SimConfig, Simulation};
use crate::template;

fn t0() -> Timestamp {
    "2026-11-22T08:00:00Z".parse().unwrap()
}

struct World {
    sim: Simulation,
    clock: ManualClock,
    driver: Driver,
    /// When the driver asked to step next; as in `driver::run`, it steps only then or
    /// after a client write, so a controller that forgets to ask for a step is caught.
    due: Option<Timestamp>,
    written: std::cell::Cell<bool>,
}

impl World {
    fn new(nodes: u32) -> Self {
        let clock = ManualClock::new(t0());
        let sim = Simulation::build(
            &crate::fleet::uniform(1, nodes),
            Arc::new(clock.clone()),
            SimConfig::default(),
        );
        let m = &sim.members()[0];
        let driver = Driver::new(Context {
            cluster: m.cluster.clone(),
            labels: m.labels.clone(),
            faults: sim.fault_handle(),
            config: SimConfig::default(),
        });
        World {
            sim,
            clock,
            driver,
            due: Some(Timestamp::MIN),
            written: std::cell::Cell::new(true),
        }
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Writes `obj` as a client would (a uid and creation time on first write).
    fn put(&self, group: &str, plural: &str, mut obj: Json) {
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        let key = template::key(group, plural, Some(&ns), &name);
        let old = self.get(&key);
        let meta = &mut obj["metadata"];
        meta["namespace"] = json!(ns);
        match &old {
            Some(o) => {
                meta["uid"] = o["metadata"]["uid"].clone();
                meta["creationTimestamp"] = o["metadata"]["creationTimestamp"].clone();
                let g = o["metadata"]["generation"].as_i64().unwrap_or(1);
                meta["generation"] = json!(g + 1);
                if let Some(st) = o.get("status") {
                    obj["status"] = st.clone();
                }
            }
            None => {
                meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
                meta["creationTimestamp"] = json!(self.now().to_string());
                meta["generation"] = json!(1);
            }
        }
        self.put_raw(&key, &obj);
    }

    fn put_raw(&self, key: &str, obj: &Json) {
        self.sim.members()[0]
            .cluster
            .apply(|s| s.put(key, raw(obj), Precondition::None).unwrap());
        self.written.set(true);
    }

    fn delete(&self, key: &str) {
        self.sim.members()[0]
            .cluster
            .apply(|s| s.delete(key, Precondition::None).unwrap());
        self.written.set(true);
    }

    fn get(&self, key: &str) -> Option<Json> {
        let now = self.now();
        self.sim.members()[0]
            .cluster
            .read(|s| s.get(key).and_then(|e| json_of(key, e, now)))
    }

    fn list(&self, group: &str, plural: &str) -> Vec<Json> {
        let now = self.now();
        let prefix = template::prefix(group, plural);
        self.sim.members()[0].cluster.read(|s| {
            s.range(&prefix, None)
                .filter_map(|(k, e)| json_of(k, e, now))
                .collect()
        })
    }

    fn pods(&self) -> Vec<Json> {
        self.list("", "pods")
    }

    fn events(&self) -> Vec<Json> {
        self.list("", "events")
    }

    /// Runs `secs` seconds, looking once a second whether a step is due (as
    /// `driver::run` polls), calling `each` every second.
    fn run(&mut self, secs: i64, mut each: impl FnMut(&World)) {
        for _ in 0..secs {
            let now = self.clock.now();
            if self.written.replace(false) || self.due.is_some_and(|d| d <= now) {
                self.due = self.driver.step(now);
            }
            each(self);
            self.clock.advance(SignedDuration::from_secs(1));
        }
    }
}

fn image(pod: &Json) -> &str {
    pod["spec"]["containers"][0]["image"].as_str().unwrap_or("")
}

fn ready(pod: &Json) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn name(obj: &Json) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or("")
}

fn mk_deployment(image: &str, replicas: u32, surge: u32, unavailable: u32) -> Json {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": replicas,
                 "selector": {"matchLabels": {"app": "web"}},
                 "strategy": {"type": "RollingUpdate",
                              "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": image}]}}}})
}

fn condition<'a>(obj: &'a Json, type_: &str) -> &'a Json {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Json::Null)
}

#[test]
fn a_deployment_rolls_from_v1_to_v2_within_max_surge_and_max_unavailable() {
    let mut w = World::new(4);
    w.put("apps", "deployments", mk_deployment("web:v1", 4, 1, 1));
    w.run(30, |_| {});
    let pods = w.pods();
    assert_eq!(pods.len(), 4);
    assert!(pods.iter().all(|p| image(p) == "web:v1" && ready(p)));
    let key = template::key("apps", "deployments", Some("default"), "web");
    let d = w.get(&key).unwrap();
    assert_eq!(d["status"]["availableReplicas"], 4, "{d}");
    assert_eq!(
        condition(&d, "Progressing")["reason"],
        "NewReplicaSetAvailable"
    );

    w.put("apps", "deployments", mk_deployment("web:v2", 4, 1, 1));
    let (mut most, mut fewest) = (0, usize::MAX);
    w.run(300, |w| {
        let pods: Vec<Json> = w.pods();
        most = most.max(pods.len());
        fewest = fewest.min(pods.iter().filter(|p| ready(p)).count());
    });
    assert_eq!(most, 5, "replicas + maxSurge");
    assert_eq!(fewest, 3, "replicas − maxUnavailable");
    let pods = w.pods();
    assert_eq!(pods.len(), 4);
    assert!(
        pods.iter().all(|p| image(p) == "web:v2" && ready(p)),
        "{pods:?}"
    );
    let d = w.get(&key).unwrap();
    let s = &d["status"];
    assert_eq!(
        (
            s["replicas"].clone(),
            s["updatedReplicas"].clone(),
            s["availableReplicas"].clone()
        ),
        (json!(4), json!(4), json!(4)),
        "{d}"
    );
    assert_eq!(s["observedGeneration"], 2);
    assert_eq!(condition(&d, "Available")["status"], "True");
    assert_eq!(
        condition(&d, "Progressing")["reason"],
        "NewReplicaSetAvailable"
    );
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );

    let sets = w.list("apps", "replicasets");
    assert_eq!(sets.len(), 2, "the old set stays, scaled to 0");
    let new = sets.iter().find(|rs| rs["spec"]["replicas"] == 4).unwrap();
    let old = sets.iter().find(|rs| rs["spec"]["replicas"] == 0).unwrap();
    let hash = new["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap();
    assert_eq!(name(new), format!("web-{hash}"));
    assert_eq!(
        new["spec"]["selector"]["matchLabels"]["pod-template-hash"],
        hash
    );
    assert_eq!(
        new["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    assert_eq!(
        old["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    assert_eq!(new["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    assert_eq!(new["status"]["availableReplicas"], 4);
    assert!(
        pods.iter()
            .all(|p| p["metadata"]["labels"]["pod-template-hash"] == hash
                && p["metadata"]["ownerReferences"][0]["name"] == name(new))
    );
    let events = w.events();
    let scaling: Vec<&str> = events
        .iter()
        .filter(|e| e["reason"] == "ScalingReplicaSet")
        .map(|e| e["message"].as_str().unwrap())
        .map(|m| m.trim_start_matches("Scaled "))
        .collect();
    assert!(
        scaling
            .iter()
            .any(|m| m.starts_with(&format!("up replica set web-{hash} from 0 to 1"))),
        "{scaling:?}"
    );
}

#[test]
fn a_stuck_rollout_exceeds_its_progress_deadline() {
    let mut w = World::new(2);
    let profile = FaultProfile::from_yaml(
        "seed: 1\nfaults:\n  - podNotReady: {name: stuck, image: \"web:v2\", probability: 1}\n",
    )
    .unwrap();
    w.sim
        .set_faults(FaultModel::compile(&profile, t0()).unwrap());
    let mut d = mk_deployment("web:v1", 2, 1, 0);
    d["spec"]["progressDeadlineSeconds"] = json!(60);
    w.put("apps", "deployments", d.clone());
    w.run(30, |_| {});
    d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("web:v2");
    w.put("apps", "deployments", d);
    w.run(120, |_| {});
    let key = template::key("apps", "deployments", Some("default"), "web");
    let d = w.get(&key).unwrap();
    let p = condition(&d, "Progressing");
    assert_eq!(p["status"], "False", "{d}");
    assert_eq!(p["reason"], "ProgressDeadlineExceeded");
    assert_eq!(
        d["status"]["availableReplicas"], 2,
        "maxUnavailable 0 keeps v1 up"
    );
}

#[test]
fn a_replicaset_pod_whose_node_selector_matches_no_node_stays_pending_until_one_does() {
    let mut w = World::new(3);
    w.put(
        "apps",
        "replicasets",
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "ssd", "namespace": "default"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "ssd"}},
                     "template": {"metadata": {"labels": {"app": "ssd"}},
                                  "spec": {"nodeSelector": {"disk": "ssd"},
                                           "containers": [{"name": "db", "image": "db:1"}]}}}}),
    );
    w.run(30, |_| {});
    let pods = w.pods();
    assert_eq!(pods.len(), 2);
    for p in &pods {
        assert_eq!(p["status"]["phase"], "Pending");
        assert_eq!(condition(p, "PodScheduled")["reason"], "Unschedulable");
        assert!(p["spec"].get("nodeName").is_none());
    }
    let rs = w
        .get(&template::key(
            "apps",
            "replicasets",
            Some("default"),
            "ssd",
        ))
        .unwrap();
    assert_eq!(rs["status"]["replicas"], 2);
    assert_eq!(rs["status"]["readyReplicas"], 0);
    assert!(
        w.events()
            .iter()
            .any(|e| e["reason"] == "FailedScheduling" && e["type"] == "Warning")
    );

    // A client labels a node: the pending pods are bound to it and start.
    let node_key = template::key(
        "",
        "nodes",
        None,
        &crate::fleet::uniform(1, 3).clusters[0].node_name(1),
    );
    let mut node = w.get(&node_key).unwrap();
    node["metadata"]["labels"]["disk"] = json!("ssd");
    w.put_raw(&node_key, &node);
    w.run(30, |_| {});
    let pods = w.pods();
    assert!(
        pods.iter()
            .all(|p| ready(p) && p["spec"]["nodeName"] == node["metadata"]["name"]),
        "{pods:?}"
    );
}

fn mk_statefulset(image: &str, partition: u32) -> Json {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {"replicas": 4, "serviceName": "db",
                 "selector": {"matchLabels": {"app": "db"}},
                 "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": partition}},
                 "template": {"metadata": {"labels": {"app": "db"}},
                              "spec": {"containers": [{"name": "db", "image": image}]}}}})
}

#[test]
fn a_statefulset_with_partition_2_of_4_updates_only_ordinals_2_and_3() {
    let mut w = World::new(3);
    w.put("apps", "statefulsets", mk_statefulset("db:v1", 0));
    w.run(80, |_| {});
    let key = template::key("apps", "statefulsets", Some("default"), "db");
    let before = w.get(&key).unwrap();
    assert_eq!(before["status"]["readyReplicas"], 4, "{before}");
    let v1 = before["status"]["currentRevision"].clone();
    assert_eq!(v1, before["status"]["updateRevision"]);

    w.put("apps", "statefulsets", mk_statefulset("db:v2", 2));
    w.run(120, |_| {});
    let mut pods: Vec<(String, String, String)> = w
        .pods()
        .iter()
        .map(|p| {
            assert!(ready(p), "{p}");
            assert_eq!(
                p["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
                name(p)
            );
            assert_eq!(p["spec"]["hostname"], name(p));
            (
                name(p).to_string(),
                image(p).to_string(),
                p["metadata"]["labels"]["controller-revision-hash"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    pods.sort();
    let images: Vec<(&str, &str)> = pods
        .iter()
        .map(|(n, i, _)| (n.as_str(), i.as_str()))
        .collect();
    assert_eq!(
        images,
        vec![
            ("db-0", "db:v1"),
            ("db-1", "db:v1"),
            ("db-2", "db:v2"),
            ("db-3", "db:v2")
        ]
    );
    let s = w.get(&key).unwrap();
    let st = &s["status"];
    assert_eq!(st["updatedReplicas"], 2, "{s}");
    assert_eq!(st["currentReplicas"], 2);
    assert_eq!(st["readyReplicas"], 4);
    assert_eq!(st["currentRevision"], v1, "partitioned: current stays");
    assert_ne!(st["updateRevision"], v1);
    assert_eq!(pods[3].2, st["updateRevision"].as_str().unwrap());
    assert_eq!(st["observedGeneration"], 2);

    // A pod below the partition that dies comes back at the current revision.
    w.delete(&template::key("", "pods", Some("default"), "db-0"));
    w.run(30, |_| {});
    let db0 = w
        .get(&template::key("", "pods", Some("default"), "db-0"))
        .unwrap();
    assert_eq!(image(&db0), "db:v1");
    assert!(ready(&db0));
}

#[test]
fn a_broadcastjob_completes_with_one_succeeded_pod_per_node() {
    let mut w = World::new(3);
    w.put(
        "apps.kruise.io",
        "broadcastjobs",
        json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "BroadcastJob",
            "metadata": {"name": "warm", "namespace": "default"},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                        "containers": [{"name": "pull", "image": "warm:1"}]}},
                     "completionPolicy": {"type": "Always"}}}),
    );
    let key = template::key("apps.kruise.io", "broadcastjobs", Some("default"), "warm");
    w.run(5, |_| {});
    let j = w.get(&key).unwrap();
    assert_eq!(j["status"]["phase"], "running", "{j}");
    assert_eq!(j["status"]["active"], 3);
    w.run(60, |_| {});
    let j = w.get(&key).unwrap();
    let st = &j["status"];
    assert_eq!(st["phase"], "completed", "{j}");
    assert_eq!(
        (
            st["succeeded"].clone(),
            st["desired"].clone(),
            st["active"].clone()
        ),
        (json!(3), json!(3), json!(0))
    );
    assert_eq!(condition(&j, "Complete")["status"], "True");
    let started: Timestamp = st["startTime"].as_str().unwrap().parse().unwrap();
    let done: Timestamp = st["completionTime"].as_str().unwrap().parse().unwrap();
    assert!(
        done.duration_since(started) >= SignedDuration::from_secs(10),
        "pods ran the job duration"
    );
    let pods = w.pods();
    let mut nodes: Vec<&str> = pods
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap())
        .collect();
    nodes.sort();
    nodes.dedup();
    assert_eq!((pods.len(), nodes.len()), (3, 3));
    assert!(
        pods.iter()
            .all(|p| p["status"]["phase"] == "Succeeded" && p["spec"]["restartPolicy"] == "Never")
    );
}

#[test]
fn deleting_a_deployment_collects_its_replicasets_and_pods() {
    let mut w = World::new(2);
    w.put("apps", "deployments", mk_deployment("web:v1", 3, 1, 0));
    w.run(20, |_| {});
    assert_eq!(w.list("apps", "replicasets").len(), 1);
    assert_eq!(w.pods().len(), 3);
    w.delete(&template::key(
        "apps",
        "deployments",
        Some("default"),
        "web",
    ));
    w.run(2, |_| {});
    assert!(w.list("apps", "replicasets").is_empty());
    assert!(w.pods().is_empty());
    let killing = w
        .events()
        .iter()
        .filter(|e| e["reason"] == "Killing")
        .count();
    assert_eq!(killing, 3, "each running pod's container is stopped");
}

#[test]
fn an_invalid_spec_is_reported_in_a_condition_and_its_pods_stay() {
    let mut w = World::new(2);
    let mut d = mk_deployment("web:v1", 2, 1, 0);
    w.put("apps", "deployments", d.clone());
    w.run(20, |_| {});
    d["spec"]["strategy"]["type"] = json!("Sideways");
    w.put("apps", "deployments", d);
    w.run(5, |_| {});
    let d = w
        .get(&template::key(
            "apps",
            "deployments",
            Some("default"),
            "web",
        ))
        .unwrap();
    let c = condition(&d, "Invalid");
    assert_eq!(c["status"], "True", "{d}");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("spec.strategy.type")
    );
    assert_eq!(w.pods().len(), 2, "an invalid spec is not a deleted owner");
    assert_eq!(
        d["status"]["availableReplicas"], 2,
        "the last counts stay: {d}"
    );
    w.put("apps", "deployments", mk_deployment("web:v1", 2, 1, 0));
    w.run(2, |_| {});
    let d = w
        .get(&template::key(
            "apps",
            "deployments",
            Some("default"),
            "web",
        ))
        .unwrap();
    assert!(condition(&d, "Invalid").is_null(), "fixed: {d}");
    w.put(
        "apps",
        "statefulsets",
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
               "metadata": {"name": "odd", "namespace": "default"},
               "spec": {"replicas": "many"}}),
    );
    w.run(2, |_| {});
    let s = w
        .get(&template::key(
            "apps",
            "statefulsets",
            Some("default"),
            "odd",
        ))
        .unwrap();
    assert_eq!(condition(&s, "Invalid")["reason"], "InvalidSpec", "{s}");
}

#[test]
fn events_tell_a_pods_story_and_stay_bounded() {
    let mut w = World::new(2);
    let profile = FaultProfile::from_yaml(
        "seed: 1\nfaults:\n  - podCrashLoop: {name: bad, image: \"web:bad\", probability: 1}\n",
    )
    .unwrap();
    w.sim
        .set_faults(FaultModel::compile(&profile, t0()).unwrap());
    w.put("apps", "deployments", mk_deployment("web:v1", 1, 1, 0));
    w.run(20, |_| {});
    let pod = w.pods().pop().unwrap();
    let about_pod = |w: &World| -> Vec<String> {
        let mut evs: Vec<Json> = w
            .events()
            .into_iter()
            .filter(|e| e["involvedObject"]["uid"] == pod["metadata"]["uid"])
            .collect();
        evs.sort_by_key(|e| e["firstTimestamp"].as_str().unwrap_or("").to_string());
        evs.iter()
            .map(|e| e["reason"].as_str().unwrap().to_string())
            .collect()
    };
    let reasons = sorted(about_pod(&w));
    assert_eq!(reasons, ["Created", "Pulled", "Scheduled", "Started"]);

    // A quiet cluster writes nothing.
    let rev = w.sim.members()[0].cluster.read(|s| s.revision());
    w.run(30, |_| {});
    assert_eq!(w.sim.members()[0].cluster.read(|s| s.revision()), rev);

    // A crash loop: one BackOff event whose count grows.
    w.put("apps", "deployments", mk_deployment("web:bad", 1, 1, 0));
    w.run(200, |_| {});
    let backoff: Vec<Json> = w
        .events()
        .into_iter()
        .filter(|e| e["reason"] == "BackOff")
        .collect();
    assert_eq!(backoff.len(), 1, "{backoff:?}");
    assert!(backoff[0]["count"].as_u64().unwrap() >= 3, "{}", backoff[0]);
    assert_eq!(backoff[0]["type"], "Warning");

    // Churn: far more events than a cluster keeps.
    let mut most = 0;
    for (i, replicas) in [(2, 40), (3, 40), (4, 40)] {
        w.put(
            "apps",
            "deployments",
            mk_deployment(&format!("web:v{i}"), replicas, 40, 40),
        );
        w.run(40, |w| most = most.max(w.events().len()));
    }
    assert_eq!(most, MAX_EVENTS);
    let kinds: std::collections::BTreeSet<String> = w
        .events()
        .iter()
        .map(|e| e["reason"].as_str().unwrap().to_string())
        .collect();
    for r in [
        "SuccessfulCreate",
        "SuccessfulDelete",
        "ScalingReplicaSet",
        "Killing",
        "Started",
    ] {
        assert!(kinds.contains(r), "{r} in {kinds:?}");
    }

    // An hour later, without anything happening, they are gone.
    w.run(3700, |_| {});
    assert!(w.events().is_empty(), "events expire like kube-apiserver's");
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn deployment_events_name_the_replicaset_and_pods() {
    let mut w = World::new(2);
    w.put("apps", "deployments", mk_deployment("web:v1", 2, 1, 0));
    w.run(10, |_| {});
    let rs = w.list("apps", "replicasets").pop().unwrap();
    let pods: Vec<String> = w.pods().iter().map(|p| name(p).to_string()).collect();
    let evs = w.events();
    let msg = |reason: &str, kind: &str| -> Vec<String> {
        evs.iter()
            .filter(|e| e["reason"] == reason && e["involvedObject"]["kind"] == kind)
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        msg("ScalingReplicaSet", "Deployment"),
        vec![format!("Scaled up replica set {} from 0 to 2", name(&rs))]
    );
    let mut created = msg("SuccessfulCreate", "ReplicaSet");
    created.sort();
    let mut want: Vec<String> = pods.iter().map(|p| format!("Created pod: {p}")).collect();
    want.sort();
    assert_eq!(created, want);
}

#[test]
fn rolling_back_reuses_the_old_replicaset_as_the_newest_revision_and_history_is_bounded() {
    let mut w = World::new(2);
    let key = template::key("apps", "deployments", Some("default"), "web");
    for image in ["web:v1", "web:v2", "web:v1"] {
        w.put("apps", "deployments", mk_deployment(image, 2, 1, 0));
        w.run(60, |_| {});
    }
    let sets = w.list("apps", "replicasets");
    assert_eq!(sets.len(), 2, "v1's set came back instead of a third");
    let active = sets.iter().find(|rs| rs["spec"]["replicas"] == 2).unwrap();
    assert_eq!(
        active["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    let d = w.get(&key).unwrap();
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    assert!(w.pods().iter().all(|p| image(p) == "web:v1" && ready(p)));

    let mut spec = mk_deployment("web:v4", 2, 1, 0);
    spec["spec"]["revisionHistoryLimit"] = json!(0);
    w.put("apps", "deployments", spec);
    w.run(60, |_| {});
    let sets = w.list("apps", "replicasets");
    assert_eq!(sets.len(), 1, "no history kept: {sets:?}");
    assert_eq!(
        sets[0]["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:v4"
    );
}

// The ledger (crate::ledger), as the driver records it.

fn mk_daemonset(api: &str, image: &str, max_unavailable: Json, partition: Option<u32>) -> Json {
    let mut ru = json!({"maxUnavailable": max_unavailable});
    if let Some(p) = partition {
        ru["partition"] = json!(p);
    }
    json!({"apiVersion": api, "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "kube-system"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
                 "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": ru},
                 "template": {"metadata": {"labels": {"app": "agent"}},
                              "spec": {"containers": [{"name": "agent", "image": image}]}}}})
}

impl World {
    fn agent(&self) -> crate::ledger::WorkloadLedger {
        let name = self.sim.members()[0].cluster.name().to_string();
        let ledger = self.sim.ledger(&name).expect("the cluster has a ledger");
        assert_eq!(ledger.cluster, name);
        ledger
            .workload("DaemonSet", "kube-system", "agent")
            .cloned()
            .unwrap_or_else(|| panic!("no ledger of the agent DaemonSet: {ledger:?}"))
    }

    /// The nodes running a pod of `image`, sorted.
    fn nodes_running(&self, image_: &str) -> Vec<String> {
        let mut nodes: Vec<String> = self
            .pods()
            .iter()
            .filter(|p| image(p) == image_)
            .map(|p| p["spec"]["nodeName"].as_str().unwrap().to_string())
            .collect();
        nodes.sort();
        nodes
    }
}

#[test]
fn ledger_of_a_daemonset_rollout_at_max_unavailable_1_never_shows_more_than_1_unavailable() {
    let mut w = World::new(5);
    w.put(
        "apps",
        "daemonsets",
        mk_daemonset("apps/v1", "agent:1", json!(1), None),
    );
    w.run(30, |_| {});
    let l = w.agent();
    let up = t0() + SignedDuration::from_secs(10);
    assert_eq!(
        l.fully_available_at,
        Some(up),
        "started 5s + ready 5s: {l:?}"
    );
    assert_eq!(l.peak_unavailable.count, 0, "creation is not a disruption");
    let released = w.now();
    w.put(
        "apps",
        "daemonsets",
        mk_daemonset("apps/v1", "agent:2", json!(1), None),
    );
    w.run(200, |_| {});
    assert_eq!(w.nodes_running("agent:2").len(), 5, "rolled out");
    let l = w.agent();
    assert_eq!(l.peak_unavailable.count, 1, "{l:#?}");
    assert_eq!(l.peak_unavailable.allowed_at_peak, 1);
    assert_eq!((l.violations, l.first_violation_at), (0, None));
    assert_eq!(l.unavailable_from_node_faults.count, 0);
    assert_eq!(
        (l.template_version.as_str(), l.desired, l.available),
        ("2", 5, 5)
    );
    let v1 = l.version("1").unwrap();
    let v2 = l.version("2").unwrap();
    assert_eq!((v1.nodes_ever, v1.pods), (5, 0));
    assert_eq!(
        (v2.nodes_ever, v2.pods, v2.crash_looping_nodes_ever),
        (5, 5, 0)
    );
    assert_eq!(v1.template_since, Some(t0()));
    assert_eq!(v2.template_since, Some(released));
    assert!(v2.first_seen.unwrap() > released);
}

#[test]
fn ledger_of_an_advanced_daemonset_with_partition_2_counts_only_the_nodes_let_through() {
    let mut w = World::new(5);
    let api = "apps.kruise.io/v1alpha1";
    w.put(
        "apps.kruise.io",
        "daemonsets",
        mk_daemonset(api, "agent:1", json!(1), None),
    );
    w.run(30, |_| {});
    w.put(
        "apps.kruise.io",
        "daemonsets",
        mk_daemonset(api, "agent:2", json!(1), Some(2)),
    );
    w.run(200, |_| {});
    let l = w.agent();
    assert_eq!(l.api_version, api);
    let v2 = l.version("2").unwrap();
    assert_eq!(
        (v2.nodes_ever, v2.pods),
        (3, 3),
        "5 desired − partition 2: {l:#?}"
    );
    assert_eq!(l.version("1").unwrap().pods, 2, "the partition stays on v1");
    assert_eq!(l.violations, 0);
}

#[test]
fn ledger_records_where_a_bad_version_crash_loops_the_blast_radius() {
    let mut w = World::new(6);
    let profile = FaultProfile::from_yaml(
        "seed: 1\nfaults:\n  - podCrashLoop: {name: bad-in-a, version: \"2\", \
         nodeSelector: \"topology.kubernetes.io/zone=sim-1-a\", probability: 1}\n",
    )
    .unwrap();
    w.sim
        .set_faults(FaultModel::compile(&profile, t0()).unwrap());
    let api = "apps.kruise.io/v1alpha1";
    w.put(
        "apps.kruise.io",
        "daemonsets",
        mk_daemonset(api, "agent:1", json!("100%"), None),
    );
    w.run(30, |_| {});
    w.put(
        "apps.kruise.io",
        "daemonsets",
        mk_daemonset(api, "agent:2", json!("100%"), Some(2)),
    );
    w.run(300, |_| {});
    let through = w.nodes_running("agent:2");
    assert_eq!(through.len(), 4, "6 nodes − partition 2");
    let zone_a: Vec<String> = w
        .list("", "nodes")
        .iter()
        .filter(|n| n["metadata"]["labels"]["topology.kubernetes.io/zone"] == "sim-1-a")
        .map(|n| name(n).to_string())
        .filter(|n| through.contains(n))
        .collect();
    assert!(
        !zone_a.is_empty(),
        "some updated node is in zone a: {through:?}"
    );
    let l = w.agent();
    let v2 = l.version("2").unwrap();
    assert_eq!(v2.nodes_ever, 4, "{l:#?}");
    assert_eq!(v2.crash_looping_nodes, zone_a);
    assert_eq!(v2.crash_looping_nodes_ever as usize, zone_a.len());
    assert_eq!(
        v2.crash_looping as usize,
        zone_a.len(),
        "still crash-looping"
    );
    assert_eq!(l.version("1").unwrap().crash_looping_nodes_ever, 0);
    assert_eq!(l.peak_unavailable.allowed_at_peak, 6);
    assert_eq!(l.violations, 0, "100% may be unavailable");
}

#[test]
fn ledger_keeps_pods_down_with_their_node_out_of_the_budget() {
    let mut w = World::new(6);
    let profile = FaultProfile::from_yaml(
        "seed: 1\nfaults:\n  - nodeNotReady: {name: zone-a, zone: sim-1-a, after: 1m, duration: 5m}\n",
    )
    .unwrap();
    w.sim
        .set_faults(FaultModel::compile(&profile, t0()).unwrap());
    w.put(
        "apps",
        "daemonsets",
        mk_daemonset("apps/v1", "agent:1", json!(1), None),
    );
    w.run(200, |_| {});
    let l = w.agent();
    assert!(l.unavailable_from_node_faults.count >= 2, "{l:#?}");
    assert!(l.unavailable_from_node_faults.at.unwrap() >= t0() + SignedDuration::from_secs(60));
    assert_eq!((l.peak_unavailable.count, l.violations), (0, 0));
}

#[test]
fn ledger_of_deployment_and_statefulset_rollouts_follows_their_pods_through_replicasets() {
    let mut w = World::new(4);
    w.put("apps", "deployments", mk_deployment("web:v1", 4, 1, 1));
    w.put("apps", "statefulsets", mk_statefulset("db:v1", 0));
    w.run(60, |_| {});
    w.put("apps", "deployments", mk_deployment("web:v2", 4, 1, 1));
    w.put("apps", "statefulsets", mk_statefulset("db:v2", 2));
    w.run(300, |_| {});
    let name = w.sim.members()[0].cluster.name().to_string();
    let ledger = w.sim.ledger(&name).unwrap();
    let web = ledger.workload("Deployment", "default", "web").unwrap();
    assert_eq!(
        (web.peak_unavailable.count, web.violations),
        (1, 0),
        "{web:#?}"
    );
    assert_eq!(web.peak_unavailable.allowed_at_peak, 1);
    assert_eq!(web.version("v2").unwrap().pods, 4);
    assert_eq!(web.version("v1").unwrap().pods, 0);
    let db = ledger.workload("StatefulSet", "default", "db").unwrap();
    assert_eq!(db.violations, 0, "{db:#?}");
    // Ordinals 2 and 3; the scheduler may put both on one node.
    let v2 = db.version("v2").unwrap();
    assert_eq!(v2.pods, 2, "ordinals 2 and 3: {db:#?}");
    assert!((1..=2).contains(&v2.nodes_ever), "{db:#?}");
    assert_eq!(db.version("v1").unwrap().pods, 2);
}
