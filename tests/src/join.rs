//! A newcomer, as the catch-up invariant speaks of it: a verifier that holds
//! nothing subscribes to every resource of a node's directory and must end,
//! from the catch-up alone, with every resource committed (authentic, chained,
//! fresh, cost maps with their network map). Also a resuming subscriber's
//! first look at what a node sends for positions it already holds.

use std::{collections::BTreeMap, time::Duration};

use altocast_client::{
    connect,
    frames::{Assembled, Assembler},
    now_ms,
};
use altocast_proto::{Limits, Tag, TrustedKeys, UpdateKind, Verifier, pb};
use tokio::time::Instant;

/// Where a newcomer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// Resource → committed (seq, tag).
    pub at: BTreeMap<String, (u64, Tag)>,
    /// Updates the catch-up carried.
    pub updates: usize,
}

/// Joins `url` with an empty verifier trusting `keys`. Reads until every
/// resource is committed and `quiet` passes without a frame; an error names
/// what was rejected, or what was still missing or pending after `within`.
pub async fn join(url: &str, keys: &TrustedKeys, within: Duration, quiet: Duration) -> Result<Joined, String> {
    let deadline = Instant::now() + within;
    let mut client = connect::connect(url, Duration::from_secs(2)).await.map_err(|e| format!("connect: {e}"))?;
    let mut v = Verifier::new(keys.clone(), Limits::default(), []);
    let (_, dir) = connect::directory(&mut client, url, &mut v, altocast_client::now_ms())
        .await
        .map_err(|e| format!("directory: {e}"))?;
    let resources = connect::resources_for(&dir, &[]);
    for r in &resources {
        v.request(r.clone());
    }
    let req = pb::SubscribeRequest {
        resources: resources
            .iter()
            .map(|r| pb::ResumePosition { resource_id: r.to_string(), have_seq: 0, have_tag: Default::default() })
            .collect(),
    };
    let mut stream = client.subscribe(req).await.map_err(|e| format!("subscribe at {url}: {e}"))?.into_inner();
    let mut frames = Assembler::new();
    let mut updates = 0;
    let done = |v: &Verifier| resources.iter().all(|r| v.get(r.as_str()).is_some() && v.pending(r.as_str()).is_none());
    loop {
        let now = Instant::now();
        let wait = if done(&v) { quiet } else { deadline.saturating_duration_since(now) };
        let frame = match tokio::time::timeout(wait, stream.message()).await {
            Ok(Ok(Some(f))) => f,
            Ok(Ok(None)) => return Err(format!("{url} ended the stream during the catch-up")),
            Ok(Err(s)) => return Err(format!("{url}: {s}")),
            Err(_) if done(&v) => break,
            Err(_) => {
                let missing: Vec<String> = resources
                    .iter()
                    .filter_map(|r| match (v.get(r.as_str()), v.pending(r.as_str())) {
                        (_, Some(p)) => Some(format!("{r} pending at seq {}", p.seq)),
                        (None, None) => Some(format!("{r} missing")),
                        _ => None,
                    })
                    .collect();
                return Err(format!("after {within:?} at {url}: {}", missing.join(", ")));
            }
        };
        let Some(Assembled { opened, chunks, .. }) =
            frames.push(&v, frame).map_err(|e| format!("{url} sent a bad frame: {e}"))?
        else {
            continue;
        };
        updates += 1;
        v.apply(&opened, &chunks, now_ms()).map_err(|e| format!("{url}: the catch-up was rejected: {e}"))?;
    }
    let at = resources.iter().filter_map(|r| v.get(r.as_str()).map(|h| (r.to_string(), (h.seq, h.tag)))).collect();
    Ok(Joined { at, updates })
}

/// The first update a node sends per resource to a subscriber resuming at
/// `have` (resource → seq, tag), within `listen`: its kind, base seq and seq.
/// A snapshot means the node does not know that version any more (or knows
/// it with other content).
pub async fn first_updates(
    url: &str,
    keys: &TrustedKeys,
    have: &BTreeMap<String, (u64, Tag)>,
    listen: Duration,
) -> Result<BTreeMap<String, (UpdateKind, u64, u64)>, String> {
    let mut client = connect::connect(url, Duration::from_secs(2)).await.map_err(|e| format!("connect: {e}"))?;
    let req = pb::SubscribeRequest {
        resources: have
            .iter()
            .map(|(r, (seq, tag))| pb::ResumePosition {
                resource_id: r.clone(),
                have_seq: *seq,
                have_tag: tag.0.to_vec().into(),
            })
            .collect(),
    };
    let mut stream = client.subscribe(req).await.map_err(|e| format!("subscribe at {url}: {e}"))?.into_inner();
    let v = Verifier::accepting_all(keys.clone(), Limits::default());
    let mut frames = Assembler::new();
    let mut first = BTreeMap::new();
    let deadline = Instant::now() + listen;
    while first.len() < have.len() {
        let frame =
            match tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), stream.message()).await {
                Ok(Ok(Some(f))) => f,
                Ok(Ok(None)) | Err(_) => break,
                Ok(Err(s)) => return Err(format!("{url}: {s}")),
            };
        if let Some(Assembled { opened, .. }) = frames.push(&v, frame).map_err(|e| format!("{url}: {e}"))? {
            let kind = match opened.update.payload {
                Some(pb::update::Payload::Heartbeat(_)) => UpdateKind::Heartbeat,
                Some(pb::update::Payload::Diff(_)) => UpdateKind::Diff,
                _ => UpdateKind::Snapshot,
            };
            first.entry(opened.resource_id.to_string()).or_insert((kind, opened.update.base_seq, opened.update.seq));
        }
    }
    Ok(first)
}
