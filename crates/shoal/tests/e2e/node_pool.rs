//! The node-pool expansion pipeline (examples/node-pool-expansion.yaml) against a simulated
//! cluster: taskflow's fleet executors end to end, on the success path and on the failure
//! path that rolls the pool back.

use crate::common;

use std::path::Path;

use common::{ShoalServer, TEST_DEADLINE, eventually, within};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, PostParams};
use shoal_core::kinds::{Cluster, PipelineRun};

fn example() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/node-pool-expansion.yaml")
        .display()
        .to_string()
}

/// A pool-a run: `pool` nodes of the simulated cluster.
fn run(name: &str, cluster: &str, pool: &str) -> PipelineRun {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "PipelineRun",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "pipelineRef": {"name": "node-pool-expansion"},
            "params": [
                {"name": "cluster", "value": cluster},
                {"name": "pool", "value": pool},
                {"name": "count", "value": "3"}
            ]
        }
    }))
    .unwrap()
}

/// The run's Succeeded condition once it is final: (status, reason).
async fn finished(server: &ShoalServer, name: &str) -> (String, String, PipelineRun) {
    let api: Api<PipelineRun> = Api::namespaced(server.client(), "default");
    eventually(
        TEST_DEADLINE,
        &format!("pipeline run {name} finishes"),
        async || {
            let pr = api.get(name).await.ok()?;
            let c = pr
                .status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| c.type_ == "Succeeded")?
                .clone();
            (c.status != "Unknown").then(|| (c.status, c.reason, pr.clone()))
        },
    )
    .await
}

async fn setup(faults: Option<&str>) -> (ShoalServer, String, Api<Node>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--store",
        "memory",
        "--sim-clusters",
        "1",
        "--sim-nodes",
        "2",
        "--time-scale",
        "60",
    ];
    let faults_path = dir.path().join("faults.yaml");
    let faults_arg = faults_path.display().to_string();
    if let Some(f) = faults {
        std::fs::write(&faults_path, f).unwrap();
        args.extend(["--faults", faults_arg.as_str()]);
    }
    let server = ShoalServer::start(&args).await;
    let clusters: Api<Cluster> = Api::all(server.client());
    let cluster = eventually(
        TEST_DEADLINE,
        "the simulated cluster is registered",
        async || {
            clusters
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .next()
        },
    )
    .await;
    let member = kube::Client::try_from(kube::Config::new(
        cluster.spec.endpoint.server.parse().unwrap(),
    ))
    .unwrap();
    server.kubectl_ok(&["apply", "-f", &example()]).await;
    (
        server,
        cluster.metadata.name.unwrap(),
        Api::all(member),
        dir,
    )
}

fn ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test]
async fn a_node_pool_is_expanded_initialized_and_imported() {
    within(TEST_DEADLINE, "node-pool expansion", async {
        let (server, cluster, nodes, _dir) = setup(None).await;
        let runs: Api<PipelineRun> = Api::namespaced(server.client(), "default");
        runs.create(&PostParams::default(), &run("expand-a", &cluster, "pool-a"))
            .await
            .unwrap();
        let (status, reason, pr) = finished(&server, "expand-a").await;
        assert_eq!(status, "True", "{reason}: {:?}", pr.status);
        let pool = nodes
            .list(&ListParams::default().labels("shoal.io/pool=pool-a"))
            .await
            .unwrap()
            .items;
        assert_eq!(pool.len(), 3);
        for n in &pool {
            assert!(ready(n), "{:?} is Ready", n.metadata.name);
            let labels = n.metadata.labels.as_ref().unwrap();
            assert_eq!(labels["shoal.io/lifecycle"], "ready");
            let spec = n.spec.as_ref().unwrap();
            assert_ne!(spec.unschedulable, Some(true), "imported: schedulable");
            assert!(
                spec.taints.as_ref().is_none_or(Vec::is_empty),
                "{:?}",
                spec.taints
            );
        }
        // The two original nodes are untouched.
        let all = nodes.list(&ListParams::default()).await.unwrap().items;
        assert_eq!(all.len(), 5);
        // The rollback (finally, only on failure) was skipped.
        let describe = server
            .shoal_ok(&["describe", "pipelinerun", "expand-a"])
            .await;
        assert!(describe.contains("rollback"), "{describe}");
    })
    .await;
}

#[tokio::test]
async fn a_pool_whose_nodes_never_become_ready_is_rolled_back() {
    within(TEST_DEADLINE, "node-pool expansion failure path", async {
        let faults = "seed: 1\nfaults:\n  - nodeNotReady: {name: bad-pool, nodeSelector: \"shoal.io/pool=pool-bad\"}\n";
        let (server, cluster, nodes, _dir) = setup(Some(faults)).await;
        let runs: Api<PipelineRun> = Api::namespaced(server.client(), "default");
        runs.create(&PostParams::default(), &run("expand-bad", &cluster, "pool-bad"))
            .await
            .unwrap();
        // wait-ready times out after 10m of virtual time (10 s here), rollback deletes.
        let (status, _reason, pr) = finished(&server, "expand-bad").await;
        assert_eq!(status, "False", "{:?}", pr.status);
        let left = nodes
            .list(&ListParams::default().labels("shoal.io/pool=pool-bad"))
            .await
            .unwrap()
            .items;
        assert!(left.is_empty(), "the pool was rolled back: {left:?}");
        assert_eq!(nodes.list(&ListParams::default()).await.unwrap().items.len(), 2);
    })
    .await;
}
