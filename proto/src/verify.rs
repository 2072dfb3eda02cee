//! The verifier every client and RProxy runs on what it receives (DESIGN §5).
//!
//! Checks, in order: (1) size limits before decoding; (2) a signature by a
//! trusted key (and chunks bound to it); (3) the resource is one we asked for;
//! (4) seq: greater than held to apply, equal only for a heartbeat, smaller is a
//! rollback; (5) a diff's base seq and base tag equal the held state; (6) the
//! tag after applying equals the signed tag; (7) not expired, not issued in the
//! future (bounded clock skew); (8) dependencies match. Any failure leaves the
//! held state exactly as it was: apply builds a new state and only a fully
//! checked one replaces the old.
//!
//! # Held, pending, recent
//!
//! Per resource the verifier keeps the **held** version (verified, fresh when
//! it was committed, what a client exposes), at most one **pending** version
//! and the last [`RECENT_VERSIONS`] superseded versions. An update that passes
//! every check but is not yet exposable — it is expired (a catch-up from a
//! cache older than the TTL), or it depends on a network-map version this
//! verifier does not have (a cost map from before the catch-up's network-map
//! snapshot) — is *authentic and chained*: it becomes the pending version and
//! the result says why it waits ([`Waiting`]). The next update may build on the
//! pending version; the first one that is fresh and whose dependencies resolve
//! commits the chain. Every version that leaves held or pending goes to the
//! recent list, so a cost map may depend on a network-map version that was
//! only ever pending. Nothing pending is ever exposed.
//!
//! Sans-IO: time is passed in as Unix milliseconds.
//!
//! # Where the document puts it
//!
//! PROTOCOL.md §8: the state (§8.1), the algorithm and its check classes
//! (§8.4, [`Check`]), pending continuations (§8.5), the dependency rule
//! (§8.6) and freshness (§8.7) are here. The directory and the key chain
//! (§9) are in [`directory`] and [`trust`]; the chunk checks of §7.3 in
//! `crate::wire::chunk`.

use std::collections::HashMap;

use prost::Message as _;

use crate::{
    CostType, MapDiff, MapState, ModelError, ResourceId, Tag,
    keys::{KeyId, SignatureError, TrustedKeys, UPDATE_CONTEXT},
    pb,
    wire::{
        chunk::{assemble_chunks, check_chunk},
        update::{Dependency, Kind},
    },
};

pub mod directory;
pub mod trust;

/// Superseded versions remembered per resource for dependency checks.
pub const RECENT_VERSIONS: usize = 8;

/// Size limits applied before anything is decoded.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest `SignedUpdate.body` accepted.
    pub max_body: usize,
    /// Largest chunked snapshot (sum of chunks) accepted.
    pub max_snapshot: usize,
    /// Most chunks in one snapshot.
    pub max_chunks: usize,
    /// Clock skew tolerated on expiry and issue times, ms.
    pub max_skew_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        // 16 MiB bodies carry the largest diffs of a 1,100-PID map; 512 MiB
        // covers a dense 4,096-PID cost map snapshot.
        Limits { max_body: 16 << 20, max_snapshot: 512 << 20, max_chunks: 4096, max_skew_ms: 5_000 }
    }
}

/// The check that failed, numbered as in DESIGN §5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Check {
    /// 1: size limits.
    Size,
    /// 2: signature by a trusted key (and chunk binding).
    Signature,
    /// 3: a resource we asked for.
    Resource,
    /// 4: seq ordering (rollback / replay / gap).
    Sequence,
    /// 5: diff base matches held state.
    Base,
    /// 6: apply, and the resulting tag equals the signed one.
    Apply,
    /// 7: expiry and issue time.
    Expiry,
    /// 8: dependencies.
    Dependency,
    /// The origin id, and the trust in the keys (the key chain of the directory).
    Trust,
}

impl Check {
    /// A short label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Size => "size",
            Check::Signature => "signature",
            Check::Resource => "resource",
            Check::Sequence => "sequence",
            Check::Base => "base",
            Check::Apply => "apply",
            Check::Expiry => "expiry",
            Check::Dependency => "dependency",
            Check::Trust => "trust",
        }
    }
}

/// Why an update was rejected. The held state is unchanged in every case.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VerifyError {
    /// Check 1: a message exceeds a size limit.
    #[error("{what} is {len} bytes; the limit is {limit}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Check 2: no valid signature by a trusted key.
    #[error("signature: {0}")]
    Signature(#[from] SignatureError),
    /// Check 2: a chunk does not match the hash the signed update binds.
    #[error("snapshot chunk {index}: {reason}")]
    Chunk {
        /// The chunk index.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// The signed body is not a valid `Update` (an origin bug, not tampering).
    #[error("malformed update: {0}")]
    Malformed(String),
    /// Check 3: a resource we did not ask for.
    #[error("resource {0:?} was not requested")]
    UnexpectedResource(String),
    /// Check 4: seq lower than held, or equal for a non-heartbeat (replay).
    #[error("rollback: holding seq {held}, got seq {got}")]
    Rollback {
        /// Seq held.
        held: u64,
        /// Seq received.
        got: u64,
    },
    /// Check 4: a heartbeat for a version we do not hold yet.
    #[error("heartbeat for seq {got} but holding seq {held}: updates were skipped")]
    Gap {
        /// Seq held.
        held: u64,
        /// Seq of the heartbeat.
        got: u64,
    },
    /// Check 5: a diff's base seq is not the held seq.
    #[error("diff base seq {base} but holding seq {held}")]
    BaseSeq {
        /// Seq held.
        held: u64,
        /// The diff's base seq.
        base: u64,
    },
    /// Check 5: a diff's base tag is not the held tag.
    #[error("diff base tag {base} but holding tag {held}")]
    BaseTag {
        /// Tag held.
        held: Tag,
        /// The diff's base tag.
        base: Tag,
    },
    /// Check 6: the payload is invalid or does not apply.
    #[error("payload does not apply: {0}")]
    Payload(ModelError),
    /// Check 6: the state after applying has another tag than the signed one.
    #[error("tag after apply is {computed}, signed tag is {signed}")]
    TagMismatch {
        /// The signed tag.
        signed: Tag,
        /// The computed tag.
        computed: Tag,
    },
    /// Check 7: issued in the future beyond the allowed skew.
    #[error("issued at {issued_at_ms} ms, in the future (now {now_ms} ms)")]
    FromTheFuture {
        /// Claimed issue time.
        issued_at_ms: i64,
        /// Now.
        now_ms: i64,
    },
    /// Check 8: a dependency does not match the held version.
    #[error("depends on {resource} tag {wanted} but holding {held}")]
    Dependency {
        /// The resource depended on.
        resource: String,
        /// The tag the update depends on.
        wanted: String,
        /// What is held (`nothing` if not held).
        held: String,
    },
    /// The directory's key chain is not trusted.
    #[error("trust: {0}")]
    Trust(#[from] crate::verify::trust::TrustError),
    /// An update or directory of another origin than the key list's (or the
    /// first directory's).
    #[error("origin id {got:?}, but the trusted origin is {expected:?}")]
    Origin {
        /// The origin trusted.
        expected: String,
        /// The origin id received.
        got: String,
    },
    /// A directory past its expiry (a frozen one).
    #[error("directory seq {seq} expired at {expires_at_ms} ms (now {now_ms} ms)")]
    DirectoryExpired {
        /// Its seq.
        seq: u64,
        /// Its expiry.
        expires_at_ms: i64,
        /// Now.
        now_ms: i64,
    },
}

impl VerifyError {
    /// Which of the eight checks failed.
    pub fn check(&self) -> Check {
        match self {
            VerifyError::TooLarge { .. } => Check::Size,
            VerifyError::Signature(_) | VerifyError::Chunk { .. } => Check::Signature,
            VerifyError::UnexpectedResource(_) => Check::Resource,
            VerifyError::Rollback { .. } | VerifyError::Gap { .. } => Check::Sequence,
            VerifyError::BaseSeq { .. } | VerifyError::BaseTag { .. } => Check::Base,
            VerifyError::Malformed(_) | VerifyError::Payload(_) | VerifyError::TagMismatch { .. } => Check::Apply,
            VerifyError::FromTheFuture { .. } => Check::Expiry,
            VerifyError::Dependency { .. } => Check::Dependency,
            VerifyError::Trust(_) | VerifyError::Origin { .. } => Check::Trust,
            VerifyError::DirectoryExpired { .. } => Check::Expiry,
        }
    }
}

/// A decoded update whose signature has been checked (checks 1–3), waiting for
/// its chunks (if any) and the state checks.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The decoded update.
    pub update: pb::Update,
    /// The resource it is for.
    pub resource_id: ResourceId,
    /// The key that signed it.
    pub key_id: KeyId,
    /// Length of the signed body.
    pub body_len: usize,
}

impl Opened {
    /// `(chunk count, total length)` when the snapshot follows in chunks.
    pub fn chunks_expected(&self) -> Option<(usize, usize)> {
        match &self.update.payload {
            Some(pb::update::Payload::Chunked(c)) => Some((c.chunk_hashes.len(), c.total_len as usize)),
            _ => None,
        }
    }
    /// Checks one snapshot chunk the moment it arrives, before it is kept:
    /// the `received`-th chunk (counting from 0) must carry that index, hash
    /// to the signed hash, and keep the running total (`bytes_so_far` before
    /// it) within the signed length. So a sender of junk chunks is refused
    /// after one message, not after the signed count of them.
    pub fn check_chunk(
        &self,
        received: usize,
        bytes_so_far: usize,
        chunk: &pb::SnapshotChunk,
    ) -> Result<(), VerifyError> {
        let Some(pb::update::Payload::Chunked(c)) = &self.update.payload else {
            return Err(VerifyError::Chunk { index: received, reason: "the update has no chunks".into() });
        };
        check_chunk(c, received, bytes_so_far, chunk)
    }

    /// The update's seq.
    pub fn seq(&self) -> u64 {
        self.update.seq
    }
    /// True for a heartbeat.
    pub fn is_heartbeat(&self) -> bool {
        matches!(self.update.payload, Some(pb::update::Payload::Heartbeat(_)))
    }
}

/// What an update was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    /// A full state.
    Snapshot,
    /// A change.
    Diff,
    /// A re-signing of the held state.
    Heartbeat,
}

impl UpdateKind {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateKind::Snapshot => "snapshot",
            UpdateKind::Diff => "diff",
            UpdateKind::Heartbeat => "heartbeat",
        }
    }
}

/// A verified and applied update.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The resource.
    pub resource_id: ResourceId,
    /// Snapshot, diff or heartbeat.
    pub kind: UpdateKind,
    /// The new seq.
    pub seq: u64,
    /// The new tag.
    pub tag: Tag,
    /// Entries changed (all entries for a snapshot, 0 for a heartbeat).
    pub entries_changed: usize,
    /// Signed body bytes plus chunk bytes.
    pub bytes: usize,
    /// When the origin issued it.
    pub issued_at_ms: i64,
    /// `None`: committed (the held version now). `Some`: authentic and chained
    /// but kept pending, not exposed, for this reason.
    pub waiting: Option<Waiting>,
}

impl Applied {
    /// True when the update is now the held (exposable) version.
    pub fn is_committed(&self) -> bool {
        self.waiting.is_none()
    }
}

/// Why a verified update is pending instead of committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// Past its expiry (plus skew): a fresh update or heartbeat must extend it.
    Expired {
        /// When it expired.
        expires_at_ms: i64,
    },
    /// It depends on a version of `resource` this verifier does not have (yet).
    Dependency {
        /// The resource depended on.
        resource: ResourceId,
        /// Seq of the version depended on.
        seq: u64,
        /// Tag of the version depended on.
        tag: Tag,
    },
}

impl std::fmt::Display for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Waiting::Expired { expires_at_ms } => write!(f, "expired at {expires_at_ms} ms"),
            Waiting::Dependency { resource, seq, tag } => write!(f, "waits for {resource} seq {seq} tag {tag}"),
        }
    }
}

/// A verified resource version.
#[derive(Debug, Clone)]
pub struct Held {
    /// Seq.
    pub seq: u64,
    /// Tag.
    pub tag: Tag,
    /// The content.
    pub state: MapState,
    /// When the newest update or heartbeat for it was issued.
    pub issued_at_ms: i64,
    /// When it stops being fresh.
    pub expires_at_ms: i64,
    /// The dependencies of the update that produced it.
    pub dependencies: Vec<Dependency>,
}

/// Per-resource verified state, fed one signed update at a time. Cloning is
/// cheap: maps share their rows.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: TrustedKeys,
    limits: Limits,
    /// `None` = requested but nothing held yet.
    held: HashMap<ResourceId, Option<Held>>,
    /// The last few superseded versions of each resource: a cost map catching
    /// up may still depend on a network map version just replaced.
    recent: HashMap<ResourceId, std::collections::VecDeque<(u64, Tag, MapState)>>,
    /// Authentic but expired continuations of the held state (catch-up from a
    /// ring older than the TTL). Never exposed; committed only when a fresh
    /// update or heartbeat extends them.
    pending: HashMap<ResourceId, Held>,
    /// Accept any resource id (an RProxy relays whatever its upstream has).
    any_resource: bool,
    /// The origin every update must come from: the key list's, or (with
    /// fixed keys) the first accepted directory's.
    origin_id: Option<String>,
    /// The key list version accepted (0: none).
    key_list_version: u64,
    /// The directory accepted last, and its position.
    /// The held directory: its position, its content, and the signed bytes
    /// it came in (what is saved and relayed: never an ignored older one).
    directory: Option<(directory::DirectoryPosition, pb::Directory, pb::SignedDirectory)>,
}

fn tag_of(at: &'static str, b: &[u8]) -> Result<Tag, VerifyError> {
    if b.is_empty() {
        return Ok(Tag::ZERO);
    }
    Tag::from_slice(b).map_err(|e| VerifyError::Malformed(format!("{at}: {e}")))
}

impl Verifier {
    /// A verifier trusting `keys`, accepting the listed resources.
    pub fn new(keys: TrustedKeys, limits: Limits, resources: impl IntoIterator<Item = ResourceId>) -> Self {
        Verifier {
            keys,
            limits,
            held: resources.into_iter().map(|r| (r, None)).collect(),
            recent: HashMap::new(),
            pending: HashMap::new(),
            any_resource: false,
            origin_id: None,
            key_list_version: 0,
            directory: None,
        }
    }

    /// A verifier accepting every resource (RProxies, "subscribe to all").
    pub fn accepting_all(keys: TrustedKeys, limits: Limits) -> Self {
        Verifier {
            keys,
            limits,
            held: HashMap::new(),
            recent: HashMap::new(),
            pending: HashMap::new(),
            any_resource: true,
            origin_id: None,
            key_list_version: 0,
            directory: None,
        }
    }

    /// The keys updates are checked with now.
    pub fn keys(&self) -> &TrustedKeys {
        &self.keys
    }

    /// The key list version accepted (0: none yet, and always with fixed keys).
    pub fn key_list_version(&self) -> u64 {
        self.key_list_version
    }

    /// The origin id every update must carry: the accepted directory's (none
    /// before a directory is accepted).
    pub fn origin_id(&self) -> Option<&str> {
        self.origin_id.as_deref()
    }

    /// Adds a resource to those accepted.
    pub fn request(&mut self, id: ResourceId) {
        self.held.entry(id).or_insert(None);
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The verified state of a resource.
    pub fn get(&self, id: &str) -> Option<&Held> {
        self.held.get(id).and_then(|h| h.as_ref())
    }

    /// Resources accepted, with what is held of each.
    pub fn resources(&self) -> impl Iterator<Item = (&ResourceId, Option<&Held>)> {
        self.held.iter().map(|(k, v)| (k, v.as_ref()))
    }

    /// Checks 1–3: size, signature, resource. Decodes the body.
    pub fn open(&self, signed: &pb::SignedUpdate) -> Result<Opened, VerifyError> {
        if signed.body.len() > self.limits.max_body {
            return Err(VerifyError::TooLarge {
                what: "update body",
                len: signed.body.len(),
                limit: self.limits.max_body,
            });
        }
        let signers = self.keys.verify_all(UPDATE_CONTEXT, &signed.body, &signed.signatures)?;
        let update = pb::Update::decode(signed.body.clone()).map_err(|e| VerifyError::Malformed(e.to_string()))?;
        let key_id = self.keys.signer_at(&signers, update.issued_at_ms)?;
        if let Some(expected) = &self.origin_id
            && update.origin_id != *expected
        {
            return Err(VerifyError::Origin {
                expected: expected.clone(),
                got: update.origin_id.chars().take(80).collect(),
            });
        }
        let known = self.held.contains_key(update.resource_id.as_str());
        if !known && !self.any_resource {
            return Err(VerifyError::UnexpectedResource(update.resource_id.chars().take(80).collect()));
        }
        let resource_id = ResourceId::new(&update.resource_id)
            .map_err(|_| VerifyError::UnexpectedResource(update.resource_id.chars().take(80).collect()))?;
        if let Some(pb::update::Payload::Chunked(c)) = &update.payload {
            if c.chunk_hashes.len() > self.limits.max_chunks {
                return Err(VerifyError::TooLarge {
                    what: "chunk count",
                    len: c.chunk_hashes.len(),
                    limit: self.limits.max_chunks,
                });
            }
            if c.total_len as usize > self.limits.max_snapshot {
                return Err(VerifyError::TooLarge {
                    what: "snapshot",
                    len: c.total_len as usize,
                    limit: self.limits.max_snapshot,
                });
            }
        }
        Ok(Opened { update, resource_id, key_id, body_len: signed.body.len() })
    }

    /// Verifies and applies one signed update with its chunks (checks 1–8).
    pub fn verify(
        &mut self,
        signed: &pb::SignedUpdate,
        chunks: &[pb::SnapshotChunk],
        now_ms: i64,
    ) -> Result<Applied, VerifyError> {
        let opened = self.open(signed)?;
        self.apply(&opened, chunks, now_ms)
    }

    /// Checks 4–8 on an opened update. If all pass, the new state is committed
    /// (held) — or, when it is expired or its dependency is not held yet, kept
    /// pending ([`Applied::waiting`]). An error changes nothing.
    pub fn apply(
        &mut self,
        opened: &Opened,
        chunks: &[pb::SnapshotChunk],
        now_ms: i64,
    ) -> Result<Applied, VerifyError> {
        let (next, applied, on_pending) = self.check_at(opened, chunks, now_ms)?;
        let id = &opened.resource_id;
        if applied.waiting.is_some() {
            if let Some(old) = self.pending.insert(id.clone(), next).filter(|o| o.seq != applied.seq) {
                self.remember(id, old);
            }
            return Ok(applied);
        }
        let pending = self.pending.remove(id);
        let old = self.held.insert(id.clone(), Some(next)).flatten();
        if let Some(old) = old.filter(|o| o.seq != applied.seq) {
            self.remember(id, old);
        }
        if let Some(p) = pending.filter(|p| on_pending && p.seq != applied.seq) {
            self.remember(id, p);
        }
        Ok(applied)
    }

    /// Keeps a superseded version for dependency checks.
    fn remember(&mut self, id: &ResourceId, old: Held) {
        let r = self.recent.entry(id.clone()).or_default();
        if r.iter().any(|(s, t, _)| *s == old.seq && *t == old.tag) {
            return;
        }
        r.push_back((old.seq, old.tag, old.state));
        if r.len() > RECENT_VERSIONS {
            r.pop_front();
        }
    }

    /// Check 6 alone for a snapshot whose (seq, tag) the caller already trusts
    /// (e.g. an RProxy refreshing its cached snapshot of a version it verified
    /// as part of a chain): the content must hash to the signed tag.
    pub fn check_snapshot_content(opened: &Opened, chunks: &[pb::SnapshotChunk]) -> Result<MapState, VerifyError> {
        let u = &opened.update;
        let cost_type = u.cost_type.as_ref().map(CostType::try_from).transpose().map_err(VerifyError::Payload)?;
        let snap = match &u.payload {
            Some(pb::update::Payload::Snapshot(s)) => s.clone(),
            Some(pb::update::Payload::Chunked(c)) => pb::Snapshot::decode(assemble_chunks(c, chunks)?)
                .map_err(|e| VerifyError::Malformed(format!("chunked snapshot: {e}")))?,
            _ => return Err(VerifyError::Malformed("not a snapshot".into())),
        };
        let state = MapState::from_pb(snap, cost_type).map_err(VerifyError::Payload)?;
        let signed = tag_of("tag", &u.tag)?;
        if state.tag() != signed {
            return Err(VerifyError::TagMismatch { signed, computed: state.tag() });
        }
        Ok(state)
    }

    /// An expired continuation waiting for a fresh update (never exposed as data).
    pub fn pending(&self, id: &str) -> Option<&Held> {
        self.pending.get(id)
    }

    /// The state of `id` at `tag`: the held version or a recently superseded one.
    /// A pending (authentic, expired) version counts: during a catch-up older
    /// than the TTL, a cost map diff depends on a network map version that is
    /// itself still pending.
    pub fn version(&self, id: &str, tag: Tag) -> Option<(u64, &MapState)> {
        if let Some(h) = self.get(id).filter(|h| h.tag == tag) {
            return Some((h.seq, &h.state));
        }
        if let Some(h) = self.pending.get(id).filter(|h| h.tag == tag) {
            return Some((h.seq, &h.state));
        }
        self.recent.get(id)?.iter().rev().find(|(_, t, _)| *t == tag).map(|(s, _, st)| (*s, st))
    }

    /// Like [`Verifier::apply`] but changes nothing: returns the state the
    /// update would produce (committed or pending, as `Applied::waiting` says).
    pub fn check(
        &self,
        opened: &Opened,
        chunks: &[pb::SnapshotChunk],
        now_ms: i64,
    ) -> Result<(Held, Applied), VerifyError> {
        self.check_at(opened, chunks, now_ms).map(|(h, a, _)| (h, a))
    }

    /// Checks 4–8. Also says whether the update builds on the pending version.
    fn check_at(
        &self,
        opened: &Opened,
        chunks: &[pb::SnapshotChunk],
        now_ms: i64,
    ) -> Result<(Held, Applied, bool), VerifyError> {
        let u = &opened.update;
        // Build on a pending (expired) continuation when this update extends it.
        let pending = self.pending.get(opened.resource_id.as_str()).filter(|p| {
            let hb = matches!(u.payload, Some(pb::update::Payload::Heartbeat(_)));
            (hb && u.seq == p.seq) || (!hb && u.base_seq == p.seq && u.base_tag[..] == p.tag.0[..])
        });
        let on_pending = pending.is_some();
        let held = pending.or(self.get(opened.resource_id.as_str()));
        let held_seq = held.map_or(0, |h| h.seq);
        let payload = u.payload.as_ref().ok_or_else(|| VerifyError::Malformed("no payload".into()))?;
        let is_heartbeat = matches!(payload, pb::update::Payload::Heartbeat(_));
        let tag = tag_of("tag", &u.tag)?;
        let base_tag = tag_of("base_tag", &u.base_tag)?;

        // Check 2 (continued): chunks must be exactly the ones the signature binds.
        let chunk_bytes = match payload {
            pb::update::Payload::Chunked(c) => Some(assemble_chunks(c, chunks)?),
            _ => None,
        };

        // Check 4: ordering.
        if is_heartbeat {
            match held {
                Some(h) if u.seq == h.seq && u.issued_at_ms < h.issued_at_ms => {
                    return Err(VerifyError::Rollback { held: h.seq, got: u.seq });
                }
                _ if u.seq < held_seq => return Err(VerifyError::Rollback { held: held_seq, got: u.seq }),
                _ if u.seq > held_seq => return Err(VerifyError::Gap { held: held_seq, got: u.seq }),
                _ => {}
            }
        } else if u.seq <= held_seq {
            return Err(VerifyError::Rollback { held: held_seq, got: u.seq });
        }

        let cost_type = u.cost_type.as_ref().map(CostType::try_from).transpose().map_err(VerifyError::Payload)?;
        let (state, kind, entries_changed) = match payload {
            pb::update::Payload::Heartbeat(_) => {
                let h = held.ok_or(VerifyError::Gap { held: 0, got: u.seq })?;
                if tag != h.tag {
                    return Err(VerifyError::TagMismatch { signed: tag, computed: h.tag });
                }
                (h.state.clone(), UpdateKind::Heartbeat, 0)
            }
            pb::update::Payload::Diff(d) => {
                // Check 5: the diff's base is exactly what we hold.
                let h = held.ok_or(VerifyError::BaseSeq { held: 0, base: u.base_seq })?;
                if u.base_seq != h.seq {
                    return Err(VerifyError::BaseSeq { held: h.seq, base: u.base_seq });
                }
                if base_tag != h.tag {
                    return Err(VerifyError::BaseTag { held: h.tag, base: base_tag });
                }
                let diff = MapDiff::from_pb(d.clone()).map_err(VerifyError::Payload)?;
                let n = diff.entries_changed();
                (h.state.apply(&diff).map_err(VerifyError::Payload)?, UpdateKind::Diff, n)
            }
            pb::update::Payload::Snapshot(s) => {
                let st = MapState::from_pb(s.clone(), cost_type.clone()).map_err(VerifyError::Payload)?;
                let n = st.entry_count();
                (st, UpdateKind::Snapshot, n)
            }
            pb::update::Payload::Chunked(_) => {
                let bytes = chunk_bytes.unwrap_or_default();
                let s = pb::Snapshot::decode(bytes)
                    .map_err(|e| VerifyError::Malformed(format!("chunked snapshot: {e}")))?;
                let st = MapState::from_pb(s, cost_type.clone()).map_err(VerifyError::Payload)?;
                let n = st.entry_count();
                (st, UpdateKind::Snapshot, n)
            }
        };
        let expected_kind = match pb::ResourceKind::try_from(u.kind) {
            Ok(pb::ResourceKind::NetworkMap) => Kind::NetworkMap,
            Ok(pb::ResourceKind::CostMap) => Kind::CostMap,
            _ => return Err(VerifyError::Malformed(format!("resource kind {}", u.kind))),
        };
        if state.kind() != expected_kind || (kind != UpdateKind::Heartbeat && state.cost_type() != cost_type.as_ref()) {
            return Err(VerifyError::Payload(ModelError::DiffMismatch(
                "payload kind or cost type differs from the header".into(),
            )));
        }
        // Check 6: the state we computed is the state the origin signed.
        if state.tag() != tag {
            return Err(VerifyError::TagMismatch { signed: tag, computed: state.tag() });
        }
        // Check 7: freshness. Expired is not an error: the update waits pending.
        let expired = u.expires_at_ms.saturating_add(self.limits.max_skew_ms) < now_ms;
        if u.issued_at_ms > now_ms.saturating_add(self.limits.max_skew_ms) {
            return Err(VerifyError::FromTheFuture { issued_at_ms: u.issued_at_ms, now_ms });
        }
        // Check 8: dependencies.
        let dependencies = u
            .dependencies
            .iter()
            .map(|d| {
                Ok(Dependency {
                    resource_id: ResourceId::new(&d.resource_id)
                        .map_err(|e| VerifyError::Malformed(format!("dependency: {e}")))?,
                    seq: d.seq,
                    tag: tag_of("dependency tag", &d.tag)?,
                })
            })
            .collect::<Result<Vec<_>, VerifyError>>()?;
        let unresolved = self.check_dependencies(&state, &dependencies, is_heartbeat.then_some(held).flatten())?;
        let waiting = if expired {
            Some(Waiting::Expired { expires_at_ms: u.expires_at_ms })
        } else {
            unresolved.map(|d| Waiting::Dependency { resource: d.resource_id.clone(), seq: d.seq, tag: d.tag })
        };

        let bytes = opened.body_len + chunks.iter().map(|c| c.data.len()).sum::<usize>();
        let applied = Applied {
            resource_id: opened.resource_id.clone(),
            kind,
            seq: u.seq,
            tag,
            entries_changed,
            bytes,
            issued_at_ms: u.issued_at_ms,
            waiting,
        };
        let next =
            Held { seq: u.seq, tag, state, issued_at_ms: u.issued_at_ms, expires_at_ms: u.expires_at_ms, dependencies };
        Ok((next, applied, on_pending))
    }

    /// Check 8. The signed header and the signed content must name the same
    /// dependency, a heartbeat must carry those of the version it re-signs,
    /// and a dependency newer than what is held of it is an error (the update
    /// it needs was withheld). Returns a dependency on an older version that is
    /// no longer remembered, or on the pending one (the update then waits).
    fn check_dependencies<'d>(
        &self,
        state: &MapState,
        deps: &'d [Dependency],
        heartbeat_of: Option<&Held>,
    ) -> Result<Option<&'d Dependency>, VerifyError> {
        let state_dep = state.depends_on();
        let mismatch = |resource: &str, wanted: String, held: String| VerifyError::Dependency {
            resource: resource.into(),
            wanted,
            held,
        };
        match (state_dep, deps.first()) {
            (None, None) => return Ok(None),
            (Some(s), Some(d)) if s.resource_id == d.resource_id && s.tag == d.tag && deps.len() == 1 => {}
            (s, d) => {
                return Err(mismatch(
                    s.map(|s| s.resource_id.as_str()).unwrap_or("-"),
                    d.map(|d| d.tag.to_hex()).unwrap_or_else(|| "nothing".into()),
                    s.map(|s| s.tag.to_hex()).unwrap_or_else(|| "nothing".into()),
                ));
            }
        }
        for d in deps {
            // A heartbeat re-signs the held version; it must carry its dependencies.
            if let Some(h) = heartbeat_of
                && !h.dependencies.iter().any(|x| x == d)
            {
                return Err(mismatch(d.resource_id.as_str(), d.tag.to_hex(), "another version".into()));
            }
            if self.resolves(d) {
                continue;
            }
            // Not resolvable. A version *older* than the newest one known here
            // is history this verifier skipped (a cost map from before the
            // catch-up's network-map snapshot): wait for the cost map to catch
            // up. The newest pending one: wait for it to commit. A *newer* one,
            // or another version at a known seq, means the network map update
            // was withheld or forged: an error.
            let id = d.resource_id.as_str();
            let newest = [self.get(id), self.pending.get(id)].into_iter().flatten().max_by_key(|h| h.seq);
            match newest {
                Some(h) if d.seq != 0 && d.seq < h.seq => return Ok(Some(d)),
                Some(h) if d.seq == h.seq && d.tag == h.tag => return Ok(Some(d)),
                Some(h) => {
                    return Err(mismatch(id, d.tag.to_hex(), format!("seq {} tag {}", h.seq, h.tag)));
                }
                None => return Err(mismatch(id, d.tag.to_hex(), "nothing".into())),
            }
        }
        Ok(None)
    }

    /// True when the version `d` names is held or recently superseded (a
    /// pending version does not count: it is not exposed either).
    fn resolves(&self, d: &Dependency) -> bool {
        let id = d.resource_id.as_str();
        let matches = |seq: u64| d.seq == 0 || seq == d.seq;
        // Held and recent are both searched: a network map can return to an
        // earlier content (a PID added, then removed), so the held version
        // may carry the tag of an older seq that a cost map names.
        if self.get(id).is_some_and(|h| h.tag == d.tag && matches(h.seq)) {
            return true;
        }
        self.recent.get(id).is_some_and(|r| r.iter().any(|(s, t, _)| *t == d.tag && matches(*s)))
    }

    /// Whether a resource is fresh at `now_ms`.
    pub fn freshness(&self, id: &str, now_ms: i64) -> Freshness {
        match self.get(id) {
            None => Freshness::Missing,
            Some(h) if h.expires_at_ms < now_ms => Freshness::Stale { since_ms: h.expires_at_ms },
            Some(h) => Freshness::Fresh { until_ms: h.expires_at_ms },
        }
    }
}

/// Freshness of a held resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Nothing held.
    Missing,
    /// Valid until the given time.
    Fresh {
        /// Unix ms.
        until_ms: i64,
    },
    /// Expired at the given time: not to be served as fresh.
    Stale {
        /// Unix ms.
        since_ms: i64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        CostMapBuilder, CostType, NetworkMap, OriginKey, Pid, PidPrefixes, Signed, VersionTag,
        wire::update::{Signer, Version},
    };
    use bytes::Bytes;
    use std::collections::BTreeMap;

    const NOW: i64 = 1_000_000;

    fn nm(extra: bool) -> NetworkMap {
        let mut m = BTreeMap::new();
        m.insert(Pid::new("a").expect("pid"), PidPrefixes::parse("a", &["10.0.0.0/8"], &[] as &[&str]).expect("p"));
        let b = if extra { vec!["11.0.0.0/8", "12.0.0.0/8"] } else { vec!["11.0.0.0/8"] };
        m.insert(Pid::new("b").expect("pid"), PidPrefixes::parse("b", &b, &[]).expect("p"));
        NetworkMap::new(m).expect("nm")
    }

    fn cm(nm: &NetworkMap, ab: f64) -> MapState {
        let p = |s: &str| Pid::new(s).expect("pid");
        let dep = VersionTag { resource_id: rid("nm"), tag: nm.tag() };
        let mut b = CostMapBuilder::new(CostType::routingcost(), Some(dep));
        b.row(p("a"), vec![(p("a"), 0.0), (p("b"), ab)]).row(p("b"), vec![(p("a"), ab), (p("b"), 0.0)]);
        MapState::Cost(b.build().expect("cm"))
    }

    fn rid(s: &str) -> ResourceId {
        ResourceId::new(s).expect("rid")
    }

    struct Fixture {
        signer: Signer,
        nm1: Version,
        cm1: Version,
        cm2: Version,
    }

    fn fixture() -> Fixture {
        let signer = Signer::new(OriginKey::from_seed([7; 32]), 60_000);
        let n = nm(false);
        let dep = vec![Dependency { resource_id: rid("nm"), seq: 1, tag: n.tag() }];
        let cm1 = Version { seq: 1, state: cm(&n, 5.0), dependencies: dep.clone() };
        let cm2 = Version { seq: 2, state: cm(&n, 7.0), dependencies: dep };
        Fixture { signer, nm1: Version { seq: 1, state: MapState::Network(n), dependencies: vec![] }, cm1, cm2 }
    }

    impl Fixture {
        fn verifier(&self) -> Verifier {
            let keys = TrustedKeys::new([self.signer.key().public()]);
            Verifier::new(keys, Limits::default(), [rid("nm"), rid("cm")])
        }
        /// A verifier holding nm@1 and cm@1.
        fn primed(&self) -> Verifier {
            let mut v = self.verifier();
            let s = self.signer.snapshot(&rid("nm"), &self.nm1, NOW);
            v.verify(&s.update, &s.chunks, NOW).expect("nm snapshot");
            let s = self.signer.snapshot(&rid("cm"), &self.cm1, NOW);
            v.verify(&s.update, &s.chunks, NOW).expect("cm snapshot");
            v
        }
        fn diff12(&self) -> Signed {
            let d = self.cm1.state.diff(&self.cm2.state).expect("diff");
            self.signer.diff(&rid("cm"), &self.cm1, &self.cm2, &d, NOW)
        }
    }

    /// Asserts `signed` is rejected with `check` and nothing held changes.
    fn rejected(
        v: &mut Verifier,
        signed: &pb::SignedUpdate,
        chunks: &[pb::SnapshotChunk],
        now: i64,
        check: Check,
    ) -> VerifyError {
        let before: Vec<(String, u64, Tag, i64)> =
            v.resources().filter_map(|(k, h)| h.map(|h| (k.to_string(), h.seq, h.tag, h.expires_at_ms))).collect();
        let err = v.verify(signed, chunks, now).expect_err("must be rejected");
        assert_eq!(err.check(), check, "{err}");
        let mut after: Vec<(String, u64, Tag, i64)> =
            v.resources().filter_map(|(k, h)| h.map(|h| (k.to_string(), h.seq, h.tag, h.expires_at_ms))).collect();
        let mut before = before;
        before.sort();
        after.sort();
        assert_eq!(before, after, "state changed after a rejection");
        err
    }

    /// Re-signs a modified body with the fixture key: a validly signed but wrong update.
    fn resign(f: &Fixture, s: &Signed, edit: impl FnOnce(&mut pb::Update)) -> pb::SignedUpdate {
        let mut u = pb::Update::decode(s.update.body.clone()).expect("decode");
        edit(&mut u);
        let body = Bytes::from(u.encode_to_vec());
        let sig = f.signer.key().sign(UPDATE_CONTEXT, &body);
        pb::SignedUpdate { body, signatures: vec![sig] }
    }

    #[test]
    fn accepts_snapshot_diff_heartbeat_chain() {
        let f = fixture();
        let mut v = f.primed();
        let a = v.verify(&f.diff12().update, &[], NOW + 1).expect("diff");
        assert_eq!((a.kind, a.seq, a.entries_changed), (UpdateKind::Diff, 2, 2));
        let hb = f.signer.heartbeat(&rid("cm"), &f.cm2, NOW + 50_000);
        v.verify(&hb.update, &[], NOW + 50_000).expect("heartbeat");
        assert_eq!(v.get("cm").map(|h| h.expires_at_ms), Some(NOW + 110_000));
        assert_eq!(v.freshness("cm", NOW + 100_000), Freshness::Fresh { until_ms: NOW + 110_000 });
        assert_eq!(v.freshness("cm", NOW + 120_000), Freshness::Stale { since_ms: NOW + 110_000 });
    }

    #[test]
    fn rejects_oversized_body_before_decoding() {
        let f = fixture();
        let mut v = f.primed();
        let signed = pb::SignedUpdate { body: Bytes::from(vec![0u8; (16 << 20) + 1]), signatures: vec![] };
        rejected(&mut v, &signed, &[], NOW, Check::Size);
    }

    #[test]
    fn rejects_bad_signature() {
        let f = fixture();
        let mut v = f.primed();
        let mut s = f.diff12().update;
        let mut sig = s.signatures[0].sig.to_vec();
        sig[10] ^= 1;
        s.signatures[0].sig = sig.into();
        let err = rejected(&mut v, &s, &[], NOW, Check::Signature);
        assert!(matches!(err, VerifyError::Signature(SignatureError::Invalid(_))));
    }

    #[test]
    fn rejects_unknown_key() {
        let f = fixture();
        let mut v = f.primed();
        let other = Signer::new(OriginKey::from_seed([9; 32]), 60_000);
        let d = f.cm1.state.diff(&f.cm2.state).expect("diff");
        let s = other.diff(&rid("cm"), &f.cm1, &f.cm2, &d, NOW);
        let err = rejected(&mut v, &s.update, &[], NOW, Check::Signature);
        assert!(matches!(err, VerifyError::Signature(SignatureError::UnknownKey(_))));
    }

    #[test]
    fn rejects_wrong_resource() {
        let f = fixture();
        let mut v = f.primed();
        let s = f.signer.snapshot(&rid("other"), &f.cm1, NOW);
        rejected(&mut v, &s.update, &[], NOW, Check::Resource);
    }

    #[test]
    fn rejects_rollback_and_replay() {
        let f = fixture();
        let mut v = f.primed();
        v.verify(&f.diff12().update, &[], NOW).expect("diff");
        let old = f.signer.snapshot(&rid("cm"), &f.cm1, NOW);
        let err = rejected(&mut v, &old.update, &[], NOW, Check::Sequence);
        assert_eq!(err, VerifyError::Rollback { held: 2, got: 1 });
        let replay = f.diff12();
        rejected(&mut v, &replay.update, &[], NOW, Check::Sequence);
        // An old heartbeat replayed after a newer one is a rollback too.
        let hb_old = f.signer.heartbeat(&rid("cm"), &f.cm2, NOW + 1);
        let hb_new = f.signer.heartbeat(&rid("cm"), &f.cm2, NOW + 2);
        v.verify(&hb_new.update, &[], NOW + 2).expect("hb");
        rejected(&mut v, &hb_old.update, &[], NOW + 2, Check::Sequence);
    }

    #[test]
    fn rejects_wrong_base_seq() {
        let f = fixture();
        let mut v = f.primed();
        let s = resign(&f, &f.diff12(), |u| {
            u.seq = 3;
            u.base_seq = 2;
        });
        let err = rejected(&mut v, &s, &[], NOW, Check::Base);
        assert_eq!(err, VerifyError::BaseSeq { held: 1, base: 2 });
    }

    #[test]
    fn rejects_wrong_base_tag() {
        let f = fixture();
        let mut v = f.primed();
        let s = resign(&f, &f.diff12(), |u| u.base_tag = Bytes::from(vec![1u8; 32]));
        let err = rejected(&mut v, &s, &[], NOW, Check::Base);
        assert!(matches!(err, VerifyError::BaseTag { .. }));
    }

    #[test]
    fn rejects_tag_mismatch_after_apply() {
        let f = fixture();
        let mut v = f.primed();
        let s = resign(&f, &f.diff12(), |u| {
            if let Some(pb::update::Payload::Diff(pb::Diff { map: Some(pb::diff::Map::CostMap(d)) })) = &mut u.payload {
                d.rows[0].set_cost[0] = 8.0;
            }
        });
        let err = rejected(&mut v, &s, &[], NOW, Check::Apply);
        assert!(matches!(err, VerifyError::TagMismatch { .. }));
    }

    #[test]
    fn expired_updates_wait_and_future_updates_are_rejected() {
        let f = fixture();
        let mut v = f.primed();
        let s = f.diff12();
        let late = NOW + 60_000 + 5_001;
        let a = v.verify(&s.update, &[], late).expect("authentic and chained");
        assert_eq!(a.waiting, Some(Waiting::Expired { expires_at_ms: NOW + 60_000 }));
        assert_eq!(v.get("cm").map(|h| h.seq), Some(1), "nothing expired is committed");
        // Within the skew allowance it is committed.
        let mut v2 = f.primed();
        assert!(v2.verify(&s.update, &[], NOW + 60_000 + 4_999).expect("within skew").is_committed());
        let future = resign(&f, &s, |u| u.issued_at_ms = NOW + 10_000);
        let err = rejected(&mut f.primed(), &future, &[], NOW, Check::Expiry);
        assert!(matches!(err, VerifyError::FromTheFuture { .. }));
    }

    #[test]
    fn expired_catch_up_is_committed_only_when_a_fresh_update_extends_it() {
        let f = fixture();
        let mut v = f.primed();
        let late = NOW + 200_000;
        // The diff was issued at NOW and expired at NOW + 60 s: pending now...
        let a = v.verify(&f.diff12().update, &[], late).expect("pending");
        assert!(!a.is_committed());
        assert_eq!(v.get("cm").map(|h| h.seq), Some(1), "nothing expired is committed");
        assert_eq!(v.pending("cm").map(|h| h.seq), Some(2));
        // ...and a fresh heartbeat of the version it leads to commits the chain.
        let hb = f.signer.heartbeat(&rid("cm"), &f.cm2, late);
        assert!(v.verify(&hb.update, &[], late).expect("fresh heartbeat").is_committed());
        assert_eq!(v.get("cm").map(|h| (h.seq, h.expires_at_ms)), Some((2, late + 60_000)));
        assert!(v.pending("cm").is_none());
    }

    /// nm@k and the cost map re-bound to it, for k = 1..=n, as the origin
    /// publishes them: (network map versions, cost map versions).
    fn rebinding_history(n: u64) -> (Vec<Version>, Vec<Version>) {
        let mut nms = Vec::new();
        let mut cms = Vec::new();
        for k in 1..=n {
            // b's prefix moves with k, so each network map version differs.
            let mut pids = BTreeMap::new();
            pids.insert(
                Pid::new("a").expect("pid"),
                PidPrefixes::parse("a", &["10.0.0.0/8"], &[] as &[&str]).expect("p"),
            );
            let b = format!("{}.0.0.0/8", 20 + k);
            pids.insert(Pid::new("b").expect("pid"), PidPrefixes::parse("b", &[b.as_str()], &[]).expect("p"));
            let m = NetworkMap::new(pids).expect("nm");
            let dep = vec![Dependency { resource_id: rid("nm"), seq: k, tag: m.tag() }];
            cms.push(Version { seq: k, state: cm(&m, 5.0), dependencies: dep });
            nms.push(Version { seq: k, state: MapState::Network(m), dependencies: vec![] });
        }
        (nms, cms)
    }

    fn chain(f: &Fixture, id: &str, vs: &[Version], at: i64) -> Vec<Signed> {
        let mut out = vec![f.signer.snapshot(&rid(id), &vs[0], at)];
        for w in vs.windows(2) {
            let d = w[0].state.diff(&w[1].state).expect("diff");
            out.push(f.signer.diff(&rid(id), &w[0], &w[1], &d, at));
        }
        out
    }

    #[test]
    fn late_joiner_accepts_any_catch_up_of_a_rebinding_history() {
        // The class behind "late joiners rejected after a network-map change":
        // a cache holds an old snapshot of each map and every diff since; the
        // network map changed more often than the verifier remembers versions,
        // and the old parts are expired. The catch-up is the network map's
        // chain, then the cost map's, then fresh heartbeats.
        let f = fixture();
        for (n, age) in [(2, 0), (3, 200_000), (RECENT_VERSIONS as u64 + 5, 0), (RECENT_VERSIONS as u64 + 5, 200_000)] {
            let (nms, cms) = rebinding_history(n);
            let now = NOW + age;
            let mut v = f.verifier();
            for s in chain(&f, "nm", &nms, NOW).iter().chain(&chain(&f, "cm", &cms, NOW)) {
                v.verify(&s.update, &s.chunks, now).unwrap_or_else(|e| panic!("n={n} age={age}: {e}"));
            }
            for (id, last) in [("nm", nms.last()), ("cm", cms.last())] {
                let hb = f.signer.heartbeat(&rid(id), last.expect("v"), now);
                let a = v.verify(&hb.update, &[], now).unwrap_or_else(|e| panic!("n={n} age={age} {id} hb: {e}"));
                assert!(a.is_committed(), "n={n} age={age} {id}: {:?}", a.waiting);
                assert_eq!(v.get(id).map(|h| h.seq), Some(n), "n={n} age={age} {id}");
            }
        }
    }

    #[test]
    fn cost_map_bound_to_a_forgotten_network_map_waits_and_commits_when_it_catches_up() {
        let f = fixture();
        let n = RECENT_VERSIONS as u64 + 3;
        let (nms, cms) = rebinding_history(n);
        let mut v = f.verifier();
        for s in chain(&f, "nm", &nms, NOW) {
            v.verify(&s.update, &[], NOW).expect("nm");
        }
        // cm@1 depends on nm@1, which this verifier saw but no longer remembers:
        // authentic, kept pending, not exposed.
        let cm_chain = chain(&f, "cm", &cms, NOW);
        let a = v.verify(&cm_chain[0].update, &[], NOW).expect("pending");
        assert!(matches!(a.waiting, Some(Waiting::Dependency { seq: 1, .. })), "{:?}", a.waiting);
        assert!(v.get("cm").is_none());
        // The cost map's diffs catch up to a network map version it has.
        for s in &cm_chain[1..] {
            v.verify(&s.update, &[], NOW).expect("cm diff");
        }
        assert_eq!(v.get("cm").map(|h| h.seq), Some(n));
        assert!(v.pending("cm").is_none());
    }

    #[test]
    fn dependency_on_a_newer_network_map_than_held_is_rejected() {
        let f = fixture();
        // Held nm is version 1; a cost map computed against another network map
        // version must not be accepted with it.
        let mut v = f.primed();
        let n2 = nm(true);
        let cm3 = Version {
            seq: 3,
            state: cm(&n2, 5.0),
            dependencies: vec![Dependency { resource_id: rid("nm"), seq: 2, tag: n2.tag() }],
        };
        let s = f.signer.snapshot(&rid("cm"), &cm3, NOW);
        // nm@2 was withheld: an error, not a wait.
        let err = rejected(&mut v, &s.update, &[], NOW, Check::Dependency);
        assert!(matches!(err, VerifyError::Dependency { .. }), "{err}");
        // A header dependency that disagrees with the signed content is refused too.
        let lying = Version { dependencies: f.cm2.dependencies.clone(), ..cm3 };
        let s = f.signer.snapshot(&rid("cm"), &lying, NOW);
        rejected(&mut v, &s.update, &[], NOW, Check::Dependency);
    }

    #[test]
    fn accepts_dependency_on_a_recently_superseded_version() {
        let f = fixture();
        let mut v = f.primed();
        let n2 = Version { seq: 2, state: MapState::Network(nm(true)), dependencies: vec![] };
        let d = f.nm1.state.diff(&n2.state).expect("diff");
        let s = f.signer.diff(&rid("nm"), &f.nm1, &n2, &d, NOW);
        v.verify(&s.update, &[], NOW).expect("nm diff");
        // cm@2 still depends on nm@1, which is no longer current: accepted.
        v.verify(&f.diff12().update, &[], NOW).expect("depends on nm@1");
        assert_eq!(v.version("nm", f.nm1.state.tag()).map(|(s, _)| s), Some(1));
    }

    #[test]
    fn chunked_snapshot_verifies_and_tampered_chunk_is_rejected() {
        let mut f = fixture();
        f.signer.chunk_size = 16;
        let mut v = f.verifier();
        let s = f.signer.snapshot(&rid("nm"), &f.nm1, NOW);
        assert!(s.chunks.len() > 1, "fixture must chunk");
        let mut bad = s.chunks.clone();
        let mut d = bad[1].data.to_vec();
        d[0] ^= 0x80;
        bad[1].data = d.into();
        rejected(&mut v, &s.update, &bad, NOW, Check::Signature);
        let mut swapped = s.chunks.clone();
        swapped.swap(0, 1);
        rejected(&mut v, &s.update, &swapped, NOW, Check::Signature);
        rejected(&mut v, &s.update, &s.chunks[..1], NOW, Check::Signature);
        v.verify(&s.update, &s.chunks, NOW).expect("intact chunks verify");
        assert_eq!(v.get("nm").map(|h| h.tag), Some(f.nm1.state.tag()));
    }
}
