//! Canonical hashing and content tags (PROTOCOL.md §3): the digest of a
//! resource's state (DESIGN §3), computed incrementally.
//!
//! A map's tag is BLAKE3 over a domain string, the map's header, and the ordered
//! list of per-row hashes (a network map row is one PID's prefixes; a cost map row
//! is one source PID's costs). Changing k rows therefore costs k row hashes plus
//! one pass over n·32 bytes, never a full rehash. Every node computes the same tag
//! for the same content, so a tag names a version across the whole tree.
//!
//! Here: the [`Tag`] and its wire form (§3.6), and the length-prefixed
//! encoding every preimage uses ([`Canon`]: §3.1–§3.3). The preimages of each
//! map are in [`network_map`] (§3.4) and [`cost_map`] (§3.5); the signature
//! contexts of §3.2 are in [`crate::keys`], the chunk hashes of §7 in
//! [`crate::wire::chunk`].

use std::fmt;

pub(crate) mod cost_map;
pub(crate) mod network_map;

/// A 32-byte content tag, shown as 64 lowercase hex characters (RFC 7285's
/// maximum vtag length).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Tag(pub [u8; 32]);

/// A tag that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tag must be 32 bytes (64 hex characters), got {0}")]
pub struct TagError(pub String);

impl Tag {
    /// The all-zero tag, used for "nothing held".
    pub const ZERO: Tag = Tag([0; 32]);

    /// Parses a 32-byte binary tag from the wire.
    pub fn from_slice(b: &[u8]) -> Result<Self, TagError> {
        <[u8; 32]>::try_from(b).map(Tag).map_err(|_| TagError(format!("{} bytes", b.len())))
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Result<Self, TagError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| TagError(format!("{s:?}")))?;
        Ok(Tag(out))
    }

    /// 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex characters, for logs and CLI lines.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({})", self.short())
    }
}

/// A hasher for one canonical structure: writes are length-prefixed so that
/// field boundaries can never be shifted to forge a collision.
pub(crate) struct Canon(blake3::Hasher);

impl Canon {
    pub(crate) fn new(domain: &str) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(domain.as_bytes());
        h.update(&[0]);
        Canon(h)
    }
    pub(crate) fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64);
        self.0.update(s.as_bytes());
        self
    }
    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.0.update(&v.to_le_bytes());
        self
    }
    pub(crate) fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.0.update(b);
        self
    }
    pub(crate) fn finish(&self) -> Tag {
        Tag(*self.0.finalize().as_bytes())
    }
}
