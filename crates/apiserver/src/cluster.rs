//! Logical clusters: many Kubernetes API surfaces in one server, one per member cluster,
//! at `/clusters/{name}/…`.
//!
//! ```text
//! GET /clusters/c-0042/api/v1/pods?watch=1
//!      │            └────────────── served exactly like /api/v1/pods at the top level
//!      └─ ClusterDirectory::lookup("c-0042") ──► Store of that cluster (404 Status if none)
//!
//! MemberClusters ── directory: Arc<dyn ClusterDirectory>   (owned by the simulator, …)
//!                └─ surface:   Surface  registry + OpenAPI + clock + config + metrics,
//!                                       built once, shared by every member cluster
//! ```
//!
//! The key decision: a member cluster is nothing but a [`Store`]. Everything else a
//! request needs is shared by all member clusters and built once, so 10,000 clusters
//! cost 10,000 store handles, and a request costs one directory lookup plus one small
//! allocation, whatever the size of the fleet. The routes are the same router the
//! top-level API uses; the handler strips `/clusters/{name}`, binds the shared surface to
//! the cluster's store and hands the request on.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::Request;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use shoal_store::Store;
use tower::ServiceExt;

use crate::error::{ApiError, Target};
use crate::{ApiResult, Surface};

/// Namespaces every member cluster has, as a fresh Kubernetes cluster has them.
pub const MEMBER_DEFAULT_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Where member clusters live: the seam between the API server and whoever owns the
/// clusters (the fleet simulator, tests).
pub trait ClusterDirectory: Send + Sync + fmt::Debug {
    /// The store of cluster `name`, or `None` if there is no such cluster. Called on
    /// every request under `/clusters/{name}/`, so it must not scan the fleet: a hash
    /// map lookup and a handle clone.
    fn lookup(&self, name: &str) -> Option<Store>;

    /// The names of all member clusters, sorted. Not on any request's hot path.
    fn names(&self) -> Vec<String>;
}

/// A directory held in a map: for tests and small fleets.
#[derive(Clone, Debug, Default)]
pub struct StaticDirectory {
    clusters: Arc<RwLock<HashMap<String, Store>>>,
}

impl StaticDirectory {
    pub fn new() -> Self {
        StaticDirectory::default()
    }

    /// Adds (or replaces) cluster `name`.
    pub fn insert(&self, name: impl Into<String>, store: Store) {
        self.clusters
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.into(), store);
    }

    /// Removes cluster `name`; its requests answer 404 from now on.
    pub fn remove(&self, name: &str) -> Option<Store> {
        self.clusters
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
    }
}

impl FromIterator<(String, Store)> for StaticDirectory {
    fn from_iter<I: IntoIterator<Item = (String, Store)>>(iter: I) -> Self {
        StaticDirectory {
            clusters: Arc::new(RwLock::new(iter.into_iter().collect())),
        }
    }
}

impl ClusterDirectory for StaticDirectory {
    fn lookup(&self, name: &str) -> Option<Store> {
        self.clusters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .clusters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }
}

/// The member clusters of a server: a directory and the one surface they all serve.
pub struct MemberClusters {
    directory: Arc<dyn ClusterDirectory>,
    surface: Surface,
    routes: Router,
}

impl fmt::Debug for MemberClusters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemberClusters")
            .field("directory", &self.directory)
            .field("kinds", &self.surface.registry.all().len())
            .finish_non_exhaustive()
    }
}

/// Where a request under `/clusters/` goes.
#[derive(Debug, PartialEq, Eq)]
pub struct MemberPath<'a> {
    /// The cluster's name.
    pub cluster: &'a str,
    /// The path inside the cluster, starting with `/` (`/api/v1/pods`).
    pub rest: &'a str,
}

/// Splits `/clusters/{name}/{rest}`; `None` for other paths or an empty name.
pub fn parse_member_path(path: &str) -> Option<MemberPath<'_>> {
    let tail = path.strip_prefix("/clusters/")?;
    let (cluster, rest) = match tail.find('/') {
        Some(i) => (&tail[..i], &tail[i..]),
        None => (tail, "/"),
    };
    (!cluster.is_empty()).then_some(MemberPath { cluster, rest })
}

fn unknown_cluster(name: &str) -> ApiError {
    ApiError::NotFound(Target {
        group: String::new(),
        plural: "clusters".into(),
        kind: "Cluster".into(),
        name: name.to_string(),
    })
}

impl MemberClusters {
    /// Member clusters from `directory`, all serving `surface`.
    pub fn new(directory: Arc<dyn ClusterDirectory>, surface: Surface) -> Self {
        MemberClusters {
            directory,
            surface,
            routes: crate::surface_routes(),
        }
    }

    pub fn directory(&self) -> &Arc<dyn ClusterDirectory> {
        &self.directory
    }

    /// The surface every member cluster serves (its registry, OpenAPI documents, …).
    pub fn surface(&self) -> &Surface {
        &self.surface
    }

    /// Creates the default namespaces (`default`, `kube-system`, `kube-public`,
    /// `kube-node-lease`) in a member cluster's store if they are missing.
    ///
    /// # Errors
    /// A store error other than "already exists".
    pub async fn ensure_default_namespaces(&self, store: Store) -> ApiResult<()> {
        self.surface.ensure_default_namespaces(store).await
    }

    /// Serves one request whose path starts with `/clusters/`.
    pub async fn serve(&self, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let Some(mp) = parse_member_path(parts.uri.path()) else {
            return ApiError::NoRoute.into_response();
        };
        let Some(store) = self.directory.lookup(mp.cluster) else {
            return unknown_cluster(mp.cluster).into_response();
        };
        let uri = match parts.uri.query() {
            Some(q) => format!("{}?{q}", mp.rest),
            None => mp.rest.to_string(),
        };
        let Ok(uri) = uri.parse::<Uri>() else {
            return ApiError::BadRequest("malformed request path".into()).into_response();
        };
        // A fresh request rather than the outer one: the outer router's path parameters
        // live in its extensions and would confuse the inner routes' extractors.
        let mut inner = Request::new(body);
        *inner.method_mut() = parts.method;
        *inner.uri_mut() = uri;
        *inner.version_mut() = parts.version;
        *inner.headers_mut() = parts.headers;
        inner.extensions_mut().insert(self.surface.bind(store));
        match self.routes.clone().oneshot(inner).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_paths_split_into_cluster_and_rest() {
        assert_eq!(
            parse_member_path("/clusters/c-1/api/v1/pods"),
            Some(MemberPath {
                cluster: "c-1",
                rest: "/api/v1/pods"
            })
        );
        assert_eq!(
            parse_member_path("/clusters/c-1"),
            Some(MemberPath {
                cluster: "c-1",
                rest: "/"
            })
        );
        assert_eq!(parse_member_path("/clusters/"), None);
        assert_eq!(parse_member_path("/api/v1/pods"), None);
    }

    async fn call(
        router: &Router,
        method: &str,
        path: &str,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_string()))
            .expect("request");
        let resp = router.clone().oneshot(req).await.expect("infallible");
        let code = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        (
            code,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn member_clusters_are_served_over_their_own_store_and_unknown_ones_are_404() {
        let dir = StaticDirectory::new();
        dir.insert("c-1", Store::memory());
        dir.insert("c-2", Store::memory());
        let server = crate::ApiServer::new(
            Store::memory(),
            crate::Registry::shoal(),
            Arc::new(shoal_core::clock::SystemClock),
            crate::ServerConfig::default(),
            prometheus_client::registry::Registry::default(),
            tokio_util::sync::CancellationToken::new(),
        )
        // shoal's registry stands in for the member one here: it is quicker to build.
        .with_member_clusters(Arc::new(dir.clone()), crate::Registry::shoal());
        let members = server.member_clusters().unwrap().clone();
        for name in ["c-1", "c-2"] {
            members
                .ensure_default_namespaces(dir.lookup(name).unwrap())
                .await
                .unwrap();
        }
        let router = server.router();
        let ns = r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"only-in-c1"}}"#;
        let (code, _) = call(&router, "POST", "/clusters/c-1/api/v1/namespaces", ns).await;
        assert_eq!(code, 201);
        let (code, obj) = call(
            &router,
            "GET",
            "/clusters/c-1/api/v1/namespaces/only-in-c1",
            "",
        )
        .await;
        assert_eq!(
            (code, obj["metadata"]["name"].as_str()),
            (200, Some("only-in-c1"))
        );
        let (code, _) = call(
            &router,
            "GET",
            "/clusters/c-2/api/v1/namespaces/only-in-c1",
            "",
        )
        .await;
        assert_eq!(code, 404);
        let (code, _) = call(&router, "GET", "/api/v1/namespaces/only-in-c1", "").await;
        assert_eq!(code, 404, "the top-level API is a separate store");
        let (code, list) = call(
            &router,
            "GET",
            "/clusters/c-2/api/v1/namespaces?limit=10",
            "",
        )
        .await;
        assert_eq!(code, 200);
        assert_eq!(
            list["items"].as_array().unwrap().len(),
            MEMBER_DEFAULT_NAMESPACES.len()
        );
        let (code, status) = call(&router, "GET", "/clusters/c-9/api/v1/namespaces", "").await;
        assert_eq!(code, 404);
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["message"], "clusters \"c-9\" not found");
        let (code, v) = call(&router, "GET", "/clusters/c-1/version", "").await;
        assert_eq!((code, v["major"].as_str()), (200, Some("1")));
        let (code, _) = call(
            &router,
            "GET",
            "/clusters/c-1/openapi/v3/apis/shoal.io/v1alpha1",
            "",
        )
        .await;
        assert_eq!(code, 200);
        let (code, _) = call(
            &router,
            "DELETE",
            "/clusters/c-1/api/v1/namespaces/kube-public",
            "",
        )
        .await;
        assert_eq!(code, 403, "a member's default namespaces are protected");
    }

    #[test]
    fn a_static_directory_finds_only_its_clusters() {
        let dir: StaticDirectory = [("c-1".to_string(), Store::memory())].into_iter().collect();
        dir.insert("c-0", Store::memory());
        assert!(dir.lookup("c-1").is_some());
        assert!(dir.lookup("c-2").is_none());
        assert_eq!(dir.names(), vec!["c-0".to_string(), "c-1".to_string()]);
        dir.remove("c-1");
        assert!(dir.lookup("c-1").is_none());
    }
}
