//! HTTPS serving, as every Kubernetes API server does: kubectl sends a bearer token only
//! over TLS (client-go drops it on `http://`), so a token-protected shoal needs this.
//!
//! ```text
//!  Pki::self_signed(dir) ── DIR/ca.crt, ca.key       a CA made once, kept: kubeconfigs
//!                          DIR/server.crt, server.key  written before a restart stay valid
//!                          (the serving cert names localhost, 127.0.0.1, ::1 and the
//!                           hosts asked for; it is made again when that list changes)
//!  connection::serve(listener, router, Some(pki.server_config()?), …)
//!                         ── TLS (rustls, ALPN h2 + http/1.1) ── hyper auto
//! ```
//!
//! The key decision: like kube-apiserver without `--tls-cert-file`, shoal makes its own
//! CA and serving certificate in the data directory, and hands the CA to clients in the
//! kubeconfig it writes (`certificate-authority-data`), so HTTPS needs no setup.
//!
//! With a certificate of the operator's own ([`Pki::with_serving_cert`], `shoal serve
//! --tls-cert-file --tls-private-key-file`) that one is what clients see. shoal's own
//! in-process clients (its controllers, the simulated fleet's registration, and the
//! simulated member clusters' endpoints) still reach it on loopback, which that
//! certificate need not name: as kube-apiserver does for its loopback client, they ask
//! for [`LOOPBACK_SERVER_NAME`] by SNI and are answered with the self-made certificate,
//! which names it.
//!
//! ```text
//!  TLS ClientHello ── SNI = shoal-loopback-client ──▶ the self-made certificate
//!                  └─ anything else ────────────────▶ --tls-cert-file (or the self-made one)
//! ```

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The server name shoal's own in-process clients ask for (SNI) and verify the
/// self-made serving certificate against, whatever certificate other clients are served.
pub const LOOPBACK_SERVER_NAME: &str = "shoal-loopback-client";

/// A serving certificate and the CA clients trust it by.
#[derive(Clone)]
pub struct Pki {
    /// The self-made CA certificate (PEM) that shoal's in-process clients verify the
    /// server with (by [`LOOPBACK_SERVER_NAME`]).
    pub ca_pem: String,
    /// Where that certificate is kept (for clients given a file).
    pub ca_file: std::path::PathBuf,
    server_cert_pem: String,
    server_key_pem: String,
    /// The operator's own certificate, served to every other client.
    own: Option<OwnCert>,
}

/// A serving certificate the operator brought.
#[derive(Clone)]
struct OwnCert {
    cert_pem: String,
    key_pem: String,
    /// The last certificate of the chain when the file holds more than the leaf: what
    /// the kubeconfig shoal writes trusts. `None`: clients use their system's roots.
    issuer_pem: Option<String>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

/// What went wrong making or reading certificates.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the certificate or key is not usable: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{what} is not valid PEM: {detail}")]
    Pem { what: &'static str, detail: String },
    #[error("the key of {key} is not the key of {cert}'s certificate")]
    KeyMismatch {
        cert: &'static str,
        key: &'static str,
    },
}

fn read(dir: &Path, name: &str) -> Result<Option<String>, TlsError> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TlsError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Writes `name` in `dir`, readable by shoal's user alone from its creation: the keys
/// are secrets, and the rest is kept as private as the data directory it is in.
fn write(dir: &Path, name: &str, text: &str) -> Result<(), TlsError> {
    let path = dir.join(name);
    crate::private_files::write(&path, text.as_bytes()).map_err(|source| TlsError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// The names the serving certificate is for: loopback always, and `hosts`.
fn subject_names(hosts: &[String]) -> Vec<String> {
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1", LOOPBACK_SERVER_NAME]
        .into_iter()
        .map(String::from)
        .chain(hosts.iter().cloned())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The CA's certificate parameters (the same each time, so that the CA can sign again
/// after a restart from its key alone).
fn ca_params() -> Result<rcgen::CertificateParams, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "shoal-ca");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    Ok(params)
}

impl Pki {
    /// The CA and serving certificate kept in `dir` (made there on first use). The
    /// serving certificate names loopback and `hosts` (IP addresses or DNS names); it is
    /// made again, signed by the same CA, when it does not name them all.
    ///
    /// # Errors
    /// The directory cannot be written, or what is there is not usable.
    pub fn self_signed(dir: &Path, hosts: &[String]) -> Result<Self, TlsError> {
        crate::private_files::create_dir(dir).map_err(|source| TlsError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        // Files an older shoal wrote readable by all (the keys were so for a moment).
        for name in [
            "ca.key",
            "ca.crt",
            "server.key",
            "server.crt",
            "server.names",
        ] {
            let path = dir.join(name);
            crate::private_files::restrict_existing(&path).map_err(|source| TlsError::Io {
                path: path.display().to_string(),
                source,
            })?;
        }
        let (ca_pem, ca_key_pem) = match (read(dir, "ca.crt")?, read(dir, "ca.key")?) {
            (Some(c), Some(k)) => (c, k),
            _ => {
                let key = rcgen::KeyPair::generate()?;
                let cert = ca_params()?.self_signed(&key)?;
                write(dir, "ca.key", &key.serialize_pem())?;
                write(dir, "ca.crt", &cert.pem())?;
                (cert.pem(), key.serialize_pem())
            }
        };
        let names = subject_names(hosts);
        let wanted = names.join(",");
        let current = read(dir, "server.names")?;
        let (server_cert_pem, server_key_pem) =
            match (read(dir, "server.crt")?, read(dir, "server.key")?, current) {
                (Some(c), Some(k), Some(n)) if n.trim() == wanted => (c, k),
                _ => {
                    let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem)?;
                    // The issuer is the CA's own parameters and key: the same name and key
                    // identifier the CA certificate carries.
                    let issuer = rcgen::Issuer::new(ca_params()?, ca_key);
                    let key = rcgen::KeyPair::generate()?;
                    let mut params = rcgen::CertificateParams::new(names.clone())?;
                    params
                        .distinguished_name
                        .push(rcgen::DnType::CommonName, "shoal");
                    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
                    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
                    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
                    let cert = params.signed_by(&key, &issuer)?;
                    write(dir, "server.key", &key.serialize_pem())?;
                    write(dir, "server.crt", &cert.pem())?;
                    write(dir, "server.names", &wanted)?;
                    (cert.pem(), key.serialize_pem())
                }
            };
        Ok(Pki {
            ca_pem,
            ca_file: dir.join("ca.crt"),
            server_cert_pem,
            server_key_pem,
            own: None,
        })
    }

    /// Serves the operator's certificate (`cert_file`: PEM, the leaf first, then any
    /// intermediates) and key (`key_file`: PEM, PKCS#8, PKCS#1 or SEC1) to every client
    /// but shoal's own (see the module docs).
    ///
    /// # Errors
    /// A file cannot be read, is not PEM of the right kind, or the key is not the
    /// certificate's.
    pub fn with_serving_cert(
        mut self,
        cert_file: &Path,
        key_file: &Path,
    ) -> Result<Self, TlsError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| TlsError::Io {
                path: path.display().to_string(),
                source,
            })
        };
        let (cert_pem, key_pem) = (read(cert_file)?, read(key_file)?);
        let chain = certs(&cert_pem, "--tls-cert-file")?;
        if chain.is_empty() {
            return Err(TlsError::Pem {
                what: "--tls-cert-file",
                detail: "no CERTIFICATE block".into(),
            });
        }
        let issuer_pem = (chain.len() > 1).then(|| {
            let last = chain.last().expect("not empty");
            pem_block("CERTIFICATE", last.as_ref())
        });
        let own = OwnCert {
            cert_pem,
            key_pem,
            issuer_pem,
        };
        // The key must be the certificate's: found now, not at the first handshake.
        certified_key(
            &own.cert_pem,
            &own.key_pem,
            "--tls-cert-file",
            "--tls-private-key-file",
        )?;
        self.own = Some(own);
        Ok(self)
    }

    /// The CA (PEM) a kubeconfig for users trusts: the self-made CA, or with the
    /// operator's certificate the last certificate of its chain (`None` when the file
    /// holds the leaf alone: clients then verify with their system's roots).
    pub fn client_ca_pem(&self) -> Option<&str> {
        match &self.own {
            None => Some(&self.ca_pem),
            Some(own) => own.issuer_pem.as_deref(),
        }
    }

    /// The rustls configuration serving these certificates, offering HTTP/2 and 1.1.
    ///
    /// # Errors
    /// A certificate or key does not parse, or a key is not its certificate's.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let loopback = Arc::new(certified_key(
            &self.server_cert_pem,
            &self.server_key_pem,
            "the serving certificate",
            "the serving key",
        )?);
        let own = match &self.own {
            Some(o) => Some(Arc::new(certified_key(
                &o.cert_pem,
                &o.key_pem,
                "--tls-cert-file",
                "--tls-private-key-file",
            )?)),
            None => None,
        };
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(BySni { loopback, own }));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM text, in order.
fn certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            detail: e.to_string(),
        })
}

/// A certificate chain and its key, checked to belong together.
fn certified_key(
    cert_pem: &str,
    key_pem: &str,
    cert_what: &'static str,
    key_what: &'static str,
) -> Result<rustls::sign::CertifiedKey, TlsError> {
    let chain = certs(cert_pem, cert_what)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| TlsError::Pem {
        what: key_what,
        detail: e.to_string(),
    })?;
    rustls::sign::CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            cert: cert_what,
            key: key_what,
        },
        other => other.into(),
    })
}

/// One PEM block of `der`.
fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Picks the certificate by the name the client asked for (see the module docs).
#[derive(Debug)]
struct BySni {
    loopback: Arc<rustls::sign::CertifiedKey>,
    own: Option<Arc<rustls::sign::CertifiedKey>>,
}

impl rustls::server::ResolvesServerCert for BySni {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        match (&self.own, hello.server_name()) {
            (Some(own), name) if name != Some(LOOPBACK_SERVER_NAME) => Some(own.clone()),
            _ => Some(self.loopback.clone()),
        }
    }
}

/// Whether `host` is an IP address (else a DNS name) — for callers building `hosts`.
pub fn is_ip(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_kept_and_the_serving_cert_follows_the_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let a = Pki::self_signed(dir.path(), &[]).unwrap();
        let b = Pki::self_signed(dir.path(), &[]).unwrap();
        assert_eq!(a.ca_pem, b.ca_pem);
        assert_eq!(
            a.server_cert_pem, b.server_cert_pem,
            "nothing changed: reused"
        );
        let c = Pki::self_signed(dir.path(), &["10.0.0.7".into()]).unwrap();
        assert_eq!(
            c.ca_pem, a.ca_pem,
            "the CA stays: old kubeconfigs still verify"
        );
        assert_ne!(
            c.server_cert_pem, a.server_cert_pem,
            "a new host: a new serving cert"
        );
        c.server_config().expect("a usable rustls config");
        let mode = std::fs::metadata(dir.path().join("ca.key")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
        assert!(is_ip("10.0.0.7") && !is_ip("shoal.example.com"));
    }

    /// A certificate for `names` signed by a fresh CA: (CA PEM, leaf PEM, leaf key PEM).
    fn signed(names: &[&str]) -> (String, String, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = ca_params().unwrap();
        let ca_pem = ca.clone().self_signed(&ca_key).unwrap().pem();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let leaf = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (ca_pem, leaf.pem(), key.serialize_pem())
    }

    #[test]
    fn an_operators_chain_is_trusted_by_its_last_certificate_and_a_bare_leaf_by_system_roots() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, leaf, key) = signed(&["shoal.example"]);
        let path = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let (chain, bare, key) = (
            path("chain.crt", &format!("{leaf}{ca}")),
            path("leaf.crt", &leaf),
            path("tls.key", &key),
        );
        let pki = || Pki::self_signed(&dir.path().join("pki"), &[]).unwrap();
        assert_eq!(
            pki().client_ca_pem(),
            Some(pki().ca_pem.as_str()),
            "self-made"
        );
        let own = pki().with_serving_cert(&chain, &key).unwrap();
        let body = |pem: &str| {
            pem.lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>()
        };
        assert_eq!(body(own.client_ca_pem().unwrap()), body(&ca));
        own.server_config().expect("a usable rustls config");
        let own = pki().with_serving_cert(&bare, &key).unwrap();
        assert_eq!(own.client_ca_pem(), None);
    }

    #[test]
    fn a_key_not_the_certificates_or_a_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_, leaf, _) = signed(&["a.example"]);
        let (_, _, other_key) = signed(&["b.example"]);
        let (cert, key, empty) = (
            dir.path().join("tls.crt"),
            dir.path().join("tls.key"),
            dir.path().join("empty.crt"),
        );
        std::fs::write(&cert, leaf).unwrap();
        std::fs::write(&key, other_key).unwrap();
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let pki = || Pki::self_signed(&dir.path().join("pki"), &[]).unwrap();
        let mismatch = pki().with_serving_cert(&cert, &key).unwrap_err();
        assert!(
            matches!(mismatch, TlsError::KeyMismatch { .. }),
            "{mismatch}"
        );
        let none = pki().with_serving_cert(&empty, &key).unwrap_err();
        assert!(none.to_string().contains("no CERTIFICATE"), "{none}");
        let missing = pki()
            .with_serving_cert(&dir.path().join("nope.crt"), &key)
            .unwrap_err();
        assert!(missing.to_string().contains("nope.crt"), "{missing}");
    }
}
