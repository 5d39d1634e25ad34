//! `shoal serve --tls`: HTTPS with a CA shoal makes and keeps in DATA_DIR/pki, so that a
//! token-protected server works with the real kubectl (which sends bearer tokens only
//! over HTTPS) and kube-rs through the kubeconfig the server writes; the in-process
//! controllers and the simulated members are reached over HTTPS with the same CA.

use crate::common;

use std::time::Duration;

use common::{ShoalServer, eventually, within};
use kube::api::{Api, ListParams};
use shoal_core::kinds::Cluster;

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn kubectl_and_kube_rs_use_a_token_over_https_and_the_fleet_is_probed_over_it() {
    within(DEADLINE * 3, "HTTPS", async {
        let mut server = ShoalServer::start_with_token(
            "s3cret-token",
            &[
                "--tls",
                "--store",
                "sqlite",
                "--sim-clusters",
                "2",
                "--sim-nodes",
                "2",
                "--probe-interval-seconds",
                "1",
            ],
        )
        .await;
        assert!(server.url().starts_with("https://"), "{}", server.url());
        let kubeconfig = std::fs::read_to_string(server.kubeconfig()).unwrap();
        assert!(kubeconfig.contains("certificate-authority-data: "), "{kubeconfig}");

        // kubectl: discovery, OpenAPI validation on apply, reads, with the token.
        let cluster = server.write_file(
            "c.yaml",
            "apiVersion: shoal.io/v1alpha1\nkind: Cluster\nmetadata: {name: extra, labels: {env: prod}}\n\
             spec: {endpoint: {server: \"https://10.0.0.1:6443\"}}\n",
        );
        server.kubectl_ok(&["apply", "-f", cluster.to_str().unwrap()]).await;
        let names = server.kubectl_ok(&["get", "clusters", "-o", "name"]).await;
        assert_eq!(names.lines().count(), 3, "{names}");
        let refused = server
            .kubectl_fails(&["get", "clusters", "--token", "wrong"])
            .await;
        assert!(refused.contains("Unauthorized"), "{refused}");
        let insecure = server
            .kubectl_fails(&[
                "get",
                "clusters",
                "--server",
                &server.url().replacen("https://", "http://", 1),
            ])
            .await;
        assert!(!insecure.is_empty(), "plain HTTP is not served on the TLS port");

        // kube-rs from the same kubeconfig; the simulated members, reached over HTTPS with
        // the CA the registration put in their endpoints, are probed Ready.
        let client = server.client_from_kubeconfig().await;
        let clusters: Api<Cluster> = Api::all(client);
        eventually(DEADLINE, "both simulated clusters Ready over HTTPS", async || {
            let list = clusters.list(&ListParams::default().labels("env=sim")).await.ok()?;
            let ready = list
                .items
                .iter()
                .filter(|c| {
                    c.status.as_ref().is_some_and(|s| {
                        s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                    })
                })
                .count();
            (list.items.len() == 2 && ready == 2).then_some(())
        })
        .await;
        let sim = clusters.list(&ListParams::default().labels("env=sim")).await.unwrap();
        assert!(sim.items.iter().all(|c| {
            c.spec.endpoint.server.starts_with("https://")
                && c.spec.endpoint.certificate_authority_data.is_some()
        }));

        // shoal's own verbs with --certificate-authority; after a restart the same CA
        // still verifies (the kubeconfig written before stays good).
        let ca = server.data_dir().join("pki").join("ca.crt");
        let before = std::fs::read_to_string(&ca).unwrap();
        let out = server
            .shoal_ok(&[
                "get",
                "clusters",
                "--server",
                server.url(),
                "--token",
                "s3cret-token",
                "--certificate-authority",
                ca.to_str().unwrap(),
            ])
            .await;
        assert!(out.contains("extra"), "{out}");
        server.restart().await;
        assert_eq!(std::fs::read_to_string(&ca).unwrap(), before, "the CA is kept");
        let names = server.kubectl_ok(&["get", "clusters", "-o", "name"]).await;
        assert!(names.contains("cluster.shoal.io/extra"), "{names}");
    })
    .await;
}
