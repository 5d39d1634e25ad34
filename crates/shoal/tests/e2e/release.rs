//! Releases end to end: `shoal serve` with a simulated fleet, the release controller and
//! the taskflow engine, driven with kubectl and kube-rs exactly as an SRE would.
//!
//! - the walk-through fleet (210 clusters, four environments, three regions): a baseline,
//!   a good version through an approval gate, a bad version rolled back;
//! - a small fleet: an addon release in dependency order, a dependency cycle, a
//!   dangerous-field change refused, a change window;
//! - a control plane killed mid-wave and restarted, against a fleet that lives on.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{ShoalServer, eventually, example, team_services, within};
use futures::StreamExt;
use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use shoal_core::kinds::{AdvancedDaemonSet, Cluster, Component, Release, ReleasePhase};
use shoal_core::taskflow::PipelineRun;

/// Waits until the release reaches `phase` (failing early on an unexpected terminal one,
/// and with the release's status and the server's log when it gives up).
async fn wait_phase(
    server: &ShoalServer,
    name: &str,
    phase: ReleasePhase,
    limit: Duration,
) -> Release {
    let api: Api<Release> = Api::all(server.client());
    let deadline = std::time::Instant::now() + limit;
    let mut last = None;
    loop {
        if let Ok(Some(r)) = api.get_opt(name).await {
            let now = r.status.as_ref().and_then(|s| s.phase);
            let terminal = matches!(
                now,
                Some(ReleasePhase::Succeeded | ReleasePhase::Failed | ReleasePhase::RolledBack)
            );
            if now == Some(phase) {
                return r;
            }
            assert!(
                !terminal,
                "release {name} ended {now:?}, not {phase:?}: {:?}\n{}",
                r.status,
                server.log()
            );
            last = r.status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gave up after {limit:?}: release {name} did not reach {phase:?}; its status: {last:?}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The release's pipeline runs, by cluster: (change, rollback).
async fn runs_of(
    server: &ShoalServer,
    release: &str,
) -> BTreeMap<String, (Option<PipelineRun>, Option<PipelineRun>)> {
    let api: Api<PipelineRun> = Api::namespaced(server.client(), "shoal-system");
    let list = api
        .list(&ListParams::default().labels(&format!("shoal.io/release={release}")))
        .await
        .unwrap()
        .items;
    let mut out: BTreeMap<String, (Option<PipelineRun>, Option<PipelineRun>)> = BTreeMap::new();
    for r in list {
        let labels = r.metadata.labels.clone().unwrap_or_default();
        let entry = out.entry(labels["shoal.io/cluster"].clone()).or_default();
        if labels["shoal.io/release-action"] == "rollback" {
            entry.1 = Some(r);
        } else {
            entry.0 = Some(r);
        }
    }
    out
}

fn started(r: &PipelineRun) -> Timestamp {
    r.status.as_ref().unwrap().start_time.as_ref().unwrap().0
}

fn completed(r: &PipelineRun) -> Timestamp {
    r.status
        .as_ref()
        .unwrap()
        .completion_time
        .as_ref()
        .expect("the run completed")
        .0
}

/// The most runs in progress at one instant.
fn peak_overlap(runs: &[&PipelineRun]) -> usize {
    let mut edges: Vec<(Timestamp, i32)> = Vec::new();
    for r in runs {
        edges.push((started(r), 1));
        edges.push((completed(r), -1));
    }
    // Ends before starts at the same instant: a slot freed is a slot taken.
    edges.sort_by_key(|(t, d)| (*t, *d));
    let (mut now, mut peak) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        peak = peak.max(now);
    }
    peak as usize
}

/// The node agent's image tag and generation in every cluster (`None`: not installed).
async fn agent_versions(clusters: &[Cluster]) -> BTreeMap<String, Option<(String, i64)>> {
    futures::stream::iter(clusters.iter().cloned())
        .map(|c| async move {
            let name = c.metadata.name.clone().unwrap();
            let config = kube::Config::new(c.spec.endpoint.server.parse().unwrap());
            let client = kube::Client::try_from(config).unwrap();
            let api: Api<AdvancedDaemonSet> = Api::namespaced(client, "kube-system");
            let ds = api.get_opt("node-agent").await.unwrap();
            let v = ds.map(|d| {
                let image = d.spec.template.spec.as_ref().unwrap().containers[0]
                    .image
                    .clone()
                    .unwrap();
                let tag = image.rsplit_once(':').unwrap().1.to_string();
                (tag, d.metadata.generation.unwrap_or(0))
            });
            (name, v)
        })
        .buffer_unordered(16)
        .collect()
        .await
}

async fn clusters(server: &ShoalServer, n: usize) -> Vec<Cluster> {
    let api: Api<Cluster> = Api::all(server.client());
    eventually(
        Duration::from_secs(30),
        "the fleet is registered",
        async || {
            let list = api.list(&ListParams::default()).await.ok()?.items;
            (list.len() == n).then_some(list)
        },
    )
    .await
}

/// The simulator's ledger of the node agent, by cluster (`GET /sim/history`).
async fn agent_ledger(server: &ShoalServer) -> BTreeMap<String, serde_json::Value> {
    let all: serde_json::Value = reqwest::get(format!("{}/sim/history", server.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    all["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| {
            let w = c["workloads"].as_array()?.iter().find(|w| {
                w["name"] == "node-agent"
                    && w["kind"] == "DaemonSet"
                    && w["apiVersion"] == "apps.kruise.io/v1alpha1"
            })?;
            Some((c["cluster"].as_str()?.to_string(), w.clone()))
        })
        .collect()
}

/// One version's line of a workload's ledger.
fn version<'a>(w: &'a serde_json::Value, v: &str) -> Option<&'a serde_json::Value> {
    w["versions"].as_array()?.iter().find(|x| x["version"] == v)
}

/// Waits until the Component's fleet view shows every cluster and node on `version`.
async fn fleet_view_is(server: &ShoalServer, version: &str, clusters: i64, nodes: i64) {
    let api: Api<Component> = Api::all(server.client());
    let what = format!("the fleet view shows {clusters} clusters and {nodes} nodes on {version}");
    eventually(Duration::from_secs(60), &what, async || {
        let s = api.get("node-agent").await.ok()?.status?;
        let v = &s.versions;
        (v.len() == 1
            && v[0].version == version
            && v[0].clusters == clusters
            && v[0].nodes == nodes)
            .then_some(())
    })
    .await;
    let text = server
        .shoal_ok(&["get", "components", "--server", server.url()])
        .await;
    assert!(text.contains(&format!("{version}={clusters}")), "{text}");
}

/// The server's `/metrics` text.
async fn metrics_of(server: &ShoalServer) -> String {
    reqwest::get(format!("{}/metrics", server.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The sum of the series of `name` in `metrics` whose labels contain every one of
/// `labels` (`verb="create"`).
fn series_sum(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn env_rank(c: &str) -> usize {
    ["test-", "staging-", "canary-", "prod-"]
        .iter()
        .position(|p| c.starts_with(p))
        .unwrap_or_else(|| panic!("{c}: no env prefix"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_walks_the_fleet_in_order_and_a_bad_version_is_rolled_back() {
    within(Duration::from_secs(600), "the release walk-through", async {
        let server = ShoalServer::start(&[
            "--store", "memory",
            "--fleet", &example("release/fleet.yaml"),
            "--faults", &example("release/faults.yaml"),
            "--time-scale", "300",
        ])
        .await;
        let fleet = clusters(&server, 210).await;
        let envs: BTreeSet<String> = fleet.iter().map(|c| c.metadata.labels.as_ref().unwrap()["env"].clone()).collect();
        let regions: BTreeSet<String> = fleet.iter().map(|c| c.metadata.labels.as_ref().unwrap()["region"].clone()).collect();
        assert_eq!((envs.len(), regions.len()), (4, 3), "{envs:?} {regions:?}");
        server.kubectl_ok(&["apply", "-f", &example("release/component.yaml")]).await;

        // The baseline: 1.4.0 everywhere, fast.
        let base = server.write_file("base.yaml", "apiVersion: shoal.io/v1alpha1\nkind: Release\nmetadata: {name: base}\n\
            spec:\n  components: [{name: node-agent, version: \"1.4.0\"}]\n  strategy:\n    waves: [{percent: 100}]\n    clusterConcurrency: 50\n    stepTimeout: 24h\n");
        server.kubectl_ok(&["apply", "-f", base.to_str().unwrap()]).await;
        wait_phase(&server, "base", ReleasePhase::Succeeded, Duration::from_secs(180)).await;
        let before = agent_versions(&fleet).await;
        assert!(before.values().all(|v| v.as_ref().is_some_and(|(t, _)| t == "1.4.0")), "{before:?}");
        // One create per cluster's run: a reconcile that ran before the cache showed the
        // runs it created did not create them again (each a wasted write answered 409).
        let metrics = metrics_of(&server).await;
        let creates = series_sum(&metrics, "apiserver_requests_total", &["verb=\"create\"", "resource=\"pipelineruns\""]);
        assert_eq!(creates, 210.0, "PipelineRun creates for 210 clusters:\n{metrics}");

        // The good version stops before its gated wave, and goes on once approved.
        server.kubectl_ok(&["apply", "-f", &server.patient_release("release/release-good.yaml")]).await;
        let r = wait_phase(&server, "agent-1.5.0", ReleasePhase::WaitingForApproval, Duration::from_secs(120)).await;
        let status = r.status.unwrap();
        assert_eq!(status.current_wave.as_deref().map(|w| w.split('/').next().unwrap()), Some("3"));
        let gated: BTreeSet<String> = status.waves[2].clusters.iter().cloned().collect();
        let runs = runs_of(&server, "agent-1.5.0").await;
        assert!(runs.keys().all(|c| !gated.contains(c)), "no gated cluster started");
        let approval = server.write_file("approve.yaml", "apiVersion: shoal.io/v1alpha1\nkind: Approval\n\
            metadata: {name: agent-1.5.0-wave-3, namespace: default}\n\
            spec: {release: agent-1.5.0, wave: 3, approvedBy: alice, decision: Approve, reason: staging is fine}\n");
        server.kubectl_ok(&["apply", "-f", approval.to_str().unwrap()]).await;
        let r = wait_phase(&server, "agent-1.5.0", ReleasePhase::Succeeded, Duration::from_secs(300)).await;
        let status = r.status.unwrap();
        assert_eq!(status.progress.as_deref(), Some("210/210"));
        // `kubectl wait` sees it too.
        server.kubectl_ok(&["wait", "--for=jsonpath={.status.phase}=Succeeded", "release/agent-1.5.0", "--timeout=5s"]).await;

        // The fleet view: 100 % of the clusters and nodes on the new version.
        fleet_view_is(&server, "1.5.0", 210, 840).await;

        // In the planned order: environments in sequence, each wave after the one before
        // it finished and baked, never more than clusterConcurrency at once.
        let runs = runs_of(&server, "agent-1.5.0").await;
        assert_eq!(runs.len(), 210, "every cluster ran exactly once");
        let planned: Vec<&String> = status.waves.iter().flat_map(|w| &w.clusters).collect();
        assert!(planned.windows(2).all(|p| env_rank(p[0]) <= env_rank(p[1])), "env order: {planned:?}");
        let mut all = Vec::new();
        for (i, w) in status.waves.iter().enumerate() {
            let wave: Vec<&PipelineRun> = w.clusters.iter().map(|c| runs[c].0.as_ref().unwrap()).collect();
            assert!(wave.iter().all(|r| r.status.as_ref().unwrap().succeeded().unwrap().status == "True"));
            if i > 0 {
                let prev: Vec<&PipelineRun> = status.waves[i - 1].clusters.iter().map(|c| runs[c].0.as_ref().unwrap()).collect();
                let prev_done = prev.iter().map(|r| completed(r)).max().unwrap();
                let first = wave.iter().map(|r| started(r)).min().unwrap();
                assert!(
                    first >= prev_done + jiff::SignedDuration::from_mins(1),
                    "wave {} started at {first}, before wave {i} finished ({prev_done}) and baked 1m",
                    i + 1
                );
            }
            all.extend(wave);
        }
        let peak = peak_overlap(&all);
        assert!((1..=10).contains(&peak), "at most 10 clusters at once, saw {peak}");
        // The simulator's own record: no workload ever had more pods unavailable than
        // its maxUnavailable, and the new version reached the clusters wave by wave.
        let ledger = agent_ledger(&server).await;
        assert_eq!(ledger.len(), 210);
        for (c, w) in &ledger {
            assert_eq!(w["violations"], 0, "{c}: {w}");
            let peak = &w["peakUnavailable"];
            assert!(peak["count"].as_i64().unwrap() <= peak["allowedAtPeak"].as_i64().unwrap_or(0), "{c}: {w}");
            assert_eq!(version(w, "1.5.0").unwrap()["nodesEver"], 4, "{c}: every node got it");
        }
        let first_seen = |c: &String| -> Timestamp {
            version(&ledger[c], "1.5.0").unwrap()["firstSeen"].as_str().unwrap().parse().unwrap()
        };
        for pair in status.waves.windows(2) {
            let last = pair[0].clusters.iter().map(first_seen).max().unwrap();
            let next = pair[1].clusters.iter().map(first_seen).min().unwrap();
            assert!(last < next, "a later wave's cluster ran 1.5.0 ({next}) before an earlier wave's ({last})");
        }
        let after = agent_versions(&fleet).await;
        for (c, v) in &after {
            let (tag, generation) = v.clone().unwrap();
            assert_eq!(tag, "1.5.0", "{c}");
            // Three steps (partition 3 → 2 → 0 on 4 nodes): three spec changes, no more.
            assert_eq!(generation, before[c].as_ref().unwrap().1 + 3, "{c}: each step applied once");
        }

        // The bad version: test, staging and canary pass, the first prod step that puts
        // it on a 5.10 node fails its check, and every changed cluster goes back.
        server.kubectl_ok(&["apply", "-f", &server.patient_release("release/release-bad.yaml")]).await;
        let r = wait_phase(&server, "agent-1.6.0", ReleasePhase::RolledBack, Duration::from_secs(300)).await;
        let status = r.status.unwrap();
        assert!(!status.failures.is_empty(), "{status:?}");
        for f in &status.failures {
            assert!(f.cluster.starts_with("prod-"), "only prod has 5.10 nodes: {f:?}");
            assert!(f.step.starts_with("node-agent-step-"), "{f:?}");
            assert!(f.message.contains("crash-looping") && f.message.contains(&f.cluster), "{f:?}");
        }
        let runs = runs_of(&server, "agent-1.6.0").await;
        let prod_touched: Vec<&String> = runs.keys().filter(|c| c.starts_with("prod-")).collect();
        assert!(
            prod_touched.len() <= 5,
            "the blast radius is the clusters of one concurrent batch: {prod_touched:?}"
        );
        for (c, (change, rollback)) in &runs {
            assert!(change.is_some(), "{c}");
            let rb = rollback.as_ref().unwrap_or_else(|| panic!("{c} was changed and not rolled back"));
            assert_eq!(rb.status.as_ref().unwrap().succeeded().unwrap().status, "True", "{c}");
        }
        // The blast radius, from the simulator: 1.6.0 crash-looped only on prod nodes,
        // and on no more nodes than the failing step let through (steps of 1, 2, 4 pods).
        let ledger = agent_ledger(&server).await;
        for (c, w) in &ledger {
            assert_eq!(w["violations"], 0, "{c}: within maxUnavailable even while crash-looping: {w}");
            let Some(bad) = version(w, "1.6.0") else { continue };
            assert_eq!(bad["pods"], 0, "{c}: nothing runs 1.6.0 any more");
            if !c.starts_with("prod-") {
                assert_eq!(bad["crashLoopingNodesEver"], 0, "{c}: {w}");
                continue;
            }
            // The release's record names every cluster the bad version reached: the step
            // that failed, or the one it was in (or had finished) when the rollback
            // stopped it; the simulator's ledger must agree with it.
            let step = status
                .failures
                .iter()
                .chain(&status.interrupted)
                .find(|f| &f.cluster == c)
                .map(|f| f.step.strip_prefix("node-agent-step-").map_or(0, |k| k.parse::<usize>().unwrap()));
            if bad["nodesEver"].as_i64().unwrap() > 0 {
                assert!(step.is_some_and(|k| k > 0), "{c} ran 1.6.0 but the release does not say so: {status:?}");
            }
            let allowed = step.map_or(0, |k| if k == 0 { 0 } else { [1, 2, 4][k - 1] });
            assert!(bad["nodesEver"].as_i64().unwrap() <= allowed, "{c}: failed in step {step:?}: {w}");
        }
        let hit: usize = ledger
            .values()
            .filter_map(|w| version(w, "1.6.0"))
            .map(|v| v["crashLoopingNodesEver"].as_u64().unwrap() as usize)
            .sum();
        assert!(hit >= 1, "the bad version did crash-loop somewhere");
        let waiting = status.clusters.as_ref().unwrap().waiting;
        assert_eq!(waiting as usize, 210 - runs.len(), "the clusters never reached were never started");
        fleet_view_is(&server, "1.5.0", 210, 840).await;
        let now = agent_versions(&fleet).await;
        assert!(
            now.values().all(|v| v.as_ref().is_some_and(|(t, _)| t == "1.5.0")),
            "every cluster is back on 1.5.0: {:?}",
            now.iter().filter(|(_, v)| v.as_ref().is_none_or(|(t, _)| t != "1.5.0")).collect::<Vec<_>>()
        );
    })
    .await;
}

const COMPONENTS: &str = r#"
apiVersion: shoal.io/v1alpha1
kind: Component
metadata: {name: cni}
spec:
  image: registry.example.com/net/cni
  version: "1.0"
  checks: [{workload: {kind: DaemonSet, namespace: kube-system, name: cni}}]
  template: |
    apiVersion: apps/v1
    kind: DaemonSet
    metadata: {name: cni, namespace: kube-system}
    spec:
      selector: {matchLabels: {app: cni}}
      template:
        metadata: {labels: {app: cni}}
        spec:
          containers: [{name: cni, image: "{{ image }}:{{ version }}"}]
---
apiVersion: shoal.io/v1alpha1
kind: Component
metadata: {name: agent}
spec:
  image: registry.example.com/infra/agent
  version: "1.0"
  dependsOn: [cni]
  values: {hostNetwork: true}
  dangerousFields: [spec.template.spec.hostNetwork]
  checks: [{workload: {apiVersion: apps.kruise.io/v1alpha1, kind: DaemonSet, namespace: kube-system, name: agent}}]
  template: |
    apiVersion: apps.kruise.io/v1alpha1
    kind: DaemonSet
    metadata: {name: agent, namespace: kube-system}
    spec:
      selector: {matchLabels: {app: agent}}
      updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 1}}
      template:
        metadata: {labels: {app: agent}}
        spec:
          hostNetwork: {{ values.hostNetwork }}
          containers: [{name: agent, image: "{{ image }}:{{ version }}"}]
---
apiVersion: shoal.io/v1alpha1
kind: Component
metadata: {name: loop-a}
spec: {image: r/a, version: "1", dependsOn: [loop-b], template: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"}
---
apiVersion: shoal.io/v1alpha1
kind: Component
metadata: {name: loop-b}
spec: {image: r/b, version: "1", dependsOn: [loop-a], template: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n"}
"#;

fn release_yaml(name: &str, components: &[(&str, &str)], strategy: &str) -> String {
    let comps: Vec<String> = components
        .iter()
        .map(|(c, v)| format!("{{name: {c}, version: \"{v}\"}}"))
        .collect();
    format!(
        "apiVersion: shoal.io/v1alpha1\nkind: Release\nmetadata: {{name: {name}}}\nspec:\n  components: [{}]\n  strategy: {strategy}\n",
        comps.join(", ")
    )
}

fn task<'a>(run: &'a PipelineRun, name: &str) -> &'a shoal_core::taskflow::PipelineTaskStatus {
    run.status
        .as_ref()
        .unwrap()
        .tasks
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no task {name} in {:?}", run.metadata.name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addons_go_in_dependency_order_and_cycles_dangerous_changes_and_windows_hold_a_release() {
    within(Duration::from_secs(300), "release rules on a small fleet", async {
        let server = ShoalServer::start(&["--store", "memory", "--sim-clusters", "3", "--sim-nodes", "3", "--time-scale", "60"]).await;
        let fleet = clusters(&server, 3).await;
        let comps = server.write_file("components.yaml", COMPONENTS);
        server.kubectl_ok(&["apply", "-f", comps.to_str().unwrap()]).await;

        // An addon release, listed in the wrong order, goes in dependsOn order.
        let addons = server.write_file(
            "addons.yaml",
            &release_yaml("addons", &[("agent", "1.0"), ("cni", "1.0")], "{waves: [{percent: 100}], clusterConcurrency: 3, batches: [1, \"100%\"]}"),
        );
        server.kubectl_ok(&["apply", "-f", addons.to_str().unwrap()]).await;
        wait_phase(&server, "addons", ReleasePhase::Succeeded, Duration::from_secs(120)).await;
        let runs = runs_of(&server, "addons").await;
        assert_eq!(runs.len(), 3);
        for (c, (change, _)) in &runs {
            let run = change.as_ref().unwrap();
            let cni_done = task(run, "cni-step-2").completion_time.as_ref().unwrap().0;
            let agent_start = task(run, "agent-step-1").start_time.as_ref().unwrap().0;
            assert!(cni_done <= agent_start, "{c}: the agent started before its dependency was done");
        }

        // A dependency cycle is refused before anything starts.
        let cyc = server.write_file("cycle.yaml", &release_yaml("cyc", &[("loop-a", "2"), ("loop-b", "2")], "{}"));
        server.kubectl_ok(&["apply", "-f", cyc.to_str().unwrap()]).await;
        let r = wait_phase(&server, "cyc", ReleasePhase::Failed, Duration::from_secs(30)).await;
        let msg = r.status.unwrap().message.unwrap();
        assert!(msg.contains("cycle"), "{msg}");
        assert!(runs_of(&server, "cyc").await.is_empty());

        // A change of a dangerous field is refused, with a message naming it, and nothing
        // in that cluster is touched.
        let target = fleet[0].metadata.name.clone().unwrap();
        let before = {
            let config = kube::Config::new(fleet[0].spec.endpoint.server.parse().unwrap());
            let api: Api<AdvancedDaemonSet> = Api::namespaced(kube::Client::try_from(config).unwrap(), "kube-system");
            api.get("agent").await.unwrap()
        };
        let cfg = server.write_file("cfg.yaml", &format!(
            "apiVersion: shoal.io/v1alpha1\nkind: ClusterConfig\nmetadata: {{name: agent-no-hostnet}}\n\
             spec: {{component: agent, cluster: {target}, values: {{hostNetwork: false}}}}\n"));
        server.kubectl_ok(&["apply", "-f", cfg.to_str().unwrap()]).await;
        let danger = server.write_file(
            "danger.yaml",
            &release_yaml("agent-2", &[("agent", "2.0")], "{waves: [{percent: 100}], clusterConcurrency: 3, failurePolicy: Pause}"),
        );
        server.kubectl_ok(&["apply", "-f", danger.to_str().unwrap()]).await;
        let r = wait_phase(&server, "agent-2", ReleasePhase::Paused, Duration::from_secs(60)).await;
        let failures = r.status.unwrap().failures;
        let f = failures.iter().find(|f| f.cluster == target).unwrap_or_else(|| panic!("{failures:?}"));
        assert_eq!(f.step, "precheck", "{f:?}");
        assert!(
            f.message.contains("spec.template.spec.hostNetwork") && f.message.contains("dangerous field"),
            "{f:?}"
        );
        let config = kube::Config::new(fleet[0].spec.endpoint.server.parse().unwrap());
        let api: Api<AdvancedDaemonSet> = Api::namespaced(kube::Client::try_from(config).unwrap(), "kube-system");
        let after = api.get("agent").await.unwrap();
        assert_eq!(after.metadata.generation, before.metadata.generation, "nothing was sent");

        // A release inside a denied window waits, and goes when the window ends.
        let clock: serde_json::Value = reqwest::get(format!("{}/sim/clock", server.url())).await.unwrap().json().await.unwrap();
        let now: Timestamp = clock["now"].as_str().unwrap().parse().unwrap();
        let hour = now.to_zoned(jiff::tz::TimeZone::UTC).hour();
        let window = format!(
            "{{waves: [{{percent: 100}}], clusterConcurrency: 3, windows: {{deny: [{{hours: \"{:02}:00-{:02}:00\", timeZone: UTC}}]}}}}",
            hour,
            (hour + 2) % 24
        );
        let late = server.write_file("late.yaml", &release_yaml("cni-late", &[("cni", "1.1")], &window));
        server.kubectl_ok(&["apply", "-f", late.to_str().unwrap()]).await;
        let api: Api<Release> = Api::all(server.client());
        let waiting = eventually(Duration::from_secs(30), "the release waits for its window", async || {
            let r = api.get("cni-late").await.ok()?;
            let s = r.status?;
            (s.phase == Some(ReleasePhase::Progressing) && s.message.as_deref()?.contains("waiting")).then_some(s)
        })
        .await;
        let why = waiting.message.unwrap();
        assert!(why.contains("denied window") && why.contains("opens at"), "says why: {why}");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(runs_of(&server, "cni-late").await.is_empty(), "nothing starts in a denied window");
        server.shoal_ok(&["clock", "--advance", "2h", "--server", server.url()]).await;
        wait_phase(&server, "cni-late", ReleasePhase::Succeeded, Duration::from_secs(60)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_continues_where_it_was_after_the_control_plane_is_killed_mid_wave() {
    within(Duration::from_secs(300), "a release across a kill -9", async {
        use tokio::io::AsyncBufReadExt;
        let mut control = ShoalServer::start(&["--time-scale", "60"]).await;
        // The fleet lives in its own process: killing the control plane leaves it be.
        let mut sim = tokio::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(["sim", "--clusters", "4", "--nodes", "3", "--listen", "127.0.0.1:0", "--time-scale", "60"])
            .args(["--control-plane", control.url()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn shoal sim");
        let mut lines = tokio::io::BufReader::new(sim.stdout.take().unwrap()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("registered 4 Cluster objects") {
                break;
            }
        }
        let fleet = clusters(&control, 4).await;
        control.kubectl_ok(&["apply", "-f", &example("release/component.yaml")]).await;
        let base = control.write_file("base.yaml", &release_yaml("base", &[("node-agent", "1.4.0")], "{waves: [{percent: 100}], clusterConcurrency: 4}"));
        control.kubectl_ok(&["apply", "-f", base.to_str().unwrap()]).await;
        wait_phase(&control, "base", ReleasePhase::Succeeded, Duration::from_secs(60)).await;
        let before = agent_versions(&fleet).await;

        let up = control.write_file("up.yaml", &release_yaml(
            "up",
            &[("node-agent", "1.5.0")],
            "{waves: [{clusters: 1}, {percent: 100}], clusterConcurrency: 1, batches: [1, 2, \"100%\"], bake: 1m}",
        ));
        control.kubectl_ok(&["apply", "-f", up.to_str().unwrap()]).await;
        let api: Api<Release> = Api::all(control.client());
        eventually(Duration::from_secs(120), "the release is in the middle of its second wave", async || {
            let c = api.get("up").await.ok()?.status?.clusters?;
            (c.succeeded >= 2 && c.running == 1).then_some(())
        })
        .await;
        control.restart().await;
        let r = wait_phase(&control, "up", ReleasePhase::Succeeded, Duration::from_secs(120)).await;
        assert_eq!(r.status.unwrap().progress.as_deref(), Some("4/4"));
        let runs = runs_of(&control, "up").await;
        assert_eq!(runs.len(), 4, "one run per cluster, none started twice");
        for (c, (change, rollback)) in &runs {
            assert!(rollback.is_none());
            let run = change.as_ref().unwrap();
            for t in ["precheck", "node-agent-step-1", "node-agent-step-2", "node-agent-step-3"] {
                assert_eq!(task(run, t).state, shoal_core::taskflow::TaskState::Succeeded, "{c} {t}");
            }
        }
        let after = agent_versions(&fleet).await;
        for (c, v) in &after {
            let (tag, generation) = v.clone().unwrap();
            assert_eq!(tag, "1.5.0", "{c}");
            assert_eq!(generation, before[c].as_ref().unwrap().1 + 3, "{c}: each step applied exactly once");
        }
        sim.kill().await.ok();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_and_a_metric_threshold_check_every_step() {
    within(Duration::from_secs(180), "release checks", async {
        let server = ShoalServer::start(&["--store", "memory", "--sim-clusters", "2", "--sim-nodes", "2", "--time-scale", "60"]).await;
        let fleet = clusters(&server, 2).await;
        let bad = fleet[1].metadata.name.clone().unwrap();
        server.kubectl_ok(&["apply", "-f", &example("release/component.yaml")]).await;
        let team = team_services(0.01).await;
        *team.failing.lock().unwrap() = bad.clone();
        let (hooks, calls) = (team.url, team.calls);
        let checks = format!(
            "{{waves: [{{percent: 100}}], clusterConcurrency: 1, batches: [1, \"100%\"], failurePolicy: Pause, \
              checks: [{{name: team-hook, webhook: {{url: \"{hooks}/hook\"}}}}, \
                       {{name: error-rate, metric: {{prometheus: \"{hooks}\", query: 'rate(errors{{cluster=\"{{{{ cluster }}}}\"}}[5m])', max: 0.05}}}}]}}"
        );
        let checked = server.write_file("checked.yaml", &release_yaml("checked", &[("node-agent", "1.4.0")], &checks));
        server.kubectl_ok(&["apply", "-f", checked.to_str().unwrap()]).await;
        let r = wait_phase(&server, "checked", ReleasePhase::Paused, Duration::from_secs(90)).await;
        let status = r.status.unwrap();
        assert_eq!(status.clusters.as_ref().unwrap().succeeded, 1, "{status:?}");
        let f = &status.failures[0];
        assert_eq!((f.cluster.as_str(), f.step.as_str()), (bad.as_str(), "node-agent-step-1"));
        assert!(
            f.message.contains("check team-hook failed") && f.message.contains("p99 latency doubled"),
            "{f:?}"
        );
        let calls = calls.lock().unwrap().clone();
        let good = fleet[0].metadata.name.clone().unwrap();
        let phases: Vec<(String, i64)> = calls
            .iter()
            .filter(|c| c["cluster"] == good.as_str())
            .map(|c| (c["phase"].as_str().unwrap().to_string(), c["step"].as_i64().unwrap()))
            .collect();
        assert_eq!(phases, [("pre".into(), 0), ("post".into(), 1), ("post".into(), 2)], "{calls:?}");
        // What the checks saw is in the step's results, for people to read.
        let runs = runs_of(&server, "checked").await;
        let step = runs[&good].0.as_ref().unwrap().status.as_ref().unwrap().tasks.iter()
            .find(|t| t.name == "node-agent-step-1").cloned().unwrap();
        let result = |n: &str| step.results.iter().find(|r| r.name == n).and_then(|r| r.value.as_str().map(String::from));
        assert_eq!(result("check-team-hook").as_deref(), Some("HTTP 200"), "{step:?}");
        assert_eq!(result("check-error-rate").as_deref(), Some("0.01 ≤ max 0.05"), "{step:?}");
        // And each cluster's Events say what the release did to it.
        // They name the cluster by uid too, which is what kubectl describe selects by.
        let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(server.client(), "default");
        let clusters: Api<Cluster> = Api::all(server.client());
        let reasons = async |cluster: &str| {
            let uid = clusters.get(cluster).await.unwrap().uid().unwrap();
            events
                .list(&ListParams::default().fields(&format!(
                    "involvedObject.kind=Cluster,involvedObject.name={cluster},involvedObject.uid={uid}"
                )))
                .await
                .unwrap()
                .items
                .into_iter()
                .filter(|e| e.message.as_deref().is_some_and(|m| m.contains("release checked")))
                .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
                .collect::<Vec<_>>()
        };
        let good_events = eventually(Duration::from_secs(20), "the good cluster's events", async || {
            let r = reasons(&good).await;
            r.iter().any(|(reason, _)| reason == "ReleaseSucceeded").then_some(r)
        })
        .await;
        assert!(good_events.iter().all(|(r, _)| r != "ReleaseFailed"), "{good_events:?}");
        let bad_events = eventually(Duration::from_secs(20), "the bad cluster's events", async || {
            let r = reasons(&bad).await;
            r.iter().any(|(reason, _)| reason == "ReleaseFailed").then_some(r)
        })
        .await;
        let (_, message) = bad_events.iter().find(|(r, _)| r == "ReleaseFailed").unwrap();
        assert!(message.contains("node-agent-step-1") && message.contains("team-hook"), "{message}");

        // A metric over its threshold stops a cluster before anything changes.
        let hot = team_services(0.2).await.url;
        let checks = format!(
            "{{waves: [{{percent: 100}}], clusterConcurrency: 2, failurePolicy: Pause, \
              checks: [{{name: error-rate, metric: {{prometheus: \"{hot}\", query: 'errors', max: 0.05}}}}]}}"
        );
        let hot_release = server.write_file("hot.yaml", &release_yaml("hot", &[("node-agent", "1.5.0")], &checks));
        server.kubectl_ok(&["apply", "-f", hot_release.to_str().unwrap()]).await;
        let r = wait_phase(&server, "hot", ReleasePhase::Paused, Duration::from_secs(60)).await;
        let failures = r.status.unwrap().failures;
        assert!(!failures.is_empty(), "{failures:?}");
        for f in &failures {
            assert_eq!(f.step, "precheck");
            assert!(f.message.contains("errors = 0.2, above the maximum 0.05"), "{f:?}");
        }
        let versions = agent_versions(&fleet).await;
        assert!(versions.values().all(|v| v.as_ref().is_some_and(|(t, _)| t == "1.4.0")), "{versions:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_by_hand_puts_back_what_changed_and_abort_stops_where_it_is() {
    within(Duration::from_secs(240), "rollback and abort by hand", async {
        let server = ShoalServer::start(&["--store", "memory", "--sim-clusters", "3", "--sim-nodes", "2", "--time-scale", "60"]).await;
        let fleet = clusters(&server, 3).await;
        server.kubectl_ok(&["apply", "-f", &example("release/component.yaml")]).await;
        let base = server.write_file("base.yaml", &release_yaml("base", &[("node-agent", "1.4.0")], "{waves: [{percent: 100}], clusterConcurrency: 3}"));
        server.kubectl_ok(&["apply", "-f", base.to_str().unwrap()]).await;
        wait_phase(&server, "base", ReleasePhase::Succeeded, Duration::from_secs(60)).await;
        let api: Api<Release> = Api::all(server.client());
        let slow = "{waves: [{clusters: 1}, {percent: 100}], clusterConcurrency: 1, batches: [1, \"100%\"], bake: 10m}";

        // Rollback once the first cluster is through: it goes back to 1.4.0, and the
        // clusters never reached stay untouched.
        // Every attempt of the release's steps, watched as the dashboard watches them:
        // selected by the release's label, with what each is doing while it runs.
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let watch = {
            let seen = seen.clone();
            let task_runs: Api<shoal_core::taskflow::TaskRun> =
                Api::namespaced(server.client(), "shoal-system");
            let config = kube::runtime::watcher::Config::default().labels("shoal.io/release=up");
            tokio::spawn(async move {
                let mut events = kube::runtime::watcher(task_runs, config).boxed();
                use kube::runtime::watcher::Event;
                while let Some(event) = events.next().await {
                    if let Ok(Event::Apply(tr) | Event::InitApply(tr)) = event
                        && let Some(p) = tr.status.and_then(|s| s.progress)
                    {
                        seen.lock().unwrap().push((p.stage, p.until.is_some(), p.message));
                    }
                }
            })
        };
        let up = server.write_file("up.yaml", &release_yaml("up", &[("node-agent", "1.5.0")], slow));
        server.kubectl_ok(&["apply", "-f", up.to_str().unwrap()]).await;
        eventually(Duration::from_secs(120), "the first cluster is through", async || {
            (api.get("up").await.ok()?.status?.clusters?.succeeded >= 1).then_some(())
        })
        .await;
        server.shoal_ok(&["rollout", "rollback", "up", "--server", server.url()]).await;
        wait_phase(&server, "up", ReleasePhase::RolledBack, Duration::from_secs(60)).await;
        let runs = runs_of(&server, "up").await;
        assert!(runs.len() < 3, "no new cluster starts once a rollback is asked for: {:?}", runs.keys());
        for (c, (_, rollback)) in &runs {
            let rb = rollback.as_ref().unwrap_or_else(|| panic!("{c} was not rolled back"));
            assert_eq!(rb.status.as_ref().unwrap().succeeded().unwrap().status, "True", "{c}");
        }
        let versions = agent_versions(&fleet).await;
        assert!(versions.values().all(|v| v.as_ref().is_some_and(|(t, _)| t == "1.4.0")), "{versions:?}");
        watch.abort();
        let seen = seen.lock().unwrap().clone();
        // A stage over before the attempt's Running mark (an apply takes milliseconds)
        // is folded into it, as are stages between two writes of its progress; the
        // bake (10 virtual minutes, 10 s at 60×, longer than both) is seen.
        assert!(
            seen.iter().all(|(s, _, _)| ["applying", "settling", "baking"].contains(&s.as_str())),
            "{seen:?}"
        );
        let (_, until, message) = seen.iter().find(|(s, _, _)| s == "baking").unwrap();
        assert!(*until && message.contains("baking 10m"), "the bake says when it ends: {seen:?}");

        // Abort while a cluster is in progress: its run is cancelled where it is and the
        // release ends Failed; no other cluster starts.
        let again = server.write_file("again.yaml", &release_yaml("again", &[("node-agent", "1.5.0")], slow));
        server.kubectl_ok(&["apply", "-f", again.to_str().unwrap()]).await;
        eventually(Duration::from_secs(60), "a cluster is in progress", async || {
            (api.get("again").await.ok()?.status?.clusters?.running >= 1).then_some(())
        })
        .await;
        server.shoal_ok(&["rollout", "abort", "again", "--server", server.url()]).await;
        let r = wait_phase(&server, "again", ReleasePhase::Failed, Duration::from_secs(60)).await;
        let status = r.status.unwrap();
        assert!(status.message.as_deref().unwrap_or("").contains("aborted"), "{status:?}");
        assert!(status.failures.is_empty(), "an abort fails no check: {:?}", status.failures);
        let runs = runs_of(&server, "again").await;
        assert_eq!(runs.len(), 1, "only the cluster in progress had started");
        let (change, _) = runs.values().next().unwrap();
        assert_eq!(
            change.as_ref().unwrap().spec.status,
            Some(shoal_core::taskflow::PipelineRunSpecStatus::Cancelled)
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(runs_of(&server, "again").await.len(), 1, "nothing starts after an abort");
    })
    .await;
}

/// Every member answers 503 to a third of its requests (watches and discovery too): the
/// release still completes, because a 503 is shoal's and the member's passing trouble,
/// not a verdict about the change, and it says what it rode out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_rides_out_members_answering_503_and_shows_its_retries() {
    within(
        Duration::from_secs(300),
        "a release through flaky member APIs",
        async {
            let files = tempfile::tempdir().unwrap();
            let faults = files.path().join("faults.yaml");
            std::fs::write(
                &faults,
                "seed: 3\nfaults:\n  - apiServer: {name: flaky, errorRate: 0.3, errorCode: 503}\n",
            )
            .unwrap();
            let server = ShoalServer::start(&[
                "--store",
                "memory",
                "--sim-clusters",
                "2",
                "--sim-nodes",
                "2",
                "--time-scale",
                "60",
                "--faults",
                faults.to_str().unwrap(),
            ])
            .await;
            clusters(&server, 2).await;
            server
                .kubectl_ok(&["apply", "-f", &example("release/component.yaml")])
                .await;
            let strategy =
                "{waves: [{percent: 100}], clusterConcurrency: 2, batches: [1, \"100%\"]}";
            let r = server.write_file(
                "flaky.yaml",
                &release_yaml("flaky", &[("node-agent", "1.4.0")], strategy),
            );
            server
                .kubectl_ok(&["apply", "-f", r.to_str().unwrap()])
                .await;
            let done = wait_phase(
                &server,
                "flaky",
                ReleasePhase::Succeeded,
                Duration::from_secs(240),
            )
            .await;
            assert!(done.status.unwrap().failures.is_empty());
            // What it rode out stays on the TaskRuns and in /metrics.
            let task_runs: Api<shoal_core::taskflow::TaskRun> =
                Api::namespaced(server.client(), "shoal-system");
            let list = task_runs
                .list(&ListParams::default().labels("shoal.io/release=flaky"))
                .await
                .unwrap();
            let retried: Vec<_> = list
                .items
                .iter()
                .filter_map(|t| {
                    t.status
                        .as_ref()?
                        .conditions
                        .iter()
                        .find(|c| c.type_ == "TransientErrors")
                })
                .collect();
            assert!(
                !retried.is_empty(),
                "no TaskRun says it retried: {:?}",
                list.items.iter().map(|t| &t.status).collect::<Vec<_>>()
            );
            for c in &retried {
                assert_eq!(
                    (c.status.as_str(), c.reason.as_str()),
                    ("True", "TransientError"),
                    "{c:?}"
                );
                assert!(c.message.contains("transient failure"), "{c:?}");
            }
            let metrics = metrics_of(&server).await;
            let retries = series_sum(&metrics, "shoal_taskflow_transient_retries_total", &[]);
            assert!(
                retries >= retried.len() as f64,
                "{retries} retries counted:\n{metrics}"
            );
        },
    )
    .await;
}
