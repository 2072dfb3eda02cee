//! Conformance vectors: machine-readable test vectors of `docs/PROTOCOL.md`,
//! built deterministically by this library's own API, so that a second
//! implementation (the Python client, or any other) can be checked against
//! exactly what the reference does (PROTOCOL.md Appendix C).
//!
//! Every vector is built from fixed inputs: keys from fixed seeds (Ed25519 is
//! deterministic, so signatures are too), fixed timestamps around
//! [`T0_MS`] (2023-11-14T22:13:20Z), fixed maps. While building, each vector
//! is run through the library ([`crate::Verifier`], [`crate::TrustedKeys`],
//! [`crate::verify::directory::open_directory`]) and the build fails unless the library
//! does what the vector says (a chain step commits, a tampered update is
//! rejected by the named check, a hand-written preimage hashes to the
//! library's tag). The committed files under `proto/vectors/` are checked
//! byte-for-byte against these functions, and re-verified from the parsed
//! JSON, by `proto/tests/vectors.rs`.
//!
//! # Regenerating
//!
//! ```text
//! cargo run -p altocast-proto --example vectors -- --out proto/vectors
//! ```
//!
//! then review the diff: a changed vector is a changed protocol.
//!
//! # Files and JSON format
//!
//! One file per [`Group`]: `keys.json`, `tags.json`, `chains.json`,
//! `tamper.json`, `directory.json`. Each is pretty-printed JSON with object
//! keys in ascending byte order (as Python's `json.dumps(sort_keys=True)`),
//! two-space indentation, ASCII only (other characters, which appear only in
//! descriptions, as `\uXXXX` escapes) and a trailing newline. Conventions:
//!
//! - every file is an object with `format` (`altocast-conformance-vectors/1`),
//!   `group`, `protocol` (`docs/PROTOCOL.md`), `regenerate` (the command
//!   above), `description`, and one or more arrays of vectors;
//! - every vector has a `name` (unique in its file, kebab-case) and a
//!   `description`: one sentence naming the PROTOCOL.md section it exercises;
//! - bytes are **lowercase hex** strings (no prefix, `""` for no bytes);
//!   base64 appears only inside PEM text;
//! - integers (seq, times in Unix ms, indices) are JSON numbers, all below
//!   2^53; costs are JSON numbers (binary64; `-0.0` is written `-0.0`);
//!   protobuf enums are their numbers (`kind` 1 network map, 2 cost map;
//!   `mode` 1 numerical, 2 ordinal) except where a field says it is the
//!   RFC 7285 spelling (`"numerical"`, `"ordinal"`);
//! - a signed update is `{"body": hex, "signatures": [{"key_id", "sig"}],
//!   "body_hash": hex(H(body)), "decoded": {...}}`; `decoded` is informational
//!   (the `Update` fields as the reference decodes them, tags as hex, `payload`
//!   one of `snapshot`, `diff`, `heartbeat`, `chunked` or `null`). A body too
//!   large to embed is given instead as `"body_fill": {"byte": hex, "len": n}`
//!   (`n` copies of one byte); only size vectors use it. Chunks are
//!   `[{"index", "data"}]`, in the order they are fed to the verifier;
//! - a **state** (the held content after a step) is
//!   `{"kind": "network-map", "pids": [{"pid", "ipv4": [...], "ipv6": [...]}]}`
//!   (PIDs ascending, prefixes in canonical order and canonical text, §2.2) or
//!   `{"kind": "cost-map", "cost_type": {"metric", "mode": "numerical"},
//!   "dependency": null | {"resource_id", "tag"}, "pids": [...], "costs": [[...]]}`
//!   where `costs[i][j]` is the cost from `pids[i]` to `pids[j]` and `null` is
//!   no path (the dense matrix of §2.6). Compare parsed values, not text; the
//!   tag already binds the whole state.
//!
//! What each group holds is documented on its builder: [`Group::build`].

use serde_json::{Map, Value, json};

use crate::{Held, MapState, ModelError, NameError, Tag, VerifyError, keys::SignatureError, pb, verify::Waiting};

mod chains;
mod directory;
mod keys;
mod tags;
mod tamper;

/// The `format` member of every file.
pub const FORMAT: &str = "altocast-conformance-vectors/1";
/// The command that rewrites the committed files.
pub const REGENERATE: &str = "cargo run -p altocast-proto --example vectors -- --out proto/vectors";
/// The time every vector is built around: 2023-11-14T22:13:20Z, as in PROTOCOL.md Appendix A.
pub const T0_MS: i64 = 1_700_000_000_000;
/// The TTL of every update signed for the vectors (the reference default).
pub const TTL_MS: i64 = 60_000;
/// Seed of the origin key (PROTOCOL.md Appendix A.1).
pub const ORIGIN_SEED: [u8; 32] = [7; 32];
/// Seed of a second trusted key (key rotation vectors).
pub const SECOND_SEED: [u8; 32] = [8; 32];
/// Seed of a key no vector's verifier trusts.
pub const UNTRUSTED_SEED: [u8; 32] = [9; 32];

/// A group of vectors, one file each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// Keys and the signed-message construction (§4, §5).
    Keys,
    /// Network-map and cost-map tags with their canonical preimages (§3).
    Tags,
    /// Valid update chains and the verifier's outcome after each step (§6–§8).
    Chains,
    /// Tampered updates and the check that rejects each (§5, §7, §8).
    Tamper,
    /// The signed directory and the trust lifecycle of its key chain (§9).
    Directory,
}

impl Group {
    /// Every group, in file order.
    pub const ALL: [Group; 5] = [Group::Keys, Group::Tags, Group::Chains, Group::Tamper, Group::Directory];

    /// The file name under `proto/vectors/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Group::Keys => "keys.json",
            Group::Tags => "tags.json",
            Group::Chains => "chains.json",
            Group::Tamper => "tamper.json",
            Group::Directory => "directory.json",
        }
    }

    /// Builds the group's vectors.
    ///
    /// - **keys**: `keys` (seed, raw public key, `public_key_hash` = H(raw),
    ///   key id, PKCS#8 v1 private key as DER hex and PEM, SPKI public key as
    ///   DER hex and PEM), `signed_messages` (context bytes and text, H(context),
    ///   body, H(body), `message` M = H(context) ‖ H(body), the signature,
    ///   `verifies_under` the contexts it verifies under) and
    ///   `invalid_signatures` (signatures a strict verifier rejects, §5.2).
    /// - **tags**: `network_maps` and `cost_maps`: the map `input` as received
    ///   on the wire (the `NetworkMapState`, or the `CostMapState` plus the cost
    ///   type), its `canonical` form, each row's `preimage` and `hash`, (cost
    ///   maps) `names_preimage` and `names_hash`, the map `preimage` and `tag`.
    /// - **chains**: `chains`, each with `trusted_keys` (`[{key_id,
    ///   public_key}]`), the requested `resources`, the verifier clock `now_ms`
    ///   (the same for every step of the chain) and `steps`. A step is a signed
    ///   `update`, its `chunks`, and what the verifier reports and holds after
    ///   it (`expect`): `result` (`committed` or `pending`), `kind`, `seq`,
    ///   `tag`, `waiting` (`null`, `{"reason": "expired", "expires_at_ms"}` or
    ///   `{"reason": "dependency", "resource_id", "seq", "tag"}`), and for the
    ///   update's resource `held` (`null` or `{seq, tag, issued_at_ms,
    ///   expires_at_ms, dependencies, state}`) and `pending` (the same without
    ///   `state`). Each chain starts from a fresh verifier.
    /// - **tamper**: `vectors`, each a `base` (`{"chain", "steps"}`: replay the
    ///   first `steps` steps of that chain, with its keys, resources and clock,
    ///   each as the chain expects), a `mutation` in words, the mutated
    ///   `update` and `chunks`, the clock `now_ms`, and `expect`: `result`
    ///   `rejected`, the `check` class of PROTOCOL.md §8.4 (the crate's
    ///   [`crate::Check::as_str`]), the crate's `error` name
    ///   ([`error_name`]) and the PROTOCOL.md `section`. A rejection leaves
    ///   `held` and `pending` exactly as the base left them.
    /// - **directory**: `vectors`, each trusted keys, a `signed` directory
    ///   (`body` or `body_fill`, `signatures`, `body_hash`) and `expect`:
    ///   `accepted` with the decoded `directory`, or `rejected` as in tamper.
    ///   A decoded directory has every `Directory` field; its `key_chain` is
    ///   `null` or `{"root_history": [...], "current"}`, each a signed key
    ///   list (`body`, `signatures`, `body_hash`, `decoded` `KeyList`).
    ///   And `lifecycles`: each a `trusted_root` (`{key_id, public_key}`),
    ///   the followed `resources` and `steps` for one fresh verifier trusting
    ///   only that root. A step has an `action` (`accept_directory` with a
    ///   signed `directory` at `now_ms`; `restore_directory` with a signed
    ///   `directory`, `now_ms` `null`; `verify_update` with a signed `update`
    ///   and its `chunks` at `now_ms`), a `description`, and `expect`:
    ///   `result` `accepted` (an update: committed) or `rejected` with
    ///   `check`, `error` and `section`, and the `state` after the step
    ///   (`root` reached, `key_list_version`, `origin_id`, `directory`
    ///   position `{seq, issued_at_ms, expires_at_ms}`, `update_keys` with
    ///   their windows, and `held` `[{resource_id, seq, tag, issued_at_ms,
    ///   expires_at_ms}]`); a rejection leaves it as it was.
    pub fn build(self) -> Result<Value, Error> {
        match self {
            Group::Keys => keys::build(),
            Group::Tags => tags::build(),
            Group::Chains => chains::build(),
            Group::Tamper => tamper::build(),
            Group::Directory => directory::build(),
        }
    }

    /// The group's file content, as [`render`] writes it.
    pub fn render(self) -> Result<String, Error> {
        render(&self.build()?)
    }
}

/// Why the vectors could not be built. Every variant is a bug in this module
/// or in the library, never bad input: the inputs are fixed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A fixture map is invalid.
    #[error("fixture map: {0}")]
    Model(#[from] ModelError),
    /// A fixture name is invalid.
    #[error("fixture name: {0}")]
    Name(#[from] NameError),
    /// The library does not do what a vector says it does.
    #[error("vector {vector}: {reason}")]
    Disagrees {
        /// The vector.
        vector: String,
        /// What differs.
        reason: String,
    },
}

pub(crate) fn disagrees(vector: &str, reason: impl Into<String>) -> Error {
    Error::Disagrees { vector: vector.into(), reason: reason.into() }
}

/// Pretty JSON with object keys sorted and a trailing newline: the exact bytes
/// of a vector file.
pub fn render(v: &Value) -> Result<String, Error> {
    let mut v = v.clone();
    // Without serde_json's `preserve_order` maps are already sorted; with it,
    // this keeps the files identical whichever features a build unifies.
    v.sort_all_objects();
    let text = serde_json::to_string_pretty(&v).map_err(|e| disagrees("render", e.to_string()))?;
    // ASCII only, as Python's json.dumps writes by default: non-ASCII text
    // (only ever inside strings) becomes \uXXXX, so no reader needs to
    // guess an encoding.
    let mut out = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out.push('\n');
    Ok(out)
}

/// The crate's name for a verification error: the [`VerifyError`] variant,
/// with the [`SignatureError`] or [`ModelError`] variant inside it, e.g.
/// `Signature(Invalid)`, `Payload(DuplicatePrefix)`, `Rollback`.
pub fn error_name(e: &VerifyError) -> String {
    match e {
        VerifyError::TooLarge { .. } => "TooLarge".into(),
        VerifyError::Signature(s) => format!(
            "Signature({})",
            match s {
                SignatureError::Missing => "Missing",
                SignatureError::TooMany(_) => "TooMany",
                SignatureError::UnknownKey(_) => "UnknownKey",
                SignatureError::Invalid(_) => "Invalid",
                SignatureError::OutsideWindow { .. } => "OutsideWindow",
            }
        ),
        VerifyError::Chunk { .. } => "Chunk".into(),
        VerifyError::Malformed(_) => "Malformed".into(),
        VerifyError::UnexpectedResource(_) => "UnexpectedResource".into(),
        VerifyError::Rollback { .. } => "Rollback".into(),
        VerifyError::Gap { .. } => "Gap".into(),
        VerifyError::BaseSeq { .. } => "BaseSeq".into(),
        VerifyError::BaseTag { .. } => "BaseTag".into(),
        VerifyError::Payload(m) => format!("Payload({})", model_error_name(m)),
        VerifyError::TagMismatch { .. } => "TagMismatch".into(),
        VerifyError::FromTheFuture { .. } => "FromTheFuture".into(),
        VerifyError::Dependency { .. } => "Dependency".into(),
        VerifyError::Trust(t) => format!(
            "Trust({})",
            match t {
                crate::verify::trust::TrustError::NoKeyChain { .. } => "NoKeyChain",
                crate::verify::trust::TrustError::Malformed(_) => "Malformed",
                crate::verify::trust::TrustError::RootSignature { .. } => "RootSignature",
                crate::verify::trust::TrustError::UnknownRoot { .. } => "UnknownRoot",
                crate::verify::trust::TrustError::Rollback { .. } => "Rollback",
                crate::verify::trust::TrustError::Expired { .. } => "Expired",
            }
        ),
        VerifyError::Origin { .. } => "Origin".into(),
        VerifyError::DirectoryExpired { .. } => "DirectoryExpired".into(),
    }
}

fn model_error_name(e: &ModelError) -> &'static str {
    match e {
        ModelError::Json(_) => "Json",
        ModelError::DuplicateKey { .. } => "DuplicateKey",
        ModelError::MissingField(_) => "MissingField",
        ModelError::InvalidPid { .. } => "InvalidPid",
        ModelError::InvalidResourceId { .. } => "InvalidResourceId",
        ModelError::InvalidPrefix { .. } => "InvalidPrefix",
        ModelError::DuplicatePrefix { .. } => "DuplicatePrefix",
        ModelError::NonFiniteCost { .. } => "NonFiniteCost",
        ModelError::BadOrdinalCost { .. } => "BadOrdinalCost",
        ModelError::BadCostMode(_) => "BadCostMode",
        ModelError::BadCostMetric(_) => "BadCostMetric",
        ModelError::UnknownPid { .. } => "UnknownPid",
        ModelError::DependentVtagMismatch { .. } => "DependentVtagMismatch",
        ModelError::BadTag { .. } => "BadTag",
        ModelError::TooManyPids { .. } => "TooManyPids",
        ModelError::IndexOutOfRange { .. } => "IndexOutOfRange",
        ModelError::NotAscending { .. } => "NotAscending",
        ModelError::LengthMismatch { .. } => "LengthMismatch",
        ModelError::DiffMismatch(_) => "DiffMismatch",
        ModelError::TagMismatch { .. } => "TagMismatch",
    }
}

/// A state in the vectors' JSON form (see the module documentation).
pub fn state_json(s: &MapState) -> Value {
    match s {
        MapState::Network(m) => json!({
            "kind": "network-map",
            "pids": m.iter().map(|(p, e)| json!({
                "pid": p.as_str(),
                "ipv4": e.ipv4.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                "ipv6": e.ipv6.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }),
        MapState::Cost(m) => {
            let n = m.pids().len() as u32;
            let costs: Vec<Vec<Value>> =
                (0..n).map(|i| (0..n).map(|j| m.cost_at(i, j).map_or(Value::Null, Value::from)).collect()).collect();
            json!({
                "kind": "cost-map",
                "cost_type": {"metric": m.cost_type().metric, "mode": m.cost_type().mode.as_str()},
                "dependency": m.depends_on().map(|d| json!({"resource_id": d.resource_id.as_str(), "tag": d.tag.to_hex()})),
                "pids": m.pids().iter().map(|p| p.as_str()).collect::<Vec<_>>(),
                "costs": costs,
            })
        }
    }
}

/// A held or pending version: seq, tag, times, dependencies, and the state
/// when `with_state`.
pub(crate) fn held_json(h: &Held, with_state: bool) -> Value {
    let mut v = json!({
        "seq": h.seq,
        "tag": h.tag.to_hex(),
        "issued_at_ms": h.issued_at_ms,
        "expires_at_ms": h.expires_at_ms,
        "dependencies": h.dependencies.iter().map(|d| json!({
            "resource_id": d.resource_id.as_str(), "seq": d.seq, "tag": d.tag.to_hex(),
        })).collect::<Vec<_>>(),
    });
    if with_state && let Value::Object(m) = &mut v {
        m.insert("state".into(), state_json(&h.state));
    }
    v
}

pub(crate) fn waiting_json(w: Option<&Waiting>) -> Value {
    match w {
        None => Value::Null,
        Some(Waiting::Expired { expires_at_ms }) => json!({"reason": "expired", "expires_at_ms": expires_at_ms}),
        Some(Waiting::Dependency { resource, seq, tag }) => {
            json!({"reason": "dependency", "resource_id": resource.as_str(), "seq": seq, "tag": tag.to_hex()})
        }
    }
}

/// A body given in full, or (too large to embed) as `len` copies of `byte`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fill {
    pub byte: u8,
    pub len: usize,
}

impl Fill {
    pub fn bytes(self) -> bytes::Bytes {
        bytes::Bytes::from(vec![self.byte; self.len])
    }
}

fn signatures_json(sigs: &[pb::Signature]) -> Value {
    sigs.iter().map(|s| json!({"key_id": s.key_id, "sig": hex::encode(&s.sig)})).collect()
}

/// A signed message (update or directory) in the vectors' JSON form.
pub(crate) fn signed_json(body: &[u8], sigs: &[pb::Signature], fill: Option<Fill>, decoded: Value) -> Value {
    let mut m = Map::new();
    match fill {
        Some(f) => {
            m.insert("body_fill".into(), json!({"byte": hex::encode([f.byte]), "len": f.len}));
        }
        None => {
            m.insert("body".into(), Value::String(hex::encode(body)));
            m.insert("decoded".into(), decoded);
        }
    }
    m.insert("body_hash".into(), Value::String(hex::encode(blake3::hash(body).as_bytes())));
    m.insert("signatures".into(), signatures_json(sigs));
    Value::Object(m)
}

/// A signed update in the vectors' JSON form.
pub(crate) fn update_json(u: &pb::SignedUpdate, fill: Option<Fill>) -> Value {
    use prost::Message as _;
    let decoded = pb::Update::decode(u.body.clone()).map_or(Value::Null, |d| decoded_json(&d));
    signed_json(&u.body, &u.signatures, fill, decoded)
}

fn decoded_json(u: &pb::Update) -> Value {
    let (payload, chunked) = match &u.payload {
        None => (Value::Null, Value::Null),
        Some(pb::update::Payload::Snapshot(_)) => ("snapshot".into(), Value::Null),
        Some(pb::update::Payload::Diff(_)) => ("diff".into(), Value::Null),
        Some(pb::update::Payload::Heartbeat(_)) => ("heartbeat".into(), Value::Null),
        Some(pb::update::Payload::Chunked(c)) => (
            "chunked".into(),
            json!({
                "total_len": c.total_len,
                "chunk_hashes": c.chunk_hashes.iter().map(hex::encode).collect::<Vec<_>>(),
            }),
        ),
    };
    json!({
        "origin_id": u.origin_id,
        "resource_id": u.resource_id,
        "kind": u.kind,
        "cost_type": u.cost_type.as_ref().map(|c| json!({"metric": c.metric, "mode": c.mode})),
        "seq": u.seq,
        "base_seq": u.base_seq,
        "base_tag": hex::encode(&u.base_tag),
        "tag": hex::encode(&u.tag),
        "issued_at_ms": u.issued_at_ms,
        "expires_at_ms": u.expires_at_ms,
        "dependencies": u.dependencies.iter().map(|d| json!({
            "resource_id": d.resource_id, "seq": d.seq, "tag": hex::encode(&d.tag),
        })).collect::<Vec<_>>(),
        "payload": payload,
        "chunked": chunked,
    })
}

pub(crate) fn chunks_json(chunks: &[pb::SnapshotChunk]) -> Value {
    chunks.iter().map(|c| json!({"index": c.index, "data": hex::encode(&c.data)})).collect()
}

/// The top-level object of one file.
pub(crate) fn file(group: Group, description: &str, arrays: Vec<(&str, Vec<Value>)>) -> Value {
    let mut m = Map::new();
    m.insert("format".into(), FORMAT.into());
    m.insert(
        "group".into(),
        match group {
            Group::Keys => "keys",
            Group::Tags => "tags",
            Group::Chains => "chains",
            Group::Tamper => "tamper",
            Group::Directory => "directory",
        }
        .into(),
    );
    m.insert("protocol".into(), "docs/PROTOCOL.md".into());
    m.insert("regenerate".into(), REGENERATE.into());
    m.insert("description".into(), description.into());
    for (k, v) in arrays {
        m.insert(k.into(), Value::Array(v));
    }
    Value::Object(m)
}

/// A canonical preimage (§3.3) written byte by byte: a second transcription of
/// the layouts of PROTOCOL.md §3, checked against the library's tags.
#[derive(Debug, Clone)]
pub(crate) struct Preimage(pub Vec<u8>);

impl Preimage {
    /// Starts with the domain string and its NUL.
    pub fn new(domain: &str) -> Self {
        let mut v = domain.as_bytes().to_vec();
        v.push(0);
        Preimage(v)
    }
    pub fn u64(&mut self, n: u64) -> &mut Self {
        self.0.extend_from_slice(&n.to_le_bytes());
        self
    }
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    pub fn hash(&self) -> Tag {
        Tag(*blake3::hash(&self.0).as_bytes())
    }
}
