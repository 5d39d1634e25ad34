//! The server's edges (issue 22): what `shoal serve` leaves on disk is readable by its
//! user alone; the simulated members ask for a token when the control plane does; a
//! header cannot take a write out of the audit trail; a client that connects and says
//! nothing, over HTTP or TLS, is disconnected while a long watch is not.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{ShoalServer, TEST_DEADLINE, eventually, within};
use serde_json::{Value, json};

const CLUSTERS: &str = "/apis/shoal.io/v1alpha1/clusters";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Every directory under `dir` (itself included) and every file, with its mode.
fn modes(dir: &Path) -> Vec<(String, u32, bool)> {
    let mut out = vec![(dir.display().to_string(), mode(dir), true)];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(modes(&path));
        } else {
            out.push((path.display().to_string(), mode(&path), false));
        }
    }
    out
}

/// Issue 22, item 2: the data directory is 0700 and the store (with SQLite's WAL), the
/// admin kubeconfig and the TLS keys are 0600, as created; a
/// restart closes a kubeconfig someone opened, and warns about a directory others can
/// enter.
#[tokio::test]
async fn the_data_directory_and_every_file_in_it_are_private_from_their_creation() {
    within(TEST_DEADLINE * 2, "private data dir", async {
        // No simulated fleet (its saved virtual clock is written as the kubeconfig is):
        // it takes seconds to start in a debug build, and this test starts twice.
        let mut server = ShoalServer::start_with_token("s3cret", &["--tls"]).await;
        let data = server.data_dir();
        // The WAL exists once something was written.
        eventually(TEST_DEADLINE, "the WAL", async || {
            let names: Vec<String> = std::fs::read_dir(&data)
                .ok()?
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            [
                "shoal.db",
                "shoal.db-wal",
                "shoal.db-shm",
                "kubeconfig",
                "pki",
            ]
            .iter()
            .all(|n| names.iter().any(|m| m == n))
            .then_some(())
        })
        .await;
        let all = modes(&data);
        for n in [
            "ca.key",
            "server.key",
            "ca.crt",
            "kubeconfig",
            "shoal.db-wal",
        ] {
            assert!(
                all.iter().any(|(p, _, _)| p.ends_with(n)),
                "{n} is there: {all:#?}"
            );
        }
        for (path, mode, dir) in &all {
            let want = if *dir { 0o700 } else { 0o600 };
            assert_eq!(*mode, want, "{path} is {mode:04o}: {all:#?}");
        }
        assert!(
            !server.log().contains("open to other users"),
            "{}",
            server.log()
        );

        // Opened by someone since: closed again at the next start, with a warning about
        // the directory (which is the operator's to close).
        let kubeconfig = data.join("kubeconfig");
        std::fs::set_permissions(&kubeconfig, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        server.restart().await;
        assert_eq!(mode(&kubeconfig), 0o600);
        let log = server.log();
        assert!(
            log.lines()
                .any(|l| l.contains("WARN") && l.contains("open to other users")),
            "{log}"
        );
    })
    .await;
}

async fn clusters_json(server: &ShoalServer, token: &str) -> Option<Vec<Value>> {
    let r = reqwest::Client::new()
        .get(server.at(CLUSTERS))
        .bearer_auth(token)
        .send()
        .await
        .ok()?;
    let list: Value = r.json().await.ok()?;
    list["items"].as_array().cloned()
}

fn is_ready(cluster: &Value) -> bool {
    cluster["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Issue 22, item 3: with `--token-file` (and no `--member-token-file`) the simulated
/// members want a token of that file; shoal's prober still reaches them (with a token of
/// its own for them); `--anonymous-members` opens them on purpose.
#[tokio::test]
async fn members_ask_for_the_control_planes_token_unless_opened_on_purpose() {
    within(TEST_DEADLINE * 2, "members behind the token", async {
        let server = ShoalServer::start_with_token(
            "s3cret",
            &[
                "--store",
                "memory",
                "--sim-clusters",
                "1",
                "--sim-nodes",
                "2",
                "--probe-interval-seconds",
                "1",
            ],
        )
        .await;
        // The prober reached the member: with credentials, since it asks for them.
        let clusters = eventually(TEST_DEADLINE, "the simulated member is Ready", async || {
            let items = clusters_json(&server, "s3cret").await?;
            (items.len() == 1 && items.iter().all(is_ready)).then_some(items)
        })
        .await;
        let member = clusters[0]["spec"]["endpoint"]["server"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(member.contains("/clusters/"), "{member}");
        let http = reqwest::Client::new();
        let nodes = format!("{member}/api/v1/nodes");
        let configmaps = format!("{member}/api/v1/namespaces/default/configmaps");
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});

        let anonymous = http.get(&nodes).send().await.unwrap();
        assert_eq!(anonymous.status(), 401, "anonymous read");
        let anonymous = http.post(&configmaps).json(&cm).send().await.unwrap();
        assert_eq!(anonymous.status(), 401, "anonymous write");
        let wrong = http.get(&nodes).bearer_auth("nope").send().await.unwrap();
        assert_eq!(wrong.status(), 401, "a wrong token");

        let read = http.get(&nodes).bearer_auth("s3cret").send().await.unwrap();
        assert_eq!(read.status(), 200);
        let list: Value = read.json().await.unwrap();
        assert_eq!(list["items"].as_array().map(Vec::len), Some(2));
        let write = http
            .post(&configmaps)
            .bearer_auth("s3cret")
            .json(&cm)
            .send()
            .await
            .unwrap();
        assert_eq!(write.status(), 201, "the token's user may write");
        let health = http.get(format!("{member}/readyz")).send().await.unwrap();
        assert_eq!(health.status(), 200, "health checks stay open");

        // Opened on purpose.
        let open = ShoalServer::start_with_token(
            "s3cret",
            &[
                "--store",
                "memory",
                "--no-controllers",
                "--sim-clusters",
                "1",
                "--sim-nodes",
                "1",
                "--anonymous-members",
            ],
        )
        .await;
        let name = member.rsplit('/').next().unwrap();
        let r = http
            .get(open.at(&format!("/clusters/{name}/api/v1/nodes")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "--anonymous-members");
        let r = http.get(open.at(CLUSTERS)).send().await.unwrap();
        assert_eq!(
            r.status(),
            401,
            "the control plane still asks for its token"
        );
    })
    .await;
}

/// Issue 22, item 4: a client that names itself shoal's controllers, or sends a
/// leadership fence, is still in the info-level audit trail: only the token shoal made
/// for its own clients says that a write is theirs, and a server without tokens has none.
#[tokio::test]
async fn a_header_naming_shoals_controllers_does_not_hide_a_write_from_the_audit_trail() {
    within(TEST_DEADLINE, "audit evasion", async {
        let server = ShoalServer::start(&["--store", "memory", "--no-controllers"]).await;
        let http = reqwest::Client::new();
        let cluster = |name: &str| {
            json!({"apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
                   "metadata": {"name": name},
                   "spec": {"endpoint": {"server": "https://10.0.0.1:6443"}}})
        };
        let r = http
            .post(server.at(CLUSTERS))
            .header("X-Shoal-Client", "shoal-controllers")
            .json(&cluster("by-header"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        // A leadership fence of a term that is not (no one leads here): the write is
        // refused, and the attempt audited at info all the same.
        let r = http
            .post(server.at(CLUSTERS))
            .header("X-Shoal-Fence", "taskflow=1")
            .json(&cluster("by-fence"))
            .send()
            .await
            .unwrap();
        let fenced = r.status().as_u16();
        assert_eq!(fenced, 412, "{:?}", r.text().await);
        let audited = |log: &str, what: &str| {
            log.lines().any(|l| {
                l.contains("INFO")
                    && l.contains("shoal::audit")
                    && l.contains("user=anonymous")
                    && l.contains(what)
            })
        };
        let log = eventually(
            TEST_DEADLINE,
            "both writes in the audit trail",
            async || {
                let log = server.log();
                (audited(&log, "client=shoal-controllers")
                    && audited(&log, &format!("code={fenced}")))
                .then_some(log)
            },
        )
        .await;
        assert!(audited(&log, "verb=create"), "{log}");
    })
    .await;
}

/// Reads from `tcp` until the server closes it; fails the test if that takes 20 s.
async fn closed_within_20s(tcp: &mut tokio::net::TcpStream, what: &str) -> Duration {
    use tokio::io::AsyncReadExt;
    let start = Instant::now();
    let mut sink = Vec::new();
    within(Duration::from_secs(20), what, tcp.read_to_end(&mut sink))
        .await
        .ok();
    start.elapsed()
}

fn host_port(url: &str) -> String {
    url.split("://")
        .nth(1)
        .unwrap()
        .trim_end_matches('/')
        .to_string()
}

/// Issue 22, item 5: a client that connects and sends nothing is disconnected after
/// `--read-header-timeout-seconds`, over plain HTTP and during a TLS handshake; a watch
/// outlives `--idle-timeout-seconds` and keeps delivering events.
#[tokio::test]
async fn a_silent_client_is_disconnected_and_a_long_watch_is_not() {
    within(TEST_DEADLINE * 2, "slow clients", async {
        let limits = [
            "--read-header-timeout-seconds",
            "1",
            "--idle-timeout-seconds",
            "1",
            "--bookmark-interval-seconds",
            "1",
        ];
        let mut args = vec!["--store", "memory", "--no-controllers"];
        args.extend(limits);
        let plain = ShoalServer::start(&args).await;
        let mut tcp = tokio::net::TcpStream::connect(host_port(plain.url()))
            .await
            .unwrap();
        let took = closed_within_20s(&mut tcp, "a silent HTTP client is disconnected").await;
        assert!(
            took >= Duration::from_millis(900),
            "not before the limit: {took:?}"
        );

        args.push("--tls");
        let tls = ShoalServer::start_with_token("s3cret", &args).await;
        let mut tcp = tokio::net::TcpStream::connect(host_port(tls.url()))
            .await
            .unwrap();
        closed_within_20s(&mut tcp, "a silent TLS client is disconnected").await;

        // A watch that lasts well past the idle limit: three bookmarks a second apart.
        let mut watch = reqwest::Client::new()
            .get(plain.at(&format!("{CLUSTERS}?watch=1&allowWatchBookmarks=true")))
            .send()
            .await
            .unwrap();
        assert_eq!(watch.status(), 200);
        let started = Instant::now();
        let mut seen = String::new();
        let mut read_until = async |seen: &mut String, want: &str, n: usize| {
            while seen.matches(want).count() < n {
                let chunk = within(Duration::from_secs(20), want, watch.chunk())
                    .await
                    .expect("the watch stream")
                    .unwrap_or_else(|| panic!("the watch ended before {want}: {seen}"));
                seen.push_str(&String::from_utf8_lossy(&chunk));
            }
        };
        read_until(&mut seen, "\"BOOKMARK\"", 3).await;
        assert!(
            started.elapsed() > Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let r = reqwest::Client::new()
            .post(plain.at(CLUSTERS))
            .json(
                &json!({"apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
                          "metadata": {"name": "late"},
                          "spec": {"endpoint": {"server": "https://10.0.0.1:6443"}}}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        read_until(&mut seen, "\"name\":\"late\"", 1).await;
        assert!(seen.contains("\"ADDED\""), "{seen}");
    })
    .await;
}
