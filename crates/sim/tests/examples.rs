//! The example fleet and fault profile in `examples/` parse, expand, and behave as their
//! comments say — the acceptance test for faults, on the example fleet itself.

use jiff::Timestamp;
use shoal_sim::faults::{ClusterRef, FaultModel, FaultProfile, NodeRef, PodFault};
use shoal_sim::fleet::{self, FleetSpec, KERNEL_LABEL};

fn example(name: &str) -> String {
    let path = format!("{}/../../examples/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

#[test]
fn example_fleet_expands_to_labelled_clusters_with_shared_node_classes() {
    let spec = FleetSpec::from_yaml(&example("fleet.yaml")).unwrap();
    let fleet = fleet::expand(&spec).unwrap();
    // prod: 3 regions × 3 businesses × 4; ai: 1 × 1 × 2; staging: 1 × 3 × 1.
    assert_eq!(fleet.clusters.len(), 36 + 2 + 3);
    assert_eq!(fleet.node_count(), 36 * 100 + 2 * 50 + 3 * 10);
    let ai = fleet
        .clusters
        .iter()
        .find(|c| c.name.starts_with("ai-"))
        .unwrap();
    assert_eq!(ai.labels["tier"], "2");
    let gpu = ai.classes.iter().find(|k| k.profile_name == "gpu").unwrap();
    assert_eq!(gpu.profile.taints.len(), 1);
    assert_eq!(gpu.labels["accelerator"], "nvidia-a10");
}

#[test]
fn example_faults_crash_bad_only_on_kernel_5_10_nodes_at_about_30_percent() {
    let fleet = fleet::expand(&FleetSpec::from_yaml(&example("fleet.yaml")).unwrap()).unwrap();
    let start: Timestamp = "2026-11-22T00:00:00Z".parse().unwrap();
    let model = FaultModel::compile(
        &FaultProfile::from_yaml(&example("faults.yaml")).unwrap(),
        start,
    )
    .unwrap();
    let (mut legacy, mut crashed) = (0u32, 0u32);
    for c in &fleet.clusters {
        let cluster = ClusterRef {
            name: &c.name,
            labels: &c.labels,
        };
        for n in &c.nodes {
            let class = c.class_of(*n);
            let name = c.node_name(n.index);
            let node = NodeRef {
                name: &name,
                labels: &class.labels,
            };
            let bad = model.pod_fault(cluster, node, "registry.example.com/node-agent:bad", start);
            let good = model.pod_fault(
                cluster,
                node,
                "registry.example.com/node-agent:v1.9.0",
                start,
            );
            assert_eq!(good, PodFault::None);
            if class.labels[KERNEL_LABEL] == "5.10" {
                legacy += 1;
                crashed += u32::from(bad == PodFault::CrashLoop);
            } else {
                assert_eq!(
                    bad,
                    PodFault::None,
                    "{name} runs kernel {}",
                    class.profile.kernel
                );
            }
        }
    }
    let rate = f64::from(crashed) / f64::from(legacy);
    assert!(legacy > 900, "{legacy} legacy nodes");
    // ~915 trials: one standard deviation is ~0.015.
    assert!((rate - 0.3).abs() < 0.05, "observed crash-loop rate {rate}");
}
