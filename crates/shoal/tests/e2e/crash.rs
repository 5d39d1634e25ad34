//! Durability: what the server acknowledged survives SIGKILL.
//!
//! ```text
//!  16 writers ──POST Cluster──► shoal serve (sqlite)      record every 201 + its resourceVersion
//!                  … ~1.5 s …   SIGKILL mid-flight
//!  restart on the same data dir ──► every acknowledged object is there, unchanged,
//!                                   and the next write gets a higher resourceVersion
//! ```
//!
//! And the graceful path: SIGTERM with watches open ends them and exits 0, with nothing lost.

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{CLUSTERS, ShoalServer, TEST_DEADLINE, mk_cluster, mk_cluster_json, within};
use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams, WatchParams};
use serde_json::Value;
use shoal_core::kinds::Cluster;

const WRITERS: usize = 16;

/// How long the writers run before the server is killed under them.
const WRITE_FOR: Duration = Duration::from_millis(1500);

/// What one writer saw.
#[derive(Debug, Default)]
struct Tally {
    /// Names whose create answered 201, with the resourceVersion the response carried
    /// (`None` if the body was cut off by the kill).
    acked: Vec<(String, Option<u64>)>,
    /// Answers other than 201: none are expected, before or after the kill.
    unexpected: Vec<String>,
}

fn rv_of(obj: &Value) -> Option<u64> {
    obj["metadata"]["resourceVersion"].as_str()?.parse().ok()
}

async fn write_until_stopped(
    http: reqwest::Client,
    url: String,
    writer: usize,
    stop: Arc<AtomicBool>,
) -> Tally {
    let mut t = Tally::default();
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        let name = format!("crash-{writer}-{i}");
        i += 1;
        match http
            .post(&url)
            .json(&mk_cluster_json(&name, "prod"))
            .send()
            .await
        {
            Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                let rv = r.json::<Value>().await.ok().as_ref().and_then(rv_of);
                t.acked.push((name, rv));
            }
            Ok(r) => {
                let code = r.status();
                let body = r.text().await.unwrap_or_default();
                t.unexpected.push(format!("{name}: {code} {body}"));
            }
            // The server is gone (killed); keep trying until told to stop, so requests
            // are in flight at the moment of the kill.
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_create_survives_a_sigkill() {
    within(TEST_DEADLINE, "writes, SIGKILL, restart, read back", async {
        // No controllers: the test compares each object's resourceVersion with the one
        // its create was acknowledged with, and the cluster prober would write the
        // (unreachable) clusters' status meanwhile.
        let mut s = ShoalServer::start(&["--store", "sqlite", "--no-controllers"]).await;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client");
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                tokio::spawn(write_until_stopped(
                    http.clone(),
                    s.at(CLUSTERS),
                    w,
                    stop.clone(),
                ))
            })
            .collect();

        tokio::time::sleep(WRITE_FOR).await;
        s.kill9();
        stop.store(true, Ordering::SeqCst);
        let mut acked: BTreeMap<String, Option<u64>> = BTreeMap::new();
        let mut unexpected = Vec::new();
        for w in writers {
            let t = within(Duration::from_secs(15), "a writer did not stop", w)
                .await
                .expect("a writer panicked");
            acked.extend(t.acked);
            unexpected.extend(t.unexpected);
        }
        eprintln!("{} creates acknowledged before SIGKILL", acked.len());
        assert!(unexpected.is_empty(), "non-201 answers: {unexpected:#?}");
        assert!(
            acked.len() >= WRITERS,
            "too few writes were acknowledged ({}) for the test to mean anything\n{}",
            acked.len(),
            s.log()
        );

        s.restart().await;
        let list: Value = http
            .get(s.at(CLUSTERS))
            .send()
            .await
            .expect("list after restart")
            .error_for_status()
            .expect("list answers 200")
            .json()
            .await
            .expect("a JSON list");
        let stored: BTreeMap<String, Option<u64>> = list["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|o| (o["metadata"]["name"].as_str().unwrap_or("").to_string(), rv_of(o)))
            .collect();
        let lost: Vec<&String> = acked.keys().filter(|n| !stored.contains_key(*n)).collect();
        assert!(
            lost.is_empty(),
            "{} of {} acknowledged creates were lost, among them {:?}\n{}",
            lost.len(),
            acked.len(),
            &lost[..lost.len().min(10)],
            s.log()
        );
        for (name, rv) in &acked {
            if let Some(rv) = rv {
                assert_eq!(
                    stored[name],
                    Some(*rv),
                    "{name} came back with another resourceVersion"
                );
            }
        }

        let max_acked = acked.values().flatten().max().copied().expect("some resourceVersions");
        let list_rv: u64 = list["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .expect("a numeric list resourceVersion");
        assert!(list_rv >= max_acked, "list rv {list_rv} < acknowledged {max_acked}");
        let r = http
            .post(s.at(CLUSTERS))
            .json(&mk_cluster_json("after-restart", "prod"))
            .send()
            .await
            .expect("create after restart");
        assert_eq!(r.status(), reqwest::StatusCode::CREATED);
        let after = rv_of(&r.json().await.expect("JSON")).expect("a resourceVersion");
        assert!(
            after > max_acked && after > list_rv,
            "revisions went backwards after restart: new write {after}, acknowledged up to {max_acked}, list at {list_rv}"
        );
    })
    .await
}

#[tokio::test]
async fn sigterm_ends_open_watches_and_exits_cleanly_with_nothing_lost() {
    within(
        TEST_DEADLINE,
        "SIGTERM with open watches, then restart",
        async {
            let mut s = ShoalServer::start(&["--store", "sqlite"]).await;
            let api: Api<Cluster> = Api::all(s.client());
            for name in ["term-1", "term-2", "term-3"] {
                api.create(&PostParams::default(), &mk_cluster(name, &[]))
                    .await
                    .expect("create");
            }
            let mut from_zero = api
                .watch(&WatchParams::default().timeout(290), "0")
                .await
                .expect("watch from 0")
                .boxed();
            let mut idle = api
                .watch(&WatchParams::default().timeout(290), "1")
                .await
                .expect("watch from 1")
                .boxed();
            for _ in 0..3 {
                within(
                    Duration::from_secs(5),
                    "the initial ADDED events",
                    from_zero.next(),
                )
                .await
                .expect("an event")
                .expect("a good event");
            }

            let status = s.terminate(Duration::from_secs(10)).await;
            assert!(
                status.success(),
                "a graceful stop exits 0, got {status}\n{}",
                s.log()
            );
            for (name, stream) in [("from 0", &mut from_zero), ("from 1", &mut idle)] {
                // Drain what was buffered; the stream must then end, not hang.
                within(
                    Duration::from_secs(5),
                    &format!("the watch {name} did not end when the server stopped"),
                    async { while let Some(Ok(_)) = stream.next().await {} },
                )
                .await;
            }

            s.restart().await;
            let api: Api<Cluster> = Api::all(s.client());
            let names: Vec<String> = api
                .list(&ListParams::default())
                .await
                .expect("list after restart")
                .items
                .iter()
                .map(|c| c.name_any())
                .collect();
            assert_eq!(names, ["term-1", "term-2", "term-3"]);
        },
    )
    .await
}
