//! Server-side apply against a real `shoal serve`: `kubectl apply --server-side` (create,
//! removal of a dropped field, conflicts between managers, `--force-conflicts`, managed
//! fields in `-o yaml`), kube-rs' `Patch::Apply` on the object and on its status, the
//! bad inputs an apply can carry, each a 4xx naming the problem, and managedFields a
//! client sends, which the server ignores.

use crate::common;

use common::{CLUSTERS, ShoalServer, TEST_DEADLINE, apply_flags, mk_cluster, within};
use kube::api::{Api, Patch, PatchParams};
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use shoal_core::kinds::Cluster;

/// The API alone: the cluster prober would write status and own fields of its own.
const API_ONLY: &[&str] = &["--no-controllers"];

const APPLY: &str = "application/apply-patch+yaml";

/// A Cluster manifest with `labels` (`key: value` lines) and `server`.
fn cluster_yaml(name: &str, labels: &[(&str, &str)], server: &str) -> String {
    let labels: String = labels
        .iter()
        .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
        .collect();
    format!(
        "apiVersion: shoal.io/v1alpha1\nkind: Cluster\nmetadata:\n  name: {name}\n  labels:\n{labels}spec:\n  endpoint:\n    server: {server}\n"
    )
}

/// `kubectl apply --server-side -f FILE` with `extra` flags, written to the scratch dir.
async fn ssa(s: &ShoalServer, file: &str, manifest: &str, extra: &[&str]) -> common::Run {
    let path = s.write_file(file, manifest);
    let path = path.to_str().expect("utf-8 temp path");
    let mut args = vec!["apply", "--server-side", "-f", path];
    args.extend_from_slice(extra);
    s.kubectl(&args).await
}

async fn get_json(s: &ShoalServer, name: &str) -> Value {
    let out = s
        .kubectl_ok(&[
            "get",
            "cluster",
            name,
            "-o",
            "json",
            "--show-managed-fields",
        ])
        .await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// The managers of an object, as `manager/operation`.
fn managers(obj: &Value) -> Vec<String> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    format!(
                        "{}/{}",
                        e["manager"].as_str().unwrap_or(""),
                        e["operation"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn kubectl_server_side_apply_creates_removes_conflicts_and_forces() {
    within(TEST_DEADLINE, "kubectl apply --server-side", async {
        let s = ShoalServer::start(API_ONLY).await;
        let server = "https://10.0.0.1:6443";
        let v1 = cluster_yaml("ssa-1", &[("env", "prod"), ("team", "infra")], server);
        let r = ssa(&s, "v1.yaml", &v1, &[]).await;
        assert!(r.status.success(), "{}\n{}", r.stderr, s.log());
        assert!(r.stdout.contains("serverside-applied"), "{}", r.stdout);
        let got = get_json(&s, "ssa-1").await;
        assert_eq!(
            got["metadata"]["labels"],
            json!({"env": "prod", "team": "infra"})
        );
        assert_eq!(got["spec"]["endpoint"]["server"], server);
        assert_eq!(managers(&got), ["kubectl/Apply"], "{got}");
        assert_eq!(
            got["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:metadata": {"f:labels": {"f:env": {}, "f:team": {}}},
                   "f:spec": {"f:endpoint": {"f:server": {}}}})
        );

        // Dropping a label from the file removes it from the object.
        let v2 = cluster_yaml("ssa-1", &[("env", "prod")], server);
        let r = ssa(&s, "v2.yaml", &v2, &[]).await;
        assert!(r.status.success(), "{}", r.stderr);
        let got = get_json(&s, "ssa-1").await;
        assert_eq!(got["metadata"]["labels"], json!({"env": "prod"}), "{got}");

        // Another manager changing a field kubectl owns is refused, naming the field.
        let other = cluster_yaml("ssa-1", &[("owner", "other")], "https://10.0.0.2:6443");
        let r = ssa(&s, "other.yaml", &other, &["--field-manager", "other"]).await;
        assert!(
            !r.status.success(),
            "the conflicting apply succeeded: {}",
            r.stdout
        );
        assert!(r.stderr.contains("conflict"), "{}", r.stderr);
        assert!(r.stderr.contains(".spec.endpoint.server"), "{}", r.stderr);
        assert!(
            r.stderr.contains("\"kubectl\""),
            "names the owner: {}",
            r.stderr
        );
        let got = get_json(&s, "ssa-1").await;
        assert_eq!(got["spec"]["endpoint"]["server"], server, "nothing changed");
        assert!(got["metadata"]["labels"].get("owner").is_none(), "{got}");

        // --force-conflicts takes the field.
        let r = ssa(
            &s,
            "other.yaml",
            &other,
            &["--field-manager", "other", "--force-conflicts"],
        )
        .await;
        assert!(r.status.success(), "{}", r.stderr);
        let got = get_json(&s, "ssa-1").await;
        assert_eq!(got["spec"]["endpoint"]["server"], "https://10.0.0.2:6443");
        assert_eq!(
            got["metadata"]["labels"],
            json!({"env": "prod", "owner": "other"})
        );
        assert_eq!(managers(&got), ["kubectl/Apply", "other/Apply"], "{got}");
        assert_eq!(
            got["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:metadata": {"f:labels": {"f:env": {}}}}),
            "kubectl lost the forced field"
        );

        // kubectl hides managed fields unless asked.
        let plain = s
            .kubectl_ok(&["get", "cluster", "ssa-1", "-o", "yaml"])
            .await;
        assert!(!plain.contains("managedFields"), "{plain}");
        let shown = s
            .kubectl_ok(&[
                "get",
                "cluster",
                "ssa-1",
                "-o",
                "yaml",
                "--show-managed-fields",
            ])
            .await;
        assert!(shown.contains("managedFields"), "{shown}");
        assert!(shown.contains("manager: kubectl"), "{shown}");
        assert!(shown.contains("manager: other"), "{shown}");
        assert!(shown.contains("operation: Apply"), "{shown}");
    })
    .await
}

#[tokio::test]
async fn a_value_edited_by_another_manager_conflicts_with_the_next_apply() {
    within(
        TEST_DEADLINE,
        "kubectl label, then apply --server-side",
        async {
            let s = ShoalServer::start(API_ONLY).await;
            let v1 = cluster_yaml("ssa-2", &[("env", "prod")], "https://10.0.0.1:6443");
            let r = ssa(&s, "v1.yaml", &v1, &[]).await;
            assert!(r.status.success(), "{}", r.stderr);
            s.kubectl_ok(&["label", "cluster", "ssa-2", "env=dev", "--overwrite"])
                .await;
            let got = get_json(&s, "ssa-2").await;
            assert_eq!(
                managers(&got),
                ["kubectl/Apply", "kubectl-label/Update"],
                "{got}"
            );
            assert_eq!(
                got["metadata"]["managedFields"][0]["fieldsV1"],
                json!({"f:spec": {"f:endpoint": {"f:server": {}}}}),
                "kubectl lost env to kubectl-label"
            );
            let r = ssa(&s, "v1.yaml", &v1, &[]).await;
            assert!(
                !r.status.success(),
                "re-applying the old value should conflict"
            );
            assert!(r.stderr.contains(".metadata.labels.env"), "{}", r.stderr);
            assert!(r.stderr.contains("kubectl-label"), "{}", r.stderr);
            let r = ssa(&s, "v1.yaml", &v1, &["--force-conflicts"]).await;
            assert!(r.status.success(), "{}", r.stderr);
            assert_eq!(
                get_json(&s, "ssa-2").await["metadata"]["labels"]["env"],
                "prod"
            );
        },
    )
    .await
}

#[tokio::test]
async fn client_side_apply_then_server_side_apply_takes_over_the_fields_it_set() {
    within(
        TEST_DEADLINE,
        "kubectl apply, then apply --server-side",
        async {
            let s = ShoalServer::start(API_ONLY).await;
            let v1 = cluster_yaml("ssa-3", &[("env", "prod")], "https://10.0.0.1:6443");
            let path = s.write_file("v1.yaml", &v1);
            let path = path.to_str().expect("utf-8 temp path");
            let mut args = vec!["apply", "-f", path];
            args.extend_from_slice(apply_flags());
            s.kubectl_ok(&args).await;
            let got = get_json(&s, "ssa-3").await;
            assert_eq!(
                managers(&got),
                ["kubectl-client-side-apply/Update"],
                "{got}"
            );

            let r = ssa(&s, "v1.yaml", &v1, &[]).await;
            assert!(r.status.success(), "{}\n{}", r.stderr, s.log());
            let got = get_json(&s, "ssa-3").await;
            assert!(
                managers(&got).contains(&"kubectl/Apply".to_string()),
                "{got}"
            );
            assert_eq!(got["metadata"]["labels"], json!({"env": "prod"}));

            // Changing a field the client-side apply set (it is in the last-applied annotation)
            // is no conflict for kubectl, as with kube-apiserver; client-side apply still works.
            let v2 = cluster_yaml(
                "ssa-3",
                &[("env", "staging"), ("tier", "1")],
                "https://10.0.0.1:6443",
            );
            let r = ssa(&s, "v2.yaml", &v2, &[]).await;
            assert!(r.status.success(), "{}", r.stderr);
            let got = get_json(&s, "ssa-3").await;
            assert_eq!(
                got["metadata"]["labels"],
                json!({"env": "staging", "tier": "1"})
            );
            // Another manager gets no such pass.
            let v3 = cluster_yaml("ssa-3", &[("env", "dev")], "https://10.0.0.1:6443");
            let r = ssa(&s, "v3.yaml", &v3, &["--field-manager", "other"]).await;
            assert!(!r.status.success(), "other took env without force");
            s.kubectl_ok(&args).await;
        },
    )
    .await
}

#[tokio::test]
async fn kube_rs_apply_creates_updates_and_conflicts_with_reason_conflict() {
    within(TEST_DEADLINE, "kube-rs Patch::Apply", async {
        let s = ShoalServer::start(API_ONLY).await;
        let api: Api<Cluster> = Api::all(s.client());
        let mut c = mk_cluster("kr-1", &[("env", "prod")]);
        let pp = PatchParams::apply("my-controller").force();
        let created = api
            .patch("kr-1", &pp, &Patch::Apply(&c))
            .await
            .expect("apply creates");
        assert_eq!(created.metadata.generation, Some(1));
        assert!(created.metadata.uid.is_some());

        c.spec.endpoint.server = "https://kr-1.other.test:6443".into();
        let updated = api
            .patch("kr-1", &pp, &Patch::Apply(&c))
            .await
            .expect("apply updates");
        assert_eq!(updated.spec.endpoint.server, "https://kr-1.other.test:6443");
        assert_eq!(updated.metadata.generation, Some(2));
        let mf = updated.metadata.managed_fields.clone().unwrap_or_default();
        assert_eq!(mf.len(), 1, "{mf:?}");
        assert_eq!(mf[0].manager.as_deref(), Some("my-controller"));
        assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
        assert_eq!(mf[0].fields_type.as_deref(), Some("FieldsV1"));
        assert!(mf[0].time.is_some());

        // Re-applying the same configuration changes nothing.
        let again = api
            .patch("kr-1", &pp, &Patch::Apply(&c))
            .await
            .expect("re-apply");
        assert_eq!(
            again.metadata.resource_version,
            updated.metadata.resource_version
        );

        let mut theirs = mk_cluster("kr-1", &[]);
        theirs.spec.endpoint.server = "https://elsewhere.test:6443".into();
        let err = api
            .patch("kr-1", &PatchParams::apply("x"), &Patch::Apply(&theirs))
            .await
            .expect_err("a conflicting apply without force");
        let kube::Error::Api(status) = err else {
            panic!("expected an API error, got {err:?}");
        };
        assert_eq!(status.code, 409, "{status:?}");
        assert_eq!(status.reason, "Conflict", "{status:?}");
        assert!(
            status.message.contains(".spec.endpoint.server"),
            "{status:?}"
        );
        assert!(status.message.contains("my-controller"), "{status:?}");
        assert_eq!(
            api.get("kr-1").await.expect("get").spec.endpoint.server,
            "https://kr-1.other.test:6443"
        );
    })
    .await
}

#[tokio::test]
async fn status_is_applied_through_the_status_subresource_only() {
    within(TEST_DEADLINE, "kube-rs patch_status with Patch::Apply", async {
        let s = ShoalServer::start(API_ONLY).await;
        let api: Api<Cluster> = Api::all(s.client());
        let pp = PatchParams::apply("prober").force();
        api.patch("st-1", &pp, &Patch::Apply(&mk_cluster("st-1", &[])))
            .await
            .expect("apply creates");
        let status = json!({"apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "st-1"},
            "status": {"nodeCount": 3, "conditions": [{"type": "Ready", "status": "True",
                "lastTransitionTime": "2026-01-01T00:00:00Z", "reason": "Probed", "message": "ok"}]}});
        let got = api
            .patch_status("st-1", &pp, &Patch::Apply(&status))
            .await
            .expect("apply status");
        let st = got.status.expect("status was written");
        assert_eq!(st.node_count, Some(3));
        assert_eq!(st.conditions[0].type_, "Ready");
        assert_eq!(got.metadata.generation, Some(1), "status is no spec change");
        let mf = got.metadata.managed_fields.unwrap_or_default();
        let entry = mf
            .iter()
            .find(|e| e.subresource.as_deref() == Some("status"))
            .unwrap_or_else(|| panic!("no status entry in {mf:?}"));
        assert_eq!(entry.manager.as_deref(), Some("prober"));

        // Dropping nodeCount from the applied status removes it.
        let mut less = status.clone();
        less["status"].as_object_mut().expect("map").remove("nodeCount");
        let got = api.patch_status("st-1", &pp, &Patch::Apply(&less)).await.expect("re-apply");
        assert_eq!(got.status.expect("status").node_count, None);

        // Status applied to the main resource is ignored, as an update would.
        let mut main = serde_json::to_value(mk_cluster("st-1", &[])).expect("json");
        main["status"] = json!({"nodeCount": 99});
        let got = api.patch("st-1", &pp, &Patch::Apply(&main)).await.expect("apply main");
        assert_ne!(got.status.and_then(|s| s.node_count), Some(99));
    })
    .await
}

async fn apply_raw(s: &ShoalServer, name: &str, query: &str, body: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .patch(s.at(&format!("{CLUSTERS}/{name}{query}")))
        .header(CONTENT_TYPE, APPLY)
        .body(body.to_string())
        .send()
        .await
        .expect("send the apply");
    let code = r.status().as_u16();
    let text = r.text().await.expect("body");
    (
        code,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
    )
}

#[tokio::test]
async fn bad_applies_get_a_4xx_naming_the_problem_and_change_nothing() {
    within(TEST_DEADLINE, "bad server-side applies", async {
        let s = ShoalServer::start(API_ONLY).await;
        let good = cluster_yaml("bad-1", &[("env", "prod")], "https://10.0.0.1:6443");
        let q = "?fieldManager=t";

        let (code, st) = apply_raw(&s, "bad-1", "", &good).await;
        assert_eq!(
            (code, st["reason"].as_str()),
            (422, Some("Invalid")),
            "{st}"
        );
        assert_eq!(st["details"]["causes"][0]["field"], "fieldManager", "{st}");

        let wrong_kind = good.replace("kind: Cluster", "kind: ClusterGroup");
        let (code, st) = apply_raw(&s, "bad-1", q, &wrong_kind).await;
        assert_eq!(code, 400, "{st}");
        assert!(
            st["message"].as_str().unwrap_or("").contains("kind"),
            "{st}"
        );

        let wrong_version = good.replace("shoal.io/v1alpha1", "shoal.io/v9");
        let (code, st) = apply_raw(&s, "bad-1", q, &wrong_version).await;
        assert_eq!(code, 400, "{st}");
        assert!(
            st["message"].as_str().unwrap_or("").contains("API version"),
            "{st}"
        );

        let (code, st) = apply_raw(&s, "other-name", q, &good).await;
        assert_eq!(code, 400, "{st}");
        assert!(
            st["message"].as_str().unwrap_or("").contains("name"),
            "{st}"
        );

        let (code, st) = apply_raw(&s, "bad-1", q, "metadata: [unclosed").await;
        assert_eq!(code, 400, "{st}");
        assert!(
            st["message"].as_str().unwrap_or("").contains("YAML"),
            "{st}"
        );

        let no_endpoint =
            "apiVersion: shoal.io/v1alpha1\nkind: Cluster\nmetadata:\n  name: bad-1\nspec: {}\n";
        let (code, st) = apply_raw(&s, "bad-1", q, no_endpoint).await;
        assert_eq!(
            (code, st["reason"].as_str()),
            (422, Some("Invalid")),
            "{st}"
        );
        assert!(
            st["message"]
                .as_str()
                .unwrap_or("")
                .contains("spec.endpoint"),
            "{st}"
        );

        let (code, st) = apply_raw(&s, "bad-1", "?fieldManager=t&force=maybe", &good).await;
        assert_eq!(code, 400, "{st}");
        assert!(
            st["message"].as_str().unwrap_or("").contains("force"),
            "{st}"
        );

        // None of them created anything; a dry run does not either.
        let (code, _) = apply_raw(&s, "bad-1", "?fieldManager=t&dryRun=All", &good).await;
        assert_eq!(code, 201);
        let r = reqwest::get(s.at(&format!("{CLUSTERS}/bad-1")))
            .await
            .expect("get");
        assert_eq!(r.status(), 404);

        // The good one does, and strict field validation is honoured on the next.
        let (code, st) = apply_raw(&s, "bad-1", q, &good).await;
        assert_eq!(code, 201, "{st}");
        let unknown = good.replace("spec:\n", "spec:\n  bogus: 1\n");
        let (code, st) = apply_raw(
            &s,
            "bad-1",
            "?fieldManager=t&fieldValidation=Strict",
            &unknown,
        )
        .await;
        assert_eq!(code, 400, "{st}");
        assert!(
            st["message"].as_str().unwrap_or("").contains("spec.bogus"),
            "{st}"
        );
        let (code, st) = apply_raw(
            &s,
            "bad-1",
            q,
            &good.replace("https://10.0.0.1:6443", "nope"),
        )
        .await;
        assert_eq!(
            (code, st["reason"].as_str()),
            (422, Some("Invalid")),
            "{st}"
        );
        let got: Value = reqwest::get(s.at(&format!("{CLUSTERS}/bad-1")))
            .await
            .expect("get")
            .json()
            .await
            .expect("JSON");
        assert_eq!(
            got["spec"]["endpoint"]["server"], "https://10.0.0.1:6443",
            "{got}"
        );
    })
    .await
}

#[tokio::test]
async fn managed_fields_sent_by_a_client_are_ignored() {
    within(TEST_DEADLINE, "forging managedFields", async {
        let s = ShoalServer::start(API_ONLY).await;
        let good = cluster_yaml("forge-1", &[("env", "prod")], "https://10.0.0.1:6443");
        let (code, _) = apply_raw(&s, "forge-1", "?fieldManager=owner", &good).await;
        assert_eq!(code, 201);
        let forged = json!({"metadata": {
            "labels": {"team": "a"},
            "managedFields": [{"manager": "forger", "operation": "Apply",
                "apiVersion": "shoal.io/v1alpha1", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:endpoint": {"f:server": {}}}}}]}});
        let r = reqwest::Client::new()
            .patch(s.at(&format!("{CLUSTERS}/forge-1?fieldManager=editor")))
            .header(CONTENT_TYPE, "application/merge-patch+json")
            .body(forged.to_string())
            .send()
            .await
            .expect("send the patch");
        assert_eq!(r.status(), 200);
        let got = get_json(&s, "forge-1").await;
        assert_eq!(
            managers(&got),
            ["owner/Apply", "editor/Update"],
            "the forged entry was dropped, the edit recorded: {got}"
        );
        assert_eq!(
            got["metadata"]["managedFields"][1]["fieldsV1"],
            json!({"f:metadata": {"f:labels": {"f:team": {}}}})
        );
        // The owner still owns the server: another applier conflicts with it.
        let theirs = cluster_yaml("forge-1", &[], "https://10.0.0.9:6443");
        let (code, st) = apply_raw(&s, "forge-1", "?fieldManager=forger", &theirs).await;
        assert_eq!(
            (code, st["reason"].as_str()),
            (409, Some("Conflict")),
            "{st}"
        );
        assert_eq!(
            st["details"]["causes"][0],
            json!({"reason": "FieldManagerConflict", "field": ".spec.endpoint.server",
                   "message": "conflict with \"owner\""}),
            "{st}"
        );
    })
    .await
}
