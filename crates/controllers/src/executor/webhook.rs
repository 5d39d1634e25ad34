//! `webhook`: one HTTP call, its body templated from the parameters, judged by status
//! code or by a field of the JSON response.
//!
//! | param | meaning | default |
//! |---|---|---|
//! | `url` | where to send it | required |
//! | `method` | `POST`, `GET`, `PUT`, … | `POST` |
//! | `body` | a [minijinja] template; `params`, `run`, `task`, `attempt`, `namespace` are in scope | empty |
//! | `headers` | an object of header → value | none |
//! | `timeout` | the whole call, as a duration | `30s` |
//! | `successCodes` | comma-separated codes or ranges (`200,202`, `200-299`) | `200-299` |
//! | `successField` | a JSON pointer (`/status`) or dotted path (`result.ok`) into the response | none |
//! | `successValue` | what that field must equal (as text) | `true` |
//!
//! Results: `statusCode` and `body` (the first [`MAX_RESULT_BODY`] bytes).
//!
//! The answer is read up to [`MAX_BODY`] bytes and no further: a longer one fails the
//! attempt ("answer larger than N bytes") with the connection dropped, so a receiver
//! cannot make shoal hold or read an endless body.
//!
//! Not idempotent: the receiving side may not be, so after a restart an attempt that
//! may have been sent waits for a human, unless the Task says `idempotent: true`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_core::taskflow::{ParamValue, RunResult, duration};

use super::{ExecContext, ExecError, Executor, Outcome};

/// How much of the response body becomes the `body` result: results live in the run's
/// status, which must stay small.
pub const MAX_RESULT_BODY: usize = 4096;

/// The most of a webhook's answer that is read: far more than any verdict a
/// `successField` is read from, far less than what would hurt shoal to hold once per
/// running task. A longer answer fails the attempt.
pub const MAX_BODY: usize = 1024 * 1024;

/// Why an answer's body was not read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// Longer than the cap (by its Content-Length, or by what arrived): not read further.
    #[error("answer larger than {cap} bytes")]
    TooLarge { cap: usize },
    #[error("failed to read the answer")]
    Read(#[source] reqwest::Error),
}

/// The first `cap` bytes of `resp`'s body, read chunk by chunk, and whether more
/// followed (then the rest is not read: dropping the response drops the connection).
///
/// # Errors
/// The transport's, while reading.
pub(crate) async fn read_prefix(
    mut resp: reqwest::Response,
    cap: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = cap - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// The whole body of `resp`, if it is at most `cap` bytes; a longer one is not read
/// beyond the cap.
///
/// # Errors
/// [`BodyError::TooLarge`] when the body is (or its Content-Length says it is) longer
/// than `cap`; [`BodyError::Read`] when the transport fails.
pub(crate) async fn read_body(resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, BodyError> {
    if resp
        .content_length()
        .is_some_and(|n| n > u64::try_from(cap).unwrap_or(u64::MAX))
    {
        return Err(BodyError::TooLarge { cap });
    }
    match read_prefix(resp, cap).await.map_err(BodyError::Read)? {
        (_, true) => Err(BodyError::TooLarge { cap }),
        (body, false) => Ok(body),
    }
}

/// The call's timeout when the `timeout` parameter is absent.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The webhook executor, with its own connection pool.
#[derive(Clone, Debug)]
pub struct Webhook {
    http: reqwest::Client,
}

impl Webhook {
    pub fn new() -> Self {
        Webhook {
            http: reqwest::Client::new(),
        }
    }
}

impl Default for Webhook {
    fn default() -> Self {
        Webhook::new()
    }
}

/// Renders `template` with the parameters and the attempt's identity in scope.
///
/// # Errors
/// [`ExecError::Param`] naming `body` when the template does not parse or render.
pub fn render_body(ctx: &ExecContext, template: &str) -> Result<String, ExecError> {
    render_template(ctx, "body", template)
}

/// Renders the template of parameter `param` with the parameters and the attempt's
/// identity (`params`, `run`, `task`, `attempt`, `namespace`) in scope.
///
/// # Errors
/// [`ExecError::Param`] naming `param` when the template does not parse or render.
pub fn render_template(
    ctx: &ExecContext,
    param: &str,
    template: &str,
) -> Result<String, ExecError> {
    let params: BTreeMap<&str, Value> = ctx
        .params
        .iter()
        .map(|p| {
            let v = match &p.value {
                ParamValue::String(s) => json!(s),
                ParamValue::Array(a) => json!(a),
                ParamValue::Object(o) => json!(o),
            };
            (p.name.as_str(), v)
        })
        .collect();
    let scope = json!({
        "params": params,
        "run": ctx.run,
        "task": ctx.instance.task,
        "attempt": ctx.attempt,
        "namespace": ctx.namespace,
    });
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.render_str(template, scope)
        .map_err(|e| ExecError::Param {
            name: param.into(),
            problem: format!("does not render: {e}"),
        })
}

/// Whether `code` is in `spec` (`200,202`, `200-299`).
fn code_matches(spec: &str, code: u16) -> Result<bool, ExecError> {
    let bad = || ExecError::Param {
        name: "successCodes".into(),
        problem: format!("{spec:?} is not a list of codes or ranges like 200-299"),
    };
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo.trim(), hi.trim()),
            None => (part, part),
        };
        let lo: u16 = lo.parse().map_err(|_| bad())?;
        let hi: u16 = hi.parse().map_err(|_| bad())?;
        if (lo..=hi).contains(&code) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The field at `path` (a JSON pointer, or a dotted path) of `v`, as text.
fn field_text(v: &Value, path: &str) -> Option<String> {
    let pointer = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{}", path.replace('.', "/"))
    };
    v.pointer(&pointer).map(|f| match f {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

#[async_trait::async_trait]
impl Executor for Webhook {
    fn name(&self) -> &str {
        "webhook"
    }

    fn idempotent(&self) -> bool {
        false
    }

    async fn run(&self, ctx: ExecContext) -> Result<Outcome, ExecError> {
        let url = ctx.string_param("url")?.to_string();
        let method = ctx.optional_param("method").unwrap_or("POST");
        let method =
            reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).map_err(|_| {
                ExecError::Param {
                    name: "method".into(),
                    problem: format!("{method:?} is not an HTTP method"),
                }
            })?;
        let timeout = match ctx.optional_param("timeout") {
            Some(t) => duration::parse(t)
                .map_err(|e| ExecError::Param {
                    name: "timeout".into(),
                    problem: format!("{t:?} is not a duration: {e}"),
                })?
                .unsigned_abs(),
            None => DEFAULT_TIMEOUT,
        };
        let codes = ctx.optional_param("successCodes").unwrap_or("200-299");
        code_matches(codes, 200)?; // reject a malformed spec before calling anyone
        let mut req = self.http.request(method, &url).timeout(timeout);
        if let Some(ParamValue::Object(headers)) = ctx.param("headers") {
            for (k, v) in headers {
                req = req.header(k, v);
            }
        }
        if let Some(template) = ctx.optional_param("body") {
            let body = render_body(&ctx, template)?;
            if serde_json::from_str::<Value>(&body).is_ok() {
                req = req.header(reqwest::header::CONTENT_TYPE, "application/json");
            }
            req = req.body(body);
        }
        let http = |source| ExecError::Http {
            url: url.clone(),
            source,
        };
        let resp = req.send().await.map_err(http)?;
        let code = resp.status().as_u16();
        let bytes = match read_body(resp, MAX_BODY).await {
            Ok(bytes) => bytes,
            Err(BodyError::Read(e)) => return Err(http(e)),
            Err(e @ BodyError::TooLarge { .. }) => {
                return Err(ExecError::Failed(format!("{url} answered {code}: {e}")));
            }
        };
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_RESULT_BODY)]).to_string();
        let results = vec![
            RunResult::new("statusCode", code.to_string()),
            RunResult::new("body", text.clone()),
        ];
        if !code_matches(codes, code)? {
            return Err(ExecError::Failed(format!(
                "{url} answered {code}, expected {codes}: {}",
                text.chars().take(200).collect::<String>()
            )));
        }
        if let Some(field) = ctx.optional_param("successField") {
            let want = ctx.optional_param("successValue").unwrap_or("true");
            let got = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| field_text(&v, field));
            if got.as_deref() != Some(want) {
                return Err(ExecError::Failed(format!(
                    "{url} answered {code} with {field} = {}, expected {want:?}",
                    got.map_or("nothing".to_string(), |g| format!("{g:?}"))
                )));
            }
        }
        Ok(Outcome {
            results,
            message: Some(format!("{url} answered {code}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::Json;
    use axum::extract::State;
    use axum::routing::{get, post};

    use super::super::testing::mk_ctx;
    use super::*;

    /// A local server: POST /echo records the body and answers `{"ok": …}` from it;
    /// GET /status/{code} answers that code.
    async fn mk_server() -> (String, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route(
                "/echo",
                post(|State(seen): State<Arc<Mutex<Vec<String>>>>, body: String| async move {
                    seen.lock().unwrap().push(body.clone());
                    let ok = body.contains("go");
                    Json(json!({"result": {"ok": ok}, "state": if ok { "done" } else { "nope" }}))
                }),
            )
            .route(
                "/status/{code}",
                get(|axum::extract::Path(code): axum::extract::Path<u16>| async move {
                    axum::http::StatusCode::from_u16(code).unwrap()
                }),
            )
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, seen)
    }

    #[tokio::test]
    async fn body_templates_see_params_and_the_attempt() {
        let ctx = mk_ctx(&[("cluster", "c-1")]);
        let body = render_body(
            &ctx,
            r#"{"c": "{{ params.cluster }}", "a": {{ attempt }}, "r": "{{ run }}/{{ task }}"}"#,
        )
        .unwrap();
        assert_eq!(body, r#"{"c": "c-1", "a": 1, "r": "r1/t"}"#);
        let err = render_body(&ctx, "{{ params.missing }}").unwrap_err();
        assert!(err.report().contains("body"), "{}", err.report());
    }

    #[test]
    fn success_codes_accept_lists_and_ranges() {
        assert!(code_matches("200-299", 204).unwrap());
        assert!(!code_matches("200,202", 201).unwrap());
        assert!(code_matches("200, 409", 409).unwrap());
        assert!(code_matches("2xx", 200).is_err());
    }

    #[tokio::test]
    async fn webhook_posts_the_rendered_body_and_judges_a_json_field() {
        let (url, seen) = mk_server().await;
        let ctx = mk_ctx(&[
            ("url", &format!("{url}/echo")),
            ("body", r#"{"say": "{{ params.word }}"}"#),
            ("word", "go"),
            ("successField", "result.ok"),
        ]);
        let out = Webhook::new().run(ctx).await.unwrap();
        assert_eq!(out.results[0], RunResult::new("statusCode", "200"));
        assert_eq!(seen.lock().unwrap().as_slice(), [r#"{"say": "go"}"#]);

        let ctx = mk_ctx(&[
            ("url", &format!("{url}/echo")),
            ("body", "stop"),
            ("successField", "/state"),
            ("successValue", "done"),
        ]);
        let err = Webhook::new().run(ctx).await.unwrap_err();
        assert!(
            err.report().contains(r#"/state = "nope""#),
            "{}",
            err.report()
        );
    }

    #[tokio::test]
    async fn webhook_judges_status_codes() {
        let (url, _) = mk_server().await;
        let get = |code: u16, codes: &'static str| {
            mk_ctx(&[
                ("url", &format!("{url}/status/{code}")),
                ("method", "get"),
                ("successCodes", codes),
            ])
        };
        assert!(Webhook::new().run(get(204, "200-299")).await.is_ok());
        let err = Webhook::new().run(get(503, "200-299")).await.unwrap_err();
        assert!(err.report().contains("answered 503"), "{}", err.report());
        assert!(Webhook::new().run(get(409, "200,409")).await.is_ok());
    }

    #[tokio::test]
    async fn webhook_does_not_read_an_endless_answer_whole() {
        use super::super::testing::{assert_hung_up_early, mk_endless_server};
        for status in [200, 500] {
            let (url, endless) = mk_endless_server(status).await;
            let ctx = mk_ctx(&[("url", &url), ("method", "get")]);
            let err = tokio::time::timeout(Duration::from_secs(30), Webhook::new().run(ctx))
                .await
                .expect("hung: reading the endless answer")
                .unwrap_err();
            assert!(
                err.report().contains(&format!(
                    "answered {status}: answer larger than 1048576 bytes"
                )),
                "{}",
                err.report()
            );
            assert_hung_up_early(&endless).await;
        }
    }

    #[tokio::test]
    async fn webhook_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        // Accepts and never answers.
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let ctx = mk_ctx(&[("url", &url), ("timeout", "200ms")]);
        let t = std::time::Instant::now();
        let err = Webhook::new().run(ctx).await.unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(matches!(err, ExecError::Http { .. }), "{}", err.report());
    }
}
