//! Serving connections, over plain TCP or TLS, so that a client that is slow or silent
//! cannot hold one for ever (slowloris): the limits kube-apiserver sets on its
//! `http.Server`, enforced in real time.
//!
//! ```text
//!  accept ──▶ TLS handshake ──▶ first request head ──▶ request … response done ──▶ idle ─┐
//!   │ ╰──────── read_header_timeout ───────╯          (no limit while a request or      │
//!   │           (from the accept, as Go's server)      a watch's response is open)      │
//!   │                                          ◀──────── next request head ◀────────────┘
//!   │                                                  within idle_timeout, else closed
//!   └─ shutdown: every connection is told to finish (HTTP/2 GOAWAY, HTTP/1 no keep-alive)
//! ```
//!
//! The key decision: one rule for HTTP/1.1 and HTTP/2, decided outside hyper. Each
//! connection counts its open requests — from the moment hyper hands one to the router
//! until its response body is finished or dropped ([`Activity`]) — and a connection with
//! none open for longer than its limit is closed. A watch is an open request for as long
//! as it streams, so no limit here cuts it (its own `timeoutSeconds` does). hyper's own
//! HTTP/1 header timeout is not used: it also starts while a keep-alive connection
//! waits for its next request, and the auto-detecting builder reads the protocol
//! preface with no timeout at all.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::service::Service as HyperService;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How long a connection may take to say anything, and to say something again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// From the accept to the first request's complete head, the TLS handshake
    /// included (kube-apiserver: `ReadHeaderTimeout`, 32 s).
    pub read_header_timeout: Duration,
    /// How long a connection with no request open stays open for the next one (and so
    /// how long a next request's head may take). kube-apiserver: `IdleTimeout`, 90 s,
    /// which matches Go clients' keep-alive.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            read_header_timeout: Duration::from_secs(32),
            idle_timeout: Duration::from_secs(90),
        }
    }
}

/// How long a connection told to close may take to do so once it has no request open
/// (an HTTP/2 client reading its GOAWAY, a TLS close) before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// After a failed accept (out of file descriptors, say), a pause before the next one, so
/// that a persistent failure does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` — over TLS with `tls` — until `shutdown`, then waits
/// for open connections to finish (watches end with the shutdown token).
///
/// # Errors
/// None today: a failed accept is logged and retried. (`io::Result` for the callers'
/// sake, as `axum::serve`.)
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            // Reap finished connections as they go, so the set holds open ones only.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let accepted_at = Instant::now();
        let _ = tcp.set_nodelay(true);
        let (acceptor, router, builder) = (acceptor.clone(), router.clone(), builder.clone());
        let stop = shutdown.clone();
        let span = tracing::info_span!("connection", %peer);
        connections.spawn(
            async move {
                let handshake_until = accepted_at + limits.read_header_timeout;
                match acceptor {
                    None => serve_one(tcp, builder, router, limits, accepted_at, stop).await,
                    Some(acceptor) => {
                        match tokio::time::timeout_at(handshake_until, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => {
                                serve_one(tls, builder, router, limits, accepted_at, stop).await;
                            }
                            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    }
                }
            }
            .instrument(span),
        );
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// What a connection waits for besides its own end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Open, not told to close: closed when idle past its limit, or on shutdown.
    Serving,
    /// Told to close (idle, or shutting down): dropped once idle for [`CLOSE_GRACE`].
    Closing,
}

/// Serves one connection under `limits`, until it ends, idles out, or — on `shutdown` —
/// has finished its open requests.
///
/// Requests do not wake this loop (that would cost two task wake-ups a request): it
/// sleeps until the earliest moment the connection could be due, and looks then.
async fn serve_one<I>(
    io: I,
    builder: auto::Builder<TokioExecutor>,
    router: Router,
    limits: Limits,
    accepted_at: Instant,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new(accepted_at);
    let service = Tracked {
        inner: TowerToHyperService::new(router),
        activity: activity.clone(),
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut phase = Phase::Serving;
    // When the connection was told to close.
    let mut closing_since = accepted_at;
    loop {
        let load = activity.load();
        let limit = match (phase, load.started) {
            (Phase::Closing, _) => CLOSE_GRACE,
            (Phase::Serving, 0) => limits.read_header_timeout,
            (Phase::Serving, _) => limits.idle_timeout,
        };
        let since = match phase {
            Phase::Closing => load.idle_since.max(closing_since),
            Phase::Serving => load.idle_since,
        };
        let now = Instant::now();
        // Busy: look again a whole limit later (a request cannot end earlier than now).
        let due = if load.open > 0 {
            now + limit
        } else {
            since + limit
        };
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(due) => {
                let load = activity.load();
                let since = match phase {
                    Phase::Closing => load.idle_since.max(closing_since),
                    Phase::Serving => load.idle_since,
                };
                if load.open > 0 || Instant::now() < since + limit {
                    continue;
                }
                if phase == Phase::Closing {
                    tracing::debug!("dropping a connection that did not close");
                    return;
                }
                tracing::debug!(?limit, first = load.started == 0, "closing an idle connection");
                conn.as_mut().graceful_shutdown();
                phase = Phase::Closing;
                closing_since = Instant::now();
            }
            () = shutdown.cancelled(), if phase == Phase::Serving => {
                conn.as_mut().graceful_shutdown();
                phase = Phase::Closing;
                closing_since = Instant::now();
            }
        }
    }
}

/// Requests of one connection so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Load {
    /// Handed to the router and not finished (their response body not yet done).
    open: usize,
    /// Handed to the router since the connection was accepted.
    started: u64,
    /// When the connection last had no request open (at first: when it was accepted).
    idle_since: Instant,
}

/// The requests of one connection, counted with atomics by the requests (each holds an
/// [`Open`] guard until its response is done) and read by the connection's loop.
#[derive(Clone, Debug)]
struct Activity(Arc<Counters>);

#[derive(Debug)]
struct Counters {
    open: AtomicUsize,
    started: AtomicU64,
    /// `idle_since`, in microseconds after `base`.
    idle_since_us: AtomicU64,
    base: Instant,
}

impl Activity {
    fn new(accepted_at: Instant) -> Self {
        Activity(Arc::new(Counters {
            open: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            idle_since_us: AtomicU64::new(0),
            base: accepted_at,
        }))
    }

    fn start(&self) -> Open {
        self.0.started.fetch_add(1, Ordering::Relaxed);
        self.0.open.fetch_add(1, Ordering::AcqRel);
        Open(self.clone())
    }

    fn load(&self) -> Load {
        let c = &self.0;
        Load {
            open: c.open.load(Ordering::Acquire),
            started: c.started.load(Ordering::Relaxed),
            idle_since: c.base + Duration::from_micros(c.idle_since_us.load(Ordering::Acquire)),
        }
    }
}

/// One open request; dropped when its response body is finished or abandoned.
#[derive(Debug)]
struct Open(Activity);

impl Drop for Open {
    fn drop(&mut self) {
        let c = &(self.0).0;
        // The time first: the loop reads `open`, then the time, and must not see the
        // connection idle with an old time.
        let now = u64::try_from(c.base.elapsed().as_micros()).unwrap_or(u64::MAX);
        c.idle_since_us.fetch_max(now, Ordering::AcqRel);
        c.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The router, as hyper calls it, with each request counted in the connection's
/// [`Activity`] until its response body ends.
#[derive(Clone)]
struct Tracked {
    inner: TowerToHyperService<Router>,
    activity: Activity,
}

impl HyperService<Request<Incoming>> for Tracked {
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let open = self.activity.start();
        let answer = self.inner.call(req);
        Box::pin(async move {
            let resp = answer.await?;
            Ok(resp.map(|body| {
                Body::new(CountedBody {
                    inner: body,
                    _open: open,
                })
            }))
        })
    }
}

/// A response body that keeps its request counted as open while it streams.
struct CountedBody {
    inner: Body,
    _open: Open,
}

impl HttpBody for CountedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMITS: Limits = Limits {
        read_header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
    };

    /// A server of `/ping` and of `/stream`, which sends a line every 100 ms, 15 times.
    async fn mk_server() -> (std::net::SocketAddr, CancellationToken) {
        use axum::routing::get;
        let router = Router::new()
            .route("/ping", get(|| async { "pong" }))
            .route(
                "/stream",
                get(|| async {
                    let lines = futures::stream::unfold(0, |n| async move {
                        if n == 15 {
                            return None;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Some((Ok::<_, std::io::Error>(format!("line {n}\n")), n + 1))
                    });
                    Body::from_stream(lines)
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, router, None, LIMITS, stop.clone()));
        (addr, stop)
    }

    /// Reads until the server closes the connection; returns what it sent.
    async fn until_closed(tcp: &mut tokio::net::TcpStream) -> String {
        let mut out = Vec::new();
        let _ = tcp.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn a_connection_that_sends_nothing_is_closed_after_the_header_limit() {
        let (addr, _stop) = mk_server().await;
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let start = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(20), until_closed(&mut tcp))
            .await
            .expect("hung: a silent connection was never closed");
        assert!(
            start.elapsed() >= Duration::from_millis(250),
            "not before the limit"
        );
    }

    #[tokio::test]
    async fn a_half_sent_request_head_is_closed_and_a_keep_alive_connection_idles_out() {
        let (addr, _stop) = mk_server().await;
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(20), until_closed(&mut slow))
            .await
            .expect("hung: a half-sent head held the connection");

        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answered = tokio::time::timeout(Duration::from_secs(20), until_closed(&mut idle))
            .await
            .expect("hung: an idle keep-alive connection was never closed");
        assert!(
            answered.contains("pong"),
            "answered, then closed: {answered}"
        );
    }

    #[tokio::test]
    async fn a_response_that_streams_longer_than_the_idle_limit_is_not_cut() {
        let (addr, _stop) = mk_server().await;
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        // 15 × 100 ms: five times the idle limit.
        let body = tokio::time::timeout(Duration::from_secs(20), until_closed(&mut tcp))
            .await
            .expect("hung: the stream never ended");
        assert!(body.contains("line 14"), "the whole stream arrived: {body}");
    }
}
