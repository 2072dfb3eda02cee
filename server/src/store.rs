//! The origin's durable store (redb): the current state of every resource, its
//! seq counter, and the retained history of signed diffs. A write transaction
//! is committed with fsync before anything it holds is published, so a seq is
//! never reused, across restarts and crashes.

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

    /// Durably records a new version: the record, the diff edge into it (if
    /// any), and prunes history beyond `depth`. Returns after fsync.
    pub fn commit(&self, id: &str, rec: &Record, diff: Option<&pb::SignedUpdate>, depth: u64) -> anyhow::Result<()> {
        let w = self.db.begin_write()?;
        {
            let mut t = w.open_table(RESOURCES)?;
            t.insert(id, rec.encode_to_vec().as_slice())?;
            let mut h = w.open_table(HISTORY)?;
            if let Some(d) = diff {
                h.insert((id, rec.seq), d.encode_to_vec().as_slice())?;
            }
            let keep_from = rec.seq.saturating_sub(depth) + 1;
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
