//! The API edge's errors, and the one place where they become HTTP status codes and
//! Kubernetes `Status` objects.
//!
//! Every failure a request can meet is an [`ApiError`] variant; `IntoResponse` maps it to
//! the code and `reason` that kubectl and client-go expect (`NotFound` → 404,
//! `AlreadyExists`/`Conflict` → 409, `Invalid` → 422 with `details.causes`, …).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use shoal_core::FieldError;

/// Identifies the object an error is about (`clusters.shoal.io "c-1"`).
#[derive(Clone, Debug, Default)]
pub struct Target {
    pub group: String,
    pub plural: String,
    pub kind: String,
    pub name: String,
}

impl Target {
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{} {:?} not found", .0.qualified(), .0.name)]
    NotFound(Target),
    #[error("the server could not find the requested resource")]
    NoRoute,
    #[error("{} {:?} already exists", .0.qualified(), .0.name)]
    AlreadyExists(Target),
    #[error(
        "Operation cannot be fulfilled on {} {:?}: {}",
        .target.qualified(), .target.name, .message
    )]
    Conflict { target: Target, message: String },
    /// A server-side apply would change fields other managers own.
    #[error("{}", crate::apply::conflicts_message(.conflicts))]
    ApplyConflict {
        target: Target,
        conflicts: Vec<crate::apply::Conflict>,
    },
    #[error("{} {:?} is invalid: {}", .target.kind, .target.name, join_causes(.causes))]
    Invalid {
        target: Target,
        causes: Vec<FieldError>,
    },
    #[error("{} {:?} is forbidden: {}", .target.qualified(), .target.name, .message)]
    Forbidden { target: Target, message: String },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("the request is too large: {0}")]
    TooLarge(String),
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    #[error(
        "the server does not allow this method on the requested resource ({verb} {}): it is read-only, served for get, list and watch",
        .target.qualified()
    )]
    ReadOnly { verb: String, target: Target },
    #[error("{0}")]
    Gone(String),
    #[error("Unauthorized")]
    Unauthorized,
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
    /// A write made as leader of `role` in term `term` (see [`crate::fence`]), after
    /// that term ended: another replica leads now.
    #[error(
        "the write was made as leader of {role:?} in term {term}, which is over: another \
         replica holds lease shoal-system/{role} now"
    )]
    Fenced { role: String, term: i64 },
}

fn join_causes(causes: &[FieldError]) -> String {
    let parts: Vec<String> = causes
        .iter()
        .map(|c| match c.kind {
            shoal_core::FieldErrorKind::Required => format!("{}: Required value", c.field),
            _ => format!("{}: {}", c.field, c.detail),
        })
        .collect();
    if parts.len() == 1 {
        parts[0].clone()
    } else {
        format!("[{}]", parts.join(", "))
    }
}

impl From<shoal_store::Error> for ApiError {
    fn from(e: shoal_store::Error) -> Self {
        match e {
            shoal_store::Error::Compacted {
                requested,
                compacted,
            } => ApiError::Gone(format!(
                "too old resource version: {requested} ({compacted})"
            )),
            shoal_store::Error::FutureRevision { requested, current } => ApiError::Timeout(
                format!("Too large resource version: {requested}, current: {current}"),
            ),
            shoal_store::Error::Unavailable(msg) => ApiError::Unavailable(msg),
            other => {
                let mut msg = other.to_string();
                let mut src = std::error::Error::source(&other);
                while let Some(s) = src {
                    msg.push_str(": ");
                    msg.push_str(&s.to_string());
                    src = s.source();
                }
                ApiError::Internal(msg)
            }
        }
    }
}

impl ApiError {
    /// HTTP code and `Status.reason`.
    pub fn code_reason(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::NotFound(_) | ApiError::NoRoute => (StatusCode::NOT_FOUND, "NotFound"),
            ApiError::AlreadyExists(_) => (StatusCode::CONFLICT, "AlreadyExists"),
            ApiError::Conflict { .. } | ApiError::ApplyConflict { .. } => {
                (StatusCode::CONFLICT, "Conflict")
            }
            ApiError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            ApiError::Forbidden { .. } => (StatusCode::FORBIDDEN, "Forbidden"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType")
            }
            ApiError::NotAcceptable(_) => (StatusCode::NOT_ACCEPTABLE, "NotAcceptable"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge"),
            ApiError::MethodNotAllowed | ApiError::ReadOnly { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed")
            }
            ApiError::Gone(_) => (StatusCode::GONE, "Expired"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            ApiError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "Timeout"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
            // 412: the condition the request carried in a header (its fence) did not
            // hold. Not 409, which clients answer by reading again and retrying: a
            // deposed leader must stop, not retry. Kubernetes has no reason for 412, so
            // the reason says what happened.
            ApiError::Fenced { .. } => (StatusCode::PRECONDITION_FAILED, "Fenced"),
        }
    }

    /// The Kubernetes `Status` object for this error.
    pub fn status(&self) -> Value {
        let (code, reason) = self.code_reason();
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": reason,
            "code": code.as_u16(),
        });
        let target = match self {
            ApiError::NotFound(t) | ApiError::AlreadyExists(t) => Some(t),
            ApiError::Conflict { target, .. }
            | ApiError::ApplyConflict { target, .. }
            | ApiError::Invalid { target, .. }
            | ApiError::Forbidden { target, .. }
            | ApiError::ReadOnly { target, .. } => Some(target),
            _ => None,
        };
        if let ApiError::Fenced { role, .. } = self {
            status["details"] =
                json!({"name": role, "group": "coordination.k8s.io", "kind": "leases"});
        }
        if let Some(t) = target {
            let mut details = json!({"name": t.name, "group": t.group, "kind": t.plural});
            if let ApiError::Invalid { causes, .. } = self {
                details["kind"] = json!(t.kind);
                details["causes"] = causes
                    .iter()
                    .map(|c| json!({"reason": c.kind.reason(), "message": c.detail, "field": c.field}))
                    .collect();
            }
            if let ApiError::ApplyConflict { conflicts, .. } = self {
                details["causes"] = conflicts
                    .iter()
                    .map(|c| {
                        json!({"reason": "FieldManagerConflict",
                               "message": format!("conflict with {}", c.manager),
                               "field": c.field})
                    })
                    .collect();
            }
            status["details"] = details;
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, _) = self.code_reason();
        if code.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let mut resp = (code, axum::Json(self.status())).into_response();
        if matches!(self, ApiError::Unauthorized) {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::FieldErrorKind;

    #[test]
    fn invalid_status_lists_each_cause_with_its_field() {
        let e = ApiError::Invalid {
            target: Target {
                group: "shoal.io".into(),
                plural: "clusters".into(),
                kind: "Cluster".into(),
                name: "c".into(),
            },
            causes: vec![FieldError::new(
                "spec.endpoint.server",
                FieldErrorKind::Invalid,
                "bad url",
            )],
        };
        let s = e.status();
        assert_eq!(s["code"], 422);
        assert_eq!(s["reason"], "Invalid");
        assert_eq!(s["details"]["causes"][0]["field"], "spec.endpoint.server");
        assert_eq!(
            s["message"],
            "Cluster \"c\" is invalid: spec.endpoint.server: bad url"
        );
    }

    #[test]
    fn not_found_reads_like_kubernetes() {
        let e = ApiError::NotFound(Target {
            group: "shoal.io".into(),
            plural: "clusters".into(),
            kind: "Cluster".into(),
            name: "x".into(),
        });
        assert_eq!(e.to_string(), "clusters.shoal.io \"x\" not found");
        assert_eq!(e.status()["code"], 404);
    }
}
