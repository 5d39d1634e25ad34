//! `shoal release rehearse` end to end: a control plane with a small simulated fleet (two
//! environments, prod mixing in nodes on the 5.10 kernel), a good release rehearsed
//! through, a bad one stopped by its crash-loop check with a bounded blast radius — and
//! the real control plane and its clusters untouched by either.

use crate::common;

use std::time::Duration;

use common::{ShoalServer, eventually, example, within};
use kube::api::{Api, ListParams};
use shoal_core::kinds::{AdvancedDaemonSet, Cluster, Release};

const FLEET: &str = r#"
nodeProfiles:
  legacy: {instanceType: ecs.g6.2xlarge, kernel: 5.10.134-16.al8.x86_64, kubeletVersion: v1.30.8}
  standard: {instanceType: ecs.g8i.4xlarge, kernel: 6.6.71-3.al8.x86_64, kubeletVersion: v1.32.2}
groups:
  - {name: staging, env: staging, regions: [cn-hangzhou], zones: [a, b], clustersPer: 2,
     nodesPerCluster: 4, nodes: [{profile: standard}]}
  - {name: prod, env: prod, regions: [cn-hangzhou, cn-beijing], zones: [a, b], clustersPer: 2,
     nodesPerCluster: 4, nodes: [{profile: legacy}, {profile: standard}]}
"#;

/// 2 staging + 4 prod clusters of 4 nodes.
const CLUSTERS: usize = 6;
const NODES: u64 = 24;

fn release_yaml(name: &str, version: &str, policy: &str) -> String {
    format!(
        "apiVersion: shoal.io/v1alpha1\nkind: Release\nmetadata: {{name: {name}}}\n\
         spec:\n  components: [{{name: node-agent, version: \"{version}\"}}]\n  strategy:\n    \
         order: [{{label: env, values: [staging, prod]}}]\n    waveBoundary: env\n    \
         waves: [{{clusters: 1}}, {{percent: 50, approval: true}}]\n    clusterConcurrency: 2\n    \
         batches: [1, \"50%\", \"100%\"]\n    bake: 30s\n    failurePolicy: {policy}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rehearsal_runs_on_a_copy_of_the_fleet_and_changes_nothing_real() {
    within(Duration::from_secs(120), "the rehearsals", async {
        let dir = tempfile::tempdir().unwrap();
        let fleet_file = dir.path().join("fleet.yaml");
        std::fs::write(&fleet_file, FLEET).unwrap();
        let server = ShoalServer::start(&[
            "--store", "memory",
            "--fleet", fleet_file.to_str().unwrap(),
            "--time-scale", "600",
        ])
        .await;
        let clusters: Api<Cluster> = Api::all(server.client());
        let fleet = eventually(Duration::from_secs(30), "the fleet is registered", async || {
            let list = clusters.list(&ListParams::default()).await.ok()?.items;
            (list.len() == CLUSTERS).then_some(list)
        })
        .await;
        server.shoal_ok(&["apply", "-f", &example("release/component.yaml")]).await;

        // (a) A good version, through its approval gate: it would complete, everywhere.
        let good = server.write_file("good.yaml", &release_yaml("agent-1.5.0", "1.5.0", "Pause"));
        let run = server.shoal(&["release", "rehearse", "-f", good.to_str().unwrap()]).await;
        assert_eq!(run.status.code(), Some(0), "stdout: {}\nstderr: {}", run.stdout, run.stderr);
        let out = &run.stdout;
        assert!(out.contains("Outcome:    Succeeded (it would complete)"), "{out}");
        assert!(out.contains(&format!("Clusters:   {CLUSTERS}/{CLUSTERS} succeeded")), "{out}");
        assert!(
            out.contains(&format!("node-agent 1.5.0: {CLUSTERS}/{CLUSTERS} clusters, {NODES}/{NODES} nodes, crash-looped on 0 nodes, 0 maxUnavailable violations")),
            "{out}"
        );
        assert!(out.contains("virtual"), "{out}");
        assert!(run.stderr.contains("rehearse: copying 6 clusters and 24 nodes"), "{}", run.stderr);

        // (b) A bad version with the fault: the crash-loop check stops it in prod, after
        // staging and before all of prod.
        let bad = server.write_file("bad.yaml", &release_yaml("agent-1.6.0", "1.6.0", "RollbackAll"));
        let run = server
            .shoal(&["release", "rehearse", "-f", bad.to_str().unwrap(), "--faults", &example("release/faults.yaml"), "-o", "json"])
            .await;
        assert_eq!(run.status.code(), Some(1), "stdout: {}\nstderr: {}", run.stdout, run.stderr);
        let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout));
        assert_eq!(report["outcome"], "RolledBack", "{report:#}");
        assert_eq!(report["completes"], false);
        let failures = report["failures"].as_array().unwrap();
        assert!(
            failures.iter().any(|f| f["cluster"].as_str().unwrap().starts_with("prod-")
                && f["step"].as_str().unwrap().starts_with("node-agent-step-")
                && f["message"].as_str().unwrap().contains("crash-looping")),
            "{report:#}"
        );
        let b = &report["blastRadius"][0];
        assert_eq!((b["component"].as_str(), b["version"].as_str()), (Some("node-agent"), Some("1.6.0")));
        let nodes = b["nodes"].as_u64().unwrap();
        assert!(nodes > 8 && nodes < NODES, "staging's 8 nodes and part of prod: {b}");
        assert!(b["crashLoopingNodes"].as_u64().unwrap() > 0, "{b}");
        assert_eq!(b["nodesTotal"], NODES);
        assert!(report["virtualDuration"].as_str().unwrap().ends_with('s'), "{report:#}");

        // (c) Nothing real changed: no Release, no node agent in any member cluster.
        let releases: Api<Release> = Api::all(server.client());
        assert!(releases.list(&ListParams::default()).await.unwrap().items.is_empty());
        for c in &fleet {
            let config = kube::Config::new(c.spec.endpoint.server.parse().unwrap());
            let api: Api<AdvancedDaemonSet> = Api::namespaced(kube::Client::try_from(config).unwrap(), "kube-system");
            assert!(api.get_opt("node-agent").await.unwrap().is_none(), "{:?}", c.metadata.name);
        }

        // Errors say what is wrong and exit 2.
        let run = server.shoal(&["release", "rehearse", "-f", "/nonexistent.yaml"]).await;
        assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
        assert!(run.stderr.contains("failed to read /nonexistent.yaml"), "{}", run.stderr);
    })
    .await;
}
