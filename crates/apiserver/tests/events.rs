//! Events in shoal's own API: kubectl reads them, `kubectl describe` of a Cluster finds
//! its events by field selector, and every Event is attached to a lease so that it
//! expires as in Kubernetes (`--event-ttl`, an hour) instead of piling up forever.

mod common;

use common::{Fleet, TEST_DEADLINE, within};

const CLUSTER: &str = "apiVersion: shoal.io/v1alpha1
kind: Cluster
metadata:
  name: prod-1
  labels: {env: prod}
spec:
  endpoint: {server: http://127.0.0.1:1}
";

fn event(name: &str, uid: &str, reason: &str, message: &str) -> String {
    format!(
        "apiVersion: v1
kind: Event
metadata: {{name: {name}, namespace: default}}
involvedObject: {{apiVersion: shoal.io/v1alpha1, kind: Cluster, name: prod-1, uid: \"{uid}\"}}
type: Warning
reason: {reason}
message: {message}
count: 1
firstTimestamp: \"2026-01-01T00:00:00Z\"
lastTimestamp: \"2026-01-01T00:00:00Z\"
"
    )
}

const KEY: &str = "/registry/core/events/default/prod-1.1";

#[tokio::test]
async fn events_are_listed_described_and_expire_with_their_lease() {
    within(TEST_DEADLINE, "events", async {
        let f = Fleet::start().await;
        let c = f.write("cluster.yaml", CLUSTER);
        f.ok_in("top", &["apply", "-f", &c]).await;
        let uid = f
            .ok_in(
                "top",
                &["get", "cluster", "prod-1", "-o", "jsonpath={.metadata.uid}"],
            )
            .await;
        let e = f.write(
            "event.yaml",
            &event("prod-1.1", &uid, "NotReady", "connection refused"),
        );
        f.ok_in("top", &["create", "-f", &e]).await;

        let out = f.ok_in("top", &["get", "events", "-n", "default"]).await;
        assert!(
            out.contains("NotReady") && out.contains("cluster/prod-1"),
            "{out}"
        );
        let out = f.ok_in("top", &["describe", "cluster", "prod-1"]).await;
        assert!(
            out.contains("Events:") && out.contains("connection refused"),
            "{out}"
        );

        let kv = f
            .top
            .get(KEY)
            .await
            .unwrap()
            .expect("the event is stored under its key");
        let lease = kv.lease.expect("an Event is attached to a lease");
        // An update (a repeated event's count) stays attached to a lease.
        let e2 = f.write(
            "event2.yaml",
            &event("prod-1.1", &uid, "NotReady", "still refused"),
        );
        f.ok_in("top", &["replace", "-f", &e2]).await;
        let kv = f.top.get(KEY).await.unwrap().unwrap();
        assert!(kv.lease.is_some(), "the update kept the event expiring");

        // A second event now shares the lease: one grant per minute, not per event.
        let e3 = f.write("event3.yaml", &event("prod-1.2", &uid, "Ready", "back"));
        f.ok_in("top", &["create", "-f", &e3]).await;
        let other = f
            .top
            .get("/registry/core/events/default/prod-1.2")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(other.lease, kv.lease);

        // The lease ends (as it would an hour on): the events are gone, the cluster stays.
        f.top.lease_revoke(kv.lease.unwrap_or(lease)).await.unwrap();
        let out = f
            .ok_in("top", &["get", "events", "-n", "default", "-o", "name"])
            .await;
        assert!(out.trim().is_empty(), "expired events are gone: {out}");
        f.ok_in("top", &["get", "cluster", "prod-1"]).await;

        // A new event after that gets a new lease rather than failing on the old one.
        f.ok_in("top", &["create", "-f", &e]).await;
        let kv = f.top.get(KEY).await.unwrap().unwrap();
        assert!(
            kv.lease.is_some_and(|l| Some(l) != other.lease),
            "{:?}",
            kv.lease
        );
    })
    .await;
}
