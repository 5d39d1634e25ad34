//! shoal-fleet: how shoal reaches member clusters — the same code for simulated and real
//! ones.
//!
//! ```text
//!  Cluster (shoal.io): spec.endpoint, and the kubeconfig in its credentialsRef Secret
//!        │
//!  Fleet::member ──▶ kube::Client (cached per cluster; the Secret is read again after
//!                                  │   CREDENTIALS_FRESH, so a rotated token is used)
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
//!
//! A member's kubeconfig is written by whoever may write a Secret and a Cluster, and
//! used by shoal on its own host: by default ([`KubeconfigPolicy::InlineOnly`]) a
//! kubeconfig that would run a program (`exec`, `auth-provider`) or read a file of
//! shoal's host (`tokenFile`, `client-certificate`, `client-key`,
//! `certificate-authority`) is refused, naming the field; the operator opts in with
//! [`KubeconfigPolicy::AllowExecAndFiles`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::config::{KubeConfigOptions, Kubeconfig};

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{ApiCapabilities, Scope};
use serde_json::Value;
use shoal_core::diff::{DroppedChange, FieldPath, three_way};
use shoal_core::kinds::{Cluster, CredentialsRef, Endpoint};

pub mod follow;
pub mod health;
pub mod workload;

pub use follow::{Follow, Reading};
pub use health::{MAX_COUNT, WorkloadHealth, count, health};
pub use workload::{Workload, last_applied, read_workload};

/// The annotation holding what shoal applied last (JSON).
pub const LAST_APPLIED: &str = "shoal.io/last-applied";

/// The field manager shoal's writes are recorded under.
pub const FIELD_MANAGER: &str = "shoal";

/// The User-Agent of shoal's clients, to members and to its own API alike. An API server
/// names the field manager of a write without `?fieldManager=` after its first word
/// ([`FIELD_MANAGER`]), and audit logs show it as the client.
pub const USER_AGENT: &str = concat!("shoal/", env!("CARGO_PKG_VERSION"));

/// Sets [`USER_AGENT`] on `config` (kube-rs sends none of its own).
pub fn identify(config: &mut kube::Config) {
    config
        .headers
        .retain(|(name, _)| name != http::header::USER_AGENT);
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(USER_AGENT),
    ));
}

/// The flag of `shoal serve` (and of the CLI verbs that reach members) that allows what
/// [`KubeconfigPolicy::InlineOnly`] refuses; refusals name it.
pub const ALLOW_EXEC_AND_FILES_FLAG: &str = "--allow-member-kubeconfig-exec-and-files";

/// What a member's kubeconfig (from its Cluster's `credentialsRef` Secret) may make
/// shoal do on shoal's own host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KubeconfigPolicy {
    /// Credentials held in the kubeconfig itself only: `token`, `client-certificate-data`,
    /// `client-key-data`, `certificate-authority-data`, username and password. A
    /// kubeconfig with an exec plugin, an auth provider or a file path is refused:
    /// whoever may write a Secret and a Cluster could otherwise run a program as shoal,
    /// or send one of shoal's files as a bearer token to a server they name.
    #[default]
    InlineOnly,
    /// Also exec plugins, auth providers and files on shoal's host, as kubectl allows
    /// them: for operators who trust every writer of Secrets and Clusters.
    AllowExecAndFiles,
}

/// Errors of the fleet driver.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cluster {cluster:?}: {problem}")]
    Cluster { cluster: String, problem: String },
    /// A member kubeconfig asks for what [`KubeconfigPolicy::InlineOnly`] refuses.
    #[error(
        "cluster {cluster:?}: spec.credentialsRef: the kubeconfig's {field} {does}; refused \
         (shoal reads members' credentials inline only, unless started with {flag})",
        flag = ALLOW_EXEC_AND_FILES_FLAG
    )]
    KubeconfigRefused {
        cluster: String,
        /// The kubeconfig field, as `users[0].user.exec`.
        field: String,
        /// What it would do on shoal's host.
        does: &'static str,
    },
    /// A member reported a number no Kubernetes object can hold (a negative count, one
    /// beyond the API's int32; see [`health::count`]): a transient read error (the next
    /// read may be sane), never arithmetic that panics or wraps.
    #[error("{target} on the member reports an impossible {field} = {value}")]
    Impossible {
        target: String,
        /// The field, as `status.updatedNumberScheduled`.
        field: String,
        /// What the member reported, as JSON.
        value: String,
    },
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

/// Clients for member clusters, built once per cluster (and again when its spec or its
/// credentials change), and their discovered kinds.
#[derive(Default)]
pub struct Fleet {
    clients: Mutex<HashMap<String, Cached>>,
    kinds: Mutex<HashMap<KindKey, (ApiResource, ApiCapabilities)>>,
    /// The control plane, where the Secrets that `spec.credentialsRef` names are read.
    control_plane: std::sync::OnceLock<kube::Client>,
    /// What members' kubeconfigs may make shoal do on its host.
    policy: KubeconfigPolicy,
    /// Watches of workloads being followed, shared by the steps of one cluster (see
    /// [`follow`]).
    follows: follow::Shares,
}

/// Each member client built gets the next number: watches made with one client are
/// shared only with users of that same client (new credentials, new watches).
static CLIENT_EPOCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn next_epoch() -> u64 {
    CLIENT_EPOCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A member's client and what it was built from.
struct Cached {
    client: kube::Client,
    /// Which client it is (see [`next_epoch`]).
    epoch: u64,
    /// The Cluster's spec (JSON) it was built for.
    spec: String,
    /// The resourceVersion of the credentials Secret it was built with, if any.
    secret_version: Option<String>,
    /// When the credentials Secret was last read.
    checked: Instant,
}

/// The namespace of a `credentialsRef` Secret that names none.
pub const CREDENTIALS_NAMESPACE: &str = "shoal-system";

/// The key of a `credentialsRef` Secret holding the kubeconfig, when it names none.
pub const CREDENTIALS_KEY: &str = "kubeconfig";

/// How long a member's credentials are used before their Secret is read again: a
/// rotated token is picked up within this, without a read of the Secret per request.
pub const CREDENTIALS_FRESH: Duration = Duration::from_secs(60);

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.clients.lock().map(|c| c.len()).unwrap_or(0);
        f.debug_struct("Fleet")
            .field("clients", &n)
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// A fleet driver for members reached without credentials; a Cluster with a
    /// `credentialsRef` is refused (see [`Fleet::with_credentials`]).
    pub fn new() -> Self {
        Fleet::default()
    }

    /// A fleet driver that reads members' credentials (`spec.credentialsRef`: a Secret
    /// holding a kubeconfig) from the control plane `control_plane`.
    pub fn with_credentials(control_plane: kube::Client) -> Self {
        let fleet = Fleet::default();
        fleet.read_credentials_from(&control_plane);
        fleet
    }

    /// Reads members' credentials from `control_plane` from now on, unless a control
    /// plane was given already (for drivers built before a client exists, such as the
    /// executors', which get one with each task).
    pub fn read_credentials_from(&self, control_plane: &kube::Client) {
        self.control_plane.get_or_init(|| control_plane.clone());
    }

    /// This driver, using members' kubeconfigs as `policy` allows (by default
    /// [`KubeconfigPolicy::InlineOnly`]).
    #[must_use]
    pub fn with_policy(mut self, policy: KubeconfigPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// This driver, keeping a followed workload's watches `linger` after its last
    /// [`Follow`] is dropped (by default [`follow::LINGER`]).
    #[must_use]
    pub fn with_follow_linger(mut self, linger: Duration) -> Self {
        self.follows = follow::Shares::lingering(linger);
        self
    }

    /// Workloads whose watches are open now, followed or lingering.
    pub fn followed(&self) -> usize {
        self.follows.len()
    }

    /// How to reach `cluster`'s API server: its endpoint, with the credentials of the
    /// kubeconfig its `credentialsRef` Secret holds (the endpoint's server, CA and TLS
    /// settings win over the kubeconfig's).
    ///
    /// # Errors
    /// [`Error::Cluster`] when the endpoint is not a URL, or the credentials cannot be
    /// read or used; the problem names the field. [`Error::KubeconfigRefused`] when the
    /// kubeconfig asks for what the driver's [`KubeconfigPolicy`] refuses.
    pub async fn member(&self, cluster: &Cluster) -> Result<Member> {
        let name = cluster.metadata.name.clone().unwrap_or_default();
        let bad = |problem: String| Error::Cluster {
            cluster: name.clone(),
            problem,
        };
        let server = cluster.spec.endpoint.server.clone();
        let spec = serde_json::to_string(&cluster.spec).unwrap_or_default();
        let member = |c: &Cached| Member {
            name: name.clone(),
            server: server.clone(),
            client: c.client.clone(),
            epoch: c.epoch,
        };
        let needs_credentials = cluster.spec.credentials_ref.is_some();
        {
            let clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = clients.get(&name)
                && c.spec == spec
                && (!needs_credentials || c.checked.elapsed() < CREDENTIALS_FRESH)
            {
                return Ok(member(c));
            }
        }
        let (secret_version, kubeconfig) = match &cluster.spec.credentials_ref {
            None => (None, None),
            Some(r) => {
                let (version, text) = self.credentials(r).await.map_err(&bad)?;
                (Some(version), Some(text))
            }
        };
        {
            let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = clients.get_mut(&name)
                && c.spec == spec
                && c.secret_version == secret_version
            {
                // The same Secret as before: the client stays (and its connections).
                c.checked = Instant::now();
                return Ok(member(c));
            }
        }
        let config = config_for(
            &name,
            &cluster.spec.endpoint,
            kubeconfig.as_deref(),
            self.policy,
        )
        .await?;
        let client = kube::Client::try_from(config)
            .map_err(|e| bad(format!("failed to build a client: {e}")))?;
        let cached = Cached {
            client,
            epoch: next_epoch(),
            spec,
            secret_version,
            checked: Instant::now(),
        };
        let built = member(&cached);
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), cached);
        Ok(built)
    }

    /// The kubeconfig text of a `credentialsRef` Secret, and the Secret's
    /// resourceVersion; errors name the field and the Secret.
    async fn credentials(
        &self,
        r: &CredentialsRef,
    ) -> std::result::Result<(String, String), String> {
        let ns = r.namespace.as_deref().unwrap_or(CREDENTIALS_NAMESPACE);
        let key = r.key.as_deref().unwrap_or(CREDENTIALS_KEY);
        let Some(control_plane) = self.control_plane.get() else {
            return Err("spec.credentialsRef: this fleet driver does not read credentials".into());
        };
        let secret = Api::<Secret>::namespaced(control_plane.clone(), ns)
            .get_opt(&r.name)
            .await
            .map_err(|e| {
                format!(
                    "spec.credentialsRef: failed to read Secret {ns}/{}: {e}",
                    r.name
                )
            })?
            .ok_or_else(|| format!("spec.credentialsRef: Secret {ns}/{} not found", r.name))?;
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|s| s.clone().into_bytes())
            })
            .ok_or_else(|| {
                format!(
                    "spec.credentialsRef: Secret {ns}/{} has no key {key:?}",
                    r.name
                )
            })?;
        let text = String::from_utf8(bytes).map_err(|_| {
            format!(
                "spec.credentialsRef: Secret {ns}/{} key {key:?} is not text",
                r.name
            )
        })?;
        Ok((secret.metadata.resource_version.unwrap_or_default(), text))
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
        self.prepare(member, object, dangerous)
            .await?
            .send(dry_run)
            .await
    }

    /// The first half of [`Fleet::apply`]: reads the live object and computes what an
    /// apply would send (one GET), without sending it. A caller applying several objects
    /// prepares them all, refuses the lot if any would change a dangerous field
    /// ([`Prepared::dropped`]), and only then sends each: nothing is half-applied, and
    /// each object costs one read and at most one write.
    ///
    /// # Errors
    /// An invalid object, discovery or API errors.
    pub async fn prepare(
        &self,
        member: &Member,
        object: &Value,
        dangerous: &[FieldPath],
    ) -> Result<Prepared> {
        // A manifest is user input: it is checked before anything is sent.
        let desired = desired_of(object)?;
        let (api, target) = self.api_for(member, object).await?;
        let live = api
            .get_opt(&target.name)
            .await
            .map_err(|source| Error::Kube {
                verb: "read",
                target: target.to_string(),
                source,
            })?
            .map(|live| serde_json::to_value(&live).map_err(|e| Error::Object(e.to_string())))
            .transpose()?;
        prepared(api, target, object, desired, dangerous, live)
    }

    /// [`Fleet::prepare`] with the live object already read (`live`, as JSON, `None`
    /// when it does not exist): a caller that follows the object with a watch has a copy
    /// as fresh as a GET would give, and saves the GET.
    ///
    /// # Errors
    /// An invalid object or discovery errors.
    pub async fn prepare_from(
        &self,
        member: &Member,
        object: &Value,
        dangerous: &[FieldPath],
        live: Option<Value>,
    ) -> Result<Prepared> {
        let desired = desired_of(object)?;
        let (api, target) = self.api_for(member, object).await?;
        prepared(api, target, object, desired, dangerous, live)
    }
}

/// The object an apply sends for `object` (the rendered target): it with its
/// last-applied annotation. Checks `object` first (it is user input).
fn desired_of(object: &Value) -> Result<Value> {
    let mut desired = object.clone();
    let last_json = serde_json::to_string(object).map_err(|e| Error::Object(e.to_string()))?;
    annotate(&mut desired, &Target::of(object)?, LAST_APPLIED, last_json)?;
    Ok(desired)
}

/// What an apply of `object` (sending `desired`) would do to `live`.
fn prepared(
    api: Api<DynamicObject>,
    target: Target,
    object: &Value,
    desired: Value,
    dangerous: &[FieldPath],
    live: Option<Value>,
) -> Result<Prepared> {
    let Some(live) = live else {
        return Ok(Prepared {
            api,
            target,
            live: None,
            change: Change::Create(desired),
        });
    };
    let live_generation = live.pointer("/metadata/generation").and_then(Value::as_i64);
    let last = last_applied(&live);
    // The annotation itself is part of the target (and of no last-applied copy), so
    // it is updated whenever the target changes.
    let mut diff = three_way(&live, &desired, last.as_ref(), dangerous);
    if !diff.is_empty() && !diff.dropped.is_empty() {
        // Record what was really applied: the dropped fields keep their live values
        // in the last-applied copy, so the next apply does not "remove" them.
        let mut recorded = object.clone();
        for d in &diff.dropped {
            set_path(&mut recorded, &d.path, d.live.clone());
        }
        let json = serde_json::to_string(&recorded).map_err(|e| Error::Object(e.to_string()))?;
        annotate(&mut diff.patch, &target, LAST_APPLIED, json)?;
    }
    Ok(Prepared {
        api,
        target,
        live: Some(live),
        change: Change::Patch {
            diff,
            generation: live_generation,
        },
    })
}

/// An apply read and computed, not sent yet ([`Fleet::prepare`]).
pub struct Prepared {
    api: Api<DynamicObject>,
    pub target: Target,
    /// The live object as read (`None`: it does not exist and would be created).
    pub live: Option<Value>,
    change: Change,
}

enum Change {
    Create(Value),
    Patch {
        diff: shoal_core::diff::ThreeWay,
        /// The live object's generation.
        generation: Option<i64>,
    },
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Prepared {
    /// Dangerous-field changes the apply would leave out.
    pub fn dropped(&self) -> &[DroppedChange] {
        match &self.change {
            Change::Create(_) => &[],
            Change::Patch { diff, .. } => &diff.dropped,
        }
    }

    /// Sends the change (a create, a merge patch, or nothing when the live object
    /// already matches); with `dry_run` the server checks it and writes nothing.
    ///
    /// # Errors
    /// The API's (a 409 from a concurrent writer is returned, not retried).
    pub async fn send(self, dry_run: bool) -> Result<Applied> {
        let Prepared {
            api,
            target,
            change,
            ..
        } = self;
        let kube_err = |verb: &'static str, t: &Target| {
            let t = t.to_string();
            move |source| Error::Kube {
                verb,
                target: t,
                source,
            }
        };
        match change {
            Change::Create(desired) => {
                let obj: DynamicObject =
                    serde_json::from_value(desired).map_err(|e| Error::Object(e.to_string()))?;
                let pp = PostParams {
                    dry_run,
                    field_manager: Some(FIELD_MANAGER.into()),
                };
                let created = api
                    .create(&pp, &obj)
                    .await
                    .map_err(kube_err("create", &target))?;
                Ok(Applied {
                    target,
                    action: Action::Created,
                    patch: serde_json::to_value(&obj).unwrap_or_default(),
                    dropped: Vec::new(),
                    generation: created.metadata.generation,
                })
            }
            Change::Patch { diff, generation } if diff.is_empty() => Ok(Applied {
                target,
                action: Action::Unchanged,
                patch: diff.patch,
                dropped: diff.dropped,
                generation,
            }),
            Change::Patch { diff, .. } => {
                let mut pp = PatchParams::apply(FIELD_MANAGER);
                pp.force = false;
                pp.dry_run = dry_run;
                pp.field_manager = Some(FIELD_MANAGER.into());
                let patched = api
                    .patch(&target.name, &pp, &Patch::Merge(&diff.patch))
                    .await
                    .map_err(kube_err("patch", &target))?;
                Ok(Applied {
                    target,
                    action: Action::Patched,
                    patch: diff.patch,
                    dropped: diff.dropped,
                    generation: patched.metadata.generation,
                })
            }
        }
    }
}

/// Sets annotation `key` of `object` (a manifest, or a merge patch of one) to `value`,
/// creating `metadata.annotations` when absent.
///
/// # Errors
/// [`Error::Object`] naming `target` and the field when `metadata` or
/// `metadata.annotations` is there but not a map (a manifest is user input).
fn annotate(object: &mut Value, target: &Target, key: &str, value: String) -> Result<()> {
    let not_a_map = |field: &str, v: &Value| {
        Error::Object(format!(
            "{target}: {field} must be a map of strings, got {}",
            json_type(v)
        ))
    };
    let Some(root) = object.as_object_mut() else {
        return Err(not_a_map("the object", object));
    };
    /// The value under `key` of `parent`, an empty map when absent or null.
    fn child<'a>(parent: &'a mut serde_json::Map<String, Value>, key: &str) -> &'a mut Value {
        let v = parent
            .entry(key)
            .or_insert_with(|| Value::Object(Default::default()));
        if v.is_null() {
            *v = Value::Object(Default::default());
        }
        v
    }
    let meta = child(root, "metadata");
    let Some(meta) = meta.as_object_mut() else {
        return Err(not_a_map("metadata", meta));
    };
    let annotations = child(meta, "annotations");
    let Some(annotations) = annotations.as_object_mut() else {
        return Err(not_a_map("metadata.annotations", annotations));
    };
    annotations.insert(key.to_string(), Value::String(value));
    Ok(())
}

/// The JSON type of `v`, for messages ("a string", "a list").
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
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
    /// Which client `client` is (see [`next_epoch`]).
    pub(crate) epoch: u64,
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
            epoch: next_epoch(),
        })
    }
}

/// The client configuration for member cluster `name` with `endpoint`, authenticated
/// as the `kubeconfig` (its current context) says: a token, a client certificate, an
/// exec plugin (if `policy` allows it). The endpoint's server always wins, and its CA
/// and TLS settings when set.
async fn config_for(
    name: &str,
    endpoint: &Endpoint,
    kubeconfig: Option<&str>,
    policy: KubeconfigPolicy,
) -> Result<kube::Config> {
    let bad = |problem: String| Error::Cluster {
        cluster: name.into(),
        problem,
    };
    let server = endpoint.server.as_str();
    let mut config = match kubeconfig {
        None => member_config(server).map_err(|e| bad(format!("spec.endpoint.server {e}")))?,
        Some(text) => {
            let kc = Kubeconfig::from_yaml(text).map_err(|e| {
                bad(format!(
                    "spec.credentialsRef: the kubeconfig is not valid: {e}"
                ))
            })?;
            if policy == KubeconfigPolicy::InlineOnly
                && let Some((field, does)) = host_access(&kc)
            {
                return Err(Error::KubeconfigRefused {
                    cluster: name.into(),
                    field,
                    does,
                });
            }
            let mut c = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| {
                    bad(format!(
                        "spec.credentialsRef: the kubeconfig is not usable: {e}"
                    ))
                })?;
            c.cluster_url = server
                .parse()
                .map_err(|e| bad(format!("spec.endpoint.server {server:?}: {e}")))?;
            c.default_retry = false;
            identify(&mut c);
            c
        }
    };
    if endpoint.insecure_skip_tls_verify == Some(true) {
        config.accept_invalid_certs = true;
    }
    if let Some(name) = &endpoint.tls_server_name {
        config.tls_server_name = Some(name.clone());
    }
    if let Some(data) = &endpoint.certificate_authority_data {
        config.root_cert = Some(
            ca_bundle(data)
                .map_err(|e| bad(format!("spec.endpoint.certificateAuthorityData: {e}")))?,
        );
    }
    Ok(config)
}

/// The first field of `kc` that would make a client run a program or read a file of
/// the host it runs on, as `users[0].user.exec`, and what it would do. Every entry is
/// looked at, not only the current context's: a kubeconfig is refused or used whole.
fn host_access(kc: &Kubeconfig) -> Option<(String, &'static str)> {
    const RUNS: &str = "runs a program on shoal's host";
    const PROVIDER: &str = "runs a program or uses shoal's own cloud credentials";
    const READS: &str = "reads a file of shoal's host";
    for (i, u) in kc.auth_infos.iter().enumerate() {
        let Some(a) = &u.auth_info else { continue };
        let found = [
            ("exec", a.exec.is_some(), RUNS),
            ("auth-provider", a.auth_provider.is_some(), PROVIDER),
            ("tokenFile", a.token_file.is_some(), READS),
            ("client-certificate", a.client_certificate.is_some(), READS),
            ("client-key", a.client_key.is_some(), READS),
        ]
        .into_iter()
        .find(|(_, set, _)| *set);
        if let Some((field, _, does)) = found {
            return Some((format!("users[{i}].user.{field}"), does));
        }
    }
    kc.clusters.iter().enumerate().find_map(|(i, c)| {
        c.cluster
            .as_ref()
            .and_then(|c| c.certificate_authority.as_ref())
            .map(|_| {
                (
                    format!("clusters[{i}].cluster.certificate-authority"),
                    READS,
                )
            })
    })
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
    identify(&mut config);
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
    /// `metadata.generation` of the object as the write left it (as it is, when nothing
    /// was sent): a reader of its status waits for `status.observedGeneration` and a
    /// watch to reach this, so it never judges the spec before the change.
    pub generation: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn endpoint(server: &str) -> Endpoint {
        Endpoint {
            server: server.into(),
            certificate_authority_data: None,
            insecure_skip_tls_verify: None,
            tls_server_name: None,
        }
    }

    const INLINE: KubeconfigPolicy = KubeconfigPolicy::InlineOnly;

    const KUBECONFIG: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: m\n  cluster:\n    \
        server: https://elsewhere.example:6443\n    tls-server-name: kubernetes\n\
        contexts:\n- name: m\n  context: {cluster: m, user: m}\ncurrent-context: m\n\
        users:\n- name: m\n  user: {token: t0ken}\n";

    #[tokio::test]
    async fn credentials_come_from_the_kubeconfig_and_the_endpoint_wins_where_it_speaks() {
        let plain = config_for("m", &endpoint("https://10.0.0.1:6443"), None, INLINE)
            .await
            .unwrap();
        assert!(plain.auth_info.token.is_none());
        assert!(!plain.default_retry);

        let c = config_for(
            "m",
            &endpoint("https://10.0.0.1:6443"),
            Some(KUBECONFIG),
            INLINE,
        )
        .await
        .unwrap();
        assert_eq!(c.cluster_url.to_string(), "https://10.0.0.1:6443/");
        assert_eq!(
            c.auth_info
                .token
                .as_ref()
                .map(|t| t.expose_secret().to_string()),
            Some("t0ken".into())
        );
        assert_eq!(
            c.tls_server_name.as_deref(),
            Some("kubernetes"),
            "the kubeconfig's"
        );
        assert!(!c.default_retry);

        let mut e = endpoint("https://10.0.0.1:6443");
        e.tls_server_name = Some("member.example".into());
        e.insecure_skip_tls_verify = Some(true);
        let c = config_for("m", &e, Some(KUBECONFIG), INLINE).await.unwrap();
        assert_eq!(
            c.tls_server_name.as_deref(),
            Some("member.example"),
            "the endpoint's"
        );
        assert!(c.accept_invalid_certs);
    }

    #[tokio::test]
    async fn a_kubeconfig_that_is_not_one_is_refused_naming_the_field() {
        let e = config_for(
            "m",
            &endpoint("https://10.0.0.1:6443"),
            Some("users: [oops"),
            INLINE,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("cluster \"m\": spec.credentialsRef"), "{e}");
        let e = config_for("m", &endpoint("not a url"), Some(KUBECONFIG), INLINE)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.endpoint.server"), "{e}");
    }

    #[tokio::test]
    async fn a_fleet_without_a_control_plane_refuses_a_credentials_ref() {
        let mut cluster = Cluster::new(
            "c",
            shoal_core::kinds::ClusterSpec {
                endpoint: endpoint("https://10.0.0.1:6443"),
                credentials_ref: Some(CredentialsRef {
                    name: "s".into(),
                    namespace: None,
                    key: None,
                }),
            },
        );
        let err = Fleet::new().member(&cluster).await.unwrap_err().to_string();
        assert!(err.contains("credentialsRef"), "{err}");
        cluster.spec.credentials_ref = None;
        let m = Fleet::new().member(&cluster).await.unwrap();
        assert_eq!(m.server, "https://10.0.0.1:6443");
    }

    /// A kubeconfig for a member at a loopback address whose user (or cluster) says
    /// `user` (or `cluster`), as YAML flow maps.
    fn mk_kubeconfig(cluster: &str, user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: m\n  cluster: {{server: \"https://10.0.0.1:6443\"{cluster}}}\n\
             contexts:\n- name: m\n  context: {{cluster: m, user: m}}\ncurrent-context: m\n\
             users:\n- name: other\n  user: {{token: t}}\n- name: m\n  user: {user}\n"
        )
    }

    #[tokio::test]
    async fn exec_plugins_auth_providers_and_file_paths_in_a_member_kubeconfig_are_refused_naming_the_field()
     {
        let dir = std::env::temp_dir().join(format!("shoal-fleet-kc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "from-shoals-disk").unwrap();
        let token = token.display();
        let exec = "{exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/sh, \
                    args: [-c, 'touch /tmp/pwned'], interactiveMode: Never}}";
        let provider = "{auth-provider: {name: gcp, config: {cmd-path: /bin/sh}}}";
        let token_file = format!("{{tokenFile: {token}}}");
        let cert = "{client-certificate: /etc/shoal/tls.crt, client-key-data: a2V5}";
        let key = "{client-certificate-data: Y2VydA==, client-key: /etc/shoal/tls.key}";
        let ca = ", certificate-authority: /etc/ssl/private/ca.pem";
        for (cluster, user, field) in [
            ("", exec, "users[1].user.exec"),
            ("", provider, "users[1].user.auth-provider"),
            ("", token_file.as_str(), "users[1].user.tokenFile"),
            ("", cert, "users[1].user.client-certificate"),
            ("", key, "users[1].user.client-key"),
            (
                ca,
                "{token: t}",
                "clusters[0].cluster.certificate-authority",
            ),
        ] {
            let kc = mk_kubeconfig(cluster, user);
            let e = config_for("m", &endpoint("https://10.0.0.1:6443"), Some(&kc), INLINE)
                .await
                .unwrap_err();
            assert!(
                matches!(&e, Error::KubeconfigRefused { field: f, .. } if f == field),
                "{field}: {e}"
            );
            let message = e.to_string();
            for want in [field, "spec.credentialsRef", ALLOW_EXEC_AND_FILES_FLAG] {
                assert!(message.contains(want), "{want:?} missing from {message}");
            }
        }

        // Inline credentials only: used.
        let inline = mk_kubeconfig(
            ", certificate-authority-data: Y2E=",
            "{token: t0ken, username: u, password: p}",
        );
        let c = config_for(
            "m",
            &endpoint("https://10.0.0.1:6443"),
            Some(&inline),
            INLINE,
        )
        .await
        .unwrap();
        assert_eq!(
            c.auth_info
                .token
                .as_ref()
                .map(|t| t.expose_secret().to_string()),
            Some("t0ken".into())
        );

        // With the operator's opt-in, the same kubeconfigs are used as kubectl would.
        let allow = KubeconfigPolicy::AllowExecAndFiles;
        let kc = mk_kubeconfig("", &token_file);
        let c = config_for("m", &endpoint("https://10.0.0.1:6443"), Some(&kc), allow)
            .await
            .unwrap();
        assert_eq!(c.auth_info.token_file.as_deref(), Some(&*token.to_string()));
        let kc = mk_kubeconfig("", exec);
        let c = config_for("m", &endpoint("https://10.0.0.1:6443"), Some(&kc), allow)
            .await
            .unwrap();
        assert!(c.auth_info.exec.is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_manifest_whose_annotations_are_not_a_map_is_an_error_naming_the_object_and_the_field() {
        let target = |o: &Value| Target::of(o).unwrap();
        for (metadata, field) in [
            (
                serde_json::json!({"name": "a", "annotations": "x=y"}),
                "metadata.annotations",
            ),
            (
                serde_json::json!({"name": "a", "annotations": ["x"]}),
                "metadata.annotations",
            ),
            (
                serde_json::json!({"name": "a", "annotations": 3}),
                "metadata.annotations",
            ),
        ] {
            let mut o = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": metadata});
            let t = target(&o);
            let e = annotate(&mut o, &t, LAST_APPLIED, "{}".into())
                .unwrap_err()
                .to_string();
            assert!(e.contains("ConfigMap a") && e.contains(field), "{e}");
        }
        // Absent or null annotations are made; others are kept.
        for metadata in [
            serde_json::json!({"name": "a"}),
            serde_json::json!({"name": "a", "annotations": null}),
            serde_json::json!({"name": "a", "annotations": {"k": "v"}}),
        ] {
            let mut o = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": metadata.clone()});
            let t = target(&o);
            annotate(&mut o, &t, LAST_APPLIED, "{}".into()).unwrap();
            assert_eq!(
                o["metadata"]["annotations"][LAST_APPLIED], "{}",
                "{metadata}"
            );
        }
        // A merge patch without metadata gets one.
        let mut patch = serde_json::json!({"spec": {}});
        let t = target(&serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a"}}));
        annotate(&mut patch, &t, LAST_APPLIED, "{}".into()).unwrap();
        assert_eq!(patch["metadata"]["annotations"][LAST_APPLIED], "{}");
    }

    #[tokio::test]
    async fn applying_a_manifest_whose_annotations_are_not_a_map_is_refused_before_anything_is_sent()
     {
        // Nothing listens at port 9: an error other than the manifest's is a failure.
        let member = Member::at("m", "http://127.0.0.1:9").unwrap();
        let o = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "ns", "annotations": "x=y"}});
        let e = Fleet::new()
            .apply(&member, &o, &[], true)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Object(_)), "{e}");
        assert!(
            e.to_string()
                .contains("ConfigMap ns/a: metadata.annotations must be a map"),
            "{e}"
        );
    }
}
