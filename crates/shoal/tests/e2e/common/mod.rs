//! The harness every integration test shares: a real `shoal serve` in a temp dir, and
//! the three ways tests talk to it (kubectl, kube-rs, raw HTTP).
//!
//! ```text
//!  test ──spawn──► shoal serve --data-dir <tmp>/data --listen 127.0.0.1:0
//!   │                 stdout: "shoal is serving at http://…", "kubeconfig: …"
//!   │                 stderr: <tmp>/server-<n>.log (printed when a helper fails)
//!   ├─► kubectl --kubeconfig <tmp>/data/kubeconfig --cache-dir <tmp>/kubectl-cache …
//!   ├─► kube::Client   (kube::Config::new(url))
//!   ├─► reqwest        (url)
//!   └─► shoal get|apply|describe|delete   (SHOAL_SERVER=url)
//! ```
//!
//! Each test owns its server, on a port the kernel picks. Dropping a [`ShoalServer`]
//! sends SIGKILL, so a failing or hanging test never leaks a process. Every wait polls
//! against a deadline ([`eventually`], [`within`]); the few fixed sleeps in the tests are
//! the subject of the test (the crash test's write window, a settle check), not waits.
//!
//! The tests never skip: when `kubectl` is missing they fail and say how to get it.

// Each test binary compiles this module and uses its own subset of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shoal_core::kinds::{Cluster, ClusterSpec, Endpoint};

/// How long a server may take to print its URL and answer `/readyz`. A debug build
/// with a simulated fleet starts in about 5 s on a quiet 2-core machine and was seen
/// taking over 20 s with both cores busy compiling: this only tells a hang from a slow
/// start, so the margin is wide.
pub const START_DEADLINE: Duration = Duration::from_secs(90);

/// How long one kubectl or shoal CLI invocation may take before the test calls it hung.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(30);

/// The budget of one whole test (servers, commands, polls).
pub const TEST_DEADLINE: Duration = Duration::from_secs(60);

/// Between two probes of a condition that is expected to become true.
const POLL_TICK: Duration = Duration::from_millis(50);

/// Awaits `fut`, failing the test with `what` if it takes longer than `limit`.
pub async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("hung: {what} (no result within {limit:?})"),
    }
}

/// Waits until exactly `n` Clusters match `selector` and the prober has found every one
/// Ready (condition `Ready=True`); returns them.
pub async fn clusters_ready(
    clusters: &kube::Api<Cluster>,
    selector: &str,
    n: usize,
    limit: Duration,
) -> Vec<Cluster> {
    let lp = kube::api::ListParams::default().labels(selector);
    eventually(
        limit,
        &format!("{n} clusters Ready ({selector:?})"),
        async || {
            let list = clusters.list(&lp).await.ok()?.items;
            let ready = list
                .iter()
                .filter(|c| {
                    c.status.as_ref().is_some_and(|s| {
                        s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                    })
                })
                .count();
            (list.len() == n && ready == n).then_some(list)
        },
    )
    .await
}

/// Polls `probe` until it returns `Some`, failing the test with `what` after `limit`.
pub async fn eventually<T>(
    limit: Duration,
    what: &str,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up after {limit:?}: {what}");
        tokio::time::sleep(POLL_TICK).await;
    }
}

/// A running `shoal serve` in its own temp dir.
#[derive(Debug)]
pub struct ShoalServer {
    root: tempfile::TempDir,
    args: Vec<String>,
    child: Option<Child>,
    url: String,
    kubeconfig: PathBuf,
    /// How many times the server was started; numbers the log files.
    starts: u32,
}

impl ShoalServer {
    /// Starts `shoal serve` with `args` (besides `--data-dir` and `--listen`) on a fresh
    /// data dir and waits until it is ready.
    pub async fn start(args: &[&str]) -> Self {
        let root = tempdir();
        Self::start_in(root, args.iter().map(|a| a.to_string()).collect()).await
    }

    /// Starts a server that requires `Authorization: Bearer <token>`.
    pub async fn start_with_token(token: &str, args: &[&str]) -> Self {
        let root = tempdir();
        let token_file = root.path().join("token");
        std::fs::write(&token_file, format!("{token}\n")).expect("write the token file");
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.push("--token-file".into());
        all.push(token_file.display().to_string());
        Self::start_in(root, all).await
    }

    async fn start_in(root: tempfile::TempDir, args: Vec<String>) -> Self {
        let mut s = ShoalServer {
            root,
            args,
            child: None,
            url: String::new(),
            kubeconfig: PathBuf::new(),
            starts: 0,
        };
        s.spawn().await;
        s
    }

    /// The base URL, `http://127.0.0.1:PORT`. It changes on [`ShoalServer::restart`].
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The kubeconfig the server wrote for itself.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The store's data dir, which survives restarts.
    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// A scratch directory for the test's own files (manifests, …).
    pub fn scratch(&self) -> &Path {
        self.root.path()
    }

    /// Writes `text` to `name` in the scratch dir and returns its path.
    pub fn write_file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.root.path().join(name);
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }

    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "the server is already running");
        self.starts += 1;
        let log_path = self.root.path().join(format!("server-{}.log", self.starts));
        let log = std::fs::File::create(&log_path).expect("create the server log");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
            .arg("serve")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen", "127.0.0.1:0"])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn shoal serve");

        // A thread (not a task) drains stdout for the whole life of the process, so the
        // server never blocks on, or dies of, a closed pipe whatever runtime the test uses.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let stdout = child.stdout.take().expect("stdout is piped");
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        self.child = Some(child);

        let banner = tokio::time::timeout(START_DEADLINE, async {
            let (mut url, mut kubeconfig) = (None, None);
            while let Some(line) = rx.recv().await {
                if let Some(u) = line.strip_prefix("shoal is serving at ") {
                    url = Some(u.trim().to_string());
                }
                if let Some(k) = line.strip_prefix("kubeconfig: ") {
                    kubeconfig = Some(PathBuf::from(k.trim()));
                }
                if let (Some(u), Some(k)) = (&url, &kubeconfig) {
                    return Some((u.clone(), k.clone()));
                }
            }
            None
        })
        .await;
        let (url, kubeconfig) = match banner {
            Ok(Some(b)) => b,
            Ok(None) => panic!(
                "shoal serve exited ({:?}) before printing its URL and kubeconfig\n{}",
                self.child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten()),
                self.log()
            ),
            Err(_) => panic!(
                "hung: shoal serve printed no URL within {START_DEADLINE:?}\n{}",
                self.log()
            ),
        };
        assert!(
            url.starts_with("http://127.0.0.1:") || url.starts_with("https://127.0.0.1:"),
            "unexpected URL {url:?}"
        );
        self.url = url;
        self.kubeconfig = kubeconfig;

        let http = reqwest::Client::new();
        let ready = format!("{}/readyz", self.url);
        // Over HTTPS, as a user would: through the kubeconfig the server wrote.
        let tls_client = if self.url.starts_with("https://") {
            let mut config = self.config_from_kubeconfig().await;
            // An operator's certificate need not name 127.0.0.1: only whether the server
            // answers is asked here, and the test checks the certificate itself.
            config.accept_invalid_certs = self.args.iter().any(|a| a == "--tls-cert-file");
            Some(kube::Client::try_from(config).expect("build a kube client"))
        } else {
            None
        };
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let answered = match &tls_client {
                Some(c) => c
                    .request_text(http::Request::get("/readyz").body(Vec::new()).unwrap())
                    .await
                    .is_ok(),
                None => http
                    .get(&ready)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success()),
            };
            if answered {
                break;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "shoal serve exited ({status}) before it was ready\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "hung: {ready} did not answer 200 within {START_DEADLINE:?}\n{}",
                self.log()
            );
            tokio::time::sleep(POLL_TICK).await;
        }
    }

    /// The server's process id (for signals such as SIGSTOP and SIGCONT).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// SIGKILLs the server (no graceful shutdown) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            // `Child::kill` is SIGKILL on Unix.
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits up to `limit` for a graceful exit; returns the exit status.
    pub async fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let pid = self.child.as_ref().expect("the server is running").id();
        // No libc in the tests: kill(1) sends the signal.
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + limit;
        loop {
            let child = self.child.as_mut().expect("the server is running");
            if let Some(status) = child.try_wait().expect("poll the server process") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "hung: shoal serve did not exit within {limit:?} of SIGTERM\n{}",
                self.log()
            );
            tokio::time::sleep(POLL_TICK).await;
        }
    }

    /// SIGKILLs the server if it runs, then starts it again on the same data dir (and a
    /// new port: read [`ShoalServer::url`] again).
    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn().await;
    }

    /// Everything the server wrote to stderr, every start, for failure messages.
    pub fn log(&self) -> String {
        let mut out = String::new();
        for n in 1..=self.starts {
            let p = self.root.path().join(format!("server-{n}.log"));
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            // The tail is what explains a failure; keep messages readable.
            let tail: String = {
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(40)..].join("\n")
            };
            out.push_str(&format!("--- server log {n} (last 40 lines) ---\n{tail}\n"));
        }
        out
    }

    /// A kube-rs client configured from the kubeconfig the server wrote (its CA, token).
    pub async fn client_from_kubeconfig(&self) -> kube::Client {
        kube::Client::try_from(self.config_from_kubeconfig().await).expect("build a kube client")
    }

    /// The kube-rs config of the kubeconfig the server wrote.
    pub async fn config_from_kubeconfig(&self) -> kube::Config {
        let kc =
            kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("read the kubeconfig");
        kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("a usable kubeconfig")
    }

    /// A kube-rs client for this server.
    pub fn client(&self) -> kube::Client {
        let url = self.url.parse().expect("the server URL is a valid URI");
        kube::Client::try_from(kube::Config::new(url)).expect("build a kube client")
    }

    /// `{url}{path}`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// A kubectl command pointed at this server (for callers that stream its output).
    pub fn kubectl_command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(kubectl_path());
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            // A private discovery cache: ports are reused across runs.
            .arg("--cache-dir")
            .arg(self.root.path().join("kubectl-cache"))
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    /// Runs kubectl against this server.
    pub async fn kubectl(&self, args: &[&str]) -> Run {
        let what = format!("kubectl {}", args.join(" "));
        run(self.kubectl_command(args), &what).await
    }

    /// Runs kubectl, asserts it succeeded and returns its stdout.
    pub async fn kubectl_ok(&self, args: &[&str]) -> String {
        let r = self.kubectl(args).await;
        assert!(
            r.status.success(),
            "kubectl {} failed ({}):\nstdout: {}\nstderr: {}\n{}",
            args.join(" "),
            r.status,
            r.stdout,
            r.stderr,
            self.log()
        );
        r.stdout
    }

    /// Runs kubectl, asserts it failed and returns its stderr.
    pub async fn kubectl_fails(&self, args: &[&str]) -> String {
        let r = self.kubectl(args).await;
        assert!(
            !r.status.success(),
            "kubectl {} should have failed but succeeded:\nstdout: {}\nstderr: {}",
            args.join(" "),
            r.stdout,
            r.stderr
        );
        r.stderr
    }

    /// Runs the shoal CLI (`shoal get …`) against this server.
    pub async fn shoal(&self, args: &[&str]) -> Run {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_shoal"));
        c.args(args)
            .env("SHOAL_SERVER", &self.url)
            .env_remove("SHOAL_TOKEN")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        run(c, &format!("shoal {}", args.join(" "))).await
    }

    /// Runs the shoal CLI, asserts it succeeded and returns its stdout.
    pub async fn shoal_ok(&self, args: &[&str]) -> String {
        let r = self.shoal(args).await;
        assert!(
            r.status.success(),
            "shoal {} failed ({}):\nstdout: {}\nstderr: {}",
            args.join(" "),
            r.status,
            r.stdout,
            r.stderr
        );
        r.stdout
    }
}

impl Drop for ShoalServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("shoal-it-")
        .tempdir()
        .expect("create a temp dir")
}

/// The outcome of a command.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

async fn run(mut cmd: tokio::process::Command, what: &str) -> Run {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = within(COMMAND_DEADLINE, what, cmd.output())
        .await
        .unwrap_or_else(|e| panic!("failed to run {what}: {e}"));
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The kubectl binary: `$KUBECTL`, else the first `kubectl` on `PATH`.
///
/// # Panics
/// When there is none: these tests exist to prove kubectl works against shoal, so a
/// machine without kubectl fails them rather than skipping them.
pub fn kubectl_path() -> &'static Path {
    static KUBECTL: OnceLock<PathBuf> = OnceLock::new();
    KUBECTL.get_or_init(|| {
        let from_env = std::env::var_os("KUBECTL")
            .map(PathBuf::from)
            .filter(|p| p.is_file());
        from_env
            .or_else(|| {
                std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                    .map(|d| d.join("kubectl"))
                    .find(|p| p.is_file())
            })
            .unwrap_or_else(|| {
                panic!(
                    "kubectl is not installed (not on PATH, $KUBECTL unset). These tests drive \
                     the real kubectl and never skip: run the README's test command, \
                     `./scripts/test`, which installs Debian's `kubernetes-client` when kubectl \
                     is missing."
                )
            })
    })
}

/// kubectl's client minor version (`32` for v1.32.4).
pub fn kubectl_minor() -> u32 {
    static MINOR: OnceLock<u32> = OnceLock::new();
    *MINOR.get_or_init(|| {
        let out = std::process::Command::new(kubectl_path())
            .args(["version", "--client", "-o", "json"])
            .output()
            .expect("run kubectl version --client");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "kubectl version --client -o json printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        let minor = v["clientVersion"]["minor"].as_str().unwrap_or("");
        minor
            .trim_end_matches(|c: char| !c.is_ascii_digit())
            .parse()
            .unwrap_or_else(|_| panic!("unexpected kubectl minor version {minor:?}"))
    })
}

/// Extra `kubectl apply` flags for this kubectl: before 1.27 client-side validation
/// reads OpenAPI v2, which shoal does not serve.
pub fn apply_flags() -> &'static [&'static str] {
    if kubectl_minor() < 27 {
        &["--validate=false"]
    } else {
        &[]
    }
}

/// Parses a column-aligned table (kubectl's and shoal's `get` output) into rows keyed by
/// header. Cells are cut at the header's column offsets, so empty cells stay empty.
pub fn parse_table(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let mut starts = Vec::new();
    let mut prev_space = true;
    for (i, ch) in header.char_indices() {
        if !ch.is_whitespace() && prev_space {
            starts.push(i);
        }
        prev_space = ch.is_whitespace();
    }
    let names: Vec<String> = starts
        .iter()
        .enumerate()
        .map(|(n, s)| {
            let end = starts.get(n + 1).copied().unwrap_or(header.len());
            header[*s..end].trim().to_string()
        })
        .collect();
    lines
        .map(|line| {
            names
                .iter()
                .enumerate()
                .map(|(n, name)| {
                    let s = starts[n].min(line.len());
                    let e = starts
                        .get(n + 1)
                        .copied()
                        .unwrap_or(line.len())
                        .min(line.len());
                    (name.clone(), line[s..e].trim().to_string())
                })
                .collect()
        })
        .collect()
}

/// The header of a column-aligned table, as words.
pub fn table_header(text: &str) -> Vec<String> {
    text.lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// The path of the Cluster collection.
pub const CLUSTERS: &str = "/apis/shoal.io/v1alpha1/clusters";

/// A Cluster with attribute labels, as kube-rs sends it.
pub fn mk_cluster(name: &str, labels: &[(&str, &str)]) -> Cluster {
    let mut c = Cluster::new(
        name,
        ClusterSpec {
            endpoint: Endpoint {
                server: format!("https://{name}.example.test:6443"),
                certificate_authority_data: None,
                insecure_skip_tls_verify: None,
                tls_server_name: None,
            },
            credentials_ref: None,
        },
    );
    c.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    c
}

/// A Cluster as a JSON body for raw HTTP.
pub fn mk_cluster_json(name: &str, env: &str) -> Value {
    json!({
        "apiVersion": "shoal.io/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": name, "labels": {"env": env}},
        "spec": {"endpoint": {"server": format!("https://{name}.example.test:6443")}},
    })
}

/// A Cluster manifest in YAML, as a user writes it for kubectl or `shoal apply`.
pub fn mk_cluster_yaml(name: &str, env: &str, region: &str, tier: &str) -> String {
    format!(
        "apiVersion: shoal.io/v1alpha1\n\
         kind: Cluster\n\
         metadata:\n  \
           name: {name}\n  \
           labels:\n    \
             env: {env}\n    \
             region: {region}\n    \
             tier: \"{tier}\"\n\
         spec:\n  \
           endpoint:\n    \
             server: https://{name}.example.test:6443\n"
    )
}

/// The path of `path` under the repository's `examples/`.
pub fn example(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(path)
        .display()
        .to_string()
}

impl ShoalServer {
    /// A copy (in the scratch dir) of an example release whose steps may take a virtual
    /// day: at hundreds of times real speed on a loaded 2-core CI machine the default 30
    /// virtual minutes are seconds of real time, and a starved step would fail for no
    /// fault of the fleet.
    pub fn patient_release(&self, example_path: &str) -> String {
        let text = std::fs::read_to_string(example(example_path)).expect("read the example");
        let text = text.replacen("  strategy:\n", "  strategy:\n    stepTimeout: 24h\n", 1);
        assert!(
            text.contains("stepTimeout: 24h"),
            "{example_path} has a strategy"
        );
        let name = example_path.rsplit('/').next().unwrap_or("release.yaml");
        self.write_file(name, &text).display().to_string()
    }
}

/// A team's own services, as release checks call them: a webhook at `/hook` that answers
/// 503 ("p99 latency doubled since the change") after a step (`phase: post`) on the
/// cluster named in `failing` (none while it is empty) and 200 otherwise, recording every
/// call; and a Prometheus at `/api/v1/query` whose every query returns `error_rate`.
pub struct TeamServices {
    pub url: String,
    pub failing: std::sync::Arc<std::sync::Mutex<String>>,
    pub calls: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

/// Starts [`TeamServices`] on a free loopback port.
pub async fn team_services(error_rate: f64) -> TeamServices {
    use axum::routing::{get, post};
    let failing = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (bad, seen) = (failing.clone(), calls.clone());
    let app = axum::Router::new()
        .route(
            "/hook",
            post(move |axum::Json(body): axum::Json<serde_json::Value>| {
                let (bad, seen) = (bad.clone(), seen.clone());
                async move {
                    seen.lock().unwrap().push(body.clone());
                    let bad = bad.lock().unwrap().clone();
                    if !bad.is_empty() && body["cluster"] == bad.as_str() && body["phase"] == "post"
                    {
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "p99 latency doubled since the change",
                        )
                    } else {
                        (axum::http::StatusCode::OK, "ok")
                    }
                }
            }),
        )
        .route(
            "/api/v1/query",
            get(move || async move {
                axum::Json(
                    serde_json::json!({"status": "success", "data": {"resultType": "vector",
                    "result": [{"metric": {}, "value": [1.7e9, error_rate.to_string()]}]}}),
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    TeamServices {
        url,
        failing,
        calls,
    }
}
