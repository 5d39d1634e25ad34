//! shoal-apiserver: a Kubernetes-compatible HTTP API over a shoal store.
//!
//! ```text
//!  kubectl / kube-rs / shoal CLI
//!        │ HTTP (JSON, chunked watch)
//!  ┌─────▼──────────────────────────────────────────────────────────┐
//!  │ router: /version /healthz /readyz /livez /metrics              │
//!  │         /api /apis (discovery)   /openapi/v3 (schemas)         │
//!  │         everything else ──► rest::handle (CRUD, patch, watch)  │
//!  │         /clusters/{name}/… ──► the same routes, member cluster │
//!  │ middleware: bearer token → metrics/logs                        │
//!  └─────┬──────────────────────────────────────────────────────────┘
//!        │ Surface (Registry, OpenAPI, config)  +  Store (per cluster)
//! ```
//!
//! The server is generic over a [`Registry`] of kinds: nothing in a handler names a kind.
//! A [`Surface`] (registry, OpenAPI documents, clock, config, metrics) is bound to a store
//! per request: the top-level API's, or a member cluster's found through a
//! [`ClusterDirectory`] ([`cluster`]), so thousands of member clusters share one surface.
//! Objects travel as JSON values; the registry's schema prunes and checks them, and each
//! kind's validator (from `shoal-core`) adds semantic rules. HTTP codes and Kubernetes
//! `Status` reasons are decided in one place, [`error`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Extension, Router};
use serde_json::{Value, json};
use shoal_core::clock::SharedClock;
use shoal_store::Store;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub mod apply;
pub mod cluster;
pub mod connection;
pub mod defaults;
pub mod discovery;
pub mod error;
pub mod fence;
pub mod metrics;
pub mod object;
pub mod openapi;
pub mod printers;
pub mod private_files;
pub mod protobuf;
pub mod registry;
pub mod rest;
pub mod scale;
pub mod strategic;
pub mod table;
pub mod tls;
pub mod watch;

pub use cluster::{ClusterDirectory, MemberClusters, StaticDirectory};
pub use error::{ApiError, ApiResult};
pub use registry::{Registry, ResourceDef};

/// Tunables of the API server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Largest request body accepted; larger ones get 413 RequestEntityTooLarge.
    pub max_body_bytes: usize,
    /// When not empty, every request but the health checks needs `Authorization:
    /// Bearer <token>` with one of these tokens; each stands for the user it maps to,
    /// whom the audit trail names.
    pub tokens: BTreeMap<String, String>,
    /// The `tokens` identify whoever presents one but are not required: a request with
    /// none, or with one not among them, is served as `anonymous` (a server without
    /// `--token-file`, where the token shoal makes for its own clients still tells their
    /// writes apart in the audit trail).
    pub optional_tokens: bool,
    /// When not empty, requests to the member clusters mounted under `/clusters/` (but
    /// their health checks) need one of these bearer tokens instead, each standing for the
    /// user it maps to: members are separate APIs with credentials of their own. Empty:
    /// the members are open to anyone who reaches the server.
    pub member_tokens: BTreeMap<String, String>,
    /// How often an idle watch with `allowWatchBookmarks` gets a BOOKMARK.
    pub bookmark_interval: Duration,
    /// How long a watch lasts when the client sets no `timeoutSeconds`.
    pub default_watch_timeout: Duration,
    /// How often store history is compacted. Each tick compacts up to the revision seen
    /// at the previous tick, so at least one interval of history stays watchable (the
    /// scheme Kubernetes uses). `None` keeps all history.
    pub compaction_interval: Option<Duration>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            // Kubernetes' limit for a single object is ~1.5 MiB in etcd; 3 MiB leaves room
            // for YAML and patches while refusing accidental uploads.
            max_body_bytes: 3 * 1024 * 1024,
            tokens: BTreeMap::new(),
            optional_tokens: false,
            member_tokens: BTreeMap::new(),
            bookmark_interval: Duration::from_secs(10),
            default_watch_timeout: Duration::from_secs(30 * 60),
            compaction_interval: Some(Duration::from_secs(5 * 60)),
        }
    }
}

/// Everything a request needs besides its store: what is served (kinds, OpenAPI
/// documents) and the server's shared parts (clock, config, metrics, shutdown). Built once
/// per API surface — the top-level API, and one for all member clusters — and bound to a
/// store per request with [`Surface::bind`], which costs one small allocation.
#[derive(Clone, Debug)]
pub struct Surface {
    pub registry: Arc<Registry>,
    pub openapi: Arc<openapi::Documents>,
    pub clock: SharedClock,
    pub config: Arc<ServerConfig>,
    pub telemetry: Arc<metrics::Telemetry>,
    pub shutdown: CancellationToken,
    /// Namespaces created at start-up that may not be deleted.
    pub default_namespaces: &'static [&'static str],
}

impl Surface {
    /// The state of a request against `store`.
    pub fn bind(&self, store: Store) -> Arc<AppState> {
        Arc::new(AppState {
            store,
            registry: self.registry.clone(),
            openapi: self.openapi.clone(),
            clock: self.clock.clone(),
            config: self.config.clone(),
            telemetry: self.telemetry.clone(),
            shutdown: self.shutdown.clone(),
            default_namespaces: self.default_namespaces,
        })
    }

    /// Creates the surface's default namespaces in `store` if they are missing.
    ///
    /// # Errors
    /// A store error other than "already exists".
    pub async fn ensure_default_namespaces(&self, store: Store) -> ApiResult<()> {
        let st = self.bind(store);
        let Some(def) = st.registry.find("", "v1", "namespaces").cloned() else {
            return Ok(());
        };
        let rp = rest::ResourcePath {
            def,
            namespace: None,
            name: None,
            subresource: None,
        };
        for ns in self.default_namespaces {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            let opts = rest::WriteOptions::internal("shoal");
            match rest::create(&st, &rp, obj, &opts).await {
                Ok(_) | Err(ApiError::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Shared state of every request: a [`Surface`] bound to one store.
#[derive(Debug)]
pub struct AppState {
    pub store: Store,
    pub registry: Arc<Registry>,
    pub openapi: Arc<openapi::Documents>,
    pub clock: SharedClock,
    pub config: Arc<ServerConfig>,
    pub telemetry: Arc<metrics::Telemetry>,
    /// Cancelled on shutdown; open watches end.
    pub shutdown: CancellationToken,
    /// Namespaces that may not be deleted.
    pub default_namespaces: &'static [&'static str],
}

/// The API server: build it, then mount [`ApiServer::router`] on a listener.
#[derive(Clone, Debug)]
pub struct ApiServer {
    state: Arc<AppState>,
    surface: Surface,
    members: Option<Arc<cluster::MemberClusters>>,
}

/// Namespaces every shoal server has, as every Kubernetes cluster has `default`.
pub const DEFAULT_NAMESPACES: &[&str] = &["default", "kube-system", "shoal-system"];

impl ApiServer {
    /// A server over `store` serving `registry`. `metrics` may already hold other
    /// collectors (the store's); the server adds its own.
    pub fn new(
        store: Store,
        registry: Registry,
        clock: SharedClock,
        config: ServerConfig,
        mut metrics: prometheus_client::registry::Registry,
        shutdown: CancellationToken,
    ) -> Self {
        let api = metrics::ApiMetrics::new(&mut metrics);
        let openapi = openapi::Documents::build(&registry);
        let telemetry = Arc::new(metrics::Telemetry {
            registry: metrics,
            api,
        });
        let surface = Surface {
            registry: Arc::new(registry),
            openapi: Arc::new(openapi),
            clock,
            config: Arc::new(config),
            telemetry,
            shutdown,
            default_namespaces: DEFAULT_NAMESPACES,
        };
        ApiServer {
            state: surface.bind(fence::wrap(store)),
            surface,
            members: None,
        }
    }

    /// Also serves the member clusters of `directory` under `/clusters/{name}/`, each
    /// with the kinds of `registry` (typically [`Registry::member_cluster`]). The
    /// registry and its OpenAPI documents are built here, once, and shared by every
    /// member cluster; the server's clock, config, metrics and shutdown are shared too.
    pub fn with_member_clusters(
        mut self,
        directory: Arc<dyn cluster::ClusterDirectory>,
        registry: Registry,
    ) -> Self {
        let surface = Surface {
            openapi: Arc::new(openapi::Documents::build(&registry)),
            registry: Arc::new(registry),
            default_namespaces: cluster::MEMBER_DEFAULT_NAMESPACES,
            ..self.surface.clone()
        };
        self.members = Some(Arc::new(cluster::MemberClusters::new(directory, surface)));
        self
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// The member clusters, when [`ApiServer::with_member_clusters`] mounted some.
    pub fn member_clusters(&self) -> Option<&Arc<cluster::MemberClusters>> {
        self.members.as_ref()
    }

    /// Creates the default namespaces if they are missing.
    ///
    /// # Errors
    /// A store error other than "already exists".
    pub async fn ensure_default_namespaces(&self) -> ApiResult<()> {
        self.surface
            .ensure_default_namespaces(self.state.store.clone())
            .await
    }

    /// Starts the background compactor (if configured); it stops on shutdown.
    pub fn spawn_compactor(&self) -> Option<tokio::task::JoinHandle<()>> {
        let every = self.state.config.compaction_interval?;
        let st = self.state.clone();
        let span = tracing::info_span!("compactor", every_ms = every.as_millis() as u64);
        Some(tokio::spawn(
            async move {
                let mut previous = None;
                let mut ticker = tokio::time::interval(every);
                loop {
                    tokio::select! {
                        _ = ticker.tick() => {}
                        _ = st.shutdown.cancelled() => return,
                    }
                    if let Some(rev) = previous.filter(|r| *r > 0) {
                        match st.store.compact(rev).await {
                            Ok(()) => tracing::debug!(revision = rev, "compacted"),
                            Err(e) => tracing::warn!(error = %e, "compaction failed"),
                        }
                    }
                    previous = st.store.current_revision().await.ok();
                }
            }
            .instrument(span),
        ))
    }

    /// The HTTP router: the top-level API, `/metrics`, and the member clusters under
    /// `/clusters/{name}/` when mounted.
    pub fn router(&self) -> Router {
        self.router_with(Router::new())
    }

    /// The HTTP router with `extra` routes of the binary's own (simulation controls, …)
    /// behind the same authentication and metrics as the API.
    pub fn router_with(&self, extra: Router) -> Router {
        let st = self.state.clone();
        let mut router = surface_routes()
            .merge(extra)
            .layer(Extension(st.clone()))
            .route("/metrics", get(prometheus).with_state(st.clone()));
        if let Some(members) = &self.members {
            let members = members.clone();
            let serve = move |req: Request| {
                let members = members.clone();
                async move { members.serve(req).await }
            };
            router = router
                .route("/clusters", any(serve.clone()))
                .route("/clusters/{*path}", any(serve));
        }
        router
            .layer(middleware::from_fn(fence::layer))
            .layer(middleware::from_fn_with_state(st.clone(), authenticate))
            .layer(middleware::from_fn_with_state(
                st.telemetry.clone(),
                metrics::record,
            ))
    }
}

/// The routes every API surface serves, top-level and member clusters alike. Handlers
/// find their [`AppState`] in the request's extensions, so this router is built once per
/// surface and never per cluster.
pub(crate) fn surface_routes() -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/healthz", get(health))
        .route("/livez", get(health))
        .route("/readyz", get(ready))
        .route("/api", get(api_root))
        .route("/apis", get(apis_root))
        .route("/api/v1", get(core_resources))
        .route("/apis/{group}", get(api_group))
        .route("/apis/{group}/{version}", get(group_resources))
        .route("/openapi/v3", get(openapi_index))
        .route("/openapi/v3/{*path}", get(openapi_doc))
        .route("/openapi/v2", get(openapi_v2))
        .fallback(resources)
}

/// Serves `router` over plain HTTP on `listener` until `shutdown` is cancelled, then
/// drains open requests; with the default [`connection::Limits`] on slow and idle
/// clients ([`connection::serve`] takes others, and TLS).
///
/// # Errors
/// IO errors of the listener.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    connection::serve(
        listener,
        router,
        None,
        connection::Limits::default(),
        shutdown,
    )
    .await
}

type St = Extension<Arc<AppState>>;

async fn authenticate(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    // The member clusters mounted under /clusters/ (simulated clusters, each its own API
    // as a real member would be, not the control plane's) ask for their own tokens, which
    // shoal's fleet driver presents from the Cluster's credentialsRef.
    let path = req.uri().path();
    let member = path == "/clusters" || path.starts_with("/clusters/");
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let tokens = if member {
        &st.config.member_tokens
    } else {
        &st.config.tokens
    };
    let user = if tokens.is_empty() || is_health_check(path) {
        None
    } else {
        // Every token is compared, each without short-circuiting, so the time taken
        // does not tell which one came close.
        let found = presented.and_then(|p| {
            tokens.iter().fold(
                None,
                |hit, (token, user)| if same(p, token) { Some(user) } else { hit },
            )
        });
        match found {
            Some(user) => Some(user.clone()),
            None if !member && st.config.optional_tokens => None,
            None => return ApiError::Unauthorized.into_response(),
        }
    };
    let mut resp = next.run(req).await;
    if let Some(user) = user {
        resp.extensions_mut().insert(metrics::User(user));
    }
    resp
}

/// Whether `presented` is `token`, compared without short-circuiting on the first
/// differing byte.
fn same(presented: &str, token: &str) -> bool {
    presented.len() == token.len()
        && presented
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Health checks answer without a token, at the top level and in member clusters.
fn is_health_check(path: &str) -> bool {
    let path = match path.strip_prefix("/clusters/") {
        Some(rest) => rest.find('/').map_or("", |i| &rest[i..]),
        None => path,
    };
    matches!(path, "/healthz" | "/livez" | "/readyz")
}

fn json_ok(v: Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

async fn version() -> Response {
    json_ok(json!({
        "major": "1",
        "minor": "33",
        "gitVersion": concat!("v1.33.0-shoal.", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    }))
}

async fn health() -> &'static str {
    "ok"
}

async fn ready(Extension(st): St) -> Response {
    match st.store.current_revision().await {
        Ok(_) => "ok".into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("[-]store failed: {e}\nreadyz check failed"),
        )
            .into_response(),
    }
}

async fn prometheus(State(st): State<Arc<AppState>>) -> Response {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &st.telemetry.registry) {
        return ApiError::Internal(format!("failed to encode metrics: {e}")).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

fn accept(headers: &HeaderMap) -> &str {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn aggregated(v: Value) -> Response {
    let mut resp = json_ok(v);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(discovery::AGGREGATED_CONTENT_TYPE),
    );
    resp
}

async fn api_root(Extension(st): St, headers: HeaderMap) -> Response {
    if discovery::wants_aggregated(accept(&headers)) {
        aggregated(discovery::aggregated(&st.registry, true))
    } else {
        json_ok(discovery::core_versions())
    }
}

async fn apis_root(Extension(st): St, headers: HeaderMap) -> Response {
    if discovery::wants_aggregated(accept(&headers)) {
        aggregated(discovery::aggregated(&st.registry, false))
    } else {
        json_ok(discovery::group_list(&st.registry))
    }
}

async fn core_resources(Extension(st): St) -> Response {
    discovery::resource_list(&st.registry, "", "v1")
        .map_or_else(|| ApiError::NoRoute.into_response(), json_ok)
}

async fn api_group(Extension(st): St, Path(group): Path<String>) -> Response {
    discovery::group(&st.registry, &group)
        .map_or_else(|| ApiError::NoRoute.into_response(), json_ok)
}

async fn group_resources(
    Extension(st): St,
    Path((group, version)): Path<(String, String)>,
) -> Response {
    discovery::resource_list(&st.registry, &group, &version)
        .map_or_else(|| ApiError::NoRoute.into_response(), json_ok)
}

async fn openapi_index(Extension(st): St) -> Response {
    json_ok(st.openapi.index())
}

async fn openapi_doc(Extension(st): St, Path(path): Path<String>) -> Response {
    match st.openapi.docs.get(path.trim_matches('/')) {
        Some((_, doc)) => {
            let mut resp = json_ok(doc.clone());
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        None => ApiError::NoRoute.into_response(),
    }
}

async fn openapi_v2() -> Response {
    // shoal publishes OpenAPI v3 only; clients that need v2 (kubectl < 1.27 validation)
    // must run with --validate=false.
    ApiError::NoRoute.into_response()
}

async fn resources(Extension(st): St, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    rest::handle(
        st,
        parts.method,
        parts.uri.path(),
        parts.uri.query(),
        parts.headers,
        body,
    )
    .await
}
