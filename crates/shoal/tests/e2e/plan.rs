//! `shoal plan` against the release walk-through's fleet: waves in environment order, least risky first,
//! never crossing the environment boundary, every selected cluster exactly once.

use crate::common;

use std::collections::BTreeSet;

use common::{ShoalServer, TEST_DEADLINE, eventually, example, within};
use kube::api::{Api, ListParams};
use shoal_core::kinds::Cluster;

#[tokio::test]
async fn a_release_is_planned_in_environment_order_with_reasons() {
    within(TEST_DEADLINE, "shoal plan", async {
        let fleet = example("release/fleet.yaml");
        let server = ShoalServer::start(&["--store", "memory", "--fleet", &fleet, "--no-controllers"]).await;
        let clusters: Api<Cluster> = Api::all(server.client());
        let all = eventually(TEST_DEADLINE, "the fleet is registered with node counts", async || {
            let list = clusters.list(&ListParams::default()).await.ok()?.items;
            let counted = list
                .iter()
                .filter(|c| c.status.as_ref().and_then(|s| s.node_count).is_some_and(|n| n > 0))
                .count();
            (list.len() == 210 && counted == 210).then_some(list)
        })
        .await;
        let selected: BTreeSet<String> =
            all.iter().map(|c| c.metadata.name.clone().unwrap()).collect();
        server.kubectl_ok(&["apply", "-f", &example("release/release-good.yaml")]).await;
        let out = server.shoal_ok(&["plan", "agent-1.5.0", "--server", server.url(), "-o", "json"]).await;
        let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
        let waves = plan["waves"].as_array().unwrap();
        let names: Vec<String> = waves
            .iter()
            .flat_map(|w| w["clusters"].as_array().unwrap().iter())
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names.len(), selected.len(), "each selected cluster exactly once");
        assert_eq!(names.iter().cloned().collect::<BTreeSet<_>>(), selected);
        // test → staging → canary → prod, and no wave mixes two of them.
        let env_of = |n: &str| {
            ["test-", "staging-", "canary-", "prod-"].iter().position(|p| n.starts_with(p)).unwrap()
        };
        assert!(names.windows(2).all(|p| env_of(&p[0]) <= env_of(&p[1])), "{names:?}");
        for w in waves {
            let envs: BTreeSet<_> = w["clusters"].as_array().unwrap().iter()
                .map(|c| env_of(c["name"].as_str().unwrap())).collect();
            assert_eq!(envs.len(), 1, "a wave within one env: {w}");
        }
        assert_eq!(waves[0]["clusters"].as_array().unwrap().len(), 1, "one canary first");
        assert_eq!(waves[2]["approval"], true);
        // The text form says why.
        let text = server.shoal_ok(&["plan", "agent-1.5.0", "--server", server.url()]).await;
        assert!(text.contains("WAVE 1 (1 cluster of env=test, region="), "{text}");
        // A wave over several regions says so, instead of naming its first cluster's.
        for block in text.split("\nWAVE ").skip(1) {
            let header = block.lines().next().unwrap();
            if let Some(region) = header.split("region=").nth(1) {
                let region = region.split([',', ')']).next().unwrap();
                for line in block.lines().skip(1).filter(|l| l.starts_with("  ")) {
                    assert!(line.contains(&format!("region={region} ")), "{header}: {line}");
                }
            }
        }
        assert!(text.contains(" regions"), "{text}");
        assert!(text.contains("env=test (#1)"), "{text}");
        assert!(text.contains("waits for an Approval"), "{text}");
        // A bad release is refused naming the field, by the API and by `shoal plan -f`.
        let bad = server.scratch().join("bad.yaml");
        std::fs::write(&bad, "apiVersion: shoal.io/v1alpha1\nkind: Release\nmetadata: {name: bad}\nspec:\n  components: [{name: a, version: v1}]\n  strategy: {waves: [{percent: 0}]}\n").unwrap();
        let refused = server.kubectl(&["apply", "-f", bad.to_str().unwrap()]).await;
        assert!(!refused.status.success());
        assert!(refused.stderr.contains("spec.strategy.waves[0].percent"), "{}", refused.stderr);
        let r = server.shoal(&["plan", "-f", bad.to_str().unwrap(), "--server", server.url()]).await;
        assert!(!r.status.success());
        assert!(r.stderr.contains("spec.strategy.waves[0].percent"), "{}", r.stderr);
    })
    .await;
}
