//! The trust lifecycle (PROTOCOL.md §9.1–§9.3): a **root key**, which an operator can
//! keep offline, signs a **key list** naming the update keys (with validity
//! windows), the keys revoked for good, and the origin's id. Update keys sign
//! the updates and the directory; the directory carries the key lists as a
//! [`pb::KeyChain`]: every list that changed the root (oldest first) and the
//! current one.
//!
//! A verifier trusts a root (or, without the lifecycle, fixed update keys).
//! [`walk`] follows the chain from the root it trusts now: a list that
//! changes the root must be signed by the old root and the new one (TUF's
//! chained root rotation), so a client offline through several rotations
//! still walks forward; the current list must be signed by the root reached,
//! be no older than the version already seen, and not be expired.
//!
//! What this module is not: it holds no state. The [`crate::Verifier`] keeps
//! the root reached, the key list version and the directory position, and
//! applies the keys to every update.

use std::collections::HashSet;

use bytes::Bytes;
use prost::Message as _;

use crate::{KeyId, OriginKey, PublicKey, TrustedKeys, pb};

/// Context of key-list signatures.
pub const KEY_LIST_CONTEXT: &[u8] = b"altocast/v1/keylist\0";
/// Largest encoded key list looked at.
pub const MAX_KEY_LIST_BYTES: usize = 64 << 10;
/// Most update keys (and revoked ids) in one key list.
pub const MAX_KEYS: usize = 64;
/// Most root rotations a key chain carries.
pub const MAX_ROOT_HISTORY: usize = 64;

/// Why a key chain was not trusted. Nothing a verifier trusts changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    /// The directory has no key chain, but the verifier trusts a root.
    #[error("the directory carries no key chain; root {root} is trusted and signs only key lists")]
    NoKeyChain {
        /// The trusted root's key id.
        root: String,
    },
    /// A key list does not decode or breaks a structural rule.
    #[error("key list: {0}")]
    Malformed(String),
    /// A key list is not signed (validly) by the root that must sign it.
    #[error("key list version {version} is not signed by root {root}: {reason}")]
    RootSignature {
        /// The list's version.
        version: u64,
        /// The root that must sign it.
        root: String,
        /// What the signature check found.
        reason: String,
    },
    /// The chain does not lead from the trusted root to the current list's root.
    #[error("the key chain does not lead from the trusted root {trusted} to root {presented}")]
    UnknownRoot {
        /// The root trusted now.
        trusted: String,
        /// The current list's root.
        presented: String,
    },
    /// The current list is older than one already seen.
    #[error("key list version {got} is older than version {held} already seen (a rollback)")]
    Rollback {
        /// The version seen before.
        held: u64,
        /// The version received.
        got: u64,
    },
    /// The current list is past its expiry.
    #[error("key list version {version} expired at {expires_at_ms} ms (now {now_ms} ms); re-sign it with the root key")]
    Expired {
        /// The list's version.
        version: u64,
        /// Its expiry.
        expires_at_ms: i64,
        /// Now.
        now_ms: i64,
    },
}

/// An update key and the window in which it may sign (0 = unbounded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateKey {
    /// The key.
    pub key: PublicKey,
    /// Earliest `issued_at_ms` it may sign.
    pub not_before_ms: i64,
    /// Latest `issued_at_ms` it may sign.
    pub not_after_ms: i64,
}

/// A decoded key list (not yet trusted by itself: see [`walk`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyList {
    /// The origin's stable id.
    pub origin_id: String,
    /// +1 per change.
    pub version: u64,
    /// Unix ms.
    pub issued_at_ms: i64,
    /// Unix ms.
    pub expires_at_ms: i64,
    /// The root that signs this list and the next.
    pub root: PublicKey,
    /// The update keys.
    pub keys: Vec<UpdateKey>,
    /// Key ids never to be trusted again.
    pub revoked: Vec<String>,
}

fn public(at: &str, k: Option<&pb::PublicKey>) -> Result<PublicKey, TrustError> {
    let k = k.ok_or_else(|| TrustError::Malformed(format!("{at}: missing")))?;
    let key = PublicKey::from_raw(&k.ed25519).map_err(|e| TrustError::Malformed(format!("{at}: {e}")))?;
    if key.id().as_str() != k.key_id {
        let id: String = k.key_id.chars().take(32).collect();
        return Err(TrustError::Malformed(format!("{at}: key id {id:?} is not the key's ({})", key.id())));
    }
    Ok(key)
}

fn to_pb_key(k: &PublicKey) -> pb::PublicKey {
    pb::PublicKey { key_id: k.id().to_string(), ed25519: Bytes::copy_from_slice(&k.raw()) }
}

impl KeyList {
    /// Decodes a signed list's body (its signatures are checked by [`walk`]).
    pub fn decode(signed: &pb::SignedKeyList) -> Result<KeyList, TrustError> {
        if signed.body.len() > MAX_KEY_LIST_BYTES {
            return Err(TrustError::Malformed(format!(
                "{} bytes; the limit is {MAX_KEY_LIST_BYTES}",
                signed.body.len()
            )));
        }
        let l = pb::KeyList::decode(signed.body.clone()).map_err(|e| TrustError::Malformed(e.to_string()))?;
        if l.keys.len() > MAX_KEYS || l.revoked.len() > MAX_KEYS {
            return Err(TrustError::Malformed(format!("more than {MAX_KEYS} keys or revoked ids")));
        }
        if l.version == 0 || l.origin_id.is_empty() {
            return Err(TrustError::Malformed("version 0 or no origin id".into()));
        }
        let keys = l
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                Ok(UpdateKey {
                    key: public(&format!("keys[{i}]"), k.key.as_ref())?,
                    not_before_ms: k.not_before_ms,
                    not_after_ms: k.not_after_ms,
                })
            })
            .collect::<Result<Vec<_>, TrustError>>()?;
        Ok(KeyList {
            origin_id: l.origin_id,
            version: l.version,
            issued_at_ms: l.issued_at_ms,
            expires_at_ms: l.expires_at_ms,
            root: public("root", l.root.as_ref())?,
            keys,
            revoked: l.revoked,
        })
    }

    /// The list as its protobuf message.
    pub fn to_pb(&self) -> pb::KeyList {
        pb::KeyList {
            origin_id: self.origin_id.clone(),
            version: self.version,
            issued_at_ms: self.issued_at_ms,
            expires_at_ms: self.expires_at_ms,
            root: Some(to_pb_key(&self.root)),
            keys: self
                .keys
                .iter()
                .map(|k| pb::UpdateKey {
                    key: Some(to_pb_key(&k.key)),
                    not_before_ms: k.not_before_ms,
                    not_after_ms: k.not_after_ms,
                })
                .collect(),
            revoked: self.revoked.clone(),
        }
    }

    /// Encodes and signs the list with `roots` (its own root; for a root
    /// change, the previous root too).
    pub fn sign(&self, roots: &[&OriginKey]) -> pb::SignedKeyList {
        let body = Bytes::from(self.to_pb().encode_to_vec());
        let signatures = roots.iter().map(|r| r.sign(KEY_LIST_CONTEXT, &body)).collect();
        pb::SignedKeyList { body, signatures }
    }

    /// Whether `id` is revoked.
    pub fn is_revoked(&self, id: &KeyId) -> bool {
        self.revoked.iter().any(|r| r == id.as_str())
    }

    /// The keys a verifier accepts under this list: every listed key not
    /// revoked, each with its window, anchored at this list's root.
    pub fn trusted_keys(&self) -> TrustedKeys {
        let revoked: HashSet<&str> = self.revoked.iter().map(String::as_str).collect();
        let keys = self
            .keys
            .iter()
            .filter(|k| !revoked.contains(k.key.id().as_str()))
            .map(|k| (k.key.clone(), (k.not_before_ms, k.not_after_ms)));
        TrustedKeys::with_windows(self.root.clone(), keys)
    }
}

/// Whether `signed` carries a valid signature by `root`.
fn signed_by(signed: &pb::SignedKeyList, version: u64, root: &PublicKey) -> Result<(), TrustError> {
    TrustedKeys::new([root.clone()])
        .verify(KEY_LIST_CONTEXT, &signed.body, &signed.signatures)
        .map(drop)
        .map_err(|e| TrustError::RootSignature { version, root: root.id().to_string(), reason: e.to_string() })
}

/// Follows `chain` from `root` (the root trusted now) and returns the current
/// key list: root changes are taken in order when signed by the root reached
/// so far and by the new root; the current list must be signed by the root
/// reached, be at least `held_version`, and not expire before `now_ms` minus
/// `skew_ms`.
pub fn walk(
    root: &PublicKey,
    held_version: u64,
    chain: &pb::KeyChain,
    now_ms: i64,
    skew_ms: i64,
) -> Result<KeyList, TrustError> {
    if chain.root_history.len() > MAX_ROOT_HISTORY {
        return Err(TrustError::Malformed(format!("more than {MAX_ROOT_HISTORY} root changes")));
    }
    let mut root = root.clone();
    let mut version = 0;
    for signed in &chain.root_history {
        let l = KeyList::decode(signed)?;
        // Changes before the root trusted now are not signed by it: skipped.
        if l.root == root || l.version <= version || signed_by(signed, l.version, &root).is_err() {
            continue;
        }
        signed_by(signed, l.version, &l.root)?;
        root = l.root;
        version = l.version;
    }
    let current = chain.current.as_ref().ok_or_else(|| TrustError::Malformed("no current key list".into()))?;
    let l = KeyList::decode(current)?;
    if l.root != root {
        return Err(TrustError::UnknownRoot { trusted: root.id().to_string(), presented: l.root.id().to_string() });
    }
    signed_by(current, l.version, &root)?;
    if l.version < held_version {
        return Err(TrustError::Rollback { held: held_version, got: l.version });
    }
    if l.expires_at_ms != 0 && l.expires_at_ms.saturating_add(skew_ms) < now_ms {
        return Err(TrustError::Expired { version: l.version, expires_at_ms: l.expires_at_ms, now_ms });
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(version: u64, root: &OriginKey, keys: &[&OriginKey], revoked: &[&OriginKey]) -> KeyList {
        KeyList {
            origin_id: "origin".into(),
            version,
            issued_at_ms: 1_000,
            expires_at_ms: 1_000_000,
            root: root.public(),
            keys: keys.iter().map(|k| UpdateKey { key: k.public(), not_before_ms: 0, not_after_ms: 0 }).collect(),
            revoked: revoked.iter().map(|k| k.id().to_string()).collect(),
        }
    }

    #[test]
    fn a_client_walks_root_rotations_forward_and_refuses_what_does_not_chain() {
        let (r1, r2, r3) =
            (OriginKey::from_seed([1; 32]), OriginKey::from_seed([2; 32]), OriginKey::from_seed([3; 32]));
        let (k1, k2) = (OriginKey::from_seed([11; 32]), OriginKey::from_seed([12; 32]));
        // r1 → r2 (version 2) → r3 (version 4); current version 5 under r3.
        let to_r2 = list(2, &r2, &[&k1], &[]).sign(&[&r1, &r2]);
        let to_r3 = list(4, &r3, &[&k1, &k2], &[]).sign(&[&r2, &r3]);
        let current = list(5, &r3, &[&k2], &[&k1]).sign(&[&r3]);
        let chain = pb::KeyChain { root_history: vec![to_r2.clone(), to_r3.clone()], current: Some(current.clone()) };
        // Offline through both rotations: the walk from r1 ends at r3.
        let l = walk(&r1.public(), 1, &chain, 2_000, 0).expect("walk");
        assert_eq!((l.version, l.root.id()), (5, r3.public().id()));
        let t = l.trusted_keys();
        assert!(t.iter().any(|k| k.id() == k2.id()) && !t.iter().any(|k| k.id() == k1.id()), "k1 is revoked");
        // Already at r2 or r3: the same result.
        assert_eq!(walk(&r2.public(), 4, &chain, 2_000, 0).expect("from r2").version, 5);
        assert_eq!(walk(&r3.public(), 5, &chain, 2_000, 0).expect("from r3").version, 5);
        // An unrelated root never reaches r3.
        let stranger = OriginKey::from_seed([9; 32]);
        assert!(matches!(walk(&stranger.public(), 0, &chain, 2_000, 0), Err(TrustError::UnknownRoot { .. })));
        // A rotation signed by the new root alone is not followed.
        let forged = list(2, &stranger, &[&k1], &[]).sign(&[&stranger]);
        let now_forged = list(3, &stranger, &[&k1], &[]).sign(&[&stranger]);
        let bad = pb::KeyChain { root_history: vec![forged], current: Some(now_forged) };
        assert!(matches!(walk(&r1.public(), 1, &bad, 2_000, 0), Err(TrustError::UnknownRoot { .. })));
        // A rotation signed by the old root alone is refused.
        let half = list(2, &r2, &[&k1], &[]).sign(&[&r1]);
        let half_chain = pb::KeyChain { root_history: vec![half], current: Some(to_r2.clone()) };
        assert!(matches!(walk(&r1.public(), 1, &half_chain, 2_000, 0), Err(TrustError::RootSignature { .. })));
        // Rollback and expiry of the current list.
        assert_eq!(walk(&r3.public(), 6, &chain, 2_000, 0), Err(TrustError::Rollback { held: 6, got: 5 }));
        assert!(matches!(walk(&r3.public(), 5, &chain, 2_000_000, 0), Err(TrustError::Expired { .. })));
        // A tampered list body fails its root signature.
        let mut tampered = current;
        let mut b = tampered.body.to_vec();
        let last = b.len() - 1;
        b[last] ^= 1;
        tampered.body = b.into();
        let t_chain = pb::KeyChain { root_history: vec![to_r2, to_r3], current: Some(tampered) };
        assert!(walk(&r1.public(), 1, &t_chain, 2_000, 0).is_err());
    }
}
