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

use std::{net::IpAddr, sync::Arc, time::Duration};

use futures::StreamExt as _;

use altocast_client::{CostMapVersion, View, ViewState};
use altocast_proto::CostMap;
use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Largest request body (filters, endpoint lists).
pub const MAX_REQUEST: usize = 1 << 20;
/// Most endpoints per side of an endpoint cost request.
pub const MAX_ENDPOINTS: usize = 10_000;
/// Most source × destination pairs one endpoint cost request may ask for.
pub const MAX_PAIRS: usize = 1_000_000;
/// Longest a request may take, reading included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

const IRD_TYPE: &str = "application/alto-directory+json";
const ERROR_TYPE: &str = "application/alto-error+json";
const ECS_TYPE: &str = "application/alto-endpointcost+json";
const ECS_PARAMS_TYPE: &str = "application/alto-endpointcostparams+json";
const FILTER_TYPE: &str = "application/alto-costmapfilter+json";

/// Most RFC 8895 update streams open at once.
pub const MAX_UPDATE_STREAMS: usize = 10_000;
/// Most resources one update stream may follow.
pub const MAX_STREAM_RESOURCES: usize = 64;
/// Events queued per update stream; a reader this far behind is closed
/// rather than allowed to grow memory (it reconnects and starts afresh).
const STREAM_QUEUE: usize = 64;

/// What the handlers share.
struct Shared {
    view: View,
    shutdown: CancellationToken,
    streams: std::sync::atomic::AtomicUsize,
    /// Open update streams by id, for their stream control URIs.
    controls: dashmap::DashMap<u64, Arc<StreamControl>>,
    next_stream: std::sync::atomic::AtomicU64,
    /// The JSON body of each full map, rendered once per version (the tag):
    /// polling clients then cost a copy, not a rendering (12 MB takes ~50 ms).
    rendered: dashmap::DashMap<String, (altocast_proto::Tag, Bytes)>,
}

/// What a stream control request (RFC 8895 §7) can change: client ids
/// removed from the stream.
#[derive(Default)]
struct StreamControl {
    removed: std::sync::Mutex<std::collections::HashSet<String>>,
    changed: tokio::sync::Notify,
}

/// The HTTP routes over `view`; update streams end on `shutdown`. Serve them
/// with the peer address as `ConnectInfo` (as [`serve`] does): the endpoint
/// cost service needs it.
pub fn router(view: View, shutdown: CancellationToken) -> Router {
    let shared = Arc::new(Shared {
        view,
        shutdown,
        streams: Default::default(),
        controls: Default::default(),
        next_stream: Default::default(),
        rendered: Default::default(),
    });
    let timed = Router::new()
        .route("/directory", get(directory))
        .route("/networkmap/{id}", get(network_map))
        .route("/costmap/{id}", get(cost_map).post(filtered_cost_map))
        .route("/endpointcost", post(endpoint_cost))
        .layer(axum::middleware::from_fn(time_limit));
    // Update streams are long-lived by design: no request time limit.
    Router::new()
        .route("/updates", post(update_stream))
        .route("/updates/control/{id}", post(stream_control))
        .merge(timed)
        .layer(DefaultBodyLimit::max(MAX_REQUEST))
        .with_state(shared)
}

/// Serves the interface on `listener` until `shutdown`.
pub async fn serve(view: View, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let app = router(view, shutdown.clone());
    // The peer address answers an endpoint cost request without sources.
    axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}

async fn time_limit(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "request took too long").into_response(),
    }
}

/// An RFC 7285 §8.5 error.
#[derive(Debug)]
struct AltoError {
    status: StatusCode,
    meta: Value,
}

impl AltoError {
    fn syntax(msg: impl std::fmt::Display) -> Self {
        AltoError {
            status: StatusCode::BAD_REQUEST,
            meta: json!({"code": "E_SYNTAX", "syntax-error": msg.to_string()}),
        }
    }
    fn missing(field: &str) -> Self {
        AltoError { status: StatusCode::BAD_REQUEST, meta: json!({"code": "E_MISSING_FIELD", "field": field}) }
    }
    fn field_type(field: &str) -> Self {
        AltoError { status: StatusCode::BAD_REQUEST, meta: json!({"code": "E_INVALID_FIELD_TYPE", "field": field}) }
    }
    fn value(field: &str, value: impl Into<Value>) -> Self {
        AltoError {
            status: StatusCode::BAD_REQUEST,
            meta: json!({"code": "E_INVALID_FIELD_VALUE", "field": field, "value": value.into()}),
        }
    }
    fn not_found(what: &str) -> Self {
        AltoError {
            status: StatusCode::NOT_FOUND,
            meta: json!({"code": "E_INVALID_FIELD_VALUE", "field": "resource-id", "value": what}),
        }
    }
    fn unavailable(msg: String) -> Self {
        AltoError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            meta: json!({"code": "E_SERVICE_UNAVAILABLE", "message": msg}),
        }
    }
}

impl IntoResponse for AltoError {
    fn into_response(self) -> Response {
        let body = json!({"meta": self.meta}).to_string();
        (self.status, [(header::CONTENT_TYPE, ERROR_TYPE)], body).into_response()
    }
}

/// A fresh answer with its media type and a max-age up to `expires_at_ms`.
fn fresh(
    media_type: &'static str,
    expires_at_ms: i64,
    body: impl Into<axum::body::Body>,
) -> Result<Response, AltoError> {
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

async fn directory(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Result<Response, AltoError> {
    let st = shared.view.load();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let base = format!("http://{host}");
    let mut cost_types = Map::new();
    let mut resources = Map::new();
    let mut nms: Vec<_> = st.network_maps.values().collect();
    nms.sort_by(|a, b| a.resource_id.cmp(&b.resource_id));
    for nm in &nms {
        resources.insert(
            nm.resource_id.to_string(),
            json!({"uri": format!("{base}/networkmap/{}", nm.resource_id), "media-type": altocast_proto::json::NETWORK_MAP_MEDIA_TYPE}),
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
            json!({"uri": format!("{base}/costmap/{}", cm.resource_id), "media-type": altocast_proto::json::COST_MAP_MEDIA_TYPE,
                   "capabilities": {"cost-type-names": [name]}, "uses": uses}),
        );
        resources.insert(
            format!("{}-filtered", cm.resource_id),
            json!({"uri": format!("{base}/costmap/{}", cm.resource_id), "media-type": altocast_proto::json::COST_MAP_MEDIA_TYPE,
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
            .map(|c| (c.resource_id.to_string(), Value::from(altocast_proto::json::MERGE_PATCH_MEDIA_TYPE)))
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
    let body = json!({"meta": meta, "resources": resources}).to_string();
    Ok(([(header::CONTENT_TYPE, IRD_TYPE)], body).into_response())
}

/// A full map: fresh-checked, from the rendered cache, with the tag as its
/// ETag (`If-None-Match` with it gets 304 Not Modified).
fn full_map(
    shared: &Shared,
    headers: &HeaderMap,
    media_type: &'static str,
    (id, tag, expires_at_ms): (&str, altocast_proto::Tag, i64),
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
    let cached = shared.rendered.get(id).filter(|e| e.0 == tag).map(|e| e.1.clone());
    let body = match cached {
        Some(b) => b,
        None => {
            let b = Bytes::from(render());
            shared.rendered.insert(id.to_owned(), (tag, b.clone()));
            b
        }
    };
    *resp.body_mut() = axum::body::Body::from(body);
    Ok(resp)
}

async fn network_map(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AltoError> {
    let st = shared.view.load();
    let nm = st.network_maps.get(id.as_str()).ok_or_else(|| AltoError::not_found(&id))?;
    full_map(&shared, &headers, altocast_proto::json::NETWORK_MAP_MEDIA_TYPE, (&id, nm.tag, nm.expires_at_ms), || {
        altocast_proto::json::network_map_json(&nm.resource_id, &nm.map)
    })
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
    full_map(&shared, &headers, altocast_proto::json::COST_MAP_MEDIA_TYPE, (&id, cm.tag, expiry(cm)), || {
        altocast_proto::json::cost_map_json(&cm.map)
    })
}

fn parse_body(body: &[u8]) -> Result<Map<String, Value>, AltoError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(AltoError::syntax("the request body must be a JSON object")),
        Err(e) => Err(AltoError::syntax(e)),
    }
}

/// Checks the request's `cost-type` against the map's (RFC 7285 §11.3.2.3:
/// the filter names the cost type it wants; a map has exactly one).
fn check_cost_type(req: &Map<String, Value>, cm: &CostMap) -> Result<(), AltoError> {
    let ct = match req.get("cost-type") {
        None => return Err(AltoError::missing("cost-type")),
        Some(Value::Object(ct)) => ct,
        Some(_) => return Err(AltoError::field_type("cost-type")),
    };
    for (field, want) in [("cost-mode", cm.cost_type().mode.as_str()), ("cost-metric", cm.cost_type().metric.as_str())]
    {
        match ct.get(field) {
            None => return Err(AltoError::missing(&format!("cost-type/{field}"))),
            Some(Value::String(s)) if s == want => {}
            Some(Value::String(s)) => return Err(AltoError::value(&format!("cost-type/{field}"), s.as_str())),
            Some(_) => return Err(AltoError::field_type(&format!("cost-type/{field}"))),
        }
    }
    Ok(())
}

/// A list of strings at `obj[key]`; absent = `None`.
fn string_list<'a>(obj: &'a Map<String, Value>, at: &str, key: &str) -> Result<Option<Vec<&'a str>>, AltoError> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().ok_or_else(|| AltoError::field_type(&format!("{at}/{key}"))))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(AltoError::field_type(&format!("{at}/{key}"))),
    }
}

async fn filtered_cost_map(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, AltoError> {
    let st = shared.view.load();
    let cm = cost_map_of(&st, &id)?;
    let req = parse_body(&body)?;
    check_cost_type(&req, &cm.map)?;
    let empty = Map::new();
    let pids = match req.get("pids") {
        None => &empty,
        Some(Value::Object(p)) => p,
        Some(_) => return Err(AltoError::field_type("pids")),
    };
    // PIDs the map does not have are left out of the answer, not an error; an
    // absent or empty list means all PIDs (§11.3.2.3).
    let indices = |names: Option<Vec<&str>>| -> Option<Vec<u32>> {
        let names = names.filter(|n| !n.is_empty())?;
        let mut ix: Vec<u32> = names.iter().filter_map(|n| cm.map.index_of(n)).collect();
        ix.sort_unstable();
        ix.dedup();
        Some(ix)
    };
    let srcs = indices(string_list(pids, "pids", "srcs")?);
    let dsts = indices(string_list(pids, "pids", "dsts")?);
    let body = altocast_proto::json::cost_map_json_filtered(&cm.map, srcs.as_deref(), dsts.as_deref());
    fresh(altocast_proto::json::COST_MAP_MEDIA_TYPE, expiry(cm), body)
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

async fn endpoint_cost(
    State(shared): State<Arc<Shared>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    body: Bytes,
) -> Result<Response, AltoError> {
    let st = shared.view.load();
    let req = parse_body(&body)?;
    // The cost map with the requested cost type (the first by id if several).
    let mut cms: Vec<_> = st.cost_maps.values().collect();
    cms.sort_by(|a, b| a.resource_id.cmp(&b.resource_id));
    let first_err = match cms.first() {
        None => return Err(AltoError::unavailable("no cost map has been received from upstream yet".into())),
        Some(cm) => check_cost_type(&req, &cm.map).err(),
    };
    let cm = match cms.iter().find(|cm| check_cost_type(&req, &cm.map).is_ok()) {
        Some(cm) => *cm,
        None => return Err(first_err.unwrap_or_else(|| AltoError::missing("cost-type"))),
    };
    let eps = match req.get("endpoints") {
        None => return Err(AltoError::missing("endpoints")),
        Some(Value::Object(e)) => e,
        Some(_) => return Err(AltoError::field_type("endpoints")),
    };
    // No sources means the client's own address (RFC 7285 §11.5.1.3).
    let own = match peer.ip() {
        IpAddr::V4(a) => format!("ipv4:{a}"),
        IpAddr::V6(a) => format!("ipv6:{a}"),
    };
    let srcs = match string_list(eps, "endpoints", "srcs")? {
        Some(s) if !s.is_empty() => s,
        _ => vec![own.as_str()],
    };
    let dsts = string_list(eps, "endpoints", "dsts")?.ok_or_else(|| AltoError::missing("endpoints/dsts"))?;
    if srcs.len() > MAX_ENDPOINTS || dsts.len() > MAX_ENDPOINTS {
        return Err(AltoError::value("endpoints", format!("at most {MAX_ENDPOINTS} endpoints per side")));
    }
    if srcs.len().max(1) * dsts.len() > MAX_PAIRS {
        return Err(AltoError::value("endpoints", format!("at most {MAX_PAIRS} source-destination pairs")));
    }
    let parse = |side: &str, list: &[&str]| -> Result<Vec<(String, IpAddr)>, AltoError> {
        list.iter()
            .map(|s| {
                typed_address(s)
                    .map(|a| (s.to_string(), a))
                    .ok_or_else(|| AltoError::value(&format!("endpoints/{side}"), *s))
            })
            .collect()
    };
    let srcs = parse("srcs", &srcs)?;
    let dsts = parse("dsts", &dsts)?;
    let nm = &cm.network_map.map;
    let pid = |a: IpAddr| nm.lookup(a).and_then(|p| cm.map.index_of(p.as_str()));
    let mut out = Map::new();
    for (sname, saddr) in &srcs {
        let Some(s) = pid(*saddr) else { continue };
        let mut row = Map::new();
        for (dname, daddr) in &dsts {
            if let Some(v) = pid(*daddr).and_then(|d| cm.map.cost_at(s, d)) {
                // Whole costs as integers, as in the cost map bodies.
                let v = if v.fract() == 0.0 && v.abs() < 9.0e15 { json!(v as i64) } else { json!(v) };
                row.insert(dname.clone(), v);
            }
        }
        out.insert(sname.clone(), Value::Object(row));
    }
    let body = json!({"meta": {"cost-type": cost_type_json(&cm.map)}, "endpoint-cost-map": out}).to_string();
    fresh(ECS_TYPE, expiry(cm), body)
}

/// One followed resource of an update stream.
struct Followed {
    client_id: String,
    resource_id: String,
    incremental: bool,
    /// The cost map last sent, to diff the next one against.
    last: Option<Arc<CostMapVersion>>,
    /// The seq last sent (0: nothing yet).
    seq: u64,
}

/// The SSE event carrying `f`'s current state: the full map, or (for a cost
/// map followed incrementally, with a previous version sent) a merge patch.
fn event_for(st: &ViewState, f: &mut Followed) -> Option<axum::response::sse::Event> {
    use axum::response::sse::Event;
    if let Some(nm) = st.network_maps.get(f.resource_id.as_str()) {
        if nm.seq == f.seq {
            return None;
        }
        f.seq = nm.seq;
        let body = altocast_proto::json::network_map_json(&nm.resource_id, &nm.map);
        return Some(
            Event::default()
                .event(format!("{},{}", altocast_proto::json::NETWORK_MAP_MEDIA_TYPE, f.client_id))
                .data(body),
        );
    }
    let cm = st.cost_maps.get(f.resource_id.as_str())?;
    if cm.seq == f.seq {
        return None;
    }
    f.seq = cm.seq;
    let event = match f.last.as_ref().filter(|_| f.incremental) {
        Some(prev) => Event::default()
            .event(format!("{},{}", altocast_proto::json::MERGE_PATCH_MEDIA_TYPE, f.client_id))
            .data(altocast_proto::json::cost_map_merge_patch(&prev.map, &cm.map)),
        None => Event::default()
            .event(format!("{},{}", altocast_proto::json::COST_MAP_MEDIA_TYPE, f.client_id))
            .data(altocast_proto::json::cost_map_json(&cm.map)),
    };
    f.last = Some(cm.clone());
    Some(event)
}

/// Gives the stream slot and its control entry back when the stream's task ends.
struct StreamSlot(Arc<Shared>, u64);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.controls.remove(&self.1);
        self.0.streams.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// RFC 8895 §7 stream control: `{"remove": [CLIENT-ID, …]}` stops those
/// resources on the stream (all of them ends it). Adding resources to an open
/// stream is not offered: open another stream.
async fn stream_control(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<u64>,
    body: Bytes,
) -> Result<Response, AltoError> {
    let ctl = shared.controls.get(&id).map(|c| c.clone()).ok_or_else(|| AltoError::not_found(&id.to_string()))?;
    let req = parse_body(&body)?;
    if req.contains_key("add") {
        return Err(AltoError::value("add", "adding to an open stream is not supported; open a new stream"));
    }
    let remove = string_list(&req, "", "remove")?.ok_or_else(|| AltoError::missing("remove"))?;
    ctl.removed.lock().unwrap_or_else(|e| e.into_inner()).extend(remove.iter().map(|s| s.to_string()));
    ctl.changed.notify_one();
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// RFC 8895 §6: `POST /updates` with `{"add": {CLIENT-ID: {"resource-id": ID,
/// "incremental-changes": BOOL}}}` opens a server-sent-event stream: a
/// control event, then each resource's full map, then its changes as they are
/// verified. The stream ends when the client goes, on shutdown, or when the
/// client reads so slowly that `STREAM_QUEUE` events are waiting.
async fn update_stream(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AltoError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let req = parse_body(&body)?;
    let add = match req.get("add") {
        None => return Err(AltoError::missing("add")),
        Some(Value::Object(a)) => a,
        Some(_) => return Err(AltoError::field_type("add")),
    };
    if add.is_empty() || add.len() > MAX_STREAM_RESOURCES {
        return Err(AltoError::value("add", format!("1 to {MAX_STREAM_RESOURCES} resources")));
    }
    let st = shared.view.load();
    let mut followed = Vec::new();
    for (client_id, spec) in add {
        let at = format!("add/{client_id}");
        altocast_proto::ResourceId::new(client_id).map_err(|_| AltoError::value("add", client_id.as_str()))?;
        let Value::Object(spec) = spec else { return Err(AltoError::field_type(&at)) };
        let resource_id = match spec.get("resource-id") {
            Some(Value::String(r)) => r.clone(),
            Some(_) => return Err(AltoError::field_type(&format!("{at}/resource-id"))),
            None => return Err(AltoError::missing(&format!("{at}/resource-id"))),
        };
        if !st.network_maps.contains_key(resource_id.as_str()) && !st.cost_maps.contains_key(resource_id.as_str()) {
            return Err(AltoError::value(&format!("{at}/resource-id"), resource_id));
        }
        let incremental = match spec.get("incremental-changes") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(AltoError::field_type(&format!("{at}/incremental-changes"))),
        };
        followed.push(Followed { client_id: client_id.clone(), resource_id, incremental, last: None, seq: 0 });
    }
    use std::sync::atomic::Ordering;
    if shared.streams.fetch_add(1, Ordering::AcqRel) >= MAX_UPDATE_STREAMS {
        shared.streams.fetch_sub(1, Ordering::AcqRel);
        return Err(AltoError::unavailable(format!("{MAX_UPDATE_STREAMS} update streams are open; try later")));
    }
    let id = shared.next_stream.fetch_add(1, Ordering::AcqRel);
    let ctl = Arc::new(StreamControl::default());
    shared.controls.insert(id, ctl.clone());
    let slot = StreamSlot(shared.clone(), id);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, std::convert::Infallible>>(STREAM_QUEUE);
    let mut changes = shared.view.changes();
    tokio::spawn(async move {
        let _slot = slot;
        let (view, shutdown) = (shared.view.clone(), shared.shutdown.clone());
        let send = |e: Event| tx.try_send(Ok(e)).is_ok();
        // Full maps first, then whatever changes; on a lagged change feed
        // everything is compared against what was sent, so nothing is missed.
        let mut lagged = true;
        loop {
            {
                let removed = ctl.removed.lock().unwrap_or_else(|e| e.into_inner());
                followed.retain(|f| !removed.contains(&f.client_id));
            }
            if followed.is_empty() {
                return;
            }
            if lagged {
                let st = view.load();
                for f in &mut followed {
                    if let Some(e) = event_for(&st, f)
                        && !send(e)
                    {
                        return;
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tx.closed() => return,
                _ = ctl.changed.notified() => continue,
                c = changes.recv() => match c {
                    Ok(c) => {
                        lagged = false;
                        let st = view.load();
                        for f in followed.iter_mut().filter(|f| f.resource_id == c.update.resource_id.as_str()) {
                            if let Some(e) = event_for(&st, f)
                                && !send(e)
                            {
                                return;
                            }
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => lagged = true,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let control = Event::default()
        .event("application/alto-updatestreamcontrol+json")
        .data(json!({"control-uri": format!("http://{host}/updates/control/{id}")}).to_string());
    let stream = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(control) })
        .chain(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(20))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
