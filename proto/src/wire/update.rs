//! Building, encoding, signing and chunking updates (DESIGN §4). Sans-IO: the
//! caller supplies the key, the clock readings and the maps.
//!
//! PROTOCOL.md §6.1–§6.3: the `SignedUpdate` envelope, the `Update` header
//! and its snapshot, diff or heartbeat payload. A snapshot too big for one
//! message is split as §7.1 says (`super::chunk`); the state and diff
//! messages themselves (§6.4–§6.7) are converted in `super::maps`.

use bytes::Bytes;
use prost::Message as _;

use crate::{
    CostMap, CostMapDiff, CostType, ModelError, NetworkMap, NetworkMapDiff, ResourceId, Tag, VersionTag,
    keys::{OriginKey, UPDATE_CONTEXT},
    pb,
    wire::chunk,
};

/// Default chunk size for big snapshots: well under gRPC's usual 4 MiB message
/// limit, large enough that a 2,000-PID cost map (~40 MB) is ~40 chunks.
pub const DEFAULT_CHUNK_SIZE: usize = 1 << 20;

/// The kind of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A network map.
    NetworkMap,
    /// A cost map.
    CostMap,
}

impl Kind {
    /// Lower-case name for logs and CLI output.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NetworkMap => "network-map",
            Kind::CostMap => "cost-map",
        }
    }
    pub(crate) fn to_pb(self) -> pb::ResourceKind {
        match self {
            Kind::NetworkMap => pb::ResourceKind::NetworkMap,
            Kind::CostMap => pb::ResourceKind::CostMap,
        }
    }
}

/// The content of one resource version.
#[derive(Debug, Clone, PartialEq)]
pub enum MapState {
    /// A network map.
    Network(NetworkMap),
    /// A cost map.
    Cost(CostMap),
}

/// The change between two versions of one resource.
#[derive(Debug, Clone, PartialEq)]
pub enum MapDiff {
    /// Network map change.
    Network(NetworkMapDiff),
    /// Cost map change.
    Cost(CostMapDiff),
}

impl MapDiff {
    /// Entries (PIDs or cost pairs) changed.
    pub fn entries_changed(&self) -> usize {
        match self {
            MapDiff::Network(d) => d.entries_changed(),
            MapDiff::Cost(d) => d.entries_changed(),
        }
    }
}

impl MapState {
    /// The content tag.
    pub fn tag(&self) -> Tag {
        match self {
            MapState::Network(m) => m.tag(),
            MapState::Cost(m) => m.tag(),
        }
    }

    /// Network map or cost map.
    pub fn kind(&self) -> Kind {
        match self {
            MapState::Network(_) => Kind::NetworkMap,
            MapState::Cost(_) => Kind::CostMap,
        }
    }

    /// The cost type of a cost map.
    pub fn cost_type(&self) -> Option<&CostType> {
        match self {
            MapState::Cost(m) => Some(m.cost_type()),
            MapState::Network(_) => None,
        }
    }

    /// PIDs (network map) or reachable pairs (cost map).
    pub fn entry_count(&self) -> usize {
        match self {
            MapState::Network(m) => m.len(),
            MapState::Cost(m) => m.entry_count(),
        }
    }

    /// The network-map version a cost map depends on.
    pub fn depends_on(&self) -> Option<&VersionTag> {
        match self {
            MapState::Cost(m) => m.depends_on(),
            MapState::Network(_) => None,
        }
    }

    /// The diff from `self` to `new`, or `None` when only a snapshot can express it.
    pub fn diff(&self, new: &MapState) -> Option<MapDiff> {
        match (self, new) {
            (MapState::Network(a), MapState::Network(b)) => Some(MapDiff::Network(a.diff(b))),
            (MapState::Cost(a), MapState::Cost(b)) => a.diff(b).map(MapDiff::Cost),
            _ => None,
        }
    }

    /// Applies `diff`, returning the new state; `self` is unchanged.
    pub fn apply(&self, diff: &MapDiff) -> Result<MapState, ModelError> {
        match (self, diff) {
            (MapState::Network(a), MapDiff::Network(d)) => a.apply(d).map(MapState::Network),
            (MapState::Cost(a), MapDiff::Cost(d)) => a.apply(d).map(MapState::Cost),
            _ => Err(ModelError::DiffMismatch("diff kind does not match the resource kind".into())),
        }
    }

    /// The protobuf snapshot.
    pub fn to_pb(&self) -> pb::Snapshot {
        pb::Snapshot {
            map: Some(match self {
                MapState::Network(m) => pb::snapshot::Map::NetworkMap(m.into()),
                MapState::Cost(m) => pb::snapshot::Map::CostMap(m.into()),
            }),
        }
    }

    /// Decodes a protobuf snapshot; `cost_type` comes from the update header.
    pub fn from_pb(s: pb::Snapshot, cost_type: Option<CostType>) -> Result<MapState, ModelError> {
        match s.map {
            Some(pb::snapshot::Map::NetworkMap(m)) => Ok(MapState::Network(NetworkMap::try_from(&m)?)),
            Some(pb::snapshot::Map::CostMap(m)) => {
                let ct = cost_type.ok_or(ModelError::MissingField("cost_type"))?;
                Ok(MapState::Cost(crate::cost_map_from_pb(ct, m)?))
            }
            None => Err(ModelError::MissingField("snapshot.map")),
        }
    }
}

impl MapDiff {
    /// The protobuf diff.
    pub fn to_pb(&self) -> pb::Diff {
        pb::Diff {
            map: Some(match self {
                MapDiff::Network(d) => pb::diff::Map::NetworkMap(d.into()),
                MapDiff::Cost(d) => pb::diff::Map::CostMap(d.into()),
            }),
        }
    }

    /// Decodes a protobuf diff.
    pub fn from_pb(d: pb::Diff) -> Result<MapDiff, ModelError> {
        match d.map {
            Some(pb::diff::Map::NetworkMap(d)) => Ok(MapDiff::Network(NetworkMapDiff::try_from(&d)?)),
            Some(pb::diff::Map::CostMap(d)) => Ok(MapDiff::Cost(CostMapDiff::try_from(d)?)),
            None => Err(ModelError::MissingField("diff.map")),
        }
    }
}

/// A dependency on another resource's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The resource depended on.
    pub resource_id: ResourceId,
    /// Its seq.
    pub seq: u64,
    /// Its tag.
    pub tag: Tag,
}

/// Everything an update binds besides its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// The origin's id (its key id).
    pub origin_id: String,
    /// The resource.
    pub resource_id: ResourceId,
    /// Its kind.
    pub kind: Kind,
    /// Its cost type (cost maps).
    pub cost_type: Option<CostType>,
    /// Version after this update.
    pub seq: u64,
    /// Version this applies to (0 for a snapshot).
    pub base_seq: u64,
    /// Tag of the base version ([`Tag::ZERO`] for a snapshot).
    pub base_tag: Tag,
    /// Tag after applying.
    pub tag: Tag,
    /// Unix ms.
    pub issued_at_ms: i64,
    /// Unix ms.
    pub expires_at_ms: i64,
    /// Versions of other resources this one was computed against.
    pub dependencies: Vec<Dependency>,
}

/// What an update carries.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// The full state.
    Snapshot(&'a MapState),
    /// The change from `base_seq`.
    Diff(&'a MapDiff),
    /// Nothing: "still at seq, valid until expires_at".
    Heartbeat,
}

/// A signed update ready to store and relay: the envelope, plus the chunks of a
/// snapshot too big for one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Signed {
    /// What the body binds (kept so that the signer's callers need not decode it).
    pub header: Header,
    /// Snapshot, diff or heartbeat.
    pub kind: crate::UpdateKind,
    /// The envelope (its `body` is the exact signed bytes).
    pub update: pb::SignedUpdate,
    /// Snapshot chunks, empty unless the payload is chunked.
    pub chunks: Vec<pb::SnapshotChunk>,
}

impl Signed {
    /// Bytes on the wire: body plus signatures plus chunks.
    pub fn wire_len(&self) -> usize {
        self.update.encoded_len() + self.chunks.iter().map(|c| c.data.len()).sum::<usize>()
    }
}

fn header_pb(h: &Header) -> pb::Update {
    pb::Update {
        origin_id: h.origin_id.clone(),
        resource_id: h.resource_id.to_string(),
        kind: h.kind.to_pb() as i32,
        cost_type: h.cost_type.as_ref().map(Into::into),
        seq: h.seq,
        base_seq: h.base_seq,
        base_tag: if h.base_tag == Tag::ZERO { Bytes::new() } else { Bytes::copy_from_slice(&h.base_tag.0) },
        tag: Bytes::copy_from_slice(&h.tag.0),
        issued_at_ms: h.issued_at_ms,
        expires_at_ms: h.expires_at_ms,
        dependencies: h
            .dependencies
            .iter()
            .map(|d| pb::Dependency {
                resource_id: d.resource_id.to_string(),
                seq: d.seq,
                tag: Bytes::copy_from_slice(&d.tag.0),
            })
            .collect(),
        payload: None,
    }
}

/// Encodes `header` + `payload` once, signs the bytes, and splits a snapshot
/// larger than `chunk_size` into chunks bound to the update by their hashes.
pub fn sign(keys: &[OriginKey], header: &Header, payload: Payload<'_>, chunk_size: usize) -> Signed {
    let chunk_size = chunk_size.max(1);
    let mut u = header_pb(header);
    let mut chunks = Vec::new();
    let kind = match payload {
        Payload::Heartbeat => crate::UpdateKind::Heartbeat,
        Payload::Diff(_) => crate::UpdateKind::Diff,
        Payload::Snapshot(_) => crate::UpdateKind::Snapshot,
    };
    u.payload = Some(match payload {
        Payload::Heartbeat => pb::update::Payload::Heartbeat(pb::Heartbeat {}),
        Payload::Diff(d) => pb::update::Payload::Diff(d.to_pb()),
        Payload::Snapshot(s) => {
            let snap = s.to_pb();
            let len = snap.encoded_len();
            if len <= chunk_size {
                pb::update::Payload::Snapshot(snap)
            } else {
                let (chunked, data) = chunk::split(Bytes::from(snap.encode_to_vec()), chunk_size);
                chunks = data;
                pb::update::Payload::Chunked(chunked)
            }
        }
    });
    let body = Bytes::from(u.encode_to_vec());
    let signatures = keys.iter().map(|k| k.sign(UPDATE_CONTEXT, &body)).collect();
    Signed { header: header.clone(), kind, update: pb::SignedUpdate { body, signatures }, chunks }
}

/// One version of a resource as the origin holds it.
#[derive(Debug, Clone)]
pub struct Version {
    /// Seq.
    pub seq: u64,
    /// The content.
    pub state: MapState,
    /// Versions of other resources it was computed against.
    pub dependencies: Vec<Dependency>,
}

/// Makes signed updates for the origin: snapshot, diff and heartbeat edges,
/// each signed by every current update key (several during a rotation).
#[derive(Debug)]
pub struct Signer {
    /// Never empty. Swapped whole when the operator changes the key list.
    keys: std::sync::RwLock<std::sync::Arc<Vec<OriginKey>>>,
    origin_id: String,
    /// How long an update keeps a resource fresh, ms.
    pub ttl_ms: i64,
    /// Snapshots larger than this are chunked.
    pub chunk_size: usize,
}

impl Signer {
    /// A signer with one `key`, which is also the origin id; updates stay
    /// fresh for `ttl_ms`.
    pub fn new(key: OriginKey, ttl_ms: i64) -> Self {
        let origin_id = key.id().to_string();
        Signer {
            keys: std::sync::RwLock::new(std::sync::Arc::new(vec![key])),
            origin_id,
            ttl_ms,
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }

    /// A signer for origin `origin_id` signing with every key of `keys`;
    /// `None` when `keys` is empty.
    pub fn with_keys(origin_id: String, keys: Vec<OriginKey>, ttl_ms: i64) -> Option<Self> {
        let first = keys.first()?.clone();
        let s = Signer::new(first, ttl_ms);
        s.set_keys(keys);
        Some(Signer { origin_id, ..s })
    }

    /// Signs with `keys` from now on; an empty list is ignored (an origin
    /// must always be able to sign).
    pub fn set_keys(&self, keys: Vec<OriginKey>) {
        if !keys.is_empty() {
            *self.keys.write().unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::new(keys);
        }
    }

    /// The keys signing now.
    pub fn keys(&self) -> std::sync::Arc<Vec<OriginKey>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The first signing key.
    pub fn key(&self) -> OriginKey {
        // Never empty: built with a key, and `set_keys` ignores an empty list.
        self.keys().first().cloned().expect("a signer always has a key")
    }

    /// The origin id every update carries.
    pub fn origin_id(&self) -> &str {
        &self.origin_id
    }

    fn header(&self, id: &ResourceId, v: &Version, base: Option<&Version>, now_ms: i64) -> Header {
        Header {
            origin_id: self.origin_id.clone(),
            resource_id: id.clone(),
            kind: v.state.kind(),
            cost_type: v.state.cost_type().cloned(),
            seq: v.seq,
            base_seq: base.map_or(0, |b| b.seq),
            base_tag: base.map_or(Tag::ZERO, |b| b.state.tag()),
            tag: v.state.tag(),
            issued_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(self.ttl_ms),
            dependencies: v.dependencies.clone(),
        }
    }

    /// The edge `0 → v.seq`.
    pub fn snapshot(&self, id: &ResourceId, v: &Version, now_ms: i64) -> Signed {
        sign(&self.keys(), &self.header(id, v, None, now_ms), Payload::Snapshot(&v.state), self.chunk_size)
    }

    /// The edge `from.seq → to.seq` carrying `diff` (which must turn `from` into `to`).
    pub fn diff(&self, id: &ResourceId, from: &Version, to: &Version, diff: &MapDiff, now_ms: i64) -> Signed {
        sign(&self.keys(), &self.header(id, to, Some(from), now_ms), Payload::Diff(diff), self.chunk_size)
    }

    /// "Still at `v.seq`, fresh for another ttl."
    pub fn heartbeat(&self, id: &ResourceId, v: &Version, now_ms: i64) -> Signed {
        let mut h = self.header(id, v, None, now_ms);
        h.base_seq = v.seq;
        h.base_tag = v.state.tag();
        sign(&self.keys(), &h, Payload::Heartbeat, self.chunk_size)
    }
}
