//! The origin's durable store (redb): per resource its seq counter, a signed
//! snapshot checkpoint, and the retained history of signed diffs. A version is
//! durable once its diff (or, for a first version, its snapshot) is committed
//! with fsync, before anything publishes it, so a seq is never reused across
//! restarts and crashes. The current state is the checkpoint plus the diffs
//! after it; checkpoints are written in the background, and history is never
//! pruned past the checkpoint.

use std::path::Path;

use altocast_proto::pb;
use anyhow::Context as _;
use prost::Message as _;
use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};

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

/// The origin's redb database.
#[derive(Debug)]
pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        let db = Database::create(path).with_context(|| format!("opening store {}", path.display()))?;
        let w = db.begin_write()?;
        w.open_table(RESOURCES)?;
        w.open_table(HISTORY)?;
        w.commit()?;
        restrict(path);
        Ok(Store { db })
    }

    /// Every resource's record.
    pub fn resources(&self) -> anyhow::Result<Vec<(String, Record)>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(RESOURCES)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            let rec = Record::decode(v.value()).with_context(|| format!("store record of {}", k.value()))?;
            out.push((k.value().to_owned(), rec));
        }
        Ok(out)
    }

    /// The retained diffs of `id`, oldest first.
    pub fn history(&self, id: &str) -> anyhow::Result<Vec<pb::SignedUpdate>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(HISTORY)?;
        let mut out = Vec::new();
        for row in t.range((id, 0)..=(id, u64::MAX))? {
            let (_, v) = row?;
            out.push(pb::SignedUpdate::decode(v.value()).context("stored signed update")?);
        }
        Ok(out)
    }

    /// Durably records a version whose content is `rec.snapshot` (a first
    /// version, or one that no diff can express). Returns after fsync.
    pub fn commit(&self, id: &str, rec: &Record, depth: u64) -> anyhow::Result<()> {
        self.write(id, depth, |_| Ok(Some(rec.clone())), None)
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
        self.write(
            id,
            depth,
            |old| {
                let mut rec = old.ok_or_else(|| anyhow::anyhow!("{id}: a diff without a stored base version"))?;
                rec.seq = seq;
                rec.source_tag = source_tag.to_owned();
                Ok(Some(rec))
            },
            Some((seq, diff)),
        )
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
        self.write(
            id,
            depth,
            |old| {
                let Some(mut rec) = old else { return Ok(None) };
                if snapshot_seq <= rec.snapshot_seq || snapshot_seq > rec.seq {
                    return Ok(None);
                }
                rec.snapshot = Some(snapshot);
                rec.chunks = chunks;
                rec.snapshot_seq = snapshot_seq;
                Ok(Some(rec))
            },
            None,
        )
    }

    fn write(
        &self,
        id: &str,
        depth: u64,
        update: impl FnOnce(Option<Record>) -> anyhow::Result<Option<Record>>,
        diff: Option<(u64, &pb::SignedUpdate)>,
    ) -> anyhow::Result<()> {
        let w = self.db.begin_write()?;
        {
            let mut t = w.open_table(RESOURCES)?;
            let old = t.get(id)?.map(|v| Record::decode(v.value())).transpose()?;
            let Some(rec) = update(old)? else { return Ok(()) };
            t.insert(id, rec.encode_to_vec().as_slice())?;
            let mut h = w.open_table(HISTORY)?;
            if let Some((seq, d)) = diff {
                h.insert((id, seq), d.encode_to_vec().as_slice())?;
            }
            // Keep `depth` diffs for resuming subscribers, and always those after
            // the checkpoint: they are part of the current state.
            let keep_from = (rec.seq.saturating_sub(depth) + 1).min(rec.snapshot_seq + 1);
            let old: Vec<u64> =
                h.range((id, 0)..(id, keep_from))?.filter_map(|r| r.ok().map(|(k, _)| k.value().1)).collect();
            for s in old {
                h.remove((id, s))?;
            }
        }
        w.commit().context("committing to the store")?;
        Ok(())
    }
}

/// Makes a secret file readable by its owner only.
pub fn restrict(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
}
