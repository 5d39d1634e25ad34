//! The real `kubectl` and kube-rs against member clusters served at `/clusters/{name}/`.
//!
//! ```text
//! kubectl --context c-1 ──► http://127.0.0.1:PORT/clusters/c-1/… ──► ApiServer (in process)
//!                                                                  └ StaticDirectory {c-0, c-1, c-2}
//!                                                                      each a Store::memory()
//! ```
//!
//! Each test starts the router on an ephemeral port with three member clusters, writes a
//! kubeconfig with one context per cluster, and talks to it as a user would.

mod common;

use common::{Fleet, TEST_DEADLINE, get, header, rows, within};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;

const NODES_AND_PODS: &str = r#"
apiVersion: v1
kind: Node
metadata:
  name: node-a
  labels:
    node-role.kubernetes.io/worker: ""
---
apiVersion: v1
kind: Node
metadata:
  name: node-b
---
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: default
spec:
  nodeName: node-a
  containers:
  - name: app
    image: nginx:1.27
---
apiVersion: v1
kind: Pod
metadata:
  name: agent-1
  namespace: kube-system
spec:
  containers:
  - name: agent
    image: agent:1
"#;

#[tokio::test]
async fn kubectl_applies_and_lists_nodes_and_pods_in_one_member_cluster_only() {
    within(TEST_DEADLINE, "kubectl get nodes,pods -A", async {
        let f = Fleet::start().await;
        let manifest = f.write("nodes-pods.yaml", NODES_AND_PODS);
        f.ok(&["apply", "-f", &manifest]).await;
        // The simulator would write status; here kubectl does, through the subresource.
        f.ok(&[
            "patch", "node", "node-a", "--subresource=status", "--type=merge", "-p",
            r#"{"status":{"conditions":[{"type":"Ready","status":"True"}],"nodeInfo":{"kubeletVersion":"v1.33.1","machineID":"","systemUUID":"","bootID":"","kernelVersion":"6.1","osImage":"Debian","containerRuntimeVersion":"containerd://1.7","kubeProxyVersion":"","operatingSystem":"linux","architecture":"amd64"}}}"#,
        ])
        .await;
        f.ok(&[
            "patch", "pod", "web-1", "-n", "default", "--subresource=status", "--type=merge", "-p",
            r#"{"status":{"phase":"Running","containerStatuses":[{"name":"app","image":"nginx:1.27","imageID":"","ready":false,"restartCount":3,"state":{"waiting":{"reason":"CrashLoopBackOff"}}}]}}"#,
        ])
        .await;

        let out = f.ok(&["get", "nodes,pods", "-A"]).await;
        let (nodes, pods) = out.split_once("\n\n").unwrap_or_else(|| panic!("two tables:\n{out}"));
        assert_eq!(header(nodes), ["NAME", "STATUS", "ROLES", "AGE", "VERSION"], "{out}");
        let nodes = rows(nodes);
        assert_eq!(nodes.len(), 2, "{out}");
        let a = nodes.iter().find(|r| get(r, "NAME") == "node/node-a").expect("node-a");
        assert_eq!(get(a, "STATUS"), "Ready", "{out}");
        assert_eq!(get(a, "ROLES"), "worker", "{out}");
        assert_eq!(get(a, "VERSION"), "v1.33.1", "{out}");
        let b = nodes.iter().find(|r| get(r, "NAME") == "node/node-b").expect("node-b");
        assert_eq!(get(b, "STATUS"), "Unknown", "{out}");
        assert_eq!(get(b, "ROLES"), "<none>", "{out}");

        assert_eq!(
            header(pods),
            ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"],
            "{out}"
        );
        let pods = rows(pods);
        assert_eq!(pods.len(), 2, "{out}");
        let web = pods.iter().find(|r| get(r, "NAME") == "pod/web-1").expect("web-1");
        assert_eq!(get(web, "NAMESPACE"), "default");
        assert_eq!(get(web, "READY"), "0/1", "{out}");
        assert_eq!(get(web, "STATUS"), "CrashLoopBackOff", "{out}");
        assert_eq!(get(web, "RESTARTS"), "3", "{out}");

        // The same objects do not exist in another member cluster.
        let (ok, stdout, stderr) = f.kubectl_in("c-2", &["get", "pods", "-A"]).await;
        assert!(ok && stdout.is_empty() && stderr.contains("No resources found"), "{stdout}{stderr}");
        let (ok, _, stderr) = f.kubectl_in("c-2", &["get", "node", "node-a"]).await;
        assert!(!ok && stderr.contains("NotFound") && stderr.contains("node-a"), "{stderr}");
        // Wide output shows the computed columns too.
        let wide = f.ok(&["get", "pods", "-n", "default", "-o", "wide"]).await;
        assert_eq!(get(&rows(&wide)[0], "NODE"), "node-a", "{wide}");
    })
    .await
}

fn mk_deployment(app_image: &str, log_level: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 2
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: app
        image: {app_image}
        ports:
        - containerPort: 8080
        env:
        - name: LOG_LEVEL
          value: {log_level}
        - name: REGION
          value: eu
      - name: sidecar
        image: envoy:1.30
"#
    )
}

#[tokio::test]
async fn server_side_apply_merges_containers_by_name_and_removes_a_dropped_env_var() {
    within(TEST_DEADLINE, "kubectl apply --server-side twice", async {
        let f = Fleet::start().await;
        let path = f.write("deploy.yaml", &mk_deployment("web:1", "info"));
        f.ok(&["apply", "--server-side", "-f", &path]).await;
        // Another manager adds an env var to the same container.
        f.ok(&["set", "env", "deployment/web", "-c", "app", "FEATURE=on"])
            .await;
        let without_region = mk_deployment("web:2", "debug")
            .replace("        - name: REGION\n          value: eu\n", "");
        let path = f.write("deploy.yaml", &without_region);
        f.ok(&["apply", "--server-side", "-f", &path]).await;

        let d = f.json(&["get", "deployment", "web", "--show-managed-fields"]).await;
        let containers = d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("containers");
        let app = &containers[0];
        assert_eq!(app["image"], "web:2", "{d:#}");
        let env: Vec<&str> = app["env"]
            .as_array()
            .expect("env")
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(env, ["LOG_LEVEL", "FEATURE"], "REGION dropped, FEATURE kept: {app:#}");
        assert_eq!(containers[1]["image"], "envoy:1.30");
        let mf = d["metadata"]["managedFields"].as_array().expect("managedFields");
        let applier = mf
            .iter()
            .find(|e| e["manager"] == "kubectl" && e["operation"] == "Apply")
            .unwrap_or_else(|| panic!("no kubectl Apply entry: {mf:#?}"));
        let app_fields = &applier["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]
            ["k:{\"name\":\"app\"}"];
        assert!(app_fields["f:image"].is_object(), "{applier:#}");
        assert!(
            app_fields["f:env"]["k:{\"name\":\"LOG_LEVEL\"}"].is_object(),
            "{applier:#}"
        );
    })
    .await
}

#[tokio::test]
async fn reapplying_a_deployment_merges_containers_and_env_by_name() {
    within(TEST_DEADLINE, "kubectl apply twice", async {
        let f = Fleet::start().await;
        let path = f.write("deploy.yaml", &mk_deployment("web:1", "info"));
        f.ok(&["apply", "-f", &path]).await;
        // Another actor adds an env var with a strategic merge patch (kubectl set env).
        f.ok(&["set", "env", "deployment/web", "-c", "app", "FEATURE=on"])
            .await;
        let path = f.write("deploy.yaml", &mk_deployment("web:2", "debug"));
        f.ok(&["apply", "-f", &path]).await;

        let d = f.json(&["get", "deployment", "web"]).await;
        let containers = d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("containers");
        let names: Vec<&str> = containers
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["app", "sidecar"], "{d:#}");
        let app = &containers[0];
        assert_eq!(app["image"], "web:2");
        assert_eq!(app["ports"][0]["containerPort"], 8080, "{app:#}");
        let env: Vec<(&str, &str)> = app["env"]
            .as_array()
            .expect("env")
            .iter()
            .map(|e| (e["name"].as_str().unwrap(), e["value"].as_str().unwrap()))
            .collect();
        assert_eq!(
            env,
            [("LOG_LEVEL", "debug"), ("REGION", "eu"), ("FEATURE", "on")],
            "{app:#}"
        );
        assert_eq!(containers[1]["image"], "envoy:1.30");
        assert_eq!(d["metadata"]["generation"], 3, "{d:#}");

        let out = f.ok(&["get", "deploy"]).await;
        assert_eq!(
            header(&out),
            ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
            "{out}"
        );
        assert_eq!(get(&rows(&out)[0], "READY"), "0/2", "{out}");
    })
    .await
}

#[tokio::test]
async fn label_cordon_and_explain_work_on_built_in_kinds() {
    within(TEST_DEADLINE, "kubectl label/cordon/explain", async {
        let f = Fleet::start().await;
        let manifest = f.write("nodes-pods.yaml", NODES_AND_PODS);
        f.ok(&["apply", "-f", &manifest]).await;
        f.ok(&["label", "node", "node-a", "zone=eu-1a"]).await;
        f.ok(&["annotate", "pod", "web-1", "owner=team-a"]).await;
        f.ok(&["cordon", "node-a"]).await;
        let node = f.json(&["get", "node", "node-a"]).await;
        assert_eq!(node["metadata"]["labels"]["zone"], "eu-1a", "{node:#}");
        assert_eq!(
            node["metadata"]["labels"]["node-role.kubernetes.io/worker"],
            ""
        );
        assert_eq!(node["spec"]["unschedulable"], true, "{node:#}");
        let out = f.ok(&["get", "no", "node-a"]).await;
        assert_eq!(
            get(&rows(&out)[0], "STATUS"),
            "Unknown,SchedulingDisabled",
            "{out}"
        );
        let pod = f.json(&["get", "po", "web-1"]).await;
        assert_eq!(pod["metadata"]["annotations"]["owner"], "team-a");

        let out = f.ok(&["explain", "daemonset.spec.updateStrategy"]).await;
        assert!(
            out.contains("KIND:") && out.contains("DaemonSet") && out.contains("rollingUpdate"),
            "{out}"
        );
        let out = f.ok(&["api-resources"]).await;
        for short in [
            "no", "po", "cm", "svc", "deploy", "rs", "ds", "sts", "ev", "ns",
        ] {
            assert!(
                out.split_whitespace().any(|w| w == short),
                "short name {short} missing:\n{out}"
            );
        }
        // kubectl's generators send ConfigMaps and Secrets as protobuf.
        f.ok(&["create", "configmap", "cfg", "--from-literal=level=debug"])
            .await;
        f.ok(&[
            "create",
            "secret",
            "generic",
            "token",
            "--from-literal=t=s3cret",
        ])
        .await;
        let cm = f.json(&["get", "cm", "cfg"]).await;
        assert_eq!(cm["data"]["level"], "debug", "{cm:#}");
        let secret = f.json(&["get", "secret", "token"]).await;
        assert_eq!(secret["data"]["t"], "czNjcmV0", "{secret:#}");
        assert_eq!(secret["type"], "Opaque", "{secret:#}");
        let out = f.ok(&["get", "cm,secrets"]).await;
        assert!(
            out.contains("configmap/cfg") && out.contains("secret/token"),
            "{out}"
        );
        // Strict field validation comes from the k8s-openapi schema.
        let bad = f.write(
            "bad.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\ncolour: red\n",
        );
        let (ok, _, stderr) = f.kubectl_in("c-1", &["apply", "-f", &bad]).await;
        assert!(!ok && stderr.contains("colour"), "{stderr}");
    })
    .await
}

#[tokio::test]
async fn an_unknown_cluster_answers_a_not_found_status() {
    within(TEST_DEADLINE, "unknown cluster", async {
        let f = Fleet::start().await;
        // `--raw` paths are absolute: they ignore the kubeconfig server's path.
        let (ok, _, stderr) = f
            .kubectl_in("c-0", &["get", "--raw", "/clusters/nope/api/v1/pods"])
            .await;
        assert!(
            !ok && stderr.contains("NotFound") && stderr.contains(r#"clusters "nope" not found"#),
            "{stderr}"
        );
        let (ok, _, stderr) = f.kubectl_in("nope", &["get", "pods"]).await;
        assert!(!ok, "{stderr}");
        let (ok, out, _) = f.kubectl_in("c-0", &["version", "-o", "json"]).await;
        assert!(ok && out.contains("serverVersion"), "{out}");
        // The raw answer is a Status naming the cluster.
        let mut stream = tokio::net::TcpStream::connect(f.url.trim_start_matches("http://"))
            .await
            .expect("connect");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(
                b"GET /clusters/nope/api/v1/pods HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await
            .expect("write");
        let mut resp = String::new();
        stream.read_to_string(&mut resp).await.expect("read");
        assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
        assert!(
            resp.contains(r#""kind":"Status""#) && resp.contains(r#"clusters \"nope\" not found"#),
            "{resp}"
        );
    })
    .await
}

#[tokio::test]
async fn kube_rs_lists_and_watches_pods_of_one_member_cluster() {
    within(TEST_DEADLINE, "kube-rs list + watcher", async {
        let f = Fleet::start().await;
        let manifest = f.write("nodes-pods.yaml", NODES_AND_PODS);
        f.ok(&["apply", "-f", &manifest]).await;
        let url = format!("{}/clusters/c-1", f.url).parse().expect("uri");
        let client = kube::Client::try_from(kube::Config::new(url)).expect("client");
        let pods: kube::Api<Pod> = kube::Api::all(client.clone());
        let list = pods.list(&Default::default()).await.expect("list pods");
        let mut names: Vec<String> = list.items.iter().filter_map(|p| p.metadata.name.clone()).collect();
        names.sort();
        assert_eq!(names, ["agent-1", "web-1"]);

        let events = kube::runtime::watcher(
            kube::Api::<Pod>::namespaced(client, "default"),
            Default::default(),
        );
        let mut events = std::pin::pin!(kube::runtime::WatchStreamExt::applied_objects(events));
        let first = events.try_next().await.expect("watch").expect("an event");
        assert_eq!(first.metadata.name.as_deref(), Some("web-1"));
        let late = f.write(
            "late.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: late, namespace: default}\nspec:\n  containers: [{name: a, image: a}]\n",
        );
        f.ok(&["apply", "-f", &late]).await;
        let next = events.next().await.expect("stream open").expect("event");
        assert_eq!(next.metadata.name.as_deref(), Some("late"));
    })
    .await
}

#[tokio::test]
async fn kubectl_scales_rolls_out_and_describes_workloads() {
    within(TEST_DEADLINE, "kubectl scale / rollout", async {
        let f = Fleet::start().await;
        let path = f.write("deploy.yaml", &mk_deployment("web:1", "info"));
        f.ok(&["apply", "-f", &path]).await;
        f.ok(&["scale", "deployment/web", "--replicas=5"]).await;
        let d = f.json(&["get", "deployment", "web"]).await;
        assert_eq!(d["spec"]["replicas"], 5, "{d:#}");
        // `--raw` paths are absolute: they ignore the kubeconfig server's path.
        let scale = f
            .ok(&["get", "--raw", "/clusters/c-1/apis/apps/v1/namespaces/default/deployments/web/scale"])
            .await;
        let scale: serde_json::Value = serde_json::from_str(&scale).expect("Scale JSON");
        assert_eq!(scale["kind"], "Scale");
        assert_eq!(scale["status"]["selector"], "app=web");
        f.ok(&["rollout", "restart", "deployment/web"]).await;
        f.ok(&["rollout", "pause", "deployment/web"]).await;
        let d = f.json(&["get", "deployment", "web"]).await;
        assert_eq!(d["spec"]["paused"], true);
        assert!(
            d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
                .is_string(),
            "{d:#}"
        );
        // Defaults, as a real API server fills them in.
        assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate", "{d:#}");
        let app = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(app["ports"][0]["protocol"], "TCP");
        assert_eq!(app["imagePullPolicy"], "IfNotPresent");
        let out = f.ok(&["describe", "deploy", "web"]).await;
        assert!(out.contains("RollingUpdate") && out.contains("8080/TCP"), "{out}");
        let ds = f.write(
            "ds.yaml",
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent, namespace: kube-system}\nspec:\n  selector: {matchLabels: {app: agent}}\n  template:\n    metadata: {labels: {app: agent}}\n    spec:\n      nodeSelector: {os: linux}\n      containers: [{name: a, image: agent:1}]\n",
        );
        f.ok(&["apply", "-f", &ds]).await;
        let out = f.ok(&["get", "ds", "-n", "kube-system"]).await;
        assert_eq!(
            header(&out),
            ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE SELECTOR", "AGE"],
            "{out}"
        );
        assert_eq!(get(&rows(&out)[0], "NODE SELECTOR"), "os=linux", "{out}");
    })
    .await
}
