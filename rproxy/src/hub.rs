//! The fan-out hub: per resource, the signed bytes needed to bring any
//! subscriber up to date, and the live stream of new updates (DESIGN §6).
//!
//! Per resource the hub keeps the latest signed snapshot, a bounded ring of the
//! signed diffs that follow older versions, and the latest heartbeat, all as the
//! exact signed bytes received. A subscriber resumes from `(have_seq, have_tag)`:
//! nothing missing → the latest heartbeat; the missing diffs still in the ring →
//! those; otherwise → the snapshot (and the diffs after it). Then live updates.
//! Every update is wrapped once into its frames and the same `Bytes` handles go
//! to every subscriber.
//!
//! # Slow-subscriber policy
//!
//! Live updates reach subscribers through one bounded broadcast ring for all
//! resources ([`HubConfig::live_buffer`] updates) — one ring keeps publish order
//! across resources, so a cost map never overtakes the network map version it
//! depends on — and memory does not grow with a
//! slow subscriber and a slow subscriber never slows the others: the publisher
//! never waits. A subscriber that falls more than `live_buffer` updates behind
//! loses its place in the ring (its queue is dropped, counted in
//! `altocast_hub_lagged_total`) and is **resynced** from the cache — the diffs
//! since its last delivered version, or a snapshot — as soon as it drains.
//! Each subscriber's outgoing queue holds at most [`HubConfig::queue`] frames;
//! a subscriber whose queue stays full for [`HubConfig::stuck_deadline`] is
//! **disconnected** (`altocast_hub_disconnected_total{reason="stuck"}`). Drops,
//! resyncs and disconnects are counted and warned about at most once a second
//! per subscriber. Subscribers unregister through a `Drop` guard so the
//! subscriber gauge never drifts, and every stream ends on shutdown.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, atomic::AtomicU64, atomic::Ordering},
    time::Duration,
};

use altocast_proto::{Kind, ResourceId, Tag, UpdateKind, pb};
use dashmap::DashMap;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::{StreamExt as _, wrappers::BroadcastStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument as _, debug, warn};

/// Numbers subscriptions for log spans (a counter, never an address).
static NEXT_SUBSCRIBER: AtomicU64 = AtomicU64::new(1);

use crate::metrics as m;

/// Hub sizing. Defaults suit a few resources and tens of thousands of subscribers.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Diffs kept per resource for resume. 64 covers half an hour of 30 s epochs,
    /// so a client that reconnects within that gets diffs, not a snapshot.
    pub ring_size: usize,
    /// Live updates buffered (all resources) before slow subscribers are
    /// resynced. 1024 absorbs bursts (several rings of diffs) without resyncing
    /// anyone, and costs only a pointer per slot.
    pub live_buffer: usize,
    /// Frames queued per subscriber. Small, because a frame can be a 1 MiB
    /// snapshot chunk and there can be 10,000 subscribers.
    pub queue: usize,
    /// A subscriber whose queue stays full this long is disconnected.
    pub stuck_deadline: Duration,
    /// Most concurrent subscriptions.
    pub max_subscribers: usize,
    /// Most resources in one subscription.
    pub max_resources_per_subscription: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            ring_size: 64,
            live_buffer: 1024,
            queue: 16,
            stuck_deadline: Duration::from_secs(30),
            max_subscribers: 100_000,
            max_resources_per_subscription: 1024,
        }
    }
}

/// One signed update as stored and relayed: its identity and its frames.
#[derive(Debug)]
pub struct Entry {
    /// The resource.
    pub resource_id: ResourceId,
    /// Network map or cost map.
    pub resource_kind: Kind,
    /// Snapshot, diff or heartbeat.
    pub kind: UpdateKind,
    /// Version after it.
    pub seq: u64,
    /// Version it applies to (0 for a snapshot).
    pub base_seq: u64,
    /// Tag of that version.
    pub base_tag: Tag,
    /// Tag after it.
    pub tag: Tag,
    /// When the origin signed it (Unix ms): orders a heartbeat against a
    /// snapshot of the same version.
    pub issued_at_ms: i64,
    /// Unix ms.
    pub expires_at_ms: i64,
    /// The signed update as received.
    pub signed: pb::SignedUpdate,
    /// Its snapshot chunks.
    pub chunks: Vec<pb::SnapshotChunk>,
    /// The update and its chunks as frames, encoded once and shared by every
    /// subscriber's stream.
    pub frames: Vec<pb::SubscribeResponse>,
}

fn frames(signed: &pb::SignedUpdate, chunks: &[pb::SnapshotChunk]) -> Vec<pb::SubscribeResponse> {
    use pb::subscribe_response::Item;
    std::iter::once(pb::SubscribeResponse::pre_encoded(&Item::Update(signed.clone())))
        .chain(chunks.iter().map(|c| pb::SubscribeResponse::pre_encoded(&Item::Chunk(c.clone()))))
        .collect()
}

impl Entry {
    /// Builds an entry from a decoded (already verified or locally made)
    /// update header and its signed bytes.
    pub fn new(update: &pb::Update, signed: pb::SignedUpdate, chunks: Vec<pb::SnapshotChunk>) -> Option<Entry> {
        let kind = match update.payload.as_ref()? {
            pb::update::Payload::Snapshot(_) | pb::update::Payload::Chunked(_) => UpdateKind::Snapshot,
            pb::update::Payload::Diff(_) => UpdateKind::Diff,
            pb::update::Payload::Heartbeat(_) => UpdateKind::Heartbeat,
        };
        let resource_kind = match pb::ResourceKind::try_from(update.kind).ok()? {
            pb::ResourceKind::NetworkMap => Kind::NetworkMap,
            pb::ResourceKind::CostMap => Kind::CostMap,
            pb::ResourceKind::Unspecified => return None,
        };
        let tag = |b: &[u8]| if b.is_empty() { Some(Tag::ZERO) } else { Tag::from_slice(b).ok() };
        Some(Entry {
            resource_id: ResourceId::new(&update.resource_id).ok()?,
            resource_kind,
            kind,
            seq: update.seq,
            base_seq: update.base_seq,
            base_tag: tag(&update.base_tag)?,
            tag: tag(&update.tag)?,
            issued_at_ms: update.issued_at_ms,
            expires_at_ms: update.expires_at_ms,
            frames: frames(&signed, &chunks),
            signed,
            chunks,
        })
    }

    /// An entry for an update this node signed itself (the origin).
    pub fn from_signed(s: altocast_proto::Signed) -> Entry {
        let h = &s.header;
        Entry {
            resource_id: h.resource_id.clone(),
            resource_kind: h.kind,
            kind: s.kind,
            seq: h.seq,
            base_seq: h.base_seq,
            base_tag: h.base_tag,
            tag: h.tag,
            issued_at_ms: h.issued_at_ms,
            expires_at_ms: h.expires_at_ms,
            frames: frames(&s.update, &s.chunks),
            signed: s.update,
            chunks: s.chunks,
        }
    }

    /// Bytes this entry puts on the wire.
    pub fn wire_len(&self) -> usize {
        use prost::Message as _;
        self.frames.iter().map(|f| f.encoded_len()).sum()
    }
}

/// Why the hub refused to publish an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// A diff whose base is not the hub's current version.
    #[error("{resource}: diff {base_seq}→{seq} does not follow the cached seq {cached}")]
    Gap {
        /// The resource.
        resource: String,
        /// The cached seq.
        cached: u64,
        /// The diff's base seq.
        base_seq: u64,
        /// The diff's seq.
        seq: u64,
    },
    /// A heartbeat or diff for a version older than the cached one.
    #[error("{resource}: seq {seq} is older than the cached seq {cached}")]
    Old {
        /// The resource.
        resource: String,
        /// The cached seq.
        cached: u64,
        /// The entry's seq.
        seq: u64,
    },
}

/// Why a subscription was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// A requested resource does not exist here.
    #[error("unknown resource {0:?}")]
    UnknownResource(String),
    /// Too many resources in one request.
    #[error("{0} resources requested; at most {1} per subscription")]
    TooManyResources(usize, usize),
    /// The subscriber limit is reached.
    #[error("subscriber limit {0} reached")]
    Full(usize),
    /// The hub is shutting down.
    #[error("shutting down")]
    ShuttingDown,
}

#[derive(Default)]
struct Cache {
    seq: u64,
    tag: Tag,
    snapshot: Option<Arc<Entry>>,
    /// Contiguous diffs; the last one ends at `seq`.
    diffs: VecDeque<Arc<Entry>>,
    heartbeat: Option<Arc<Entry>>,
}

impl Cache {
    /// The entries that bring a holder of `(have_seq, have_tag)` to `seq`:
    /// the missing diffs, or the snapshot and the diffs after it, then the
    /// latest heartbeat — unless the last entry was signed after it (a
    /// checkpoint snapshot newer than the heartbeat round): a verifier holding
    /// the newer signature calls the older one a rollback.
    fn catch_up(&self, have_seq: u64, have_tag: Tag) -> Vec<Arc<Entry>> {
        if self.seq == 0 || have_seq > self.seq {
            return Vec::new();
        }
        let mut out = Vec::new();
        if have_seq == self.seq && have_tag == self.tag {
            // Up to date: only a heartbeat (its issue time is checked by the
            // subscriber against what it last sent).
        } else if let Some(i) = self.diffs.iter().position(|d| d.base_seq == have_seq && d.base_tag == have_tag) {
            out.extend(self.diffs.iter().skip(i).cloned());
        } else if let Some(snap) = self.snapshot.as_ref().filter(|s| self.chains_from(s)) {
            out.push(snap.clone());
            out.extend(self.diffs.iter().filter(|d| d.base_seq >= snap.seq).cloned());
        } else {
            // No snapshot this cache can bring a newcomer up from (see `trim`).
            return Vec::new();
        }
        // A catch-up ends with the latest heartbeat: on a quiet resource the
        // snapshot and diffs may be older than their expiry, and without it a
        // new subscriber would hold nothing usable until the next heartbeat.
        let last_issued = out.last().map_or(i64::MIN, |e| e.issued_at_ms);
        out.extend(self.heartbeat.iter().filter(|h| h.seq == self.seq && h.issued_at_ms > last_issued).cloned());
        out
    }

    /// True when the diffs after `snap` form one chain from it to `seq`.
    fn chains_from(&self, snap: &Entry) -> bool {
        let mut at = (snap.seq, snap.tag);
        for d in self.diffs.iter().filter(|d| d.seq > snap.seq) {
            if (d.base_seq, d.base_tag) != at {
                return false;
            }
            at = (d.seq, d.tag);
        }
        at == (self.seq, self.tag)
    }

    /// True when a newcomer's catch-up has become costlier than a fresh
    /// snapshot would make it: more than `ring` diffs after the snapshot, more
    /// diff bytes than the snapshot itself, or no usable snapshot at all.
    fn wants_snapshot(&self, ring: usize) -> bool {
        let Some(snap) = self.snapshot.as_ref().filter(|s| self.chains_from(s)) else { return self.seq > 0 };
        let after = self.diffs.iter().filter(|d| d.base_seq >= snap.seq);
        let (n, bytes) = after.fold((0, 0), |(n, b), d| (n + 1, b + d.wire_len()));
        n > ring || (n > 1 && bytes > snap.wire_len())
    }
}

struct Channel {
    kind: Mutex<Option<Kind>>,
    // A std Mutex: held only for short, synchronous cache updates, never across .await.
    cache: Mutex<Cache>,
}

/// Per-resource cached state as seen from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceStatus {
    /// The resource.
    pub resource_id: ResourceId,
    /// Its kind, once known.
    pub kind: Option<Kind>,
    /// Cached seq (0 = nothing yet).
    pub seq: u64,
    /// Cached tag.
    pub tag: Tag,
    /// Seq of the cached snapshot.
    pub snapshot_seq: u64,
    /// Diffs in the ring.
    pub ring_len: usize,
    /// Expiry of the newest cached update or heartbeat.
    pub expires_at_ms: i64,
}

/// The fan-out engine shared by the origin and every RProxy.
pub struct Hub {
    cfg: HubConfig,
    channels: DashMap<ResourceId, Arc<Channel>>,
    live: broadcast::Sender<Arc<Entry>>,
    // Serialises publish so cache order and live order agree.
    publish_lock: Mutex<()>,
    subscribers: Arc<AtomicU64>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// Signals that a resource's snapshot is far behind its ring (an RProxy
    /// refreshes it with a pull from upstream).
    snapshot_wanted: tokio::sync::Notify,
    /// The current signed directory as a pre-encoded frame: every stream
    /// sends it first and again whenever it is replaced.
    directory: tokio::sync::watch::Sender<Option<pb::SubscribeResponse>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("resources", &self.channels.len()).finish()
    }
}

impl Hub {
    /// A hub whose subscriber streams end when `shutdown` is cancelled.
    pub fn new(cfg: HubConfig, shutdown: CancellationToken) -> Arc<Hub> {
        m::describe();
        Arc::new(Hub {
            channels: DashMap::new(),
            live: broadcast::channel(cfg.live_buffer.max(1)).0,
            directory: tokio::sync::watch::channel(None).0,
            publish_lock: Mutex::new(()),
            subscribers: Arc::new(AtomicU64::new(0)),
            shutdown,
            tasks: TaskTracker::new(),
            snapshot_wanted: tokio::sync::Notify::new(),
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.cfg
    }

    fn channel(&self, id: &ResourceId) -> Arc<Channel> {
        if let Some(c) = self.channels.get(id) {
            return c.clone();
        }
        self.channels
            .entry(id.clone())
            .or_insert_with(|| Arc::new(Channel { kind: Mutex::new(None), cache: Mutex::new(Cache::default()) }))
            .clone()
    }

    fn existing(&self, id: &str) -> Option<Arc<Channel>> {
        self.channels.get(id).map(|c| c.clone())
    }

    /// True when the hub has (or awaits) this resource.
    pub fn contains(&self, id: &str) -> bool {
        self.channels.contains_key(id)
    }

    /// Declares a resource (so subscribers may ask for it before its first update).
    pub fn declare(&self, id: &ResourceId) {
        self.channel(id);
    }

    /// Adds an update to the cache and sends it to live subscribers.
    pub fn publish(&self, entry: Arc<Entry>) -> Result<(), PublishError> {
        self.publish_batch(vec![entry])
    }

    /// Adds several updates as one step: no subscriber's catch-up sees some of
    /// them without the others (a network map and the cost maps re-bound to
    /// it), and live subscribers get them in this order. Entries the cache
    /// cannot take are skipped and the first error is returned; the rest go in.
    pub fn publish_batch(&self, entries: Vec<Arc<Entry>>) -> Result<(), PublishError> {
        let _order = self.publish_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut first_error = None;
        for entry in entries {
            match self.cache_entry(&entry) {
                Ok(broadcast) => {
                    metrics::counter!(m::UPDATES_IN, "kind" => entry.kind.as_str()).increment(1);
                    if broadcast {
                        // No receivers is fine: nobody is subscribed yet.
                        let _ = self.live.send(entry);
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Replaces the cached snapshot with a fresher one of a version the cached
    /// chain already holds (an RProxy's refresh pulled from upstream). Never
    /// moves the resource forward: new versions come only through the
    /// verified subscription, whose verifier checks their dependencies.
    pub fn refresh_snapshot(&self, entry: Arc<Entry>) -> Result<(), PublishError> {
        let _order = self.publish_lock.lock().unwrap_or_else(|e| e.into_inner());
        let cached = self
            .existing(entry.resource_id.as_str())
            .map_or(0, |ch| ch.cache.lock().unwrap_or_else(|e| e.into_inner()).seq);
        if entry.kind != UpdateKind::Snapshot || entry.seq > cached {
            return Err(PublishError::Old { resource: entry.resource_id.to_string(), cached, seq: entry.seq });
        }
        self.cache_entry(&entry).map(|_| ())
    }

    /// Puts one entry in its resource's cache (publish lock held). True when
    /// live subscribers should get it.
    fn cache_entry(&self, entry: &Arc<Entry>) -> Result<bool, PublishError> {
        let ch = self.channel(&entry.resource_id);
        *ch.kind.lock().unwrap_or_else(|e| e.into_inner()) = Some(entry.resource_kind);
        let mut c = ch.cache.lock().unwrap_or_else(|e| e.into_inner());
        let old = |cached| PublishError::Old { resource: entry.resource_id.to_string(), cached, seq: entry.seq };
        match entry.kind {
            UpdateKind::Snapshot => {
                if entry.seq > c.seq {
                    // A jump: the ring no longer ends at the cached seq.
                    c.diffs.clear();
                    c.seq = entry.seq;
                    c.tag = entry.tag;
                    c.snapshot = Some(entry.clone());
                    Ok(true)
                } else if c.snapshot.as_ref().is_none_or(|s| entry.seq >= s.seq || !c.chains_from(s))
                    && ((entry.seq == c.seq && entry.tag == c.tag)
                        || c.diffs.iter().any(|d| d.base_seq == entry.seq && d.base_tag == entry.tag))
                {
                    // A fresher snapshot of a version the ring continues from.
                    c.snapshot = Some(entry.clone());
                    self.trim(&mut c);
                    Ok(false)
                } else {
                    Err(old(c.seq))
                }
            }
            UpdateKind::Diff => {
                if entry.seq <= c.seq {
                    return Err(old(c.seq));
                }
                if entry.base_seq != c.seq || entry.base_tag != c.tag {
                    return Err(PublishError::Gap {
                        resource: entry.resource_id.to_string(),
                        cached: c.seq,
                        base_seq: entry.base_seq,
                        seq: entry.seq,
                    });
                }
                c.seq = entry.seq;
                c.tag = entry.tag;
                c.diffs.push_back(entry.clone());
                self.trim(&mut c);
                Ok(true)
            }
            UpdateKind::Heartbeat => {
                if entry.seq != c.seq || entry.tag != c.tag {
                    return Err(old(c.seq));
                }
                // Keep the newest signature only: an older heartbeat relayed
                // late must not replace a newer one.
                if c.heartbeat.as_ref().is_some_and(|h| h.seq == entry.seq && h.issued_at_ms >= entry.issued_at_ms) {
                    return Ok(false);
                }
                c.heartbeat = Some(entry.clone());
                Ok(true)
            }
        }
    }

    /// Evicts diffs beyond the ring size that the snapshot no longer needs.
    /// Diffs the snapshot needs are kept up to twice the ring; past that the
    /// oldest go and so does the snapshot they joined (a catch-up from nothing
    /// must be one unbroken chain: with none, newcomers get nothing here and
    /// try elsewhere, while resuming subscribers still get diffs) until a
    /// fresher snapshot arrives.
    fn trim(&self, c: &mut Cache) {
        let snap_seq = c.snapshot.as_ref().map_or(0, |s| s.seq);
        while c.diffs.len() > self.cfg.ring_size {
            match c.diffs.front() {
                Some(d) if d.seq <= snap_seq => {
                    c.diffs.pop_front();
                }
                Some(_) if c.diffs.len() <= self.cfg.ring_size * 2 => break,
                Some(_) => {
                    c.diffs.pop_front();
                    if c.snapshot.take().is_some() {
                        metrics::counter!(m::RING_OVERFLOW).increment(1);
                    }
                }
                None => break,
            }
        }
        if c.wants_snapshot(self.cfg.ring_size) {
            self.snapshot_wanted.notify_one();
        }
    }

    /// Replaces the directory every subscriber is sent (first on a new
    /// stream, at once on open ones): the origin's after each signing, an
    /// RProxy's after its upstream's was accepted.
    pub fn publish_directory(&self, signed: &pb::SignedDirectory) {
        let frame = pb::SubscribeResponse::pre_encoded(&pb::subscribe_response::Item::Directory(signed.clone()));
        self.directory.send_replace(Some(frame));
    }

    /// Replaces a resource's cache wholesale (the origin restoring its store
    /// after a restart): a `snapshot` checkpoint and the retained `diffs`,
    /// oldest first, one chain through the checkpoint up to the current version.
    pub fn restore(&self, snapshot: Arc<Entry>, diffs: Vec<Arc<Entry>>) {
        let _order = self.publish_lock.lock().unwrap_or_else(|e| e.into_inner());
        let ch = self.channel(&snapshot.resource_id);
        *ch.kind.lock().unwrap_or_else(|e| e.into_inner()) = Some(snapshot.resource_kind);
        let mut c = ch.cache.lock().unwrap_or_else(|e| e.into_inner());
        // The snapshot may be an older checkpoint: the diffs must be one chain
        // that passes through it.
        let contiguous = diffs.windows(2).all(|w| w[1].base_seq == w[0].seq && w[1].base_tag == w[0].tag);
        let through =
            diffs.iter().any(|d| (d.base_seq == snapshot.seq && d.base_tag == snapshot.tag) || d.seq == snapshot.seq);
        let (seq, tag, diffs) = match diffs.last() {
            Some(last) if contiguous && through && last.seq >= snapshot.seq => (last.seq, last.tag, diffs.into()),
            _ => (snapshot.seq, snapshot.tag, VecDeque::new()),
        };
        c.seq = seq;
        c.tag = tag;
        c.diffs = diffs;
        c.snapshot = Some(snapshot);
        c.heartbeat = None;
    }

    /// Resolves when some resource wants a fresher snapshot.
    pub async fn snapshot_wanted(&self) {
        self.snapshot_wanted.notified().await
    }

    /// True when `id`'s snapshot chain is about to break: the next diff would
    /// evict one the snapshot needs (or none is usable). The origin then signs
    /// a snapshot at once instead of waiting for its background checkpoint.
    pub fn snapshot_needed(&self, id: &str) -> bool {
        let Some(ch) = self.existing(id) else { return false };
        let c = ch.cache.lock().unwrap_or_else(|e| e.into_inner());
        match c.snapshot.as_ref().filter(|s| c.chains_from(s)) {
            Some(s) => c.diffs.iter().filter(|d| d.seq > s.seq).count() >= self.cfg.ring_size * 2,
            None => c.seq > 0,
        }
    }

    /// Resources whose cached snapshot should be refreshed (see `Cache::wants_snapshot`).
    pub fn stale_snapshots(&self) -> Vec<ResourceId> {
        self.channels
            .iter()
            .filter(|c| c.cache.lock().map(|c| c.wants_snapshot(self.cfg.ring_size)).unwrap_or(false))
            .map(|c| c.key().clone())
            .collect()
    }

    /// The latest snapshot of a resource and the diffs after it (what `Fetch`
    /// answers; a client applies them in order).
    pub fn latest(&self, id: &str) -> Option<Vec<Arc<Entry>>> {
        let ch = self.existing(id)?;
        let c = ch.cache.lock().unwrap_or_else(|e| e.into_inner());
        let v = c.catch_up(0, Tag::ZERO);
        (!v.is_empty()).then_some(v)
    }

    /// What the hub holds of each resource.
    pub fn status(&self) -> Vec<ResourceStatus> {
        let mut out: Vec<ResourceStatus> = self
            .channels
            .iter()
            .map(|ch| {
                let c = ch.cache.lock().unwrap_or_else(|e| e.into_inner());
                let newest = [c.diffs.back(), c.heartbeat.as_ref(), c.snapshot.as_ref()]
                    .into_iter()
                    .flatten()
                    .filter(|e| e.seq == c.seq)
                    .map(|e| e.expires_at_ms)
                    .max()
                    .unwrap_or(0);
                ResourceStatus {
                    resource_id: ch.key().clone(),
                    kind: *ch.kind.lock().unwrap_or_else(|e| e.into_inner()),
                    seq: c.seq,
                    tag: c.tag,
                    snapshot_seq: c.snapshot.as_ref().map_or(0, |s| s.seq),
                    ring_len: c.diffs.len(),
                    expires_at_ms: newest,
                }
            })
            .collect();
        out.sort_by(|a, b| a.resource_id.cmp(&b.resource_id));
        out
    }

    /// Current subscriber count.
    pub fn subscriber_count(&self) -> u64 {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// Starts a subscription: returns the receiving end of its frame queue. The
    /// stream ends on hub shutdown, when the receiver is dropped, or when the
    /// subscriber is disconnected as stuck. An empty `positions` subscribes to
    /// every resource the hub has.
    pub fn subscribe(
        self: &Arc<Self>,
        positions: Vec<(ResourceId, u64, Tag)>,
    ) -> Result<mpsc::Receiver<pb::SubscribeResponse>, SubscribeError> {
        if self.shutdown.is_cancelled() {
            return Err(SubscribeError::ShuttingDown);
        }
        let positions = if positions.is_empty() {
            self.channels.iter().map(|c| (c.key().clone(), 0, Tag::ZERO)).collect()
        } else {
            positions
        };
        if positions.len() > self.cfg.max_resources_per_subscription {
            return Err(SubscribeError::TooManyResources(positions.len(), self.cfg.max_resources_per_subscription));
        }
        let mut channels = Vec::with_capacity(positions.len());
        for (id, seq, tag) in positions {
            let ch = self.existing(id.as_str()).ok_or_else(|| SubscribeError::UnknownResource(id.to_string()))?;
            channels.push((id, ch, seq, tag));
        }
        // Catch up network maps before the cost maps that depend on them.
        channels
            .sort_by_key(|(_, ch, _, _)| *ch.kind.lock().unwrap_or_else(|e| e.into_inner()) != Some(Kind::NetworkMap));
        let live = self.live.subscribe();
        let guard = SubscriberGuard::register(&self.subscribers, self.cfg.max_subscribers)?;
        let (tx, rx) = mpsc::channel(self.cfg.queue.max(1));
        let hub = self.clone();
        let span = tracing::debug_span!(
            "subscriber",
            id = NEXT_SUBSCRIBER.fetch_add(1, Ordering::Relaxed),
            resources = channels.len()
        );
        self.tasks.spawn(
            async move {
                let _guard = guard;
                let mut sub = Subscriber { hub: &hub, tx, warned_at: None };
                if let Err(reason) = sub.run(channels, live).await {
                    debug!(reason, "subscription ended");
                    metrics::counter!(m::DISCONNECTED, "reason" => reason).increment(1);
                }
            }
            .instrument(span),
        );
        Ok(rx)
    }

    /// Waits until every subscriber task has ended (after shutdown is cancelled).
    pub async fn closed(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Counts a subscriber while alive; the gauge can never drift.
struct SubscriberGuard(Arc<AtomicU64>);

impl SubscriberGuard {
    fn register(count: &Arc<AtomicU64>, max: usize) -> Result<Self, SubscribeError> {
        let n = count.fetch_add(1, Ordering::Relaxed);
        if n as usize >= max {
            count.fetch_sub(1, Ordering::Relaxed);
            return Err(SubscribeError::Full(max));
        }
        metrics::gauge!(m::SUBSCRIBERS).increment(1.0);
        Ok(SubscriberGuard(count.clone()))
    }
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!(m::SUBSCRIBERS).decrement(1.0);
    }
}

/// What a subscriber has been sent of one resource.
struct Position {
    seq: u64,
    tag: Tag,
    /// Issue time of the last entry sent at `seq`: a heartbeat signed earlier
    /// would look like a rollback to the verifier, so it is not sent.
    issued_at_ms: i64,
}

struct Subscriber<'a> {
    hub: &'a Arc<Hub>,
    tx: mpsc::Sender<pb::SubscribeResponse>,
    warned_at: Option<tokio::time::Instant>,
}

impl Subscriber<'_> {
    async fn run(
        &mut self,
        channels: Vec<(ResourceId, Arc<Channel>, u64, Tag)>,
        live: broadcast::Receiver<Arc<Entry>>,
    ) -> Result<(), &'static str> {
        // `live` was subscribed before the cache is read, so nothing published
        // in between is missed (duplicates are skipped by seq).
        let mut live = BroadcastStream::new(live);
        let mut pos: std::collections::HashMap<ResourceId, Position> = channels
            .iter()
            .map(|(id, _, seq, tag)| (id.clone(), Position { seq: *seq, tag: *tag, issued_at_ms: i64::MIN }))
            .collect();
        // The directory first: its key list verifies what follows.
        let mut directory = self.hub.directory.subscribe();
        let first = directory.borrow_and_update().clone();
        if let Some(frame) = first {
            self.send_frame(&frame, "directory").await?;
        }
        self.resync_all(&channels, &mut pos).await?;
        loop {
            let next = tokio::select! {
                biased;
                _ = self.hub.shutdown.cancelled() => return Ok(()),
                _ = self.tx.closed() => return Ok(()),
                // A new directory before the updates it may be needed for.
                changed = directory.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let frame = directory.borrow_and_update().clone();
                    if let Some(frame) = frame {
                        self.send_frame(&frame, "directory").await?;
                    }
                    continue;
                }
                next = live.next() => next,
            };
            match next {
                None => return Ok(()),
                Some(Ok(entry)) => {
                    let Some(p) = pos.get_mut(&entry.resource_id) else { continue };
                    let follows = match entry.kind {
                        UpdateKind::Diff => entry.base_seq == p.seq && entry.base_tag == p.tag,
                        UpdateKind::Snapshot => entry.seq > p.seq,
                        UpdateKind::Heartbeat => {
                            entry.seq == p.seq && entry.tag == p.tag && entry.issued_at_ms > p.issued_at_ms
                        }
                    };
                    if follows {
                        self.send(&entry, p).await?;
                    } else if entry.seq > p.seq {
                        // A gap (we skipped something): resync from the cache.
                        self.resync_all(&channels, &mut pos).await?;
                    }
                }
                Some(Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n))) => {
                    metrics::counter!(m::LAGGED).increment(n);
                    self.warn_once(|| warn!(missed = n, "slow subscriber lost its live queue; resyncing"));
                    metrics::counter!(m::RESYNCS).increment(1);
                    self.resync_all(&channels, &mut pos).await?;
                }
            }
        }
    }

    /// Sends every resource's catch-up, read from the caches as one cut under
    /// the publish lock: a batch (a network map and its re-bound cost maps) is
    /// in all of them or in none.
    async fn resync_all(
        &mut self,
        channels: &[(ResourceId, Arc<Channel>, u64, Tag)],
        pos: &mut std::collections::HashMap<ResourceId, Position>,
    ) -> Result<(), &'static str> {
        let entries: Vec<Arc<Entry>> = {
            let _cut = self.hub.publish_lock.lock().unwrap_or_else(|e| e.into_inner());
            channels
                .iter()
                .filter_map(|(id, ch, _, _)| {
                    let p = pos.get(id)?;
                    Some(ch.cache.lock().unwrap_or_else(|e| e.into_inner()).catch_up(p.seq, p.tag))
                })
                .flatten()
                .collect()
        };
        for e in entries {
            let p = pos.get_mut(&e.resource_id).ok_or("unknown resource")?;
            if e.kind == UpdateKind::Heartbeat && e.issued_at_ms <= p.issued_at_ms {
                continue;
            }
            self.send(&e, p).await?;
        }
        Ok(())
    }

    /// Queues one frame, waiting at most the stuck deadline for room.
    async fn send_frame(&mut self, frame: &pb::SubscribeResponse, what: &str) -> Result<(), &'static str> {
        // Fast path: room in the queue, no timer needed.
        if let Ok(permit) = self.tx.try_reserve() {
            permit.send(frame.clone());
            return Ok(());
        }
        let permit = tokio::select! {
            biased;
            _ = self.hub.shutdown.cancelled() => return Err("shutdown"),
            r = tokio::time::timeout(self.hub.cfg.stuck_deadline, self.tx.reserve()) => match r {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => return Err("closed"),
                Err(_) => {
                    warn!(frame = what, "subscriber stuck past its deadline; disconnecting");
                    return Err("stuck");
                }
            },
        };
        permit.send(frame.clone());
        Ok(())
    }

    async fn send(&mut self, entry: &Entry, p: &mut Position) -> Result<(), &'static str> {
        for frame in &entry.frames {
            self.send_frame(frame, entry.resource_id.as_str()).await?;
        }
        metrics::counter!(m::UPDATES_OUT).increment(1);
        if entry.kind != UpdateKind::Heartbeat {
            p.seq = entry.seq;
            p.tag = entry.tag;
        }
        p.issued_at_ms = entry.issued_at_ms;
        debug!(resource = %entry.resource_id, seq = entry.seq, kind = entry.kind.as_str(), "sent");
        Ok(())
    }

    fn warn_once(&mut self, f: impl FnOnce()) {
        let now = tokio::time::Instant::now();
        if self.warned_at.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            self.warned_at = Some(now);
            f();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use altocast_proto::{
        CostMapBuilder, CostType, MapState, OriginKey, Pid, Signed,
        wire::update::{Signer, Version},
    };
    use prost::Message as _;

    fn rid() -> ResourceId {
        ResourceId::new("cm").expect("id")
    }

    fn version(seq: u64) -> Version {
        let p = |s: &str| Pid::new(s).expect("pid");
        let mut b = CostMapBuilder::new(CostType::routingcost(), None);
        b.row(p("a"), vec![(p("b"), seq as f64)]);
        Version { seq, state: MapState::Cost(b.build().expect("cm")), dependencies: vec![] }
    }

    fn entry(s: Signed) -> Arc<Entry> {
        let u = pb::Update::decode(s.update.body.clone()).expect("decode");
        Arc::new(Entry::new(&u, s.update, s.chunks).expect("entry"))
    }

    struct Origin {
        signer: Signer,
        versions: Vec<Version>,
    }

    impl Origin {
        fn new() -> Self {
            Origin { signer: Signer::new(OriginKey::from_seed([1; 32]), 60_000), versions: vec![version(1)] }
        }
        fn snapshot(&self) -> Arc<Entry> {
            entry(self.signer.snapshot(&rid(), self.versions.last().expect("v"), 0))
        }
        fn next_diff(&mut self) -> Arc<Entry> {
            let from = self.versions.last().expect("v").clone();
            let to = version(from.seq + 1);
            let d = from.state.diff(&to.state).expect("diff");
            let e = entry(self.signer.diff(&rid(), &from, &to, &d, 0));
            self.versions.push(to);
            e
        }
        fn heartbeat(&self) -> Arc<Entry> {
            entry(self.signer.heartbeat(&rid(), self.versions.last().expect("v"), 1))
        }
        fn tag(&self, seq: u64) -> Tag {
            self.versions[seq as usize - 1].state.tag()
        }
    }

    fn hub(cfg: HubConfig) -> (Arc<Hub>, CancellationToken) {
        let t = CancellationToken::new();
        (Hub::new(cfg, t.clone()), t)
    }

    /// (kind, seq) of every update frame received so far.
    fn drain(rx: &mut mpsc::Receiver<pb::SubscribeResponse>) -> Vec<(UpdateKind, u64)> {
        let mut out = Vec::new();
        while let Ok(f) = rx.try_recv() {
            // Frames are pre-encoded: read them as a subscriber would.
            let f = pb::SubscribeResponse::decode(f.encode_to_vec().as_slice()).expect("frame decodes");
            if let Some(pb::subscribe_response::Item::Update(s)) = f.item {
                let u = pb::Update::decode(s.body).expect("decode");
                let e = Entry::new(&u, pb::SignedUpdate::default(), vec![]).expect("entry");
                out.push((e.kind, e.seq));
            }
        }
        out
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn resume_cases_heartbeat_diffs_snapshot() {
        let (hub, _t) = hub(HubConfig { ring_size: 3, ..Default::default() });
        let mut o = Origin::new();
        hub.publish(o.snapshot()).expect("snapshot");
        for _ in 0..2 {
            hub.publish(o.next_diff()).expect("diff");
        }
        hub.publish(o.heartbeat()).expect("hb");
        // Up to date → only the heartbeat.
        let mut rx = hub.subscribe(vec![(rid(), 3, o.tag(3))]).expect("sub");
        settle().await;
        assert_eq!(drain(&mut rx), vec![(UpdateKind::Heartbeat, 3)]);
        // Behind by one, still in the ring → the diff, then the latest
        // heartbeat (the diff alone may already have expired).
        let mut rx = hub.subscribe(vec![(rid(), 2, o.tag(2))]).expect("sub");
        settle().await;
        assert_eq!(drain(&mut rx), vec![(UpdateKind::Diff, 3), (UpdateKind::Heartbeat, 3)]);
        // Nothing held → snapshot, diffs, heartbeat.
        let mut rx = hub.subscribe(vec![(rid(), 0, Tag::ZERO)]).expect("sub");
        settle().await;
        assert_eq!(
            drain(&mut rx),
            vec![(UpdateKind::Snapshot, 1), (UpdateKind::Diff, 2), (UpdateKind::Diff, 3), (UpdateKind::Heartbeat, 3)]
        );
        // A bogus tag at a real seq gets the snapshot path, never a diff that would not apply.
        let mut rx = hub.subscribe(vec![(rid(), 2, Tag([9; 32]))]).expect("sub");
        settle().await;
        assert_eq!(drain(&mut rx)[0], (UpdateKind::Snapshot, 1));
        // Then live updates.
        hub.publish(o.next_diff()).expect("diff");
        settle().await;
        assert_eq!(drain(&mut rx).last(), Some(&(UpdateKind::Diff, 4)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_never_follows_a_newer_snapshot_of_its_version() {
        // The heartbeat round signs at T0, the background checkpoint of the
        // same version at T1 > T0: a newcomer must get the snapshot alone,
        // and a subscriber that got the snapshot never gets the older heartbeat.
        let (hub, _t) = hub(HubConfig::default());
        let o = Origin::new();
        hub.publish(o.snapshot()).expect("snapshot"); // issued at 0
        let v = o.versions.last().expect("v");
        hub.publish(entry(o.signer.heartbeat(&rid(), v, 10))).expect("hb T0");
        hub.publish(entry(o.signer.snapshot(&rid(), v, 20))).expect("checkpoint T1");
        let mut rx = hub.subscribe(vec![(rid(), 0, Tag::ZERO)]).expect("sub");
        settle().await;
        assert_eq!(drain(&mut rx), vec![(UpdateKind::Snapshot, 1)]);
        // An older heartbeat relayed late is dropped; a newer one goes to everyone.
        hub.publish(entry(o.signer.heartbeat(&rid(), v, 5))).expect("old hb is ignored");
        settle().await;
        assert_eq!(drain(&mut rx), vec![]);
        hub.publish(entry(o.signer.heartbeat(&rid(), v, 30))).expect("hb T2");
        settle().await;
        assert_eq!(drain(&mut rx), vec![(UpdateKind::Heartbeat, 1)]);
        let mut late = hub.subscribe(vec![(rid(), 0, Tag::ZERO)]).expect("sub");
        settle().await;
        assert_eq!(drain(&mut late), vec![(UpdateKind::Snapshot, 1), (UpdateKind::Heartbeat, 1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cache_that_lost_its_snapshot_chain_offers_newcomers_nothing_rather_than_a_broken_chain() {
        let (hub, _t) = hub(HubConfig { ring_size: 2, ..Default::default() });
        let mut o = Origin::new();
        hub.publish(o.snapshot()).expect("snapshot");
        // No fresher snapshot ever arrives: past twice the ring the chain from
        // the snapshot is gone.
        for _ in 0..6 {
            hub.publish(o.next_diff()).expect("diff");
        }
        assert_eq!(hub.stale_snapshots(), vec![rid()]);
        let mut rx = hub.subscribe(vec![(rid(), 0, Tag::ZERO)]).expect("sub");
        settle().await;
        assert_eq!(drain(&mut rx), vec![], "a newcomer must never get a chain with a hole");
        // A resumer still gets its diffs; a fresh snapshot restores newcomers.
        let mut rx = hub.subscribe(vec![(rid(), 6, o.tag(6))]).expect("sub");
        settle().await;
        assert_eq!(drain(&mut rx), vec![(UpdateKind::Diff, 7)]);
        hub.publish(o.snapshot()).expect("fresh snapshot");
        let mut rx = hub.subscribe(vec![(rid(), 0, Tag::ZERO)]).expect("sub");
        settle().await;
        assert_eq!(drain(&mut rx), vec![(UpdateKind::Snapshot, 7)]);
    }

    #[tokio::test(start_paused = true)]
    async fn ring_eviction_falls_back_to_snapshot() {
        let (hub, _t) = hub(HubConfig { ring_size: 2, ..Default::default() });
        let mut o = Origin::new();
        hub.publish(o.snapshot()).expect("snapshot");
        for _ in 0..5 {
            hub.publish(o.next_diff()).expect("diff");
        }
        // The origin refreshes its snapshot; diffs before it can now go.
        hub.publish(o.snapshot()).expect("fresh snapshot");
        hub.publish(o.next_diff()).expect("diff");
        let st = &hub.status()[0];
        assert_eq!((st.seq, st.snapshot_seq), (7, 6));
        assert!(st.ring_len <= 2, "ring holds {}", st.ring_len);
        // seq 2 is evicted → snapshot 6 + diff 7.
        let mut rx = hub.subscribe(vec![(rid(), 2, o.tag(2))]).expect("sub");
        settle().await;
        assert_eq!(drain(&mut rx), vec![(UpdateKind::Snapshot, 6), (UpdateKind::Diff, 7)]);
        // seq 6 still in ring → just the diff.
        let mut rx = hub.subscribe(vec![(rid(), 6, o.tag(6))]).expect("sub");
        settle().await;
        assert_eq!(drain(&mut rx), vec![(UpdateKind::Diff, 7)]);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_subscriber_is_resynced_without_slowing_others() {
        let (hub, _t) = hub(HubConfig { ring_size: 64, live_buffer: 4, queue: 2, ..Default::default() });
        let mut o = Origin::new();
        hub.publish(o.snapshot()).expect("snapshot");
        let mut slow = hub.subscribe(vec![(rid(), 1, o.tag(1))]).expect("slow");
        let mut fast = hub.subscribe(vec![(rid(), 1, o.tag(1))]).expect("fast");
        let mut fast_seen = Vec::new();
        for _ in 0..20 {
            hub.publish(o.next_diff()).expect("diff");
            settle().await;
            fast_seen.extend(drain(&mut fast));
        }
        // The fast one got every diff, in order, while the slow one read nothing.
        assert_eq!(fast_seen, (2..=21).map(|s| (UpdateKind::Diff, s)).collect::<Vec<_>>());
        // The slow one drains: it lagged, was resynced from the ring, and ends
        // at the latest version with a contiguous chain.
        let mut got = Vec::new();
        for _ in 0..50 {
            got.extend(drain(&mut slow));
            settle().await;
        }
        let seqs: Vec<u64> = got.iter().map(|g| g.1).collect();
        assert_eq!(seqs.last(), Some(&21));
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "chain has a hole: {seqs:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn stuck_subscriber_is_disconnected_and_gauge_returns_to_zero() {
        let deadline = Duration::from_secs(5);
        let (hub, _t) = hub(HubConfig { queue: 1, stuck_deadline: deadline, ..Default::default() });
        let mut o = Origin::new();
        hub.publish(o.snapshot()).expect("snapshot");
        let mut stuck = hub.subscribe(vec![(rid(), 0, Tag::ZERO)]).expect("sub");
        hub.publish(o.next_diff()).expect("diff");
        hub.publish(o.next_diff()).expect("diff");
        settle().await;
        assert_eq!(hub.subscriber_count(), 1);
        tokio::time::sleep(deadline + Duration::from_secs(1)).await;
        settle().await;
        assert_eq!(hub.subscriber_count(), 0, "stuck subscriber still registered");
        // Its stream ends after what was queued.
        let mut n = 0;
        while stuck.recv().await.is_some() {
            n += 1;
        }
        assert_eq!(n, 1);
        // A subscriber that simply goes away unregisters too.
        let rx = hub.subscribe(vec![(rid(), 0, Tag::ZERO)]).expect("sub");
        settle().await;
        assert_eq!(hub.subscriber_count(), 1);
        drop(rx);
        settle().await;
        assert_eq!(hub.subscriber_count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_every_stream() {
        let (hub, token) = hub(HubConfig::default());
        let o = Origin::new();
        hub.publish(o.snapshot()).expect("snapshot");
        let mut rxs: Vec<_> = (0..10).map(|_| hub.subscribe(vec![(rid(), 0, Tag::ZERO)]).expect("sub")).collect();
        settle().await;
        token.cancel();
        tokio::time::timeout(Duration::from_secs(1), hub.closed()).await.expect("all subscriber tasks end");
        for rx in &mut rxs {
            while rx.recv().await.is_some() {}
        }
        assert_eq!(hub.subscriber_count(), 0);
        assert!(matches!(hub.subscribe(vec![]), Err(SubscribeError::ShuttingDown)));
    }

    #[tokio::test(start_paused = true)]
    async fn refuses_gaps_unknown_resources_and_limits() {
        let (hub, _t) = hub(HubConfig { max_subscribers: 1, ..Default::default() });
        let mut o = Origin::new();
        hub.publish(o.snapshot()).expect("snapshot");
        let _skipped = o.next_diff();
        assert!(matches!(hub.publish(o.next_diff()), Err(PublishError::Gap { .. })));
        assert!(matches!(
            hub.subscribe(vec![(ResourceId::new("nope").expect("id"), 0, Tag::ZERO)]),
            Err(SubscribeError::UnknownResource(_))
        ));
        let _a = hub.subscribe(vec![]).expect("first");
        assert!(matches!(hub.subscribe(vec![]), Err(SubscribeError::Full(1))));
    }
}
