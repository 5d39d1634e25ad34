//! Shared by the integration tests: an in-process server with three member clusters,
//! a kubeconfig with one context per surface, and kubectl/table helpers.

#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use serde_json::Value;
use shoal_apiserver::{ApiServer, Registry, ServerConfig, StaticDirectory};
use shoal_core::clock::SystemClock;
use shoal_store::Store;
use tokio_util::sync::CancellationToken;

/// Generous: kubectl runs concurrently with other tests' compilations on a shared box.
pub const TEST_DEADLINE: Duration = Duration::from_secs(120);

/// Built once per test binary: generating the built-in kinds' schemas takes a while in
/// debug builds.
pub static MEMBER_REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::member_cluster);

pub async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?}: {what}"))
}

/// A server with three member clusters `c-0`, `c-1`, `c-2`.
pub struct Fleet {
    pub url: String,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    /// The top-level API's store (context `top`).
    pub top: Store,
    shutdown: CancellationToken,
}

impl Fleet {
    pub async fn start() -> Self {
        let directory = StaticDirectory::new();
        for i in 0..3 {
            directory.insert(format!("c-{i}"), Store::memory());
        }
        let shutdown = CancellationToken::new();
        let top = Store::memory();
        let server = ApiServer::new(
            top.clone(),
            Registry::shoal(),
            Arc::new(SystemClock),
            ServerConfig::default(),
            prometheus_client::registry::Registry::default(),
            shutdown.clone(),
        )
        .with_member_clusters(Arc::new(directory.clone()), MEMBER_REGISTRY.clone());
        server
            .ensure_default_namespaces()
            .await
            .expect("namespaces");
        let members = server.member_clusters().expect("members mounted");
        for name in members.directory().names() {
            let store = members.directory().lookup(&name).expect("listed");
            members
                .ensure_default_namespaces(store)
                .await
                .expect("member namespaces");
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(shoal_apiserver::serve(
            listener,
            server.router(),
            shutdown.clone(),
        ));
        let dir = tempfile::Builder::new()
            .prefix("shoal-members-")
            .tempdir()
            .expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        let mut clusters = String::new();
        let mut contexts = String::new();
        for name in ["c-0", "c-1", "c-2", "nope", "top"] {
            let server = match name {
                "top" => url.clone(),
                _ => format!("{url}/clusters/{name}"),
            };
            clusters.push_str(&format!(
                "- name: {name}\n  cluster:\n    server: {server}\n"
            ));
            contexts.push_str(&format!(
                "- name: {name}\n  context:\n    cluster: {name}\n    user: u\n"
            ));
        }
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n{clusters}contexts:\n{contexts}current-context: c-1\nusers:\n- name: u\n  user: {{}}\n"
            ),
        )
        .expect("write kubeconfig");
        Fleet {
            url,
            dir,
            kubeconfig,
            top,
            shutdown,
        }
    }

    pub fn write(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write manifest");
        p.to_str().expect("utf-8 path").to_string()
    }

    /// Runs kubectl in context `ctx`; returns (success, stdout, stderr).
    pub async fn kubectl_in(&self, ctx: &str, args: &[&str]) -> (bool, String, String) {
        let out = tokio::process::Command::new(kubectl())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .arg("--context")
            .arg(ctx)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .expect("run kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub async fn ok_in(&self, ctx: &str, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.kubectl_in(ctx, args).await;
        assert!(
            ok,
            "kubectl --context {ctx} {} failed:\nstdout: {stdout}\nstderr: {stderr}",
            args.join(" ")
        );
        stdout
    }

    /// kubectl against `c-1`, which must succeed.
    pub async fn ok(&self, args: &[&str]) -> String {
        self.ok_in("c-1", args).await
    }

    pub async fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        let out = self.ok(&args).await;
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn kubectl() -> PathBuf {
    std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .unwrap_or_else(|| {
            let p = Path::new("/usr/bin/kubectl");
            assert!(
                p.is_file(),
                "kubectl is not installed; ./scripts/test installs it"
            );
            p.to_path_buf()
        })
}

/// Rows of a kubectl table, cut at the header's column offsets (headers with one space,
/// like `NODE SELECTOR`, stay one column because columns are two spaces apart).
pub fn rows(table: &str) -> Vec<Vec<(String, String)>> {
    let mut lines = table.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return vec![];
    };
    let mut starts = vec![0];
    let bytes = header.as_bytes();
    for i in 2..bytes.len() {
        if bytes[i] != b' ' && bytes[i - 1] == b' ' && bytes[i - 2] == b' ' {
            starts.push(i);
        }
    }
    let cell = |line: &str, n: usize| {
        let s = starts[n].min(line.len());
        let e = starts
            .get(n + 1)
            .map_or(line.len(), |e| (*e).min(line.len()));
        line[s..e].trim().to_string()
    };
    let names: Vec<String> = (0..starts.len()).map(|n| cell(header, n)).collect();
    lines
        .map(|l| {
            names
                .iter()
                .enumerate()
                .map(|(n, name)| (name.clone(), cell(l, n)))
                .collect()
        })
        .collect()
}

pub fn header(table: &str) -> Vec<String> {
    rows(&format!("{table}\n-"))
        .first()
        .map(|r| r.iter().map(|(h, _)| h.clone()).collect())
        .unwrap_or_default()
}

pub fn get<'a>(row: &'a [(String, String)], col: &str) -> &'a str {
    row.iter()
        .find(|(h, _)| h == col)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no column {col} in {row:?}"))
}
