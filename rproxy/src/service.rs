//! The gRPC `Distribution` service over a [`Hub`]: validates requests, converts
//! them, and maps every hub error to a `tonic::Status` in one place.

use std::{pin::Pin, sync::Arc, time::Duration};

use altocast_proto::{ResourceId, Tag, pb};
use arc_swap::ArcSwapOption;
use futures::Stream;
use tokio::net::TcpListener;
use tokio_stream::{StreamExt as _, wrappers::ReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, transport::server::Router};

use crate::hub::{Hub, SubscribeError};

/// Largest message the service sends or accepts. A chunked snapshot is sent
/// as 1 MiB chunks on `Subscribe`, but `Fetch` returns it in one message.
pub const MAX_MESSAGE: usize = 64 << 20;

/// Pulls a resource the hub does not have yet from upstream into the hub
/// (RProxy pull-through). The origin has none.
#[tonic::async_trait]
pub trait PullThrough: Send + Sync + 'static {
    /// Fetches `resource` from upstream, verifies it and publishes it into the hub.
    async fn pull(&self, resource: &ResourceId) -> Result<(), Status>;
}

/// The `Distribution` service.
#[derive(Clone)]
pub struct DistributionService {
    hub: Arc<Hub>,
    directory: Arc<ArcSwapOption<pb::SignedDirectory>>,
    pull: Option<Arc<dyn PullThrough>>,
}

impl std::fmt::Debug for DistributionService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistributionService").field("hub", &self.hub).finish()
    }
}

fn status(e: SubscribeError) -> Status {
    match e {
        SubscribeError::UnknownResource(_) => Status::not_found(e.to_string()),
        SubscribeError::TooManyResources(..) => Status::invalid_argument(e.to_string()),
        SubscribeError::Full(_) => Status::resource_exhausted(e.to_string()),
        SubscribeError::ShuttingDown => Status::unavailable(e.to_string()),
    }
}

fn resource_id(s: &str) -> Result<ResourceId, Status> {
    ResourceId::new(s).map_err(|e| Status::invalid_argument(format!("resource_id: {e}")))
}

impl DistributionService {
    /// A service over `hub`, answering `GetDirectory` from `directory`.
    pub fn new(
        hub: Arc<Hub>,
        directory: Arc<ArcSwapOption<pb::SignedDirectory>>,
        pull: Option<Arc<dyn PullThrough>>,
    ) -> Self {
        DistributionService { hub, directory, pull }
    }

    /// The service as a tonic server, with message size limits set.
    pub fn into_server(self) -> pb::distribution_server::DistributionServer<Self> {
        pb::distribution_server::DistributionServer::new(self)
            .max_decoding_message_size(1 << 20)
            .max_encoding_message_size(MAX_MESSAGE)
    }
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<pb::SubscribeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::distribution_server::Distribution for DistributionService {
    type SubscribeStream = FrameStream;

    async fn subscribe(&self, req: Request<pb::SubscribeRequest>) -> Result<Response<FrameStream>, Status> {
        let req = req.into_inner();
        let max = self.hub.config().max_resources_per_subscription;
        if req.resources.len() > max {
            return Err(status(SubscribeError::TooManyResources(req.resources.len(), max)));
        }
        let mut positions = Vec::with_capacity(req.resources.len());
        for r in &req.resources {
            let id = resource_id(&r.resource_id)?;
            let tag = if r.have_tag.is_empty() {
                Tag::ZERO
            } else {
                Tag::from_slice(&r.have_tag).map_err(|e| Status::invalid_argument(format!("have_tag: {e}")))?
            };
            if !self.hub.contains(id.as_str())
                && let Some(p) = &self.pull
            {
                p.pull(&id).await?;
            }
            positions.push((id, r.have_seq, tag));
        }
        let rx = self.hub.subscribe(positions).map_err(status)?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(Ok))))
    }

    async fn fetch(&self, req: Request<pb::FetchRequest>) -> Result<Response<pb::FetchResponse>, Status> {
        let id = resource_id(&req.into_inner().resource_id)?;
        let entries = match (self.hub.latest(id.as_str()), &self.pull) {
            (Some(e), _) => e,
            (None, Some(p)) => {
                p.pull(&id).await?;
                self.hub.latest(id.as_str()).ok_or_else(|| Status::not_found(format!("unknown resource {id:?}")))?
            }
            (None, None) => return Err(Status::not_found(format!("unknown resource {id:?}"))),
        };
        let chunks = entries.first().map(|e| e.chunks.clone()).unwrap_or_default();
        let updates = entries.iter().map(|e| e.signed.clone()).collect();
        Ok(Response::new(pb::FetchResponse { updates, chunks }))
    }

    async fn get_directory(
        &self,
        _: Request<pb::GetDirectoryRequest>,
    ) -> Result<Response<pb::SignedDirectory>, Status> {
        match self.directory.load_full() {
            Some(d) => Ok(Response::new((*d).clone())),
            None => Err(Status::unavailable("no directory yet")),
        }
    }
}

/// Limits shared by the origin's and the RProxy's gRPC servers.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits { max_concurrent_streams: 256 }
    }
}

/// A tonic router with `Distribution`, gRPC health and server reflection.
pub async fn router(service: DistributionService, limits: &ServerLimits) -> anyhow::Result<Router> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<pb::distribution_server::DistributionServer<DistributionService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    Ok(tonic::transport::Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .tcp_nodelay(true)
        .add_service(health)
        .add_service(reflection)
        .add_service(service.into_server()))
}

/// Serves `router` on `listener` until `shutdown` is cancelled; open streams
/// end because the hub watches the same token.
pub async fn serve(router: Router, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    // With our own listener, tonic's `tcp_nodelay` does not reach accepted
    // sockets; without it small updates wait ~40 ms for delayed ACKs.
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
        if let Ok(s) = &s {
            let _ = s.set_nodelay(true);
        }
        s
    });
    router.serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned()).await?;
    Ok(())
}
