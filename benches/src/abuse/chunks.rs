//! A chunk bomb: a malicious upstream relays a genuine, validly signed head of
//! a chunked snapshot and then sends junk chunks. A real `altocast watch`
//! follows it; its peak memory is compared with the same client stalled after
//! the head (what it costs before any chunk) and with an honest receipt of
//! the whole snapshot.

use std::{
    pin::Pin,
    process::{Command, Stdio},
    time::Duration,
};

use altocast_proto::pb;
use futures::Stream;
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{AbuseArgs, Killed, Target, Verdict, peak_mib};
use crate::child::sibling;

/// What the malicious upstream sends after the genuine head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bomb {
    /// Nothing: the client holds the head and waits for chunk 0.
    Stall,
    /// Junk chunks of the signed chunk size, indices 0, 1, 2, … (at most 4,096).
    Small,
    /// One junk chunk 0 just under the client's 64 MiB message limit.
    Big,
}

const BIG: usize = 60 << 20;

struct Evil {
    head: pb::SignedUpdate,
    chunk_len: usize,
    bomb: Bomb,
}

type Frames = Pin<Box<dyn Stream<Item = Result<pb::SubscribeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::distribution_server::Distribution for Evil {
    type SubscribeStream = Frames;

    async fn subscribe(&self, _: Request<pb::SubscribeRequest>) -> Result<Response<Frames>, Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let (head, bomb, chunk_len) = (self.head.clone(), self.bomb, self.chunk_len);
        tokio::spawn(async move {
            let update = pb::SubscribeResponse::new(pb::subscribe_response::Item::Update(head));
            if tx.send(Ok(update)).await.is_err() {
                return;
            }
            let (count, len) = match bomb {
                Bomb::Stall => {
                    tx.closed().await;
                    return;
                }
                Bomb::Small => (4096, chunk_len),
                Bomb::Big => (1, BIG),
            };
            let junk = bytes::Bytes::from(vec![0x5a; len]);
            for index in 0..count {
                let chunk = pb::SnapshotChunk { index, data: junk.clone() };
                let frame = pb::SubscribeResponse::new(pb::subscribe_response::Item::Chunk(chunk));
                if tx.send(Ok(frame)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn fetch(&self, _: Request<pb::FetchRequest>) -> Result<Response<pb::FetchResponse>, Status> {
        Err(Status::unavailable("this upstream only streams"))
    }

    async fn get_directory(
        &self,
        _: Request<pb::GetDirectoryRequest>,
    ) -> Result<Response<pb::SignedDirectory>, Status> {
        Err(Status::unavailable("this upstream only streams"))
    }
}

/// Serves `evil` on a loopback port until `stop`; returns its URL.
async fn serve(evil: Evil, stop: CancellationToken) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let svc = pb::distribution_server::DistributionServer::new(evil).max_encoding_message_size(64 << 20);
    tokio::spawn(tonic::transport::Server::builder().add_service(svc).serve_with_incoming_shutdown(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        stop.cancelled_owned(),
    ));
    Ok(url)
}

/// Runs `altocast watch` on `url` for `secs` and returns its peak RSS (MiB).
async fn watch_peak(url: &str, key: &std::path::Path, resource: &str, secs: u64) -> anyhow::Result<f64> {
    let child = Command::new(sibling("altocast")?)
        .args(["watch", "--endpoint", url, "--resource", resource])
        .arg("--trust-key")
        .arg(key)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let child = Killed(child);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    Ok(peak_mib(child.0.id()))
}

pub(crate) async fn run(args: &AbuseArgs) -> anyhow::Result<Vec<Verdict>> {
    let t = Target::start(super::topology(args)?, false, &[]).await?;
    // The genuine head and its chunks, straight from the origin.
    let mut up = altocast_client::connect::connect(&t.lo.url, Duration::from_secs(5)).await?;
    let req = pb::SubscribeRequest {
        resources: vec![pb::ResumePosition { resource_id: t.cm_id.to_string(), ..Default::default() }],
    };
    let mut frames = up.subscribe(req).await?.into_inner();
    // (Directory frames come first.)
    let head = loop {
        match frames.message().await? {
            Some(pb::SubscribeResponse { item: Some(pb::subscribe_response::Item::Update(u)), .. }) => break u,
            Some(pb::SubscribeResponse { item: Some(pb::subscribe_response::Item::Directory(_)), .. }) => continue,
            other => anyhow::bail!("the origin's first update frame is missing: {other:?}"),
        }
    };
    let (total_len, chunks) = match pb::Update::decode(head.body.clone())?.payload {
        Some(pb::update::Payload::Chunked(c)) => (c.total_len as usize, c.chunk_hashes.len()),
        _ => anyhow::bail!("the cost map's snapshot is not chunked: use a bigger topology"),
    };
    let chunk_len = match frames.message().await? {
        Some(pb::SubscribeResponse { item: Some(pb::subscribe_response::Item::Chunk(c)), .. }) => c.data.len(),
        other => anyhow::bail!("no chunk after the head: {other:?}"),
    };
    drop(frames);

    let key = t.lo.key_path.clone();
    let resource = t.cm_id.to_string();
    let secs = 6;
    let honest = watch_peak(&format!("http://{}", t.grpc), &key, &resource, secs).await?;
    let mut peaks = Vec::new();
    for bomb in [Bomb::Stall, Bomb::Small, Bomb::Big] {
        let stop = CancellationToken::new();
        let url = serve(Evil { head: head.clone(), chunk_len, bomb }, stop.clone()).await?;
        peaks.push((bomb, watch_peak(&url, &key, &resource, secs).await?));
        stop.cancel();
    }
    let peak = |b: Bomb| peaks.iter().find(|(x, _)| *x == b).map_or(f64::NAN, |(_, p)| *p);
    let stall = peak(Bomb::Stall);
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    println!(
        "abuse chunks: a genuine chunked-snapshot head ({chunks} chunks of {:.1} MiB, {:.1} MiB signed) then junk, to a real `altocast watch` for {secs} s",
        mib(chunk_len),
        mib(total_len)
    );
    println!("  {:<52} {:>10}", "upstream", "peak MiB");
    println!("  {:<52} {:>10.1}", "honest RProxy (the whole snapshot, verified)", honest);
    println!("  {:<52} {:>10.1}", "head, then nothing", stall);
    println!(
        "  {:<52} {:>10.1}",
        format!("head, then up to 4,096 junk chunks of {:.1} MiB", mib(chunk_len)),
        peak(Bomb::Small)
    );
    println!("  {:<52} {:>10.1}", format!("head, then one junk chunk of {:.0} MiB", mib(BIG)), peak(Bomb::Big));
    t.stop().await;
    // The bound: what the bomb costs over the stalled client is at most the
    // signed size plus the one message being decoded.
    let over = |b: Bomb, message: usize| (peak(b) - stall, mib(total_len + message));
    let (small, small_bound) = over(Bomb::Small, chunk_len);
    let (big, big_bound) = over(Bomb::Big, BIG);
    Ok(vec![
        Verdict {
            bound: format!("chunk bomb ({:.0} MiB chunks) ≤ signed {:.1} + one chunk", mib(chunk_len), mib(total_len)),
            measured: format!("+{small:.1} MiB over a stalled client (bound {small_bound:.1})"),
            held: small <= small_bound,
        },
        Verdict {
            bound: format!("chunk bomb ({:.0} MiB chunk) ≤ signed {:.1} + one chunk", mib(BIG), mib(total_len)),
            measured: format!("+{big:.1} MiB over a stalled client (bound {big_bound:.1})"),
            held: big <= big_bound,
        },
    ])
}
