//! The RFC 7285 HTTP/JSON interface, served from verified data, so existing
//! ALTO clients read the same maps the gRPC subscribers get without knowing
//! about signatures: the IRD (§9), full network and cost maps (§11.2), the
//! filtered cost map (§11.3.2) and the endpoint cost service (§11.5.1), and
//! RFC 8895 update streams over server-sent events: the full map first, then
//! an RFC 7396 merge patch per verified change of a cost map (a network map
//! change is sent whole).
//!
//! It is read-only and answers from a [`View`] (what the upstream subscription
//! verified). A resource past its signed expiry is refused with 503 rather
//! than served as fresh; fresh answers carry `Cache-Control: max-age` up to
//! that expiry, so HTTP caches between here and clients cannot outlive it
//! either. Bad requests get RFC 7285 §8.5 error objects naming the field.
//!
//! It faces the open network, so every resource a client can make it hold is
//! bounded by [`HttpLimits`] (one flag each, see `config::AltoArgs`), and
//! every refusal is counted in `altocast_http_refused_total{reason}`:
//!
//! - **Connections** are served by our own accept loop ([`AltoHttp::serve`])
//!   rather than `axum::serve`, because it needs what that does not offer: a
//!   cap on open connections, a header timeout counted from a request's first
//!   byte, an idle keep-alive timeout and a write-stall timeout.
//! - **Request bodies** are read up front, with a size limit and a read
//!   timeout, also for `POST /updates` (its response is long-lived, its
//!   request body is not).
//! - **Queries** (filtered cost map, endpoint cost) run under a concurrency
//!   limit, and the endpoint cost answer is written straight into one buffer.
//! - **Update streams** hold no copies of maps: each version's JSON (and each
//!   merge patch between two versions) is rendered once into [`Bytes`] that
//!   every stream sends. A stream does not queue events either: its body is
//!   pulled by the connection, and when polled it sends what changed since it
//!   last sent, so a slow reader skips to the newest version instead of
//!   piling up old ones, and holds at most one event. Control ids are random
//!   (128 bits) and a control request acts only on its own stream.
//! - **URIs** in the IRD and the stream control event are relative, or under
//!   the configured public URL; never built from the request's `Host`.
//!
//! Key types: [`AltoHttp`] (the interface), [`HttpLimits`], [`Stats`].

use altocast_proto::model::json::{push_cost, push_json_str};
use std::{
    collections::HashSet,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use altocast_client::{CostMapVersion, View, ViewState};
use altocast_proto::{CostMap, Tag};
use axum::{
    Router,
    body::{Body, Bytes},
    extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use http_body_util::BodyExt as _;
use serde_json::{Map, Value, json};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, warn};

use crate::metrics as m;

const IRD_TYPE: &str = "application/alto-directory+json";
const ERROR_TYPE: &str = "application/alto-error+json";
const ECS_TYPE: &str = "application/alto-endpointcost+json";
const ECS_PARAMS_TYPE: &str = "application/alto-endpointcostparams+json";
const FILTER_TYPE: &str = "application/alto-costmapfilter+json";
const CONTROL_TYPE: &str = "application/alto-updatestreamcontrol+json";

/// An SSE comment sent on an otherwise quiet stream, so proxies keep it open
/// and a reader that has gone away shows up as a stalled write.
const KEEP_ALIVE: Duration = Duration::from_secs(20);
/// Merge patches kept per cost map for its current version, one per base
/// version streams last saw. Streams on the newest base all share one; a
/// stream whose base is not among these gets the (shared) full map instead, so
/// patch memory per map stays bounded however streams lag.
const PATCH_BASES: usize = 4;

/// What the interface lets clients hold. Defaults are the flags' defaults.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Base of the absolute URIs in the IRD and stream control events
    /// (`https://alto.example.net`); `None`: relative paths.
    pub public_url: Option<String>,
    /// This node's public gRPC URLs, advertised in the IRD's
    /// `meta.altocast.grpc` (`--grpc-public-url`); empty: none advertised.
    pub grpc_urls: Vec<String>,
    /// Most open connections; more are accepted and closed at once.
    pub max_connections: usize,
    /// Longest from a request's first byte to the end of its header.
    pub header_timeout: Duration,
    /// Longest a connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Longest a request body may take to arrive once its header has.
    pub body_timeout: Duration,
    /// Longest a write to a client may stay blocked (a reader that stopped).
    pub write_timeout: Duration,
    /// Longest a query (IRD, maps, filtered cost map, endpoint cost) may
    /// take, reading included; update streams are long-lived by design.
    pub request_timeout: Duration,
    /// Largest request body.
    pub max_request_bytes: usize,
    /// Most endpoints per side of an endpoint cost request.
    pub max_endpoints: usize,
    /// Most source × destination pairs one endpoint cost request may ask for.
    pub max_pairs: usize,
    /// Most filtered cost map and endpoint cost requests served at once.
    pub max_queries: usize,
    /// Most update streams open at once.
    pub max_streams: usize,
    /// Most resources one update stream may follow.
    pub max_stream_resources: usize,
}

impl HttpLimits {
    /// The defaults (also the flags' defaults).
    pub const DEFAULT: HttpLimits = HttpLimits {
        public_url: None,
        grpc_urls: Vec::new(),
        max_connections: 4096,
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        body_timeout: Duration::from_secs(10),
        write_timeout: Duration::from_secs(60),
        request_timeout: Duration::from_secs(30),
        max_request_bytes: 1 << 20,
        max_endpoints: 10_000,
        // A peer asking for costs to a few thousand candidates fits; the
        // answer stays a few MB (~40 bytes a pair).
        max_pairs: 100_000,
        max_queries: 8,
        max_streams: 10_000,
        max_stream_resources: 64,
    };
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits::DEFAULT
    }
}

/// Counts a refusal (a bound held) by reason.
fn refused(reason: &'static str) {
    metrics::counter!(m::HTTP_REFUSED, "reason" => reason).increment(1);
}

/// What the interface holds right now; for operators' debugging and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Map bodies and merge patches rendered to JSON since start.
    pub renderings: u64,
    /// Open connections.
    pub connections: usize,
    /// Open update streams.
    pub streams: usize,
}

/// What the handlers share.
struct Shared {
    view: View,
    shutdown: CancellationToken,
    limits: HttpLimits,
    /// `""` (relative URIs) or the public URL without a trailing slash.
    base: String,
    streams: AtomicUsize,
    connections: AtomicUsize,
    /// Open update streams by their random control id.
    controls: dashmap::DashMap<String, Arc<StreamControl>>,
    /// The JSON body of each resource's current version, rendered once and
    /// shared by GETs and streams (12 MB takes ~50 ms to render).
    full: dashmap::DashMap<String, Arc<Rendering>>,
    /// Merge patches to each cost map's current version.
    patches: dashmap::DashMap<String, Arc<PatchSet>>,
    renderings: AtomicU64,
    queries: Arc<Semaphore>,
    connection_slots: Arc<Semaphore>,
}

/// One version's rendering. `OnceLock`, not a check-then-insert, so that
/// streams asking at the same moment render once between them.
struct Rendering {
    tag: Tag,
    body: OnceLock<Bytes>,
}

/// The merge patches from a few base versions to version `to`.
struct PatchSet {
    to: Tag,
    bases: Mutex<Vec<(Tag, Arc<OnceLock<Bytes>>)>>,
}

impl Shared {
    fn rendered(&self, render: impl FnOnce() -> String, kind: &'static str) -> Bytes {
        self.renderings.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::HTTP_RENDERINGS, "kind" => kind).increment(1);
        let body = Bytes::from(render());
        // SSE data lines cannot hold a raw newline; compact JSON has none.
        debug_assert!(!body.contains(&b'\n'), "rendered JSON must be on one line");
        body
    }

    /// The JSON body of version `tag` of `id`, rendered at most once.
    fn full_body(&self, id: &str, tag: Tag, render: impl FnOnce() -> String) -> Bytes {
        let entry = {
            let mut e =
                self.full.entry(id.to_owned()).or_insert_with(|| Arc::new(Rendering { tag, body: OnceLock::new() }));
            if e.tag != tag {
                *e = Arc::new(Rendering { tag, body: OnceLock::new() });
            }
            e.clone()
        };
        entry.body.get_or_init(|| self.rendered(render, "full")).clone()
    }

    /// The merge patch from `prev` to `cur`, rendered at most once; `None`
    /// when [`PATCH_BASES`] other bases are held (send the full map).
    fn patch_body(&self, prev: &CostMapVersion, cur: &CostMapVersion) -> Option<Bytes> {
        let set = {
            let mut e = self
                .patches
                .entry(cur.resource_id.to_string())
                .or_insert_with(|| Arc::new(PatchSet { to: cur.tag, bases: Mutex::new(Vec::new()) }));
            if e.to != cur.tag {
                *e = Arc::new(PatchSet { to: cur.tag, bases: Mutex::new(Vec::new()) });
            }
            e.clone()
        };
        let cell = {
            let mut bases = set.bases.lock().unwrap_or_else(|e| e.into_inner());
            match bases.iter().find(|(t, _)| *t == prev.tag) {
                Some((_, c)) => c.clone(),
                None if bases.len() >= PATCH_BASES => return None,
                None => {
                    let c = Arc::new(OnceLock::new());
                    bases.push((prev.tag, c.clone()));
                    c
                }
            }
        };
        Some(
            cell.get_or_init(|| {
                self.rendered(|| altocast_proto::model::json::cost_map_merge_patch(&prev.map, &cur.map), "patch")
            })
            .clone(),
        )
    }
}

/// The RFC 7285 HTTP/JSON interface over a view.
#[derive(Clone)]
pub struct AltoHttp {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AltoHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AltoHttp").field("limits", &self.shared.limits).field("stats", &self.stats()).finish()
    }
}

impl AltoHttp {
    /// The interface over `view`; update streams and connections end on
    /// `shutdown`.
    pub fn new(view: View, limits: HttpLimits, shutdown: CancellationToken) -> AltoHttp {
        let base = limits.public_url.as_deref().unwrap_or("").trim_end_matches('/').to_owned();
        let shared = Arc::new(Shared {
            view,
            shutdown,
            base,
            streams: Default::default(),
            connections: Default::default(),
            controls: Default::default(),
            full: Default::default(),
            patches: Default::default(),
            renderings: Default::default(),
            queries: Arc::new(Semaphore::new(limits.max_queries)),
            connection_slots: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
        });
        AltoHttp { shared }
    }

    /// What it holds now.
    pub fn stats(&self) -> Stats {
        Stats {
            renderings: self.shared.renderings.load(Ordering::Relaxed),
            connections: self.shared.connections.load(Ordering::Relaxed),
            streams: self.shared.streams.load(Ordering::Relaxed),
        }
    }

    /// The routes. Serve them with the peer address as `ConnectInfo` (as
    /// [`AltoHttp::serve`] does): the endpoint cost service needs it.
    pub fn router(&self) -> Router {
        let shared = &self.shared;
        let queries = Router::new()
            .route("/directory", get(directory))
            .route("/networkmap/{id}", get(network_map))
            .route("/costmap/{id}", get(cost_map).post(filtered_cost_map))
            .route("/endpointcost", post(endpoint_cost))
            .layer(axum::middleware::from_fn_with_state(shared.clone(), read_body))
            .layer(axum::middleware::from_fn_with_state(shared.clone(), time_limit))
            // Outermost: a query waiting for its body holds its slot, so
            // buffered bodies count against the limit too.
            .layer(axum::middleware::from_fn_with_state(shared.clone(), query_slot));
        // Update streams are long-lived by design: no request time limit.
        Router::new()
            .route("/updates", post(update_stream))
            .route("/updates/control/{id}", post(stream_control))
            .layer(axum::middleware::from_fn_with_state(shared.clone(), read_body))
            .merge(queries)
            .layer(DefaultBodyLimit::max(shared.limits.max_request_bytes))
            .with_state(shared.clone())
    }

    /// Serves the interface on `listener` until shutdown, then waits for the
    /// open connections to end (update streams end on shutdown; idle
    /// connections are closed at once).
    pub async fn serve(self, listener: TcpListener) -> anyhow::Result<()> {
        let router = self.router();
        let shared = self.shared;
        let mut http = hyper::server::conn::http1::Builder::new();
        // Header timing is ours (`Activity`): hyper's header timer would also
        // run while a keep-alive connection waits, conflating it with idle.
        http.header_read_timeout(None).max_headers(64);
        let conns = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                _ = shared.shutdown.cancelled() => break,
                a = listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept:
                    // pause briefly instead of spinning.
                    warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = shared.connection_slots.clone().try_acquire_owned() else {
                refused("connections");
                drop(tcp);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            conns.spawn(connection(shared.clone(), router.clone(), http.clone(), tcp, peer, slot));
        }
        conns.close();
        conns.wait().await;
        Ok(())
    }
}

/// Serves the interface over `view` on `listener` until `shutdown`.
pub async fn serve(
    view: View,
    listener: TcpListener,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    AltoHttp::new(view, limits, shutdown).serve(listener).await
}

/// Marks "no such moment" in [`Activity`]'s millisecond fields.
const NEVER: u64 = u64::MAX;
/// Timeouts beyond this are treated as this: `Instant` arithmetic panics on
/// overflow, and a day is no limit anyway.
const TIMER_CAP: Duration = Duration::from_secs(86_400);

/// What one connection is doing, for its timeouts: times in ms since `start`.
struct Activity {
    start: Instant,
    /// First byte read since the last request ended (a new request's head).
    first_byte: AtomicU64,
    /// When the last request ended (0: the connection's start).
    idle_since: AtomicU64,
    /// Since when a write has been blocked.
    write_blocked: AtomicU64,
    /// Requests whose response has not been fully sent.
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            first_byte: AtomicU64::new(NEVER),
            idle_since: AtomicU64::new(0),
            write_blocked: AtomicU64::new(NEVER),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// The deadlines that apply now, each with the refusal reason it counts.
    fn deadlines(&self, l: &HttpLimits) -> impl Iterator<Item = (u64, &'static str)> {
        let ms = |d: Duration| d.min(TIMER_CAP).as_millis() as u64;
        let since = |t: u64, d: Duration| (t != NEVER).then(|| t.saturating_add(ms(d)));
        let idle = self.in_flight.load(Ordering::Acquire) == 0;
        let first = self.first_byte.load(Ordering::Acquire);
        let stalled = since(self.write_blocked.load(Ordering::Acquire), l.write_timeout).map(|t| (t, "write_timeout"));
        let head = since(first, l.header_timeout).filter(|_| idle).map(|t| (t, "header_timeout"));
        let wait = since(self.idle_since.load(Ordering::Acquire), l.idle_timeout)
            .filter(|_| idle && first == NEVER)
            .map(|t| (t, "idle_timeout"));
        stalled.into_iter().chain(head).chain(wait)
    }

    /// When to look again: the earliest deadline, and at least every
    /// smallest timeout (a request in flight may end meanwhile).
    fn next_check(&self, l: &HttpLimits) -> Instant {
        let every = l.header_timeout.min(l.idle_timeout).min(l.write_timeout).min(TIMER_CAP);
        let now = self.now_ms();
        let at = self.deadlines(l).map(|(t, _)| t).min().unwrap_or(NEVER).min(now + every.as_millis() as u64);
        self.start + Duration::from_millis(at)
    }

    /// The reason to close the connection now, if a deadline has passed.
    fn expired(&self, l: &HttpLimits) -> Option<&'static str> {
        let now = self.now_ms();
        self.deadlines(l).find(|(t, _)| *t <= now).map(|(_, r)| r)
    }
}

/// A request in flight on a connection, until its response body is dropped
/// (hyper drops it once it is sent or the connection goes).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(act: &Arc<Activity>) -> InFlight {
        act.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(act.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.first_byte.store(NEVER, Ordering::Release);
        a.idle_since.store(a.now_ms(), Ordering::Release);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that ends its request's [`InFlight`] when dropped.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The connection's socket, noting reads and blocked writes in [`Activity`].
struct Watched {
    io: TcpStream,
    act: Arc<Activity>,
}

impl Watched {
    fn wrote<T>(&self, r: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if r.is_pending() {
            let _ =
                self.act.write_blocked.compare_exchange(NEVER, self.act.now_ms(), Ordering::AcqRel, Ordering::Relaxed);
        } else {
            self.act.write_blocked.store(NEVER, Ordering::Release);
        }
        r
    }
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let now = self.act.now_ms();
            let _ = self.act.first_byte.compare_exchange(NEVER, now, Ordering::AcqRel, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.wrote(r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        // Vectored writes let hyper send the shared map bodies without copying.
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.wrote(r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Holds an open-connection count and gauge for the connection's life.
struct ConnectionOpen(Arc<Shared>);

impl ConnectionOpen {
    fn new(shared: &Arc<Shared>) -> ConnectionOpen {
        let n = shared.connections.fetch_add(1, Ordering::AcqRel) + 1;
        metrics::gauge!(m::HTTP_CONNECTIONS).set(n as f64);
        ConnectionOpen(shared.clone())
    }
}

impl Drop for ConnectionOpen {
    fn drop(&mut self) {
        let n = self.0.connections.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::gauge!(m::HTTP_CONNECTIONS).set(n as f64);
    }
}

/// Serves one connection until it ends, a timeout closes it, or shutdown.
async fn connection(
    shared: Arc<Shared>,
    router: Router,
    http: hyper::server::conn::http1::Builder,
    tcp: TcpStream,
    peer: SocketAddr,
    _slot: OwnedSemaphorePermit,
) {
    let _open = ConnectionOpen::new(&shared);
    let act = Arc::new(Activity::new());
    let svc = {
        let act = act.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            let in_flight = InFlight::start(&act);
            // The peer address answers an endpoint cost request without sources.
            req.extensions_mut().insert(ConnectInfo(peer));
            let mut router = router.clone();
            async move {
                use tower_service::Service;
                type Req = hyper::Request<hyper::body::Incoming>;
                // A Router is always ready and never fails (`Infallible`).
                if let Err(e) =
                    futures::future::poll_fn(|cx| <Router as Service<Req>>::poll_ready(&mut router, cx)).await
                {
                    match e {}
                }
                let resp = match router.call(req).await {
                    Ok(r) => r,
                    Err(e) => match e {},
                };
                Ok::<_, Infallible>(resp.map(|body| Body::new(Tracked { body, _in_flight: in_flight })))
            }
        })
    };
    let io = hyper_util::rt::TokioIo::new(Watched { io: tcp, act: act.clone() });
    let conn = http.serve_connection(io, svc);
    tokio::pin!(conn);
    let limits = &shared.limits;
    let mut draining = false;
    loop {
        let check = act.next_check(limits);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    // Clients going away mid-request is routine, not an error.
                    debug!(error = %e, "HTTP connection ended");
                }
                return;
            }
            _ = shared.shutdown.cancelled(), if !draining => {
                if act.in_flight.load(Ordering::Acquire) == 0 {
                    return;
                }
                // Let the response in flight finish (streams end on shutdown).
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(check) => {
                if let Some(reason) = act.expired(limits) {
                    refused(reason);
                    debug!(reason, "closing an HTTP connection");
                    return;
                }
            }
        }
    }
}

/// Reads the whole request body within the body timeout and size limit, so
/// handlers get it buffered and no handler waits on a slow client.
async fn read_body(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let max = shared.limits.max_request_bytes;
    let (parts, body) = req.into_parts();
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return AltoError::too_large(max).into_response();
    }
    let read = tokio::time::timeout(shared.limits.body_timeout, http_body_util::Limited::new(body, max).collect());
    let bytes = match read.await {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return AltoError::too_large(max).into_response();
        }
        Ok(Err(e)) => return AltoError::syntax(format!("reading the request body: {e}")).into_response(),
        Err(_) => {
            let secs = shared.limits.body_timeout.as_secs_f64();
            return AltoError::refusal(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!("the request body did not arrive within {secs} s"),
            )
            .into_response();
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

async fn time_limit(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let limit = shared.limits.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => AltoError::refusal(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("the request took longer than {} s", limit.as_secs_f64()),
        )
        .into_response(),
    }
}

/// Runs a query (a POST: filtered cost map, endpoint cost) only if one of the
/// `max_queries` slots is free; otherwise 503 at once rather than queueing
/// bodies and answers in memory.
async fn query_slot(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Ok(_slot) = shared.queries.clone().try_acquire_owned() else {
        let n = shared.limits.max_queries;
        return AltoError::refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "queries",
            format!("{n} queries are being answered; try again shortly"),
        )
        .into_response();
    };
    next.run(req).await
}

/// An RFC 7285 §8.5 error.
#[derive(Debug)]
struct AltoError {
    status: StatusCode,
    meta: Value,
    /// The bound this refusal held, counted when it is sent.
    reason: Option<&'static str>,
}

impl AltoError {
    fn new(status: StatusCode, meta: Value) -> Self {
        AltoError { status, meta, reason: None }
    }
    fn syntax(msg: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, json!({"code": "E_SYNTAX", "syntax-error": msg.to_string()}))
    }
    fn missing(field: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, json!({"code": "E_MISSING_FIELD", "field": field}))
    }
    fn field_type(field: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, json!({"code": "E_INVALID_FIELD_TYPE", "field": field}))
    }
    fn value(field: &str, value: impl Into<Value>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            json!({"code": "E_INVALID_FIELD_VALUE", "field": field, "value": value.into()}),
        )
    }
    fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            json!({"code": "E_INVALID_FIELD_VALUE", "field": "resource-id", "value": what}),
        )
    }
    fn unavailable(msg: String) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, json!({"code": "E_SERVICE_UNAVAILABLE", "message": msg}))
    }
    /// A request refused by a bound: `status`, counted under `reason`.
    fn refusal(status: StatusCode, reason: &'static str, msg: String) -> Self {
        let code = if status == StatusCode::SERVICE_UNAVAILABLE { "E_SERVICE_UNAVAILABLE" } else { "E_SYNTAX" };
        let key = if code == "E_SYNTAX" { "syntax-error" } else { "message" };
        AltoError { status, meta: json!({"code": code, key: msg}), reason: Some(reason) }
    }
    fn too_large(max: usize) -> Self {
        Self::refusal(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("the request body exceeds {max} bytes"))
    }
    /// `self`, counted under `reason` when sent.
    fn counted(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }
}

impl IntoResponse for AltoError {
    fn into_response(self) -> Response {
        if let Some(reason) = self.reason {
            refused(reason);
        }
        let body = json!({"meta": self.meta}).to_string();
        (self.status, [(header::CONTENT_TYPE, ERROR_TYPE)], body).into_response()
    }
}

/// A fresh answer with its media type and a max-age up to `expires_at_ms`.
fn fresh(media_type: &'static str, expires_at_ms: i64, body: impl Into<Body>) -> Result<Response, AltoError> {
    let now = altocast_client::now_ms();
    if expires_at_ms < now {
        return Err(AltoError::unavailable(format!(
            "the verified data expired {} s ago and the upstream has sent nothing newer",
            (now - expires_at_ms) / 1000
        )));
    }
    let max_age = HeaderValue::from_str(&format!("max-age={}", (expires_at_ms - now) / 1000))
        .unwrap_or(HeaderValue::from_static("no-cache"));
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static(media_type)), (header::CACHE_CONTROL, max_age)], body.into())
        .into_response())
}

fn cost_type_json(cm: &CostMap) -> Value {
    json!({"cost-mode": cm.cost_type().mode.as_str(), "cost-metric": cm.cost_type().metric})
}

/// The RFC 7285 name of a cost type, as listed in the IRD.
fn cost_type_name(cm: &CostMap) -> String {
    format!("{}-{}", cm.cost_type().mode.as_str(), cm.cost_type().metric)
}

async fn directory(State(shared): State<Arc<Shared>>) -> Result<Response, AltoError> {
    let st = shared.view.load();
    // RFC 7285 clients resolve relative URIs against the IRD's own URI; an
    // absolute one comes only from configuration, never from `Host`, which
    // the client (or anyone on the path) chooses.
    let base = shared.base.as_str();
    let mut cost_types = Map::new();
    let mut resources = Map::new();
    let mut nms: Vec<_> = st.network_maps.values().collect();
    nms.sort_by(|a, b| a.resource_id.cmp(&b.resource_id));
    for nm in &nms {
        resources.insert(
            nm.resource_id.to_string(),
            json!({"uri": format!("{base}/networkmap/{}", nm.resource_id), "media-type": altocast_proto::model::json::NETWORK_MAP_MEDIA_TYPE}),
        );
    }
    let mut cms: Vec<_> = st.cost_maps.values().collect();
    cms.sort_by(|a, b| a.resource_id.cmp(&b.resource_id));
    for cm in &cms {
        let name = cost_type_name(&cm.map);
        cost_types.insert(name.clone(), cost_type_json(&cm.map));
        let uses = vec![cm.network_map.resource_id.to_string()];
        resources.insert(
            cm.resource_id.to_string(),
            json!({"uri": format!("{base}/costmap/{}", cm.resource_id), "media-type": altocast_proto::model::json::COST_MAP_MEDIA_TYPE,
                   "capabilities": {"cost-type-names": [name]}, "uses": uses}),
        );
        resources.insert(
            format!("{}-filtered", cm.resource_id),
            json!({"uri": format!("{base}/costmap/{}", cm.resource_id), "media-type": altocast_proto::model::json::COST_MAP_MEDIA_TYPE,
                   "accepts": FILTER_TYPE, "capabilities": {"cost-type-names": [name], "cost-constraints": false}, "uses": uses}),
        );
    }
    if !cms.is_empty() {
        let names: Vec<String> = cost_types.keys().cloned().collect();
        resources.insert(
            "endpoint-cost".into(),
            json!({"uri": format!("{base}/endpointcost"), "media-type": ECS_TYPE, "accepts": ECS_PARAMS_TYPE,
                   "capabilities": {"cost-type-names": names}}),
        );
    }
    if !nms.is_empty() || !cms.is_empty() {
        // RFC 8895 §9: the update stream service, with merge patches for cost maps.
        let uses: Vec<String> = nms
            .iter()
            .map(|n| n.resource_id.to_string())
            .chain(cms.iter().map(|c| c.resource_id.to_string()))
            .collect();
        let patches: Map<String, Value> = cms
            .iter()
            .map(|c| (c.resource_id.to_string(), Value::from(altocast_proto::model::json::MERGE_PATCH_MEDIA_TYPE)))
            .collect();
        resources.insert(
            "update-stream".into(),
            json!({"uri": format!("{base}/updates"), "media-type": "text/event-stream",
                   "accepts": "application/alto-updatestreamparams+json", "uses": uses,
                   "capabilities": {"incremental-change-media-types": patches}}),
        );
    }
    let mut meta = Map::new();
    meta.insert("cost-types".into(), Value::Object(cost_types));
    if let Some(nm) = nms.first() {
        meta.insert("default-alto-network-map".into(), nm.resource_id.to_string().into());
    }
    if let Some(altocast) = altocast_meta(&shared.limits.grpc_urls, shared.view.directory().as_deref()) {
        meta.insert("altocast".into(), altocast);
    }
    let body = json!({"meta": meta, "resources": resources}).to_string();
    Ok(([(header::CONTENT_TYPE, IRD_TYPE)], body).into_response())
}

/// The IRD's `meta.altocast` member: how to subscribe to this node over gRPC
/// and which origin and root its verified directory names (what a tracker
/// that discovered this IRD needs to pick the root it trusts). `grpc` only
/// from configuration; `origin-id` and `root-key-id` only from the verified
/// directory. `None` when there is nothing to say.
fn altocast_meta(grpc: &[String], dir: Option<&altocast_client::DirectoryInfo>) -> Option<Value> {
    let mut m = Map::new();
    if !grpc.is_empty() {
        m.insert("grpc".into(), json!(grpc));
    }
    if let Some(d) = dir {
        m.insert("origin-id".into(), d.origin_id.clone().into());
        if let Some(root) = &d.root_key_id {
            m.insert("root-key-id".into(), root.clone().into());
        }
    }
    (!m.is_empty()).then_some(Value::Object(m))
}

/// A full map: fresh-checked, from the shared rendering, with the tag as its
/// ETag (`If-None-Match` with it gets 304 Not Modified).
fn full_map(
    shared: &Shared,
    headers: &HeaderMap,
    media_type: &'static str,
    (id, tag, expires_at_ms): (&str, Tag, i64),
    render: impl FnOnce() -> String,
) -> Result<Response, AltoError> {
    let etag = format!("\"{tag}\"");
    let mut resp = fresh(media_type, expires_at_ms, Bytes::new())?;
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(resp);
    }
    *resp.body_mut() = Body::from(shared.full_body(id, tag, render));
    Ok(resp)
}

async fn network_map(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AltoError> {
    let st = shared.view.load();
    let nm = st.network_maps.get(id.as_str()).ok_or_else(|| AltoError::not_found(&id))?;
    full_map(
        &shared,
        &headers,
        altocast_proto::model::json::NETWORK_MAP_MEDIA_TYPE,
        (&id, nm.tag, nm.expires_at_ms),
        || altocast_proto::model::json::network_map_json(&nm.resource_id, &nm.map),
    )
}

fn cost_map_of<'a>(st: &'a ViewState, id: &str) -> Result<&'a Arc<CostMapVersion>, AltoError> {
    st.cost_maps.get(id).ok_or_else(|| AltoError::not_found(id))
}

fn expiry(cm: &CostMapVersion) -> i64 {
    cm.expires_at_ms.min(cm.network_map.expires_at_ms)
}

async fn cost_map(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AltoError> {
    let st = shared.view.load();
    let cm = cost_map_of(&st, &id)?;
    full_map(&shared, &headers, altocast_proto::model::json::COST_MAP_MEDIA_TYPE, (&id, cm.tag, expiry(cm)), || {
        altocast_proto::model::json::cost_map_json(&cm.map)
    })
}

fn parse_body(body: &[u8]) -> Result<Map<String, Value>, AltoError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(AltoError::syntax("the request body must be a JSON object")),
        Err(e) => Err(AltoError::syntax(e)),
    }
}

/// The `cost-type` a request names (RFC 7285 §10.7).
#[derive(Debug, Clone, PartialEq)]
struct CostTypeReq {
    mode: String,
    metric: String,
}

impl CostTypeReq {
    fn parse(req: &Map<String, Value>) -> Result<CostTypeReq, AltoError> {
        let ct = match req.get("cost-type") {
            None => return Err(AltoError::missing("cost-type")),
            Some(Value::Object(ct)) => ct,
            Some(_) => return Err(AltoError::field_type("cost-type")),
        };
        let field = |name: &str| match ct.get(name) {
            None => Err(AltoError::missing(&format!("cost-type/{name}"))),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(AltoError::field_type(&format!("cost-type/{name}"))),
        };
        Ok(CostTypeReq { mode: field("cost-mode")?, metric: field("cost-metric")? })
    }

    /// Checks it against the map's (§11.3.2.3: a map has exactly one).
    fn check(&self, cm: &CostMap) -> Result<(), AltoError> {
        if self.mode != cm.cost_type().mode.as_str() {
            return Err(AltoError::value("cost-type/cost-mode", self.mode.as_str()));
        }
        if self.metric != cm.cost_type().metric {
            return Err(AltoError::value("cost-type/cost-metric", self.metric.as_str()));
        }
        Ok(())
    }
}

/// A list of strings at `obj[key]`; absent = `None`.
fn string_list<'a>(obj: &'a Map<String, Value>, at: &str, key: &str) -> Result<Option<Vec<&'a str>>, AltoError> {
    let name = if at.is_empty() { key.to_owned() } else { format!("{at}/{key}") };
    match obj.get(key) {
        None => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().ok_or_else(|| AltoError::field_type(&name)))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(AltoError::field_type(&name)),
    }
}

/// A filtered cost map request (RFC 7285 §11.3.2.3), validated.
#[derive(Debug)]
struct FilterRequest {
    cost_type: CostTypeReq,
    /// Absent or empty: all PIDs.
    srcs: Option<Vec<String>>,
    dsts: Option<Vec<String>>,
}

impl FilterRequest {
    fn parse(body: &[u8]) -> Result<FilterRequest, AltoError> {
        let req = parse_body(body)?;
        let cost_type = CostTypeReq::parse(&req)?;
        let empty = Map::new();
        let pids = match req.get("pids") {
            None => &empty,
            Some(Value::Object(p)) => p,
            Some(_) => return Err(AltoError::field_type("pids")),
        };
        let owned =
            |l: Option<Vec<&str>>| l.filter(|l| !l.is_empty()).map(|l| l.into_iter().map(String::from).collect());
        Ok(FilterRequest {
            cost_type,
            srcs: owned(string_list(pids, "pids", "srcs")?),
            dsts: owned(string_list(pids, "pids", "dsts")?),
        })
    }
}

async fn filtered_cost_map(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, AltoError> {
    let st = shared.view.load();
    let cm = cost_map_of(&st, &id)?;
    let req = FilterRequest::parse(&body)?;
    req.cost_type.check(&cm.map)?;
    // PIDs the map does not have are left out of the answer, not an error.
    let indices = |names: Option<Vec<String>>| -> Option<Vec<u32>> {
        let mut ix: Vec<u32> = names?.iter().filter_map(|n| cm.map.index_of(n)).collect();
        ix.sort_unstable();
        ix.dedup();
        Some(ix)
    };
    let (srcs, dsts) = (indices(req.srcs), indices(req.dsts));
    let body = altocast_proto::model::json::cost_map_json_filtered(&cm.map, srcs.as_deref(), dsts.as_deref());
    fresh(altocast_proto::model::json::COST_MAP_MEDIA_TYPE, expiry(cm), body)
}

/// Parses an RFC 7285 §10.4.3 typed endpoint address ("ipv4:192.0.2.1").
fn typed_address(s: &str) -> Option<IpAddr> {
    let (family, addr) = s.split_once(':')?;
    match family {
        "ipv4" => addr.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
        "ipv6" => addr.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6),
        _ => None,
    }
}

/// An endpoint cost request (RFC 7285 §11.5.1.3), validated and within the
/// endpoint and pair limits. Repeated addresses are asked once (the answer
/// is a JSON object: one key each).
#[derive(Debug)]
struct EcsRequest {
    cost_type: CostTypeReq,
    /// Empty: the asking client's own address.
    srcs: Vec<(String, IpAddr)>,
    dsts: Vec<(String, IpAddr)>,
}

impl EcsRequest {
    fn parse(body: &[u8], limits: &HttpLimits) -> Result<EcsRequest, AltoError> {
        let req = parse_body(body)?;
        let cost_type = CostTypeReq::parse(&req)?;
        let eps = match req.get("endpoints") {
            None => return Err(AltoError::missing("endpoints")),
            Some(Value::Object(e)) => e,
            Some(_) => return Err(AltoError::field_type("endpoints")),
        };
        let srcs = string_list(eps, "endpoints", "srcs")?.unwrap_or_default();
        let dsts = string_list(eps, "endpoints", "dsts")?.ok_or_else(|| AltoError::missing("endpoints/dsts"))?;
        let max = limits.max_endpoints;
        if srcs.len() > max || dsts.len() > max {
            return Err(AltoError::value("endpoints", format!("at most {max} endpoints per side")).counted("endpoints"));
        }
        let max = limits.max_pairs;
        if srcs.len().max(1).saturating_mul(dsts.len()) > max {
            return Err(
                AltoError::value("endpoints", format!("at most {max} source-destination pairs")).counted("pairs")
            );
        }
        let parse = |side: &str, list: &[&str]| -> Result<Vec<(String, IpAddr)>, AltoError> {
            let mut seen = HashSet::new();
            let mut out = Vec::with_capacity(list.len());
            for s in list {
                let a = typed_address(s).ok_or_else(|| AltoError::value(&format!("endpoints/{side}"), *s))?;
                if seen.insert(*s) {
                    out.push((s.to_string(), a));
                }
            }
            Ok(out)
        };
        Ok(EcsRequest { cost_type, srcs: parse("srcs", &srcs)?, dsts: parse("dsts", &dsts)? })
    }
}

/// The endpoint cost map body, written straight into one buffer: no JSON
/// tree of all the pairs, which costs several times the answer's size.
fn endpoint_cost_json(cm: &CostMapVersion, srcs: &[(String, IpAddr)], dsts: &[(String, IpAddr)]) -> String {
    let nm = &cm.network_map.map;
    let pid = |a: IpAddr| nm.lookup(a).and_then(|p| cm.map.index_of(p.as_str()));
    let dst_pids: Vec<Option<u32>> = dsts.iter().map(|(_, a)| pid(*a)).collect();
    let mut out = String::with_capacity(128 + srcs.len() * (16 + dsts.len() * 32));
    out.push_str("{\"meta\":{\"cost-type\":{\"cost-mode\":");
    push_json_str(&mut out, cm.map.cost_type().mode.as_str());
    out.push_str(",\"cost-metric\":");
    push_json_str(&mut out, &cm.map.cost_type().metric);
    out.push_str("}},\"endpoint-cost-map\":{");
    let mut first_row = true;
    for (sname, saddr) in srcs {
        let Some(s) = pid(*saddr) else { continue };
        if !first_row {
            out.push(',');
        }
        first_row = false;
        push_json_str(&mut out, sname);
        out.push_str(":{");
        let mut first = true;
        for ((dname, _), d) in dsts.iter().zip(&dst_pids) {
            if let Some(v) = d.and_then(|d| cm.map.cost_at(s, d)) {
                if !first {
                    out.push(',');
                }
                first = false;
                push_json_str(&mut out, dname);
                out.push(':');
                push_cost(&mut out, v);
            }
        }
        out.push('}');
    }
    out.push_str("}}");
    out
}

async fn endpoint_cost(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Result<Response, AltoError> {
    let st = shared.view.load();
    let mut req = EcsRequest::parse(&body, &shared.limits)?;
    // The cost map with the requested cost type (the first by id if several).
    let mut cms: Vec<_> = st.cost_maps.values().collect();
    cms.sort_by(|a, b| a.resource_id.cmp(&b.resource_id));
    let first_err = match cms.first() {
        None => return Err(AltoError::unavailable("no cost map has been received from upstream yet".into())),
        Some(cm) => req.cost_type.check(&cm.map).err(),
    };
    let cm = match cms.iter().find(|cm| req.cost_type.check(&cm.map).is_ok()) {
        Some(cm) => *cm,
        None => return Err(first_err.unwrap_or_else(|| AltoError::missing("cost-type"))),
    };
    // No sources means the client's own address (RFC 7285 §11.5.1.3).
    if req.srcs.is_empty() {
        let own = match peer.ip() {
            IpAddr::V4(a) => format!("ipv4:{a}"),
            IpAddr::V6(a) => format!("ipv6:{a}"),
        };
        req.srcs.push((own, peer.ip()));
    }
    fresh(ECS_TYPE, expiry(cm), endpoint_cost_json(cm, &req.srcs, &req.dsts))
}

/// An update stream request (RFC 8895 §6.5), validated: client ids are
/// resource-id shaped, and no resource is named twice (it would be sent
/// twice for nothing).
#[derive(Debug)]
struct StreamRequest {
    /// (client id, resource id, incremental changes wanted), by client id.
    add: Vec<(String, String, bool)>,
}

impl StreamRequest {
    fn parse(body: &[u8], max_resources: usize) -> Result<StreamRequest, AltoError> {
        let req = parse_body(body)?;
        let add = match req.get("add") {
            None => return Err(AltoError::missing("add")),
            Some(Value::Object(a)) => a,
            Some(_) => return Err(AltoError::field_type("add")),
        };
        if add.is_empty() {
            return Err(AltoError::value("add", "at least one resource"));
        }
        if add.len() > max_resources {
            return Err(AltoError::value("add", format!("at most {max_resources} resources per stream"))
                .counted("stream_resources"));
        }
        let mut out = Vec::with_capacity(add.len());
        let mut named: HashSet<&str> = HashSet::new();
        for (client_id, spec) in add {
            let at = format!("add/{client_id}");
            altocast_proto::ResourceId::new(client_id).map_err(|_| AltoError::value("add", client_id.as_str()))?;
            let Value::Object(spec) = spec else { return Err(AltoError::field_type(&at)) };
            let resource_id = match spec.get("resource-id") {
                Some(Value::String(r)) => r,
                Some(_) => return Err(AltoError::field_type(&format!("{at}/resource-id"))),
                None => return Err(AltoError::missing(&format!("{at}/resource-id"))),
            };
            if !named.insert(resource_id) {
                return Err(
                    AltoError::value(&format!("{at}/resource-id"), resource_id.as_str()).counted("duplicate_resource")
                );
            }
            let incremental = match spec.get("incremental-changes") {
                None => true,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(AltoError::field_type(&format!("{at}/incremental-changes"))),
            };
            out.push((client_id.clone(), resource_id.clone(), incremental));
        }
        Ok(StreamRequest { add: out })
    }
}

/// A stream control request (RFC 8895 §7): the client ids to remove.
#[derive(Debug)]
struct ControlRequest {
    remove: Vec<String>,
}

impl ControlRequest {
    fn parse(body: &[u8]) -> Result<ControlRequest, AltoError> {
        let req = parse_body(body)?;
        if req.contains_key("add") {
            return Err(AltoError::value("add", "adding to an open stream is not supported; open a new stream"));
        }
        let remove = string_list(&req, "", "remove")?.ok_or_else(|| AltoError::missing("remove"))?;
        Ok(ControlRequest { remove: remove.into_iter().map(String::from).collect() })
    }
}

/// What a stream's control URI changes: the client ids it still follows.
/// Removing shrinks this set, so it never outgrows the stream's request.
struct StreamControl {
    following: Mutex<HashSet<String>>,
    changed: tokio::sync::Notify,
}

/// One followed resource of an update stream.
struct Followed {
    client_id: String,
    resource_id: String,
    incremental: bool,
    /// `event: MEDIA,CLIENT-ID\ndata: ` for a full map and for a patch,
    /// built once: the only per-stream bytes of an event.
    full_prefix: Bytes,
    patch_prefix: Bytes,
    /// The cost map last sent, to diff the next one against.
    last: Option<Arc<CostMapVersion>>,
    /// The seq last sent (0: nothing yet).
    seq: u64,
}

fn event_prefix(media_type: &str, client_id: &str) -> Bytes {
    Bytes::from(format!("event: {media_type},{client_id}\ndata: "))
}

/// An SSE event as three chunks: prefix, the shared body, the blank line.
type Event = [Bytes; 3];

fn event(prefix: &Bytes, body: Bytes) -> Event {
    [prefix.clone(), body, Bytes::from_static(b"\n\n")]
}

/// The event bringing `f` to the current state, if it is behind: the full
/// map, or (for a cost map followed incrementally) a merge patch from what it
/// last sent.
fn event_for(shared: &Shared, st: &ViewState, f: &mut Followed) -> Option<Event> {
    if let Some(nm) = st.network_maps.get(f.resource_id.as_str()) {
        if nm.seq == f.seq {
            return None;
        }
        f.seq = nm.seq;
        let body = shared.full_body(nm.resource_id.as_str(), nm.tag, || {
            altocast_proto::model::json::network_map_json(&nm.resource_id, &nm.map)
        });
        return Some(event(&f.full_prefix, body));
    }
    let cm = st.cost_maps.get(f.resource_id.as_str())?;
    if cm.seq == f.seq {
        return None;
    }
    f.seq = cm.seq;
    let patch = f.last.as_ref().filter(|_| f.incremental).and_then(|prev| shared.patch_body(prev, cm));
    let ev = match patch {
        Some(p) => event(&f.patch_prefix, p),
        None => event(
            &f.full_prefix,
            shared.full_body(cm.resource_id.as_str(), cm.tag, || altocast_proto::model::json::cost_map_json(&cm.map)),
        ),
    };
    f.last = Some(cm.clone());
    Some(ev)
}

/// Gives the stream slot and its control entry back when the stream ends
/// (its body is dropped: done, client gone, or shutdown).
struct StreamSlot(Arc<Shared>, String);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.controls.remove(&self.1);
        let n = self.0.streams.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::gauge!(m::HTTP_STREAMS).set(n as f64);
    }
}

/// An open update stream: what it follows and the event being sent.
struct UpdateStream {
    shared: Arc<Shared>,
    control: Arc<StreamControl>,
    followed: Vec<Followed>,
    /// Where the next look for a change starts, so a busy resource cannot
    /// starve the others on a slow reader.
    cursor: usize,
    /// Chunks of the event being sent (at most one event).
    pending: std::collections::VecDeque<Bytes>,
    changes: tokio::sync::broadcast::Receiver<altocast_client::view::Change>,
    _slot: StreamSlot,
}

impl UpdateStream {
    /// The next chunk to send, waiting for a change if nothing is behind;
    /// `None` ends the stream.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if let Some(c) = self.pending.pop_front() {
                return Some(c);
            }
            {
                let following = self.control.following.lock().unwrap_or_else(|e| e.into_inner());
                self.followed.retain(|f| following.contains(&f.client_id));
            }
            if self.followed.is_empty() || self.shared.shutdown.is_cancelled() {
                return None;
            }
            let st = self.shared.view.load();
            let n = self.followed.len();
            let found = (0..n)
                .map(|k| (self.cursor + k) % n)
                .find_map(|i| event_for(&self.shared, &st, &mut self.followed[i]).map(|e| (i, e)));
            if let Some((i, e)) = found {
                self.cursor = i + 1;
                self.pending.extend(e);
                continue;
            }
            let control = self.control.clone();
            tokio::select! {
                _ = self.shared.shutdown.cancelled() => return None,
                _ = control.changed.notified() => {}
                c = self.changes.recv() => {
                    // A lagged feed is fine: what changed is found by
                    // comparing with what was sent, not from the feed.
                    if let Err(tokio::sync::broadcast::error::RecvError::Closed) = c {
                        return None;
                    }
                }
                _ = tokio::time::sleep(KEEP_ALIVE) => return Some(Bytes::from_static(b":\n\n")),
            }
        }
    }
}

/// RFC 8895 §7 stream control: `{"remove": [CLIENT-ID, …]}` stops those
/// resources on the stream (all of them ends it). The id is the stream's
/// random control id; client ids it does not follow are refused. Adding
/// resources to an open stream is not offered: open another stream.
async fn stream_control(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, AltoError> {
    let ctl = shared.controls.get(&id).map(|c| c.clone()).ok_or_else(|| AltoError::not_found(&id))?;
    let req = ControlRequest::parse(&body)?;
    {
        let mut following = ctl.following.lock().unwrap_or_else(|e| e.into_inner());
        let unknown: Vec<&str> =
            req.remove.iter().filter(|c| !following.contains(c.as_str())).map(String::as_str).collect();
        if !unknown.is_empty() {
            return Err(AltoError::value("remove", unknown));
        }
        for c in &req.remove {
            following.remove(c);
        }
    }
    ctl.changed.notify_one();
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// RFC 8895 §6: `POST /updates` with `{"add": {CLIENT-ID: {"resource-id": ID,
/// "incremental-changes": BOOL}}}` opens a server-sent-event stream: a
/// control event, then each resource's full map, then its changes as they are
/// verified. The stream ends when the client goes, on shutdown, or when every
/// resource has been removed.
async fn update_stream(State(shared): State<Arc<Shared>>, body: Bytes) -> Result<Response, AltoError> {
    let req = StreamRequest::parse(&body, shared.limits.max_stream_resources)?;
    let st = shared.view.load();
    for (client_id, resource_id, _) in &req.add {
        if !st.network_maps.contains_key(resource_id.as_str()) && !st.cost_maps.contains_key(resource_id.as_str()) {
            return Err(AltoError::value(&format!("add/{client_id}/resource-id"), resource_id.as_str()));
        }
    }
    let max = shared.limits.max_streams;
    let n = shared.streams.fetch_add(1, Ordering::AcqRel);
    if n >= max {
        shared.streams.fetch_sub(1, Ordering::AcqRel);
        return Err(AltoError::refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "streams",
            format!("{max} update streams are open; try later"),
        ));
    }
    metrics::gauge!(m::HTTP_STREAMS).set((n + 1) as f64);
    // 128 random bits: a control URI cannot be guessed from another one.
    let id = format!("{:032x}", rand::random::<u128>());
    let control = Arc::new(StreamControl {
        following: Mutex::new(req.add.iter().map(|(c, _, _)| c.clone()).collect()),
        changed: tokio::sync::Notify::new(),
    });
    shared.controls.insert(id.clone(), control.clone());
    let followed = req
        .add
        .into_iter()
        .map(|(client_id, resource_id, incremental)| {
            let media = if st.network_maps.contains_key(resource_id.as_str()) {
                altocast_proto::model::json::NETWORK_MAP_MEDIA_TYPE
            } else {
                altocast_proto::model::json::COST_MAP_MEDIA_TYPE
            };
            Followed {
                full_prefix: event_prefix(media, &client_id),
                patch_prefix: event_prefix(altocast_proto::model::json::MERGE_PATCH_MEDIA_TYPE, &client_id),
                client_id,
                resource_id,
                incremental,
                last: None,
                seq: 0,
            }
        })
        .collect();
    let control_event = format!(
        "event: {CONTROL_TYPE}\ndata: {}\n\n",
        json!({"control-uri": format!("{}/updates/control/{id}", shared.base)})
    );
    let stream = UpdateStream {
        changes: shared.view.changes(),
        shared: shared.clone(),
        control,
        followed,
        cursor: 0,
        pending: [Bytes::from(control_event)].into(),
        _slot: StreamSlot(shared.clone(), id),
    };
    // Pulled by the connection: an event is produced only when the previous
    // one has been taken, so nothing piles up behind a slow reader.
    let body = futures::stream::unfold(stream, |mut s| async move {
        let chunk = s.next_chunk().await?;
        Some((Ok::<_, Infallible>(chunk), s))
    });
    Ok(([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], Body::from_stream(body))
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn expired_data_is_refused_and_fresh_data_carries_its_remaining_lifetime() {
        let now = altocast_client::now_ms();
        let err = fresh(IRD_TYPE, now - 5_000, "{}").expect_err("expired");
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.into_response().headers()[header::CONTENT_TYPE], ERROR_TYPE);
        let ok = fresh(IRD_TYPE, now + 30_500, "{}").expect("fresh");
        let max_age = ok.headers()[header::CACHE_CONTROL].to_str().expect("ascii").to_owned();
        assert!(max_age == "max-age=30" || max_age == "max-age=29", "{max_age}");
    }

    #[test]
    fn typed_addresses_follow_rfc7285() {
        assert_eq!(typed_address("ipv4:192.0.2.1"), Some("192.0.2.1".parse().expect("ip")));
        assert_eq!(typed_address("ipv6:2001:db8::1"), Some("2001:db8::1".parse().expect("ip")));
        assert_eq!(typed_address("192.0.2.1"), None);
        assert_eq!(typed_address("ipv4:2001:db8::1"), None);
        assert_eq!(typed_address("ipv5:1.2.3.4"), None);
    }

    const CT: &str = r#""cost-type":{"cost-mode":"numerical","cost-metric":"routingcost"}"#;

    #[test]
    fn a_stream_naming_one_resource_twice_is_refused_naming_the_client_id() {
        let body = r#"{"add":{"a":{"resource-id":"cm"},"b":{"resource-id":"cm"}}}"#;
        let e = StreamRequest::parse(body.as_bytes(), 64).expect_err("duplicate");
        assert_eq!(e.meta["field"], "add/b/resource-id");
        assert_eq!(e.reason, Some("duplicate_resource"));
        let many: Vec<String> = (0..65).map(|i| format!(r#""c{i}":{{"resource-id":"r{i}"}}"#)).collect();
        let e = StreamRequest::parse(format!(r#"{{"add":{{{}}}}}"#, many.join(",")).as_bytes(), 64).expect_err("65");
        assert_eq!((e.meta["field"].as_str(), e.reason), (Some("add"), Some("stream_resources")));
    }

    #[test]
    fn endpoint_cost_requests_over_the_pair_or_endpoint_limit_are_refused_naming_the_field() {
        let limits = HttpLimits { max_pairs: 6, max_endpoints: 4, ..HttpLimits::DEFAULT };
        let list = |n: usize| (0..n).map(|i| format!("\"ipv4:10.0.0.{i}\"")).collect::<Vec<_>>().join(",");
        let body =
            |s: usize, d: usize| format!(r#"{{{CT},"endpoints":{{"srcs":[{}],"dsts":[{}]}}}}"#, list(s), list(d));
        let e = EcsRequest::parse(body(3, 3).as_bytes(), &limits).expect_err("9 pairs");
        assert_eq!((e.meta["field"].as_str(), e.reason), (Some("endpoints"), Some("pairs")));
        let e = EcsRequest::parse(body(1, 5).as_bytes(), &limits).expect_err("5 endpoints");
        assert_eq!((e.meta["field"].as_str(), e.reason), (Some("endpoints"), Some("endpoints")));
        let ok = EcsRequest::parse(body(2, 3).as_bytes(), &limits).expect("6 pairs");
        assert_eq!((ok.srcs.len(), ok.dsts.len()), (2, 3));
        // A repeated address is asked (and answered) once.
        let dup = format!(r#"{{{CT},"endpoints":{{"dsts":["ipv4:10.0.0.1","ipv4:10.0.0.1"]}}}}"#);
        assert_eq!(EcsRequest::parse(dup.as_bytes(), &limits).expect("dup").dsts.len(), 1);
    }

    /// Every parse error is an RFC 7285 error object that names what is wrong.
    fn assert_named(e: &AltoError) {
        let code = e.meta["code"].as_str().unwrap_or_default();
        match code {
            "E_SYNTAX" => assert!(e.meta["syntax-error"].is_string(), "{:?}", e.meta),
            "E_MISSING_FIELD" | "E_INVALID_FIELD_TYPE" | "E_INVALID_FIELD_VALUE" => {
                assert!(e.meta["field"].is_string(), "{:?}", e.meta)
            }
            other => panic!("unexpected code {other:?}: {:?}", e.meta),
        }
        assert!(e.status.is_client_error(), "{}", e.status);
    }

    fn parse_all(body: &[u8]) {
        let limits = HttpLimits { max_pairs: 100, max_endpoints: 20, ..HttpLimits::DEFAULT };
        if let Err(e) = EcsRequest::parse(body, &limits) {
            assert_named(&e);
        }
        if let Err(e) = FilterRequest::parse(body) {
            assert_named(&e);
        }
        if let Err(e) = StreamRequest::parse(body, 8) {
            assert_named(&e);
        }
        if let Err(e) = ControlRequest::parse(body) {
            assert_named(&e);
        }
    }

    const VALID: [&str; 4] = [
        r#"{"cost-type":{"cost-mode":"numerical","cost-metric":"routingcost"},"endpoints":{"srcs":["ipv4:192.0.2.2"],"dsts":["ipv4:198.51.100.130","ipv6:2001:db8::1"]}}"#,
        r#"{"cost-type":{"cost-mode":"numerical","cost-metric":"routingcost"},"pids":{"srcs":["PID1"],"dsts":["PID2","PID3"]}}"#,
        r#"{"add":{"my-cm":{"resource-id":"default-cost-map"},"my-nm":{"resource-id":"default-network-map","incremental-changes":false}}}"#,
        r#"{"remove":["my-cm","my-nm"]}"#,
    ];

    proptest! {
        #[test]
        fn arbitrary_bytes_get_a_named_error_and_never_a_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            parse_all(&body);
        }

        #[test]
        fn mutated_valid_bodies_get_a_named_error_and_never_a_panic(
            which in 0..VALID.len(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 1..8),
        ) {
            let mut body = VALID[which].as_bytes().to_vec();
            for (at, op, byte) in edits {
                let i = at.index(body.len().max(1)).min(body.len());
                match op {
                    0 if i < body.len() => body[i] = byte,
                    1 => body.insert(i, byte),
                    _ if i < body.len() => { body.remove(i); }
                    _ => body.push(byte),
                }
            }
            parse_all(&body);
        }

        #[test]
        fn json_of_the_wrong_shape_gets_a_named_error(
            v in prop_oneof![
                Just(json!(null)), Just(json!(1)), Just(json!("x")), Just(json!([])),
                Just(json!({"cost-type": 1})), Just(json!({"cost-type": {"cost-mode": 1}})),
                Just(json!({"endpoints": {"dsts": [1]}})), Just(json!({"add": []})),
                Just(json!({"add": {"x": {"resource-id": 3}}})), Just(json!({"add": {"bad id!": {"resource-id": "r"}}})),
                Just(json!({"remove": "x"})), Just(json!({"remove": [1]})), Just(json!({"pids": []})),
            ],
        ) {
            parse_all(v.to_string().as_bytes());
        }
    }

    #[test]
    fn valid_bodies_parse() {
        let limits = HttpLimits::DEFAULT;
        assert_eq!(EcsRequest::parse(VALID[0].as_bytes(), &limits).expect("ecs").dsts.len(), 2);
        assert_eq!(FilterRequest::parse(VALID[1].as_bytes()).expect("filter").dsts.map(|d| d.len()), Some(2));
        assert_eq!(StreamRequest::parse(VALID[2].as_bytes(), 64).expect("stream").add.len(), 2);
        assert_eq!(ControlRequest::parse(VALID[3].as_bytes()).expect("control").remove.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn connection_deadlines_follow_the_request_cycle() {
        use tokio::time::advance;
        let s = Duration::from_secs;
        let l = HttpLimits { header_timeout: s(2), idle_timeout: s(5), write_timeout: s(3), ..HttpLimits::DEFAULT };
        let a = Arc::new(Activity::new());
        // A new connection waits for its first request: the idle timeout.
        advance(s(4)).await;
        assert_eq!(a.expired(&l), None);
        // Its first byte starts the header timeout (and the idle one no longer applies).
        a.first_byte.store(a.now_ms(), Ordering::Release);
        advance(s(1) + Duration::from_millis(500)).await;
        assert_eq!(a.expired(&l), None, "5.5 s: past idle, but a header is arriving");
        assert!(a.next_check(&l) <= Instant::now() + Duration::from_millis(500));
        advance(Duration::from_millis(500)).await;
        assert_eq!(a.expired(&l), Some("header_timeout"));
        // A request in flight (an update stream) has no header or idle deadline...
        let req = InFlight::start(&a);
        advance(s(100)).await;
        assert_eq!(a.expired(&l), None);
        // ...but a write blocked that long is a reader that stopped.
        a.write_blocked.store(a.now_ms(), Ordering::Release);
        advance(s(3)).await;
        assert_eq!(a.expired(&l), Some("write_timeout"));
        a.write_blocked.store(NEVER, Ordering::Release);
        // Once the response is sent, the connection is idle again.
        drop(req);
        advance(s(4)).await;
        assert_eq!(a.expired(&l), None);
        advance(s(1)).await;
        assert_eq!(a.expired(&l), Some("idle_timeout"));
        // Absurd timeouts (a library caller's, not the flags') do not overflow the timer.
        let never = HttpLimits {
            header_timeout: Duration::MAX,
            idle_timeout: Duration::MAX,
            write_timeout: Duration::MAX,
            ..HttpLimits::DEFAULT
        };
        assert!(a.next_check(&never) > Instant::now());
        assert_eq!(a.expired(&never), None);
    }
}
