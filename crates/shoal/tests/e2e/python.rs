//! The official Kubernetes Python client (PyPI `kubernetes`) against a real `shoal serve`,
//! beside kubectl and kube-rs: the third client family users bring.
//!
//! ```text
//! test ──spawn──► shoal serve --no-controllers
//!   └──spawn──► python3 python/client_suite.py      SHOAL_KUBECONFIG=<the server's kubeconfig>
//!                 typed core/v1 · CustomObjectsApi · DynamicClient discovery
//!                 · watch from a resourceVersion · limit/_continue · 409 on a stale replace
//! ```
//!
//! The script asserts; this test fails on its non-zero exit and prints what it printed.
//! It never skips: without `python3` or the `kubernetes` package it fails and says to run
//! `./scripts/test`, which installs the pinned package.

use crate::common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::{ShoalServer, within};

/// The whole suite: a dozen round trips per section on a loaded 2-core machine, plus
/// Python's start-up and the client's import (about a second on its own).
const SUITE_DEADLINE: Duration = Duration::from_secs(120);

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/python/client_suite.py")
}

/// Fails the test, saying how to get them, when python3 or the client package is missing.
async fn require_python_client() {
    let probe = tokio::process::Command::new("python3")
        .args(["-c", "import kubernetes; print(kubernetes.__version__)"])
        .output()
        .await;
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "the Python package `kubernetes` is not importable by python3 ({}). This test \
             never skips: run the README's test command, `./scripts/test`, which installs \
             it with pip.",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!(
            "python3 could not be run ({e}). This test never skips: install CPython 3 and run \
             the README's test command, `./scripts/test`, which installs the `kubernetes` \
             package."
        ),
    }
}

#[tokio::test]
async fn the_official_python_client_passes_its_suite_against_shoal() {
    within(SUITE_DEADLINE, "the Python client suite", async {
        require_python_client().await;
        let s = ShoalServer::start(&["--no-controllers"]).await;
        let out = tokio::process::Command::new("python3")
            .arg(script())
            .env("SHOAL_KUBECONFIG", s.kubeconfig())
            .env("SHOAL_SCRATCH", s.scratch())
            // Unbuffered, so a failure's output is complete and in order.
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .expect("run python3");
        let printed = format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "the Python client suite failed ({}):\n{printed}\n{}",
            out.status,
            s.log()
        );
        assert!(
            printed.contains("all sections passed"),
            "the suite exited 0 without finishing:\n{printed}"
        );
    })
    .await;
}
