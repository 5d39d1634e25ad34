//! Leader election's Leases, served read-only by shoal's own API: what
//! `shoal_store::election` writes is a proper `coordination.k8s.io/v1` Lease to kubectl
//! and kube-rs, and every write through the API answers 405.

mod common;

use std::time::Duration;

use common::{Fleet, TEST_DEADLINE, get, header, rows, within};
use k8s_openapi::api::coordination::v1::Lease;
use shoal_store::election::{Elector, ElectorConfig, Leadership};
use tokio_util::sync::CancellationToken;

/// Starts an elector for `role` on the fleet's top-level store and waits until it leads.
async fn elect(f: &Fleet, role: &str, identity: &str) -> (Elector, CancellationToken) {
    let cancel = CancellationToken::new();
    let elector = Elector::spawn(
        f.top.clone(),
        ElectorConfig::new(role, identity, Duration::from_secs(15)),
        cancel.clone(),
    )
    .expect("valid election config");
    let mut leadership = elector.leadership();
    leadership
        .wait_for(|l| matches!(l, Leadership::Leader { .. }))
        .await
        .expect("elector runs");
    (elector, cancel)
}

#[tokio::test]
async fn kubectl_gets_election_leases_with_holder_and_age_and_cannot_write_them() {
    within(TEST_DEADLINE, "kubectl get leases", async {
        let f = Fleet::start().await;
        let (_elector, cancel) = elect(&f, "controllers", "replica-a").await;

        let out = f.ok_in("top", &["get", "leases", "-A"]).await;
        assert_eq!(
            header(&out),
            ["NAMESPACE", "NAME", "HOLDER", "AGE"],
            "{out}"
        );
        let rows = rows(&out);
        assert_eq!(rows.len(), 1, "{out}");
        assert_eq!(get(&rows[0], "NAMESPACE"), "shoal-system");
        assert_eq!(get(&rows[0], "NAME"), "controllers");
        assert_eq!(get(&rows[0], "HOLDER"), "replica-a");
        assert!(get(&rows[0], "AGE").ends_with('s'), "{out}");

        let (ok, _, stderr) = f
            .kubectl_in(
                "top",
                &["delete", "lease", "controllers", "-n", "shoal-system"],
            )
            .await;
        assert!(!ok && stderr.contains("not allow"), "{stderr}");
        let (ok, _, stderr) = f
            .kubectl_in(
                "top",
                &[
                    "annotate",
                    "lease",
                    "controllers",
                    "-n",
                    "shoal-system",
                    "a=b",
                ],
            )
            .await;
        assert!(!ok && stderr.contains("not allow"), "{stderr}");
        let out = f.ok_in("top", &["api-resources", "-o", "wide"]).await;
        let line = out
            .lines()
            .find(|l| l.starts_with("leases "))
            .unwrap_or_else(|| panic!("no leases in:\n{out}"));
        // kubectl prints `get,list,watch` (1.32) or `[get list watch]` (older).
        assert!(
            line.contains("get,list,watch") || line.contains("[get list watch]"),
            "{line}"
        );
        cancel.cancel();
    })
    .await
}

#[tokio::test]
async fn kube_rs_reads_an_election_lease_as_a_typed_lease() {
    within(TEST_DEADLINE, "kube-rs Api<Lease>", async {
        let f = Fleet::start().await;
        let (_elector, cancel) = elect(&f, "releases", "replica-b").await;
        let client =
            kube::Client::try_from(kube::Config::new(f.url.parse().expect("uri"))).expect("client");
        let leases: kube::Api<Lease> = kube::Api::namespaced(client, "shoal-system");
        let lease = leases.get("releases").await.expect("get lease");
        let spec = lease.spec.expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("replica-b"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert!(spec.renew_time.is_some() && spec.acquire_time.is_some());
        assert!(lease.metadata.resource_version.is_some());
        let list = leases.list(&Default::default()).await.expect("list");
        assert_eq!(list.items.len(), 1);
        let err = leases
            .delete("releases", &Default::default())
            .await
            .expect_err("read-only");
        match err {
            kube::Error::Api(s) => assert_eq!(s.code, 405, "{s:?}"),
            other => panic!("expected a 405 Status, got {other}"),
        }
        cancel.cancel();
    })
    .await
}
