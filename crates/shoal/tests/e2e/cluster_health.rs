//! The cluster prober through the real binary: every Cluster's status says whether its
//! API answers (the `Ready` condition), its Kubernetes version and node counts; a
//! cluster whose API server starts failing (a simulator fault) goes not Ready and back,
//! with a Warning and a Normal Event that `kubectl describe cluster` shows; and a
//! change made with kubectl lands in the audit trail.

use crate::common;

use std::time::Duration;

use common::{ShoalServer, clusters_ready, eventually, parse_table, within};
use k8s_openapi::api::core::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use shoal_core::kinds::Cluster;

const FLEET: &str = "nodeProfiles:
  std:
    instanceType: ecs.g8i.4xlarge
    kernel: 6.6.71-3.al8.x86_64
    osImage: Alibaba Cloud Linux 4
    kubeletVersion: v1.32.2
    capacity: {cpu: \"16\", memory: 64Gi, pods: \"110\"}
groups:
  - {name: test, env: test, regions: [cn-hangzhou], zones: [a], clustersPer: 1,
     nodesPerCluster: 3, nodes: [{profile: std, weight: 1}]}
  - {name: prod, env: prod, regions: [cn-hangzhou], zones: [a], clustersPer: 1,
     nodesPerCluster: 3, nodes: [{profile: std, weight: 1}]}
";

/// The prod cluster's API server answers 503 to everything from 1m to 5m of virtual
/// time: 3 s to 15 s of real time at 20×.
const FAULTS: &str = "seed: 7
faults:
  - apiServer: {name: prod-api-down, clusterSelector: env=prod, errorRate: 1.0,
                errorCode: 503, after: 1m, duration: 4m}
";

const DEADLINE: Duration = Duration::from_secs(60);

fn ready(c: &Cluster) -> Option<(String, String)> {
    let cond = c
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")?;
    Some((cond.status.clone(), cond.reason.clone()))
}

#[tokio::test]
async fn a_cluster_whose_api_fails_goes_not_ready_and_back_with_events() {
    within(DEADLINE * 3, "cluster health", async {
        let files = tempfile::tempdir().unwrap();
        let fleet = files.path().join("fleet.yaml");
        let faults = files.path().join("faults.yaml");
        std::fs::write(&fleet, FLEET).unwrap();
        std::fs::write(&faults, FAULTS).unwrap();
        let server = ShoalServer::start(&[
            "--store",
            "memory",
            "--time-scale",
            "20",
            "--probe-interval-seconds",
            "1",
            "--fleet",
            fleet.to_str().unwrap(),
            "--faults",
            faults.to_str().unwrap(),
        ])
        .await;
        let clusters: Api<Cluster> = Api::all(server.client());
        let (test, prod) = eventually(DEADLINE, "two clusters", async || {
            let list = clusters.list(&ListParams::default()).await.ok()?.items;
            let by_env = |env: &str| {
                list.iter()
                    .find(|c| c.labels().get("env").map(String::as_str) == Some(env))
                    .and_then(|c| c.metadata.name.clone())
            };
            Some((by_env("test")?, by_env("prod")?))
        })
        .await;

        // The healthy cluster: Ready, with its version and nodes, in kubectl's wide table.
        let healthy = eventually(DEADLINE, "the test cluster probed", async || {
            let c = clusters.get(&test).await.ok()?;
            (ready(&c)? == ("True".into(), "Reachable".into())).then_some(c)
        })
        .await;
        let st = healthy.status.unwrap();
        assert_eq!((st.node_count, st.ready_nodes), (Some(3), Some(3)));
        assert!(
            st.kubernetes_version
                .as_deref()
                .is_some_and(|v| v.starts_with('v')),
            "{:?}",
            st.kubernetes_version
        );
        let table = server.kubectl_ok(&["get", "clusters", "-o", "wide"]).await;
        let rows = parse_table(&table);
        let row = rows.iter().find(|r| r["NAME"] == test).expect(&table);
        assert_eq!(
            (row["READY"].as_str(), row["NODES"].as_str()),
            ("True", "3"),
            "{table}"
        );
        assert!(row["VERSION"].starts_with('v'), "{table}");

        // The prod cluster's API fails: not Ready, naming why; then it answers again.
        let down = eventually(DEADLINE, "prod not Ready", async || {
            let c = clusters.get(&prod).await.ok()?;
            (ready(&c)? == ("False".into(), "Unreachable".into())).then_some(c)
        })
        .await;
        let cond = down
            .status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap()
            .clone();
        assert!(
            cond.message.starts_with("the API answered 503") && cond.message.len() < 200,
            "one short line saying what the cluster answered: {}",
            cond.message
        );
        eventually(DEADLINE, "prod Ready again", async || {
            let c = clusters.get(&prod).await.ok()?;
            (ready(&c)?.0 == "True").then_some(())
        })
        .await;

        // Its Events: NotReady then Ready; none about the healthy cluster.
        let events: Api<Event> = Api::namespaced(server.client(), "default");
        let about = |name: &str| {
            let name = name.to_string();
            let events = events.clone();
            async move {
                let mut list: Vec<Event> = events
                    .list(&ListParams::default().fields(&format!(
                        "involvedObject.kind=Cluster,involvedObject.name={name}"
                    )))
                    .await
                    .unwrap()
                    .items;
                list.sort_by_key(|e| e.last_timestamp.clone().map(|t| t.0));
                list
            }
        };
        let prod_events = eventually(DEADLINE, "prod's events", async || {
            let list = about(&prod).await;
            (list.len() >= 2).then_some(list)
        })
        .await;
        let reasons: Vec<(String, String)> = prod_events
            .iter()
            .map(|e| (e.type_.clone().unwrap(), e.reason.clone().unwrap()))
            .collect();
        assert_eq!(
            reasons,
            [
                ("Warning".to_string(), "NotReady".to_string()),
                ("Normal".to_string(), "Ready".to_string())
            ],
            "{prod_events:?}"
        );
        assert!(
            about(&test).await.is_empty(),
            "a healthy cluster has nothing to report"
        );
        for described in [
            server.kubectl_ok(&["describe", "cluster", &prod]).await,
            server.shoal_ok(&["describe", "cluster", &prod]).await,
        ] {
            assert!(
                described.contains("NotReady") && described.contains("503"),
                "{described}"
            );
            assert!(described.contains("shoal-cluster-prober"), "{described}");
        }

        // A change by kubectl is audited: who, with what, which verb, the answer.
        server
            .kubectl_ok(&["label", "cluster", &test, "owner=sre"])
            .await;
        let log = eventually(DEADLINE, "the audit line", async || {
            let log = server.log();
            log.lines()
                .any(|l| l.contains("shoal::audit") && l.contains("kubectl") && l.contains("patch"))
                .then_some(log)
        })
        .await;
        let line = log
            .lines()
            .find(|l| l.contains("shoal::audit") && l.contains("kubectl"))
            .unwrap();
        for want in ["user=anonymous", "resource=clusters", "code=200", &test] {
            assert!(line.contains(want), "{want:?} missing from {line}");
        }
        assert!(
            !log.lines().any(|l| l.contains("shoal::audit")
                && l.contains(" INFO")
                && l.contains("shoal-controllers")),
            "the controllers' own writes are not in the info-level audit trail"
        );
    })
    .await;
}

/// A Cluster registered while shoal runs is probed within seconds, not at the next
/// round: with rounds ten minutes apart, a copy of a simulated cluster (same endpoint)
/// goes Ready, and one whose endpoint refuses connections goes not Ready, both with
/// the same node count as what they point at.
#[tokio::test]
async fn a_cluster_registered_later_is_probed_at_once_not_at_the_next_round() {
    within(DEADLINE * 2, "late cluster probed", async {
        let files = tempfile::tempdir().unwrap();
        let fleet = files.path().join("fleet.yaml");
        std::fs::write(&fleet, FLEET).unwrap();
        let server = ShoalServer::start(&[
            "--store",
            "memory",
            "--probe-interval-seconds",
            "600",
            "--fleet",
            fleet.to_str().unwrap(),
        ])
        .await;
        let clusters: Api<Cluster> = Api::all(server.client());
        // The first round, at start, probes the simulated clusters.
        let first = eventually(DEADLINE, "the first round", async || {
            let list = clusters.list(&ListParams::default()).await.ok()?.items;
            let probed = list.iter().filter(|c| ready(c).is_some()).count();
            (list.len() == 2 && probed == 2).then(|| list[0].clone())
        })
        .await;
        let endpoint = &first.spec.endpoint.server;
        let yaml = format!(
            "apiVersion: shoal.io/v1alpha1\nkind: Cluster\nmetadata: {{name: late}}\n\
             spec: {{endpoint: {{server: \"{endpoint}\"}}}}\n---\n\
             apiVersion: shoal.io/v1alpha1\nkind: Cluster\nmetadata: {{name: gone}}\n\
             spec: {{endpoint: {{server: \"http://127.0.0.1:1\"}}}}\n"
        );
        let file = server.write_file("late.yaml", &yaml);
        server
            .kubectl_ok(&["apply", "-f", file.to_str().unwrap()])
            .await;
        let late = eventually(
            Duration::from_secs(20),
            "the late cluster Ready",
            async || {
                let c = clusters.get("late").await.ok()?;
                (ready(&c)? == ("True".into(), "Reachable".into())).then_some(c)
            },
        )
        .await;
        assert_eq!(
            late.status.as_ref().and_then(|s| s.node_count),
            first.status.as_ref().and_then(|s| s.node_count)
        );
        eventually(
            Duration::from_secs(20),
            "the unreachable one not Ready",
            async || {
                let c = clusters.get("gone").await.ok()?;
                (ready(&c)? == ("False".into(), "Unreachable".into())).then_some(())
            },
        )
        .await;
    })
    .await;
}

fn not_ready_message(c: &Cluster) -> Option<String> {
    let cond = c
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "False")?;
    Some(cond.message.clone())
}

/// Members that ask for credentials: with `--member-token-file` the simulated members
/// want a bearer token, their Clusters are registered with a `credentialsRef` to a
/// Secret holding a kubeconfig with it, and the prober reaches them with it. A Cluster
/// whose Secret holds a wrong token, or names no Secret that exists, is not Ready and
/// says why.
#[tokio::test]
async fn members_that_ask_for_a_token_are_reached_with_the_credentials_their_cluster_names() {
    within(DEADLINE * 2, "member credentials", async {
        let files = tempfile::tempdir().unwrap();
        let fleet = files.path().join("fleet.yaml");
        std::fs::write(&fleet, FLEET).unwrap();
        let token = files.path().join("member-token");
        std::fs::write(&token, "member-s3cret\n").unwrap();
        let server = ShoalServer::start(&[
            "--store",
            "memory",
            "--probe-interval-seconds",
            "1",
            "--fleet",
            fleet.to_str().unwrap(),
            "--member-token-file",
            token.to_str().unwrap(),
        ])
        .await;
        let clusters: Api<Cluster> = Api::all(server.client());
        // Both members Ready: reached with their credentials.
        let sim = clusters_ready(&clusters, "", 2, DEADLINE).await;
        let member = &sim[0];
        assert_eq!(
            member
                .spec
                .credentials_ref
                .as_ref()
                .map(|r| r.name.as_str()),
            Some("simulated-members")
        );
        let secrets = server
            .kubectl_ok(&["get", "secrets", "-n", "shoal-system"])
            .await;
        assert!(secrets.contains("simulated-members"), "{secrets}");

        // The member's API itself wants the token.
        let nodes = format!("{}/api/v1/nodes", member.spec.endpoint.server);
        let http = reqwest::Client::new();
        let without = http.get(&nodes).send().await.unwrap();
        assert_eq!(without.status(), 401);
        let with = http
            .get(&nodes)
            .bearer_auth("member-s3cret")
            .send()
            .await
            .unwrap();
        assert_eq!(with.status(), 200);

        // A Secret with a wrong token (made with kubectl, as an operator would), and a
        // Cluster naming a Secret that does not exist.
        let kubeconfig = server.write_file(
            "wrong-kubeconfig",
            &format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: m\n  cluster:\n    server: {}\n\
                 contexts:\n- name: m\n  context: {{cluster: m, user: m}}\ncurrent-context: m\n\
                 users:\n- name: m\n  user: {{token: not-the-token}}\n",
                member.spec.endpoint.server
            ),
        );
        server
            .kubectl_ok(&[
                "create",
                "secret",
                "generic",
                "wrong",
                "-n",
                "shoal-system",
                &format!("--from-file=kubeconfig={}", kubeconfig.display()),
            ])
            .await;
        let endpoint = &member.spec.endpoint.server;
        let yaml = format!(
            "apiVersion: shoal.io/v1alpha1\nkind: Cluster\nmetadata: {{name: borrowed}}\n\
             spec: {{endpoint: {{server: \"{endpoint}\"}}, credentialsRef: {{name: wrong}}}}\n---\n\
             apiVersion: shoal.io/v1alpha1\nkind: Cluster\nmetadata: {{name: orphan}}\n\
             spec: {{endpoint: {{server: \"{endpoint}\"}}, credentialsRef: {{name: missing}}}}\n"
        );
        let file = server.write_file("more.yaml", &yaml);
        server
            .kubectl_ok(&["apply", "-f", file.to_str().unwrap()])
            .await;
        let refused = eventually(DEADLINE, "the wrong token refused", async || {
            not_ready_message(&clusters.get("borrowed").await.ok()?)
        })
        .await;
        assert!(refused.contains("401"), "{refused}");
        let orphan = eventually(DEADLINE, "the missing Secret named", async || {
            not_ready_message(&clusters.get("orphan").await.ok()?)
        })
        .await;
        assert!(
            orphan.contains("credentialsRef") && orphan.contains("shoal-system/missing"),
            "{orphan}"
        );
    })
    .await;
}

/// What happened to a Cluster whose kubeconfig authenticates with an exec plugin (a
/// script that leaves a marker file and prints the members' token), on a server started
/// with `extra` flags: its Ready condition (status, reason, message) once its status is
/// `want`, and whether the plugin ran.
async fn exec_plugin_member(extra: &[&str], want: &str) -> ((String, String, String), bool) {
    use std::os::unix::fs::PermissionsExt;
    let files = tempfile::tempdir().unwrap();
    let token = files.path().join("member-token");
    std::fs::write(&token, "member-s3cret\n").unwrap();
    let mut args = vec![
        "--store",
        "memory",
        "--probe-interval-seconds",
        "1",
        "--sim-clusters",
        "1",
        "--sim-nodes",
        "2",
        "--member-token-file",
        token.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let server = ShoalServer::start(&args).await;
    let clusters: Api<Cluster> = Api::all(server.client());
    let sim = clusters_ready(&clusters, "", 1, DEADLINE).await;
    let endpoint = &sim[0].spec.endpoint.server;

    let marker = files.path().join("plugin-ran");
    let plugin = files.path().join("credential-plugin");
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\ntouch '{}'\necho '{{\"apiVersion\": \"client.authentication.k8s.io/v1\", \
             \"kind\": \"ExecCredential\", \"status\": {{\"token\": \"member-s3cret\"}}}}'\n",
            marker.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let kubeconfig = server.write_file(
        "exec-kubeconfig",
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: m\n  cluster:\n    server: {endpoint}\n\
             contexts:\n- name: m\n  context: {{cluster: m, user: m}}\ncurrent-context: m\n\
             users:\n- name: m\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n\
             \x20     command: {}\n      interactiveMode: Never\n",
            plugin.display()
        ),
    );
    server
        .kubectl_ok(&[
            "create",
            "secret",
            "generic",
            "via-exec",
            "-n",
            "shoal-system",
            &format!("--from-file=kubeconfig={}", kubeconfig.display()),
        ])
        .await;
    let yaml = format!(
        "apiVersion: shoal.io/v1alpha1\nkind: Cluster\nmetadata: {{name: exec-member}}\n\
         spec: {{endpoint: {{server: \"{endpoint}\"}}, credentialsRef: {{name: via-exec}}}}\n"
    );
    let file = server.write_file("exec-member.yaml", &yaml);
    server
        .kubectl_ok(&["apply", "-f", file.to_str().unwrap()])
        .await;
    let cond = eventually(
        DEADLINE,
        &format!("the exec-plugin member Ready={want}"),
        async || {
            let c = clusters.get("exec-member").await.ok()?;
            let cond = c
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready" && c.status == want)?;
            Some((cond.status, cond.reason, cond.message))
        },
    )
    .await;
    (cond, marker.exists())
}

/// A member kubeconfig with an exec plugin would run a program on shoal's host as
/// shoal, for whoever may write a Secret and a Cluster: it is refused, the Cluster is
/// not Ready and says which field, and the program never runs.
#[tokio::test]
async fn a_member_kubeconfig_with_an_exec_plugin_is_refused_without_the_opt_in() {
    within(DEADLINE * 2, "exec plugin refused", async {
        let ((status, reason, message), ran) = exec_plugin_member(&[], "False").await;
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "KubeconfigRefused")
        );
        for want in [
            "users[0].user.exec",
            "runs a program",
            "--allow-member-kubeconfig-exec-and-files",
        ] {
            assert!(message.contains(want), "{want:?} missing from {message}");
        }
        assert!(!ran, "the plugin must not have run");
    })
    .await;
}

/// With `--allow-member-kubeconfig-exec-and-files` the operator trusts the writers of
/// Secrets and Clusters: the exec plugin runs and the member is reached with the token
/// it printed.
#[tokio::test]
async fn a_member_kubeconfig_with_an_exec_plugin_is_used_with_the_opt_in() {
    within(DEADLINE * 2, "exec plugin used", async {
        let ((status, reason, message), ran) =
            exec_plugin_member(&["--allow-member-kubeconfig-exec-and-files"], "True").await;
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("True", "Reachable"),
            "{message}"
        );
        assert!(ran, "the plugin ran");
    })
    .await;
}
