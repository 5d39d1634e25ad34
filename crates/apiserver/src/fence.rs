//! Fenced writes: a client writing as the leader of a role says so in a request header,
//! and every store write the request makes is conditional on that leader term still
//! being current, checked by the store in the same atomic step as the write.
//!
//! ```text
//!  controller (leader of "taskflow", term = election key's create_revision 42)
//!    │  PUT …/pipelineruns/r1/status      X-Shoal-Fence: taskflow=42
//!    ▼
//!  layer(): parse the header ──► FENCE task-local { guard: key …/leases/shoal-system/taskflow
//!    │                                                     has CreateRevision(42) }
//!    ▼
//!  rest::handle … st.store.put(…) ──► FencingBackend::put_guarded([guard, …]) ──► store
//!                                        └─ guard failed: mark the request fenced
//!    ▼
//!  layer(): fenced? ──► 412 Status naming the role, whatever the handler made of it
//! ```
//!
//! The header is `X-Shoal-Fence: <role>=<term>`, `term` being the role's
//! [`shoal_store::election::Fence::create_revision`]. A request without it is not fenced.
//!
//! # The key decision
//!
//! The guard rides in a task-local set around the request and is added by a wrapping
//! backend, so no handler has to know about fencing: every write any handler makes (a
//! create, an update, a status write, a delete, a finalizer's last delete) is fenced
//! alike, and a handler written later is fenced too. A failed guard is reported as
//! [`ApiError::Fenced`] (412: the condition the request carried in a header did not
//! hold), never as the handler's own reading of a failed precondition (409 or 404).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use shoal_store::election::{Fence, role_key};
use shoal_store::{
    Backend, DeleteResponse, Error, Guard, LeaseId, Precondition, PutResponse, RangeRequest,
    RangeResponse, Result, Revision, Store, WatchProgress, WatchStream,
};

use crate::error::ApiError;

/// The request header naming the leader term a write is made under.
pub const HEADER: &str = "x-shoal-fence";

/// The header's value for `role`'s term `fence`.
pub fn header_value(role: &str, fence: &Fence) -> String {
    format!("{role}={}", fence.create_revision)
}

/// The fence of the request being served.
#[derive(Debug)]
struct Scope {
    role: String,
    term: Revision,
    guard: Guard,
    /// Set when a write failed on this guard.
    tripped: AtomicBool,
}

tokio::task_local! {
    static FENCE: Arc<Scope>;
}

/// Parses `<role>=<term>`.
fn parse(value: &str) -> Option<(String, Revision)> {
    let (role, term) = value.trim().split_once('=')?;
    let valid_role = !role.is_empty() && shoal_core::validation::dns1123_subdomain(role).is_empty();
    let term: Revision = term.parse().ok()?;
    (valid_role && term > 0).then(|| (role.to_string(), term))
}

/// Middleware: serves a request carrying [`HEADER`] with its writes fenced; answers 400
/// to a malformed header and 412 when a write failed on the fence.
pub async fn layer(req: Request, next: Next) -> Response {
    let Some(value) = req.headers().get(HEADER) else {
        return next.run(req).await;
    };
    let Some((role, term)) = value.to_str().ok().and_then(parse) else {
        return ApiError::BadRequest(format!(
            "header {HEADER} must be <role>=<term>, a lease name and a positive revision"
        ))
        .into_response();
    };
    let scope = Arc::new(Scope {
        guard: Guard::new(role_key(&role), Precondition::CreateRevision(term)),
        role,
        term,
        tripped: AtomicBool::new(false),
    });
    let resp = FENCE.scope(scope.clone(), next.run(req)).await;
    if scope.tripped.load(Ordering::Acquire) {
        tracing::info!(role = %scope.role, term = scope.term, "refused a write of a deposed leader");
        let mut refused = ApiError::Fenced {
            role: scope.role.clone(),
            term: scope.term,
        }
        .into_response();
        // What the request was, for the metrics and the audit trail: a refused write is
        // still a write someone attempted.
        if let Some(info) = resp.extensions().get::<crate::metrics::RequestInfo>() {
            refused.extensions_mut().insert(info.clone());
        }
        return refused;
    }
    resp
}

/// Wraps `store` so that writes made while serving a fenced request carry its guard.
pub fn wrap(store: Store) -> Store {
    Store::new(FencingBackend(store))
}

/// A backend adding the current request's fence (if any) to every write.
#[derive(Debug)]
struct FencingBackend(Store);

impl FencingBackend {
    /// `guards` with the request's fence first, and the fence (to recognise its failure).
    fn guards(guards: &[Guard]) -> (Vec<Guard>, Option<Arc<Scope>>) {
        match FENCE.try_with(Arc::clone) {
            Ok(scope) => {
                let mut all = Vec::with_capacity(guards.len() + 1);
                all.push(scope.guard.clone());
                all.extend_from_slice(guards);
                (all, Some(scope))
            }
            Err(_) => (guards.to_vec(), None),
        }
    }

    fn check<T>(result: Result<T>, scope: Option<&Arc<Scope>>) -> Result<T> {
        if let (Err(Error::PreconditionFailed { key, .. }), Some(scope)) = (&result, scope)
            && *key == scope.guard.key
        {
            scope.tripped.store(true, Ordering::Release);
        }
        result
    }
}

#[async_trait]
impl Backend for FencingBackend {
    async fn get(&self, key: &str) -> Result<Option<shoal_store::KeyValue>> {
        self.0.get(key).await
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        self.0.range(req).await
    }

    async fn range_at(&self, req: RangeRequest, revision: Revision) -> Result<RangeResponse> {
        self.0.range_at(req, revision).await
    }

    async fn put_guarded(
        &self,
        guards: &[Guard],
        key: &str,
        value: Bytes,
        cond: Precondition,
        lease: Option<LeaseId>,
    ) -> Result<PutResponse> {
        let (guards, scope) = Self::guards(guards);
        let result = self.0.put_guarded(&guards, key, value, cond, lease).await;
        Self::check(result, scope.as_ref())
    }

    async fn delete_guarded(
        &self,
        guards: &[Guard],
        key: &str,
        cond: Precondition,
    ) -> Result<DeleteResponse> {
        let (guards, scope) = Self::guards(guards);
        let result = self.0.delete_guarded(&guards, key, cond).await;
        Self::check(result, scope.as_ref())
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        self.0.watch(prefix, after).await
    }

    async fn watch_with_progress(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<(WatchStream, WatchProgress)> {
        self.0.watch_with_progress(prefix, after).await
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.0.current_revision().await
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        self.0.compacted_revision().await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.0.compact(revision).await
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        self.0.lease_grant(ttl).await
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<()> {
        self.0.lease_keep_alive(id).await
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        self.0.lease_revoke(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_names_a_role_and_a_positive_term() {
        assert_eq!(parse("taskflow=42"), Some(("taskflow".into(), 42)));
        assert_eq!(parse(" taskflow=7 "), Some(("taskflow".into(), 7)));
        for bad in [
            "taskflow",
            "=3",
            "taskflow=0",
            "taskflow=-1",
            "Task Flow=3",
            "t=x",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    async fn put(store: &Store, key: &str) -> Result<PutResponse> {
        store
            .put(key, Bytes::from_static(b"{}"), Precondition::None, None)
            .await
    }

    #[tokio::test]
    async fn a_write_under_a_current_term_lands_and_under_an_old_one_is_refused() {
        let inner = Store::memory();
        let store = wrap(inner.clone());
        let lease = role_key("taskflow");
        let term = put(&inner, &lease).await.unwrap().kv.create_revision;
        let scope = |term| {
            Arc::new(Scope {
                role: "taskflow".into(),
                term,
                guard: Guard::new(lease.clone(), Precondition::CreateRevision(term)),
                tripped: AtomicBool::new(false),
            })
        };
        let current = scope(term);
        FENCE
            .scope(current.clone(), put(&store, "/registry/x/a"))
            .await
            .expect("the current term writes");
        assert!(!current.tripped.load(Ordering::Acquire));

        // A new term: the key is deleted and re-created by another leader.
        inner.delete(&lease, Precondition::Present).await.unwrap();
        put(&inner, &lease).await.unwrap();
        let old = scope(term);
        let err = FENCE
            .scope(old.clone(), put(&store, "/registry/x/b"))
            .await
            .expect_err("the old term is refused");
        assert!(matches!(err, Error::PreconditionFailed { ref key, .. } if *key == lease));
        assert!(old.tripped.load(Ordering::Acquire));
        assert!(
            inner.get("/registry/x/b").await.unwrap().is_none(),
            "nothing landed"
        );
        // Outside a fenced request, writes are not guarded.
        put(&store, "/registry/x/c").await.expect("unfenced write");
    }
}
