//! Resource requests: get, list, create, update, patch, delete (watch is in [`crate::watch`]).
//!
//! ```text
//! /api/v1/namespaces/{name}[/status]                         cluster-scoped core kinds
//! /apis/{group}/{version}/{plural}[/{name}[/status]]         cluster-scoped, or all namespaces
//! /apis/{group}/{version}/namespaces/{ns}/{plural}[/{name}[/status]]
//! ```
//!
//! Paths are parsed by hand rather than by the router, because whether
//! `/api/v1/namespaces/x/status` is a subresource or a collection depends on the registry.
//! Every write is a compare-and-swap on the key's `mod_revision`, so two writers never
//! silently overwrite each other: a stale `resourceVersion` answers 409, and patches retry
//! on races they did not ask to detect. A server-side apply (`application/apply-patch+yaml`)
//! is a patch whose merge, removals and conflicts [`crate::apply`] decides; every other
//! write records its manager's fields in `metadata.managedFields` on the way.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};
use shoal_core::selector::{FieldSelector, LabelSelector};
use shoal_core::{FieldError, FieldErrorKind};
use shoal_store::{Precondition, RangeRequest};

use crate::AppState;
use crate::apply;
use crate::error::{ApiError, ApiResult};
use crate::metrics::RequestInfo;
use crate::object::{self, FieldValidation};
use crate::registry::ResourceDef;
use crate::table::{self, IncludeObject};

/// A parsed resource path.
#[derive(Clone, Debug)]
pub struct ResourcePath {
    pub def: Arc<ResourceDef>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Query parameters, last value wins.
pub type Params = HashMap<String, String>;

pub fn parse_params(query: Option<&str>) -> ApiResult<Params> {
    match query {
        None => Ok(Params::new()),
        Some(q) => serde_urlencoded::from_str::<Vec<(String, String)>>(q)
            .map(|v| v.into_iter().collect())
            .map_err(|e| ApiError::BadRequest(format!("malformed query string: {e}"))),
    }
}

/// Parses `/api/v1/…` and `/apis/{g}/{v}/…` into a resource path.
pub fn parse_path(st: &AppState, path: &str) -> ApiResult<ResourcePath> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::NoRoute),
    };
    let find = |plural: &str| st.registry.find(group, version, plural).cloned();
    let owned = |s: &&str| Some(s.to_string());
    let rp =
        |def, namespace: Option<String>, name: Option<String>, sub: Option<String>| ResourcePath {
            def,
            namespace,
            name,
            subresource: sub,
        };
    // Namespaced forms first: /namespaces/{ns}/{plural}[/{name}[/{sub}]].
    if let ["namespaces", ns, plural, tail @ ..] = rest
        && let Some(def) = find(plural).filter(|d| d.namespaced)
    {
        return match tail {
            [] => Ok(rp(def, owned(ns), None, None)),
            [name] => Ok(rp(def, owned(ns), owned(name), None)),
            [name, sub] => Ok(rp(def, owned(ns), owned(name), owned(sub))),
            _ => Err(ApiError::NoRoute),
        };
    }
    match rest {
        [plural] => find(plural).map(|d| rp(d, None, None, None)),
        [plural, name] => find(plural)
            .filter(|d| !d.namespaced)
            .map(|d| rp(d, None, owned(name), None)),
        [plural, name, sub] => find(plural)
            .filter(|d| !d.namespaced)
            .map(|d| rp(d, None, owned(name), owned(sub))),
        _ => None,
    }
    .ok_or(ApiError::NoRoute)
}

/// The response content negotiated from `Accept`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Json,
    Table,
}

pub fn negotiate(headers: &HeaderMap) -> ApiResult<Output> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.is_empty() {
        return Ok(Output::Json);
    }
    for part in accept.split(',') {
        let part = part.trim();
        let mime = part.split(';').next().unwrap_or("").trim();
        if mime == "application/json" && part.contains("as=Table") {
            if part.contains("g=meta.k8s.io") {
                return Ok(Output::Table);
            }
            continue;
        }
        if part.contains("as=") {
            continue;
        }
        if matches!(
            mime,
            "application/json" | "*/*" | "application/*" | "application/yaml"
        ) {
            return Ok(Output::Json);
        }
    }
    Err(ApiError::NotAcceptable(format!(
        "only application/json responses (optionally as=Table) are served; Accept was {accept:?}"
    )))
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string()
}

fn json_response(code: StatusCode, v: &Value, warnings: &[String]) -> Response {
    let body = serde_json::to_vec(v).expect("a JSON value serializes");
    json_bytes_response(code, body.into(), warnings)
}

/// A response of JSON already serialized (see [`object::Encoded`]).
fn json_bytes_response(code: StatusCode, body: Bytes, warnings: &[String]) -> Response {
    let mut resp = (
        code,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    for w in warnings {
        let text = format!("299 - {}", serde_json::to_string(w).unwrap_or_default());
        if let Ok(h) = HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, h);
        }
    }
    resp
}

/// Entry point for every resource request.
pub async fn handle(
    st: Arc<AppState>,
    method: Method,
    path: &str,
    query: Option<&str>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut info = RequestInfo {
        verb: "unknown",
        resource: String::new(),
    };
    let result = handle_inner(&st, &method, path, query, &headers, body, &mut info).await;
    let mut resp = result.unwrap_or_else(IntoResponse::into_response);
    resp.extensions_mut().insert(info);
    resp
}

async fn read_body(st: &AppState, body: Body) -> ApiResult<Bytes> {
    axum::body::to_bytes(body, st.config.max_body_bytes)
        .await
        .map_err(|e| {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.to_string().contains("length limit"))
                || e.to_string().contains("length limit");
            if too_large {
                ApiError::TooLarge(format!("limit is {} bytes", st.config.max_body_bytes))
            } else {
                ApiError::BadRequest(format!("failed to read the request body: {e}"))
            }
        })
}

async fn handle_inner(
    st: &Arc<AppState>,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
    info: &mut RequestInfo,
) -> ApiResult<Response> {
    let rp = parse_path(st, path)?;
    let params = parse_params(query)?;
    info.resource = match &rp.subresource {
        Some(s) => format!("{}/{s}", rp.def.plural),
        None => rp.def.plural.clone(),
    };
    let served_sub = |sub: &str| match sub {
        "status" => rp.def.has_status,
        "scale" => rp.def.scale.is_some(),
        _ => false,
    };
    if let Some(sub) = &rp.subresource
        && !served_sub(sub)
    {
        return Err(ApiError::NoRoute);
    }
    if let Some(ns) = &rp.namespace
        && !shoal_core::validation::dns1123_label(ns).is_empty()
    {
        return Err(ApiError::BadRequest(format!(
            "invalid namespace {ns:?} in the request path"
        )));
    }
    if rp.def.read_only && method != Method::GET {
        return Err(ApiError::ReadOnly {
            verb: method.as_str().to_lowercase(),
            target: object::target(&rp.def, rp.name.as_deref().unwrap_or("")),
        });
    }
    let output = negotiate(headers)?;
    let watching = matches!(params.get("watch").map(String::as_str), Some("true" | "1"));
    if let (Some(paths), Some("scale"), Some(name)) =
        (rp.def.scale, rp.subresource.as_deref(), &rp.name)
    {
        return scale_request(st, &rp, name, &paths, method, headers, body, &params, info).await;
    }
    match (method, &rp.name) {
        (&Method::GET, None) if watching => {
            info.verb = "watch";
            crate::watch::watch(st.clone(), rp, params, output).await
        }
        (&Method::GET, None) => {
            info.verb = "list";
            list_response(st, &rp, &params, output).await
        }
        (&Method::GET, Some(name)) => {
            info.verb = "get";
            let obj = get(st, &rp, name).await?.0;
            Ok(match output {
                Output::Table => {
                    let meta =
                        json!({"resourceVersion": object::meta_str(&obj, "resourceVersion")});
                    let t = table::table(
                        &rp.def,
                        &[obj],
                        meta,
                        st.clock.now(),
                        IncludeObject::parse(params.get("includeObject").map(String::as_str)),
                    );
                    json_response(StatusCode::OK, &t, &[])
                }
                Output::Json => json_response(StatusCode::OK, &obj, &[]),
            })
        }
        (&Method::POST, None) => {
            info.verb = "create";
            let body = decode_body(&rp.def, &content_type(headers), &read_body(st, body).await?)?;
            let opts = WriteOptions::parse(&params, headers)?;
            let (created, warnings) = create_managed(st, &rp, body, &opts, None).await?;
            Ok(json_bytes_response(
                StatusCode::CREATED,
                created.body,
                &warnings,
            ))
        }
        (&Method::PUT, Some(name)) => {
            info.verb = "update";
            let body = decode_body(&rp.def, &content_type(headers), &read_body(st, body).await?)?;
            let opts = WriteOptions::parse(&params, headers)?;
            let (obj, warnings) = update(st, &rp, name, body, &opts).await?;
            Ok(json_response(StatusCode::OK, &obj, &warnings))
        }
        (&Method::PATCH, Some(name)) => {
            info.verb = "patch";
            let raw = read_body(st, body).await?;
            let opts = WriteOptions::parse(&params, headers)?;
            let ctype = content_type(headers);
            if is_apply(&ctype) {
                let (obj, warnings, created) =
                    server_side_apply(st, &rp, name, &raw, &opts).await?;
                let code = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                return Ok(json_response(code, &obj, &warnings));
            }
            if opts.force {
                return Err(patch_options_invalid(
                    "force",
                    FieldErrorKind::Forbidden,
                    "may not be specified for non-apply patch",
                ));
            }
            let (obj, warnings) = patch(st, &rp, name, &ctype, &raw, &opts).await?;
            Ok(json_response(StatusCode::OK, &obj, &warnings))
        }
        (&Method::DELETE, Some(name)) if rp.subresource.is_none() => {
            info.verb = "delete";
            let raw = read_body(st, body).await?;
            let opts = if raw.iter().all(u8::is_ascii_whitespace) {
                Value::Null
            } else {
                object::decode(&content_type(headers), &raw)?
            };
            let obj = delete(st, &rp, name, &opts, dry_run(&params)?).await?;
            Ok(json_response(StatusCode::OK, &obj, &[]))
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// Decodes a create/update body: JSON or YAML for every kind, protobuf for the built-in
/// kinds kubectl sends it for.
fn decode_body(def: &ResourceDef, ctype: &str, body: &Bytes) -> ApiResult<Value> {
    if ctype.split(';').next().unwrap_or("").trim() == crate::protobuf::MEDIA_TYPE {
        return crate::protobuf::decode(def, body);
    }
    object::decode(ctype, body)
}

fn dry_run(params: &Params) -> ApiResult<bool> {
    match params.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!(
            "unsupported dryRun value {other:?}, only 'All' is supported"
        ))),
    }
}

/// What a write asked for besides its body: `?fieldValidation=`, `?dryRun=`,
/// `?fieldManager=` and `?force=`.
#[derive(Clone, Debug)]
pub struct WriteOptions {
    pub fv: FieldValidation,
    pub dry_run: bool,
    /// `?fieldManager=`, else the User-Agent's product name (`kubectl` of
    /// `kubectl/v1.32.4 (linux/amd64)`), as Kubernetes derives it.
    pub manager: String,
    /// Whether `?fieldManager=` named the manager: server-side apply requires it.
    pub manager_given: bool,
    /// `?force=true`: an apply takes conflicting fields from their other managers.
    pub force: bool,
}

/// The longest field manager name Kubernetes accepts.
const MAX_FIELD_MANAGER: usize = 128;

impl WriteOptions {
    /// The options of a request.
    ///
    /// # Errors
    /// `BadRequest` for a malformed `fieldValidation`, `dryRun` or `force`; `Invalid`
    /// (naming `fieldManager`) for a manager name longer than 128 characters.
    pub fn parse(params: &Params, headers: &HeaderMap) -> ApiResult<Self> {
        let given = params.get("fieldManager").filter(|m| !m.is_empty());
        if let Some(m) = given
            && m.chars().count() > MAX_FIELD_MANAGER
        {
            return Err(patch_options_invalid(
                "fieldManager",
                FieldErrorKind::TooLong,
                "may not be longer than 128 characters",
            ));
        }
        let manager = match given {
            Some(m) => m.clone(),
            None => {
                let ua = headers
                    .get(header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let product: String = ua
                    .split('/')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .chars()
                    .take(MAX_FIELD_MANAGER)
                    .collect();
                if product.is_empty() {
                    "unknown".to_string()
                } else {
                    product
                }
            }
        };
        let force = match params.get("force").map(String::as_str) {
            None | Some("" | "false" | "0") => false,
            Some("true" | "1") => true,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "invalid force {other:?}: must be true or false"
                )));
            }
        };
        Ok(WriteOptions {
            fv: FieldValidation::parse(params.get("fieldValidation").map(String::as_str))?,
            dry_run: dry_run(params)?,
            manager,
            manager_given: given.is_some(),
            force,
        })
    }

    /// The options of a write the server makes itself, as `manager`.
    pub fn internal(manager: &str) -> Self {
        WriteOptions {
            fv: FieldValidation::Strict,
            dry_run: false,
            manager: manager.to_string(),
            manager_given: true,
            force: false,
        }
    }
}

/// A 422 about the request's options, as Kubernetes words it
/// (`PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value`).
fn patch_options_invalid(field: &str, kind: FieldErrorKind, detail: &str) -> ApiError {
    ApiError::Invalid {
        target: crate::error::Target {
            group: "meta.k8s.io".into(),
            plural: "patchoptions".into(),
            kind: "PatchOptions.meta.k8s.io".into(),
            name: String::new(),
        },
        causes: vec![FieldError::new(field, kind, detail)],
    }
}

fn is_apply(ctype: &str) -> bool {
    ctype.split(';').next().unwrap_or("").trim() == "application/apply-patch+yaml"
}

/// The list strategies server-side apply uses for a kind: its strategic-merge table,
/// and at least ObjectMeta's (finalizers a set, ownerReferences keyed by uid) for the
/// kinds that have none.
fn ssa_meta(def: &ResourceDef) -> &crate::strategic::PatchMeta {
    static OBJECT_ONLY: std::sync::LazyLock<crate::strategic::PatchMeta> =
        std::sync::LazyLock::new(|| {
            crate::strategic::PatchMeta::default().with("metadata", crate::strategic::object_meta())
        });
    if def.patch_meta.fields.contains_key("metadata") {
        &def.patch_meta
    } else {
        &OBJECT_ONLY
    }
}

/// The managedFields context of a write through `rp` by `manager`.
fn writer<'a>(
    rp: &'a ResourcePath,
    manager: &'a str,
    api_version: &'a str,
    now: &'a str,
) -> apply::Writer<'a> {
    let scope = match rp.subresource.as_deref() {
        Some("status") => apply::Scope::Status,
        _ if rp.def.has_status => apply::Scope::Main,
        _ => apply::Scope::Whole,
    };
    apply::Writer {
        manager,
        api_version,
        subresource: rp.subresource.as_deref(),
        scope,
        now,
        meta: ssa_meta(&rp.def),
    }
}

/// Records a non-apply write turning `cur` into `new` in `new`'s managedFields (which
/// admission cleared: clients do not write them).
fn record_update(st: &AppState, rp: &ResourcePath, manager: &str, cur: &Value, new: &mut Value) {
    let (api_version, now) = (rp.def.api_version(), object::rfc3339(st.clock.now()));
    let managed = apply::record_update(cur, new, &writer(rp, manager, &api_version, &now));
    apply::set_managed_fields(new, managed);
}

/// Server-side apply (`PATCH` with `application/apply-patch+yaml`): merges the applied
/// configuration into the object as `?fieldManager=`, or creates the object when it is
/// missing (the returned flag). Retried on write races, as a patch is.
///
/// # Errors
/// `Invalid` without a fieldManager; `BadRequest` for a configuration that is not a YAML
/// or JSON object of this kind and name; `Conflict` (with `FieldManagerConflict`
/// causes) when another manager owns a field the apply would change and `force` is not
/// set; whatever create or update would answer for the resulting object.
pub async fn server_side_apply(
    st: &AppState,
    rp: &ResourcePath,
    name: &str,
    raw: &Bytes,
    opts: &WriteOptions,
) -> ApiResult<(Value, Vec<String>, bool)> {
    if !opts.manager_given {
        return Err(patch_options_invalid(
            "fieldManager",
            FieldErrorKind::Required,
            "is required for apply patch",
        ));
    }
    let text = std::str::from_utf8(raw)
        .map_err(|_| ApiError::BadRequest("the apply configuration is not valid UTF-8".into()))?;
    let mut cfg: Value = serde_saphyr::from_str(text).map_err(|e| {
        ApiError::BadRequest(format!(
            "the apply configuration is not valid YAML or JSON: {e}"
        ))
    })?;
    if !cfg.is_object() {
        return Err(ApiError::BadRequest(
            "the apply configuration must be an object with apiVersion, kind and metadata".into(),
        ));
    }
    object::check_type_meta(&rp.def, &mut cfg, object::Body::ApplyConfiguration)?;
    apply::drop_nulls(&mut cfg);
    let meta = object::meta_mut(&mut cfg);
    match meta.get("name").and_then(Value::as_str) {
        None | Some("") => {
            meta.insert("name".into(), json!(name));
        }
        Some(n) if n != name => {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        Some(_) => {}
    }
    if let (Some(n), Some(ns)) = (
        meta.get("namespace")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty()),
        &rp.namespace,
    ) && n != ns
    {
        return Err(ApiError::BadRequest(format!(
            "the namespace of the provided object ({n}) does not match the namespace sent on the request ({ns})"
        )));
    }
    // A resourceVersion in the configuration is a precondition, as in a patch.
    let pinned = meta
        .get("resourceVersion")
        .and_then(Value::as_str)
        .filter(|rv| !rv.is_empty())
        .map(String::from);
    for server_owned in apply::SERVER_OWNED_META {
        meta.remove(*server_owned);
    }
    apply::check_config(&cfg, ssa_meta(&rp.def)).map_err(|e| {
        ApiError::BadRequest(format!("the apply configuration cannot be merged: {e}"))
    })?;
    let (api_version, now) = (rp.def.api_version(), object::rfc3339(st.clock.now()));
    let w = writer(rp, &opts.manager, &api_version, &now);
    const RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(30);
    let deadline = std::time::Instant::now() + RETRY_FOR;
    loop {
        let retry = || std::time::Instant::now() < deadline;
        let (cur, cur_rev) = match get(st, rp, name).await {
            Err(ApiError::NotFound(_)) if rp.subresource.is_none() && pinned.is_none() => {
                let managed = apply::record_apply_create(&cfg, &w);
                let collection = ResourcePath {
                    name: None,
                    ..rp.clone()
                };
                match create_managed(st, &collection, cfg.clone(), opts, Some(managed)).await {
                    Err(ApiError::AlreadyExists(_)) if retry() => continue,
                    other => return other.map(|(c, warnings)| (c.obj, warnings, true)),
                }
            }
            other => other?,
        };
        if let Some(rv) = &pinned
            && *rv != cur_rev.to_string()
        {
            return Err(conflict(&rp.def, name));
        }
        let (merged, managed) = match apply::apply(&cur, &cfg, &w, opts.force) {
            Err(c) if apply::upgrades_client_side_apply(&cur, &c, &w) => {
                apply::apply(&cur, &cfg, &w, true)
            }
            other => other,
        }
        .map_err(|conflicts| ApiError::ApplyConflict {
            target: object::target(&rp.def, name),
            conflicts,
        })?;
        let mut new = merge_for_update(&rp.def, &cur, merged, rp.subresource.is_some())?;
        let warnings = object::admit(&rp.def, &mut new, opts.fv)?;
        apply::set_managed_fields(&mut new, managed);
        match commit_update(st, rp, &cur, cur_rev, new, opts.dry_run).await {
            Err(ApiError::Conflict { .. }) if pinned.is_none() && retry() => {
                tokio::task::yield_now().await;
            }
            other => return other.map(|o| (o, warnings, false)),
        }
    }
}

/// Reads one object; 404 when absent.
pub async fn get(st: &AppState, rp: &ResourcePath, name: &str) -> ApiResult<(Value, i64)> {
    let key = rp.def.key(rp.namespace.as_deref(), name);
    match st.store.get(&key).await? {
        Some(kv) => Ok((object::from_kv(&kv)?, kv.mod_revision)),
        None => Err(ApiError::NotFound(object::target(&rp.def, name))),
    }
}

/// The label and field selectors of a list or watch.
#[derive(Clone, Debug, Default)]
pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn parse(params: &Params) -> ApiResult<Self> {
        let labels = LabelSelector::parse(params.get("labelSelector").map_or("", String::as_str))
            .map_err(|e| ApiError::BadRequest(format!("invalid labelSelector: {e}")))?;
        let fields = FieldSelector::parse(
            params.get("fieldSelector").map_or("", String::as_str),
            SELECTABLE_FIELDS,
        )
        .map_err(|e| ApiError::BadRequest(format!("invalid fieldSelector: {e}")))?;
        Ok(Selectors { labels, fields })
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(&object::labels(obj))
            && self.fields.matches(|f| match f {
                "metadata.name" => object::meta_str(obj, "name"),
                "metadata.namespace" => object::meta_str(obj, "namespace"),
                // Every other selectable field is its own JSON path.
                _ => obj
                    .pointer(&format!("/{}", f.replace('.', "/")))
                    .and_then(Value::as_str),
            })
    }
}

/// Fields a `fieldSelector` may name. Besides every kind's name and namespace, the ones
/// kubectl itself selects by: events of an object (`kubectl describe`), pods of a node
/// (`kubectl describe node`, drains) and pods by phase. A field a kind does not have
/// reads as empty, as in Kubernetes.
const SELECTABLE_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "involvedObject.apiVersion",
    "involvedObject.fieldPath",
    "involvedObject.kind",
    "involvedObject.name",
    "involvedObject.namespace",
    "involvedObject.uid",
    "reason",
    "reportingComponent",
    "type",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "status.phase",
    "status.podIP",
];

/// Scans a collection; returns the matching objects, the list's resourceVersion and the
/// continue token.
pub async fn list(
    st: &AppState,
    rp: &ResourcePath,
    params: &Params,
) -> ApiResult<(Vec<Value>, i64, Option<String>)> {
    let selectors = Selectors::parse(params)?;
    let limit: usize = match params.get("limit").map(String::as_str) {
        None | Some("") => 0,
        Some(l) => l.parse().map_err(|_| {
            ApiError::BadRequest(format!(
                "invalid limit {l:?}: must be a non-negative integer"
            ))
        })?,
    };
    let prefix = rp.def.collection_prefix(rp.namespace.as_deref());
    let (mut start_after, mut revision) = (None, None);
    if let Some(token) = params.get("continue").filter(|t| !t.is_empty()) {
        let (rev, key) = decode_continue(token, &prefix)?;
        revision = Some(rev);
        start_after = Some(key);
    }
    const SCAN_BATCH: usize = 512; // keys read per store range while filtering
    let mut items = Vec::new();
    let mut continue_key = None;
    'scan: loop {
        let want = if limit == 0 { 0 } else { SCAN_BATCH.max(limit) };
        let req = RangeRequest {
            prefix: prefix.clone(),
            start_after: start_after.clone(),
            limit: want,
        };
        // The first read fixes the list's revision; every later read (the rest of this
        // scan, and pages fetched with the continue token) is a snapshot at it, so the
        // pages together are one consistent list, as in Kubernetes.
        let resp = match revision {
            None => st.store.range(req).await?,
            Some(rev) => st.store.range_at(req, rev).await.map_err(|e| match e {
                shoal_store::Error::Compacted { .. } => ApiError::Gone(
                    "The provided continue parameter is too old to display a consistent list \
                     result. You can start a new list without the continue parameter."
                        .into(),
                ),
                other => other.into(),
            })?,
        };
        revision.get_or_insert(resp.revision);
        let n = resp.kvs.len();
        for (i, kv) in resp.kvs.iter().enumerate() {
            let obj = object::from_kv(kv)?;
            if selectors.matches(&obj) {
                items.push(obj);
            }
            if limit > 0 && items.len() == limit {
                if i + 1 < n || resp.more {
                    continue_key = Some(kv.key.clone());
                }
                break 'scan;
            }
        }
        if !resp.more || n == 0 {
            break;
        }
        start_after = resp.kvs.last().map(|kv| kv.key.clone());
    }
    let rev = revision.unwrap_or(0);
    let token = continue_key.map(|k| encode_continue(rev, &k));
    Ok((items, rev, token))
}

fn encode_continue(rev: i64, key: &str) -> String {
    let raw = json!({"v": 1, "rv": rev, "start": key}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(token: &str, prefix: &str) -> ApiResult<(i64, String)> {
    let bad = || ApiError::BadRequest(format!("invalid continue token {token:?}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rev = v["rv"].as_i64().ok_or_else(bad)?;
    let key = v["start"]
        .as_str()
        .filter(|k| k.starts_with(prefix))
        .ok_or_else(bad)?;
    Ok((rev, key.to_string()))
}

async fn list_response(
    st: &AppState,
    rp: &ResourcePath,
    params: &Params,
    output: Output,
) -> ApiResult<Response> {
    let (items, rev, token) = list(st, rp, params).await?;
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if let Some(t) = token {
        meta["continue"] = json!(t);
    }
    let v = match output {
        Output::Table => table::table(
            &rp.def,
            &items,
            meta,
            st.clock.now(),
            IncludeObject::parse(params.get("includeObject").map(String::as_str)),
        ),
        Output::Json => {
            json!({"kind": rp.def.list_kind, "apiVersion": rp.def.api_version(), "metadata": meta, "items": items})
        }
    };
    Ok(json_response(StatusCode::OK, &v, &[]))
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let id = uuid::Uuid::new_v4();
    id.as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

async fn check_namespace(st: &AppState, ns: &str) -> ApiResult<()> {
    let def = st
        .registry
        .find("", "v1", "namespaces")
        .expect("namespaces are registered");
    match st.store.get(&def.key(None, ns)).await? {
        None => Err(ApiError::NotFound(object::target(def, ns))),
        Some(kv) => {
            let obj = object::from_kv(&kv)?;
            if object::meta(&obj).contains_key("deletionTimestamp") {
                return Err(ApiError::Conflict {
                    target: object::target(def, ns),
                    message: "namespace is being terminated; no new objects may be created in it"
                        .into(),
                });
            }
            Ok(())
        }
    }
}

/// Creates an object; its creator owns every field it set (an `Update` entry of
/// `metadata.managedFields`).
pub async fn create(
    st: &AppState,
    rp: &ResourcePath,
    obj: Value,
    opts: &WriteOptions,
) -> ApiResult<(Value, Vec<String>)> {
    create_managed(st, rp, obj, opts, None)
        .await
        .map(|(c, warnings)| (c.obj, warnings))
}

/// A created object, as a value and as the response body: serialized once, for the
/// store and the response alike ([`object::Encoded`]).
struct Created {
    obj: Value,
    body: Bytes,
}

/// Creates an object with `managed` as its managedFields, or the creator's `Update`
/// entry when `None`.
async fn create_managed(
    st: &AppState,
    rp: &ResourcePath,
    mut obj: Value,
    opts: &WriteOptions,
    managed: Option<Value>,
) -> ApiResult<(Created, Vec<String>)> {
    let (fv, dry_run) = (opts.fv, opts.dry_run);
    let def = &rp.def;
    object::check_type_meta(def, &mut obj, object::Body::Object)?;
    let meta = object::meta_mut(&mut obj);
    if meta
        .get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
        && let Some(prefix) = meta
            .get("generateName")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
    {
        let name = format!("{prefix}{}", random_suffix());
        meta.insert("name".into(), json!(name));
    }
    if def.namespaced {
        let ns = rp.namespace.clone().ok_or_else(|| {
            ApiError::BadRequest(format!(
                "{} is namespaced: create it under /namespaces/{{namespace}}/",
                def.kind
            ))
        })?;
        match meta.get("namespace").and_then(Value::as_str) {
            Some(n) if !n.is_empty() && n != ns => {
                return Err(ApiError::BadRequest(format!(
                    "the namespace of the provided object ({n}) does not match the namespace sent on the request ({ns})"
                )));
            }
            _ => {
                meta.insert("namespace".into(), json!(ns));
            }
        }
    } else {
        meta.remove("namespace");
    }
    let now = object::rfc3339(st.clock.now());
    for server_owned in [
        "uid",
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        meta.remove(server_owned);
    }
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), Value::String(now.clone()));
    meta.insert("generation".into(), json!(1));
    if def.has_status {
        obj.as_object_mut().expect("object").remove("status");
    }
    if def.kind == "Namespace" {
        obj["status"] = json!({"phase": "Active"});
    }
    let warnings = object::admit(def, &mut obj, fv)?;
    let managed = match managed {
        Some(m) => m,
        None => {
            let api_version = def.api_version();
            apply::record_create(&obj, &writer(rp, &opts.manager, &api_version, &now))
        }
    };
    apply::set_managed_fields(&mut obj, managed);
    let name = object::name(&obj).to_string();
    if let Some(ns) = &rp.namespace {
        check_namespace(st, ns).await?;
    }
    let key = def.key(rp.namespace.as_deref(), &name);
    let encoded = object::Encoded::new(&obj);
    if dry_run {
        if st.store.get(&key).await?.is_some() {
            return Err(ApiError::AlreadyExists(object::target(def, &name)));
        }
        let body = encoded.bytes;
        return Ok((Created { obj, body }, warnings));
    }
    match put_expiring(st, def, &key, encoded.bytes.clone(), Precondition::Absent).await {
        Ok(resp) => {
            let rev = resp.kv.mod_revision;
            object::set_resource_version(&mut obj, rev);
            let body = encoded.with_resource_version(rev);
            Ok((Created { obj, body }, warnings))
        }
        Err(shoal_store::Error::PreconditionFailed { .. }) => {
            Err(ApiError::AlreadyExists(object::target(def, &name)))
        }
        Err(e) => Err(e.into()),
    }
}

fn conflict(def: &ResourceDef, name: &str) -> ApiError {
    ApiError::Conflict {
        target: object::target(def, name),
        message: "the object has been modified; please apply your changes to the latest version and try again".into(),
    }
}

/// Builds the object to store from the current one and the requested one: server-owned
/// metadata is kept, status or spec is taken from the right endpoint, generation moves
/// when the spec changes.
fn merge_for_update(
    def: &ResourceDef,
    cur: &Value,
    mut new: Value,
    status_sub: bool,
) -> ApiResult<Value> {
    let name = object::name(cur).to_string();
    if status_sub {
        let mut out = cur.clone();
        match new.as_object_mut().and_then(|m| m.remove("status")) {
            Some(s) => out["status"] = s,
            None => {
                out.as_object_mut().expect("object").remove("status");
            }
        }
        return Ok(out);
    }
    let new_name = object::meta_str(&new, "name").unwrap_or("");
    if !new_name.is_empty() && new_name != name {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({new_name}) does not match the name on the URL ({name})"
        )));
    }
    if def.has_status {
        let obj = new.as_object_mut().expect("object");
        match cur.get("status") {
            Some(s) => obj.insert("status".into(), s.clone()),
            None => obj.remove("status"),
        };
    }
    let cur_meta = object::meta(cur).clone();
    let new_ns = object::meta_str(&new, "namespace").map(String::from);
    if let (Some(n), Some(c)) = (
        new_ns.filter(|n| !n.is_empty()),
        cur_meta.get("namespace").and_then(Value::as_str),
    ) && n != c
    {
        return Err(ApiError::BadRequest(format!(
            "the namespace of the object ({n}) does not match the namespace on the URL ({c})"
        )));
    }
    let cur_finalizers = object::finalizers(cur);
    let meta = object::meta_mut(&mut new);
    for owned in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match cur_meta.get(owned) {
            Some(v) => meta.insert(owned.into(), v.clone()),
            None => meta.remove(owned),
        };
    }
    new["apiVersion"] = json!(def.api_version());
    new["kind"] = json!(def.kind);
    if cur_meta.contains_key("deletionTimestamp") {
        let added: Vec<String> = object::finalizers(&new)
            .into_iter()
            .filter(|f| !cur_finalizers.contains(f))
            .collect();
        if !added.is_empty() {
            return Err(ApiError::Invalid {
                target: object::target(def, &name),
                causes: vec![FieldError::new(
                    "metadata.finalizers",
                    FieldErrorKind::Forbidden,
                    format!(
                        "no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                    ),
                )],
            });
        }
    }
    // Defaults first, so that a write leaving out a defaulted field is no spec change.
    if let Some(defaulter) = &def.defaulter {
        defaulter(&mut new);
    }
    if object::spec_part(&new) != object::spec_part(cur) {
        let g = cur_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        object::meta_mut(&mut new).insert("generation".into(), json!(g + 1));
    }
    Ok(new)
}

fn without_rv(v: &Value) -> Value {
    let mut v = v.clone();
    object::meta_mut(&mut v).remove("resourceVersion");
    v
}

/// Puts `value` at `key`; an object of a kind that expires ([`ResourceDef::ttl`]) is
/// attached to a lease so that it lives that long from now. A lease that turned out
/// gone (the store restarted) is replaced once.
async fn put_expiring(
    st: &AppState,
    def: &ResourceDef,
    key: &str,
    value: bytes::Bytes,
    cond: Precondition,
) -> shoal_store::Result<shoal_store::PutResponse> {
    let Some(ttl) = def.ttl else {
        return st.store.put(key, value, cond, None).await;
    };
    let lease = st.store.lease_for(ttl).await?;
    match st.store.put(key, value.clone(), cond, Some(lease)).await {
        Err(shoal_store::Error::LeaseNotFound(id)) => {
            st.store.forget_lease(id).await;
            let lease = st.store.lease_for(ttl).await?;
            st.store.put(key, value, cond, Some(lease)).await
        }
        other => other,
    }
}

/// Writes `new` over `cur` (at `cur_rev`), or deletes it when its last finalizer is gone.
/// A no-op update writes nothing.
async fn commit_update(
    st: &AppState,
    rp: &ResourcePath,
    cur: &Value,
    cur_rev: i64,
    mut new: Value,
    dry_run: bool,
) -> ApiResult<Value> {
    let name = object::name(cur).to_string();
    let key = rp.def.key(rp.namespace.as_deref(), &name);
    if without_rv(&new) == without_rv(cur) {
        return Ok(cur.clone());
    }
    if dry_run {
        object::set_resource_version(&mut new, cur_rev);
        return Ok(new);
    }
    let deleting =
        object::meta(&new).contains_key("deletionTimestamp") && object::finalizers(&new).is_empty();
    let result = if deleting {
        st.store
            .delete(&key, Precondition::ModRevision(cur_rev))
            .await
            .map(|r| r.revision)
    } else {
        let bytes = object::to_bytes(&new);
        put_expiring(st, &rp.def, &key, bytes, Precondition::ModRevision(cur_rev))
            .await
            .map(|r| r.kv.mod_revision)
    };
    match result {
        Ok(rev) => {
            object::set_resource_version(&mut new, rev);
            Ok(new)
        }
        Err(shoal_store::Error::PreconditionFailed { current: None, .. }) => {
            Err(ApiError::NotFound(object::target(&rp.def, &name)))
        }
        Err(shoal_store::Error::PreconditionFailed { .. }) => Err(conflict(&rp.def, &name)),
        Err(e) => Err(e.into()),
    }
}

/// Replaces an object (PUT).
pub async fn update(
    st: &AppState,
    rp: &ResourcePath,
    name: &str,
    mut body: Value,
    opts: &WriteOptions,
) -> ApiResult<(Value, Vec<String>)> {
    object::check_type_meta(&rp.def, &mut body, object::Body::Object)?;
    let (cur, cur_rev) = get(st, rp, name).await?;
    if let Some(rv) = object::meta_str(&body, "resourceVersion").filter(|r| !r.is_empty()) {
        let rv: i64 = rv
            .parse()
            .map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}")))?;
        if rv != cur_rev {
            return Err(conflict(&rp.def, name));
        }
    }
    let status_sub = rp.subresource.is_some();
    let mut new = merge_for_update(&rp.def, &cur, body, status_sub)?;
    let warnings = object::admit(&rp.def, &mut new, opts.fv)?;
    record_update(st, rp, &opts.manager, &cur, &mut new);
    Ok((
        commit_update(st, rp, &cur, cur_rev, new, opts.dry_run).await?,
        warnings,
    ))
}

/// Applies a patch of media type `ctype` to `doc`; `strategic` carries the patch
/// strategies when strategic merge patch is accepted.
fn apply_patch(
    strategic: Option<&crate::strategic::PatchMeta>,
    ctype: &str,
    doc: &mut Value,
    raw: &Bytes,
) -> ApiResult<()> {
    let mime = ctype.split(';').next().unwrap_or("").trim();
    let parse = || -> ApiResult<Value> {
        serde_json::from_slice(raw)
            .map_err(|e| ApiError::BadRequest(format!("the patch is not valid JSON: {e}")))
    };
    match mime {
        "application/merge-patch+json" => {
            let p = parse()?;
            if !p.is_object() {
                return Err(ApiError::BadRequest(
                    "a merge patch must be a JSON object".into(),
                ));
            }
            json_patch::merge(doc, &p);
        }
        "application/strategic-merge-patch+json" if strategic.is_some() => {
            let p = parse()?;
            if !p.is_object() {
                return Err(ApiError::BadRequest(
                    "a strategic merge patch must be a JSON object".into(),
                ));
            }
            let meta = strategic.unwrap_or(crate::strategic::PatchMeta::empty());
            *doc = crate::strategic::apply(doc, &p, meta).map_err(|e| {
                ApiError::BadRequest(format!(
                    "the strategic merge patch could not be applied: {e}"
                ))
            })?;
        }
        "application/json-patch+json" => {
            let p: json_patch::Patch = serde_json::from_value(parse()?)
                .map_err(|e| ApiError::BadRequest(format!("the JSON patch is malformed: {e}")))?;
            json_patch::patch(doc, &p).map_err(|e| {
                ApiError::BadRequest(format!("the JSON patch could not be applied: {e}"))
            })?;
        }
        "application/apply-patch+yaml" => {
            return Err(ApiError::UnsupportedMediaType(
                "server-side apply (application/apply-patch+yaml) is not supported on the scale subresource; apply to the object itself".into(),
            ));
        }
        other => {
            let mut accepted = vec![
                "application/json-patch+json",
                "application/merge-patch+json",
            ];
            if strategic.is_some() {
                accepted.push("application/strategic-merge-patch+json");
            }
            return Err(ApiError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format ({other}) - accepted media types include: {}",
                accepted.join(", ")
            )));
        }
    }
    if !doc.is_object() {
        return Err(ApiError::BadRequest(
            "the patched object is not a JSON object".into(),
        ));
    }
    Ok(())
}

/// Patches an object; retries on write races unless the patch itself pinned a
/// resourceVersion.
pub async fn patch(
    st: &AppState,
    rp: &ResourcePath,
    name: &str,
    ctype: &str,
    raw: &Bytes,
    opts: &WriteOptions,
) -> ApiResult<(Value, Vec<String>)> {
    // A patch that did not pin a resourceVersion is retried on write races until it
    // wins, as Kubernetes' GuaranteedUpdate does: each round one contender commits, so
    // progress is certain. The deadline only bounds pathological contention.
    const RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(30);
    let deadline = std::time::Instant::now() + RETRY_FOR;
    loop {
        let (cur, cur_rev) = get(st, rp, name).await?;
        let mut doc = cur.clone();
        let strategic = rp.def.strategic_merge.then_some(&*rp.def.patch_meta);
        apply_patch(strategic, ctype, &mut doc, raw)?;
        let pinned = object::meta_str(&doc, "resourceVersion").map(String::from);
        if let Some(rv) = &pinned
            && *rv != cur_rev.to_string()
        {
            return Err(conflict(&rp.def, name));
        }
        let pinned = pinned.is_some_and(|_| {
            serde_json::from_slice::<Value>(raw)
                .ok()
                .is_some_and(|p| p.pointer("/metadata/resourceVersion").is_some())
        });
        let mut new = merge_for_update(&rp.def, &cur, doc, rp.subresource.is_some())?;
        let warnings = object::admit(&rp.def, &mut new, opts.fv)?;
        record_update(st, rp, &opts.manager, &cur, &mut new);
        match commit_update(st, rp, &cur, cur_rev, new, opts.dry_run).await {
            Err(ApiError::Conflict { .. }) if !pinned && std::time::Instant::now() < deadline => {
                tokio::task::yield_now().await;
                continue;
            }
            other => return other.map(|o| (o, warnings)),
        }
    }
}

/// A request to a `scale` subresource: GET renders the Scale; PUT and PATCH change the
/// object's replicas through the ordinary update path.
#[allow(clippy::too_many_arguments)] // the request's parts, as handle_inner has them
async fn scale_request(
    st: &AppState,
    rp: &ResourcePath,
    name: &str,
    paths: &crate::scale::ScalePaths,
    method: &Method,
    headers: &HeaderMap,
    body: Body,
    params: &Params,
    info: &mut RequestInfo,
) -> ApiResult<Response> {
    let opts = WriteOptions::parse(params, headers)?;
    let (fv, dry) = (opts.fv, opts.dry_run);
    let edit: Box<dyn Fn(Value) -> ApiResult<Value> + Send + Sync> = match *method {
        Method::GET => {
            info.verb = "get";
            let obj = get(st, rp, name).await?.0;
            let scale = crate::scale::to_scale(&obj, paths);
            return Ok(json_response(StatusCode::OK, &scale, &[]));
        }
        Method::PUT => {
            info.verb = "update";
            let raw = read_body(st, body).await?;
            let wanted = object::decode(&content_type(headers), &raw)?;
            Box::new(move |_current| Ok(wanted.clone()))
        }
        Method::PATCH => {
            info.verb = "patch";
            let raw = read_body(st, body).await?;
            let ctype = content_type(headers);
            Box::new(move |mut current| {
                apply_patch(
                    Some(crate::strategic::PatchMeta::empty()),
                    &ctype,
                    &mut current,
                    &raw,
                )?;
                Ok(current)
            })
        }
        _ => return Err(ApiError::MethodNotAllowed),
    };
    // As a patch: retried on write races unless the new Scale pins a resourceVersion.
    const RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(30);
    let deadline = std::time::Instant::now() + RETRY_FOR;
    let main = ResourcePath {
        subresource: None,
        ..rp.clone()
    };
    loop {
        let (cur, cur_rev) = get(st, &main, name).await?;
        let wanted = edit(crate::scale::to_scale(&cur, paths))?;
        let pinned = object::meta_str(&wanted, "resourceVersion")
            .filter(|rv| !rv.is_empty())
            .map(String::from);
        if let Some(rv) = &pinned
            && *rv != cur_rev.to_string()
        {
            return Err(conflict(&rp.def, name));
        }
        let mut new = cur.clone();
        crate::scale::apply_scale(&rp.def, &mut new, &wanted, paths)?;
        let mut new = merge_for_update(&rp.def, &cur, new, false)?;
        let warnings = object::admit(&rp.def, &mut new, fv)?;
        record_update(st, rp, &opts.manager, &cur, &mut new);
        match commit_update(st, &main, &cur, cur_rev, new, dry).await {
            Err(ApiError::Conflict { .. })
                if pinned.is_none() && std::time::Instant::now() < deadline =>
            {
                tokio::task::yield_now().await;
            }
            other => {
                let obj = other?;
                let scale = crate::scale::to_scale(&obj, paths);
                return Ok(json_response(StatusCode::OK, &scale, &warnings));
            }
        }
    }
}

/// How long a delete without preconditions goes on retrying writes that raced it.
const DELETE_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// Deletes an object, or marks it deleted while finalizers remain. A delete that races
/// another write (a controller patching the object's status) is tried again on the new
/// object, as kube-apiserver's guaranteed update does: only the client's own
/// `preconditions` can make it a 409.
pub async fn delete(
    st: &AppState,
    rp: &ResourcePath,
    name: &str,
    opts: &Value,
    dry_run: bool,
) -> ApiResult<Value> {
    let deadline = std::time::Instant::now() + DELETE_RETRY_FOR;
    loop {
        match delete_once(st, rp, name, opts, dry_run).await? {
            Some(gone) => return Ok(gone),
            None if std::time::Instant::now() < deadline => tokio::task::yield_now().await,
            None => return Err(conflict(&rp.def, name)),
        }
    }
}

/// One attempt of [`delete`]; `None` when another write changed the object between
/// the read and the delete.
async fn delete_once(
    st: &AppState,
    rp: &ResourcePath,
    name: &str,
    opts: &Value,
    dry_run: bool,
) -> ApiResult<Option<Value>> {
    let (cur, cur_rev) = get(st, rp, name).await?;
    if let Some(p) = opts.get("preconditions") {
        if let Some(rv) = p.get("resourceVersion").and_then(Value::as_str)
            && rv != cur_rev.to_string()
        {
            return Err(conflict(&rp.def, name));
        }
        if let Some(uid) = p.get("uid").and_then(Value::as_str)
            && Some(uid) != object::meta_str(&cur, "uid")
        {
            return Err(ApiError::Conflict {
                target: object::target(&rp.def, name),
                message: format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    object::meta_str(&cur, "uid").unwrap_or("")
                ),
            });
        }
    }
    if dry_run {
        return Ok(Some(cur));
    }
    if rp.def.kind == "Namespace" && rp.def.group.is_empty() {
        if st.default_namespaces.contains(&name) {
            return Err(ApiError::Forbidden {
                target: object::target(&rp.def, name),
                message: "this namespace may not be deleted".into(),
            });
        }
        delete_namespace_contents(st, name).await?;
    }
    if !object::finalizers(&cur).is_empty() {
        if object::meta(&cur).contains_key("deletionTimestamp") {
            return Ok(Some(cur));
        }
        let mut new = cur.clone();
        let meta = object::meta_mut(&mut new);
        meta.insert(
            "deletionTimestamp".into(),
            json!(object::rfc3339(st.clock.now())),
        );
        meta.insert("deletionGracePeriodSeconds".into(), json!(0));
        return match commit_update(st, rp, &cur, cur_rev, new, false).await {
            Err(ApiError::Conflict { .. }) => Ok(None),
            other => other.map(Some),
        };
    }
    let key = rp.def.key(rp.namespace.as_deref(), name);
    match st
        .store
        .delete(&key, Precondition::ModRevision(cur_rev))
        .await
    {
        Ok(r) => {
            let mut gone = cur;
            object::set_resource_version(&mut gone, r.revision);
            Ok(Some(gone))
        }
        Err(shoal_store::Error::PreconditionFailed { current: None, .. }) => {
            Err(ApiError::NotFound(object::target(&rp.def, name)))
        }
        // Changed since it was read: read it again.
        Err(shoal_store::Error::PreconditionFailed { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Deletes every namespaced object in namespace `ns` (the namespace controller's job in
/// Kubernetes, done synchronously here).
async fn delete_namespace_contents(st: &AppState, ns: &str) -> ApiResult<()> {
    for def in st.registry.all().iter().filter(|d| d.namespaced) {
        let prefix = def.collection_prefix(Some(ns));
        loop {
            let resp = st
                .store
                .range(RangeRequest {
                    prefix: prefix.clone(),
                    start_after: None,
                    limit: 256,
                })
                .await?;
            for kv in &resp.kvs {
                match st.store.delete(&kv.key, Precondition::Present).await {
                    Ok(_) | Err(shoal_store::Error::PreconditionFailed { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if !resp.more {
                break;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn call(router: &axum::Router, method: &str, path: &str, body: Value) -> (u16, Value) {
        use tower::ServiceExt;
        let req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .expect("request");
        let resp = router.clone().oneshot(req).await.expect("infallible");
        let code = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Regression test for issue 23, item 3: the Python client's typed API sends no kind.
    #[tokio::test]
    async fn builtin_kinds_are_created_and_replaced_without_api_version_and_kind_as_in_kube_apiserver()
     {
        let hang = "a create without kind through the router hung";
        tokio::time::timeout(std::time::Duration::from_secs(60), async {
            let dir = crate::cluster::StaticDirectory::new();
            dir.insert("c-1", shoal_store::Store::memory());
            let server = crate::ApiServer::new(
                shoal_store::Store::memory(),
                crate::Registry::shoal(),
                Arc::new(shoal_core::clock::SystemClock),
                crate::ServerConfig::default(),
                prometheus_client::registry::Registry::default(),
                tokio_util::sync::CancellationToken::new(),
            )
            // shoal's registry stands in for the member one: it is quicker to build.
            .with_member_clusters(Arc::new(dir), crate::Registry::shoal());
            let router = server.router();
            for base in ["", "/clusters/c-1"] {
                let (code, ns) = call(
                    &router,
                    "POST",
                    &format!("{base}/api/v1/namespaces"),
                    json!({"metadata": {"name": "typed"}}),
                )
                .await;
                assert_eq!(code, 201, "{base}: {ns}");
                assert_eq!(
                    (&ns["apiVersion"], &ns["kind"]),
                    (&json!("v1"), &json!("Namespace"))
                );
                let (code, got) = call(
                    &router,
                    "GET",
                    &format!("{base}/api/v1/namespaces/typed"),
                    Value::Null,
                )
                .await;
                assert_eq!(
                    (code, &got["kind"]),
                    (200, &json!("Namespace")),
                    "stored with its kind"
                );
                let secret = format!("{base}/api/v1/namespaces/typed/secrets");
                let (code, s) = call(
                    &router,
                    "POST",
                    &secret,
                    json!({"metadata": {"name": "s"}, "stringData": {"a": "b"}}),
                )
                .await;
                assert_eq!((code, &s["kind"]), (201, &json!("Secret")), "{base}: {s}");
                let (code, s) = call(
                    &router,
                    "PUT",
                    &format!("{secret}/s"),
                    json!({"metadata": {"name": "s", "labels": {"x": "y"}}, "data": {}}),
                )
                .await;
                assert_eq!(
                    (code, &s["metadata"]["labels"]["x"]),
                    (200, &json!("y")),
                    "{base}: {s}"
                );
                assert_eq!(s["kind"], "Secret");
                let (code, st) = call(
                    &router,
                    "PUT",
                    &format!("{secret}/s"),
                    json!({"kind": "ConfigMap", "metadata": {"name": "s"}}),
                )
                .await;
                assert_eq!(code, 400, "{base}: {st}");
                assert!(st["message"].as_str().unwrap().contains("kind"), "{st}");
                let (code, st) = call(
                    &router,
                    "POST",
                    &format!("{base}/apis/shoal.io/v1alpha1/clusters"),
                    json!({"apiVersion": "shoal.io/v1alpha1", "metadata": {"name": "c"},
                           "spec": {"endpoint": {"server": "https://10.0.0.1:6443"}}}),
                )
                .await;
                assert_eq!(code, 400, "a custom resource names its kind: {st}");
                assert!(
                    st["message"]
                        .as_str()
                        .unwrap()
                        .contains("'Kind' is missing"),
                    "{st}"
                );
            }
        })
        .await
        .expect(hang);
    }

    #[test]
    fn continue_tokens_round_trip_and_reject_foreign_prefixes() {
        let t = encode_continue(42, "/registry/shoal.io/clusters/c-9");
        assert_eq!(
            decode_continue(&t, "/registry/shoal.io/clusters/").unwrap(),
            (42, "/registry/shoal.io/clusters/c-9".to_string())
        );
        assert!(decode_continue(&t, "/registry/core/namespaces/").is_err());
        assert!(decode_continue("%%%", "/").is_err());
    }

    #[test]
    fn table_is_negotiated_only_for_meta_k8s_io() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"));
        assert_eq!(negotiate(&h).unwrap(), Output::Table);
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert_eq!(negotiate(&h).unwrap(), Output::Json);
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/vnd.kubernetes.protobuf"),
        );
        assert!(negotiate(&h).is_err());
    }

    #[test]
    fn kubectl_describe_finds_an_objects_events_by_field_selector() {
        let params: Params = [(
            "fieldSelector".to_string(),
            "involvedObject.name=web,involvedObject.kind=Deployment,involvedObject.uid=u-1"
                .to_string(),
        )]
        .into();
        let sel = Selectors::parse(&params).unwrap();
        let ev = |kind: &str| {
            json!({"metadata": {"name": "web.1", "namespace": "default"},
                   "involvedObject": {"kind": kind, "name": "web", "uid": "u-1"}})
        };
        assert!(sel.matches(&ev("Deployment")));
        assert!(!sel.matches(&ev("ReplicaSet")));
        let params: Params = [("fieldSelector".to_string(), "spec.x=1".to_string())].into();
        assert!(Selectors::parse(&params).is_err());
    }
}
