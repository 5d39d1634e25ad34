//! Bad requests against the real binary: each gets the right 4xx Kubernetes `Status`
//! (code, reason, and a message or cause that names the problem), and the server stays
//! healthy afterwards.

use crate::common;

use common::{CLUSTERS, ShoalServer, TEST_DEADLINE, mk_cluster_json, within};
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

const JSON: &str = "application/json";

/// Asserts `resp` is a `Status` failure with `code` and `reason`; returns it.
async fn expect_status(resp: reqwest::Response, code: u16, reason: &str) -> Value {
    let http_code = resp.status().as_u16();
    let text = resp.text().await.expect("read the response body");
    assert_eq!(http_code, code, "HTTP status; body: {text}");
    let st: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not a JSON Status ({e}): {text}"));
    assert_eq!(st["kind"], "Status", "{st}");
    assert_eq!(st["apiVersion"], "v1", "{st}");
    assert_eq!(st["status"], "Failure", "{st}");
    assert_eq!(st["code"], code, "{st}");
    assert_eq!(st["reason"], reason, "{st}");
    st
}

fn message(st: &Value) -> &str {
    st["message"].as_str().unwrap_or("")
}

/// The `field`s of `details.causes`.
fn cause_fields(st: &Value) -> Vec<&str> {
    st["details"]["causes"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["field"].as_str()).collect())
        .unwrap_or_default()
}

/// Asserts an `Invalid` status names `field` among its causes and in its message.
fn assert_invalid_field(st: &Value, field: &str) {
    assert!(
        cause_fields(st).contains(&field),
        "no cause for {field}: {st}"
    );
    assert!(message(st).contains(field), "{st}");
    assert_eq!(st["details"]["kind"], "Cluster", "{st}");
    assert_eq!(st["details"]["group"], "shoal.io", "{st}");
}

async fn assert_still_healthy(s: &ShoalServer) {
    let r = reqwest::get(s.at("/healthz"))
        .await
        .expect("GET /healthz after the bad request");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "ok");
    let r = reqwest::get(s.at(CLUSTERS)).await.expect("list clusters");
    assert_eq!(r.status(), 200, "the API still answers");
}

async fn post(
    s: &ShoalServer,
    path: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    reqwest::Client::new()
        .post(s.at(path))
        .header(CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await
        .expect("send the request")
}

async fn post_json(s: &ShoalServer, body: &Value) -> reqwest::Response {
    post(s, CLUSTERS, JSON, body.to_string()).await
}

async fn patch(s: &ShoalServer, name: &str, content_type: &str, body: &str) -> reqwest::Response {
    reqwest::Client::new()
        .patch(s.at(&format!("{CLUSTERS}/{name}")))
        .header(CONTENT_TYPE, content_type)
        .body(body.to_string())
        .send()
        .await
        .expect("send the patch")
}

/// Lists clusters with one query parameter, URL-encoded.
async fn list_with(s: &ShoalServer, key: &str, value: &str) -> reqwest::Response {
    let url = reqwest::Url::parse_with_params(&s.at(CLUSTERS), [(key, value)]).expect("a URL");
    reqwest::get(url).await.expect("list")
}

/// A Cluster body with `edit` merged into it.
fn mk_body(edit: Value) -> Value {
    let mut v = mk_cluster_json("c-1", "prod");
    merge(&mut v, edit);
    v
}

fn merge(doc: &mut Value, patch: Value) {
    match (doc, patch) {
        (Value::Object(d), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    d.remove(&k);
                } else {
                    merge(d.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        (d, p) => *d = p,
    }
}

#[tokio::test]
async fn malformed_json_is_a_bad_request() {
    within(TEST_DEADLINE, "POST malformed JSON", async {
        let s = ShoalServer::start(&[]).await;
        let st = expect_status(
            post(
                &s,
                CLUSTERS,
                JSON,
                r#"{"apiVersion": "shoal.io/v1alpha1", "kind": "#,
            )
            .await,
            400,
            "BadRequest",
        )
        .await;
        assert!(message(&st).contains("JSON"), "{st}");
        assert_still_healthy(&s).await;
    })
    .await
}

#[tokio::test]
async fn malformed_yaml_is_a_bad_request() {
    within(TEST_DEADLINE, "POST malformed YAML", async {
        let s = ShoalServer::start(&[]).await;
        let body = "apiVersion: shoal.io/v1alpha1\nkind: Cluster\nmetadata: {name: [c-1\n";
        let st = expect_status(post(&s, CLUSTERS, "application/yaml", body).await, 400, "BadRequest").await;
        assert!(message(&st).contains("YAML"), "{st}");

        // The same content type with a well-formed document works.
        let good = "apiVersion: shoal.io/v1alpha1\nkind: Cluster\nmetadata:\n  name: y-1\nspec:\n  endpoint:\n    server: https://y.example.test\n";
        let r = post(&s, CLUSTERS, "application/yaml", good).await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
        assert_still_healthy(&s).await;
    })
    .await
}

#[tokio::test]
async fn a_wrong_api_version_or_kind_is_a_bad_request() {
    within(
        TEST_DEADLINE,
        "POST with the wrong apiVersion / kind",
        async {
            let s = ShoalServer::start(&[]).await;
            let st = expect_status(
                post_json(&s, &mk_body(json!({"apiVersion": "shoal.io/v2"}))).await,
                400,
                "BadRequest",
            )
            .await;
            assert!(message(&st).contains("shoal.io/v2"), "{st}");
            assert!(message(&st).contains("shoal.io/v1alpha1"), "{st}");

            let st = expect_status(
                post_json(&s, &mk_body(json!({"kind": "ClusterGroup"}))).await,
                400,
                "BadRequest",
            )
            .await;
            assert!(message(&st).contains("ClusterGroup"), "{st}");

            let st = expect_status(
                post_json(&s, &mk_body(json!({"kind": null}))).await,
                400,
                "BadRequest",
            )
            .await;
            assert!(message(&st).contains("Kind"), "{st}");
            assert_still_healthy(&s).await;
        },
    )
    .await
}

#[tokio::test]
async fn a_missing_name_is_invalid() {
    within(TEST_DEADLINE, "POST without metadata.name", async {
        let s = ShoalServer::start(&[]).await;
        let st = expect_status(
            post_json(&s, &mk_body(json!({"metadata": {"name": null}}))).await,
            422,
            "Invalid",
        )
        .await;
        assert_invalid_field(&st, "metadata.name");
        assert_eq!(
            st["details"]["causes"][0]["reason"], "FieldValueRequired",
            "{st}"
        );
        assert_still_healthy(&s).await;
    })
    .await
}

#[tokio::test]
async fn an_invalid_name_is_invalid() {
    within(TEST_DEADLINE, "POST with name Bad_Name", async {
        let s = ShoalServer::start(&[]).await;
        let st = expect_status(
            post_json(&s, &mk_body(json!({"metadata": {"name": "Bad_Name"}}))).await,
            422,
            "Invalid",
        )
        .await;
        assert_invalid_field(&st, "metadata.name");
        assert!(message(&st).contains("Bad_Name"), "{st}");
        assert_eq!(st["details"]["name"], "Bad_Name", "{st}");
        assert_still_healthy(&s).await;
    })
    .await
}

#[tokio::test]
async fn an_invalid_label_value_is_invalid() {
    within(TEST_DEADLINE, "POST with an invalid label value", async {
        let s = ShoalServer::start(&[]).await;
        let st = expect_status(
            post_json(
                &s,
                &mk_body(json!({"metadata": {"labels": {"env": "not a value!"}}})),
            )
            .await,
            422,
            "Invalid",
        )
        .await;
        assert_invalid_field(&st, "metadata.labels.env");
        assert_still_healthy(&s).await;
    })
    .await
}

#[tokio::test]
async fn a_server_url_of_the_wrong_type_or_form_is_invalid() {
    within(
        TEST_DEADLINE,
        "POST with a bad spec.endpoint.server",
        async {
            let s = ShoalServer::start(&[]).await;
            let st = expect_status(
                post_json(
                    &s,
                    &mk_body(json!({"spec": {"endpoint": {"server": 6443}}})),
                )
                .await,
                422,
                "Invalid",
            )
            .await;
            assert_invalid_field(&st, "spec.endpoint.server");
            assert_eq!(
                st["details"]["causes"][0]["reason"], "FieldValueTypeInvalid",
                "{st}"
            );

            let st = expect_status(
                post_json(
                    &s,
                    &mk_body(json!({"spec": {"endpoint": {"server": "ftp://x"}}})),
                )
                .await,
                422,
                "Invalid",
            )
            .await;
            assert_invalid_field(&st, "spec.endpoint.server");

            let st = expect_status(
                post_json(&s, &mk_body(json!({"spec": {"endpoint": null}}))).await,
                422,
                "Invalid",
            )
            .await;
            assert_invalid_field(&st, "spec.endpoint");
            assert_still_healthy(&s).await;
        },
    )
    .await
}

#[tokio::test]
async fn a_body_over_3_mib_is_too_large() {
    within(TEST_DEADLINE, "POST a 3.5 MiB body", async {
        let s = ShoalServer::start(&[]).await;
        let big = "x".repeat(3 * 1024 * 1024 + 512 * 1024);
        let body = mk_body(json!({"metadata": {"annotations": {"big": big}}}));
        let st = expect_status(post_json(&s, &body).await, 413, "RequestEntityTooLarge").await;
        assert!(message(&st).contains("too large"), "{st}");
        assert_still_healthy(&s).await;
    })
    .await
}

#[tokio::test]
async fn an_invalid_label_selector_is_a_bad_request_naming_it() {
    within(TEST_DEADLINE, "list with an invalid labelSelector", async {
        let s = ShoalServer::start(&[]).await;
        let r = list_with(&s, "labelSelector", "env in (prod").await;
        let st = expect_status(r, 400, "BadRequest").await;
        assert!(message(&st).contains("labelSelector"), "{st}");
        assert!(message(&st).contains("env in (prod"), "{st}");
        assert_still_healthy(&s).await;
    })
    .await
}

#[tokio::test]
async fn an_unsupported_field_selector_is_a_bad_request() {
    within(TEST_DEADLINE, "list with fieldSelector spec.x=1", async {
        let s = ShoalServer::start(&[]).await;
        let r = list_with(&s, "fieldSelector", "spec.x=1").await;
        let st = expect_status(r, 400, "BadRequest").await;
        assert!(message(&st).contains("fieldSelector"), "{st}");
        assert!(message(&st).contains("spec.x"), "{st}");

        // The supported ones work.
        let r = list_with(&s, "fieldSelector", "metadata.name=c-1").await;
        assert_eq!(r.status(), 200);
        assert_still_healthy(&s).await;
    })
    .await
}

#[tokio::test]
async fn unknown_fields_are_rejected_under_strict_validation_and_pruned_with_a_warning_otherwise() {
    within(
        TEST_DEADLINE,
        "unknown fields with and without fieldValidation=Strict",
        async {
            let s = ShoalServer::start(&[]).await;
            let body = mk_body(json!({"spec": {"colour": "red"}}));
            let st = expect_status(
                post(
                    &s,
                    &format!("{CLUSTERS}?fieldValidation=Strict"),
                    JSON,
                    body.to_string(),
                )
                .await,
                400,
                "BadRequest",
            )
            .await;
            assert!(
                message(&st).contains(r#"unknown field "spec.colour""#),
                "{st}"
            );
            let r = reqwest::get(s.at(&format!("{CLUSTERS}/c-1")))
                .await
                .expect("get");
            assert_eq!(r.status(), 404, "a strict failure creates nothing");

            let r = post_json(&s, &body).await;
            assert_eq!(r.status(), 201);
            let warnings: Vec<String> = r
                .headers()
                .get_all("warning")
                .iter()
                .map(|v| v.to_str().unwrap_or("").to_string())
                .collect();
            assert!(
                warnings.iter().any(
                    |w| w.starts_with("299 ") && w.contains(r#"unknown field \"spec.colour\""#)
                ),
                "{warnings:?}"
            );
            let created: Value = r.json().await.expect("JSON");
            assert!(created["spec"].get("colour").is_none(), "{created}");
            let stored: Value = reqwest::get(s.at(&format!("{CLUSTERS}/c-1")))
                .await
                .expect("get")
                .json()
                .await
                .expect("JSON");
            assert!(stored["spec"].get("colour").is_none(), "pruned: {stored}");
            assert_eq!(
                stored["spec"]["endpoint"]["server"],
                "https://c-1.example.test:6443"
            );

            let r = post(
                &s,
                &format!("{CLUSTERS}?fieldValidation=Sometimes"),
                JSON,
                body.to_string(),
            )
            .await;
            let st = expect_status(r, 400, "BadRequest").await;
            assert!(message(&st).contains("fieldValidation"), "{st}");
            assert_still_healthy(&s).await;
        },
    )
    .await
}

#[tokio::test]
async fn a_text_plain_body_is_an_unsupported_media_type() {
    within(TEST_DEADLINE, "POST text/plain", async {
        let s = ShoalServer::start(&[]).await;
        let st = expect_status(
            post(&s, CLUSTERS, "text/plain", mk_body(json!({})).to_string()).await,
            415,
            "UnsupportedMediaType",
        )
        .await;
        assert!(message(&st).contains("text/plain"), "{st}");
        assert_still_healthy(&s).await;
    })
    .await
}

#[tokio::test]
async fn a_strategic_merge_patch_of_a_cluster_is_unsupported_and_an_apply_needs_a_manager() {
    within(TEST_DEADLINE, "PATCH with unsupported patch types", async {
        let s = ShoalServer::start(&[]).await;
        assert_eq!(post_json(&s, &mk_body(json!({}))).await.status(), 201);
        let patch_body = r#"{"metadata":{"labels":{"tier":"1"}}}"#;

        let st = expect_status(
            patch(
                &s,
                "c-1",
                "application/strategic-merge-patch+json",
                patch_body,
            )
            .await,
            415,
            "UnsupportedMediaType",
        )
        .await;
        assert!(message(&st).contains("strategic-merge-patch+json"), "{st}");
        assert!(
            message(&st).contains("application/merge-patch+json"),
            "names what works: {st}"
        );

        // Server-side apply is served (see ssa.rs), but only for a named field manager.
        let st = expect_status(
            patch(&s, "c-1", "application/apply-patch+yaml", patch_body).await,
            422,
            "Invalid",
        )
        .await;
        assert_eq!(cause_fields(&st), ["fieldManager"], "{st}");

        let got: Value = reqwest::get(s.at(&format!("{CLUSTERS}/c-1")))
            .await
            .expect("get")
            .json()
            .await
            .expect("JSON");
        assert!(
            got["metadata"]["labels"].get("tier").is_none(),
            "nothing was patched: {got}"
        );
        assert_still_healthy(&s).await;
    })
    .await
}

#[tokio::test]
async fn a_malformed_patch_is_a_bad_request() {
    within(TEST_DEADLINE, "PATCH with malformed bodies", async {
        let s = ShoalServer::start(&[]).await;
        assert_eq!(post_json(&s, &mk_body(json!({}))).await.status(), 201);
        let jp = "application/json-patch+json";

        let st = expect_status(patch(&s, "c-1", jp, r#"[{"op": "#).await, 400, "BadRequest").await;
        assert!(message(&st).contains("JSON"), "{st}");
        let st = expect_status(
            patch(&s, "c-1", jp, r#"[{"op": "frobnicate", "path": "/spec"}]"#).await,
            400,
            "BadRequest",
        )
        .await;
        assert!(message(&st).contains("JSON patch"), "{st}");
        let st = expect_status(
            patch(
                &s,
                "c-1",
                jp,
                r#"[{"op": "remove", "path": "/spec/nothing/here"}]"#,
            )
            .await,
            400,
            "BadRequest",
        )
        .await;
        assert!(message(&st).contains("could not be applied"), "{st}");
        let st = expect_status(
            patch(&s, "c-1", "application/merge-patch+json", "[1, 2]").await,
            400,
            "BadRequest",
        )
        .await;
        assert!(message(&st).contains("merge patch"), "{st}");
        assert_still_healthy(&s).await;
    })
    .await
}

#[tokio::test]
async fn an_unknown_resource_path_is_not_found() {
    within(TEST_DEADLINE, "requests to unknown resources", async {
        let s = ShoalServer::start(&[]).await;
        for path in [
            "/apis/shoal.io/v1alpha1/widgets",
            "/apis/shoal.io/v9/clusters",
            "/apis/nope.example/v1/things",
            "/api/v1/pods",
            "/api/v1/namespaces/default/clusters",
        ] {
            let r = reqwest::get(s.at(path)).await.expect("GET");
            let st = expect_status(r, 404, "NotFound").await;
            assert!(
                message(&st).contains("could not find the requested resource"),
                "{path}: {st}"
            );
        }
        let st = expect_status(
            post(&s, "/apis/shoal.io/v1alpha1/widgets", JSON, "{}").await,
            404,
            "NotFound",
        )
        .await;
        assert!(message(&st).contains("could not find"), "{st}");

        // A known resource with an unknown name is NotFound with details.
        let r = reqwest::get(s.at(&format!("{CLUSTERS}/nope")))
            .await
            .expect("GET");
        let st = expect_status(r, 404, "NotFound").await;
        assert_eq!(message(&st), r#"clusters.shoal.io "nope" not found"#);
        assert_eq!(st["details"]["name"], "nope", "{st}");
        assert_still_healthy(&s).await;
    })
    .await
}

#[tokio::test]
async fn a_token_server_answers_401_without_the_right_bearer_token() {
    within(TEST_DEADLINE, "bearer-token authentication", async {
        let s = ShoalServer::start_with_token("s3cret-token", &[]).await;
        let http = reqwest::Client::new();
        let url = s.at(CLUSTERS);

        let r = http.get(&url).send().await.expect("GET without a token");
        assert_eq!(
            r.headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );
        expect_status(r, 401, "Unauthorized").await;
        let r = http
            .get(&url)
            .bearer_auth("wrong-token")
            .send()
            .await
            .expect("GET");
        expect_status(r, 401, "Unauthorized").await;
        let r = http
            .get(&url)
            .bearer_auth("s3cret-token-but-longer")
            .send()
            .await
            .expect("GET");
        expect_status(r, 401, "Unauthorized").await;
        let r = http
            .post(&url)
            .header(CONTENT_TYPE, JSON)
            .body(mk_body(json!({})).to_string())
            .send()
            .await
            .expect("POST");
        expect_status(r, 401, "Unauthorized").await;

        let r = http
            .get(&url)
            .bearer_auth("s3cret-token")
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 200);
        let list: Value = r.json().await.expect("JSON");
        assert_eq!(list["kind"], "ClusterList");
        assert_eq!(
            list["items"],
            json!([]),
            "the unauthorized POST created nothing"
        );

        for open in ["/healthz", "/readyz", "/livez"] {
            let r = http.get(s.at(open)).send().await.expect("GET health");
            assert_eq!(r.status(), 200, "{open} needs no token");
        }
        let kubeconfig = std::fs::read_to_string(s.kubeconfig()).expect("read kubeconfig");
        assert!(kubeconfig.contains("token: s3cret-token"), "{kubeconfig}");
    })
    .await
}
