//! The gRPC `Distribution` service over a [`Hub`]: validates requests, converts
//! them, and maps every hub error to a `tonic::Status` in one place.

use std::{pin::Pin, sync::Arc, time::Duration};

use altocast_proto::{ResourceId, Tag, pb};
use anyhow::Context as _;
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

    /// The service as a tonic server, with message size limits set and the
    /// zero-copy `Subscribe` path in front.
    pub fn into_server(self) -> FanoutServer {
        let inner = pb::distribution_server::DistributionServer::new(self.clone())
            .max_decoding_message_size(1 << 20)
            .max_encoding_message_size(MAX_MESSAGE);
        FanoutServer { svc: self, inner }
    }

    /// Validates a subscription request and registers it with the hub.
    pub async fn open(
        &self,
        req: pb::SubscribeRequest,
    ) -> Result<tokio::sync::mpsc::Receiver<pb::SubscribeResponse>, Status> {
        let max = self.hub.config().max_resources_per_subscription;
        if req.resources.len() > max {
            return Err(status(SubscribeError::TooManyResources(req.resources.len(), max)));
        }
        let mut positions = Vec::with_capacity(req.resources.len());
        let mut named = std::collections::HashSet::with_capacity(req.resources.len());
        for r in &req.resources {
            let id = resource_id(&r.resource_id)?;
            // Twice in one stream would send its catch-up twice: the second a rollback.
            if !named.insert(id.clone()) {
                return Err(Status::invalid_argument(format!("resource {id} is listed twice")));
            }
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
        self.hub.subscribe(positions).map_err(status)
    }
}

/// Largest encoded `ResumePosition` with its field key and length: a 64-byte
/// resource id, a 10-byte seq varint and a 32-byte tag, with their keys and
/// lengths (108), rounded up. A request of the most resources a subscription
/// may follow always fits; anything bigger is refused before it is read.
const RESUME_POSITION_BYTES: usize = 128;
const SUBSCRIBE_PATH: &str = "/altocast.v1.Distribution/Subscribe";

/// The `Distribution` server with `Subscribe` served zero-copy: each frame is
/// the hub's shared, already gRPC-framed `Bytes`, handed to HTTP/2 as is. Going
/// through tonic's encoder instead would copy every frame into a per-stream
/// buffer that then keeps the capacity of the largest frame it ever carried (a
/// 1 MiB snapshot chunk per idle subscriber). Other methods go to the generated
/// server.
#[derive(Clone)]
pub struct FanoutServer {
    svc: DistributionService,
    inner: pb::distribution_server::DistributionServer<DistributionService>,
}

impl std::fmt::Debug for FanoutServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanoutServer").finish()
    }
}

impl tonic::server::NamedService for FanoutServer {
    const NAME: &'static str = "altocast.v1.Distribution";
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl tower_service::Service<http::Request<tonic::body::Body>> for FanoutServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if req.uri().path() != SUBSCRIBE_PATH {
            let mut inner = self.inner.clone();
            return Box::pin(async move { inner.call(req).await });
        }
        let svc = self.svc.clone();
        Box::pin(async move {
            Ok(match subscribe_zero_copy(svc, req).await {
                Ok(resp) => resp,
                Err(status) => status.into_http(),
            })
        })
    }
}

async fn subscribe_zero_copy(
    svc: DistributionService,
    req: http::Request<tonic::body::Body>,
) -> Result<http::Response<tonic::body::Body>, Status> {
    use http_body_util::BodyExt as _;
    use prost::Message as _;
    let max_request = 1024 + svc.hub.config().max_resources_per_subscription * RESUME_POSITION_BYTES;
    let body = http_body_util::Limited::new(req.into_body(), max_request)
        .collect()
        .await
        .map_err(|e| Status::invalid_argument(format!("subscribe request: {e}")))?
        .to_bytes();
    // gRPC framing: 1 byte compressed flag, 4 bytes big-endian length, message.
    if body.len() < 5 || body[0] != 0 {
        return Err(Status::invalid_argument("subscribe request must be one uncompressed gRPC message"));
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let msg = body.get(5..5 + len).ok_or_else(|| Status::invalid_argument("truncated subscribe request"))?;
    let req =
        pb::SubscribeRequest::decode(msg).map_err(|e| Status::invalid_argument(format!("subscribe request: {e}")))?;
    let rx = svc.open(req).await?;
    let mut resp = http::Response::new(tonic::body::Body::new(FrameBody { rx, held: None, done: false }));
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
    Ok(resp)
}

/// Bytes batched into one HTTP/2 DATA frame when frames are queued (tonic's
/// own yield threshold).
const BATCH_BYTES: usize = 32 << 10;

/// Frames at least this large (snapshots, big diffs) are never copied into a
/// batch: they gain nothing from it, and copies of them held for slow readers
/// would cost memory per subscriber. They go out as the hub's shared bytes.
const BATCH_MAX_FRAME: usize = 4 << 10;

/// Yields the hub's frames as HTTP/2 data, then `grpc-status: 0` when the hub
/// ends the subscription (shutdown, stuck). Dropping it (client gone) closes
/// the queue, which ends the hub's subscriber task.
struct FrameBody {
    rx: tokio::sync::mpsc::Receiver<pb::SubscribeResponse>,
    /// A large frame taken from the queue while filling a batch; sent next.
    held: Option<bytes::Bytes>,
    done: bool,
}

impl http_body::Body for FrameBody {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Status>>> {
        use std::task::Poll;
        if self.done {
            return Poll::Ready(None);
        }
        let first = match self.held.take() {
            Some(f) => f,
            None => match self.rx.poll_recv(cx) {
                Poll::Ready(Some(frame)) => frame.grpc_framed(),
                Poll::Ready(None) => {
                    self.done = true;
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                    return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))));
                }
                Poll::Pending => return Poll::Pending,
            },
        };
        if first.len() >= BATCH_MAX_FRAME {
            return Poll::Ready(Some(Ok(http_body::Frame::data(first))));
        }
        // Small frames already queued go out in the same HTTP/2 DATA frame: far
        // fewer frames and syscalls under load. The batch is a transient copy,
        // dropped once written; a lone frame is sent as is.
        let mut batch: Option<bytes::BytesMut> = None;
        while batch.as_ref().map_or(first.len(), |b| b.len()) < BATCH_BYTES {
            let Ok(next) = self.rx.try_recv() else { break };
            let next = next.grpc_framed();
            if next.len() >= BATCH_MAX_FRAME {
                self.held = Some(next);
                break;
            }
            let b = batch.get_or_insert_with(|| {
                // Room for the frame that crosses BATCH_BYTES: growing the
                // buffer would copy the whole batch again.
                let mut b = bytes::BytesMut::with_capacity(BATCH_BYTES + BATCH_MAX_FRAME);
                b.extend_from_slice(&first);
                b
            });
            b.extend_from_slice(&next);
        }
        let data = batch.map_or(first, |b| b.freeze());
        Poll::Ready(Some(Ok(http_body::Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<pb::SubscribeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::distribution_server::Distribution for DistributionService {
    type SubscribeStream = FrameStream;

    async fn subscribe(&self, req: Request<pb::SubscribeRequest>) -> Result<Response<FrameStream>, Status> {
        let rx = self.open(req.into_inner()).await?;
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

/// Settings shared by the origin's and the RProxy's gRPC servers.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// TLS (and mTLS) settings; `None` serves plain HTTP/2.
    pub tls: Option<tonic::transport::ServerTlsConfig>,
    /// HTTP/2 keepalive: a PING this long after the peer last sent anything.
    /// Half the idle timeout ([`ServerLimits::for_idle_timeout`]), so a live
    /// client's PING ack always arrives before the idle deadline of
    /// [`crate::conn`], which closes (and counts) a peer that stays silent.
    pub keepalive: Duration,
    /// How long hyper waits for a PING ack before closing the connection
    /// itself: the idle timeout, so the counted idle deadline comes first.
    pub keepalive_timeout: Duration,
}

impl ServerLimits {
    /// The defaults with the keepalive that goes with `idle_timeout`.
    pub fn for_idle_timeout(idle_timeout: Duration) -> ServerLimits {
        ServerLimits { keepalive: idle_timeout / 2, keepalive_timeout: idle_timeout, ..Default::default() }
    }
}

impl Default for ServerLimits {
    fn default() -> Self {
        let idle = crate::conn::ConnLimits::default().idle_timeout;
        ServerLimits { max_concurrent_streams: 256, tls: None, keepalive: idle / 2, keepalive_timeout: idle }
    }
}

/// A tonic router with `Distribution`, gRPC health and server reflection.
pub async fn router(service: DistributionService, limits: &ServerLimits) -> anyhow::Result<Router> {
    Ok(router_with_health(service, limits).await?.0)
}

/// [`router`], and the health reporter for services added to it later.
pub async fn router_with_health(
    service: DistributionService,
    limits: &ServerLimits,
) -> anyhow::Result<(Router, tonic_health::server::HealthReporter)> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<FanoutServer>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &limits.tls {
        builder = builder.tls_config(tls.clone()).context("TLS settings")?;
    }
    let router = builder
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_keepalive_interval(Some(limits.keepalive))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .tcp_nodelay(true)
        .add_service(health)
        .add_service(reflection)
        .add_service(service.into_server());
    Ok((router, reporter))
}

/// Serves `router` on `listener` until `shutdown` is cancelled, with the
/// connection bounds of `conns`; open streams end because the hub watches
/// the same token.
pub async fn serve(
    router: Router,
    listener: TcpListener,
    conns: crate::conn::ConnLimits,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    router.serve_with_incoming_shutdown(crate::conn::incoming(listener, conns), shutdown.cancelled_owned()).await?;
    Ok(())
}
