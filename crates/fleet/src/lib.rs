//! shoal-fleet: how shoal reaches member clusters — the same code for simulated and real
//! ones.
//!
//! ```text
//!  Cluster (shoal.io) ──spec.endpoint──▶ Fleet::client ──▶ kube::Client (cached per server)
//!                                             │
//!      apply(client, object, dangerous) ──────┤  GET live → three_way(live, target, last
//!                                             │  applied) → merge PATCH (or POST) + record
//!                                             │  the new last-applied in an annotation
//!      health(client, workload) ──────────────┤  status counts + crash-looping pods
//!      read_workload(client, workload) ───────┘  the object, its last-applied copy, its pods
//! ```
//!
//! The key decision: the last-applied copy lives on the object itself, in the annotation
//! [`LAST_APPLIED`] (as kubectl keeps `kubectl.kubernetes.io/last-applied-configuration`),
//! so ownership of every field travels with the object and any shoal replica, or a
//! restarted one, computes the same patch.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{ApiCapabilities, Scope};
use serde_json::Value;
use shoal_core::diff::{DroppedChange, FieldPath, three_way};
use shoal_core::kinds::Cluster;

pub mod health;
pub mod workload;

pub use health::{WorkloadHealth, health};
pub use workload::{Workload, last_applied, read_workload};

/// The annotation holding what shoal applied last (JSON).
pub const LAST_APPLIED: &str = "shoal.io/last-applied";

/// The field manager shoal's writes are recorded under.
pub const FIELD_MANAGER: &str = "shoal";

/// Errors of the fleet driver.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cluster {cluster:?}: {problem}")]
    Cluster { cluster: String, problem: String },
    #[error("object is invalid: {0}")]
    Object(String),
    #[error("failed to find kind {kind} in {api_version} on the cluster")]
    Discovery {
        api_version: String,
        kind: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to {verb} {target}")]
    Kube {
        verb: &'static str,
        target: String,
        #[source]
        source: kube::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// (server URL, apiVersion, kind): where a discovered kind is cached.
type KindKey = (String, String, String);

/// Clients for member clusters, built once per endpoint, and their discovered kinds.
#[derive(Default)]
pub struct Fleet {
    clients: Mutex<HashMap<String, kube::Client>>,
    kinds: Mutex<HashMap<KindKey, (ApiResource, ApiCapabilities)>>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.clients.lock().map(|c| c.len()).unwrap_or(0);
        f.debug_struct("Fleet")
            .field("clients", &n)
            .finish_non_exhaustive()
    }
}

impl Fleet {
    pub fn new() -> Self {
        Fleet::default()
    }

    /// How to reach `cluster`'s API server.
    ///
    /// # Errors
    /// [`Error::Cluster`] when the endpoint is not a URL or the cluster needs credentials
    /// (a `credentialsRef`, not supported yet).
    pub fn member(&self, cluster: &Cluster) -> Result<Member> {
        let name = cluster.metadata.name.clone().unwrap_or_default();
        let bad = |problem: String| Error::Cluster {
            cluster: name.clone(),
            problem,
        };
        if cluster.spec.credentials_ref.is_some() {
            return Err(bad(
                "spec.credentialsRef is not supported yet: only unauthenticated endpoints".into(),
            ));
        }
        let server = cluster.spec.endpoint.server.clone();
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&server) {
            return Ok(Member {
                name,
                server,
                client: c.clone(),
            });
        }
        let mut config =
            member_config(&server).map_err(|e| bad(format!("spec.endpoint.server {e}")))?;
        config.accept_invalid_certs = cluster.spec.endpoint.insecure_skip_tls_verify == Some(true);
        config.tls_server_name = cluster.spec.endpoint.tls_server_name.clone();
        if let Some(data) = &cluster.spec.endpoint.certificate_authority_data {
            config.root_cert = Some(
                ca_bundle(data)
                    .map_err(|e| bad(format!("spec.endpoint.certificateAuthorityData: {e}")))?,
            );
        }
        let client = kube::Client::try_from(config)
            .map_err(|e| bad(format!("failed to build a client: {e}")))?;
        clients.insert(server.clone(), client.clone());
        Ok(Member {
            name,
            server,
            client,
        })
    }

    /// The API resource of `api_version`/`kind` on the cluster behind `client`.
    async fn resource(
        &self,
        member: &Member,
        api_version: &str,
        kind: &str,
    ) -> Result<(ApiResource, ApiCapabilities)> {
        let client = &member.client;
        let key = (
            member.server.clone(),
            api_version.to_string(),
            kind.to_string(),
        );
        if let Some(found) = self
            .kinds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(found.clone());
        }
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let found = kube::discovery::pinned_kind(client, &gvk)
            .await
            .map_err(|source| Error::Discovery {
                api_version: api_version.into(),
                kind: kind.into(),
                source,
            })?;
        self.kinds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, found.clone());
        Ok(found)
    }

    /// The dynamic API for `object`'s kind and namespace on `client`'s cluster.
    pub async fn api_for(
        &self,
        member: &Member,
        object: &Value,
    ) -> Result<(Api<DynamicObject>, Target)> {
        let target = Target::of(object)?;
        let (ar, caps) = self
            .resource(member, &target.api_version, &target.kind)
            .await?;
        let client = &member.client;
        let api = match (caps.scope, &target.namespace) {
            (Scope::Cluster, _) => Api::all_with(client.clone(), &ar),
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
            (Scope::Namespaced, None) => Api::namespaced_with(client.clone(), "default", &ar),
        };
        Ok((api, target))
    }

    /// Makes the live object match `object` (the rendered target), the way
    /// `kubectl apply` does, never changing a `dangerous` field of an existing object.
    /// With `dry_run` nothing is written: the outcome says what would be sent.
    ///
    /// # Errors
    /// An invalid object, discovery or API errors (a 409 from a concurrent writer is
    /// returned, not retried: the caller decides again from fresh state).
    pub async fn apply(
        &self,
        member: &Member,
        object: &Value,
        dangerous: &[FieldPath],
        dry_run: bool,
    ) -> Result<Applied> {
        let (api, target) = self.api_for(member, object).await?;
        let kube_err = |verb: &'static str, t: &Target| {
            let t = t.to_string();
            move |source| Error::Kube {
                verb,
                target: t,
                source,
            }
        };
        let mut desired = object.clone();
        let last_json = serde_json::to_string(object).map_err(|e| Error::Object(e.to_string()))?;
        desired["metadata"]["annotations"][LAST_APPLIED] = Value::String(last_json.clone());
        let live = api
            .get_opt(&target.name)
            .await
            .map_err(kube_err("read", &target))?;
        let Some(live) = live else {
            let obj: DynamicObject =
                serde_json::from_value(desired).map_err(|e| Error::Object(e.to_string()))?;
            let pp = PostParams {
                dry_run,
                field_manager: Some(FIELD_MANAGER.into()),
            };
            api.create(&pp, &obj)
                .await
                .map_err(kube_err("create", &target))?;
            return Ok(Applied {
                target,
                action: Action::Created,
                patch: serde_json::to_value(&obj).unwrap_or_default(),
                dropped: Vec::new(),
            });
        };
        let live = serde_json::to_value(&live).map_err(|e| Error::Object(e.to_string()))?;
        let last = last_applied(&live);
        // The annotation itself is part of the target (and of no last-applied copy), so
        // it is updated whenever the target changes.
        let mut diff = three_way(&live, &desired, last.as_ref(), dangerous);
        if diff.is_empty() {
            return Ok(Applied {
                target,
                action: Action::Unchanged,
                patch: diff.patch,
                dropped: diff.dropped,
            });
        }
        if !diff.dropped.is_empty() {
            // Record what was really applied: the dropped fields keep their live values
            // in the last-applied copy, so the next apply does not "remove" them.
            let mut recorded = object.clone();
            for d in &diff.dropped {
                set_path(&mut recorded, &d.path, d.live.clone());
            }
            let json =
                serde_json::to_string(&recorded).map_err(|e| Error::Object(e.to_string()))?;
            diff.patch["metadata"]["annotations"][LAST_APPLIED] = Value::String(json);
        }
        let mut pp = PatchParams::apply(FIELD_MANAGER);
        pp.force = false;
        pp.dry_run = dry_run;
        pp.field_manager = Some(FIELD_MANAGER.into());
        api.patch(&target.name, &pp, &Patch::Merge(&diff.patch))
            .await
            .map_err(kube_err("patch", &target))?;
        Ok(Applied {
            target,
            action: Action::Patched,
            patch: diff.patch,
            dropped: diff.dropped,
        })
    }
}

/// A member cluster as the driver reaches it.
#[derive(Clone)]
pub struct Member {
    /// The Cluster's name.
    pub name: String,
    /// Its API server URL.
    pub server: String,
    pub client: kube::Client,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("name", &self.name)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Member {
    /// A member reached at `server` without credentials (tests, simulated clusters).
    ///
    /// # Errors
    /// [`Error::Cluster`] when `server` is not a URL.
    pub fn at(name: &str, server: &str) -> Result<Self> {
        let bad = |problem: String| Error::Cluster {
            cluster: name.into(),
            problem,
        };
        let config = member_config(server).map_err(|e| bad(format!("endpoint {e}")))?;
        let client = kube::Client::try_from(config)
            .map_err(|e| bad(format!("failed to build a client: {e}")))?;
        Ok(Member {
            name: name.into(),
            server: server.into(),
            client,
        })
    }
}

/// The client configuration for a member cluster at `url`. kube-rs retries 429, 503
/// and 504 by default, up to 15 times with backoff growing to minutes; against a fleet
/// that hides a failing cluster behind a hung call. A member's answer comes back at
/// once instead, and the caller decides (a probe reports it, a step polls again, a task
/// retries by its own policy).
fn member_config(server: &str) -> std::result::Result<kube::Config, String> {
    let url = server.parse().map_err(|e| format!("{server:?}: {e}"))?;
    let mut config = kube::Config::new(url);
    config.default_retry = false;
    Ok(config)
}

/// The DER certificates of a CA bundle as a kubeconfig carries it
/// (`certificate-authority-data`: base64 of PEM).
///
/// # Errors
/// Not base64, not PEM, or no certificate in it.
pub fn ca_bundle(data: &str) -> std::result::Result<Vec<Vec<u8>>, String> {
    use base64::Engine;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    pem_certs(&pem)
}

/// The DER certificates of a PEM bundle.
///
/// # Errors
/// Not PEM, or no certificate in it.
pub fn pem_certs(pem: &[u8]) -> std::result::Result<Vec<Vec<u8>>, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in it".into());
    }
    Ok(certs)
}

/// Sets (or removes, for `None`) a dotted path in an object.
fn set_path(v: &mut Value, path: &str, value: Option<Value>) {
    let segments: Vec<&str> = path.split('.').filter(|s| !s.is_empty()).collect();
    let Some((last, parents)) = segments.split_last() else {
        return;
    };
    let mut cur = v;
    for seg in parents {
        if !cur.get(*seg).is_some_and(Value::is_object) {
            cur[*seg] = Value::Object(Default::default());
        }
        cur = cur.get_mut(*seg).expect("made above");
    }
    match (cur.as_object_mut(), value) {
        (Some(m), Some(val)) => {
            m.insert((*last).to_string(), val);
        }
        (Some(m), None) => {
            m.remove(*last);
        }
        (None, _) => {}
    }
}

/// Which object an apply is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl Target {
    /// # Errors
    /// [`Error::Object`] naming the missing field.
    pub fn of(object: &Value) -> Result<Self> {
        let s = |p: &str| object.pointer(p).and_then(Value::as_str).map(String::from);
        let need = |p: &str, field: &str| {
            s(p).filter(|v| !v.is_empty())
                .ok_or_else(|| Error::Object(format!("{field} is required")))
        };
        Ok(Target {
            api_version: need("/apiVersion", "apiVersion")?,
            kind: need("/kind", "kind")?,
            namespace: s("/metadata/namespace"),
            name: need("/metadata/name", "metadata.name")?,
        })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// What an apply did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Created,
    Patched,
    Unchanged,
}

/// The outcome of [`Fleet::apply`].
#[derive(Clone, Debug)]
pub struct Applied {
    pub target: Target,
    pub action: Action,
    /// What was (or, in a dry run, would be) sent: the object for a create, the merge
    /// patch for an update.
    pub patch: Value,
    /// Dangerous-field changes that were not sent.
    pub dropped: Vec<DroppedChange>,
}
