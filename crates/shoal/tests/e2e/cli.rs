//! The `shoal` CLI verbs (`apply`, `get`, `describe`, `delete`) against a real server,
//! checked on what a user reads: their stdout, stderr and exit code.

use crate::common;

use common::{ShoalServer, TEST_DEADLINE, mk_cluster_yaml, parse_table, table_header, within};
use serde_json::Value;

/// Two clusters in one multi-document manifest.
fn mk_two() -> String {
    format!(
        "---\n{}---\n{}",
        mk_cluster_yaml("cli-1", "prod", "eu-west", "1"),
        mk_cluster_yaml("cli-2", "dev", "us-east", "3")
    )
}

/// Starts a server and applies [`mk_two`] with the CLI.
async fn mk_server_with_two() -> ShoalServer {
    let s = ShoalServer::start(&[]).await;
    let f = s.write_file("two.yaml", &mk_two());
    s.shoal_ok(&["apply", "-f", f.to_str().expect("utf-8")])
        .await;
    s
}

#[tokio::test]
async fn apply_creates_each_document_then_reports_it_unchanged() {
    within(TEST_DEADLINE, "shoal apply -f", async {
        let s = ShoalServer::start(&[]).await;
        let f = s.write_file("two.yaml", &mk_two());
        let path = f.to_str().expect("utf-8");

        let out = s.shoal_ok(&["apply", "-f", path]).await;
        assert_eq!(
            out,
            "cluster.shoal.io/cli-1 created\ncluster.shoal.io/cli-2 created\n"
        );
        let out = s.shoal_ok(&["apply", "-f", path]).await;
        assert_eq!(
            out,
            "cluster.shoal.io/cli-1 unchanged\ncluster.shoal.io/cli-2 unchanged\n"
        );

        s.write_file("two.yaml", &mk_two().replace("us-east", "ap-south"));
        let out = s.shoal_ok(&["apply", "-f", path]).await;
        assert_eq!(
            out,
            "cluster.shoal.io/cli-1 unchanged\ncluster.shoal.io/cli-2 configured\n"
        );
        let region = s.shoal_ok(&["get", "cl", "cli-2", "-o", "json"]).await;
        let v: Value = serde_json::from_str(&region).expect("JSON");
        assert_eq!(v["metadata"]["labels"]["region"], "ap-south", "{v}");
    })
    .await
}

#[tokio::test]
async fn get_clusters_prints_a_table_with_the_attribute_columns() {
    within(TEST_DEADLINE, "shoal get clusters", async {
        let s = mk_server_with_two().await;
        let out = s.shoal_ok(&["get", "clusters"]).await;
        assert_eq!(
            table_header(&out),
            ["NAME", "ENV", "REGION", "TIER", "READY", "AGE"],
            "{out}"
        );
        let rows = parse_table(&out);
        assert_eq!(rows.len(), 2, "{out}");
        assert_eq!(
            (
                &*rows[0]["NAME"],
                &*rows[0]["ENV"],
                &*rows[0]["REGION"],
                &*rows[0]["TIER"]
            ),
            ("cli-1", "prod", "eu-west", "1"),
            "{out}"
        );
        assert_eq!(rows[1]["NAME"], "cli-2", "{out}");
        assert_eq!(rows[1]["READY"], "<none>", "{out}");

        let out = s.shoal_ok(&["get", "cl", "-l", "env=dev"]).await;
        let rows = parse_table(&out);
        assert_eq!(rows.len(), 1, "{out}");
        assert_eq!(rows[0]["NAME"], "cli-2", "{out}");

        let out = s.shoal_ok(&["get", "cl", "-o", "wide"]).await;
        assert!(table_header(&out).contains(&"SERVER".to_string()), "{out}");
        assert!(out.contains("https://cli-1.example.test:6443"), "{out}");

        let out = s
            .shoal_ok(&["get", "clusters.shoal.io", "-o", "name"])
            .await;
        assert_eq!(out, "cluster.shoal.io/cli-1\ncluster.shoal.io/cli-2\n");
    })
    .await
}

#[tokio::test]
async fn get_one_cluster_as_yaml_prints_the_object() {
    within(TEST_DEADLINE, "shoal get cl NAME -o yaml", async {
        let s = mk_server_with_two().await;
        let out = s.shoal_ok(&["get", "cl", "cli-1", "-o", "yaml"]).await;
        for needle in [
            "apiVersion: shoal.io/v1alpha1",
            "kind: Cluster",
            "name: cli-1",
            "env: prod",
            "server: https://cli-1.example.test:6443",
        ] {
            assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
        }
        assert!(!out.contains("cli-2"), "only the named object: {out}");
        assert!(
            !out.contains("kind: List"),
            "a single object, not a list: {out}"
        );
    })
    .await
}

#[tokio::test]
async fn describe_prints_name_labels_and_spec() {
    within(TEST_DEADLINE, "shoal describe cl NAME", async {
        let s = mk_server_with_two().await;
        let out = s.shoal_ok(&["describe", "cl", "cli-2"]).await;
        let first = out.lines().next().unwrap_or("");
        assert_eq!(
            first.split_whitespace().collect::<Vec<_>>(),
            ["Name:", "cli-2"],
            "{out}"
        );
        assert!(out.contains("Labels:       env=dev\n"), "{out}");
        assert!(out.contains("region=us-east"), "{out}");
        assert!(out.contains("Kind:         Cluster"), "{out}");
        assert!(
            out.contains("Spec:\n  Endpoint:\n    Server:  https://cli-2.example.test:6443"),
            "{out}"
        );
    })
    .await
}

#[tokio::test]
async fn delete_removes_the_cluster() {
    within(TEST_DEADLINE, "shoal delete cl NAME", async {
        let s = mk_server_with_two().await;
        let out = s.shoal_ok(&["delete", "cl", "cli-1"]).await;
        assert_eq!(out, "cluster.shoal.io \"cli-1\" deleted\n");
        let out = s.shoal_ok(&["get", "clusters", "-o", "name"]).await;
        assert_eq!(out, "cluster.shoal.io/cli-2\n");

        let f = s.write_file("two.yaml", &mk_two());
        let r = s.shoal(&["delete", "-f", f.to_str().expect("utf-8")]).await;
        assert!(!r.status.success(), "cli-1 is already gone: {r:?}");
        assert!(r.stderr.contains("Error from server (NotFound)"), "{r:?}");
    })
    .await
}

#[tokio::test]
async fn errors_print_the_server_reason_and_exit_non_zero() {
    within(TEST_DEADLINE, "shoal CLI errors", async {
        let s = ShoalServer::start(&[]).await;
        let r = s.shoal(&["get", "cl", "nope"]).await;
        assert_eq!(r.status.code(), Some(1), "{r:?}");
        assert!(
            r.stderr
                .contains(r#"Error from server (NotFound): clusters.shoal.io "nope" not found"#),
            "{r:?}"
        );
        assert!(r.stdout.is_empty(), "{r:?}");

        let r = s.shoal(&["describe", "cluster", "nope"]).await;
        assert!(!r.status.success(), "{r:?}");
        assert!(r.stderr.contains("Error from server (NotFound)"), "{r:?}");

        let r = s.shoal(&["delete", "cl", "nope"]).await;
        assert!(!r.status.success(), "{r:?}");
        assert!(r.stderr.contains("Error from server (NotFound)"), "{r:?}");

        let bad = s.write_file("bad.yaml", &mk_cluster_yaml("Bad_Name", "prod", "eu", "1"));
        let r = s
            .shoal(&["apply", "-f", bad.to_str().expect("utf-8")])
            .await;
        assert!(!r.status.success(), "{r:?}");
        assert!(r.stderr.contains("Error from server (Invalid)"), "{r:?}");
        assert!(r.stderr.contains("metadata.name"), "{r:?}");

        let unknown = s.write_file(
            "unknown.yaml",
            &format!(
                "{}  colour: red\n",
                mk_cluster_yaml("u-1", "prod", "eu", "1")
            ),
        );
        let r = s
            .shoal(&["apply", "-f", unknown.to_str().expect("utf-8")])
            .await;
        assert!(!r.status.success(), "{r:?}");
        assert!(r.stderr.contains("Error from server (BadRequest)"), "{r:?}");
        assert!(
            r.stderr.contains(r#"unknown field \"spec.colour\""#)
                || r.stderr.contains(r#"unknown field "spec.colour""#),
            "{r:?}"
        );

        let r = s.shoal(&["get", "widgets"]).await;
        assert!(!r.status.success(), "{r:?}");
        assert!(r.stderr.contains("doesn't have a resource type"), "{r:?}");

        let out = s.shoal_ok(&["get", "clusters", "-o", "name"]).await;
        assert_eq!(out, "", "none of the failed applies created anything");
    })
    .await
}
