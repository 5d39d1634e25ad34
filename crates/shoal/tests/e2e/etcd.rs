//! `shoal serve --store etcd://…`: the real binary on a real (throwaway) etcd.
//!
//! ```text
//!  test ──start──► etcd (loopback, temp dir)
//!    │                ▲            ▲
//!    ├─► shoal serve A ┘            │   --store etcd://127.0.0.1:PORT
//!    └─► shoal serve B ─────────────┘   (a second replica, same etcd)
//!  kubectl / kube-rs against A and B
//! ```
//!
//! The tests never skip: without an etcd binary they fail, saying how to get one.

use crate::common;

use common::{
    ShoalServer, TEST_DEADLINE, apply_flags, mk_cluster, mk_cluster_yaml, parse_table, within,
};
use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use serde_json::Value;
use shoal_core::kinds::Cluster;
use shoal_store::etcd::ThrowawayEtcd;

async fn start_etcd() -> ThrowawayEtcd {
    ThrowawayEtcd::start()
        .await
        .unwrap_or_else(|err| panic!("these tests need a real etcd: {err}"))
}

async fn serve_on(etcd: &ThrowawayEtcd) -> ShoalServer {
    ShoalServer::start(&["--store", &etcd.url()]).await
}

#[tokio::test]
async fn kubectl_applies_a_cluster_on_etcd_and_reads_it_back() {
    within(TEST_DEADLINE, "the etcd kubectl round trip", async {
        let etcd = start_etcd().await;
        let s = serve_on(&etcd).await;
        let path = s.write_file(
            "cluster.yaml",
            &mk_cluster_yaml("prod-eu-1", "prod", "eu-west", "1"),
        );
        let mut args = vec!["apply", "-f", path.to_str().expect("utf-8 temp path")];
        args.extend_from_slice(apply_flags());
        let applied = s.kubectl_ok(&args).await;
        assert!(applied.contains("created"), "{applied}");

        let table = parse_table(&s.kubectl_ok(&["get", "clusters"]).await);
        assert_eq!(table.len(), 1, "{table:?}");
        assert_eq!(table[0]["NAME"], "prod-eu-1");
        assert_eq!(table[0]["ENV"], "prod");

        let json: Value = serde_json::from_str(
            &s.kubectl_ok(&["get", "cluster", "prod-eu-1", "-o", "json"])
                .await,
        )
        .expect("kubectl -o json prints JSON");
        assert_eq!(json["metadata"]["labels"]["region"], "eu-west");
        assert_eq!(
            json["spec"]["endpoint"]["server"],
            "https://prod-eu-1.example.test:6443"
        );
        let rv: i64 = json["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|rv| rv.parse().ok())
            .expect("a numeric resourceVersion");
        assert!(
            rv > 1,
            "etcd's revisions start at 1 and the write came after: {rv}"
        );

        s.kubectl_ok(&["delete", "cluster", "prod-eu-1"]).await;
        let gone = s.kubectl_fails(&["get", "cluster", "prod-eu-1"]).await;
        assert!(
            gone.contains("NotFound") || gone.contains("not found"),
            "{gone}"
        );
        drop(etcd);
    })
    .await;
}

#[tokio::test]
async fn two_replicas_on_one_etcd_share_objects_versions_and_watches() {
    within(TEST_DEADLINE, "two replicas on one etcd", async {
        let etcd = start_etcd().await;
        let (mut a, b) = (serve_on(&etcd).await, serve_on(&etcd).await);
        let on_a: Api<Cluster> = Api::all(a.client());
        let on_b: Api<Cluster> = Api::all(b.client());

        let created = on_a
            .create(
                &PostParams::default(),
                &mk_cluster("c-1", &[("env", "dev")]),
            )
            .await
            .expect("create through replica A");
        let read = on_b.get("c-1").await.expect("read through replica B");
        assert_eq!(read.resource_version(), created.resource_version());

        // A watch on B from A's resourceVersion sees a change made through A.
        let rv = created.resource_version().expect("a resourceVersion");
        let mut events = on_b
            .watch(&WatchParams::default(), &rv)
            .await
            .expect("watch through replica B")
            .boxed();
        let mut changed = created.clone();
        changed.labels_mut().insert("env".into(), "prod".into());
        let updated = on_a
            .replace("c-1", &PostParams::default(), &changed)
            .await
            .expect("update through replica A");
        let seen = loop {
            match events
                .next()
                .await
                .expect("the watch ended")
                .expect("a watch event")
            {
                WatchEvent::Modified(obj) => break obj,
                WatchEvent::Bookmark(_) => continue,
                other => panic!("unexpected {other:?}"),
            }
        };
        assert_eq!(seen.resource_version(), updated.resource_version());
        assert_eq!(seen.labels()["env"], "prod");

        // Optimistic concurrency holds across replicas: B refuses A's stale version.
        let stale = on_b
            .replace("c-1", &PostParams::default(), &changed)
            .await
            .expect_err("a replace with a stale resourceVersion");
        assert!(
            matches!(&stale, kube::Error::Api(status) if status.code == 409),
            "{stale:?}"
        );

        // Losing a replica loses nothing: the other serves every acknowledged write.
        a.kill9();
        let survived = on_b.get("c-1").await.expect("read after A died");
        assert_eq!(survived.resource_version(), updated.resource_version());
        drop(etcd);
    })
    .await;
}

#[tokio::test]
async fn serve_fails_clearly_when_etcd_is_unreachable() {
    // A port nothing listens on: the server must exit with a message, not hang.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("pick a free port")
        .port();
    let dir = tempfile::tempdir().expect("create a temp dir");
    let out = within(
        TEST_DEADLINE,
        "shoal serve with an unreachable etcd",
        tokio::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(["--store", &format!("etcd://127.0.0.1:{port}")])
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .expect("run shoal serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it served without etcd:\n{stderr}");
    assert!(stderr.contains("etcd"), "{stderr}");
}
