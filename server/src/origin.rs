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
    Kind, MapState, ModelError, OriginKey, ResourceId, Tag, TrustedKeys, Verifier,
    model::json,
    pb,
    verify::directory::sign_directory,
    wire::update::{Dependency, Signer, Version},
};
use altocast_rproxy::hub::{Entry, Hub};
use anyhow::Context as _;
use arc_swap::ArcSwapOption;
use prost::Message as _;
use tracing::{info, warn};

use crate::store::{Record, Store, Write};

/// Origin settings.
#[derive(Debug, Clone)]
pub struct OriginConfig {
    /// How long each update keeps its resource fresh.
    pub ttl: Duration,
    /// Diffs retained per resource (in the store and the hub ring).
    pub history_depth: u64,
    /// Largest JSON body accepted.
    pub max_body: usize,
    /// Largest signed diff body: a change whose diff would be bigger is
    /// published as a snapshot instead, since every verifier refuses bodies
    /// over its limit (PROTOCOL.md §11; `Limits::max_body`, 16 MiB).
    pub max_diff_bytes: usize,
    /// RProxy URLs advertised in the directory.
    pub rproxies: Vec<String>,
    /// The root-signed key chain the directory carries (`None`: fixed keys,
    /// for tests and benchmarks).
    pub key_chain: Option<pb::KeyChain>,
    /// Further keys whose signatures on the stored history are the origin's
    /// own (update keys retired or revoked since), checked on restart.
    pub history_keys: Vec<altocast_proto::PublicKey>,
    /// Where the directory's seq is kept across restarts (`None`: in memory).
    pub directory_seq_file: Option<std::path::PathBuf>,
    /// Write snapshot checkpoints in the background (off only in tests, to
    /// exercise recovery from the diffs, or to run them at chosen moments).
    pub checkpoints: bool,
    /// The time everything is signed at (tests simulate time with it).
    pub clock: Clock,
}

/// A source of Unix milliseconds.
#[derive(Clone)]
pub struct Clock(pub Arc<dyn Fn() -> i64 + Send + Sync>);

impl Default for Clock {
    fn default() -> Self {
        Clock(Arc::new(altocast_client::now_ms))
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

impl Default for OriginConfig {
    fn default() -> Self {
        OriginConfig {
            ttl: Duration::from_secs(60),
            history_depth: 64,
            max_body: 64 << 20,
            max_diff_bytes: altocast_proto::Limits::default().max_body,
            rproxies: Vec::new(),
            key_chain: None,
            history_keys: Vec::new(),
            directory_seq_file: None,
            checkpoints: true,
            clock: Clock::default(),
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
    /// A network map with no PIDs.
    #[error("network map {0} has no PIDs; an empty network map is refused")]
    EmptyNetworkMap(String),
    /// A network map change would leave a cost map bound to PIDs it removes.
    #[error(
        "network map {network_map} no longer has PID(s) {} that cost map {cost_map} uses; publish the new cost map \
         in the same step (one Publish call carrying both, or one maps-dir burst)",
        missing.iter().take(8).map(String::as_str).collect::<Vec<_>>().join(", ")
    )]
    Orphaned {
        /// The network map.
        network_map: String,
        /// The cost map that would be orphaned.
        cost_map: String,
        /// PIDs the cost map uses that the new network map lacks.
        missing: Vec<String>,
    },
    /// The same resource twice in one step.
    #[error("resource {0} appears more than once in one publish")]
    Duplicate(String),
    /// A step with no inputs.
    #[error("nothing to publish")]
    NothingToPublish,
    /// One resource of a step was refused (so the whole step was).
    #[error("{id}: {error}")]
    In {
        /// The resource whose input was refused.
        id: String,
        /// Why.
        error: Box<IngestError>,
    },
}

impl IngestError {
    fn about(self, id: &ResourceId) -> IngestError {
        match self {
            e @ (IngestError::In { .. } | IngestError::Store(_)) => e,
            e => IngestError::In { id: id.to_string(), error: Box::new(e) },
        }
    }

    /// The resource whose input caused the refusal, when it is one.
    pub fn resource(&self) -> Option<&str> {
        match self {
            IngestError::In { id, .. } | IngestError::Duplicate(id) | IngestError::EmptyNetworkMap(id) => Some(id),
            IngestError::Orphaned { network_map, .. } => Some(network_map),
            _ => None,
        }
    }

    /// The underlying error (without the resource it is about).
    pub fn cause(&self) -> &IngestError {
        match self {
            IngestError::In { error, .. } => error.cause(),
            e => e,
        }
    }
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

/// One body to ingest.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    /// The resource it publishes.
    pub id: ResourceId,
    /// The RFC 7285 JSON body (or merge patch).
    pub body: &'a [u8],
    /// What the body is.
    pub form: Form,
}

/// What an input body is, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Unspecified: the resource's kind, or for a new resource the body's
    /// top-level member (`network-map` or `cost-map`).
    Any,
    /// `application/alto-networkmap+json`.
    NetworkMap,
    /// `application/alto-costmap+json`.
    CostMap,
    /// `application/merge-patch+json` of the current cost map body.
    MergePatch,
}

/// A new version made by one step, before it is installed.
struct Published {
    id: ResourceId,
    version: Version,
    source_tag: String,
    is_diff: bool,
    entries_changed: usize,
    bytes: usize,
}

/// The next content of one resource within a step.
struct Next {
    state: MapState,
    dependencies: Vec<Dependency>,
    source_tag: String,
}

/// One ingest step: the current state and what the step changes, so that
/// every input is validated against what the others produce.
struct Stage<'a> {
    cur: &'a BTreeMap<ResourceId, Current>,
    next: BTreeMap<ResourceId, Next>,
    /// Resources in the order their versions are committed and published
    /// (network maps before the cost maps bound to them).
    order: Vec<ResourceId>,
}

impl Stage<'_> {
    fn state(&self, id: &ResourceId) -> Option<&MapState> {
        self.next.get(id).map(|n| &n.state).or_else(|| self.cur.get(id).map(|c| &c.version.state))
    }

    fn changed(&self, id: &ResourceId) -> bool {
        self.next.get(id).is_some_and(|n| self.cur.get(id).is_none_or(|c| c.version.state.tag() != n.state.tag()))
    }

    /// The seq `id` has after this step.
    fn seq(&self, id: &ResourceId) -> u64 {
        let cur = self.cur.get(id).map_or(0, |c| c.version.seq);
        if self.changed(id) { cur + 1 } else { cur }
    }

    fn source_tag(&self, id: &ResourceId) -> &str {
        match self.next.get(id).map(|n| n.source_tag.as_str()) {
            Some(t) if !t.is_empty() => t,
            _ => self.cur.get(id).map_or("", |c| c.source_tag.as_str()),
        }
    }

    fn set(&mut self, id: ResourceId, next: Next) {
        if !self.next.contains_key(&id) {
            self.order.push(id.clone());
        }
        self.next.insert(id, next);
    }

    /// The kind an input publishes; a resource keeps its kind.
    fn kind_of(&self, input: &Input<'_>) -> Result<Kind, IngestError> {
        let existing = self.state(&input.id).map(|s| s.kind());
        let want = match input.form {
            Form::NetworkMap => Kind::NetworkMap,
            Form::CostMap | Form::MergePatch => Kind::CostMap,
            Form::Any => existing.unwrap_or_else(|| json::body_kind(input.body).unwrap_or(Kind::NetworkMap)),
        };
        match existing {
            Some(k) if k != want => {
                Err(IngestError::KindMismatch { id: input.id.to_string(), existing: k.as_str(), got: want.as_str() })
            }
            _ => Ok(want),
        }
    }

    fn network_map(&self, id: &ResourceId, body: &[u8]) -> Result<Next, IngestError> {
        let doc = json::parse_network_map(body)?;
        if doc.map.is_empty() {
            return Err(IngestError::EmptyNetworkMap(id.to_string()));
        }
        let source_tag = doc.vtag.map(|v| v.1).unwrap_or_default();
        Ok(Next { state: MapState::Network(doc.map), dependencies: Vec::new(), source_tag })
    }

    /// The network map a cost map names (or the only one there is).
    fn network_map_for(&self, named: Option<&str>) -> Result<(ResourceId, &altocast_proto::NetworkMap), IngestError> {
        let id = match named {
            Some(nm) => match ResourceId::new(nm) {
                Ok(r) if self.state(&r).is_some_and(|s| s.kind() == Kind::NetworkMap) => r,
                _ => return Err(IngestError::UnknownNetworkMap(nm.chars().take(80).collect())),
            },
            None => {
                let nms: std::collections::BTreeSet<&ResourceId> = self
                    .cur
                    .keys()
                    .chain(self.next.keys())
                    .filter(|k| self.state(k).is_some_and(|s| s.kind() == Kind::NetworkMap))
                    .collect();
                match nms.into_iter().collect::<Vec<_>>().as_slice() {
                    [one] => (*one).clone(),
                    _ => return Err(IngestError::NoNetworkMap),
                }
            }
        };
        match self.state(&id) {
            Some(MapState::Network(nm)) => Ok((id, nm)),
            _ => Err(IngestError::NoNetworkMap),
        }
    }

    fn dependency(&self, nm_id: &ResourceId, nm: &altocast_proto::NetworkMap) -> Vec<Dependency> {
        vec![Dependency { resource_id: nm_id.clone(), seq: self.seq(nm_id), tag: nm.tag() }]
    }

    fn cost_map(&self, body: &[u8]) -> Result<Next, IngestError> {
        let doc = json::parse_cost_map(body)?;
        let (nm_id, nm) = self.network_map_for(doc.dependent_vtags.first().map(|(nm, _)| nm.as_str()))?;
        // The producer may name the network map by the tag it gave it.
        let source = self.source_tag(&nm_id);
        let accepted: Vec<&str> = if source.is_empty() { Vec::new() } else { vec![source] };
        let cm = doc.bind(&nm_id, nm, &accepted)?;
        Ok(Next { state: MapState::Cost(cm), dependencies: self.dependency(&nm_id, nm), source_tag: String::new() })
    }

    fn patch_cost_map(&self, id: &ResourceId, body: &[u8]) -> Result<Next, IngestError> {
        let Some(MapState::Cost(cur)) = self.state(id) else {
            return Err(IngestError::Invalid(ModelError::DiffMismatch(format!(
                "{id} is not a published cost map; publish its full body first"
            ))));
        };
        let patch = json::parse_cost_map_patch(cur, body)?;
        let next = cur.apply(&patch.diff)?;
        let dep = cur.depends_on().cloned().ok_or(IngestError::NoNetworkMap)?;
        let named = patch.dependent_vtags.as_ref().and_then(|v| v.first());
        let (nm_id, nm) = self.network_map_for(Some(named.map_or(dep.resource_id.as_str(), |(nm, _)| nm.as_str())))?;
        if let Some((_, tag)) = named
            && !tag.eq_ignore_ascii_case(&nm.tag().to_hex())
            && tag != self.source_tag(&nm_id)
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
        Ok(Next { state: MapState::Cost(next), dependencies: self.dependency(&nm_id, nm), source_tag: String::new() })
    }

    /// Re-binds every cost map computed against a network map this step
    /// changes, unless the step carries that cost map itself. A cost map that
    /// no longer fits refuses the whole step: it would be left pointing at a
    /// network map version nobody can have.
    fn rebind(&mut self) -> Result<(), IngestError> {
        let changed: Vec<ResourceId> = self
            .order
            .iter()
            .filter(|id| self.changed(id) && self.state(id).is_some_and(|s| s.kind() == Kind::NetworkMap))
            .cloned()
            .collect();
        for nm_id in changed {
            let Some(MapState::Network(nm)) = self.state(&nm_id).cloned() else { continue };
            let dependents: Vec<(ResourceId, altocast_proto::CostMap)> = self
                .cur
                .iter()
                .filter(|(id, _)| !self.next.contains_key(*id))
                .filter_map(|(id, c)| match &c.version.state {
                    MapState::Cost(cm) if cm.depends_on().is_some_and(|d| d.resource_id == nm_id) => {
                        Some((id.clone(), cm.clone()))
                    }
                    _ => None,
                })
                .collect();
            for (cm_id, cm) in dependents {
                let missing: Vec<String> =
                    cm.pids().iter().filter(|p| !nm.contains(p.as_str())).map(|p| p.to_string()).collect();
                if !missing.is_empty() {
                    return Err(IngestError::Orphaned {
                        network_map: nm_id.to_string(),
                        cost_map: cm_id.to_string(),
                        missing,
                    });
                }
                let rebound =
                    cm.with_dependency(Some(altocast_proto::VersionTag { resource_id: nm_id.clone(), tag: nm.tag() }));
                rebound.check_against(&nm_id, &nm)?;
                let next = Next {
                    state: MapState::Cost(rebound),
                    dependencies: self.dependency(&nm_id, &nm),
                    source_tag: String::new(),
                };
                self.set(cm_id, next);
            }
        }
        Ok(())
    }
}

/// The origin.
pub struct Origin {
    cfg: OriginConfig,
    signer: Signer,
    store: Store,
    hub: Arc<Hub>,
    directory: Arc<ArcSwapOption<pb::SignedDirectory>>,
    /// The directory's content as last signed (seq, issue and expiry times
    /// zeroed), its seq, and the key chain it carries.
    directory_content: Mutex<(Vec<u8>, u64, Option<pb::KeyChain>)>,
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
        let own =
            signer.keys().iter().map(OriginKey::public).chain(cfg.history_keys.iter().cloned()).collect::<Vec<_>>();
        let verifier = Verifier::accepting_all(TrustedKeys::new(own), Default::default());
        let directory_seq = match &cfg.directory_seq_file {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(s) => s.trim().parse::<u64>().with_context(|| format!("{} is not a number", path.display()))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            },
            None => 0,
        };
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
                directory_content: Mutex::new((Vec::new(), directory_seq, cfg.key_chain.clone())),
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
        origin.heartbeat_all(origin.now());
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

    /// Now, by the origin's clock (Unix ms).
    pub fn now(&self) -> i64 {
        (self.cfg.clock.0)()
    }

    /// Checkpoints every resource now (what the background worker does after
    /// each version; tests with `checkpoints: false` choose the moment).
    pub fn checkpoint_all(&self) {
        for (id, ..) in self.resources() {
            self.checkpoint(&id);
        }
    }

    /// Signs a snapshot of `id`'s current version, stores it as the checkpoint
    /// and refreshes the hub's cached snapshot.
    fn checkpoint(&self, id: &ResourceId) {
        let Some(v) = self.current(id.as_str()) else { return };
        let snap = self.signer.snapshot(id, &v, self.now());
        if let Err(e) =
            self.store.checkpoint(id.as_str(), v.seq, snap.update.clone(), snap.chunks.clone(), self.cfg.history_depth)
        {
            warn!(resource = %id, error = %e, "checkpoint failed; the diffs since the last one stay in the store");
            return;
        }
        // The hub takes it if its chain continues from this version.
        let _ = self.hub.publish(Arc::new(Entry::from_signed(snap)));
    }

    /// False while store writes fail (publishing is refused meanwhile).
    pub fn store_healthy(&self) -> bool {
        self.store.healthy()
    }

    /// Retries a failed store (blocking, a few ms): see [`Store::probe`].
    pub fn probe_store(&self) {
        self.store.probe()
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

    /// Ingests an RFC 7285 JSON body as resource `id` (a network map or a cost
    /// map, told apart by the resource's kind or the body). Blocking (CPU and
    /// fsync): call from a blocking thread.
    pub fn ingest(&self, id: &ResourceId, body: &[u8]) -> Result<Outcome, IngestError> {
        self.ingest_one(Input { id: id.clone(), body, form: Form::Any })
    }

    /// Ingests an RFC 7396 merge patch of cost map `id`'s current body (RFC
    /// 8895's update form). Blocking, like [`Origin::ingest`].
    pub fn ingest_patch(&self, id: &ResourceId, body: &[u8]) -> Result<Outcome, IngestError> {
        self.ingest_one(Input { id: id.clone(), body, form: Form::MergePatch })
    }

    fn ingest_one(&self, input: Input<'_>) -> Result<Outcome, IngestError> {
        let mut out = self.ingest_batch(&[input])?;
        Ok(out.remove(0).1)
    }

    /// Ingests several bodies as **one step**: every input is validated
    /// against the state the others produce (network maps first), the cost
    /// maps that depend on a changed network map are re-bound to it, and all
    /// new versions are committed in one store transaction and reach the hub
    /// as one batch — or, if anything is wrong, nothing changes at all. A
    /// network map that would leave a dependent cost map unable to follow
    /// (its PIDs gone) is refused unless the same batch carries that cost map.
    /// Returns one outcome per input, in input order, then one per cost map
    /// the step re-bound without it being an input. Blocking.
    pub fn ingest_batch(&self, inputs: &[Input<'_>]) -> Result<Vec<(ResourceId, Outcome)>, IngestError> {
        let t0 = std::time::Instant::now();
        let result = self.try_ingest_batch(inputs);
        match &result {
            Ok(outcomes) => {
                for (id, o) in outcomes {
                    match o {
                        Outcome::Published { seq, entries_changed, .. } => {
                            info!(resource = %id, seq, entries_changed, ms = t0.elapsed().as_millis() as u64, "published")
                        }
                        Outcome::Unchanged { seq, .. } => info!(resource = %id, seq, "unchanged; no new version"),
                    }
                }
                metrics::histogram!("altocast_origin_publish_seconds").record(t0.elapsed().as_secs_f64());
            }
            Err(e) => {
                metrics::counter!("altocast_origin_rejected_total").increment(1);
                let ids: Vec<&str> = inputs.iter().map(|i| i.id.as_str()).collect();
                warn!(resources = ?ids, error = %e, "input rejected; published state unchanged");
            }
        }
        result
    }

    fn try_ingest_batch(&self, inputs: &[Input<'_>]) -> Result<Vec<(ResourceId, Outcome)>, IngestError> {
        if inputs.is_empty() {
            return Err(IngestError::NothingToPublish);
        }
        for (i, input) in inputs.iter().enumerate() {
            if input.body.len() > self.cfg.max_body {
                return Err(IngestError::TooLarge { len: input.body.len(), limit: self.cfg.max_body }.about(&input.id));
            }
            if inputs[..i].iter().any(|o| o.id == input.id) {
                return Err(IngestError::Duplicate(input.id.to_string()));
            }
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut stage = Stage { cur: &st, next: BTreeMap::new(), order: Vec::new() };
        // Network maps first: cost maps in the same batch bind to the new ones.
        let kinds: Vec<Kind> =
            inputs.iter().map(|i| stage.kind_of(i).map_err(|e| e.about(&i.id))).collect::<Result<_, _>>()?;
        for pass in [Kind::NetworkMap, Kind::CostMap] {
            for (input, _) in inputs.iter().zip(&kinds).filter(|(_, k)| **k == pass) {
                let next = match (pass, input.form) {
                    (Kind::CostMap, Form::MergePatch) => stage.patch_cost_map(&input.id, input.body),
                    (Kind::CostMap, _) => stage.cost_map(input.body),
                    (Kind::NetworkMap, _) => stage.network_map(&input.id, input.body),
                }
                .map_err(|e| e.about(&input.id))?;
                stage.set(input.id.clone(), next);
            }
        }
        stage.rebind()?;
        let published = self.commit(&stage)?;
        drop(stage);
        let mut outcomes = Vec::with_capacity(inputs.len());
        for input in inputs {
            let o = match published.iter().find(|p| p.id == input.id) {
                Some(p) => Outcome::Published {
                    seq: p.version.seq,
                    tag: p.version.state.tag(),
                    entries_changed: p.entries_changed,
                    bytes: p.bytes,
                },
                None => {
                    let c = &st[&input.id];
                    Outcome::Unchanged { seq: c.version.seq, tag: c.version.state.tag() }
                }
            };
            outcomes.push((input.id.clone(), o));
        }
        // Then the cost maps the step re-bound to one of its network maps.
        for p in published.iter().filter(|p| !inputs.iter().any(|i| i.id == p.id)) {
            let o = Outcome::Published {
                seq: p.version.seq,
                tag: p.version.state.tag(),
                entries_changed: p.entries_changed,
                bytes: p.bytes,
            };
            outcomes.push((p.id.clone(), o));
        }
        let mut checkpoint = Vec::new();
        for p in published {
            if p.is_diff {
                checkpoint.push(p.id.clone());
            }
            st.insert(p.id, Current { version: p.version, source_tag: p.source_tag });
        }
        drop(st);
        for id in checkpoint {
            if self.hub.snapshot_needed(id.as_str()) {
                // The background checkpoints are a whole ring behind: without a
                // snapshot now, newcomers would get no chain at all.
                self.checkpoint(&id);
            } else {
                // A fresh snapshot (store checkpoint, hub cache) follows off the hot path.
                self.request_checkpoint(id);
            }
        }
        if outcomes.iter().any(|(_, o)| matches!(o, Outcome::Published { .. })) {
            self.sign_directory();
        }
        Ok(outcomes)
    }

    /// Signs every changed resource of `stage`, persists them all in one store
    /// transaction (fsync), then hands them to the hub as one batch. Nothing
    /// is changed if the store fails.
    fn commit(&self, stage: &Stage<'_>) -> Result<Vec<Published>, IngestError> {
        let now = self.now();
        let mut writes = Vec::new();
        let mut entries = Vec::new();
        let mut published = Vec::new();
        for id in &stage.order {
            let Some(n) = stage.next.get(id) else { continue };
            let old = stage.cur.get(id);
            if old.is_some_and(|c| c.version.state.tag() == n.state.tag()) {
                continue;
            }
            let next = Version {
                seq: old.map_or(1, |c| c.version.seq + 1),
                state: n.state.clone(),
                dependencies: n.dependencies.clone(),
            };
            let source_tag = stage.source_tag(id).to_owned();
            let diff = old.and_then(|c| c.version.state.diff(&next.state).map(|d| (c, d)));
            let entries_changed = diff.as_ref().map_or(next.state.entry_count(), |(_, d)| d.entries_changed());
            // Durable before anyone can see it: the signed diff (small), or the
            // snapshot for a version no diff can express or no verifier would
            // accept as one.
            let diff = diff
                .map(|(c, d)| self.signer.diff(id, &c.version, &next, &d, now))
                .filter(|edge| edge.update.body.len() <= self.cfg.max_diff_bytes);
            let (edge, write) = match diff {
                Some(edge) => {
                    let (seq, diff) = (next.seq, edge.update.clone());
                    (edge, Write::Diff { id: id.to_string(), seq, diff, source_tag: source_tag.clone() })
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
                    (snap, Write::Full { id: id.to_string(), rec })
                }
            };
            let is_diff = edge.kind == altocast_proto::UpdateKind::Diff;
            let bytes = edge.wire_len();
            writes.push(write);
            entries.push(Arc::new(Entry::from_signed(edge)));
            published.push(Published { id: id.clone(), version: next, source_tag, is_diff, entries_changed, bytes });
        }
        if writes.is_empty() {
            return Ok(published);
        }
        self.store.commit_batch(&writes, self.cfg.history_depth).map_err(IngestError::Store)?;
        if let Err(err) = self.hub.publish_batch(entries) {
            warn!(error = %err, "hub refused an update");
        }
        metrics::counter!("altocast_origin_versions_total").increment(published.len() as u64);
        Ok(published)
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
        drop(st);
        // The directory expires like the maps: re-signed with them.
        self.sign_directory();
    }

    /// Signs with the keys of `keys` from now on, carries its chain in the
    /// directory, and re-signs what newcomers are sent: a fresh checkpoint of
    /// every resource (in the store and the hub, whose rings are emptied, so
    /// no catch-up needs a diff signed only by a key no longer trusted),
    /// heartbeats and the directory. Blocking.
    pub fn rekey(&self, keys: Vec<OriginKey>, chain: pb::KeyChain) {
        self.signer.set_keys(keys);
        self.directory_content.lock().unwrap_or_else(|e| e.into_inner()).2 = Some(chain);
        // The new directory first: subscribers get the key list before the
        // updates signed by its keys.
        self.sign_directory();
        let now = self.now();
        for (id, ..) in self.resources() {
            let Some(v) = self.current(id.as_str()) else { continue };
            let snap = self.signer.snapshot(&id, &v, now);
            if let Err(e) = self.store.checkpoint(
                id.as_str(),
                v.seq,
                snap.update.clone(),
                snap.chunks.clone(),
                self.cfg.history_depth,
            ) {
                warn!(resource = %id, error = %e, "re-keyed checkpoint not stored; it is served but not yet durable");
            }
            self.hub.restore(Arc::new(Entry::from_signed(snap)), Vec::new());
        }
        self.heartbeat_all(now);
        info!(keys = ?self.signer.keys().iter().map(|k| k.id().to_string()).collect::<Vec<_>>(), "signing with the new key list");
    }

    /// Signs and installs the directory for the current resources: a new seq
    /// when its content changed (persisted first), and a fresh expiry either
    /// way, so a directory heartbeat is this called again.
    pub fn sign_directory(&self) {
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
        drop(st);
        let keys = self.signer.keys();
        let mut content = self.directory_content.lock().unwrap_or_else(|e| e.into_inner());
        let mut dir = pb::Directory {
            origin_id: self.signer.origin_id().to_owned(),
            issued_at_ms: 0,
            resources,
            keys: keys
                .iter()
                .map(|k| pb::PublicKey {
                    key_id: k.id().to_string(),
                    ed25519: bytes::Bytes::copy_from_slice(&k.public().raw()),
                })
                .collect(),
            rproxies: self.cfg.rproxies.clone(),
            seq: 0,
            expires_at_ms: 0,
            key_chain: content.2.clone(),
        };
        let body = dir.encode_to_vec();
        if body != content.0 {
            let seq = content.1 + 1;
            if let Some(path) = &self.cfg.directory_seq_file
                && let Err(e) = crate::keys::write_atomic(path, format!("{seq}\n").as_bytes(), false)
            {
                // Never a seq that could be reused after a restart.
                warn!(error = %e, path = %path.display(), "directory seq not persisted; keeping the old directory");
                return;
            }
            *content = (body, seq, content.2.take());
        }
        let now = self.now();
        dir.seq = content.1;
        dir.issued_at_ms = now;
        dir.expires_at_ms = now.saturating_add(self.cfg.ttl.as_millis() as i64);
        let signed = sign_directory(&keys, &dir);
        self.hub.publish_directory(&signed);
        self.directory.store(Some(Arc::new(signed)));
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
        let _ = tokio::task::spawn_blocking(move || o.heartbeat_all(o.now())).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{Topology, Workload};
    use altocast_proto::OriginKey;

    fn open(dir: &std::path::Path, checkpoints: bool) -> Arc<Origin> {
        open_with(dir, OriginConfig { history_depth: 3, checkpoints, ..Default::default() })
    }

    fn open_with(dir: &std::path::Path, cfg: OriginConfig) -> Arc<Origin> {
        let hub = Hub::new(Default::default(), tokio_util::sync::CancellationToken::new());
        let store = Store::open(&dir.join("altocast.redb")).expect("store");
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

    /// A change whose signed diff would exceed the verifiers' body limit is
    /// published as a snapshot: a subscriber holding the previous version gets
    /// a snapshot, and a restart restores it.
    #[tokio::test]
    async fn a_diff_over_the_body_limit_is_published_as_a_snapshot() {
        use prost::Message as _;
        let dir = tempfile::tempdir().expect("dir");
        let (nm, cm) = (ResourceId::new("nm").expect("id"), ResourceId::new("cm").expect("id"));
        let mut w = Workload::new(Topology::synthetic(20, 3), 3);
        w.network_map_id = nm.clone();
        let cfg = OriginConfig { max_diff_bytes: 64, checkpoints: false, ..Default::default() };
        let o = open_with(dir.path(), cfg.clone());
        o.ingest(&nm, json::network_map_json(&nm, &w.network_map()).as_bytes()).expect("nm");
        o.ingest(&cm, json::cost_map_json(&w.cost_map(&w.network_map())).as_bytes()).expect("cm 1");
        let first = o.current("cm").expect("cm");
        let mut published = None;
        for _ in 0..50 {
            w.step();
            let body = json::cost_map_json(&w.cost_map(&w.network_map()));
            if let Outcome::Published { seq, tag, .. } = o.ingest(&cm, body.as_bytes()).expect("cm 2") {
                published = Some((seq, tag));
                break;
            }
        }
        let (seq, tag) = published.expect("a change");
        let mut rx = o.hub().subscribe(vec![(cm.clone(), first.seq, first.state.tag())]).expect("subscribe");
        let frame = loop {
            let f = rx.recv().await.expect("a catch-up frame");
            let f = pb::SubscribeResponse::decode(&f.grpc_framed()[5..]).expect("frame");
            // The directory comes first.
            if !matches!(f.item, Some(pb::subscribe_response::Item::Directory(_))) {
                break f;
            }
        };
        let Some(pb::subscribe_response::Item::Update(u)) = frame.item else { panic!("not an update: {frame:?}") };
        let u = pb::Update::decode(u.body).expect("decode");
        assert_eq!(u.seq, seq);
        assert!(
            matches!(u.payload, Some(pb::update::Payload::Snapshot(_) | pb::update::Payload::Chunked(_))),
            "the oversized change went out as {:?}",
            u.payload.map(|p| std::mem::discriminant(&p))
        );
        drop(o);
        let o = open_with(dir.path(), cfg);
        let v = o.current("cm").expect("restored");
        assert_eq!((v.seq, v.state.tag()), (seq, tag));
    }
}
