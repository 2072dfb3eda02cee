//! The tracker's service (`altocast tracker`): ranks candidate peers for a
//! requesting peer through [`Domains`], over HTTP/JSON ([`http`]: `POST
//! /rank`, `GET /stats`) and gRPC ([`grpc`]: `altocast.v1.Tracker/Rank`,
//! with `grpc.health.v1` and server reflection), both on one port.
//!
//! ```text
//! POST /rank  {"requester": "10.1.3.200", "candidates": ["10.2.0.1", …], "count": 100}
//! 200         {"peers": [{"ip": "10.1.3.7", "domain": "<origin id>", "pid": "west-003", "cost": 1.0,
//!                         "standing": "priced"}, …]}
//! ```
//!
//! One port, two protocols: a connection whose first bytes are the HTTP/2
//! client preface is served as HTTP/2 (gRPC clients speak h2c with prior
//! knowledge), any other as HTTP/1.1; on either, a request whose content type
//! is `application/grpc…` goes to the gRPC services and any other to the JSON
//! routes. A ranking is the tracker's advisory answer, not signed data: both
//! interfaces return exactly the same [`Ranked`] list.
//!
//! Every request is bounded ([`TrackerLimits`]), the same way on both
//! interfaces: the body's size (413 / `RESOURCE_EXHAUSTED`) and the time it
//! takes to arrive (408 / `DEADLINE_EXCEEDED`), the number of candidates and
//! the count (400 / `INVALID_ARGUMENT`), requests ranked at once (503 /
//! `UNAVAILABLE`; a ranking slot is taken before the body is read, so at most
//! that many bodies are held). Connections are bounded too, by our own
//! accept loop: at most `max_connections` open (more are closed at once); the
//! first bytes of a connection and every HTTP/1 request head must arrive
//! within `header_timeout`, which also closes an HTTP/1 connection left idle
//! that long; an HTTP/2 connection silent that long is sent a PING and closed
//! if it does not answer within it, one with no stream open that long is
//! closed though it answers, and it carries at most `max_in_flight` streams
//! at once. Health and reflection calls take no ranking slot, but what they
//! send is bounded in size ([`grpc::SMALL_CALL_BYTES`]) and time as well. Errors name what is wrong (`{"error": "…"}`, or the gRPC
//! status message), e.g. the index of a candidate that is not an IP address;
//! each refusal is counted in `altocast_tracker_refused_total{reason}`.
//!
//! Key types: [`TrackerLimits`], [`Refusal`], [`serve`], and for programs
//! that embed the tracker, [`grpc::TrackerService`] and [`http::router`].

pub mod grpc;
pub mod http;

use std::{
    convert::Infallible,
    future::Future,
    net::IpAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, warn};

use crate::domains::{Domains, RankError, Ranked, refused};

/// Bounds of the service. Defaults are the flags' defaults.
#[derive(Debug, Clone, Copy)]
pub struct TrackerLimits {
    /// Largest request body, bytes (10,000 IPv6 candidates fit in ~500 KB).
    pub max_request_bytes: usize,
    /// Largest `count` (peers per reply).
    pub max_count: usize,
    /// Requests ranked at once; more get 503 (gRPC: `UNAVAILABLE`).
    pub max_in_flight: usize,
    /// Open connections; more are accepted and closed at once.
    pub max_connections: usize,
    /// Longest a connection's first bytes and each HTTP/1 request head may
    /// take, and a connection may idle (HTTP/1) or stay silent before it is
    /// pinged, and then without answering, or with no stream open (HTTP/2).
    pub header_timeout: Duration,
    /// Longest a request body may take to arrive (408).
    pub body_timeout: Duration,
}

impl TrackerLimits {
    /// The defaults (also the flags' defaults).
    pub const DEFAULT: TrackerLimits = TrackerLimits {
        max_request_bytes: 1 << 20,
        max_count: 1000,
        max_in_flight: 64,
        max_connections: 1024,
        header_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(10),
    };
}

impl Default for TrackerLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a ranking request is refused, on either interface. Each is counted
/// in `altocast_tracker_refused_total{reason}` when it is made
/// ([`Refusal::reason`]); [`http`] and [`grpc`] each map it to their status in
/// one place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The request does not parse: a field that is not an IP address (the
    /// message names it, e.g. `candidates[3]`), or JSON of the wrong shape.
    #[error("{0}")]
    Syntax(String),
    /// `count` is 0 or above [`TrackerLimits::max_count`].
    #[error("count {given} is not within 1..={max}")]
    Count {
        /// The count asked for.
        given: u64,
        /// The limit.
        max: usize,
    },
    /// More candidates than the tracker accepts.
    #[error(transparent)]
    Candidates(RankError),
    /// The body is larger than [`TrackerLimits::max_request_bytes`].
    #[error("request body over {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// The body did not arrive within [`TrackerLimits::body_timeout`].
    #[error("request body not received within {secs} s")]
    Timeout {
        /// The limit, seconds.
        secs: u64,
    },
    /// [`TrackerLimits::max_in_flight`] requests are being ranked.
    #[error("{max} requests are being ranked; try again")]
    Busy {
        /// The limit.
        max: usize,
    },
}

impl Refusal {
    /// The `reason` label it is counted under.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Syntax(_) => "syntax",
            Refusal::Count { .. } => "count",
            Refusal::Candidates(_) => "candidates",
            Refusal::TooLarge { .. } => "body_too_large",
            Refusal::Timeout { .. } => "body_timeout",
            Refusal::Busy { .. } => "busy",
        }
    }

    /// Counts it and hands it on.
    fn counted(self) -> Refusal {
        refused(self.reason());
        self
    }
}

/// A ranking slot: held from before the body is read until the answer is made.
#[derive(Debug, Clone)]
struct Slot {
    _permit: Arc<OwnedSemaphorePermit>,
}

/// What both interfaces share: the view, the limits and the ranking slots.
struct Shared {
    domains: Domains,
    limits: TrackerLimits,
    slots: Arc<Semaphore>,
}

impl Shared {
    fn new(domains: Domains, limits: TrackerLimits) -> Arc<Shared> {
        let slots = Arc::new(Semaphore::new(limits.max_in_flight.clamp(1, Semaphore::MAX_PERMITS)));
        Arc::new(Shared { domains, limits, slots })
    }

    /// A ranking slot, or [`Refusal::Busy`].
    fn slot(&self) -> Result<Slot, Refusal> {
        match self.slots.clone().try_acquire_owned() {
            Ok(p) => Ok(Slot { _permit: Arc::new(p) }),
            Err(_) => Err(Refusal::Busy { max: self.limits.max_in_flight }.counted()),
        }
    }

    /// The whole body, within the size and time limits.
    async fn read_body<B>(&self, body: B) -> Result<Bytes, Refusal>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        use http_body_util::BodyExt as _;
        let max = self.limits.max_request_bytes;
        let wait = self.limits.body_timeout;
        match tokio::time::timeout(wait, http_body_util::Limited::new(body, max).collect()).await {
            Ok(Ok(b)) => Ok(b.to_bytes()),
            Ok(Err(_)) => Err(Refusal::TooLarge { max }.counted()),
            Err(_) => Err(Refusal::Timeout { secs: wait.as_secs() }.counted()),
        }
    }

    /// Checks a request (in the same order on both interfaces: count,
    /// requester, each candidate, the number of candidates) and ranks it.
    async fn rank(&self, requester: &str, candidates: &[String], count: u64) -> Result<Vec<Ranked>, Refusal> {
        let max = self.limits.max_count;
        let n = usize::try_from(count).ok().filter(|n| (1..=max).contains(n));
        let Some(n) = n else { return Err(Refusal::Count { given: count, max }.counted()) };
        let requester = ip("requester", requester)?;
        let mut parsed = Vec::with_capacity(candidates.len().min(100_000));
        for (i, c) in candidates.iter().enumerate() {
            parsed.push(ip(&format!("candidates[{i}]"), c)?);
        }
        self.domains.rank(requester, &parsed, n).await.map_err(|e| Refusal::Candidates(e).counted())
    }
}

/// `s` as an address, or the refusal naming `field`.
fn ip(field: &str, s: &str) -> Result<IpAddr, Refusal> {
    s.parse().map_err(|_| {
        let shown: String = s.chars().take(60).collect();
        Refusal::Syntax(format!("{field}: {shown:?} is not an IP address")).counted()
    })
}

/// What a connection speaks, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// The HTTP/2 client preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Peeks at the connection's first bytes until they are the HTTP/2 preface
/// or cannot be (the caller bounds the time).
async fn sniff(tcp: &TcpStream) -> std::io::Result<Protocol> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut pause = Duration::from_millis(5);
    loop {
        let n = tcp.peek(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(Protocol::Http1);
        }
        if n == H2_PREFACE.len() {
            return Ok(Protocol::Http2);
        }
        // Part of the preface: peek would return the same bytes at once, so
        // wait a little for the rest (only a client trickling its preface
        // gets here, and the caller's timeout ends that), a little longer
        // each time: a thousand connections holding part of it cost a few
        // wake-ups a second each, not two hundred.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// Whether `req` is a gRPC call (`application/grpc`, `application/grpc+proto`, …).
fn is_grpc<B>(req: &::http::Request<B>) -> bool {
    req.headers().get(::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| {
        ct.get(..16).is_some_and(|p| p.eq_ignore_ascii_case("application/grpc"))
            && matches!(ct.as_bytes().get(16), None | Some(b'+' | b';'))
    })
}

type BoxedResponse = ::http::Response<axum::body::Body>;

/// Serves `POST /rank`, `GET /stats` and the gRPC `Tracker` service (with
/// health and reflection) on `listener` until `shutdown`, then lets the
/// requests in flight finish (at most 5 s).
pub async fn serve(
    domains: Domains,
    listener: TcpListener,
    limits: TrackerLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let shared = Shared::new(domains, limits);
    let routes = http::routes(shared.clone());
    let grpc = grpc::routes(shared.clone()).await.map_err(std::io::Error::other)?;
    let slots = Arc::new(Semaphore::new(limits.max_connections.clamp(1, Semaphore::MAX_PERMITS)));
    let mut h1 = hyper::server::conn::http1::Builder::new();
    h1.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(limits.header_timeout).max_headers(64);
    let mut h2 = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    h2.timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(limits.header_timeout)
        .keep_alive_timeout(limits.header_timeout)
        .max_concurrent_streams(u32::try_from(limits.max_in_flight).unwrap_or(u32::MAX).max(1))
        // Metadata of a ranking call is a few headers; 16 KiB is hyper's default for HTTP/1 too.
        .max_header_list_size(16 << 10);
    let conns = TaskTracker::new();
    loop {
        let tcp = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => match a {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of descriptors, or a reset before accept: pause, do not spin.
                    warn!(error = %e, "accepting a tracker connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused("connections");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (routes, grpc, shared) = (routes.clone(), grpc.clone(), shared.clone());
        let activity = Arc::new(Activity::default());
        let active = activity.clone();
        let svc = hyper::service::service_fn(move |req: ::http::Request<hyper::body::Incoming>| {
            let (mut routes, grpc, shared) = (routes.clone(), grpc.clone(), shared.clone());
            let busy = Activity::begin(&active);
            async move {
                use tower_service::Service as _;
                let resp: BoxedResponse = if is_grpc(&req) {
                    grpc::call(grpc, &shared, req).await
                } else {
                    match routes.call(req.map(axum::body::Body::new)).await {
                        Ok(r) => r,
                        Err(e) => match e {},
                    }
                };
                // The stream is busy until its answer has been sent.
                Ok::<_, Infallible>(resp.map(|body| axum::body::Body::new(Busy { body, _busy: busy })))
            }
        });
        let (h1, h2, stop) = (h1.clone(), h2.clone(), shutdown.clone());
        let wait = limits.header_timeout;
        conns.spawn(async move {
            let _slot = slot;
            let protocol = tokio::select! {
                p = tokio::time::timeout(wait, sniff(&tcp)) => p,
                _ = stop.cancelled() => return,
            };
            let protocol = match protocol {
                Ok(Ok(p)) => p,
                // Closed before saying anything: routine.
                Ok(Err(e)) => return debug!(error = %e, "tracker connection ended before a request"),
                Err(_) => return refused("header_timeout"),
            };
            let io = hyper_util::rt::TokioIo::new(tcp);
            let ended = match protocol {
                Protocol::Http1 => {
                    let conn = h1.serve_connection(io, svc);
                    drive(conn, |c| c.graceful_shutdown(), &stop, std::future::pending()).await
                }
                Protocol::Http2 => {
                    let conn = h2.serve_connection(io, svc);
                    // Closed when no stream was open for `wait` (hyper's
                    // PINGs only catch peers that stopped answering them).
                    let idle = async {
                        loop {
                            let seen = activity.started.load(Ordering::Relaxed);
                            tokio::time::sleep(wait).await;
                            if activity.open.load(Ordering::Relaxed) == 0
                                && activity.started.load(Ordering::Relaxed) == seen
                            {
                                return;
                            }
                        }
                    };
                    drive(conn, |c| c.graceful_shutdown(), &stop, idle).await
                }
            };
            if let Err(e) = ended {
                // A client going away, or one too slow with its head: routine.
                debug!(error = %e, "tracker connection ended");
            }
        });
    }
    conns.close();
    conns.wait().await;
    Ok(())
}

/// Runs one connection until it ends, or until `stop` or `idle`, then shuts
/// it down gracefully (at most 5 s).
async fn drive<C>(
    conn: C,
    graceful: impl FnOnce(Pin<&mut C>),
    stop: &CancellationToken,
    idle: impl Future<Output = ()>,
) -> Result<(), hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        () = idle => {
            graceful(conn.as_mut());
            tokio::time::timeout(Duration::from_secs(5), conn.as_mut()).await.unwrap_or(Ok(()))
        }
        _ = stop.cancelled() => {
            graceful(conn.as_mut());
            tokio::time::timeout(Duration::from_secs(5), conn.as_mut()).await.unwrap_or(Ok(()))
        }
    }
}

/// The streams of one connection: started so far, and open now.
#[derive(Default)]
struct Activity {
    started: AtomicU64,
    open: AtomicUsize,
}

impl Activity {
    /// A stream begins; it stays open as long as the guard lives.
    fn begin(a: &Arc<Activity>) -> OpenStream {
        a.started.fetch_add(1, Ordering::Relaxed);
        a.open.fetch_add(1, Ordering::Relaxed);
        OpenStream(a.clone())
    }
}

struct OpenStream(Arc<Activity>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An answer's body, keeping its stream counted as open until it is dropped.
struct Busy {
    body: axum::body::Body,
    _busy: OpenStream,
}

impl hyper::body::Body for Busy {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
