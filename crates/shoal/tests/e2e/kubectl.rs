//! The real `kubectl` against a real `shoal serve`: discovery, tables, output formats,
//! selectors, watch, client-side apply with server-side validation, explain, describe,
//! delete, optimistic concurrency, the status subresource, finalizers and pagination.
//!
//! Each test starts its own server and talks to it only through kubectl (plus the
//! server's own kubeconfig), as a user would.

use crate::common;

use std::time::Duration;

use common::{ShoalServer, TEST_DEADLINE, apply_flags, mk_cluster_yaml, parse_table, within};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The API alone: these tests are about API semantics (resourceVersions, watch events,
/// the tests' own controllers), which shoal's controllers (the cluster prober writes every
/// Cluster's status) would make nondeterministic.
const API_ONLY: &[&str] = &["--no-controllers"];

/// Applies `manifest` (written to `file` in the scratch dir) and returns kubectl's stdout.
async fn apply(s: &ShoalServer, file: &str, manifest: &str) -> String {
    let path = s.write_file(file, manifest);
    let path = path.to_str().expect("utf-8 temp path");
    let mut args = vec!["apply", "-f", path];
    args.extend_from_slice(apply_flags());
    s.kubectl_ok(&args).await
}

/// Three clusters with different attributes, in one multi-document manifest.
fn mk_fleet() -> String {
    [
        mk_cluster_yaml("prod-eu-1", "prod", "eu-west", "1"),
        mk_cluster_yaml("prod-us-1", "prod", "us-east", "2"),
        mk_cluster_yaml("dev-eu-1", "dev", "eu-west", "3"),
    ]
    .join("---\n")
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test]
async fn api_resources_lists_clusters_with_their_short_name_and_namespaces() {
    within(TEST_DEADLINE, "kubectl api-resources", async {
        let s = ShoalServer::start(API_ONLY).await;
        let out = s.kubectl_ok(&["api-resources"]).await;
        let rows = parse_table(&out);
        let find = |name: &str| {
            rows.iter()
                .find(|r| r["NAME"] == name)
                .unwrap_or_else(|| panic!("no {name} in api-resources:\n{out}"))
                .clone()
        };
        let clusters = find("clusters");
        assert_eq!(clusters["SHORTNAMES"], "cl", "{out}");
        assert_eq!(clusters["APIVERSION"], "shoal.io/v1alpha1", "{out}");
        assert_eq!(clusters["NAMESPACED"], "false", "{out}");
        assert_eq!(clusters["KIND"], "Cluster", "{out}");
        let namespaces = find("namespaces");
        assert_eq!(namespaces["APIVERSION"], "v1", "{out}");
        assert_eq!(namespaces["KIND"], "Namespace", "{out}");
        find("clustergroups");
    })
    .await
}

#[tokio::test]
async fn get_clusters_prints_the_attribute_columns_and_their_values() {
    within(TEST_DEADLINE, "kubectl get clusters (table)", async {
        let s = ShoalServer::start(API_ONLY).await;
        apply(&s, "fleet.yaml", &mk_fleet()).await;
        let out = s.kubectl_ok(&["get", "clusters"]).await;
        assert_eq!(
            common::table_header(&out),
            ["NAME", "ENV", "REGION", "TIER", "READY", "AGE"],
            "{out}"
        );
        let rows = parse_table(&out);
        assert_eq!(rows.len(), 3, "{out}");
        let row = rows
            .iter()
            .find(|r| r["NAME"] == "prod-us-1")
            .unwrap_or_else(|| panic!("prod-us-1 missing:\n{out}"));
        assert_eq!(row["ENV"], "prod", "{out}");
        assert_eq!(row["REGION"], "us-east", "{out}");
        assert_eq!(row["TIER"], "2", "{out}");
        assert_eq!(row["READY"], "", "no status yet:\n{out}");
        assert!(
            row["AGE"].ends_with('s') || row["AGE"].ends_with('m'),
            "AGE should be a fresh age like 0s:\n{out}"
        );
    })
    .await
}

#[tokio::test]
async fn get_clusters_as_yaml_and_jsonpath_shows_the_stored_object() {
    within(TEST_DEADLINE, "kubectl get -o yaml / -o jsonpath", async {
        let s = ShoalServer::start(API_ONLY).await;
        apply(&s, "fleet.yaml", &mk_fleet()).await;

        let yaml = s
            .kubectl_ok(&["get", "cluster", "prod-eu-1", "-o", "yaml"])
            .await;
        for needle in [
            "apiVersion: shoal.io/v1alpha1",
            "kind: Cluster",
            "name: prod-eu-1",
            "region: eu-west",
            "server: https://prod-eu-1.example.test:6443",
            "generation: 1",
            "uid: ",
            "resourceVersion: ",
        ] {
            assert!(yaml.contains(needle), "missing {needle:?} in:\n{yaml}");
        }

        let names = s
            .kubectl_ok(&[
                "get",
                "clusters",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}={.metadata.labels.env}{\"\\n\"}{end}",
            ])
            .await;
        let mut lines: Vec<&str> = names.lines().collect();
        lines.sort();
        assert_eq!(
            lines,
            ["dev-eu-1=dev", "prod-eu-1=prod", "prod-us-1=prod"],
            "{names}"
        );

        let server = s
            .kubectl_ok(&[
                "get",
                "cl",
                "dev-eu-1",
                "-o",
                "jsonpath={.spec.endpoint.server}",
            ])
            .await;
        assert_eq!(server, "https://dev-eu-1.example.test:6443");
    })
    .await
}

#[tokio::test]
async fn a_label_selector_filters_the_listed_clusters() {
    within(TEST_DEADLINE, "kubectl get -l", async {
        let s = ShoalServer::start(API_ONLY).await;
        apply(&s, "fleet.yaml", &mk_fleet()).await;
        let names = |out: &str| {
            let mut n: Vec<String> = parse_table(out).iter().map(|r| r["NAME"].clone()).collect();
            n.sort();
            n
        };
        let out = s.kubectl_ok(&["get", "clusters", "-l", "env=prod"]).await;
        assert_eq!(names(&out), ["prod-eu-1", "prod-us-1"], "{out}");
        let out = s
            .kubectl_ok(&["get", "clusters", "-l", "env=prod,region in (eu-west)"])
            .await;
        assert_eq!(names(&out), ["prod-eu-1"], "{out}");
        let out = s.kubectl_ok(&["get", "clusters", "-l", "env!=prod"]).await;
        assert_eq!(names(&out), ["dev-eu-1"], "{out}");
        let r = s.kubectl(&["get", "clusters", "-l", "env=staging"]).await;
        assert!(r.status.success(), "{r:?}");
        assert!(r.stdout.trim().is_empty(), "{r:?}");
        assert!(r.stderr.contains("No resources found"), "{r:?}");
    })
    .await
}

#[tokio::test]
async fn watching_clusters_prints_an_update_made_after_the_watch_started() {
    within(TEST_DEADLINE, "kubectl get cl -w", async {
        let s = ShoalServer::start(API_ONLY).await;
        apply(
            &s,
            "w.yaml",
            &mk_cluster_yaml("w-1", "prod", "eu-west", "1"),
        )
        .await;

        let mut watch = s
            .kubectl_command(&["get", "cl", "-w"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn kubectl get -w");
        let mut lines = BufReader::new(watch.stdout.take().expect("piped")).lines();
        let mut seen = Vec::new();
        within(
            Duration::from_secs(20),
            "kubectl get cl -w never printed the existing cluster",
            async {
                while let Some(line) = lines.next_line().await.expect("read kubectl output") {
                    seen.push(line.clone());
                    if line.starts_with("w-1 ") {
                        return;
                    }
                }
                panic!("kubectl get -w ended early: {seen:?}");
            },
        )
        .await;
        assert!(seen[0].starts_with("NAME"), "{seen:?}");

        s.kubectl_ok(&["label", "cluster", "w-1", "env=staging", "--overwrite"])
            .await;
        let update = within(
            Duration::from_secs(20),
            "kubectl get cl -w never printed the relabelled cluster",
            async {
                while let Some(line) = lines.next_line().await.expect("read kubectl output") {
                    seen.push(line.clone());
                    if line.starts_with("w-1 ") && line.contains("staging") {
                        return line;
                    }
                }
                panic!("kubectl get -w ended early: {seen:?}");
            },
        )
        .await;
        let cells: Vec<&str> = update.split_whitespace().collect();
        assert_eq!(&cells[..4], ["w-1", "staging", "eu-west", "1"], "{seen:?}");
        watch.kill().await.expect("stop kubectl get -w");
    })
    .await
}

#[tokio::test]
async fn applying_twice_creates_then_configures_and_the_change_is_visible() {
    within(TEST_DEADLINE, "kubectl apply twice", async {
        let s = ShoalServer::start(API_ONLY).await;
        let manifest = mk_cluster_yaml("a-1", "prod", "eu-west", "1");
        let out = apply(&s, "a.yaml", &manifest).await;
        assert_eq!(out.trim(), "cluster.shoal.io/a-1 created");

        let out = apply(&s, "a.yaml", &manifest).await;
        assert_eq!(out.trim(), "cluster.shoal.io/a-1 unchanged");

        let edited = manifest
            .replace("eu-west", "ap-south")
            .replace("a-1.example.test", "a-1.moved.test");
        let out = apply(&s, "a.yaml", &edited).await;
        assert_eq!(out.trim(), "cluster.shoal.io/a-1 configured");

        let got = json(&s.kubectl_ok(&["get", "cl", "a-1", "-o", "json"]).await);
        assert_eq!(got["metadata"]["labels"]["region"], "ap-south", "{got}");
        assert_eq!(
            got["spec"]["endpoint"]["server"], "https://a-1.moved.test:6443",
            "{got}"
        );
        assert_eq!(
            got["metadata"]["generation"], 2,
            "a spec change bumps generation: {got}"
        );
        let last_applied =
            got["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
                .as_str()
                .unwrap_or_else(|| panic!("no last-applied annotation: {got}"));
        assert!(last_applied.contains("ap-south"), "{last_applied}");
    })
    .await
}

#[tokio::test]
async fn applying_a_file_with_an_unknown_field_fails_naming_the_field() {
    within(
        TEST_DEADLINE,
        "kubectl apply with an unknown field",
        async {
            let s = ShoalServer::start(API_ONLY).await;
            let manifest = format!(
                "{}  colour: red\n",
                mk_cluster_yaml("u-1", "prod", "eu-west", "1")
            );
            let path = s.write_file("u.yaml", &manifest);
            let path = path.to_str().expect("utf-8 temp path");
            if apply_flags().is_empty() {
                // kubectl >= 1.27 validates on the server (`fieldValidation=Strict`).
                let err = s.kubectl_fails(&["apply", "-f", path]).await;
                assert!(err.contains(r#"unknown field "spec.colour""#), "{err}");
                let gone = s.kubectl_fails(&["get", "cl", "u-1"]).await;
                assert!(gone.contains("NotFound"), "nothing was created: {gone}");
            } else {
                // Older kubectl runs with --validate=false: the server warns and prunes.
                let r = s.kubectl(&["apply", "-f", path, "--validate=false"]).await;
                assert!(r.status.success(), "{r:?}");
                assert!(r.stderr.contains(r#"unknown field "spec.colour""#), "{r:?}");
            }
        },
    )
    .await
}

#[tokio::test]
async fn explain_cluster_spec_documents_the_required_endpoint() {
    within(TEST_DEADLINE, "kubectl explain cluster.spec", async {
        let s = ShoalServer::start(API_ONLY).await;
        let out = s.kubectl_ok(&["explain", "cluster.spec"]).await;
        assert!(out.contains("KIND:") && out.contains("Cluster"), "{out}");
        let endpoint = out
            .lines()
            .find(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                words.first() == Some(&"endpoint") && words.get(1) == Some(&"<Object>")
            })
            .unwrap_or_else(|| panic!("no endpoint field in:\n{out}"));
        assert!(endpoint.contains("-required-"), "{endpoint}");
        assert!(out.contains("credentialsRef"), "{out}");

        let out = s
            .kubectl_ok(&["explain", "cluster.spec.endpoint.server"])
            .await;
        assert!(out.contains("<string>"), "{out}");
    })
    .await
}

#[tokio::test]
async fn describe_cluster_shows_name_labels_and_spec() {
    within(TEST_DEADLINE, "kubectl describe cluster", async {
        let s = ShoalServer::start(API_ONLY).await;
        apply(&s, "fleet.yaml", &mk_fleet()).await;
        let out = s.kubectl_ok(&["describe", "cluster", "prod-us-1"]).await;
        let name = out
            .lines()
            .find(|l| l.starts_with("Name:"))
            .unwrap_or_else(|| panic!("no Name: line in:\n{out}"));
        assert_eq!(name.split_whitespace().nth(1), Some("prod-us-1"), "{out}");
        assert!(out.contains("Labels:"), "{out}");
        for label in ["env=prod", "region=us-east", "tier=2"] {
            assert!(out.contains(label), "missing label {label} in:\n{out}");
        }
        assert!(out.contains("Spec:"), "{out}");
        assert!(out.contains("Endpoint:"), "{out}");
        assert!(out.contains("https://prod-us-1.example.test:6443"), "{out}");
    })
    .await
}

#[tokio::test]
async fn a_deleted_cluster_is_not_found() {
    within(TEST_DEADLINE, "kubectl delete cluster", async {
        let s = ShoalServer::start(API_ONLY).await;
        apply(&s, "fleet.yaml", &mk_fleet()).await;
        let out = s.kubectl_ok(&["delete", "cluster", "dev-eu-1"]).await;
        assert_eq!(out.trim(), r#"cluster.shoal.io "dev-eu-1" deleted"#);
        let err = s.kubectl_fails(&["get", "cluster", "dev-eu-1"]).await;
        assert!(
            err.contains(r#"Error from server (NotFound): clusters.shoal.io "dev-eu-1" not found"#),
            "{err}"
        );
        let rest = parse_table(&s.kubectl_ok(&["get", "clusters"]).await);
        assert_eq!(rest.len(), 2, "only the deleted one is gone: {rest:?}");
        let err = s.kubectl_fails(&["delete", "cluster", "dev-eu-1"]).await;
        assert!(err.contains("NotFound"), "{err}");
    })
    .await
}

#[tokio::test]
async fn replacing_with_a_stale_resource_version_is_a_conflict() {
    within(
        TEST_DEADLINE,
        "kubectl replace with a stale resourceVersion",
        async {
            let s = ShoalServer::start(API_ONLY).await;
            apply(
                &s,
                "c.yaml",
                &mk_cluster_yaml("r-1", "prod", "eu-west", "1"),
            )
            .await;
            let old = s.kubectl_ok(&["get", "cluster", "r-1", "-o", "json"]).await;
            let old_rv = json(&old)["metadata"]["resourceVersion"].clone();
            s.kubectl_ok(&["label", "cluster", "r-1", "tier=2", "--overwrite"])
                .await;

            let stale = s.write_file("stale.json", &old);
            let err = s
                .kubectl_fails(&["replace", "-f", stale.to_str().expect("utf-8")])
                .await;
            assert!(err.contains("Conflict"), "{err}");
            assert!(err.contains("the object has been modified"), "{err}");

            let now = json(&s.kubectl_ok(&["get", "cluster", "r-1", "-o", "json"]).await);
            assert_eq!(
                now["metadata"]["labels"]["tier"], "2",
                "the stale write lost: {now}"
            );
            assert_ne!(now["metadata"]["resourceVersion"], old_rv);
        },
    )
    .await
}

#[tokio::test]
async fn patching_the_status_subresource_sets_the_ready_column() {
    within(TEST_DEADLINE, "kubectl patch --subresource=status", async {
        let s = ShoalServer::start(API_ONLY).await;
        apply(&s, "c.yaml", &mk_cluster_yaml("s-1", "prod", "eu-west", "1")).await;
        let patch = r#"{"status":{"observedGeneration":1,"conditions":[{"type":"Ready","status":"True","reason":"Reachable","message":"the API answers","lastTransitionTime":"2025-01-01T00:00:00Z"}]}}"#;
        let out = s
            .kubectl_ok(&[
                "patch",
                "cluster",
                "s-1",
                "--subresource=status",
                "--type=merge",
                "-p",
                patch,
            ])
            .await;
        assert_eq!(out.trim(), "cluster.shoal.io/s-1 patched");

        let rows = parse_table(&s.kubectl_ok(&["get", "clusters"]).await);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0]["READY"], "True", "{rows:?}");

        let got = json(&s.kubectl_ok(&["get", "cl", "s-1", "-o", "json"]).await);
        assert_eq!(got["metadata"]["generation"], 1, "status must not bump generation");
        assert_eq!(got["status"]["conditions"][0]["reason"], "Reachable", "{got}");

        // Status sent to the main resource is ignored, as in Kubernetes.
        s.kubectl_ok(&[
            "patch",
            "cluster",
            "s-1",
            "--type=merge",
            "-p",
            r#"{"status":{"conditions":[]}}"#,
        ])
        .await;
        let rows = parse_table(&s.kubectl_ok(&["get", "clusters"]).await);
        assert_eq!(rows[0]["READY"], "True", "{rows:?}");
    })
    .await
}

#[tokio::test]
async fn a_finalizer_holds_a_deleted_cluster_until_it_is_removed() {
    within(TEST_DEADLINE, "finalizers with kubectl delete", async {
        let s = ShoalServer::start(API_ONLY).await;
        let manifest = mk_cluster_yaml("f-1", "prod", "eu-west", "1").replace(
            "metadata:\n",
            "metadata:\n  finalizers:\n  - shoal.io/hold\n",
        );
        apply(&s, "f.yaml", &manifest).await;

        let out = s
            .kubectl_ok(&["delete", "cluster", "f-1", "--wait=false"])
            .await;
        assert!(out.contains(r#""f-1" deleted"#), "{out}");
        let held = json(&s.kubectl_ok(&["get", "cluster", "f-1", "-o", "json"]).await);
        assert!(
            held["metadata"]["deletionTimestamp"].is_string(),
            "the finalizer holds the object, marked for deletion: {held}"
        );
        assert_eq!(held["metadata"]["finalizers"][0], "shoal.io/hold", "{held}");

        s.kubectl_ok(&[
            "patch",
            "cluster",
            "f-1",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
        ])
        .await;
        let err = s.kubectl_fails(&["get", "cluster", "f-1"]).await;
        assert!(
            err.contains("NotFound"),
            "removing the last finalizer deletes: {err}"
        );
    })
    .await
}

#[tokio::test]
async fn a_chunked_get_pages_through_every_cluster() {
    within(TEST_DEADLINE, "kubectl get --chunk-size=2", async {
        let s = ShoalServer::start(API_ONLY).await;
        let manifest: Vec<String> = (1..=5)
            .map(|i| mk_cluster_yaml(&format!("page-{i}"), "prod", "eu-west", "1"))
            .collect();
        apply(&s, "pages.yaml", &manifest.join("---\n")).await;

        let r = s
            .kubectl(&["get", "clusters", "--chunk-size=2", "-v=6"])
            .await;
        assert!(r.status.success(), "{r:?}");
        let mut names: Vec<String> = parse_table(&r.stdout)
            .iter()
            .map(|row| row["NAME"].clone())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["page-1", "page-2", "page-3", "page-4", "page-5"],
            "{}",
            r.stdout
        );
        // -v=6 logs each request: three pages, the last two following continue tokens.
        let pages = r
            .stderr
            .lines()
            .filter(|l| l.contains("/apis/shoal.io/v1alpha1/clusters?") && l.contains("limit=2"))
            .count();
        let continued = r.stderr.lines().filter(|l| l.contains("continue=")).count();
        assert_eq!((pages, continued), (3, 2), "{}", r.stderr);
    })
    .await
}

#[tokio::test]
async fn kubectl_wait_returns_once_the_ready_condition_is_set() {
    within(TEST_DEADLINE, "kubectl wait --for=condition=Ready", async {
        let s = ShoalServer::start(API_ONLY).await;
        apply(&s, "c.yaml", &mk_cluster_yaml("wait-1", "prod", "eu-west", "1")).await;
        let waiter = s
            .kubectl_command(&[
                "wait",
                "--for=condition=Ready",
                "cluster/wait-1",
                "--timeout=20s",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn kubectl wait");
        // kubectl wait watches with a field selector on the name; set the condition
        // while it waits.
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.kubectl_ok(&[
            "patch",
            "cluster",
            "wait-1",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"conditions":[{"type":"Ready","status":"True","reason":"Up","message":"","lastTransitionTime":"2025-01-01T00:00:00Z"}]}}"#,
        ])
        .await;
        let out = within(
            Duration::from_secs(25),
            "kubectl wait never saw the Ready condition",
            waiter.wait_with_output(),
        )
        .await
        .expect("kubectl wait");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout.trim(), "cluster.shoal.io/wait-1 condition met");
    })
    .await
}

#[tokio::test]
async fn namespaces_can_be_created_from_a_file_listed_and_deleted() {
    within(
        TEST_DEADLINE,
        "kubectl create -f / get / delete namespace",
        async {
            let s = ShoalServer::start(API_ONLY).await;
            let rows = parse_table(&s.kubectl_ok(&["get", "namespaces"]).await);
            let names: Vec<&str> = rows.iter().map(|r| r["NAME"].as_str()).collect();
            assert_eq!(
                names,
                ["default", "kube-system", "shoal-system"],
                "{rows:?}"
            );
            assert!(rows.iter().all(|r| r["STATUS"] == "Active"), "{rows:?}");

            let f = s.write_file(
                "ns.yaml",
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n",
            );
            let out = s
                .kubectl_ok(&["create", "-f", f.to_str().expect("utf-8")])
                .await;
            assert_eq!(out.trim(), "namespace/team-a created");
            let out = s
                .kubectl_ok(&["get", "ns", "team-a", "-o", "jsonpath={.status.phase}"])
                .await;
            assert_eq!(out, "Active");
            let out = s.kubectl_ok(&["delete", "namespace", "team-a"]).await;
            assert_eq!(out.trim(), r#"namespace "team-a" deleted"#);
            let err = s.kubectl_fails(&["get", "ns", "team-a"]).await;
            assert!(err.contains("NotFound"), "{err}");
        },
    )
    .await
}

#[tokio::test]
async fn kubectl_create_namespace_works() {
    within(TEST_DEADLINE, "kubectl create namespace", async {
        let s = ShoalServer::start(API_ONLY).await;
        let r = s.kubectl(&["create", "namespace", "team-b"]).await;
        assert!(r.status.success(), "{}", r.stderr);
        assert_eq!(r.stdout.trim(), "namespace/team-b created");
        let out = s.kubectl_ok(&["get", "ns", "team-b", "-o", "name"]).await;
        assert_eq!(out.trim(), "namespace/team-b");
    })
    .await
}

#[tokio::test]
async fn the_default_namespace_cannot_be_deleted() {
    within(TEST_DEADLINE, "kubectl delete namespace default", async {
        let s = ShoalServer::start(API_ONLY).await;
        let err = s.kubectl_fails(&["delete", "namespace", "default"]).await;
        assert!(err.contains("Forbidden"), "{err}");
        let out = s.kubectl_ok(&["get", "ns", "default", "-o", "name"]).await;
        assert_eq!(out.trim(), "namespace/default");
    })
    .await
}

#[tokio::test]
async fn a_pipeline_with_a_cycle_or_an_unknown_task_is_refused_naming_the_fields() {
    within(TEST_DEADLINE, "kubectl apply of taskflow kinds", async {
        let s = ShoalServer::start(API_ONLY).await;
        let good = s.write_file(
            "expand.yaml",
            "apiVersion: shoal.io/v1alpha1\nkind: Task\nmetadata: {name: step}\nspec: {executor: noop}\n\
             ---\napiVersion: shoal.io/v1alpha1\nkind: Pipeline\nmetadata: {name: expand}\nspec:\n  tasks:\n\
             \x20 - {name: expand, taskRef: {name: step}}\n\
             \x20 - {name: initialize, taskRef: {name: step}, runAfter: [expand]}\n\
             ---\napiVersion: shoal.io/v1alpha1\nkind: PipelineRun\nmetadata: {name: expand-1}\n\
             spec: {pipelineRef: {name: expand}}\n",
        );
        let mut args = vec!["apply", "-f", good.to_str().expect("utf-8 temp path")];
        args.extend_from_slice(apply_flags());
        let out = s.kubectl_ok(&args).await;
        assert!(out.contains("pipelinerun.shoal.io/expand-1 created"), "{out}");
        let runs = s.kubectl_ok(&["get", "pipelineruns", "-n", "default"]).await;
        assert_eq!(
            common::table_header(&runs),
            ["NAME", "SUCCEEDED", "REASON", "PROGRESS", "STARTTIME", "COMPLETIONTIME", "AGE"],
            "{runs}"
        );

        let cyclic = s.write_file(
            "cyc.yaml",
            "apiVersion: shoal.io/v1alpha1\nkind: Pipeline\nmetadata: {name: cyc}\nspec:\n  tasks:\n\
             \x20 - {name: a, taskRef: {name: step}, runAfter: [c]}\n\
             \x20 - {name: b, taskRef: {name: step}, runAfter: [a]}\n\
             \x20 - {name: c, taskRef: {name: step}, runAfter: [b, nope]}\n",
        );
        let mut args = vec!["apply", "-f", cyclic.to_str().expect("utf-8 temp path")];
        args.extend_from_slice(apply_flags());
        let err = s.kubectl_fails(&args).await;
        assert!(err.contains("spec.tasks[2].runAfter[1]"), "{err}");
        assert!(err.contains("dependency cycle a -> c -> b -> a"), "{err}");
        let gone = s.kubectl_fails(&["get", "pipeline", "cyc"]).await;
        assert!(gone.contains("NotFound"), "nothing was created: {gone}");
    })
    .await
}
