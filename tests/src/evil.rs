//! A malicious RProxy test double: relays a real upstream but tampers with
//! what it forwards, the ways an untrusted proxy could.

use std::{pin::Pin, time::Duration};

use altocast_proto::pb;
use futures::Stream;
use prost::Message as _;
use tokio::{net::TcpListener, sync::mpsc, task::JoinHandle};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// How the proxy misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvilMode {
    /// Changes one cost in every cost-map update it relays.
    FlipCost,
    /// Sends every diff twice (a replay).
    Replay,
    /// Drops the first live diff (a hole in the chain).
    DropDiff,
    /// Forwards the catch-up, then nothing: no diffs, no heartbeats.
    Withhold,
    /// Relays up to the first live heartbeat, then withholds like `Withhold`
    /// but replays the stream's first directory frame as fast as the client
    /// reads: a frame is always ready, each ignored as not newer, none fresh.
    Flood,
    /// Swaps the order of the first two live diffs.
    Reorder,
    /// Honest, but cannot stream: `Subscribe` is unimplemented (clients must pull).
    NoPush,
    /// `NoPush` and `FreezeDirectory` at once: pulling clients are kept on an
    /// old directory unless they re-read it and watch its expiry.
    NoPushFrozen,
    /// Withholds live network map diffs but relays the cost maps computed
    /// against them: a cost map with a network map the client does not have.
    DropNetworkMap,
    /// Answers a `Fetch` of the network map with the cost map's answer and
    /// the other way round: authentic updates of another resource.
    SwapFetch,
    /// Serves the first directory it fetched for ever (a frozen, then
    /// replayed, directory hiding what the origin added or revoked since).
    FreezeDirectory,
    /// Flips the last byte of every directory it relays (inside the key chain).
    TamperDirectory,
    /// Honest, but also sends whatever [`EvilProxy::inject`] is given to every
    /// open subscription (updates signed by a leaked key, say).
    Inject,
}

/// The running double.
pub struct EvilProxy {
    /// Its URL.
    pub url: String,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    inject: tokio::sync::broadcast::Sender<pb::SignedUpdate>,
}

impl EvilProxy {
    /// Relays `upstream`, misbehaving as `mode`.
    pub async fn start(upstream: &str, mode: EvilMode) -> EvilProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let shutdown = CancellationToken::new();
        let (inject, _) = tokio::sync::broadcast::channel(16);
        let svc = Evil {
            upstream: upstream.to_owned(),
            mode,
            shutdown: shutdown.clone(),
            frozen: Default::default(),
            inject: inject.clone(),
        };
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(pb::distribution_server::DistributionServer::new(svc).max_encoding_message_size(64 << 20))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    stop.cancelled_owned(),
                )
                .await;
        });
        EvilProxy { url, shutdown, task, inject }
    }

    /// Sends `update` on every open subscription (mode [`EvilMode::Inject`]);
    /// returns how many there were.
    pub fn inject(&self, update: pb::SignedUpdate) -> usize {
        self.inject.send(update).unwrap_or(0)
    }

    /// Stops it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

struct Evil {
    upstream: String,
    mode: EvilMode,
    shutdown: CancellationToken,
    frozen: tokio::sync::OnceCell<pb::SignedDirectory>,
    inject: tokio::sync::broadcast::Sender<pb::SignedUpdate>,
}

async fn upstream(url: &str) -> Result<altocast_client::connect::DistributionClient, Status> {
    altocast_client::connect::connect(url, Duration::from_secs(2)).await.map_err(|e| Status::unavailable(e.to_string()))
}

fn kind(f: &pb::SubscribeResponse) -> Option<(pb::Update, pb::SignedUpdate)> {
    match &f.item {
        Some(pb::subscribe_response::Item::Update(s)) => Some((pb::Update::decode(s.body.clone()).ok()?, s.clone())),
        _ => None,
    }
}

fn flip_cost(s: &pb::SignedUpdate) -> Option<pb::SignedUpdate> {
    let mut u = pb::Update::decode(s.body.clone()).ok()?;
    match u.payload.as_mut()? {
        pb::update::Payload::Diff(pb::Diff { map: Some(pb::diff::Map::CostMap(d)) }) => {
            *d.rows.first_mut()?.set_cost.first_mut()? += 1.0;
        }
        pb::update::Payload::Snapshot(pb::Snapshot { map: Some(pb::snapshot::Map::CostMap(m)) }) => {
            *m.rows.first_mut()?.cost.first_mut()? += 1.0;
        }
        _ => return None,
    }
    Some(pb::SignedUpdate { body: u.encode_to_vec().into(), signatures: s.signatures.clone() })
}

/// `d` with the last byte of its body flipped (inside the key chain).
fn tampered(mut d: pb::SignedDirectory) -> pb::SignedDirectory {
    let mut body = d.body.to_vec();
    if let Some(last) = body.last_mut() {
        *last ^= 1;
    }
    d.body = body.into();
    d
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<pb::SubscribeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::distribution_server::Distribution for Evil {
    type SubscribeStream = FrameStream;

    async fn subscribe(&self, req: Request<pb::SubscribeRequest>) -> Result<Response<FrameStream>, Status> {
        if matches!(self.mode, EvilMode::NoPush | EvilMode::NoPushFrozen) {
            return Err(Status::unimplemented("this endpoint only answers Fetch"));
        }
        let mut up = upstream(&self.upstream).await?;
        let mut inner = up.subscribe(req.into_inner()).await?.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let mode = self.mode;
        let stop = self.shutdown.clone();
        let mut injected = self.inject.subscribe();
        tokio::spawn(async move {
            let mut live_diffs = 0usize;
            let mut held_back: Option<pb::SubscribeResponse> = None;
            // The catch-up of a fresh subscriber is one snapshot per resource;
            // everything after the snapshots of both maps is live.
            let mut snapshots = 0usize;
            let mut flood: Option<pb::SubscribeResponse> = None;
            let mut first_directory: Option<pb::SubscribeResponse> = None;
            loop {
                let f = tokio::select! {
                    biased;
                    _ = stop.cancelled() => return,
                    // As fast as the client takes them: a frame is always ready.
                    _ = std::future::ready(()), if flood.is_some() => {
                        if let Some(f) = &flood
                            && tx.send(Ok(f.clone())).await.is_err()
                        {
                            return;
                        }
                        continue;
                    }
                    u = injected.recv(), if mode == EvilMode::Inject => {
                        if let Ok(u) = u
                            && tx.send(Ok(pb::SubscribeResponse::new(pb::subscribe_response::Item::Update(u)))).await.is_err()
                        {
                            return;
                        }
                        continue;
                    }
                    f = inner.message() => f,
                };
                let Ok(Some(f)) = f else { return };
                let info = kind(&f);
                let is_diff = matches!(&info, Some((u, _)) if matches!(u.payload, Some(pb::update::Payload::Diff(_))));
                let is_hb =
                    matches!(&info, Some((u, _)) if matches!(u.payload, Some(pb::update::Payload::Heartbeat(_))));
                let is_snapshot = matches!(&info, Some((u, _)) if matches!(
                    u.payload,
                    Some(pb::update::Payload::Snapshot(_) | pb::update::Payload::Chunked(_))
                ));
                let caught_up = snapshots >= 2;
                snapshots += usize::from(is_snapshot);
                let mut out = vec![f.clone()];
                // Directories pushed on the stream get the same treatment as
                // those served by GetDirectory.
                if let Some(pb::subscribe_response::Item::Directory(d)) = &f.item {
                    first_directory.get_or_insert_with(|| f.clone());
                    match mode {
                        EvilMode::FreezeDirectory => out.clear(),
                        EvilMode::TamperDirectory => {
                            let d = tampered(d.clone());
                            out = vec![pb::SubscribeResponse::new(pb::subscribe_response::Item::Directory(d))];
                        }
                        _ => {}
                    }
                }
                match mode {
                    EvilMode::FlipCost => {
                        if let Some(bad) = info.as_ref().and_then(|(_, s)| flip_cost(s)) {
                            out = vec![pb::SubscribeResponse::new(pb::subscribe_response::Item::Update(bad))];
                        }
                    }
                    EvilMode::Replay if is_diff => out.push(f.clone()),
                    EvilMode::DropDiff if is_diff && caught_up => {
                        live_diffs += 1;
                        if live_diffs == 1 {
                            out.clear();
                        }
                    }
                    EvilMode::Withhold if caught_up && (is_diff || is_hb) => out.clear(),
                    // Everything up to the first live heartbeat, so that it is
                    // the client's current state that is replayed.
                    EvilMode::Flood if caught_up && is_hb && flood.is_none() => flood = first_directory.clone(),
                    EvilMode::Flood if flood.is_some() && (is_diff || is_hb) => out.clear(),
                    EvilMode::DropNetworkMap
                        if is_diff
                            && caught_up
                            && matches!(&info, Some((u, _)) if u.kind == pb::ResourceKind::NetworkMap as i32) =>
                    {
                        out.clear()
                    }
                    EvilMode::Reorder if is_diff && caught_up => {
                        live_diffs += 1;
                        if live_diffs == 1 {
                            held_back = Some(f.clone());
                            out.clear();
                        } else if let Some(h) = held_back.take() {
                            out.push(h);
                        }
                    }
                    _ => {}
                }
                for o in out {
                    if tx.send(Ok(o)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn fetch(&self, req: Request<pb::FetchRequest>) -> Result<Response<pb::FetchResponse>, Status> {
        let mut req = req.into_inner();
        if self.mode == EvilMode::SwapFetch {
            req.resource_id = if req.resource_id == crate::NM { crate::CM } else { crate::NM }.to_owned();
        }
        upstream(&self.upstream).await?.fetch(req).await
    }

    async fn get_directory(
        &self,
        req: Request<pb::GetDirectoryRequest>,
    ) -> Result<Response<pb::SignedDirectory>, Status> {
        let fetch = || async { upstream(&self.upstream).await?.get_directory(pb::GetDirectoryRequest {}).await };
        match self.mode {
            EvilMode::FreezeDirectory | EvilMode::NoPushFrozen => {
                let d = self.frozen.get_or_try_init(|| async { fetch().await.map(Response::into_inner) }).await?;
                Ok(Response::new(d.clone()))
            }
            EvilMode::TamperDirectory => Ok(Response::new(tampered(fetch().await?.into_inner()))),
            _ => upstream(&self.upstream).await?.get_directory(req.into_inner()).await,
        }
    }
}
