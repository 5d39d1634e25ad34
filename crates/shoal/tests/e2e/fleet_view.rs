//! The fleet view of a component through the real binary: three simulated clusters, the
//! example node agent applied to two of them at different versions through the fleet
//! driver (as a release would), a field changed by hand in one; the Component's status,
//! `shoal get components`, `kubectl get components` and `shoal describe component` show
//! both versions with their cluster and node counts, the cluster without it, and the
//! drifted one with its field.

use crate::common;

use std::time::Duration;

use common::{ShoalServer, apply_flags, eventually, parse_table, within};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use shoal_core::kinds::{Cluster, Component, ComponentStatus, VersionCount};
use shoal_fleet::Fleet;

/// The component controller passes every 10 s of real time; a workload applied just
/// after a pass, whose pods the simulator then starts, shows on the pass after.
const VIEW_DEADLINE: Duration = Duration::from_secs(60);

/// Nodes per simulated cluster: a DaemonSet runs one pod on each.
const NODES: i64 = 4;

fn example() -> String {
    format!(
        "{}/../../examples/release/component.yaml",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Renders the node agent for `cluster` at `version` with `shoal render` and applies it
/// with the fleet driver, which records shoal's last-applied copy.
async fn install(server: &ShoalServer, fleet: &Fleet, cluster: &Cluster, version: &str) {
    let name = cluster.metadata.name.clone().unwrap();
    let yaml = server
        .shoal_ok(&[
            "render",
            "node-agent",
            "--cluster",
            &name,
            "--version",
            version,
        ])
        .await;
    let member = fleet
        .member(cluster)
        .await
        .expect("reach the simulated cluster");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml).expect("render prints YAML");
    for doc in docs.iter().filter(|d| !d.is_null()) {
        fleet
            .apply(&member, doc, &[], false)
            .await
            .unwrap_or_else(|e| panic!("apply to {name}: {e:?}"));
    }
}

#[tokio::test]
async fn the_component_status_shows_versions_nodes_missing_and_drifted_clusters() {
    within(
        VIEW_DEADLINE + Duration::from_secs(60),
        "the fleet view of a component",
        async {
            let server = ShoalServer::start(&[
                "--store",
                "memory",
                "--time-scale",
                "20",
                "--sim-clusters",
                "3",
                "--sim-nodes",
                "4",
            ])
            .await;
            let clusters: Api<Cluster> = Api::all(server.client());
            let mut fleet_clusters = eventually(
                VIEW_DEADLINE,
                "three simulated clusters register",
                async || {
                    let list = clusters.list(&ListParams::default()).await.ok()?;
                    (list.items.len() == 3).then_some(list.items)
                },
            )
            .await;
            fleet_clusters.sort_by_key(|c| c.metadata.name.clone());
            let names: Vec<String> = fleet_clusters
                .iter()
                .map(|c| c.metadata.name.clone().unwrap())
                .collect();

            let path = example();
            let mut args = vec!["apply", "-f", path.as_str()];
            args.extend_from_slice(apply_flags());
            server.kubectl_ok(&args).await;

            // Nothing installed anywhere: the view says so soon after the apply.
            let components: Api<Component> = Api::all(server.client());
            eventually(VIEW_DEADLINE, "the empty view of node-agent", async || {
                let st = components.get("node-agent").await.ok()?.status?;
                (st.not_installed == Some(3)).then_some(())
            })
            .await;

            let fleet = Fleet::new();
            install(&server, &fleet, &fleet_clusters[0], "1.4.0").await;
            install(&server, &fleet, &fleet_clusters[1], "v2").await;

            // A hand edit of a field shoal applied, in the second cluster.
            let member = fleet.member(&fleet_clusters[1]).await.unwrap();
            let ds: Api<shoal_core::kinds::AdvancedDaemonSet> =
                Api::namespaced(member.client.clone(), "kube-system");
            ds.patch(
                "node-agent",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"updateStrategy":
                    {"rollingUpdate": {"maxUnavailable": 3}}}})),
            )
            .await
            .expect("edit the DaemonSet by hand");

            let want = [
                VersionCount {
                    version: "1.4.0".into(),
                    clusters: 1,
                    nodes: NODES,
                },
                VersionCount {
                    version: "v2".into(),
                    clusters: 1,
                    nodes: NODES,
                },
            ];
            let st: ComponentStatus = eventually(
                VIEW_DEADLINE,
                "both versions on all their nodes, and the drift",
                async || {
                    let st = components.get("node-agent").await.ok()?.status?;
                    (st.versions == want && st.drifted == Some(1)).then_some(st)
                },
            )
            .await;
            assert_eq!(st.not_installed, Some(1), "{st:?}");
            assert_eq!(st.unreachable, Some(0), "{st:?}");
            assert_eq!(st.summary.as_deref(), Some("1.4.0=1 v2=1"), "{st:?}");
            assert_eq!(st.drift.len(), 1, "{st:?}");
            assert_eq!(st.drift[0].cluster, names[1]);
            assert_eq!(
                st.drift[0].fields,
                ["spec.updateStrategy.rollingUpdate.maxUnavailable"]
            );
            let observed = &st.conditions[0];
            assert_eq!(
                (observed.type_.as_str(), observed.status.as_str()),
                ("Observed", "True")
            );
            assert!(
                observed
                    .message
                    .starts_with("3 clusters: 2 with the workload, 1 not installed, 1 drifted"),
                "{}",
                observed.message
            );

            // The printer columns, through shoal and kubectl alike.
            for table in [
                server.shoal_ok(&["get", "components"]).await,
                server.kubectl_ok(&["get", "components"]).await,
            ] {
                let rows = parse_table(&table);
                assert_eq!(rows.len(), 1, "{table}");
                assert_eq!(rows[0]["VERSIONS"], "1.4.0=1 v2=1", "{table}");
                assert_eq!(rows[0]["DRIFTED"], "1", "{table}");
            }

            let described = server
                .shoal_ok(&["describe", "component", "node-agent"])
                .await;
            for line in [
                "  VERSION   CLUSTERS   NODES   SHARE",
                "  1.4.0            1       4   50.0%",
                "  v2               1       4   50.0%",
                "  Not installed: 1",
                "Drift:        1 cluster differ from what shoal applied",
                &format!(
                    "  {}: spec.updateStrategy.rollingUpdate.maxUnavailable",
                    names[1]
                ),
            ] {
                assert!(
                    described.lines().any(|l| l == line),
                    "{line:?} missing from:\n{described}"
                );
            }

            // Each cluster's own view: the version the dashboard colours its tile by.
            let versions = async || {
                let mut out = Vec::new();
                for n in &names {
                    let c = clusters.get(n).await.ok()?;
                    out.push(c.status?.components.get("node-agent").cloned());
                }
                Some(out)
            };
            eventually(VIEW_DEADLINE, "the versions on the clusters", async || {
                let v = versions().await?;
                (v == [Some("1.4.0".to_string()), Some("v2".to_string()), None]).then_some(())
            })
            .await;
            // A component that is gone is not shown on the clusters any more.
            server
                .kubectl_ok(&["delete", "component", "node-agent"])
                .await;
            eventually(
                VIEW_DEADLINE,
                "the versions gone from the clusters",
                async || {
                    let v = versions().await?;
                    v.iter().all(Option::is_none).then_some(())
                },
            )
            .await;
        },
    )
    .await;
}
