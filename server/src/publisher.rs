//! The gRPC `Publisher` service: bearer-token authentication, then ingest.
//! Errors map to `tonic::Status` here and only here.

use std::sync::Arc;

use altocast_proto::{ResourceId, json, pb};
use tonic::{Request, Response, Status};

use crate::origin::{IngestError, Origin, Outcome};

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
            // Constant-time: compare the BLAKE3 digests.
            Some(t) if blake3::hash(t.as_bytes()) == blake3::hash(self.token.as_bytes()) => Ok(()),
            Some(_) => Err(Status::unauthenticated("wrong bearer token")),
            None => Err(Status::unauthenticated("missing `authorization: Bearer <token>`")),
        }
    }
}

fn status(e: IngestError) -> Status {
    match e {
        IngestError::TooLarge { .. } => Status::resource_exhausted(e.to_string()),
        IngestError::Store(_) => Status::internal(e.to_string()),
        _ => Status::invalid_argument(e.to_string()),
    }
}

#[tonic::async_trait]
impl pb::publisher_server::Publisher for PublisherService {
    async fn publish(&self, req: Request<pb::PublishRequest>) -> Result<Response<pb::PublishResponse>, Status> {
        self.authenticate(&req)?;
        let req = req.into_inner();
        let id =
            ResourceId::new(&req.resource_id).map_err(|e| Status::invalid_argument(format!("resource_id: {e}")))?;
        let patch = match req.media_type.as_str() {
            "" | json::NETWORK_MAP_MEDIA_TYPE | json::COST_MAP_MEDIA_TYPE => false,
            json::MERGE_PATCH_MEDIA_TYPE => true,
            other => {
                return Err(Status::invalid_argument(format!(
                    "media_type {other:?}: expected empty, {}, {} or {}",
                    json::NETWORK_MAP_MEDIA_TYPE,
                    json::COST_MAP_MEDIA_TYPE,
                    json::MERGE_PATCH_MEDIA_TYPE
                )));
            }
        };
        let origin = self.origin.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            if patch { origin.ingest_patch(&id, &req.json) } else { origin.ingest(&id, &req.json) }
        })
        .await
        .map_err(|e| Status::internal(format!("ingest task: {e}")))?
        .map_err(status)?;
        Ok(Response::new(match outcome {
            Outcome::Unchanged { seq, tag } => pb::PublishResponse { seq, tag: tag.to_hex(), changed: false },
            Outcome::Published { seq, tag, .. } => pb::PublishResponse { seq, tag: tag.to_hex(), changed: true },
        }))
    }
}
