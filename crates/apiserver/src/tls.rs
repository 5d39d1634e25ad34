//! HTTPS serving, as every Kubernetes API server does: kubectl sends a bearer token only
//! over TLS (client-go drops it on `http://`), so a token-protected shoal needs this.
//!
//! ```text
//!  Pki::self_signed(dir) ── DIR/ca.crt, ca.key       a CA made once, kept: kubeconfigs
//!                          DIR/server.crt, server.key  written before a restart stay valid
//!                          (the serving cert names localhost, 127.0.0.1, ::1 and the
//!                           hosts asked for; it is made again when that list changes)
//!  serve_tls(listener, router, pki) ── TLS (rustls, ALPN h2 + http/1.1) ── hyper auto
//! ```
//!
//! The key decision: like kube-apiserver without `--tls-cert-file`, shoal makes its own
//! CA and serving certificate in the data directory, and hands the CA to clients in the
//! kubeconfig it writes (`certificate-authority-data`), so HTTPS needs no setup.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

/// A serving certificate and the CA clients trust it by.
#[derive(Clone)]
pub struct Pki {
    /// The CA certificate (PEM) that clients verify the server with.
    pub ca_pem: String,
    /// Where that certificate is kept (for clients given a file).
    pub ca_file: std::path::PathBuf,
    server_cert_pem: String,
    server_key_pem: String,
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

fn write(dir: &Path, name: &str, text: &str, secret: bool) -> Result<(), TlsError> {
    let path = dir.join(name);
    let io = |source| TlsError::Io {
        path: path.display().to_string(),
        source,
    };
    std::fs::write(&path, text).map_err(io)?;
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    Ok(())
}

/// The names the serving certificate is for: loopback always, and `hosts`.
fn subject_names(hosts: &[String]) -> Vec<String> {
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
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
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let (ca_pem, ca_key_pem) = match (read(dir, "ca.crt")?, read(dir, "ca.key")?) {
            (Some(c), Some(k)) => (c, k),
            _ => {
                let key = rcgen::KeyPair::generate()?;
                let cert = ca_params()?.self_signed(&key)?;
                write(dir, "ca.key", &key.serialize_pem(), true)?;
                write(dir, "ca.crt", &cert.pem(), false)?;
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
                    write(dir, "server.key", &key.serialize_pem(), true)?;
                    write(dir, "server.crt", &cert.pem(), false)?;
                    write(dir, "server.names", &wanted, false)?;
                    (cert.pem(), key.serialize_pem())
                }
            };
        Ok(Pki {
            ca_pem,
            ca_file: dir.join("ca.crt"),
            server_cert_pem,
            server_key_pem,
        })
    }

    /// The rustls configuration serving this certificate, offering HTTP/2 and 1.1.
    ///
    /// # Errors
    /// The certificate or key does not parse.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let pem = |what, detail: rustls::pki_types::pem::Error| TlsError::Pem {
            what,
            detail: detail.to_string(),
        };
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.server_cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| pem("the serving certificate", e))?;
        let key = PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes())
            .map_err(|e| pem("the serving key", e))?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Whether `host` is an IP address (else a DNS name) — for callers building `hosts`.
pub fn is_ip(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok()
}

/// Serves `router` over TLS on `listener` until `shutdown`, then lets open requests
/// finish (watches end with the shutdown token, as over plain HTTP).
///
/// # Errors
/// The listener fails.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    router: Router,
    config: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, router, builder) = (acceptor.clone(), router.clone(), builder.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let service = TowerToHyperService::new(router);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
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
}
