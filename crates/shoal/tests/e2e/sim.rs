//! The simulated fleet through the real binary: `shoal serve --sim-clusters`, kubectl and
//! kube-rs against simulated clusters, Advanced DaemonSet partition stepping observed pod
//! by pod, and a fault profile that crash-loops one version on one kernel only.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{ShoalServer, TEST_DEADLINE, eventually, parse_table, within};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use shoal_core::kinds::{AdvancedDaemonSet, Cluster};

/// Virtual time runs this much faster: a pod's 10 s start-up takes half a second.
const TIME_SCALE: &str = "20";

fn member_client(server: &ShoalServer, cluster: &str) -> kube::Client {
    let url = format!("{}/clusters/{cluster}", server.url())
        .parse()
        .expect("a member URL is a URI");
    kube::Client::try_from(kube::Config::new(url)).expect("build a member client")
}

async fn sim_server(extra: &[&str]) -> ShoalServer {
    let mut args = vec!["--store", "memory", "--time-scale", TIME_SCALE];
    args.extend_from_slice(extra);
    ShoalServer::start(&args).await
}

/// The simulated clusters, once registered as Cluster objects.
async fn clusters(server: &ShoalServer, n: usize) -> Vec<Cluster> {
    let api: Api<Cluster> = Api::all(server.client());
    eventually(
        TEST_DEADLINE,
        "the simulated clusters are registered",
        async || {
            let list = api.list(&ListParams::default()).await.ok()?;
            (list.items.len() == n).then_some(list.items)
        },
    )
    .await
}

fn agent_ds(api_version: &str, image: &str, partition: Option<i32>) -> serde_json::Value {
    let mut rolling = json!({"maxUnavailable": 1});
    if let Some(p) = partition {
        rolling["partition"] = json!(p);
    }
    json!({
        "apiVersion": api_version, "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "kube-system"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": rolling},
            "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "agent", "image": image}]}
            }
        }
    })
}

fn images(pods: &[Pod]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for p in pods {
        let image = p.spec.as_ref().unwrap().containers[0]
            .image
            .clone()
            .unwrap_or_default();
        *out.entry(image).or_insert(0) += 1;
    }
    out
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test]
async fn simulated_clusters_register_and_serve_kubectl() {
    within(TEST_DEADLINE, "kubectl against simulated clusters", async {
        let server = sim_server(&["--sim-clusters", "2", "--sim-nodes", "4"]).await;
        let cs = clusters(&server, 2).await;
        for c in &cs {
            let name = c.metadata.name.as_deref().unwrap();
            assert_eq!(
                c.spec.endpoint.server,
                format!("{}/clusters/{name}", server.url())
            );
            let labels = c.metadata.labels.as_ref().unwrap();
            assert_eq!(labels["shoal.io/simulated"], "true");
            assert_eq!(labels["env"], "sim");
        }
        let table = parse_table(
            &server
                .kubectl_ok(&["get", "clusters", "-l", "env=sim"])
                .await,
        );
        assert_eq!(table.len(), 2, "{table:?}");

        // kubectl against a member cluster, as against a real one.
        let member = cs[0].spec.endpoint.server.clone();
        let kubectl = |args: &[&str]| {
            let mut all = vec!["--server", member.as_str()];
            all.extend_from_slice(args);
            all.iter().map(|s| s.to_string()).collect::<Vec<_>>()
        };
        let run = async |args: Vec<String>| {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            server.kubectl_ok(&a).await
        };
        let nodes = parse_table(&run(kubectl(&["get", "nodes"])).await);
        assert_eq!(nodes.len(), 4, "{nodes:?}");
        assert!(nodes.iter().all(|n| n["STATUS"] == "Ready"), "{nodes:?}");
        let manifest = server.write_file(
            "ds.json",
            &agent_ds("apps/v1", "agent:v1", None).to_string(),
        );
        run(kubectl(&["apply", "-f", manifest.to_str().unwrap()])).await;
        run(kubectl(&[
            "rollout",
            "status",
            "daemonset/agent",
            "-n",
            "kube-system",
            "--timeout=40s",
        ]))
        .await;
        // A second apply changes the image: kubectl sends a strategic merge patch.
        let manifest = server.write_file(
            "ds.json",
            &agent_ds("apps/v1", "agent:v2", None).to_string(),
        );
        run(kubectl(&["apply", "-f", manifest.to_str().unwrap()])).await;
        run(kubectl(&[
            "rollout",
            "status",
            "daemonset/agent",
            "-n",
            "kube-system",
            "--timeout=40s",
        ]))
        .await;
        let pods = parse_table(&run(kubectl(&["get", "pods", "-n", "kube-system"])).await);
        assert_eq!(pods.len(), 4, "one pod per node: {pods:?}");
        assert!(
            pods.iter()
                .all(|p| p["READY"] == "1/1" && p["STATUS"] == "Running"),
            "{pods:?}"
        );
        let images = run(kubectl(&[
            "get",
            "pods",
            "-n",
            "kube-system",
            "-o",
            "jsonpath={.items[*].spec.containers[0].image}",
        ]))
        .await;
        assert_eq!(
            images.split_whitespace().collect::<Vec<_>>(),
            vec!["agent:v2"; 4]
        );

        // The other cluster is untouched.
        let other = cs[1].spec.endpoint.server.clone();
        let none = server
            .kubectl_ok(&["--server", &other, "get", "daemonsets", "-A", "-o", "name"])
            .await;
        assert!(none.trim().is_empty(), "{none}");
    })
    .await;
}

#[tokio::test]
async fn advanced_daemonset_partition_steps_are_observed_pod_by_pod() {
    within(TEST_DEADLINE, "partition stepping through kube-rs", async {
        let server = sim_server(&["--sim-clusters", "1", "--sim-nodes", "4"]).await;
        let cs = clusters(&server, 1).await;
        let client = member_client(&server, cs[0].metadata.name.as_deref().unwrap());

        let nodes: Api<Node> = Api::all(client.clone());
        assert_eq!(
            nodes
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .len(),
            4
        );

        let ads: Api<AdvancedDaemonSet> = Api::namespaced(client.clone(), "kube-system");
        let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
        let v1: AdvancedDaemonSet =
            serde_json::from_value(agent_ds("apps.kruise.io/v1alpha1", "agent:v1", Some(0)))
                .unwrap();
        ads.create(&PostParams::default(), &v1).await.unwrap();
        let all_ready = async |image: &str, n: usize| {
            eventually(
                TEST_DEADLINE,
                &format!("{n} ready pods of {image}"),
                async || {
                    let list = pods.list(&ListParams::default()).await.ok()?.items;
                    let ok = list.len() == 4
                        && list.iter().all(is_ready)
                        && images(&list).get(image).copied().unwrap_or(0) == n;
                    ok.then_some(())
                },
            )
            .await
        };
        all_ready("agent:v1", 4).await;

        // Watch pods from here on: every new pod must come one at a time.
        let mut events = watcher(pods.clone(), watcher::Config::default()).boxed();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let watch = tokio::spawn(async move {
            while let Ok(Some(ev)) = events.try_next().await {
                if let watcher::Event::Apply(p) = ev {
                    let _ = tx.send(p);
                }
            }
        });

        // Partition 4: the new template is there, but no pod moves.
        let patch = |image: &str, partition: i32| {
            json!({"spec": {
                "updateStrategy": {"rollingUpdate": {"partition": partition}},
                "template": {"spec": {"containers": [{"name": "agent", "image": image}]}}
            }})
        };
        let patched = ads
            .patch(
                "agent",
                &PatchParams::default(),
                &Patch::Merge(&patch("agent:v2", 4)),
            )
            .await
            .unwrap();
        // Evidence first: the controller has acted on this generation (it writes the
        // status in the same pass as it deletes and creates pods). Then: it moved nothing.
        let generation = patched.metadata.generation;
        let status = eventually(
            TEST_DEADLINE,
            "the new generation is observed",
            async || {
                let ds = ads.get("agent").await.ok()?;
                ds.status.filter(|s| s.observed_generation >= generation)
            },
        )
        .await;
        assert_eq!(status.updated_number_scheduled, 0, "{status:?}");
        let now = pods.list(&ListParams::default()).await.unwrap().items;
        assert_eq!(
            images(&now),
            BTreeMap::from([("agent:v1".to_string(), 4)]),
            "partition 4 holds every pod"
        );

        // Step the partition down: 4 → 3 → 1 → 0; each step moves exactly that many pods.
        for (partition, updated) in [(3, 1), (1, 3), (0, 4)] {
            ads.patch(
                "agent",
                &PatchParams::default(),
                &Patch::Merge(&patch("agent:v2", partition)),
            )
            .await
            .unwrap();
            all_ready("agent:v2", updated).await;
            let ds = ads.get("agent").await.unwrap();
            let status = ds.status.unwrap();
            assert_eq!(status.updated_number_scheduled, updated as i32);
        }

        // The watch saw the v2 pods appear one by one (maxUnavailable 1), each on its
        // own node, and never two new pods of the same node.
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        let mut order = Vec::new();
        while let Ok(p) = rx.try_recv() {
            let image = p.spec.as_ref().unwrap().containers[0]
                .image
                .clone()
                .unwrap();
            let node = p
                .spec
                .as_ref()
                .unwrap()
                .node_name
                .clone()
                .unwrap_or_default();
            let name = p.metadata.name.clone().unwrap();
            if image == "agent:v2" && !seen.contains_key(&name) {
                seen.insert(name, node.clone());
                order.push(node);
            }
        }
        watch.abort();
        assert_eq!(order.len(), 4, "four v2 pods appeared: {order:?}");
        let distinct: std::collections::BTreeSet<_> = order.iter().collect();
        assert_eq!(distinct.len(), 4, "one per node: {order:?}");

        // kube-rs reads the apps/v1 kind too.
        let dss: Api<DaemonSet> = Api::namespaced(client, "kube-system");
        assert!(
            dss.list(&ListParams::default())
                .await
                .unwrap()
                .items
                .is_empty()
        );
    })
    .await;
}

const FLEET: &str = r#"
nodeProfiles:
  legacy: {instanceType: ecs.g6.2xlarge, kernel: 5.10.134-16.al8.x86_64}
  modern: {instanceType: ecs.g8i.4xlarge, kernel: 6.6.71-3.al8.x86_64}
groups:
  - name: prod
    env: prod
    regions: [cn-hangzhou]
    zones: [a, b]
    nodesPerCluster: 6
    nodes:
      - {profile: legacy, weight: 1}
      - {profile: modern, weight: 1}
"#;

const FAULTS: &str = r#"
seed: 7
faults:
  - podCrashLoop: {name: bad-on-5.10, version: bad, nodeSelector: "shoal.io/kernel=5.10", probability: 1}
"#;

#[tokio::test]
async fn a_bad_version_crash_loops_on_kernel_5_10_nodes_only() {
    within(TEST_DEADLINE, "fault profile end to end", async {
        let files = tempfile::tempdir().unwrap();
        let fleet = files.path().join("fleet.yaml");
        let faults = files.path().join("faults.yaml");
        std::fs::write(&fleet, FLEET).unwrap();
        std::fs::write(&faults, FAULTS).unwrap();
        let server = sim_server(&[
            "--fleet",
            fleet.to_str().unwrap(),
            "--faults",
            faults.to_str().unwrap(),
        ])
        .await;
        let cs = clusters(&server, 1).await;
        let client = member_client(&server, cs[0].metadata.name.as_deref().unwrap());
        let nodes: Api<Node> = Api::all(client.clone());
        let kernel_of: BTreeMap<String, String> = nodes
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|n| {
                let kernel = n.status.unwrap().node_info.unwrap().kernel_version;
                (n.metadata.name.unwrap(), kernel)
            })
            .collect();
        let legacy = kernel_of.values().filter(|k| k.starts_with("5.10")).count();
        assert!(legacy > 0 && legacy < kernel_of.len(), "{kernel_of:?}");

        let dss: Api<DaemonSet> = Api::namespaced(client.clone(), "kube-system");
        let ds: DaemonSet =
            serde_json::from_value(agent_ds("apps/v1", "registry.example.com/agent:bad", None))
                .unwrap();
        dss.create(&PostParams::default(), &ds).await.unwrap();
        let pods: Api<Pod> = Api::namespaced(client, "kube-system");
        let crashing = |p: &Pod| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|cs| cs.first())
                .is_some_and(|c| {
                    c.restart_count > 0
                        && c.state
                            .as_ref()
                            .and_then(|s| s.waiting.as_ref())
                            .is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"))
                })
        };
        let settled = eventually(TEST_DEADLINE, "pods settle", async || {
            let list = pods.list(&ListParams::default()).await.ok()?.items;
            let done =
                list.len() == kernel_of.len() && list.iter().all(|p| crashing(p) || is_ready(p));
            done.then_some(list)
        })
        .await;
        for p in &settled {
            let node = p.spec.as_ref().unwrap().node_name.clone().unwrap();
            let on_510 = kernel_of[&node].starts_with("5.10");
            assert_eq!(crashing(p), on_510, "pod on {node} ({})", kernel_of[&node]);
            assert_eq!(is_ready(p), !on_510, "pod on {node}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_paused_clock_holds_the_fleet_still_until_it_is_stepped() {
    within(TEST_DEADLINE, "stepped virtual time", async {
        let server = sim_server(&["--sim-clusters", "1", "--sim-nodes", "2"]).await;
        let cs = clusters(&server, 1).await;
        let client = member_client(&server, cs[0].metadata.name.as_deref().unwrap());
        let out = server
            .shoal_ok(&["clock", "--server", server.url(), "--pause"])
            .await;
        assert!(out.contains("at 0× real time"), "{out}");
        let now = |out: &str| out.split_whitespace().nth(1).unwrap().to_string();
        let paused_at = now(&out);

        let dss: Api<DaemonSet> = Api::namespaced(client.clone(), "kube-system");
        let ds: DaemonSet = serde_json::from_value(agent_ds("apps/v1", "agent:v1", None)).unwrap();
        dss.create(&PostParams::default(), &ds).await.unwrap();
        let pods: Api<Pod> = Api::namespaced(client, "kube-system");
        // Evidence that the kubelets have the pods (ContainerCreating), then that nothing
        // moved: every step of a pod's life is due at a virtual time, and that time has
        // not moved by a nanosecond since the pause, however long the machine took.
        let creating = eventually(TEST_DEADLINE, "the kubelets start the pods", async || {
            let list = pods.list(&ListParams::default()).await.ok()?.items;
            let waiting = |p: &Pod| {
                let statuses = p.status.as_ref()?.container_statuses.as_ref()?;
                statuses
                    .first()?
                    .state
                    .as_ref()?
                    .waiting
                    .as_ref()?
                    .reason
                    .clone()
            };
            (list.len() == 2
                && list
                    .iter()
                    .all(|p| waiting(p).as_deref() == Some("ContainerCreating")))
            .then_some(list)
        })
        .await;
        let out = server.shoal_ok(&["clock", "--server", server.url()]).await;
        assert_eq!(now(&out), paused_at, "virtual time stands still");
        let still = pods.list(&ListParams::default()).await.unwrap().items;
        assert!(
            creating.iter().chain(&still).all(|p| !is_ready(p)),
            "nothing moves while the clock is paused"
        );

        let out = server
            .shoal_ok(&["clock", "--server", server.url(), "--advance", "1m"])
            .await;
        let stepped: jiff::Timestamp = now(&out).parse().unwrap();
        let paused: jiff::Timestamp = paused_at.parse().unwrap();
        assert_eq!(stepped.duration_since(paused).as_secs(), 60);
        eventually(
            TEST_DEADLINE,
            "one step of a minute starts the pods",
            async || {
                let list = pods.list(&ListParams::default()).await.ok()?.items;
                (list.len() == 2 && list.iter().all(is_ready)).then_some(())
            },
        )
        .await;
        let bad = server
            .shoal(&["clock", "--server", server.url(), "--advance", "soon"])
            .await;
        assert!(!bad.status.success());
        assert!(bad.stderr.contains("advance"), "{}", bad.stderr);
    })
    .await;
}

#[tokio::test]
async fn virtual_time_resumes_after_a_restart_instead_of_starting_over() {
    within(TEST_DEADLINE, "virtual clock across a restart", async {
        // SQLite (the default store) keeps the data, and the virtual time it was written in.
        let mut server = ShoalServer::start(&[
            "--sim-clusters",
            "1",
            "--sim-nodes",
            "1",
            "--time-scale",
            "600",
        ])
        .await;
        let now = async |server: &ShoalServer| -> jiff::Timestamp {
            let out = server.shoal_ok(&["clock", "--server", server.url()]).await;
            out.split_whitespace().nth(1).unwrap().parse().unwrap()
        };
        // Run 5 s real = 50 min virtual ahead of real time (saved every 2 s real).
        tokio::time::sleep(Duration::from_millis(5000)).await;
        let before = now(&server).await;
        let real_before = jiff::Timestamp::now();
        assert!(
            before.duration_since(real_before).as_secs() > 2400,
            "virtual time ran ahead"
        );
        server.restart().await;
        let after = now(&server).await;
        // At most one save interval (2 s real = 20 min virtual) is lost, not the 50 min.
        assert!(
            after.duration_since(before).as_secs() > -1250,
            "resumed at {after}, was {before}"
        );
        assert!(after.duration_since(jiff::Timestamp::now()).as_secs() > 0);
    })
    .await;
}

#[tokio::test]
async fn a_standalone_simulator_registers_its_fleet_in_a_control_plane() {
    within(TEST_DEADLINE, "shoal sim --control-plane", async {
        use tokio::io::AsyncBufReadExt;
        let control = ShoalServer::start(&["--store", "memory", "--no-controllers"]).await;
        let mut sim = tokio::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args([
                "sim",
                "--clusters",
                "2",
                "--nodes",
                "3",
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--control-plane", control.url()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn shoal sim");
        let mut lines = tokio::io::BufReader::new(sim.stdout.take().unwrap()).lines();
        let mut base = None;
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.strip_prefix("simulating 2 clusters (6 nodes) at ") {
                base = rest.strip_suffix("/clusters/NAME").map(String::from);
            }
            if line.starts_with("registered 2 Cluster objects at ") {
                break;
            }
        }
        let base = base.expect("the simulator printed its URL");
        let cs = clusters(&control, 2).await;
        for c in &cs {
            let name = c.metadata.name.as_deref().unwrap();
            assert_eq!(c.spec.endpoint.server, format!("{base}/clusters/{name}"));
            assert_eq!(c.status.as_ref().and_then(|s| s.node_count), Some(3));
        }
        let nodes = parse_table(
            &control
                .kubectl_ok(&["--server", &cs[0].spec.endpoint.server, "get", "nodes"])
                .await,
        );
        assert_eq!(nodes.len(), 3, "{nodes:?}");
        sim.kill().await.ok();
    })
    .await;
}

#[tokio::test]
async fn sim_history_records_a_daemonset_rollout_within_its_budget() {
    within(TEST_DEADLINE, "a rollout in /sim/history", async {
        let server = sim_server(&["--sim-clusters", "1", "--sim-nodes", "4"]).await;
        let cs = clusters(&server, 1).await;
        let cluster = cs[0].metadata.name.clone().unwrap();
        let member = cs[0].spec.endpoint.server.clone();
        for image in ["agent:v1", "agent:v2"] {
            let manifest =
                server.write_file("ds.json", &agent_ds("apps/v1", image, None).to_string());
            let path = manifest.to_str().unwrap();
            server
                .kubectl_ok(&["--server", &member, "apply", "-f", path])
                .await;
            server
                .kubectl_ok(&[
                    "--server",
                    &member,
                    "rollout",
                    "status",
                    "daemonset/agent",
                    "-n",
                    "kube-system",
                    "--timeout=40s",
                ])
                .await;
        }
        let get = async |query: &str| {
            let r = reqwest::get(server.at(&format!("/sim/history{query}")))
                .await
                .expect("GET /sim/history");
            let code = r.status().as_u16();
            (code, r.json::<serde_json::Value>().await.expect("JSON"))
        };
        let (code, ledger) = get(&format!("?cluster={cluster}")).await;
        assert_eq!(code, 200, "{ledger}");
        assert_eq!(ledger["cluster"], cluster.as_str());
        let agent = ledger["workloads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["kind"] == "DaemonSet" && w["name"] == "agent")
            .unwrap_or_else(|| panic!("no agent in {ledger}"));
        assert_eq!(agent["templateVersion"], "v2", "{agent}");
        let version = |v: &str| {
            agent["versions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["version"] == v)
                .unwrap_or_else(|| panic!("no version {v} in {agent}"))
                .clone()
        };
        assert_eq!(version("v1")["nodesEver"], 4, "{agent}");
        assert_eq!(version("v2")["nodesEver"], 4, "{agent}");
        assert_eq!(version("v2")["pods"], 4, "{agent}");
        assert_eq!(agent["violations"], 0, "{agent}");
        assert_eq!(
            agent["peakUnavailable"]["count"], 1,
            "the rollout took one node at a time: {agent}"
        );
        assert_eq!(agent["peakUnavailable"]["allowedAtPeak"], 1);

        let (code, fleet) = get("").await;
        assert_eq!(code, 200);
        assert_eq!(fleet["clusters"].as_array().unwrap().len(), 1, "{fleet}");
        assert!(fleet["now"].is_string(), "{fleet}");
        let (code, status) = get("?cluster=no-such-cluster").await;
        assert_eq!(code, 404);
        assert_eq!(
            (status["kind"].as_str(), status["reason"].as_str()),
            (Some("Status"), Some("NotFound")),
            "{status}"
        );
    })
    .await;
}
