//! The tracker's HTTP/JSON routes: `POST /rank` and `GET /stats` (see the
//! parent module for the request and the bounds). A [`Refusal`] becomes an
//! HTTP status and `{"error": "…"}` in one place ([`refusal`]).

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::json;

use super::{Refusal, Shared, TrackerLimits};
use crate::domains::Domains;

/// The routes over `domains`, with ranking slots of their own (for programs
/// that serve them without the gRPC service; [`super::serve`] shares one set).
pub fn router(domains: Domains, limits: TrackerLimits) -> Router {
    routes(Shared::new(domains, limits))
}

pub(super) fn routes(shared: Arc<Shared>) -> Router {
    Router::new().route("/rank", post(rank)).route("/stats", get(stats)).fallback(not_found).with_state(shared)
}

/// The one place a refusal becomes an HTTP answer.
fn refusal(r: Refusal) -> Response {
    let status = match &r {
        Refusal::Syntax(_) | Refusal::Count { .. } | Refusal::Candidates(_) => StatusCode::BAD_REQUEST,
        Refusal::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Refusal::Timeout { .. } => StatusCode::REQUEST_TIMEOUT,
        Refusal::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(json!({ "error": r.to_string() }))).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RankRequest {
    requester: String,
    candidates: Vec<String>,
    count: u64,
}

async fn rank(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let answer = async {
        let _slot = shared.slot()?;
        let body = shared.read_body(req.into_body()).await?;
        let parsed: RankRequest = serde_json::from_slice(&body).map_err(|e| {
            Refusal::Syntax(format!("expected {{\"requester\": IP, \"candidates\": [IP…], \"count\": N}}: {e}"))
                .counted()
        })?;
        shared.rank(&parsed.requester, &parsed.candidates, parsed.count).await
    };
    match answer.await {
        Ok(peers) => Json(json!({ "peers": peers })).into_response(),
        Err(r) => refusal(r),
    }
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    let s = shared.domains.stats();
    Json(json!({ "stats": s, "domains": shared.domains.origins() })).into_response()
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({ "error": "no such route (POST /rank, GET /stats)" }))).into_response()
}
