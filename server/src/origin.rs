//! The origin's core: ingest an RFC 7285 JSON body, validate it, diff it
//! against the current version, assign the next seq, sign, persist (fsync),
//! then hand the signed bytes to the hub. Bad input never changes state.
//!
//! When a network map changes, every cost map computed against it is re-bound
//! to the new version (same costs, new `dependent-vtags`) and published right
//! after it, so a subscriber never sees a cost map pointing at a network map
//! version it cannot have.

use std::{collections::BTreeMap, sync::Arc, sync::Mutex, time::Duration};

use altocast_proto::{
    Kind, MapState, ModelError, ResourceId, Signed, Tag, TrustedKeys, Verifier, json, pb,
    update::{Dependency, Signer, Version, sign_directory},
};
use altocast_rproxy::hub::{Entry, Hub};
use arc_swap::ArcSwapOption;
use tracing::{info, warn};

use crate::store::{Record, Store};

/// Origin settings.
#[derive(Debug, Clone)]
pub struct OriginConfig {
    /// How long each update keeps its resource fresh.
    pub ttl: Duration,
    /// Diffs retained per resource (in the store and the hub ring).
    pub history_depth: u64,
    /// Largest JSON body accepted.
    pub max_body: usize,
    /// RProxy URLs advertised in the directory.
    pub rproxies: Vec<String>,
    /// Write snapshot checkpoints in the background (off only in tests, to
    /// exercise recovery from the diffs).
    pub checkpoints: bool,
}

impl Default for OriginConfig {
    fn default() -> Self {
        OriginConfig {
            ttl: Duration::from_secs(60),
            history_depth: 64,
            max_body: 64 << 20,
            rproxies: Vec::new(),
            checkpoints: true,
        }
    }
}

/// Why an input was rejected. The published state is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The body is larger than the limit.
    #[error("body is {len} bytes; the limit is {limit}")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The map is invalid; the message names the field.
    #[error(transparent)]
    Invalid(#[from] ModelError),
    /// The body's kind differs from the resource's.
    #[error("resource {id} is a {existing}, but the body is a {got}")]
    KindMismatch {
        /// The resource.
        id: String,
        /// Its kind.
        existing: &'static str,
        /// The body's kind.
        got: &'static str,
    },
    /// A cost map's `dependent-vtags` names no network map published here.
    #[error("meta.dependent-vtags names network map {0:?}, which this origin does not publish")]
    UnknownNetworkMap(String),
    /// A cost map arrived with no network map to bind it to.
    #[error("a cost map needs a network map: publish the network map first, or name it in meta.dependent-vtags")]
    NoNetworkMap,
    /// The store failed; nothing was published.
    #[error("store: {0:#}")]
    Store(anyhow::Error),
}

/// What an ingest did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Same content as the current version: no new version.
    Unchanged {
        /// Current seq.
        seq: u64,
        /// Current tag.
        tag: Tag,
    },
    /// A new version was made durable and published.
    Published {
        /// New seq.
        seq: u64,
        /// New tag.
        tag: Tag,
        /// Entries changed.
        entries_changed: usize,
        /// Bytes of the update on the wire.
        bytes: usize,
    },
}

struct Current {
    version: Version,
    source_tag: String,
}

/// The origin.
pub struct Origin {
    cfg: OriginConfig,
    signer: Signer,
    store: Store,
    hub: Arc<Hub>,
    directory: Arc<ArcSwapOption<pb::SignedDirectory>>,
    // One writer at a time: versions are assigned and persisted in order.
    state: Mutex<BTreeMap<ResourceId, Current>>,
    /// Resources whose snapshot checkpoint is behind (see [`checkpoint_worker`]);
    /// `None` once closed.
    checkpoints: Mutex<Option<std::sync::mpsc::Sender<ResourceId>>>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin").field("key", self.signer.key().id()).finish()
    }
}

/// Unix ms.
pub fn now_ms() -> i64 {
    altocast_client::now_ms()
}

/// A resource keeps its kind: a body of the other kind is refused.
fn check_kind(st: &BTreeMap<ResourceId, Current>, id: &ResourceId, want: Kind) -> Result<(), IngestError> {
    match st.get(id).map(|c| c.version.state.kind()) {
        Some(k) if k != want => {
            Err(IngestError::KindMismatch { id: id.to_string(), existing: k.as_str(), got: want.as_str() })
        }
        _ => Ok(()),
    }
}

impl Origin {
    /// Opens the origin over `store`, restoring every resource and its
    /// retained history into `hub`.
    pub fn open(
        cfg: OriginConfig,
        signer: Signer,
        store: Store,
        hub: Arc<Hub>,
        directory: Arc<ArcSwapOption<pb::SignedDirectory>>,
    ) -> anyhow::Result<Arc<Origin>> {
        let verifier = Verifier::accepting_all(TrustedKeys::new([signer.key().public()]), Default::default());
        let mut state = BTreeMap::new();
        for (id, rec) in store.resources()? {
            let snap = rec.snapshot.clone().unwrap_or_default();
            let opened = verifier
                .open(&snap)
                .map_err(|e| anyhow::anyhow!("stored snapshot of {id} does not verify with this origin's key: {e}"))?;
            let st = Verifier::check_snapshot_content(&opened, &rec.chunks)
                .map_err(|e| anyhow::anyhow!("stored snapshot of {id} is corrupt: {e}"))?;
            let snapshot = Arc::new(
                Entry::new(&opened.update, snap, rec.chunks.clone())
                    .ok_or_else(|| anyhow::anyhow!("stored snapshot of {id} has no payload"))?,
            );
            // The current state is the checkpoint plus the diffs after it, each
            // re-verified against our own key and its signed tag.
            let mut cur = Version { seq: opened.update.seq, state: st, dependencies: dependencies(&opened.update) };
            let mut diffs = Vec::new();
            for d in store.history(&id)? {
                let o = verifier.open(&d).map_err(|e| anyhow::anyhow!("stored history of {id}: {e}"))?;
                if o.update.seq > cur.seq {
                    cur = replay(&cur, &o.update)
                        .map_err(|e| anyhow::anyhow!("stored diff into {id} seq {}: {e}", o.update.seq))?;
                }
                if let Some(e) = Entry::new(&o.update, d, Vec::new()) {
                    diffs.push(Arc::new(e));
                }
            }
            if cur.seq != rec.seq {
                anyhow::bail!("store of {id} is at seq {} but its history reaches seq {}", rec.seq, cur.seq);
            }
            info!(resource = %id, seq = rec.seq, checkpoint = rec.snapshot_seq, history = diffs.len(), "restored");
            hub.restore(snapshot, diffs);
            let rid = ResourceId::new(&id)?;
            state.insert(rid, Current { version: cur, source_tag: rec.source_tag });
        }
        let behind: Vec<ResourceId> = store
            .resources()?
            .into_iter()
            .filter(|(_, r)| r.snapshot_seq < r.seq)
            .filter_map(|(id, _)| ResourceId::new(&id).ok())
            .collect();
        let (tx, rx) = std::sync::mpsc::channel();
        let origin = Arc::new_cyclic(|weak: &std::sync::Weak<Origin>| {
            let weak = weak.clone();
            let worker = std::thread::Builder::new()
                .name("altocast-checkpoint".into())
                .spawn(move || checkpoint_worker(weak, rx))
                .map_err(|e| warn!(error = %e, "no checkpoint thread; snapshots are checkpointed on restart only"))
                .ok();
            Origin {
                cfg,
                signer,
                store,
                hub,
                directory,
                state: Mutex::new(state),
                checkpoints: Mutex::new(Some(tx)),
                worker: Mutex::new(worker),
            }
        });
        for id in behind {
            origin.request_checkpoint(id);
        }
        origin.heartbeat_all(now_ms());
        origin.sign_directory();
        Ok(origin)
    }

    fn request_checkpoint(&self, id: ResourceId) {
        if self.cfg.checkpoints
            && let Some(tx) = self.checkpoints.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
        {
            let _ = tx.send(id);
        }
    }

    /// Stops the checkpoint worker after the work queued so far and waits for
    /// it, so that dropping the origin then releases the store. Blocking.
    pub fn close(&self) {
        self.checkpoints.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = w.join();
        }
    }

    /// Signs a snapshot of `id`'s current version, stores it as the checkpoint
    /// and refreshes the hub's cached snapshot.
    fn checkpoint(&self, id: &ResourceId) {
        let Some(v) = self.current(id.as_str()) else { return };
        let snap = self.signer.snapshot(id, &v, now_ms());
        if let Err(e) =
            self.store.checkpoint(id.as_str(), v.seq, snap.update.clone(), snap.chunks.clone(), self.cfg.history_depth)
        {
            warn!(resource = %id, error = %e, "checkpoint failed; the diffs since the last one stay in the store");
            return;
        }
        // The hub takes it if its chain continues from this version.
        let _ = self.hub.publish(Arc::new(Entry::from_signed(snap)));
    }

    /// The signer's public key.
    pub fn public_key(&self) -> altocast_proto::PublicKey {
        self.signer.key().public()
    }

    /// The hub it publishes into.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Resources and their current seq and tag.
    pub fn resources(&self) -> Vec<(ResourceId, Kind, u64, Tag)> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.iter().map(|(k, c)| (k.clone(), c.version.state.kind(), c.version.seq, c.version.state.tag())).collect()
    }

    /// The current version of `id`.
    pub fn current(&self, id: &str) -> Option<Version> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.get(id).map(|c| c.version.clone())
    }

    /// Ingests an RFC 7285 JSON body as resource `id`. Blocking (CPU and fsync):
    /// call from a blocking thread.
    pub fn ingest(&self, id: &ResourceId, body: &[u8]) -> Result<Outcome, IngestError> {
        self.ingest_with(id, body, "body", |o, st| {
            let is_cost = match st.get(id).map(|c| c.version.state.kind()) {
                Some(k) => k == Kind::CostMap,
                None => looks_like_cost_map(body),
            };
            if is_cost { o.ingest_cost_map(st, id, body) } else { o.ingest_network_map(st, id, body) }
        })
    }

    /// Ingests an RFC 7396 merge patch of cost map `id`'s current body (RFC
    /// 8895's update form). Blocking, like [`Origin::ingest`].
    pub fn ingest_patch(&self, id: &ResourceId, body: &[u8]) -> Result<Outcome, IngestError> {
        self.ingest_with(id, body, "patch", |o, st| o.apply_patch(st, id, body))
    }

    /// The size limit, the writer lock, and the logs and metrics of one ingest.
    fn ingest_with(
        &self,
        id: &ResourceId,
        body: &[u8],
        what: &'static str,
        ingest: impl FnOnce(&Self, &mut BTreeMap<ResourceId, Current>) -> Result<Outcome, IngestError>,
    ) -> Result<Outcome, IngestError> {
        if body.len() > self.cfg.max_body {
            return Err(IngestError::TooLarge { len: body.len(), limit: self.cfg.max_body });
        }
        let t0 = std::time::Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let result = ingest(self, &mut st);
        drop(st);
        match &result {
            Ok(Outcome::Published { seq, entries_changed, .. }) => {
                metrics::histogram!("altocast_origin_publish_seconds").record(t0.elapsed().as_secs_f64());
                info!(resource = %id, seq, entries_changed, ms = t0.elapsed().as_millis() as u64, what, "published");
                self.sign_directory();
            }
            Ok(Outcome::Unchanged { seq, .. }) => info!(resource = %id, seq, what, "unchanged; no new version"),
            Err(e) => {
                metrics::counter!("altocast_origin_rejected_total").increment(1);
                warn!(resource = %id, error = %e, what, "input rejected; published state unchanged");
            }
        }
        result
    }

    fn apply_patch(
        &self,
        st: &mut BTreeMap<ResourceId, Current>,
        id: &ResourceId,
        body: &[u8],
    ) -> Result<Outcome, IngestError> {
        let Some(MapState::Cost(cur)) = st.get(id).map(|c| &c.version.state) else {
            return Err(IngestError::Invalid(ModelError::DiffMismatch(format!(
                "{id} is not a published cost map; publish its full body first"
            ))));
        };
        let patch = json::parse_cost_map_patch(cur, body)?;
        let next = cur.apply(&patch.diff)?;
        let dep = cur.depends_on().cloned().ok_or(IngestError::NoNetworkMap)?;
        let nm_id = match patch.dependent_vtags.as_ref().and_then(|v| v.first()) {
            Some((nm, _)) => {
                ResourceId::new(nm).map_err(|_| IngestError::UnknownNetworkMap(nm.chars().take(80).collect()))?
            }
            None => dep.resource_id.clone(),
        };
        let nm_cur = st.get(&nm_id).ok_or_else(|| IngestError::UnknownNetworkMap(nm_id.to_string()))?;
        let MapState::Network(nm) = &nm_cur.version.state else {
            return Err(IngestError::UnknownNetworkMap(nm_id.to_string()));
        };
        if let Some((_, tag)) = patch.dependent_vtags.as_ref().and_then(|v| v.first())
            && !tag.eq_ignore_ascii_case(&nm.tag().to_hex())
            && *tag != nm_cur.source_tag
        {
            return Err(IngestError::Invalid(ModelError::DependentVtagMismatch {
                expected_id: nm_id.to_string(),
                expected: nm.tag().to_hex(),
                got_id: nm_id.to_string(),
                got: tag.clone(),
            }));
        }
        let next = next.with_dependency(Some(altocast_proto::VersionTag { resource_id: nm_id.clone(), tag: nm.tag() }));
        next.check_against(&nm_id, nm)?;
        let deps = vec![Dependency { resource_id: nm_id, seq: nm_cur.version.seq, tag: nm.tag() }];
        self.commit(st, id, MapState::Cost(next), deps, String::new())
    }

    fn ingest_network_map(
        &self,
        st: &mut BTreeMap<ResourceId, Current>,
        id: &ResourceId,
        body: &[u8],
    ) -> Result<Outcome, IngestError> {
        let doc = json::parse_network_map(body)?;
        check_kind(st, id, Kind::NetworkMap)?;
        let source_tag = doc.vtag.map(|v| v.1).unwrap_or_default();
        let state = MapState::Network(doc.map);
        let outcome = self.commit(st, id, state, Vec::new(), source_tag)?;
        if let Outcome::Published { seq, tag, .. } = &outcome {
            self.rebind_cost_maps(st, id, *seq, *tag);
        }
        Ok(outcome)
    }

    /// Re-publishes the cost maps computed against network map `nm_id` bound to
    /// its new version, when all their PIDs still exist in it.
    fn rebind_cost_maps(&self, st: &mut BTreeMap<ResourceId, Current>, nm_id: &ResourceId, seq: u64, tag: Tag) {
        let Some(MapState::Network(nm)) = st.get(nm_id).map(|c| c.version.state.clone()) else { return };
        let dependents: Vec<ResourceId> = st
            .iter()
            .filter(|(_, c)| c.version.state.depends_on().is_some_and(|d| d.resource_id == *nm_id && d.tag != tag))
            .map(|(k, _)| k.clone())
            .collect();
        for cm_id in dependents {
            let Some(MapState::Cost(cm)) = st.get(&cm_id).map(|c| c.version.state.clone()) else { continue };
            let rebound = cm.with_dependency(Some(altocast_proto::VersionTag { resource_id: nm_id.clone(), tag }));
            if let Err(e) = rebound.check_against(nm_id, &nm) {
                warn!(resource = %cm_id, error = %e, "cost map no longer fits its network map; keeping it on the previous version until a new cost map arrives");
                continue;
            }
            let deps = vec![Dependency { resource_id: nm_id.clone(), seq, tag }];
            if let Err(e) = self.commit(st, &cm_id, MapState::Cost(rebound), deps, String::new()) {
                warn!(resource = %cm_id, error = %e, "re-binding cost map failed");
            }
        }
    }

    fn ingest_cost_map(
        &self,
        st: &mut BTreeMap<ResourceId, Current>,
        id: &ResourceId,
        body: &[u8],
    ) -> Result<Outcome, IngestError> {
        let doc = json::parse_cost_map(body)?;
        check_kind(st, id, Kind::CostMap)?;
        let nm_id = match doc.dependent_vtags.first() {
            Some((nm, _)) => match ResourceId::new(nm) {
                Ok(r) if st.get(&r).is_some_and(|c| c.version.state.kind() == Kind::NetworkMap) => r,
                _ => return Err(IngestError::UnknownNetworkMap(nm.chars().take(80).collect())),
            },
            None => {
                let nms: Vec<&ResourceId> =
                    st.iter().filter(|(_, c)| c.version.state.kind() == Kind::NetworkMap).map(|(k, _)| k).collect();
                match nms.as_slice() {
                    [one] => (*one).clone(),
                    _ => return Err(IngestError::NoNetworkMap),
                }
            }
        };
        let nm_cur = &st[&nm_id];
        let MapState::Network(nm) = &nm_cur.version.state else { return Err(IngestError::NoNetworkMap) };
        let accepted: Vec<&str> =
            if nm_cur.source_tag.is_empty() { Vec::new() } else { vec![nm_cur.source_tag.as_str()] };
        let cm = doc.bind(&nm_id, nm, &accepted)?;
        let deps = vec![Dependency { resource_id: nm_id.clone(), seq: nm_cur.version.seq, tag: nm.tag() }];
        self.commit(st, id, MapState::Cost(cm), deps, String::new())
    }

    /// Makes `state` the next version of `id`: sign, persist, then publish.
    fn commit(
        &self,
        st: &mut BTreeMap<ResourceId, Current>,
        id: &ResourceId,
        state: MapState,
        dependencies: Vec<Dependency>,
        source_tag: String,
    ) -> Result<Outcome, IngestError> {
        let now = now_ms();
        let old = st.get(id);
        if let Some(c) = old
            && c.version.state.tag() == state.tag()
        {
            return Ok(Outcome::Unchanged { seq: c.version.seq, tag: c.version.state.tag() });
        }
        let next = Version { seq: old.map_or(1, |c| c.version.seq + 1), state, dependencies };
        let diff = old.and_then(|c| c.version.state.diff(&next.state).map(|d| (c, d)));
        let entries_changed = diff.as_ref().map_or(next.state.entry_count(), |(_, d)| d.entries_changed());
        let source_tag =
            if source_tag.is_empty() { old.map(|c| c.source_tag.clone()).unwrap_or_default() } else { source_tag };
        // Durable before anyone can see it: the signed diff (small), or the
        // snapshot for a version no diff can express.
        let edge: Signed = match diff {
            Some((c, d)) => {
                let edge = self.signer.diff(id, &c.version, &next, &d, now);
                self.store
                    .commit_diff(id.as_str(), next.seq, &edge.update, &source_tag, self.cfg.history_depth)
                    .map_err(IngestError::Store)?;
                edge
            }
            None => {
                let snap = self.signer.snapshot(id, &next, now);
                let rec = Record {
                    seq: next.seq,
                    snapshot: Some(snap.update.clone()),
                    chunks: snap.chunks.clone(),
                    source_tag: source_tag.clone(),
                    snapshot_seq: next.seq,
                };
                self.store.commit(id.as_str(), &rec, self.cfg.history_depth).map_err(IngestError::Store)?;
                snap
            }
        };
        let tag = next.state.tag();
        let bytes = edge.wire_len();
        let seq = next.seq;
        let is_diff = edge.kind == altocast_proto::UpdateKind::Diff;
        st.insert(id.clone(), Current { version: next, source_tag });
        if let Err(err) = self.hub.publish(Arc::new(Entry::from_signed(edge))) {
            warn!(resource = %id, error = %err, "hub refused an update");
        }
        if is_diff {
            // A fresh snapshot (store checkpoint, hub cache) follows off the hot path.
            self.request_checkpoint(id.clone());
        }
        metrics::counter!("altocast_origin_versions_total").increment(1);
        Ok(Outcome::Published { seq, tag, entries_changed, bytes })
    }

    /// Re-signs every resource's current version as a heartbeat.
    pub fn heartbeat_all(&self, now: i64) {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for (id, c) in st.iter() {
            let hb = self.signer.heartbeat(id, &c.version, now);
            if let Err(e) = self.hub.publish(Arc::new(Entry::from_signed(hb))) {
                warn!(resource = %id, error = %e, "heartbeat refused by the hub");
            }
        }
        metrics::counter!("altocast_origin_heartbeats_total").increment(st.len() as u64);
    }

    /// Signs and installs the directory for the current resources.
    fn sign_directory(&self) {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut resources: Vec<pb::DirectoryResource> = st
            .iter()
            .map(|(id, c)| pb::DirectoryResource {
                resource_id: id.to_string(),
                kind: match c.version.state.kind() {
                    Kind::NetworkMap => pb::ResourceKind::NetworkMap,
                    Kind::CostMap => pb::ResourceKind::CostMap,
                } as i32,
                cost_type: c.version.state.cost_type().map(Into::into),
                uses: c.version.state.depends_on().map(|d| vec![d.resource_id.to_string()]).unwrap_or_default(),
            })
            .collect();
        resources.sort_by_key(|r| (r.kind, r.resource_id.clone()));
        let key = self.signer.key().public();
        let dir = pb::Directory {
            origin_id: key.id().to_string(),
            issued_at_ms: now_ms(),
            resources,
            keys: vec![pb::PublicKey {
                key_id: key.id().to_string(),
                ed25519: bytes::Bytes::copy_from_slice(&key.raw()),
            }],
            rproxies: self.cfg.rproxies.clone(),
        };
        self.directory.store(Some(Arc::new(sign_directory(self.signer.key(), &dir))));
    }
}

/// Re-signs every resource as a heartbeat each `every` until `stop`, so quiet
/// resources never expire at subscribers (`every` is at most half the TTL).
pub async fn heartbeats(origin: Arc<Origin>, every: Duration, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let o = origin.clone();
        let _ = tokio::task::spawn_blocking(move || o.heartbeat_all(now_ms())).await;
    }
}

/// Takes queued checkpoint requests, coalescing bursts, until the origin is gone.
fn checkpoint_worker(origin: std::sync::Weak<Origin>, rx: std::sync::mpsc::Receiver<ResourceId>) {
    while let Ok(first) = rx.recv() {
        let mut ids = vec![first];
        ids.extend(rx.try_iter());
        ids.sort();
        ids.dedup();
        let Some(o) = origin.upgrade() else { return };
        for id in ids {
            o.checkpoint(&id);
        }
    }
}

fn dependencies(u: &pb::Update) -> Vec<Dependency> {
    u.dependencies
        .iter()
        .filter_map(|d| {
            Some(Dependency {
                resource_id: ResourceId::new(&d.resource_id).ok()?,
                seq: d.seq,
                tag: Tag::from_slice(&d.tag).ok()?,
            })
        })
        .collect()
}

/// Applies a stored signed diff to `cur`, checking base and resulting tag.
fn replay(cur: &Version, u: &pb::Update) -> anyhow::Result<Version> {
    if u.base_seq != cur.seq || u.base_tag[..] != cur.state.tag().0[..] {
        anyhow::bail!("does not follow seq {}", cur.seq);
    }
    let Some(pb::update::Payload::Diff(d)) = u.payload.clone() else { anyhow::bail!("not a diff") };
    let state = cur.state.apply(&altocast_proto::MapDiff::from_pb(d)?)?;
    if state.tag().0[..] != u.tag[..] {
        anyhow::bail!("tag after apply differs from the signed tag");
    }
    Ok(Version { seq: u.seq, state, dependencies: dependencies(u) })
}

/// A cost map body has a top-level `cost-map` member.
fn looks_like_cost_map(body: &[u8]) -> bool {
    let needle = b"\"cost-map\"";
    body.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use altocast_proto::{
        OriginKey,
        workload::{Topology, Workload},
    };

    fn open(dir: &std::path::Path, checkpoints: bool) -> Arc<Origin> {
        let hub = Hub::new(Default::default(), tokio_util::sync::CancellationToken::new());
        let store = Store::open(&dir.join("altocast.redb")).expect("store");
        let cfg = OriginConfig { history_depth: 3, checkpoints, ..Default::default() };
        Origin::open(
            cfg,
            Signer::new(OriginKey::from_seed([4; 32]), 60_000),
            store,
            hub,
            Arc::new(ArcSwapOption::empty()),
        )
        .expect("open")
    }

    #[test]
    fn restart_rebuilds_state_from_the_checkpoint_and_signed_diffs() {
        let dir = tempfile::tempdir().expect("dir");
        let (nm, cm) = (ResourceId::new("nm").expect("id"), ResourceId::new("cm").expect("id"));
        let mut w = Workload::new(Topology::synthetic(20, 3), 3);
        w.network_map_id = nm.clone();
        let o = open(dir.path(), false);
        o.ingest(&nm, json::network_map_json(&nm, &w.network_map()).as_bytes()).expect("nm");
        let mut last = Outcome::Unchanged { seq: 0, tag: Tag::ZERO };
        // More versions than the history depth: pruning must keep every diff
        // after the (never refreshed) checkpoint.
        for _ in 0..8 {
            let body = json::cost_map_json(&w.cost_map(&w.network_map()));
            if let out @ Outcome::Published { .. } = o.ingest(&cm, body.as_bytes()).expect("cm") {
                last = out;
            }
            w.step();
        }
        let Outcome::Published { seq, tag, .. } = last else { panic!("nothing published") };
        assert!(seq > 4, "need several diffs, got seq {seq}");
        drop(o);
        let o = open(dir.path(), true);
        let v = o.current("cm").expect("restored");
        assert_eq!((v.seq, v.state.tag()), (seq, tag));
        let hub = o.hub().status().into_iter().find(|s| s.resource_id == cm).expect("in hub");
        assert_eq!((hub.seq, hub.tag), (seq, tag));
        // The next version continues the seq.
        w.step();
        let body = json::cost_map_json(&w.cost_map(&w.network_map()));
        if let Outcome::Published { seq: next, .. } = o.ingest(&cm, body.as_bytes()).expect("cm") {
            assert_eq!(next, seq + 1);
        }
    }
}
