//! The dashboard in a real browser: headless Chromium driven through chromedriver
//! (WebDriver, with fantoccini) against a real `shoal serve` with a simulated fleet.
//!
//! ```text
//!  test ──spawn──► chromedriver --port P ──► chromium --headless=new
//!   │                                            │ GET /ui/, list + watch /apis/…
//!   ├──spawn──► shoal serve --fleet … ◄──────────┘
//!   └─► kubectl apply / kube-rs (the same server)
//! ```
//!
//! Screenshots go to `target/ui-screenshots/` so that a person can look at them. The
//! tests never skip: without Chromium and chromedriver (Debian's `chromium` and
//! `chromium-driver`, which scripts/test installs) they fail and say so.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ShoalServer, eventually, example, within};
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use kube::api::Api;
use serde_json::{Value, json};
use shoal_core::kinds::{Cluster, Release, ReleasePhase};
use shoal_core::taskflow::Approval;

/// How long chromedriver may take to answer `/status`.
const DRIVER_START: Duration = Duration::from_secs(20);

/// `target/ui-screenshots/`, created on first use.
fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target dir")
        .join("ui-screenshots");
    std::fs::create_dir_all(&dir).expect("create target/ui-screenshots");
    dir
}

/// A chromedriver on a free loopback port, killed on drop.
struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// Starts chromedriver and a headless Chromium session on it.
async fn browser() -> (Driver, Client) {
    let driver_bin = which("chromedriver").unwrap_or_else(|| {
        panic!("chromedriver is not installed: apt-get install chromium chromium-driver (scripts/test does)")
    });
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(driver_bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver {
        child,
        port,
        _profile: tempfile::tempdir().expect("a temp dir for the browser profile"),
    };
    let status = format!("http://127.0.0.1:{port}/status");
    eventually(DRIVER_START, "chromedriver answers /status", async || {
        reqwest::get(&status)
            .await
            .ok()?
            .status()
            .is_success()
            .then_some(())
    })
    .await;
    let mut chrome = json!({
        "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1400,1000",
            format!("--user-data-dir={}", driver._profile.path().display()),
        ],
    });
    for bin in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(bin).exists() {
            chrome["binary"] = json!(bin);
            break;
        }
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), chrome);
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session through chromedriver");
    (driver, client)
}

/// Runs `body` with a browser, closing the browser session whatever happens.
async fn with_browser(body: impl AsyncFnOnce(&Client)) {
    let (driver, client) = browser().await;
    let outcome = std::panic::AssertUnwindSafe(body(&client))
        .catch_unwind()
        .await;
    let _ = client.close().await;
    drop(driver);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Evaluates `script` (a function body that `return`s) in the page.
async fn js(client: &Client, script: &str) -> Value {
    client
        .execute(script, vec![])
        .await
        .unwrap_or_else(|e| panic!("script {script:?}: {e}"))
}

async fn text_of(client: &Client, css: &str) -> Option<String> {
    let v = js(
        client,
        &format!("const e = document.querySelector({css:?}); return e ? e.textContent : null;"),
    )
    .await;
    v.as_str().map(str::to_string)
}

/// Clicks `css` once it is there and enabled (the page re-renders on every watch event,
/// so an element found may be replaced before the click lands: try again).
async fn click(client: &Client, css: &str) {
    eventually(
        Duration::from_secs(20),
        &format!("click {css}"),
        async || {
            let e = client.find(Locator::Css(css)).await.ok()?;
            if !e.is_enabled().await.ok()? {
                return None;
            }
            e.click().await.ok()
        },
    )
    .await;
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("a screenshot");
    let path = screenshots().join(name);
    std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    eprintln!("screenshot: {}", path.display());
}

async fn cluster_count(server: &ShoalServer) -> usize {
    let api: Api<Cluster> = Api::all(server.client());
    api.list(&Default::default())
        .await
        .map(|l| l.items.len())
        .unwrap_or(0)
}

async fn release(server: &ShoalServer, name: &str) -> Option<Release> {
    let api: Api<Release> = Api::all(server.client());
    api.get_opt(name).await.ok()?
}

fn phase(r: &Release) -> Option<ReleasePhase> {
    r.status.as_ref().and_then(|s| s.phase)
}

/// `done` of the page's "done/total".
fn done(progress: &str) -> Option<u32> {
    progress.split('/').next()?.parse().ok()
}

async fn walkthrough_server() -> ShoalServer {
    let server = ShoalServer::start(&[
        "--store",
        "memory",
        "--fleet",
        &example("release/fleet.yaml"),
        "--time-scale",
        "600",
    ])
    .await;
    eventually(
        Duration::from_secs(60),
        "the 210 simulated clusters are registered",
        async || (cluster_count(&server).await == 210).then_some(()),
    )
    .await;
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_map_draws_every_cluster_grouped_by_env_and_region() {
    within(Duration::from_secs(180), "the fleet map test", async {
        let server = walkthrough_server().await;
        with_browser(async |b| {
            b.goto(&server.at("/ui/")).await.expect("open the dashboard");
            eventually(Duration::from_secs(30), "the map draws 210 tiles", async || {
                let n = js(b, "return document.querySelectorAll('#map .tiles i').length").await;
                (n == 210).then_some(())
            })
            .await;
            let envs = js(b, "return [...document.querySelectorAll('#map .env > h2')].map(h => h.firstChild.textContent.trim())").await;
            assert_eq!(envs, json!(["test", "staging", "canary", "prod"]), "in release order");
            // Every tile is coloured by health: the Ready condition, or unknown without one
            // (no controller sets Cluster conditions yet).
            eventually(Duration::from_secs(30), "every tile is coloured by health", async || {
                let n = js(b, "return document.querySelectorAll('#map .tiles i:is(.s-ready, .s-notready, .s-unknown)').length").await;
                (n == 210).then_some(())
            })
            .await;
            // Hovering shows the cluster's attributes and node count.
            let tile = b.find(Locator::Css("#map .tiles i")).await.unwrap();
            let name = tile.attr("data-n").await.unwrap().unwrap();
            tile.click().await.unwrap();
            let detail = b.find(Locator::Css("#detail")).await.unwrap().text().await.unwrap();
            assert!(detail.contains(&name) && detail.contains("nodes") && detail.contains("region"), "{detail}");
            screenshot(b, "fleet-map.png").await;
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_shows_live_and_the_page_pauses_it_and_approves_its_gated_wave() {
    within(Duration::from_secs(400), "the release page test", async {
        let server = walkthrough_server().await;
        with_browser(async |b| {
            // The page is open before the release exists: everything after arrives live.
            b.goto(&server.at("/ui/#/release/agent-1.5.0"))
                .await
                .expect("open the release page");
            eventually(
                Duration::from_secs(20),
                "the page says there is no such release yet",
                async || {
                    text_of(b, "main")
                        .await
                        .filter(|t| t.contains("No such release"))
                        .map(|_| ())
                },
            )
            .await;
            server
                .kubectl_ok(&["apply", "-f", &example("release/component.yaml")])
                .await;
            server
                .kubectl_ok(&["apply", "-f", &server.patient_release("release/release-good.yaml")])
                .await;

            // It runs until the gated wave 3; the page follows without a reload.
            eventually(
                Duration::from_secs(120),
                "the page shows WaitingForApproval",
                async || (text_of(b, "#phase").await? == "WaitingForApproval").then_some(()),
            )
            .await;
            let gated = done(&text_of(b, "#progress").await.unwrap()).expect("a done count");
            assert!(gated > 0, "the first two waves are done before the gate");
            assert_eq!(
                text_of(b, "#wave").await.unwrap().split('/').next(),
                Some("3")
            );
            screenshot(b, "release-waiting-for-approval.png").await;

            // Approving in the page creates the Approval and opens the wave.
            click(b, "#approve").await;
            let approvals: Api<Approval> = Api::namespaced(server.client(), "default");
            let a = eventually(Duration::from_secs(20), "the Approval exists", async || {
                approvals.get_opt("agent-1.5.0-wave-3").await.ok()?
            })
            .await;
            assert_eq!(
                (a.spec.release.as_deref(), a.spec.wave),
                (Some("agent-1.5.0"), Some(3))
            );
            eventually(
                Duration::from_secs(60),
                "the release leaves WaitingForApproval",
                async || {
                    let r = release(&server, "agent-1.5.0").await?;
                    (phase(&r) != Some(ReleasePhase::WaitingForApproval)).then_some(())
                },
            )
            .await;
            // The done count in the page grows past the gate, live.
            eventually(
                Duration::from_secs(120),
                "the page's done count grows",
                async || (done(&text_of(b, "#progress").await?)? > gated).then_some(()),
            )
            .await;

            // Pause is a merge patch of spec.paused, seen through the API.
            click(b, "#pause").await;
            eventually(Duration::from_secs(20), "spec.paused is true", async || {
                release(&server, "agent-1.5.0")
                    .await?
                    .spec
                    .paused
                    .then_some(())
            })
            .await;
            eventually(
                Duration::from_secs(30),
                "the page shows the release paused",
                async || {
                    text_of(b, "main")
                        .await
                        .filter(|t| t.contains("paused"))
                        .map(|_| ())
                },
            )
            .await;
            screenshot(b, "release-paused.png").await;
            click(b, "#resume").await;
            eventually(
                Duration::from_secs(20),
                "spec.paused is false again",
                async || (!release(&server, "agent-1.5.0").await?.spec.paused).then_some(()),
            )
            .await;

            // The fleet map coloured by this release (a hash change, not a reload).
            b.goto(&server.at("/ui/#/?release=agent-1.5.0"))
                .await
                .unwrap();
            eventually(
                Duration::from_secs(30),
                "tiles coloured by the release",
                async || {
                    let n = js(
                        b,
                        "return document.querySelectorAll('#map .tiles i.s-succeeded').length",
                    )
                    .await;
                    (n.as_u64()? > u64::from(gated)).then_some(())
                },
            )
            .await;
            screenshot(b, "fleet-map-by-release.png").await;

            // The first cluster's run: its tasks in dependency order, all succeeded.
            b.goto(&server.at("/ui/#/release/agent-1.5.0")).await.unwrap();
            let href = eventually(Duration::from_secs(20), "wave 1 links its run", async || {
                let v = js(b, "const a = document.querySelector('.wave[data-wave=\"1\"] a'); return a ? a.getAttribute('href') : null").await;
                v.as_str().map(str::to_string)
            })
            .await;
            b.goto(&server.at(&format!("/ui/{href}"))).await.unwrap();
            let states = eventually(Duration::from_secs(20), "the run page lists its tasks", async || {
                let v = js(b, "return [...document.querySelectorAll('#tasks tr[data-task]')].map(r => r.children[2].textContent.trim())").await;
                v.as_array().filter(|a| !a.is_empty()).cloned()
            })
            .await;
            assert!(states.iter().all(|s| s == "Succeeded"), "{states:?}");
            screenshot(b, "run.png").await;

            // The component: a bar per version, 1.5.0 among them.
            b.goto(&server.at("/ui/#/component/node-agent")).await.unwrap();
            eventually(Duration::from_secs(60), "the component chart shows 1.5.0", async || {
                let v = js(b, "const s = document.querySelector('#versions'); return s ? s.textContent : null").await;
                v.as_str().filter(|t| t.contains("1.5.0")).map(|_| ())
            })
            .await;
            screenshot(b, "component.png").await;
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_release_shows_its_failures_and_rolled_back_clusters() {
    within(Duration::from_secs(400), "the failing release test", async {
        let server = ShoalServer::start(&[
            "--store", "memory",
            "--fleet", &example("release/fleet.yaml"),
            "--faults", &example("release/faults.yaml"),
            "--time-scale", "600",
        ])
        .await;
        eventually(Duration::from_secs(60), "the 210 simulated clusters are registered", async || {
            (cluster_count(&server).await == 210).then_some(())
        })
        .await;
        server.kubectl_ok(&["apply", "-f", &example("release/component.yaml")]).await;
        server.kubectl_ok(&["apply", "-f", &server.patient_release("release/release-bad.yaml")]).await;
        with_browser(async |b| {
            b.goto(&server.at("/ui/#/release/agent-1.6.0")).await.expect("open the release page");
            // 1.6.0 crash-loops on prod's 5.10-kernel nodes; RollbackAll undoes the rest.
            eventually(Duration::from_secs(300), "the page shows the release rolled back", async || {
                (text_of(b, "#phase").await? == "RolledBack").then_some(())
            })
            .await;
            let failures = js(b, "return [...document.querySelectorAll('#failures tr')].slice(1).map(r => r.children[0].textContent)").await;
            let failures = failures.as_array().expect("a failures table");
            assert!(!failures.is_empty() && failures.iter().all(|c| c.as_str().unwrap().starts_with("prod-")), "{failures:?}");
            eventually(Duration::from_secs(30), "rolled-back tiles", async || {
                let n = js(b, "return document.querySelectorAll('.wave .tiles i.s-rolledback').length").await;
                (n.as_u64()? > 0).then_some(())
            })
            .await;
            screenshot(b, "release-rolled-back.png").await;
        })
        .await;
    })
    .await;
}

/// Types `text` into the input `css` (after clearing it).
async fn type_into(client: &Client, css: &str, text: &str) {
    let e = eventually(
        Duration::from_secs(20),
        &format!("find {css}"),
        async || client.find(Locator::Css(css)).await.ok(),
    )
    .await;
    e.clear()
        .await
        .unwrap_or_else(|err| panic!("clear {css}: {err}"));
    e.send_keys(text)
        .await
        .unwrap_or_else(|err| panic!("type into {css}: {err}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_asks_for_the_token_refuses_a_wrong_one_and_works_with_the_right_one() {
    within(Duration::from_secs(120), "the sign-in test", async {
        let server = ShoalServer::start_with_token(
            "s3cret-token",
            &[
                "--store",
                "memory",
                "--sim-clusters",
                "3",
                "--sim-nodes",
                "1",
            ],
        )
        .await;
        // The API wants the token; the page itself does not (a browser cannot send one).
        let http = reqwest::Client::new();
        let api = http.get(server.at(common::CLUSTERS)).send().await.unwrap();
        assert_eq!(api.status(), 401, "the API needs the token");
        let page = http.get(server.at("/ui/")).send().await.unwrap();
        assert_eq!(page.status(), 200, "the dashboard's assets are public");
        with_browser(async |b| {
            b.goto(&server.at("/ui/"))
                .await
                .expect("open the dashboard");
            eventually(Duration::from_secs(20), "the sign-in form", async || {
                text_of(b, "#signin")
                    .await
                    .filter(|t| t.contains("token"))
                    .map(|_| ())
            })
            .await;
            assert_eq!(
                js(
                    b,
                    "return document.querySelectorAll('#map .tiles i').length"
                )
                .await,
                0,
                "nothing is shown without the token"
            );
            screenshot(b, "sign-in.png").await;

            type_into(b, "#token", "not-the-token").await;
            click(b, "#signin-submit").await;
            eventually(
                Duration::from_secs(20),
                "a wrong token is refused",
                async || {
                    text_of(b, "#signin-error")
                        .await
                        .filter(|t| t.contains("refused"))
                        .map(|_| ())
                },
            )
            .await;
            assert_eq!(
                js(b, "return sessionStorage.getItem('shoal.token')").await,
                Value::Null,
                "a refused token is not kept"
            );

            type_into(b, "#token", "s3cret-token").await;
            click(b, "#signin-submit").await;
            eventually(
                Duration::from_secs(30),
                "the map draws 3 tiles once signed in",
                async || {
                    let n = js(
                        b,
                        "return document.querySelectorAll('#map .tiles i').length",
                    )
                    .await;
                    (n == 3).then_some(())
                },
            )
            .await;
            assert_eq!(
                js(b, "return document.getElementById('signin')").await,
                Value::Null
            );
            eventually(
                Duration::from_secs(20),
                "the watches are live",
                async || (text_of(b, "#conn").await? == "live").then_some(()),
            )
            .await;

            // The token lasts as long as the tab: a reload needs no sign-in.
            b.refresh().await.expect("reload");
            eventually(
                Duration::from_secs(30),
                "the map draws again after a reload",
                async || {
                    let n = js(
                        b,
                        "return document.querySelectorAll('#map .tiles i').length",
                    )
                    .await;
                    (n == 3).then_some(())
                },
            )
            .await;
            assert_eq!(
                js(b, "return document.getElementById('signin')").await,
                Value::Null
            );

            // A token the server no longer takes brings the form back, saying so.
            js(
                b,
                "sessionStorage.setItem('shoal.token', 'stale'); return null",
            )
            .await;
            b.refresh().await.expect("reload");
            eventually(
                Duration::from_secs(20),
                "a stale token is refused",
                async || {
                    text_of(b, "#signin-error")
                        .await
                        .filter(|t| t.contains("refused"))
                        .map(|_| ())
                },
            )
            .await;
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_page_draws_the_pipeline_as_a_graph_with_a_node_per_task_and_an_edge_per_dependency()
 {
    within(Duration::from_secs(120), "the run DAG test", async {
        let server = ShoalServer::start(&["--store", "memory"]).await;
        // A diamond, a tail and a finally task: a → (b, c) → d → e; finally f.
        let yaml = "apiVersion: shoal.io/v1alpha1\nkind: Task\nmetadata: {name: noop}\nspec: {executor: noop}\n---\n\
            apiVersion: shoal.io/v1alpha1\nkind: Task\nmetadata: {name: wait}\n\
            spec:\n  executor: wait\n  params: [{name: duration, default: 300ms}]\n---\n\
            apiVersion: shoal.io/v1alpha1\nkind: Pipeline\nmetadata: {name: diamond}\nspec:\n  tasks:\n\
            \x20 - {name: fetch, taskRef: {name: noop}}\n\
            \x20 - {name: build-linux, taskRef: {name: wait}, runAfter: [fetch]}\n\
            \x20 - {name: build-darwin, taskRef: {name: wait}, runAfter: [fetch]}\n\
            \x20 - {name: package, taskRef: {name: noop}, runAfter: [build-linux, build-darwin]}\n\
            \x20 - {name: publish, taskRef: {name: wait}, runAfter: [package]}\n\
            \x20 finally:\n\
            \x20 - {name: notify, taskRef: {name: noop}}\n---\n\
            apiVersion: shoal.io/v1alpha1\nkind: PipelineRun\nmetadata: {name: diamond-1}\n\
            spec:\n  pipelineRef: {name: diamond}\n";
        let path = server.write_file("diamond.yaml", yaml);
        server.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]).await;
        server
            .kubectl_ok(&["wait", "--for=condition=Succeeded", "pipelinerun/diamond-1", "--timeout=60s"])
            .await;
        with_browser(async |b| {
            b.goto(&server.at("/ui/#/run/default/diamond-1")).await.expect("open the run page");
            let nodes = eventually(Duration::from_secs(20), "the DAG has its nodes", async || {
                let v = js(b, "return [...document.querySelectorAll('#dag g.node')].map(g => g.dataset.task)").await;
                v.as_array().filter(|a| a.len() == 6).cloned()
            })
            .await;
            let mut nodes: Vec<&str> = nodes.iter().map(|v| v.as_str().unwrap()).collect();
            nodes.sort_unstable();
            assert_eq!(nodes, ["build-darwin", "build-linux", "fetch", "notify", "package", "publish"]);
            let edges = js(b, "return [...document.querySelectorAll('#dag path.edge')].map(p => p.dataset.from + '>' + p.dataset.to).sort()").await;
            assert_eq!(
                edges,
                json!(["build-darwin>package", "build-linux>package", "fetch>build-darwin", "fetch>build-linux", "package>publish"]),
                "one edge per runAfter"
            );
            // Columns by dependency depth: the builds side by side, after fetch, before
            // package; finally last.
            let x = js(b, "const o = {}; for (const g of document.querySelectorAll('#dag g.node')) o[g.dataset.task] = g.transform.baseVal[0].matrix.e; return o").await;
            let at = |n: &str| x[n].as_f64().unwrap_or_else(|| panic!("x of {n}: {x}"));
            assert!(at("fetch") < at("build-linux"), "{x}");
            assert_eq!(at("build-linux"), at("build-darwin"), "{x}");
            assert!(at("build-linux") < at("package") && at("package") < at("publish"), "{x}");
            assert!(at("publish") < at("notify"), "{x}");
            // Every node is coloured by its state and says how long it took.
            let states = js(b, "return [...document.querySelectorAll('#dag g.node')].map(g => g.getAttribute('class') + ' ' + g.querySelector('text.info').textContent)").await;
            for s in states.as_array().unwrap() {
                let s = s.as_str().unwrap();
                assert!(s.contains("s-succeeded") && s.contains("Succeeded · ") && s.ends_with('s'), "{s}");
            }
            // The timeline table stays below the graph.
            let rows = js(b, "return document.querySelectorAll('#tasks tr[data-task]').length").await;
            assert_eq!(rows, 6);
            screenshot(b, "run-dag.png").await;
        })
        .await;
    })
    .await;
}

/// The benchmark of the issue: the fleet map at 10,000 clusters, from navigation to every
/// tile drawn, as the page measures it with performance.now(). Not a timed test: it
/// prints the figure. `cargo test -p shoal --test ui -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: starts 10,000 simulated clusters"]
async fn fleet_map_render_time_at_10000_clusters() {
    within(Duration::from_secs(900), "the 10k fleet map measurement", async {
        let server = ShoalServer::start(&[
            "--store", "memory", "--sim-clusters", "10000", "--sim-nodes", "1",
        ])
        .await;
        let t = Instant::now();
        eventually(Duration::from_secs(600), "10,000 clusters are registered", async || {
            tokio::time::sleep(Duration::from_secs(1)).await;
            (cluster_count(&server).await == 10_000).then_some(())
        })
        .await;
        eprintln!("10,000 clusters registered in {:?}", t.elapsed());
        with_browser(async |b| {
            for round in 1..=3 {
                b.goto(&server.at("/ui/")).await.expect("open the dashboard");
                let drawn = eventually(Duration::from_secs(120), "the map draws 10,000 tiles", async || {
                    let v = js(b, "return window.shoalUi.fleetDrawnAt === null ? null : [window.shoalUi.fleetDrawnAt, window.shoalUi.fleetTiles]").await;
                    v.as_array().cloned()
                })
                .await;
                let dom = js(b, "return document.querySelectorAll('#map .tiles i').length").await;
                eprintln!(
                    "round {round}: fleet map drew {} tiles ({} in the DOM) {:.0} ms after navigation",
                    drawn[1], dom, drawn[0].as_f64().unwrap()
                );
                assert_eq!(drawn[1], 10_000);
            }
            screenshot(b, "fleet-map-10k.png").await;
        })
        .await;
    })
    .await;
}
