//! The tracker's gRPC interface: `altocast.v1.Tracker/Rank`
//! (`proto/altocast/v1/tracker.proto`), the same ranking as `POST /rank`,
//! with `grpc.health.v1` and server reflection. It validates and converts;
//! the ranking is [`Domains::rank`], and a [`Refusal`] becomes a
//! [`tonic::Status`] in one place (`From<Refusal> for Status`).
//!
//! A program that embeds the tracker mounts [`TrackerService::into_server`]
//! in its own tonic server; the service then bounds the message size and the
//! requests ranked at once itself. [`super::serve`] also bounds the time the
//! request takes to arrive and takes the ranking slot before reading it.

use std::sync::Arc;

use altocast_proto::pb;
use tonic::{Request, Response, Status, server::NamedService as _};

use super::{BoxedResponse, Refusal, Shared, Slot, TrackerLimits};
use crate::domains::{Domains, Ranked, Standing};

/// The `Tracker` gRPC service over a [`Domains`] view.
#[derive(Clone)]
pub struct TrackerService {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TrackerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackerService").field("limits", &self.shared.limits).finish_non_exhaustive()
    }
}

impl TrackerService {
    /// The service over `domains`, bounded by `limits` (the count, the
    /// message size, the requests ranked at once; the candidates by
    /// [`crate::DomainsConfig::max_candidates`]).
    pub fn new(domains: Domains, limits: TrackerLimits) -> TrackerService {
        TrackerService { shared: Shared::new(domains, limits) }
    }

    /// As a tonic service, decoding messages of at most
    /// [`TrackerLimits::max_request_bytes`].
    pub fn into_server(self) -> pb::tracker_server::TrackerServer<TrackerService> {
        let max = self.shared.limits.max_request_bytes;
        pb::tracker_server::TrackerServer::new(self).max_decoding_message_size(max)
    }
}

/// The one place a refusal becomes a gRPC status.
impl From<Refusal> for Status {
    fn from(r: Refusal) -> Status {
        let msg = r.to_string();
        match r {
            Refusal::Syntax(_) | Refusal::Count { .. } | Refusal::Candidates(_) => Status::invalid_argument(msg),
            Refusal::TooLarge { .. } => Status::resource_exhausted(msg),
            Refusal::Timeout { .. } => Status::deadline_exceeded(msg),
            Refusal::Busy { .. } => Status::unavailable(msg),
        }
    }
}

fn standing(s: Standing) -> pb::Standing {
    match s {
        Standing::Priced => pb::Standing::Priced,
        Standing::Unpriced => pb::Standing::Unpriced,
        Standing::OtherDomain => pb::Standing::OtherDomain,
        Standing::NoServer => pb::Standing::NoServer,
        Standing::Down => pb::Standing::Down,
    }
}

fn peer(r: Ranked) -> pb::RankedPeer {
    pb::RankedPeer {
        ip: r.ip.to_string(),
        domain: r.domain,
        pid: r.pid,
        cost: r.cost,
        standing: standing(r.standing) as i32,
    }
}

#[tonic::async_trait]
impl pb::tracker_server::Tracker for TrackerService {
    async fn rank(&self, req: Request<pb::RankRequest>) -> Result<Response<pb::RankResponse>, Status> {
        // [`super::serve`] took the slot before reading the body.
        let _slot = match req.extensions().get::<Slot>() {
            Some(s) => s.clone(),
            None => self.shared.slot()?,
        };
        let r = req.into_inner();
        let peers = self.shared.rank(&r.requester, &r.candidates, u64::from(r.count)).await?;
        Ok(Response::new(pb::RankResponse { peers: peers.into_iter().map(peer).collect() }))
    }
}

/// The gRPC services [`super::serve`] answers: `Tracker` over `shared`,
/// health (`altocast.v1.Tracker` SERVING) and reflection.
pub(super) async fn routes(shared: Arc<Shared>) -> Result<tonic::service::Routes, tonic_reflection::server::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<pb::tracker_server::TrackerServer<TrackerService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    Ok(tonic::service::Routes::new(health).add_service(reflection).add_service(TrackerService { shared }.into_server()))
}

/// Answers one gRPC request. Unary `Tracker` calls take a ranking slot and
/// have their body read within the size and time limits first (the slot
/// travels with the request to [`TrackerService`]); health and reflection
/// calls go through as they are.
pub(super) async fn call(
    routes: tonic::service::Routes,
    shared: &Shared,
    req: http::Request<hyper::body::Incoming>,
) -> BoxedResponse {
    use tower_service::Service as _;
    let name = pb::tracker_server::TrackerServer::<TrackerService>::NAME;
    let tracker =
        req.uri().path().strip_prefix('/').and_then(|p| p.strip_prefix(name)).is_some_and(|p| p.starts_with('/'));
    let mut routes = routes;
    let resp = if tracker {
        let read = async {
            let slot = shared.slot()?;
            let (parts, body) = req.into_parts();
            let body = shared.read_body(body).await?;
            let mut req = http::Request::from_parts(parts, http_body_util::Full::new(body));
            req.extensions_mut().insert(slot);
            Ok::<_, Refusal>(req)
        };
        match read.await {
            Ok(req) => routes.call(req).await,
            Err(r) => return Status::from(r).into_http(),
        }
    } else {
        // Health and reflection take no ranking slot, but what the client
        // sends is bounded all the same: in size (their requests are names)
        // and in the time until it has all been sent.
        let max = shared.limits.max_request_bytes.min(SMALL_CALL_BYTES);
        let (parts, body) = req.into_parts();
        let body = Bounded::new(body, max, shared.limits.body_timeout);
        routes.call(http::Request::from_parts(parts, body)).await
    };
    match resp {
        Ok(r) => r.map(axum::body::Body::new),
        Err(e) => match e {},
    }
}

/// Most a health or reflection call may send in all, bytes (also bounded by
/// [`TrackerLimits::max_request_bytes`]): their requests are service and
/// symbol names, and [`TrackerLimits::max_in_flight`] streams of a connection
/// then hold no more than its HTTP/2 receive window.
pub const SMALL_CALL_BYTES: usize = 16 << 10;

/// A request body bounded in size (all its frames together) and in the time
/// until it ends; past either it fails with the [`Refusal`]'s status, counted.
struct Bounded<B> {
    inner: B,
    left: usize,
    max: usize,
    wait: std::time::Duration,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    failed: bool,
}

impl<B> Bounded<B> {
    fn new(inner: B, max: usize, wait: std::time::Duration) -> Bounded<B> {
        let deadline = Box::pin(tokio::time::sleep(wait));
        Bounded { inner, left: max, max, wait, deadline, failed: false }
    }

    fn fail(&mut self, r: Refusal) -> Box<dyn std::error::Error + Send + Sync> {
        self.failed = true;
        Box::new(Status::from(r.counted()))
    }
}

impl<B> hyper::body::Body for Bounded<B>
where
    B: hyper::body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        use std::{future::Future as _, task::Poll};
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, bytes::Bytes::len);
                if len > this.left {
                    let max = this.max;
                    return Poll::Ready(Some(Err(this.fail(Refusal::TooLarge { max }))));
                }
                this.left -= len;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    let secs = this.wait.as_secs();
                    return Poll::Ready(Some(Err(this.fail(Refusal::Timeout { secs }))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }
}
