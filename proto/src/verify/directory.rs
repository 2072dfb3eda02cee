//! The directory (PROTOCOL.md §9): what the origin signs (§9.2,
//! [`sign_directory`]), opening one with fixed keys ([`open_directory`]), and
//! what a [`Verifier`] checks before it takes a directory's keys (§9.3): the
//! key chain ([`super::trust`]), the directory signature, the origin id, its
//! position and its expiry. Restoring a saved directory (§9.6) is the same
//! check without the expiry.

use bytes::Bytes;
use prost::Message as _;

use super::{Verifier, VerifyError};
use crate::{OriginKey, pb};

/// Encodes and signs a directory with every key of `keys`.
pub fn sign_directory(keys: &[OriginKey], dir: &pb::Directory) -> pb::SignedDirectory {
    let body = Bytes::from(dir.encode_to_vec());
    let signatures = keys.iter().map(|k| k.sign(crate::keys::DIRECTORY_CONTEXT, &body)).collect();
    pb::SignedDirectory { body, signatures }
}

/// Verifies a signed directory against `keys` and decodes it.
pub fn open_directory(
    keys: &crate::TrustedKeys,
    signed: &pb::SignedDirectory,
) -> Result<pb::Directory, crate::VerifyError> {
    const MAX_DIRECTORY: usize = 1 << 20;
    if signed.body.len() > MAX_DIRECTORY {
        return Err(crate::VerifyError::TooLarge { what: "directory", len: signed.body.len(), limit: MAX_DIRECTORY });
    }
    keys.verify(crate::keys::DIRECTORY_CONTEXT, &signed.body, &signed.signatures)?;
    pb::Directory::decode(signed.body.clone()).map_err(|e| crate::VerifyError::Malformed(format!("directory: {e}")))
}

/// Where a verifier's directory stands: no older one is accepted after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectoryPosition {
    /// Its seq.
    pub seq: u64,
    /// When it was signed.
    pub issued_at_ms: i64,
    /// When it expires (0: never, for origins without directory expiry).
    pub expires_at_ms: i64,
}

impl Verifier {
    /// Verifies a signed directory and, when it is trusted, makes its keys
    /// the ones updates are checked with (PROTOCOL.md §9): with a root, the
    /// key chain must lead from the root reached so far to a current, fresh
    /// key list no older than the one accepted before, whose update keys sign
    /// the directory; with fixed keys, those keys sign it. Its origin id must
    /// be the key list's (and the one pinned before); its (seq, issued_at)
    /// must not be older than the directory accepted before, and it must not
    /// be expired. Nothing changes on an error.
    pub fn accept_directory(
        &mut self,
        signed: &pb::SignedDirectory,
        now_ms: i64,
    ) -> Result<pb::Directory, VerifyError> {
        self.accept_directory_inner(signed, Some(now_ms))
    }

    /// As [`Verifier::accept_directory`] without the expiry checks: for a
    /// directory restored from the verifier's own state file, which only
    /// sets the positions that later directories must not go below.
    pub fn restore_directory(&mut self, signed: &pb::SignedDirectory) -> Result<pb::Directory, VerifyError> {
        self.accept_directory_inner(signed, None)
    }

    fn accept_directory_inner(
        &mut self,
        signed: &pb::SignedDirectory,
        now_ms: Option<i64>,
    ) -> Result<pb::Directory, VerifyError> {
        const MAX_DIRECTORY: usize = 1 << 20;
        if signed.body.len() > MAX_DIRECTORY {
            return Err(VerifyError::TooLarge { what: "directory", len: signed.body.len(), limit: MAX_DIRECTORY });
        }
        let dir = pb::Directory::decode(signed.body.clone())
            .map_err(|e| VerifyError::Malformed(format!("directory: {e}")))?;
        // Not newer than the one held (a lower seq, or the same seq signed no
        // later): nothing to learn from it, and nothing changes. An honest
        // RProxy may lag behind another, so this is not an error; a proxy
        // that only ever sends old directories is caught by the held one's
        // expiry (`directory_stale`).
        if let Some((h, held, _)) = &self.directory
            && (dir.seq < h.seq || (dir.seq == h.seq && dir.issued_at_ms <= h.issued_at_ms))
        {
            return Ok(held.clone());
        }
        let skew = self.limits.max_skew_ms;
        let (keys, list) = match self.keys.trusted_root() {
            Some(root) => {
                let chain = dir
                    .key_chain
                    .as_ref()
                    .ok_or_else(|| crate::verify::trust::TrustError::NoKeyChain { root: root.id().to_string() })?;
                // Restoring: expiry is not checked (`i64::MIN` is never past).
                let list =
                    crate::verify::trust::walk(root, self.key_list_version, chain, now_ms.unwrap_or(i64::MIN), skew)?;
                (list.trusted_keys(), Some(list))
            }
            None => (self.keys.clone(), None),
        };
        let signers = keys.verify_all(crate::keys::DIRECTORY_CONTEXT, &signed.body, &signed.signatures)?;
        keys.signer_at(&signers, dir.issued_at_ms)?;
        // The key list's origin, and the one accepted before: both must match.
        for expected in [list.as_ref().map(|l| &l.origin_id), self.origin_id.as_ref()].into_iter().flatten() {
            if dir.origin_id != *expected {
                return Err(VerifyError::Origin {
                    expected: expected.clone(),
                    got: dir.origin_id.chars().take(80).collect(),
                });
            }
        }
        if let Some(now_ms) = now_ms
            && dir.expires_at_ms != 0
            && dir.expires_at_ms.saturating_add(skew) < now_ms
        {
            return Err(VerifyError::DirectoryExpired { seq: dir.seq, expires_at_ms: dir.expires_at_ms, now_ms });
        }
        self.keys = keys;
        if let Some(l) = list {
            self.key_list_version = l.version;
        }
        self.origin_id = Some(dir.origin_id.clone());
        let pos = DirectoryPosition { seq: dir.seq, issued_at_ms: dir.issued_at_ms, expires_at_ms: dir.expires_at_ms };
        self.directory = Some((pos, dir.clone(), signed.clone()));
        Ok(dir)
    }

    /// The signed directory the verifier holds, exactly as it arrived: what a
    /// node saves or relays after [`Verifier::accept_directory`], which keeps
    /// the held one when the received one is not newer (PROTOCOL.md §9.3).
    pub fn signed_directory(&self) -> Option<&pb::SignedDirectory> {
        self.directory.as_ref().map(|(.., s)| s)
    }

    /// Where the directory accepted last stands.
    pub fn directory(&self) -> Option<DirectoryPosition> {
        self.directory.as_ref().map(|(p, ..)| *p)
    }

    /// The held directory's expiry has passed (plus the skew allowance)
    /// without a fresher one: the endpoint withholds it, or it is stuck.
    pub fn directory_stale(&self, now_ms: i64) -> Option<VerifyError> {
        let (p, ..) = self.directory.as_ref()?;
        (p.expires_at_ms != 0 && p.expires_at_ms.saturating_add(self.limits.max_skew_ms) < now_ms)
            .then_some(VerifyError::DirectoryExpired { seq: p.seq, expires_at_ms: p.expires_at_ms, now_ms })
    }
}
