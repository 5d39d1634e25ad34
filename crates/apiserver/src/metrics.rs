//! The API server's Prometheus metrics, and the middleware that records them.
//!
//! Handlers attach a [`RequestInfo`] (verb and resource, as Kubernetes names them) to
//! their response; the middleware counts the request by verb, resource and code and
//! observes its latency. Store metrics are registered by whoever built the store, into
//! the same registry, so `/metrics` shows both.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// What a request did, for metrics and logs.
#[derive(Clone, Debug, Default)]
pub struct RequestInfo {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, or a non-resource verb.
    pub verb: &'static str,
    /// `clusters`, `clusters/status`, or empty for non-resource requests.
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: String,
    resource: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    verb: String,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    pub resource: String,
}

/// The API server's own metrics.
#[derive(Clone, Debug)]
pub struct ApiMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
    pub open_watches: Family<WatchLabels, Gauge>,
}

impl ApiMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        // 1 ms … ~16 s: API calls on loopback are sub-millisecond to a few ms; the top
        // buckets catch fsync stalls.
        let latency = Family::<LatencyLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let open_watches = Family::<WatchLabels, Gauge>::default();
        registry.register(
            "apiserver_requests",
            "API requests by verb, resource and HTTP code",
            requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "API request latency by verb and resource (watches: until the stream is set up)",
            latency.clone(),
        );
        registry.register(
            "apiserver_open_watches",
            "Watch streams currently open, by resource",
            open_watches.clone(),
        );
        ApiMetrics {
            requests,
            latency,
            open_watches,
        }
    }
}

/// The registry and the API metrics inside it.
#[derive(Debug)]
pub struct Telemetry {
    pub registry: Registry,
    pub api: ApiMetrics,
}

/// Axum middleware recording every request.
pub async fn record(State(t): State<Arc<Telemetry>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    // Only a request that may change something is audited: reads pay nothing for it.
    let who = (method != axum::http::Method::GET).then(|| Caller::of(req.headers()));
    let resp = next.run(req).await;
    let info = resp
        .extensions()
        .get::<RequestInfo>()
        .cloned()
        .unwrap_or_else(|| RequestInfo {
            verb: "nonresource",
            resource: String::new(),
        });
    let code = resp.status().as_u16();
    let elapsed = start.elapsed().as_secs_f64();
    t.api
        .requests
        .get_or_create(&RequestLabels {
            verb: info.verb.into(),
            resource: info.resource.clone(),
            code: code.to_string(),
        })
        .inc();
    t.api
        .latency
        .get_or_create(&LatencyLabels {
            verb: info.verb.into(),
            resource: info.resource.clone(),
        })
        .observe(elapsed);
    tracing::debug!(%method, path, verb = info.verb, resource = info.resource, code, elapsed_ms = elapsed * 1e3, "request");
    if let Some(mut who) = who.filter(|_| is_write(info.verb)) {
        if let Some(User(user)) = resp.extensions().get::<User>() {
            who.user.clone_from(user);
        }
        // The audit trail: every change, who asked and what came of it. shoal's own
        // clients are logged at debug, as a Kubernetes audit policy leaves out the
        // controller manager's writes. Which they are is decided by the user their token
        // authenticated, never by a header a client sends (anyone can send one): on a
        // server without tokens nothing is shoal's own.
        if who.is_shoal() {
            tracing::debug!(target: "shoal::audit", user = %who.user, client = %who.client,
                verb = %info.verb, resource = %info.resource, %path, code, "write");
        } else {
            tracing::info!(target: "shoal::audit", user = %who.user, client = %who.client,
                verb = %info.verb, resource = %info.resource, %path, code, "write");
        }
    }
    resp
}

/// The `X-Shoal-Client` of shoal's own controllers.
pub const CONTROLLERS_CLIENT: &str = "shoal-controllers";

/// Verbs that change something.
fn is_write(verb: &str) -> bool {
    matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    )
}

/// The user shoal's own clients of its API are (controllers, the fleet's registration,
/// `--apply`), with a token the server makes at each start, as kube-apiserver's loopback
/// client. Their writes are audited at debug, as the controllers' are.
pub const SHOAL_USER: &str = "system:shoal";

/// The user a request's bearer token stands for, as authentication found it (set on the
/// response, where the audit trail reads it).
#[derive(Clone, Debug)]
pub struct User(pub String);

/// Who made a request, as far as the audit trail can tell.
struct Caller {
    /// The user its token stands for; `anonymous` when the server asks for none.
    user: String,
    /// `X-Shoal-Client` (the dashboard sends `dashboard`), else the User-Agent: for
    /// display only, a client says what it likes there.
    client: String,
}

impl Caller {
    fn of(headers: &axum::http::HeaderMap) -> Self {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let client = text("x-shoal-client")
            .or_else(|| text("user-agent"))
            .unwrap_or("-");
        Caller {
            user: "anonymous".to_string(),
            client: client.chars().take(120).collect(),
        }
    }

    /// One of shoal's own clients (controllers, the fleet's registration, `--apply`):
    /// authenticated as [`SHOAL_USER`] by the token the server made for them.
    fn is_shoal(&self) -> bool {
        self.user == SHOAL_USER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(headers: &[(&'static str, &str)], user: Option<&str>) -> Caller {
        let mut map = axum::http::HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, v.parse().unwrap());
        }
        let mut c = Caller::of(&map);
        if let Some(u) = user {
            c.user = u.into();
        }
        c
    }

    #[test]
    fn only_shoals_own_token_not_a_header_makes_a_write_shoals_own() {
        let claims = [
            ("x-shoal-client", CONTROLLERS_CLIENT),
            (crate::fence::HEADER, "taskflow/1/1"),
        ];
        let anonymous = caller(&claims, None);
        assert!(!anonymous.is_shoal(), "a header lowers nothing");
        assert_eq!(anonymous.client, CONTROLLERS_CLIENT, "but names the client");
        assert!(!caller(&claims, Some("alice")).is_shoal());
        assert!(caller(&[], Some(SHOAL_USER)).is_shoal());
    }
}
