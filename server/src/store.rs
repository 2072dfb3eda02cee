//! The origin's durable store (redb): per resource its seq counter, a signed
//! snapshot checkpoint, and the retained history of signed diffs. A version is
//! durable once its diff (or, for a first version, its snapshot) is committed
//! with fsync, before anything publishes it, so a seq is never reused across
//! restarts and crashes. The current state is the checkpoint plus the diffs
//! after it; checkpoints are written in the background, and history is never
//! pruned past the checkpoint. All versions of one publish step (a network
//! map and the cost maps re-bound to it) commit in one transaction. After an
//! I/O error the database is reopened on the next write, so publishing heals
//! once the fault (a full disk) is gone.

use std::{
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use altocast_proto::pb;
use anyhow::Context as _;
use prost::Message as _;
use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};
use tracing::info;

/// resource id → encoded [`Record`].
const RESOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("resources");
/// (resource id, seq) → encoded `SignedUpdate` of the diff edge into `seq`.
const HISTORY: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("history");

/// What the store keeps per resource.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Record {
    /// Current seq: the next version is seq + 1, never reused.
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    /// The signed snapshot of the current version (its body holds kind, cost
    /// type, dependencies and content; restart re-verifies it).
    #[prost(message, optional, tag = "2")]
    pub snapshot: Option<pb::SignedUpdate>,
    /// Its chunks, when chunked.
    #[prost(message, repeated, tag = "3")]
    pub chunks: Vec<pb::SnapshotChunk>,
    /// The vtag tag the producer gave a network map body (accepted in cost
    /// maps' `dependent-vtags`).
    #[prost(string, tag = "4")]
    pub source_tag: String,
    /// Seq of `snapshot`; the diffs after it up to `seq` are in the history.
    #[prost(uint64, tag = "5")]
    pub snapshot_seq: u64,
}

/// One durable change of a step (see [`Store::commit_batch`]).
#[derive(Debug, Clone)]
pub enum Write {
    /// Version `seq` of `id` as the signed diff edge into it.
    Diff {
        /// The resource.
        id: String,
        /// The new seq.
        seq: u64,
        /// The signed diff.
        diff: pb::SignedUpdate,
        /// The producer's vtag tag, for network maps.
        source_tag: String,
    },
    /// A version whose content is `rec.snapshot` (a first version, or one no
    /// diff can express).
    Full {
        /// The resource.
        id: String,
        /// The whole record.
        rec: Record,
    },
}

/// Opens the database file; called again to reopen it after an I/O error.
pub type Opener = Box<dyn Fn() -> Result<Database, redb::DatabaseError> + Send + Sync>;

/// The origin's redb database. After a failed write (a full disk, an I/O
/// error) redb refuses every later one until the database is reopened, so the
/// next write reopens it: publishing works again as soon as the fault is gone,
/// without a restart. [`Store::healthy`] says whether the last write worked.
pub struct Store {
    path: PathBuf,
    open: Opener,
    /// `None` after a fault, until a reopen succeeds.
    db: Mutex<Option<Database>>,
    healthy: AtomicBool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).field("healthy", &self.healthy()).finish()
    }
}

impl Store {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        let p = path.to_owned();
        Store::open_with(path, Box::new(move || Database::create(&p)))
    }

    /// Opens the store with `open` (tests pass a backend that injects faults).
    pub fn open_with(path: &Path, open: Opener) -> anyhow::Result<Store> {
        let db = open().with_context(|| format!("opening store {}", path.display()))?;
        let w = db.begin_write()?;
        w.open_table(RESOURCES)?;
        w.open_table(HISTORY)?;
        w.commit()?;
        restrict(path);
        Ok(Store { path: path.to_owned(), open, db: Mutex::new(Some(db)), healthy: AtomicBool::new(true) })
    }

    /// False after a write failed, until one succeeds again.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Runs `f` on the database, reopening it first if an earlier fault
    /// closed it; a failure closes it and marks the store unhealthy.
    fn with_db<T>(&self, f: impl FnOnce(&Database) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let mut guard = self.db.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            let db = (self.open)().with_context(|| format!("reopening store {}", self.path.display()));
            *guard = Some(db.inspect_err(|_| self.fault())?);
            info!(path = %self.path.display(), "store reopened");
        }
        let db = guard.as_ref().ok_or_else(|| anyhow::anyhow!("store closed"))?;
        match f(db) {
            Ok(v) => {
                self.healthy.store(true, Ordering::Relaxed);
                Ok(v)
            }
            Err(e) => {
                // Close it: redb refuses everything after an I/O error until
                // reopened, and reopening also recovers the last commit.
                *guard = None;
                self.fault();
                Err(e)
            }
        }
    }

    /// After a fault: reopens the database and commits an empty transaction,
    /// so health turns back to serving once the disk works, even if nobody
    /// publishes meanwhile. A no-op while healthy.
    pub fn probe(&self) {
        if !self.healthy() {
            let _ = self.with_db(|db| {
                let w = db.begin_write()?;
                w.commit()?;
                Ok(())
            });
        }
    }

    fn fault(&self) {
        self.healthy.store(false, Ordering::Relaxed);
        metrics::counter!("altocast_origin_store_errors_total").increment(1);
    }

    /// Every resource's record.
    pub fn resources(&self) -> anyhow::Result<Vec<(String, Record)>> {
        self.with_db(|db| {
            let r = db.begin_read()?;
            let t = r.open_table(RESOURCES)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                let rec = Record::decode(v.value()).with_context(|| format!("store record of {}", k.value()))?;
                out.push((k.value().to_owned(), rec));
            }
            Ok(out)
        })
    }

    /// The retained diffs of `id`, oldest first.
    pub fn history(&self, id: &str) -> anyhow::Result<Vec<pb::SignedUpdate>> {
        self.with_db(|db| {
            let r = db.begin_read()?;
            let t = r.open_table(HISTORY)?;
            let mut out = Vec::new();
            for row in t.range((id, 0)..=(id, u64::MAX))? {
                let (_, v) = row?;
                out.push(pb::SignedUpdate::decode(v.value()).context("stored signed update")?);
            }
            Ok(out)
        })
    }

    /// Durably records every write of one step in **one** transaction: after
    /// a crash or a fault either all of them are there or none. Returns after
    /// fsync.
    pub fn commit_batch(&self, writes: &[Write], depth: u64) -> anyhow::Result<()> {
        self.with_db(|db| {
            let w = db.begin_write()?;
            {
                let mut t = w.open_table(RESOURCES)?;
                let mut h = w.open_table(HISTORY)?;
                for write in writes {
                    let (id, rec) = match write {
                        Write::Full { id, rec } => (id.as_str(), rec.clone()),
                        Write::Diff { id, seq, diff, source_tag } => {
                            let old = t.get(id.as_str())?.map(|v| Record::decode(v.value())).transpose()?;
                            let mut rec =
                                old.ok_or_else(|| anyhow::anyhow!("{id}: a diff without a stored base version"))?;
                            rec.seq = *seq;
                            rec.source_tag = source_tag.clone();
                            h.insert((id.as_str(), *seq), diff.encode_to_vec().as_slice())?;
                            (id.as_str(), rec)
                        }
                    };
                    t.insert(id, rec.encode_to_vec().as_slice())?;
                    prune(&mut h, id, &rec, depth)?;
                }
            }
            w.commit().context("committing to the store")?;
            Ok(())
        })
    }

    /// Durably records a version whose content is `rec.snapshot`. Returns after fsync.
    pub fn commit(&self, id: &str, rec: &Record, depth: u64) -> anyhow::Result<()> {
        self.commit_batch(&[Write::Full { id: id.to_owned(), rec: rec.clone() }], depth)
    }

    /// Durably records version `seq` as the diff edge into it. Returns after fsync.
    pub fn commit_diff(
        &self,
        id: &str,
        seq: u64,
        diff: &pb::SignedUpdate,
        source_tag: &str,
        depth: u64,
    ) -> anyhow::Result<()> {
        let write = Write::Diff { id: id.to_owned(), seq, diff: diff.clone(), source_tag: source_tag.to_owned() };
        self.commit_batch(&[write], depth)
    }

    /// Replaces the snapshot checkpoint with a newer one.
    pub fn checkpoint(
        &self,
        id: &str,
        snapshot_seq: u64,
        snapshot: pb::SignedUpdate,
        chunks: Vec<pb::SnapshotChunk>,
        depth: u64,
    ) -> anyhow::Result<()> {
        self.with_db(|db| {
            let w = db.begin_write()?;
            {
                let mut t = w.open_table(RESOURCES)?;
                let Some(mut rec) = t.get(id)?.map(|v| Record::decode(v.value())).transpose()? else { return Ok(()) };
                if snapshot_seq <= rec.snapshot_seq || snapshot_seq > rec.seq {
                    return Ok(());
                }
                rec.snapshot = Some(snapshot);
                rec.chunks = chunks;
                rec.snapshot_seq = snapshot_seq;
                t.insert(id, rec.encode_to_vec().as_slice())?;
                let mut h = w.open_table(HISTORY)?;
                prune(&mut h, id, &rec, depth)?;
            }
            w.commit().context("committing a checkpoint to the store")?;
            Ok(())
        })
    }
}

/// Keeps `depth` diffs for resuming subscribers, and always those after the
/// checkpoint: they are part of the current state.
fn prune(h: &mut redb::Table<(&str, u64), &[u8]>, id: &str, rec: &Record, depth: u64) -> anyhow::Result<()> {
    let keep_from = (rec.seq.saturating_sub(depth) + 1).min(rec.snapshot_seq + 1);
    let old: Vec<u64> = h.range((id, 0)..(id, keep_from))?.filter_map(|r| r.ok().map(|(k, _)| k.value().1)).collect();
    for s in old {
        h.remove((id, s))?;
    }
    Ok(())
}

/// Makes a secret file readable by its owner only.
pub fn restrict(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
}
