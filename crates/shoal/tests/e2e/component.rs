//! Components through the real binary: `kubectl apply` the example Component and its
//! ClusterConfigs, `shoal diff` it against a simulated cluster (create → unchanged after
//! the rendered objects are applied → a patch of only the image for a new version).

use crate::common;

use common::{ShoalServer, TEST_DEADLINE, apply_flags, eventually, within};
use kube::api::{Api, ListParams, PostParams};
use shoal_core::kinds::{Cluster, Component};

fn example() -> String {
    format!(
        "{}/../../examples/release/component.yaml",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// The lines under `changes:` of the first `…: patch` object in `shoal diff`'s output.
fn change_lines(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .skip_while(|l| !l.ends_with(": patch"))
        .skip_while(|l| *l != "  changes:")
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .map(|l| l.trim().to_string())
        .collect()
}

#[tokio::test]
async fn diff_shows_create_then_nothing_then_only_the_image_of_a_new_version() {
    within(
        TEST_DEADLINE,
        "shoal diff against a simulated cluster",
        async {
            let server = ShoalServer::start(&[
                "--store",
                "memory",
                "--time-scale",
                "20",
                "--sim-clusters",
                "1",
                "--sim-nodes",
                "3",
            ])
            .await;
            let clusters: Api<Cluster> = Api::all(server.client());
            let cluster = eventually(
                TEST_DEADLINE,
                "the simulated cluster registers",
                async || {
                    let list = clusters.list(&ListParams::default()).await.ok()?;
                    list.items.first().cloned()
                },
            )
            .await;
            let name = cluster.metadata.name.clone().unwrap();
            let member = cluster.spec.endpoint.server.clone();

            let mut args = vec!["apply", "-f"];
            let path = example();
            args.push(&path);
            args.extend_from_slice(apply_flags());
            server.kubectl_ok(&args).await;

            // Admission names the field at fault.
            let bad = server.write_file(
                "bad.yaml",
                "apiVersion: shoal.io/v1alpha1\nkind: ClusterConfig\nmetadata: {name: two}\n\
             spec: {component: node-agent, cluster: a, clusterGroup: simulated}\n---\n\
             apiVersion: shoal.io/v1alpha1\nkind: Component\nmetadata: {name: broken}\n\
             spec: {image: x, version: '1', template: 'kind: {{ oops'}\n",
            );
            let stderr = server
                .kubectl_fails(&["apply", "-f", bad.to_str().unwrap()])
                .await;
            assert!(
                stderr.contains("ClusterConfig \"two\" is invalid: spec: exactly one target"),
                "{stderr}"
            );
            assert!(
                stderr.contains(
                    "Component \"broken\" is invalid: spec.template: line 1: syntax error"
                ),
                "{stderr}"
            );

            // Nothing in the cluster yet: a create, exit 1, with the group's values in it.
            let first = server
                .shoal(&["diff", "node-agent", "--cluster", &name])
                .await;
            assert_eq!(first.status.code(), Some(1), "{first:?}");
            assert!(
                first
                    .stdout
                    .contains("DaemonSet kube-system/node-agent: create"),
                "{}",
                first.stdout
            );
            assert!(
                first.stdout.contains("--log-level=debug"),
                "{}",
                first.stdout
            );
            assert!(
                first
                    .stdout
                    .contains("values from ClusterConfig node-agent-simulated"),
                "{}",
                first.stdout
            );
            assert!(
                !first.stdout.contains("shoal.io/last-applied"),
                "{}",
                first.stdout
            );

            // Apply the rendered objects with kubectl, as a human would.
            let rendered = server
                .shoal_ok(&["render", "node-agent", "--cluster", &name])
                .await;
            let file = server.write_file("rendered.yaml", &rendered);
            let file = file.to_str().unwrap();
            let mut args = vec!["--server", member.as_str(), "apply", "-f", file];
            args.extend_from_slice(apply_flags());
            server.kubectl_ok(&args).await;

            let second = server
                .shoal(&["diff", "node-agent", "--cluster", &name])
                .await;
            assert_eq!(second.status.code(), Some(0), "{second:?}");
            assert!(
                second
                    .stdout
                    .contains("DaemonSet kube-system/node-agent: unchanged"),
                "{}",
                second.stdout
            );

            // A new version: a patch, and the image is the only field it changes.
            let third = server
                .shoal(&[
                    "diff",
                    "node-agent",
                    "--cluster",
                    &name,
                    "--version",
                    "1.5.0",
                ])
                .await;
            assert_eq!(third.status.code(), Some(1), "{third:?}");
            assert_eq!(
                change_lines(&third.stdout),
                ["spec.template.spec.containers[0].image: \
                 registry.example.com/infra/node-agent:1.4.0 → \
                 registry.example.com/infra/node-agent:1.5.0"],
                "{}",
                third.stdout
            );

            // A dangerous field the template now renders differently is refused, not sent.
            let components: Api<Component> = Api::all(server.client());
            let mut c = components.get("node-agent").await.unwrap();
            c.spec.template = c
                .spec
                .template
                .replace("hostNetwork: true", "hostNetwork: false");
            components
                .replace("node-agent", &PostParams::default(), &c)
                .await
                .unwrap();
            let fourth = server
                .shoal(&["diff", "node-agent", "--cluster", &name])
                .await;
            assert_eq!(fourth.status.code(), Some(1), "{fourth:?}");
            assert!(
            fourth.stdout.contains(
                "refused: dangerous field spec.template.spec.hostNetwork would change: true → false"
            ),
            "{}",
            fourth.stdout
        );
            assert!(
                !fourth.stdout.contains("hostNetwork: false"),
                "{}",
                fourth.stdout
            );

            // Errors exit 2, apart from "differs".
            let missing = server.shoal(&["diff", "nope", "--cluster", &name]).await;
            assert_eq!(missing.status.code(), Some(2), "{missing:?}");
            assert!(
                missing.stderr.contains("Component \"nope\" not found"),
                "{}",
                missing.stderr
            );
        },
    )
    .await;
}
