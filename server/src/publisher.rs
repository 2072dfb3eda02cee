//! The gRPC `Publisher` service: bearer-token authentication, then one
//! atomic ingest step of one or more resources. Errors map to
//! `tonic::Status` here and only here. While the store is failing the service
//! reports NOT_SERVING in `grpc.health.v1` (see [`health`]).

use std::{sync::Arc, time::Duration};

use altocast_proto::{
    ResourceId,
    model::{error::bounded, json},
    pb,
};
use tonic::{Request, Response, Status};

use crate::origin::{Form, IngestError, Input, Origin, Outcome};

/// The name `grpc.health.v1` knows the publisher by.
pub const SERVICE_NAME: &str = "altocast.v1.Publisher";

/// Most resources in one Publish step.
pub const MAX_STEP_RESOURCES: usize = 256;

/// `Publisher` over an [`Origin`].
#[derive(Debug, Clone)]
pub struct PublisherService {
    origin: Arc<Origin>,
    token: Arc<str>,
}

impl PublisherService {
    /// A service accepting `Authorization: Bearer <token>`.
    pub fn new(origin: Arc<Origin>, token: &str) -> Self {
        PublisherService { origin, token: token.into() }
    }

    /// As a tonic server accepting bodies up to `max_body` bytes.
    pub fn into_server(self, max_body: usize) -> pb::publisher_server::PublisherServer<Self> {
        pb::publisher_server::PublisherServer::new(self).max_decoding_message_size(max_body + 4096)
    }

    fn authenticate<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let given =
            req.metadata().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        match given {
            // Constant-time: compare the BLAKE3 digests. (The token is never
            // empty: the server refuses to start with a short one.)
            Some(t) if blake3::hash(t.as_bytes()) == blake3::hash(self.token.as_bytes()) => Ok(()),
            Some(_) => Err(Status::unauthenticated("wrong bearer token")),
            None => Err(Status::unauthenticated("missing `authorization: Bearer <token>`")),
        }
    }
}

fn status(e: IngestError) -> Status {
    let msg = bounded(e.to_string());
    match e.cause() {
        IngestError::TooLarge { .. } => Status::resource_exhausted(msg),
        IngestError::Store(_) => Status::unavailable(msg),
        _ => Status::invalid_argument(msg),
    }
}

fn form(media_type: &str, at: &str) -> Result<Form, Status> {
    match media_type {
        "" => Ok(Form::Any),
        json::NETWORK_MAP_MEDIA_TYPE => Ok(Form::NetworkMap),
        json::COST_MAP_MEDIA_TYPE => Ok(Form::CostMap),
        json::MERGE_PATCH_MEDIA_TYPE => Ok(Form::MergePatch),
        other => Err(Status::invalid_argument(format!(
            "{at}.media_type {:?}: expected empty, {}, {} or {}",
            other.chars().take(80).collect::<String>(),
            json::NETWORK_MAP_MEDIA_TYPE,
            json::COST_MAP_MEDIA_TYPE,
            json::MERGE_PATCH_MEDIA_TYPE
        ))),
    }
}

fn resource(id: &str, at: &str) -> Result<ResourceId, Status> {
    ResourceId::new(id).map_err(|e| Status::invalid_argument(format!("{at}.resource_id: {e}")))
}

#[tonic::async_trait]
impl pb::publisher_server::Publisher for PublisherService {
    async fn publish(&self, req: Request<pb::PublishRequest>) -> Result<Response<pb::PublishResponse>, Status> {
        self.authenticate(&req)?;
        let req = req.into_inner();
        if req.more.len() + 1 > MAX_STEP_RESOURCES {
            return Err(Status::invalid_argument(format!(
                "{} resources in one step; at most {MAX_STEP_RESOURCES}",
                req.more.len() + 1
            )));
        }
        let mut items = vec![(resource(&req.resource_id, "request")?, req.json, form(&req.media_type, "request")?)];
        for (i, m) in req.more.into_iter().enumerate() {
            let at = format!("more[{i}]");
            items.push((resource(&m.resource_id, &at)?, m.json, form(&m.media_type, &at)?));
        }
        let origin = self.origin.clone();
        let outcomes = tokio::task::spawn_blocking(move || {
            let inputs: Vec<Input<'_>> =
                items.iter().map(|(id, body, form)| Input { id: id.clone(), body, form: *form }).collect();
            origin.ingest_batch(&inputs)
        })
        .await
        .map_err(|e| Status::internal(format!("ingest task: {e}")))?
        .map_err(status)?;
        let results: Vec<pb::PublishResult> = outcomes
            .into_iter()
            .map(|(id, o)| {
                let (seq, tag, changed) = match o {
                    Outcome::Unchanged { seq, tag } => (seq, tag, false),
                    Outcome::Published { seq, tag, .. } => (seq, tag, true),
                };
                pb::PublishResult { resource_id: id.to_string(), seq, tag: tag.to_hex(), changed }
            })
            .collect();
        let first = results.first().cloned().unwrap_or_default();
        Ok(Response::new(pb::PublishResponse { seq: first.seq, tag: first.tag, changed: first.changed, results }))
    }
}

/// Keeps the publisher's `grpc.health.v1` status in step with the store:
/// NOT_SERVING while writes fail (an operator's probe sees it; heartbeats
/// keep subscribers served meanwhile), SERVING again once one succeeds.
pub async fn health(
    origin: Arc<Origin>,
    reporter: tonic_health::server::HealthReporter,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut serving = None;
    loop {
        let o = origin.clone();
        let _ = tokio::task::spawn_blocking(move || o.probe_store()).await;
        let now = origin.store_healthy();
        if serving != Some(now) {
            let status =
                if now { tonic_health::ServingStatus::Serving } else { tonic_health::ServingStatus::NotServing };
            reporter.set_service_status(SERVICE_NAME, status).await;
            metrics::gauge!("altocast_origin_store_healthy").set(if now { 1.0 } else { 0.0 });
            serving = Some(now);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
