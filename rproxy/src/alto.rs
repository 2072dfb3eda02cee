//! The RFC 7285 HTTP/JSON interface, served from verified data, so existing
//! ALTO clients read the same maps the gRPC subscribers get without knowing
//! about signatures: the IRD (§9), full network and cost maps (§11.2), the
//! filtered cost map (§11.3.2) and the endpoint cost service (§11.5.1).
//!
//! It is read-only and answers from a [`View`] (what the upstream subscription
//! verified). A resource past its signed expiry is refused with 503 rather
//! than served as fresh; fresh answers carry `Cache-Control: max-age` up to
//! that expiry, so HTTP caches between here and clients cannot outlive it
//! either. Bad requests get RFC 7285 §8.5 error objects naming the field.

use std::{net::IpAddr, sync::Arc, time::Duration};

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

/// The HTTP routes over `view`. Serve them with the peer address as
/// `ConnectInfo` (as [`serve`] does): the endpoint cost service needs it.
pub fn router(view: View) -> Router {
    Router::new()
        .route("/directory", get(directory))
        .route("/networkmap/{id}", get(network_map))
        .route("/costmap/{id}", get(cost_map).post(filtered_cost_map))
        .route("/endpointcost", post(endpoint_cost))
        .layer(DefaultBodyLimit::max(MAX_REQUEST))
        .with_state(Arc::new(view))
}

/// Serves the interface on `listener` until `shutdown`.
pub async fn serve(view: View, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let app = router(view).layer(axum::middleware::from_fn(time_limit));
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
fn fresh(media_type: &'static str, expires_at_ms: i64, body: String) -> Result<Response, AltoError> {
    let now = altocast_client::now_ms();
    if expires_at_ms < now {
        return Err(AltoError::unavailable(format!(
            "the verified data expired {} s ago and the upstream has sent nothing newer",
            (now - expires_at_ms) / 1000
        )));
    }
    let max_age = HeaderValue::from_str(&format!("max-age={}", (expires_at_ms - now) / 1000))
        .unwrap_or(HeaderValue::from_static("no-cache"));
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static(media_type)), (header::CACHE_CONTROL, max_age)], body)
        .into_response())
}

fn cost_type_json(cm: &CostMap) -> Value {
    json!({"cost-mode": cm.cost_type().mode.as_str(), "cost-metric": cm.cost_type().metric})
}

/// The RFC 7285 name of a cost type, as listed in the IRD.
fn cost_type_name(cm: &CostMap) -> String {
    format!("{}-{}", cm.cost_type().mode.as_str(), cm.cost_type().metric)
}

async fn directory(State(view): State<Arc<View>>, headers: HeaderMap) -> Result<Response, AltoError> {
    let st = view.load();
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
    let mut meta = Map::new();
    meta.insert("cost-types".into(), Value::Object(cost_types));
    if let Some(nm) = nms.first() {
        meta.insert("default-alto-network-map".into(), nm.resource_id.to_string().into());
    }
    let body = json!({"meta": meta, "resources": resources}).to_string();
    Ok(([(header::CONTENT_TYPE, IRD_TYPE)], body).into_response())
}

async fn network_map(State(view): State<Arc<View>>, Path(id): Path<String>) -> Result<Response, AltoError> {
    let st = view.load();
    let nm = st.network_maps.get(id.as_str()).ok_or_else(|| AltoError::not_found(&id))?;
    let body = altocast_proto::json::network_map_json(&nm.resource_id, &nm.map);
    fresh(altocast_proto::json::NETWORK_MAP_MEDIA_TYPE, nm.expires_at_ms, body)
}

fn cost_map_of<'a>(st: &'a ViewState, id: &str) -> Result<&'a Arc<CostMapVersion>, AltoError> {
    st.cost_maps.get(id).ok_or_else(|| AltoError::not_found(id))
}

fn expiry(cm: &CostMapVersion) -> i64 {
    cm.expires_at_ms.min(cm.network_map.expires_at_ms)
}

async fn cost_map(State(view): State<Arc<View>>, Path(id): Path<String>) -> Result<Response, AltoError> {
    let st = view.load();
    let cm = cost_map_of(&st, &id)?;
    fresh(altocast_proto::json::COST_MAP_MEDIA_TYPE, expiry(cm), altocast_proto::json::cost_map_json(&cm.map))
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
    State(view): State<Arc<View>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, AltoError> {
    let st = view.load();
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
    State(view): State<Arc<View>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    body: Bytes,
) -> Result<Response, AltoError> {
    let st = view.load();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_data_is_refused_and_fresh_data_carries_its_remaining_lifetime() {
        let now = altocast_client::now_ms();
        let err = fresh(IRD_TYPE, now - 5_000, "{}".into()).expect_err("expired");
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.into_response().headers()[header::CONTENT_TYPE], ERROR_TYPE);
        let ok = fresh(IRD_TYPE, now + 30_500, "{}".into()).expect("fresh");
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
