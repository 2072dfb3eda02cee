//! The tracker's HTTP/JSON service (`altocast tracker`): `POST /rank` ranks
//! candidate peers for a requesting peer through [`Domains`], and
//! `GET /stats` shows its counters.
//!
//! ```text
//! POST /rank  {"requester": "10.1.3.200", "candidates": ["10.2.0.1", …], "count": 100}
//! 200         {"peers": [{"ip": "10.1.3.7", "domain": "<origin id>", "pid": "west-003", "cost": 1.0}, …]}
//! ```
//!
//! Every request is bounded ([`TrackerLimits`]): the body's size (413), the
//! number of candidates and the count (400), requests ranked at once (503).
//! Errors are `{"error": "…"}` naming what is wrong, e.g. the index of a
//! candidate that is not an IP address; each refusal is counted in
//! `altocast_tracker_refused_total{reason}`.
//!
//! Key types: [`TrackerLimits`], [`serve`].

use std::{net::IpAddr, sync::Arc};

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
use tokio_util::sync::CancellationToken;

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
}

impl TrackerLimits {
    /// The defaults (also the flags' defaults).
    pub const DEFAULT: TrackerLimits = TrackerLimits { max_request_bytes: 1 << 20, max_count: 1000, max_in_flight: 64 };
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

/// Serves the routes on `listener` until `shutdown`.
pub async fn serve(
    domains: Domains,
    listener: TcpListener,
    limits: TrackerLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(domains, limits)).with_graceful_shutdown(shutdown.cancelled_owned()).await
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
    let body = match http_body_util::Limited::new(req.into_body(), max).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("request body over {max} bytes"));
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
