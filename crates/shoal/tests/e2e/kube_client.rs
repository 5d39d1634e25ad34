//! kube-rs against a real `shoal serve`: typed CRUD on `Cluster` and `Namespace`, merge
//! and JSON patches, optimistic concurrency, label selectors and paging, the runtime
//! `watcher`, a raw watch from a compacted revision, and a `Controller` that writes status.

use crate::common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::{ShoalServer, TEST_DEADLINE, eventually, mk_cluster, within};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use shoal_core::kinds::Cluster;

/// The API alone: these tests are about API semantics (resourceVersions, watch events,
/// the tests' own controllers), which shoal's controllers (the cluster prober writes every
/// Cluster's status) would make nondeterministic.
const API_ONLY: &[&str] = &["--no-controllers"];

fn clusters(client: Client) -> Api<Cluster> {
    Api::all(client)
}

/// The `code` of a kube API error, or a panic naming what was expected.
fn api_code(r: Result<impl std::fmt::Debug, kube::Error>, what: &str) -> u16 {
    match r {
        Err(kube::Error::Api(s)) => s.code,
        other => panic!("{what}: expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn clusters_can_be_created_listed_fetched_patched_and_deleted() {
    within(TEST_DEADLINE, "typed Cluster CRUD through kube-rs", async {
        let s = ShoalServer::start(API_ONLY).await;
        let api = clusters(s.client());
        let pp = PostParams::default();

        let created = api
            .create(&pp, &mk_cluster("crud-1", &[("env", "prod"), ("tier", "1")]))
            .await
            .expect("create crud-1");
        assert_eq!(created.metadata.generation, Some(1));
        assert!(created.metadata.uid.is_some(), "{created:?}");
        let rv1: u64 = created.resource_version().expect("rv").parse().expect("numeric rv");
        api.create(&pp, &mk_cluster("crud-2", &[("env", "dev")]))
            .await
            .expect("create crud-2");
        assert_eq!(
            api_code(
                api.create(&pp, &mk_cluster("crud-1", &[])).await,
                "creating crud-1 twice"
            ),
            409
        );

        let listed = api.list(&ListParams::default()).await.expect("list");
        let names: BTreeSet<String> = listed.items.iter().map(|c| c.name_any()).collect();
        assert_eq!(names, BTreeSet::from(["crud-1".into(), "crud-2".into()]));

        let got = api.get("crud-1").await.expect("get crud-1");
        assert_eq!(got.spec, created.spec);
        assert_eq!(got.labels()["tier"], "1");

        let merged = api
            .patch(
                "crud-1",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"tier": "2", "zone": "z-a"}}})),
            )
            .await
            .expect("merge patch");
        assert_eq!(merged.labels()["tier"], "2");
        assert_eq!(merged.labels()["zone"], "z-a");
        assert_eq!(merged.labels()["env"], "prod", "merge keeps other labels");
        assert_eq!(merged.metadata.generation, Some(1), "labels are not spec");
        let rv2: u64 = merged.resource_version().expect("rv").parse().expect("numeric rv");
        assert!(rv2 > rv1, "{rv2} > {rv1}");

        let jp: Patch<()> = Patch::Json(
            serde_json::from_value(json!([
                {"op": "test", "path": "/spec/endpoint/server", "value": "https://crud-1.example.test:6443"},
                {"op": "replace", "path": "/spec/endpoint/server", "value": "https://10.1.2.3:6443"},
                {"op": "remove", "path": "/metadata/labels/zone"},
            ]))
            .expect("a JSON patch"),
        );
        let patched = api
            .patch("crud-1", &PatchParams::default(), &jp)
            .await
            .expect("JSON patch");
        assert_eq!(patched.spec.endpoint.server, "https://10.1.2.3:6443");
        assert!(!patched.labels().contains_key("zone"));
        assert_eq!(patched.metadata.generation, Some(2), "a spec change bumps generation");
        assert_eq!(api.get("crud-1").await.expect("get").spec, patched.spec);

        let failing: Patch<()> = Patch::Json(
            serde_json::from_value(json!([
                {"op": "test", "path": "/spec/endpoint/server", "value": "https://elsewhere"},
            ]))
            .expect("a JSON patch"),
        );
        assert_eq!(
            api_code(
                api.patch("crud-1", &PatchParams::default(), &failing).await,
                "a failing JSON patch test op"
            ),
            400
        );

        api.delete("crud-1", &DeleteParams::default())
            .await
            .expect("delete crud-1");
        assert!(api.get_opt("crud-1").await.expect("get_opt").is_none());
        assert_eq!(
            api_code(api.get("crud-1").await, "get after delete"),
            404
        );
        assert_eq!(
            api_code(
                api.delete("crud-1", &DeleteParams::default()).await,
                "deleting twice"
            ),
            404
        );
        let left = api.list(&ListParams::default()).await.expect("list");
        assert_eq!(left.items.len(), 1);
    })
    .await
}

#[tokio::test]
async fn replacing_with_a_stale_resource_version_is_rejected_with_409() {
    within(
        TEST_DEADLINE,
        "replace with a stale resourceVersion",
        async {
            let s = ShoalServer::start(API_ONLY).await;
            let api = clusters(s.client());
            let stale = api
                .create(
                    &PostParams::default(),
                    &mk_cluster("stale-1", &[("env", "prod")]),
                )
                .await
                .expect("create");
            let mut fresh = stale.clone();
            fresh.labels_mut().insert("tier".into(), "1".into());
            let fresh = api
                .replace("stale-1", &PostParams::default(), &fresh)
                .await
                .expect("replace with the current resourceVersion");
            assert_ne!(fresh.resource_version(), stale.resource_version());

            let mut late = stale.clone();
            late.labels_mut().insert("tier".into(), "3".into());
            match api.replace("stale-1", &PostParams::default(), &late).await {
                Err(kube::Error::Api(st)) => {
                    assert_eq!(st.code, 409, "{st:?}");
                    assert_eq!(st.reason, "Conflict", "{st:?}");
                    assert!(
                        st.message.contains("the object has been modified"),
                        "{st:?}"
                    );
                }
                other => panic!("a stale replace must fail with 409, got {other:?}"),
            }
            let now = api.get("stale-1").await.expect("get");
            assert_eq!(now.labels()["tier"], "1", "the stale write was not applied");
        },
    )
    .await
}

#[tokio::test]
async fn listing_by_label_and_in_pages_of_three_returns_every_match_once() {
    within(TEST_DEADLINE, "list with labels and paging", async {
        let s = ShoalServer::start(API_ONLY).await;
        let api = clusters(s.client());
        for i in 0..7 {
            let env = if i % 2 == 0 { "prod" } else { "dev" };
            api.create(
                &PostParams::default(),
                &mk_cluster(
                    &format!("page-{i}"),
                    &[("env", env), ("tier", &i.to_string())],
                ),
            )
            .await
            .expect("create");
        }

        let prod = api
            .list(&ListParams::default().labels("env=prod"))
            .await
            .expect("list env=prod");
        let names: Vec<String> = prod.items.iter().map(|c| c.name_any()).collect();
        assert_eq!(names, ["page-0", "page-2", "page-4", "page-6"]);
        let some = api
            .list(&ListParams::default().labels("env=dev,tier in (1,5)"))
            .await
            .expect("list with a set selector");
        let names: Vec<String> = some.items.iter().map(|c| c.name_any()).collect();
        assert_eq!(names, ["page-1", "page-5"]);

        let mut pages = Vec::new();
        let mut seen = Vec::new();
        let mut lp = ListParams::default().limit(3);
        loop {
            let page = api.list(&lp).await.expect("list a page");
            pages.push(page.items.len());
            seen.extend(page.items.iter().map(|c| c.name_any()));
            match page.metadata.continue_.filter(|t| !t.is_empty()) {
                Some(token) => lp = lp.continue_token(&token),
                None => break,
            }
            assert!(pages.len() < 10, "paging does not end: {pages:?}");
        }
        assert_eq!(pages, [3, 3, 1]);
        let expected: Vec<String> = (0..7).map(|i| format!("page-{i}")).collect();
        assert_eq!(seen, expected, "every object exactly once, in order");

        let page = api
            .list(&ListParams::default().labels("env=prod").limit(3))
            .await
            .expect("a filtered page");
        assert_eq!(page.items.len(), 3);
        let token = page.metadata.continue_.expect("more prod clusters remain");
        let rest = api
            .list(
                &ListParams::default()
                    .labels("env=prod")
                    .limit(3)
                    .continue_token(&token),
            )
            .await
            .expect("the next filtered page");
        let names: Vec<String> = rest.items.iter().map(|c| c.name_any()).collect();
        assert_eq!(names, ["page-6"]);
        assert!(rest.metadata.continue_.is_none_or(|t| t.is_empty()));
    })
    .await
}

#[tokio::test]
async fn a_continued_list_is_a_snapshot_at_the_first_pages_revision() {
    within(TEST_DEADLINE, "list consistency across pages", async {
        let s = ShoalServer::start(API_ONLY).await;
        let api = clusters(s.client());
        for name in ["snap-a", "snap-b", "snap-c", "snap-d"] {
            api.create(
                &PostParams::default(),
                &mk_cluster(name, &[("env", "prod")]),
            )
            .await
            .expect("create");
        }
        let first = api
            .list(&ListParams::default().limit(2))
            .await
            .expect("page 1");
        let rv: u64 = first
            .metadata
            .resource_version
            .as_deref()
            .and_then(|r| r.parse().ok())
            .expect("a numeric list resourceVersion");
        let token = first.metadata.continue_.clone().expect("a continue token");

        // Changes after the first page must not show in the second (Kubernetes serves
        // every page of one list from the same revision).
        api.patch(
            "snap-c",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"env": "changed"}}})),
        )
        .await
        .expect("relabel snap-c");
        api.delete("snap-d", &DeleteParams::default())
            .await
            .expect("delete snap-d");

        let second = api
            .list(&ListParams::default().limit(2).continue_token(&token))
            .await
            .expect("page 2");
        let seen: Vec<(String, String, u64)> = second
            .items
            .iter()
            .map(|c| {
                (
                    c.name_any(),
                    c.labels().get("env").cloned().unwrap_or_default(),
                    c.resource_version()
                        .and_then(|r| r.parse().ok())
                        .unwrap_or(0),
                )
            })
            .collect();
        assert_eq!(
            seen.iter()
                .map(|(n, e, _)| (n.as_str(), e.as_str()))
                .collect::<Vec<_>>(),
            [("snap-c", "prod"), ("snap-d", "prod")],
            "page 2 must show the state at revision {rv}: {seen:?}"
        );
        assert!(
            seen.iter().all(|(_, _, r)| *r <= rv),
            "{seen:?} newer than {rv}"
        );
    })
    .await
}

#[tokio::test]
async fn namespaces_can_be_created_and_deleted() {
    within(TEST_DEADLINE, "Namespace create/delete", async {
        let s = ShoalServer::start(API_ONLY).await;
        let api: Api<Namespace> = Api::all(s.client());
        let names = async || -> BTreeSet<String> {
            api.list(&ListParams::default())
                .await
                .expect("list namespaces")
                .items
                .iter()
                .map(|n| n.name_any())
                .collect()
        };
        let defaults = names().await;
        for ns in ["default", "kube-system", "shoal-system"] {
            assert!(defaults.contains(ns), "{defaults:?}");
        }

        let mut ns = Namespace::default();
        ns.metadata.name = Some("team-a".into());
        let created = api
            .create(&PostParams::default(), &ns)
            .await
            .expect("create team-a");
        assert_eq!(
            created.status.and_then(|s| s.phase).as_deref(),
            Some("Active")
        );
        assert!(names().await.contains("team-a"));

        let mut bad = Namespace::default();
        bad.metadata.name = Some("Team.A".into());
        assert_eq!(
            api_code(
                api.create(&PostParams::default(), &bad).await,
                "a namespace name must be a DNS label"
            ),
            422
        );

        api.delete("team-a", &DeleteParams::default())
            .await
            .expect("delete team-a");
        assert!(api.get_opt("team-a").await.expect("get_opt").is_none());
        assert_eq!(names().await, defaults);
    })
    .await
}

#[tokio::test]
async fn the_watcher_sees_the_initial_list_then_an_update_and_a_delete() {
    within(TEST_DEADLINE, "kube::runtime::watcher events", async {
        let s = ShoalServer::start(API_ONLY).await;
        let api = clusters(s.client());
        for name in ["watch-1", "watch-2"] {
            api.create(
                &PostParams::default(),
                &mk_cluster(name, &[("env", "prod")]),
            )
            .await
            .expect("create");
        }
        let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
        let mut next = async || {
            within(
                Duration::from_secs(10),
                "the watcher produced no event",
                events.try_next(),
            )
            .await
            .expect("watcher error")
            .expect("the watcher stream ended")
        };

        assert!(
            matches!(next().await, watcher::Event::Init),
            "first comes Init"
        );
        let mut initial = BTreeSet::new();
        loop {
            match next().await {
                watcher::Event::InitApply(c) => {
                    initial.insert(c.name_any());
                }
                watcher::Event::InitDone => break,
                other => panic!("unexpected event during the initial list: {other:?}"),
            }
        }
        assert_eq!(
            initial,
            BTreeSet::from(["watch-1".into(), "watch-2".into()])
        );

        api.patch(
            "watch-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"env": "staging"}}})),
        )
        .await
        .expect("relabel watch-1");
        match next().await {
            watcher::Event::Apply(c) => {
                assert_eq!(c.name_any(), "watch-1");
                assert_eq!(c.labels()["env"], "staging");
            }
            other => panic!("expected Apply for the update, got {other:?}"),
        }

        api.delete("watch-2", &DeleteParams::default())
            .await
            .expect("delete watch-2");
        match next().await {
            watcher::Event::Delete(c) => assert_eq!(c.name_any(), "watch-2"),
            other => panic!("expected Delete, got {other:?}"),
        }
    })
    .await
}

#[tokio::test]
async fn a_watch_from_a_compacted_revision_ends_with_410_gone() {
    within(TEST_DEADLINE, "a watch from a compacted revision", async {
        let s =
            ShoalServer::start(&["--no-controllers", "--compaction-interval-seconds", "1"]).await;
        let api = clusters(s.client());
        let old_rv = api
            .list(&ListParams::default())
            .await
            .expect("list")
            .metadata
            .resource_version
            .expect("a list resourceVersion");
        for i in 0..20 {
            api.create(
                &PostParams::default(),
                &mk_cluster(&format!("churn-{i}"), &[]),
            )
            .await
            .expect("create");
        }
        // History older than one compaction interval goes away; poll until it has.
        let status = eventually(
            Duration::from_secs(8),
            &format!("a watch from resourceVersion {old_rv} never answered 410 Gone"),
            async || {
                let stream = api
                    .watch(&WatchParams::default().timeout(2), &old_rv)
                    .await
                    .expect("start the watch");
                let mut stream = stream.boxed();
                let first = tokio::time::timeout(Duration::from_secs(3), stream.next()).await;
                match first {
                    Ok(Some(Ok(WatchEvent::Error(st)))) => Some(st),
                    // Still in history: the watch replays the creates. Try again later.
                    Ok(Some(Ok(_))) | Ok(None) | Err(_) => {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        None
                    }
                    Ok(Some(Err(e))) => panic!("watch failed: {e}"),
                }
            },
        )
        .await;
        assert_eq!(status.code, 410, "{status:?}");
        assert_eq!(status.reason, "Expired", "{status:?}");
        assert!(
            status.message.contains("too old resource version"),
            "{status:?}"
        );

        // A client that relists and watches from the fresh revision is fine again.
        let rv = api
            .list(&ListParams::default())
            .await
            .expect("relist")
            .metadata
            .resource_version
            .expect("rv");
        let mut stream = api
            .watch(&WatchParams::default().timeout(5), &rv)
            .await
            .expect("watch from now")
            .boxed();
        api.create(&PostParams::default(), &mk_cluster("after-compaction", &[]))
            .await
            .expect("create");
        match within(
            Duration::from_secs(5),
            "the fresh watch saw no event",
            stream.next(),
        )
        .await
        {
            Some(Ok(WatchEvent::Added(c))) => assert_eq!(c.name_any(), "after-compaction"),
            other => panic!("expected ADDED after-compaction, got {other:?}"),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_merge_patches_without_a_resource_version_all_succeed() {
    within(
        TEST_DEADLINE,
        "32 concurrent label patches of one cluster",
        async {
            let s = ShoalServer::start(API_ONLY).await;
            let api = clusters(s.client());
            api.create(&PostParams::default(), &mk_cluster("contended", &[]))
                .await
                .expect("create");
            const PATCHERS: usize = 32;
            let patches: Vec<_> = (0..PATCHERS)
                .map(|i| {
                    let api = api.clone();
                    tokio::spawn(async move {
                        let p =
                            Patch::Merge(json!({"metadata": {"labels": {format!("p{i}"): "x"}}}));
                        api.patch("contended", &PatchParams::default(), &p).await
                    })
                })
                .collect();
            let mut failures = Vec::new();
            for p in patches {
                match p.await.expect("a patch task panicked") {
                    Ok(_) => {}
                    Err(kube::Error::Api(st)) => {
                        failures.push(format!("{} {}", st.code, st.reason))
                    }
                    Err(e) => failures.push(e.to_string()),
                }
            }
            // Kubernetes retries an unpinned patch on write races (GuaranteedUpdate): the
            // client never asked to detect them, so it never sees a Conflict.
            assert!(
                failures.is_empty(),
                "{} of {PATCHERS} patches failed: {failures:?}",
                failures.len()
            );
            let labels = api.get("contended").await.expect("get").labels().clone();
            assert_eq!(labels.len(), PATCHERS, "every patch landed: {labels:?}");
        },
    )
    .await
}

#[tokio::test]
async fn an_idle_watch_with_bookmarks_gets_them_at_the_interval() {
    within(TEST_DEADLINE, "watch bookmarks", async {
        let s = ShoalServer::start(&["--no-controllers", "--bookmark-interval-seconds", "1"]).await;
        let api = clusters(s.client());
        api.create(&PostParams::default(), &mk_cluster("b-1", &[]))
            .await
            .expect("create");
        let rv = api
            .list(&ListParams::default())
            .await
            .expect("list")
            .metadata
            .resource_version
            .expect("rv");
        let mut stream = api
            .watch(&WatchParams::default().timeout(10), &rv)
            .await
            .expect("watch")
            .boxed();
        for n in 0..2 {
            match within(
                Duration::from_secs(4),
                &format!("bookmark {n} of an idle watch never came"),
                stream.next(),
            )
            .await
            {
                Some(Ok(WatchEvent::Bookmark(b))) => {
                    assert_eq!(b.metadata.resource_version, rv)
                }
                other => panic!("expected a BOOKMARK at {rv}, got {other:?}"),
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_quiet_watch_is_bookmarked_past_writes_to_other_kinds() {
    // Regression (issue 23): the bookmarks of a watch whose own kind saw no write carried
    // its start revision forever, so a client resuming from one after its watch timed out
    // could ask for history older than the server keeps (410 Expired) and relist.
    within(TEST_DEADLINE, "bookmarks past other kinds' writes", async {
        let s = ShoalServer::start(&["--no-controllers", "--bookmark-interval-seconds", "1"]).await;
        let api = clusters(s.client());
        let rv = api
            .list(&ListParams::default())
            .await
            .expect("list")
            .metadata
            .resource_version
            .expect("rv");
        let mut stream = api
            .watch(&WatchParams::default().timeout(30), &rv)
            .await
            .expect("watch")
            .boxed();
        let namespaces: Api<Namespace> = Api::all(s.client());
        let mut ns = Namespace::default();
        ns.metadata.name = Some("elsewhere".into());
        let written: i64 = namespaces
            .create(&PostParams::default(), &ns)
            .await
            .expect("create a namespace")
            .metadata
            .resource_version
            .expect("rv")
            .parse()
            .expect("a numeric rv");
        assert!(written > rv.parse::<i64>().unwrap());
        loop {
            match within(
                Duration::from_secs(10),
                "no bookmark reached the namespace's write",
                stream.next(),
            )
            .await
            {
                Some(Ok(WatchEvent::Bookmark(b))) => {
                    let at: i64 = b.metadata.resource_version.parse().expect("numeric");
                    if at >= written {
                        break;
                    }
                }
                other => panic!("expected only BOOKMARKs on a quiet watch, got {other:?}"),
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_watch_ends_when_its_timeout_passes() {
    within(TEST_DEADLINE, "watch with timeoutSeconds=1", async {
        let s = ShoalServer::start(API_ONLY).await;
        let api = clusters(s.client());
        let started = std::time::Instant::now();
        let mut stream = api
            .watch(&WatchParams::default().timeout(1), "0")
            .await
            .expect("watch")
            .boxed();
        let end = within(
            Duration::from_secs(5),
            "a watch with timeoutSeconds=1 did not end",
            stream.next(),
        )
        .await;
        assert!(end.is_none(), "no objects, so no events: {end:?}");
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "ended before its timeout: {:?}",
            started.elapsed()
        );
    })
    .await
}

#[tokio::test]
async fn the_watcher_works_with_streaming_lists() {
    within(TEST_DEADLINE, "watcher with sendInitialEvents", async {
        let s = ShoalServer::start(API_ONLY).await;
        let api = clusters(s.client());
        api.create(&PostParams::default(), &mk_cluster("stream-1", &[]))
            .await
            .expect("create");
        let mut events = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
        let mut next = async || {
            within(
                Duration::from_secs(10),
                "the streaming watcher produced no event",
                events.try_next(),
            )
            .await
            .expect("watcher error")
            .expect("the watcher stream ended")
        };
        assert!(matches!(next().await, watcher::Event::Init));
        match next().await {
            watcher::Event::InitApply(c) => assert_eq!(c.name_any(), "stream-1"),
            other => panic!("expected InitApply, got {other:?}"),
        }
        assert!(
            matches!(next().await, watcher::Event::InitDone),
            "the initial-events-end bookmark ends the list"
        );
        api.create(&PostParams::default(), &mk_cluster("stream-2", &[]))
            .await
            .expect("create");
        match next().await {
            watcher::Event::Apply(c) => assert_eq!(c.name_any(), "stream-2"),
            other => panic!("expected Apply, got {other:?}"),
        }
    })
    .await
}

#[tokio::test]
async fn no_finalizer_can_be_added_to_a_cluster_being_deleted() {
    within(TEST_DEADLINE, "finalizers during deletion", async {
        let s = ShoalServer::start(API_ONLY).await;
        let api = clusters(s.client());
        let mut c = mk_cluster("fin-1", &[]);
        c.metadata.finalizers = Some(vec!["shoal.io/a".into()]);
        api.create(&PostParams::default(), &c)
            .await
            .expect("create");
        api.delete("fin-1", &DeleteParams::default())
            .await
            .expect("delete marks it");
        let marked = api.get("fin-1").await.expect("still there");
        assert!(marked.metadata.deletion_timestamp.is_some(), "{marked:?}");
        // A second delete is a no-op, not an error.
        api.delete("fin-1", &DeleteParams::default())
            .await
            .expect("delete again");

        let add = Patch::Merge(json!({"metadata": {"finalizers": ["shoal.io/a", "shoal.io/b"]}}));
        match api.patch("fin-1", &PatchParams::default(), &add).await {
            Err(kube::Error::Api(st)) => {
                assert_eq!(st.code, 422, "{st:?}");
                assert!(st.message.contains("metadata.finalizers"), "{st:?}");
            }
            other => panic!("adding a finalizer during deletion must fail, got {other:?}"),
        }
        // Spec changes are still allowed while finalizers run.
        let spec =
            Patch::Merge(json!({"spec": {"endpoint": {"server": "https://still.example.test"}}}));
        api.patch("fin-1", &PatchParams::default(), &spec)
            .await
            .expect("a spec patch during deletion");
        let clear = Patch::Merge(json!({"metadata": {"finalizers": null}}));
        api.patch("fin-1", &PatchParams::default(), &clear)
            .await
            .expect("remove the finalizer");
        assert!(
            api.get_opt("fin-1").await.expect("get_opt").is_none(),
            "gone with its last finalizer"
        );
    })
    .await
}

#[tokio::test]
async fn generate_name_and_dry_run_behave_as_in_kubernetes() {
    within(TEST_DEADLINE, "generateName and dryRun", async {
        let s = ShoalServer::start(API_ONLY).await;
        let api = clusters(s.client());
        let mut c = mk_cluster("", &[]);
        c.metadata.name = None;
        c.metadata.generate_name = Some("gen-".into());
        let a = api
            .create(&PostParams::default(), &c)
            .await
            .expect("create a");
        let b = api
            .create(&PostParams::default(), &c)
            .await
            .expect("create b");
        assert!(
            a.name_any().starts_with("gen-") && a.name_any().len() > 4,
            "{a:?}"
        );
        assert_ne!(a.name_any(), b.name_any());

        let dry = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let would = api
            .create(&dry, &mk_cluster("dry-1", &[]))
            .await
            .expect("dry-run create");
        assert_eq!(would.name_any(), "dry-1");
        assert!(
            api.get_opt("dry-1").await.expect("get_opt").is_none(),
            "dry run persisted"
        );
        let names: BTreeSet<String> = api
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .iter()
            .map(|c| c.name_any())
            .collect();
        assert_eq!(names, BTreeSet::from([a.name_any(), b.name_any()]));
    })
    .await
}

#[tokio::test]
async fn the_status_subresource_ignores_spec_and_checks_the_resource_version() {
    within(TEST_DEADLINE, "replace_status", async {
        let s = ShoalServer::start(API_ONLY).await;
        let api = clusters(s.client());
        let created = api
            .create(&PostParams::default(), &mk_cluster("st-1", &[]))
            .await
            .expect("create");

        let mut with_status = created.clone();
        with_status.status = Some(shoal_core::kinds::ClusterStatus {
            node_count: Some(3),
            ..Default::default()
        });
        with_status.spec.endpoint.server = "https://sneaky.example.test".into();
        let replaced = api
            .replace_status("st-1", &PostParams::default(), &with_status)
            .await
            .expect("replace status");
        assert_eq!(replaced.status.as_ref().and_then(|s| s.node_count), Some(3));
        assert_eq!(
            replaced.spec, created.spec,
            "the status endpoint ignores spec"
        );
        assert_eq!(replaced.metadata.generation, Some(1));

        // `with_status` still carries the first resourceVersion: stale now.
        match api
            .replace_status("st-1", &PostParams::default(), &with_status)
            .await
        {
            Err(kube::Error::Api(st)) => assert_eq!(st.code, 409, "{st:?}"),
            other => panic!("a stale status replace must be a conflict, got {other:?}"),
        }

        // Status sent to the main resource is ignored.
        let mut main = api.get("st-1").await.expect("get");
        main.status = None;
        let after = api
            .replace("st-1", &PostParams::default(), &main)
            .await
            .expect("replace");
        assert_eq!(after.status.as_ref().and_then(|s| s.node_count), Some(3));
    })
    .await
}

/// What the test controller was asked to do, for its error type.
#[derive(Debug)]
struct ReconcileError(kube::Error);

impl std::fmt::Display for ReconcileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "failed to patch status: {}", self.0)
    }
}

impl std::error::Error for ReconcileError {}

/// Marks the cluster Ready for the generation it saw. Idempotent: the same object yields
/// the same patch, and the server writes nothing for a no-op.
async fn reconcile(c: Arc<Cluster>, api: Arc<Api<Cluster>>) -> Result<Action, ReconcileError> {
    let generation = c.metadata.generation.unwrap_or(0);
    let status = json!({"status": {
        "observedGeneration": generation,
        "kubernetesVersion": "v1.33.0",
        "conditions": [{
            "type": "Ready",
            "status": "True",
            "reason": "Reconciled",
            "message": format!("saw generation {generation}"),
            "lastTransitionTime": "2025-01-01T00:00:00Z",
            "observedGeneration": generation,
        }],
    }});
    api.patch_status(
        &c.name_any(),
        &PatchParams::default(),
        &Patch::Merge(status),
    )
    .await
    .map_err(ReconcileError)?;
    Ok(Action::await_change())
}

fn observed(c: &Cluster) -> (Option<i64>, Option<i64>, Option<String>) {
    let st = c.status.as_ref();
    (
        c.metadata.generation,
        st.and_then(|s| s.observed_generation),
        st.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.clone()),
    )
}

#[tokio::test]
async fn a_controller_sets_status_on_every_cluster_and_follows_spec_changes() {
    within(
        TEST_DEADLINE,
        "a kube-runtime Controller against shoal",
        async {
            let s = ShoalServer::start(API_ONLY).await;
            let api = clusters(s.client());
            api.create(
                &PostParams::default(),
                &mk_cluster("ctl-0", &[("env", "prod")]),
            )
            .await
            .expect("create before the controller starts");

            let ctx = Arc::new(api.clone());
            let controller = tokio::spawn(
                Controller::new(api.clone(), watcher::Config::default())
                    .run(
                        reconcile,
                        |_, _, _| Action::requeue(Duration::from_millis(200)),
                        ctx,
                    )
                    .for_each(|_| async {}),
            );

            for i in 1..=3 {
                api.create(
                    &PostParams::default(),
                    &mk_cluster(&format!("ctl-{i}"), &[]),
                )
                .await
                .expect("create while the controller runs");
            }
            for i in 0..=3 {
                let name = format!("ctl-{i}");
                let seen = eventually(
                    Duration::from_secs(15),
                    &format!("the controller never set the status of {name}"),
                    async || {
                        let c = api.get(&name).await.expect("get");
                        (observed(&c).1 == Some(1)).then_some(c)
                    },
                )
                .await;
                assert_eq!(
                    observed(&seen),
                    (Some(1), Some(1), Some("True".into())),
                    "{name}: status set, generation untouched by the status patch"
                );
                assert_eq!(
                    seen.status
                        .as_ref()
                        .and_then(|s| s.kubernetes_version.as_deref()),
                    Some("v1.33.0")
                );
            }

            let changed = api
                .patch(
                    "ctl-2",
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"spec": {"endpoint": {"server": "https://moved.example.test"}}}),
                    ),
                )
                .await
                .expect("change the spec of ctl-2");
            assert_eq!(
                changed.metadata.generation,
                Some(2),
                "a spec change bumps generation"
            );
            let after = eventually(
                Duration::from_secs(15),
                "the controller never re-reconciled ctl-2 after its spec changed",
                async || {
                    let c = api.get("ctl-2").await.expect("get");
                    (observed(&c).1 == Some(2)).then_some(c)
                },
            )
            .await;
            assert_eq!(observed(&after), (Some(2), Some(2), Some("True".into())));

            // The status writes settle: nothing keeps bumping generation or rewriting.
            let settled = api.get("ctl-2").await.expect("get");
            tokio::time::sleep(Duration::from_millis(500)).await;
            let later = api.get("ctl-2").await.expect("get");
            assert_eq!(later.metadata.generation, Some(2));
            assert_eq!(
                later.resource_version(),
                settled.resource_version(),
                "an idempotent reconcile must not rewrite an unchanged object"
            );
            controller.abort();
        },
    )
    .await
}
