//! The dashboard: the assets of `web/` (plain HTML, CSS and JavaScript, no build step),
//! embedded into the binary and served at `/ui/`.
//!
//! ```text
//!  GET /ui          → 308 /ui/
//!  GET /ui/         → web/index.html
//!  GET /ui/app.js   → web/app.js      (hash routes: #/, #/release/NAME, #/run/NS/NAME, …)
//!  GET /ui/style.css→ web/style.css
//!          │
//!          └─ the page talks to the API only: list, then watch from the list's
//!             resourceVersion; actions are merge patches and creates, as kubectl's are
//! ```
//!
//! The key decision: the dashboard holds no server-side state and has no API of its own.
//! Everything it shows comes from the same endpoints kubectl uses, and every button goes
//! through the same admission, authorization and audit chain, so the page can never see
//! or do more than the user's credentials allow.
//!
//! So the assets themselves are public: `shoal serve` mounts these routes outside the
//! bearer-token check, because a browser opening `/ui/` has no way to send a token. When
//! the API answers 401 the page shows a sign-in form, keeps the token in
//! `sessionStorage` and sends it on every request, watches included, along with
//! `X-Shoal-Client: dashboard` so that the audit log can tell the page from kubectl.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// One embedded file: its path under `/ui/`, its content type, its bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// Every file of `web/`; the first is the index.
const ASSETS: &[Asset] = &[
    Asset {
        path: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../../../web/index.html"),
    },
    Asset {
        path: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../../web/app.js"),
    },
    Asset {
        path: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../../web/style.css"),
    },
];

/// The asset at `path` (relative to `/ui/`; empty for the index).
fn asset(path: &str) -> Option<&'static Asset> {
    let path = if path.is_empty() { "index.html" } else { path };
    ASSETS.iter().find(|a| a.path == path)
}

fn respond(path: &str) -> Response {
    match asset(path) {
        Some(a) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(a.content_type),
                ),
                // The assets change with the binary; a restart must not show stale ones.
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            a.body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such dashboard asset\n").into_response(),
    }
}

/// The dashboard's routes, merged into the API server's router by `shoal serve`.
pub fn routes() -> axum::Router {
    axum::Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| async { respond("") }))
        .route(
            "/ui/{*path}",
            get(|axum::extract::Path(path): axum::extract::Path<String>| async move {
                respond(&path)
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// What `respond(path)` answers: status, content type and body.
    async fn answer(path: &str) -> (StatusCode, String, String) {
        let resp = respond(path);
        let status = resp.status();
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, ct, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn the_index_and_every_asset_are_served_with_their_type() {
        let (status, ct, body) = answer("").await;
        assert_eq!(status, StatusCode::OK);
        assert!(ct.starts_with("text/html"), "{ct}");
        assert!(
            body.contains("app.js") && body.contains("style.css"),
            "{body}"
        );
        for a in ASSETS {
            let (status, ct, body) = answer(a.path).await;
            assert_eq!((status, ct.as_str()), (StatusCode::OK, a.content_type));
            assert_eq!(body, a.body);
        }
    }

    #[tokio::test]
    async fn an_unknown_asset_is_not_found() {
        assert_eq!(answer("nope.js").await.0, StatusCode::NOT_FOUND);
        assert_eq!(answer("../Cargo.toml").await.0, StatusCode::NOT_FOUND);
    }
}
