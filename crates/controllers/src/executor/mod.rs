//! Executors: what a task actually does. A [`Task`](shoal_core::taskflow::Task) names
//! one by `spec.executor`; the taskflow controller looks it up in a [`Registry`] and runs
//! it as a tokio task for each attempt.
//!
//! ```text
//!  Start (from the scheduler) ──► ExecContext { run, task, attempt, params, clock, client, cancel }
//!                                   └─ ctx.progress(stage, message, until) ──► latest ──► TaskRun status.progress
//!                                      (the controller writes the latest, with the Running mark and on each change after)
//!                                   └─► Executor::run ──► Ok(Outcome { results, message })
//!                                                     └─► Err(ExecError) ──► the attempt fails
//! ```
//!
//! Adding an executor is implementing [`Executor`] and registering it
//! ([`Registry::register`]). An executor declares whether it is idempotent: after a
//! restart, an attempt that was started and not recorded as finished is re-run only if
//! it is (or if its Task says `idempotent: true`); otherwise the run waits for a human.
//!
//! Executors do not need to watch for cancellation themselves: the controller drops the
//! future when the attempt is cancelled or times out. [`ExecContext::cancel`] is there
//! for executors that hand work to something that outlives the future.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use jiff::Timestamp;
use shoal_core::taskflow::{InstanceId, Param, ParamValue, Progress, RunResult};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;

mod approval;
mod basic;
pub mod fleet;
pub mod release;
mod scope;
mod webhook;

pub use approval::Approval;
pub use basic::{Fail, Noop, Wait};
pub use webhook::Webhook;

/// Everything one attempt of one task gets.
#[derive(Clone)]
pub struct ExecContext {
    pub namespace: String,
    /// The PipelineRun's name.
    pub run: String,
    pub instance: InstanceId,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Fully resolved parameters (defaults filled in).
    pub params: Vec<Param>,
    /// When this attempt started, as recorded in the run's status: an executor re-run
    /// after a restart (`wait`) continues from here rather than starting over.
    pub started_at: Timestamp,
    pub clock: Clock,
    /// A client of shoal's own API.
    pub client: kube::Client,
    pub cancel: CancellationToken,
    /// The TaskRun recording this attempt (in `namespace`).
    pub task_run: String,
    /// What the attempt is doing now ([`ExecContext::progress`]); the taskflow
    /// controller writes it to the TaskRun.
    pub reports: Arc<tokio::sync::watch::Sender<Option<Progress>>>,
}

impl ExecContext {
    /// Tells people what the attempt is doing now: `stage` (one word: `applying`,
    /// `settling`, `baking`, `checking`), a line, and when the stage ends if known. It
    /// lands in the TaskRun's `status.progress`, which the dashboard shows; the
    /// outcome clears it. Nothing is written here: the taskflow controller writes the
    /// latest report with the attempt's `Running` mark and each change after it, so a
    /// stage that is over before the mark (an apply of a few milliseconds) costs no
    /// write.
    pub async fn progress(&self, stage: &str, message: &str, until: Option<Timestamp>) {
        self.reports.send_replace(Some(Progress {
            stage: stage.into(),
            message: message.into(),
            until: until.map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time),
        }));
    }
}

impl fmt::Debug for ExecContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecContext")
            .field("namespace", &self.namespace)
            .field("run", &self.run)
            .field("instance", &self.instance)
            .field("attempt", &self.attempt)
            .field("params", &self.params)
            .field("started_at", &self.started_at)
            .finish_non_exhaustive()
    }
}

impl ExecContext {
    /// The parameter `name`, if given.
    pub fn param(&self, name: &str) -> Option<&ParamValue> {
        self.params
            .iter()
            .find(|p| p.name == name)
            .map(|p| &p.value)
    }

    /// The string parameter `name`.
    ///
    /// # Errors
    /// [`ExecError::Param`] when it is missing or not a string.
    pub fn string_param(&self, name: &str) -> Result<&str, ExecError> {
        match self.param(name) {
            Some(v) => v.as_str().ok_or_else(|| ExecError::Param {
                name: name.into(),
                problem: format!("must be a string, got {:?}", v.type_()),
            }),
            None => Err(ExecError::Param {
                name: name.into(),
                problem: "is required".into(),
            }),
        }
    }

    /// The string parameter `name`, or `None` when absent or empty.
    pub fn optional_param(&self, name: &str) -> Option<&str> {
        self.param(name)
            .and_then(ParamValue::as_str)
            .filter(|s| !s.is_empty())
    }
}

/// A successful attempt: its results and a message for the status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    pub results: Vec<RunResult>,
    pub message: Option<String>,
}

/// Why an attempt failed. The message lands in the task's status.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("parameter {name:?} {problem}")]
    Param { name: String, problem: String },
    #[error("{0}")]
    Failed(String),
    #[error("failed to call {url}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("failed to read from the API")]
    Kube(#[source] kube::Error),
    /// The fleet driver failed to reach or change a member cluster.
    #[error(transparent)]
    Fleet(#[from] shoal_fleet::Error),
    #[error("no executor named {0:?} is registered")]
    Unknown(String),
    /// Something that says nothing about the cluster or the change: shoal's own request
    /// timed out, the member was slow or unreachable for a while, a watch expired. The
    /// attempt is run again (see [`ExecError::is_transient`]).
    #[error("{0}")]
    Transient(String),
}

impl ExecError {
    /// The message recorded in the task's status: the error and its causes.
    pub fn report(&self) -> String {
        crate::report(self)
    }

    /// Whether this failure says nothing about the cluster or the change, so that an
    /// idempotent attempt is run again instead of failing the task: a request that timed
    /// out or could not connect, a connection reset, a `429 Too Many Requests`, a `5xx`,
    /// a `410 Expired` watch, a `409 Conflict` with a concurrent writer. A verdict — a
    /// check that saw crash-looping pods, a webhook that said no, a workload that did not
    /// become healthy in time, a bad parameter — is never transient.
    pub fn is_transient(&self) -> bool {
        match self {
            ExecError::Transient(_) => true,
            ExecError::Kube(e) => transient_kube(e),
            ExecError::Fleet(
                shoal_fleet::Error::Kube { source, .. }
                | shoal_fleet::Error::Discovery { source, .. },
            ) => transient_kube(source),
            // A member reporting counts no object can hold: a garbled or broken answer;
            // the next read may be sane.
            ExecError::Fleet(shoal_fleet::Error::Impossible { .. }) => true,
            ExecError::Http { source, .. } => {
                source.is_timeout()
                    || source.is_connect()
                    || source.is_request()
                    || source
                        .status()
                        .is_some_and(|s| s.as_u16() == 429 || s.is_server_error())
            }
            ExecError::Param { .. }
            | ExecError::Failed(_)
            | ExecError::Fleet(_)
            | ExecError::Unknown(_) => false,
        }
    }
}

/// Whether a kube-rs error is the transport's or the server's passing trouble rather than
/// an answer about the object.
pub(crate) fn transient_kube(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => matches!(s.code, 409 | 410 | 429) || s.code >= 500,
        // Connection refused or reset, timeouts, TLS handshakes cut short, a body that
        // stopped mid-way: the request never got an answer.
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

/// Something a task can do.
#[async_trait::async_trait]
pub trait Executor: Send + Sync + fmt::Debug {
    /// The name a Task's `spec.executor` uses.
    fn name(&self) -> &str;

    /// Whether running an attempt again after a restart is harmless.
    fn idempotent(&self) -> bool;

    /// Runs one attempt.
    ///
    /// # Errors
    /// [`ExecError`] when the attempt failed; its message is recorded.
    ///
    /// # Cancel safety
    /// The controller drops this future when the attempt is cancelled or times out, so
    /// an implementation must leave nothing half-done that a drop would not undo.
    async fn run(&self, ctx: ExecContext) -> Result<Outcome, ExecError>;
}

/// The executors a controller knows, by name. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Registry(Arc<BTreeMap<String, Arc<dyn Executor>>>);

impl Registry {
    /// Every built-in executor: `noop`, `fail`, `wait`, `webhook`, `approval`, and the
    /// fleet and release executors, which use members' kubeconfigs inline only.
    pub fn builtin() -> Self {
        Registry::builtin_with(shoal_fleet::KubeconfigPolicy::default())
    }

    /// Every built-in executor, the fleet and release ones using members' kubeconfigs
    /// as `kubeconfigs` allows.
    pub fn builtin_with(kubeconfigs: shoal_fleet::KubeconfigPolicy) -> Self {
        Registry::builtin_on(Arc::new(shoal_fleet::Fleet::new().with_policy(kubeconfigs)))
    }

    /// Every built-in executor, the fleet and release ones reaching members through
    /// `fleet` (which `shoal serve` shares with the prober and the component view, so
    /// a member has one client and one connection pool in the process, not three).
    pub fn builtin_on(fleet: Arc<shoal_fleet::Fleet>) -> Self {
        let mut r = Registry::default();
        r.register(Noop);
        r.register(Fail);
        r.register(Wait);
        r.register(Webhook::new());
        r.register(Approval);
        fleet::register(&mut r, fleet);
        r
    }

    /// Adds (or replaces) an executor.
    pub fn register(&mut self, e: impl Executor + 'static) {
        Arc::make_mut(&mut self.0).insert(e.name().to_string(), Arc::new(e));
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Executor>> {
        self.0.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// What [`mk_endless_server`] answers: 100 MB, far more than any cap.
    pub const ENDLESS_BYTES: u64 = 100 * 1024 * 1024;

    /// One chunk of an endless answer.
    const ENDLESS_CHUNK: usize = 64 * 1024;
    static ENDLESS_FILL: [u8; ENDLESS_CHUNK] = [b'x'; ENDLESS_CHUNK];

    /// What a client took of an endless answer.
    #[derive(Debug, Default)]
    pub struct Endless {
        /// Bytes handed to the connection so far.
        pub sent: AtomicU64,
        /// Cancelled when the server stops sending: the client hung up (or, if `sent`
        /// reached [`ENDLESS_BYTES`], read it all).
        pub done: CancellationToken,
    }

    impl Endless {
        pub fn sent(&self) -> u64 {
            self.sent.load(Ordering::SeqCst)
        }
    }

    /// A local server answering every request with `status` and a body of
    /// [`ENDLESS_BYTES`] streamed in chunks (no Content-Length), counting what it sends.
    pub async fn mk_endless_server(status: u16) -> (String, Arc<Endless>) {
        struct Stopped(Arc<Endless>);
        impl Drop for Stopped {
            fn drop(&mut self) {
                self.0.done.cancel();
            }
        }
        let endless = Arc::new(Endless::default());
        let state = endless.clone();
        let app = axum::Router::new().fallback(move || {
            let state = state.clone();
            async move {
                let chunks = futures::stream::unfold(Stopped(state), |s| async move {
                    let sent = s.0.sent.fetch_add(ENDLESS_CHUNK as u64, Ordering::SeqCst);
                    (sent < ENDLESS_BYTES).then(|| {
                        let chunk = axum::body::Bytes::from_static(&ENDLESS_FILL);
                        (Ok::<_, std::io::Error>(chunk), s)
                    })
                });
                (
                    axum::http::StatusCode::from_u16(status).unwrap(),
                    axum::body::Body::from_stream(chunks),
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, endless)
    }

    /// Waits until `endless` stopped sending, and checks the client took a small part.
    pub async fn assert_hung_up_early(endless: &Endless) {
        tokio::time::timeout(std::time::Duration::from_secs(30), endless.done.cancelled())
            .await
            .expect("hung: the server never saw the client hang up");
        assert!(
            endless.sent() < ENDLESS_BYTES / 4,
            "the client read {} of {ENDLESS_BYTES} bytes",
            endless.sent()
        );
    }

    /// A context for executor unit tests: no API server behind the client.
    pub fn mk_ctx(params: &[(&str, &str)]) -> ExecContext {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        ExecContext {
            namespace: "default".into(),
            run: "r1".into(),
            instance: InstanceId::new("t", None),
            attempt: 1,
            params: params.iter().map(|(k, v)| Param::new(*k, *v)).collect(),
            started_at: Timestamp::now(),
            clock: Clock::system(),
            client: kube::Client::try_from(config).unwrap(),
            cancel: CancellationToken::new(),
            task_run: "r1-t-1".into(),
            reports: Arc::new(tokio::sync::watch::Sender::new(None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("x", "Reason")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn a_slow_or_overloaded_member_is_transient_and_a_verdict_is_not() {
        for code in [409, 410, 429, 500, 503, 504] {
            assert!(ExecError::Kube(api(code)).is_transient(), "{code}");
            let fleet = shoal_fleet::Error::Kube {
                verb: "read",
                target: "DaemonSet kube-system/agent".into(),
                source: api(code),
            };
            assert!(
                ExecError::Fleet(fleet).is_transient(),
                "{code} through the fleet"
            );
        }
        for code in [400, 401, 403, 404, 422] {
            assert!(!ExecError::Kube(api(code)).is_transient(), "{code}");
        }
        assert!(ExecError::Transient("no answer within 30s".into()).is_transient());
        assert!(!ExecError::Failed("3 pods crash-looping".into()).is_transient());
        assert!(
            !ExecError::Param {
                name: "step".into(),
                problem: "is required".into()
            }
            .is_transient()
        );
        let refused = shoal_fleet::Error::Cluster {
            cluster: "c".into(),
            problem: "spec.credentialsRef: Secret not found".into(),
        };
        assert!(!ExecError::Fleet(refused).is_transient());
    }
}
