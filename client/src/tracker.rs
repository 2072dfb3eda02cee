//! The tracker's HTTP/JSON service (`altocast tracker`): `POST /rank` ranks
//! candidate peers for a requesting peer through [`Domains`], and
//! `GET /stats` shows its counters.
//!
//! ```text
//! POST /rank  {"requester": "10.1.3.200", "candidates": ["10.2.0.1", …], "count": 100}
//! 200         {"peers": [{"ip": "10.1.3.7", "domain": "<origin id>", "pid": "west-003", "cost": 1.0}, …]}
//! ```
//!
//! Every request is bounded ([`TrackerLimits`]): the body's size (413) and
//! the time it takes to arrive (408), the number of candidates and the count
//! (400), requests ranked at once (503). Connections are bounded too, by our
//! own accept loop: at most `max_connections` open (more are closed at once),
//! and a request head must arrive within `header_timeout`, which also closes
//! a connection left idle that long.
//! Errors are `{"error": "…"}` naming what is wrong, e.g. the index of a
//! candidate that is not an IP address; each refusal is counted in
//! `altocast_tracker_refused_total{reason}`.
//!
//! Key types: [`TrackerLimits`], [`serve`].

use std::{convert::Infallible, net::IpAddr, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::json;
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, warn};

use crate::domains::{Domains, RankError, refused};

/// Bounds of the service. Defaults are the flags' defaults.
#[derive(Debug, Clone, Copy)]
pub struct TrackerLimits {
    /// Largest request body, bytes (10,000 IPv6 candidates fit in ~500 KB).
    pub max_request_bytes: usize,
    /// Largest `count` (peers per reply).
    pub max_count: usize,
    /// Requests ranked at once; more get 503.
    pub max_in_flight: usize,
    /// Open connections; more are accepted and closed at once.
    pub max_connections: usize,
    /// Longest a request head may take, and a connection may idle between requests.
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

struct Shared {
    domains: Domains,
    limits: TrackerLimits,
    slots: Semaphore,
}

/// The routes over `domains`.
pub fn router(domains: Domains, limits: TrackerLimits) -> Router {
    let shared = Arc::new(Shared { domains, limits, slots: Semaphore::new(limits.max_in_flight.max(1)) });
    Router::new().route("/rank", post(rank)).route("/stats", get(stats)).fallback(not_found).with_state(shared)
}

/// Serves the routes on `listener` until `shutdown`, then lets the requests
/// in flight finish (at most 5 s).
pub async fn serve(
    domains: Domains,
    listener: TcpListener,
    limits: TrackerLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let router = router(domains, limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections.clamp(1, Semaphore::MAX_PERMITS)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(limits.header_timeout).max_headers(64);
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
        let router = router.clone();
        let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let mut router = router.clone();
            async move {
                use tower_service::Service as _;
                let resp = match router.call(req.map(axum::body::Body::new)).await {
                    Ok(r) => r,
                    Err(e) => match e {},
                };
                Ok::<_, Infallible>(resp)
            }
        });
        let conn = http.serve_connection(hyper_util::rt::TokioIo::new(tcp), svc);
        let stop = shutdown.clone();
        conns.spawn(async move {
            let _slot = slot;
            tokio::pin!(conn);
            let ended = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    tokio::time::timeout(Duration::from_secs(5), conn.as_mut()).await.unwrap_or(Ok(()))
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

fn error(status: StatusCode, reason: &'static str, msg: String) -> Response {
    refused(reason);
    (status, Json(json!({ "error": msg }))).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RankRequest {
    requester: String,
    candidates: Vec<String>,
    count: usize,
}

/// `s` as an address, or the message naming `field`.
fn ip(field: &str, s: &str) -> Result<IpAddr, String> {
    s.parse().map_err(|_| {
        let shown: String = s.chars().take(60).collect();
        format!("{field}: {shown:?} is not an IP address")
    })
}

async fn rank(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    use http_body_util::BodyExt as _;
    let Ok(_slot) = shared.slots.try_acquire() else {
        let n = shared.limits.max_in_flight;
        return error(StatusCode::SERVICE_UNAVAILABLE, "busy", format!("{n} requests are being ranked; try again"));
    };
    let max = shared.limits.max_request_bytes;
    let wait = shared.limits.body_timeout;
    let body = match tokio::time::timeout(wait, http_body_util::Limited::new(req.into_body(), max).collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => {
            return error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("request body over {max} bytes"));
        }
        Err(_) => {
            let msg = format!("request body not received within {} s", wait.as_secs());
            return error(StatusCode::REQUEST_TIMEOUT, "body_timeout", msg);
        }
    };
    let parsed: RankRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "syntax",
                format!("expected {{\"requester\": IP, \"candidates\": [IP…], \"count\": N}}: {e}"),
            );
        }
    };
    if parsed.count == 0 || parsed.count > shared.limits.max_count {
        let max = shared.limits.max_count;
        return error(StatusCode::BAD_REQUEST, "count", format!("count {} is not within 1..={max}", parsed.count));
    }
    let requester = match ip("requester", &parsed.requester) {
        Ok(a) => a,
        Err(msg) => return error(StatusCode::BAD_REQUEST, "syntax", msg),
    };
    let mut candidates = Vec::with_capacity(parsed.candidates.len().min(100_000));
    for (i, c) in parsed.candidates.iter().enumerate() {
        match ip(&format!("candidates[{i}]"), c) {
            Ok(a) => candidates.push(a),
            Err(msg) => return error(StatusCode::BAD_REQUEST, "syntax", msg),
        }
    }
    match shared.domains.rank(requester, &candidates, parsed.count).await {
        Ok(peers) => Json(json!({ "peers": peers })).into_response(),
        Err(e @ RankError::TooManyCandidates { .. }) => error(StatusCode::BAD_REQUEST, "candidates", e.to_string()),
    }
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    let s = shared.domains.stats();
    Json(json!({ "stats": s, "domains": shared.domains.origins() })).into_response()
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({ "error": "no such route (POST /rank, GET /stats)" }))).into_response()
}
