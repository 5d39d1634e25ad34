//! `shoal serve --tls`: HTTPS with a CA shoal makes and keeps in DATA_DIR/pki, so that a
//! token-protected server works with the real kubectl (which sends bearer tokens only
//! over HTTPS) and kube-rs through the kubeconfig the server writes; the in-process
//! controllers and the simulated members are reached over HTTPS with the same CA; and
//! `--tls-cert-file`: an operator's own certificate served to users, while shoal's own
//! clients still reach it by the loopback name.

use crate::common;

use std::time::Duration;

use common::{ShoalServer, clusters_ready, within};
use kube::api::Api;
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
        let sim = clusters_ready(&clusters, "env=sim", 2, DEADLINE).await;
        assert!(sim.iter().all(|c| {
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

/// An operator's CA, and a serving certificate it signed for `shoal.example` alone (not
/// 127.0.0.1, where the test reaches the server): (CA PEM, chain PEM, key PEM).
fn operators_certificate() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "operators-ca");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.clone().self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(vec!["shoal.example".to_string()]).unwrap();
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = leaf.signed_by(&key, &issuer).unwrap();
    (
        ca_cert.pem(),
        format!("{}{}", leaf.pem(), ca_cert.pem()),
        key.serialize_pem(),
    )
}

#[tokio::test]
async fn an_operators_certificate_is_served_to_users_and_shoal_still_reaches_itself() {
    within(DEADLINE * 2, "own certificate", async {
        let files = tempfile::tempdir().unwrap();
        let (ca, chain, key) = operators_certificate();
        let (cert_file, key_file) = (files.path().join("tls.crt"), files.path().join("tls.key"));
        std::fs::write(&cert_file, &chain).unwrap();
        std::fs::write(&key_file, &key).unwrap();
        let server = ShoalServer::start_with_token(
            "s3cret-token",
            &[
                "--tls-cert-file",
                cert_file.to_str().unwrap(),
                "--tls-private-key-file",
                key_file.to_str().unwrap(),
                "--store",
                "memory",
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

        // The kubeconfig trusts the operator's CA (the last certificate of the file), and
        // users are served the operator's certificate: verified as shoal.example it works,
        // verified as the URL's 127.0.0.1 it does not.
        let mut config = server.config_from_kubeconfig().await;
        let pool = config.root_cert.clone().expect("a CA in the kubeconfig");
        assert_eq!(pool.len(), 1);
        assert!(
            ca.contains(&base64_der_prefix(&pool[0])),
            "the operator's CA is trusted"
        );
        let names = server
            .kubectl_ok(&[
                "get",
                "clusters",
                "-o",
                "name",
                "--tls-server-name",
                "shoal.example",
            ])
            .await;
        assert_eq!(names.lines().count(), 2, "{names}");
        let refused = server.kubectl_fails(&["get", "clusters"]).await;
        assert!(
            refused.contains("x509") || refused.contains("certificate"),
            "{refused}"
        );

        // shoal's own clients reach it by the loopback name: the controllers run and the
        // fleet driver probes the simulated members (under the same HTTPS listener).
        config.tls_server_name = Some("shoal.example".into());
        let clusters: Api<Cluster> = Api::all(kube::Client::try_from(config).unwrap());
        let sim = clusters_ready(&clusters, "", 2, DEADLINE).await;
        let endpoints: Vec<_> = sim.iter().map(|c| &c.spec.endpoint).collect();
        assert!(
            endpoints
                .iter()
                .all(|e| e.tls_server_name.as_deref() == Some("shoal-loopback-client")),
            "{endpoints:?}"
        );
    })
    .await;
}

/// The first characters of a certificate's PEM body (enough to tell certificates apart).
fn base64_der_prefix(der: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(der)[..40].to_string()
}

#[tokio::test]
async fn a_key_that_is_not_the_certificates_is_refused_at_start_naming_the_flags() {
    let files = tempfile::tempdir().unwrap();
    let (_, chain, _) = operators_certificate();
    let (_, _, other_key) = operators_certificate();
    let (cert_file, key_file) = (files.path().join("tls.crt"), files.path().join("tls.key"));
    std::fs::write(&cert_file, &chain).unwrap();
    std::fs::write(&key_file, &other_key).unwrap();
    std::fs::write(files.path().join("token"), "t\n").unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "memory",
            "--no-controllers",
        ])
        .arg("--data-dir")
        .arg(files.path().join("data"))
        .arg("--token-file")
        .arg(files.path().join("token"))
        .arg("--tls-cert-file")
        .arg(&cert_file)
        .arg("--tls-private-key-file")
        .arg(&key_file)
        .output();
    let out = tokio::time::timeout(DEADLINE, out)
        .await
        .expect("shoal serve with a wrong key did not exit")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--tls-private-key-file") && stderr.contains("key"),
        "{stderr}"
    );
}

/// A token file of several users (kube-apiserver's static token CSV): each token is the
/// user it names in the audit trail, the kubeconfig carries the first, and shoal's own
/// controllers use a token of their own (`system:shoal`), never one of the file's.
#[tokio::test]
async fn each_token_of_a_token_file_is_its_own_user_in_the_audit_trail() {
    within(DEADLINE * 2, "token users", async {
        let files = tempfile::tempdir().unwrap();
        let users = files.path().join("users.csv");
        std::fs::write(&users, "t-alice,alice,1001,\"sre\"\nt-bob,bob,1002\n").unwrap();
        let mut args = vec![
            "--tls",
            "--store",
            "memory",
            "--sim-clusters",
            "1",
            "--sim-nodes",
            "1",
        ];
        args.extend([
            "--probe-interval-seconds",
            "1",
            "--token-file",
            users.to_str().unwrap(),
        ]);
        let server = ShoalServer::start(&args).await;
        let kubeconfig = std::fs::read_to_string(server.kubeconfig()).unwrap();
        assert!(kubeconfig.contains("token: t-alice"), "{kubeconfig}");

        let cluster = server.write_file(
            "c.yaml",
            "apiVersion: shoal.io/v1alpha1\nkind: Cluster\nmetadata: {name: audited}\n\
             spec: {endpoint: {server: \"https://10.0.0.1:6443\"}}\n",
        );
        server
            .kubectl_ok(&["apply", "-f", cluster.to_str().unwrap()])
            .await;
        server
            .kubectl_ok(&[
                "label", "cluster", "audited", "env=prod", "--token", "t-bob",
            ])
            .await;
        let refused = server
            .kubectl_fails(&["get", "clusters", "--token", "t-carol"])
            .await;
        assert!(refused.contains("Unauthorized"), "{refused}");

        // The controllers work (the simulated cluster is probed: their writes are
        // accepted with their own token).
        clusters_ready(
            &Api::<Cluster>::all(server.client_from_kubeconfig().await),
            "env=sim",
            1,
            DEADLINE,
        )
        .await;
        let log = server.log();
        let audit: Vec<&str> = log.lines().filter(|l| l.contains("shoal::audit")).collect();
        let by = |user: &str| {
            audit
                .iter()
                .filter(|l| l.contains(&format!("user={user} ")))
                .count()
        };
        assert!(by("alice") >= 1 && by("bob") == 1, "{audit:#?}");
        assert_eq!(
            by("system:shoal"),
            0,
            "controllers' writes are not at info: {audit:#?}"
        );
        assert!(
            audit
                .iter()
                .all(|l| !l.contains("t-alice") && !l.contains("t-bob")),
            "no token in the log"
        );
    })
    .await;
}
