//! Origin signing keys and trusted public keys (ed25519): PROTOCOL.md §4 (the
//! algorithm, key ids, key files) and §5 (the signed message, strict
//! verification, several signatures).
//!
//! Files use standard formats other tools read: the private key as PKCS#8 PEM,
//! the public key as SPKI PEM (RFC 8410), so `openssl pkey -in key.pem -text`
//! can inspect them. A signature covers a domain-separated message: a context
//! string naming what is signed, then BLAKE3 of the body. The context keeps an
//! update signature from being replayed as a directory signature; hashing first
//! makes signing cost independent of body size.

use std::{collections::HashMap, fmt};

use bytes::Bytes;
use ed25519_dalek::{
    Signer, SigningKey, VerifyingKey,
    pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, spki::der::pem::LineEnding},
};

use crate::pb;

/// Context of update signatures.
pub const UPDATE_CONTEXT: &[u8] = b"altocast/v1/update\0";
/// Context of directory signatures.
pub const DIRECTORY_CONTEXT: &[u8] = b"altocast/v1/directory\0";
/// Most signatures a verifier looks at on one message.
pub const MAX_SIGNATURES: usize = 4;

/// Key loading and signature errors.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The private key PEM could not be read.
    #[error("not an ed25519 PKCS#8 private key PEM: {0}")]
    BadPrivateKey(String),
    /// The public key PEM could not be read.
    #[error("not an ed25519 SPKI public key PEM: {0}")]
    BadPublicKey(String),
    /// The OS random source failed.
    #[error("no OS randomness: {0}")]
    Random(String),
}

/// Why a signature check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The message carries no signature at all.
    #[error("no signature")]
    Missing,
    /// More signatures than [`MAX_SIGNATURES`].
    #[error("{0} signatures; at most {MAX_SIGNATURES} are looked at")]
    TooMany(usize),
    /// No signature is by a trusted key.
    #[error("signed only by untrusted key(s) {0}")]
    UnknownKey(String),
    /// A signature by a trusted key does not verify.
    #[error("bad signature by key {0}")]
    Invalid(String),
    /// The message was issued outside the validity window of every trusted
    /// key that signed it (a retired key, or one not valid yet).
    #[error("signed by {keys} outside their validity (issued at {issued_at_ms} ms)")]
    OutsideWindow {
        /// The key ids that signed.
        keys: String,
        /// The message's issue time.
        issued_at_ms: i64,
    },
}

/// A key id: the first 8 bytes of BLAKE3(public key), 16 hex characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    fn of(key: &VerifyingKey) -> Self {
        KeyId(hex::encode(&blake3::hash(key.as_bytes()).as_bytes()[..8]))
    }
    /// The 16 hex characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

fn message(context: &[u8], body: &[u8]) -> [u8; 64] {
    let mut m = [0u8; 64];
    let digest = blake3::hash(body);
    // The context is hashed too so the signed message has a fixed size.
    m[..32].copy_from_slice(blake3::hash(context).as_bytes());
    m[32..].copy_from_slice(digest.as_bytes());
    m
}

/// The origin's private signing key.
#[derive(Clone)]
pub struct OriginKey {
    key: SigningKey,
    id: KeyId,
}

impl fmt::Debug for OriginKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OriginKey({})", self.id)
    }
}

impl OriginKey {
    /// A new random key.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self::from_seed(seed))
    }

    /// A key from 32 seed bytes (deterministic; for tests and fixtures).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let key = SigningKey::from_bytes(&seed);
        let id = KeyId::of(&key.verifying_key());
        OriginKey { key, id }
    }

    /// Reads a PKCS#8 PEM private key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        let key = SigningKey::from_pkcs8_pem(pem).map_err(|e| KeyError::BadPrivateKey(e.to_string()))?;
        let id = KeyId::of(&key.verifying_key());
        Ok(OriginKey { key, id })
    }

    /// The key as PKCS#8 PEM (secret: write it with mode 0600): RFC 5208 v1
    /// (`OneAsymmetricKey` version 0, no public key), the form `openssl pkey`
    /// 3.0 and most tools read. Both v1 and v2 (RFC 5958, with the public
    /// key) are read by [`OriginKey::from_pkcs8_pem`].
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        let v1 = ed25519_dalek::pkcs8::KeypairBytes { secret_key: self.key.to_bytes(), public_key: None };
        let pem = v1.to_pkcs8_pem(LineEnding::LF).map_err(|e| KeyError::BadPrivateKey(e.to_string()))?;
        Ok(pem.to_string())
    }

    /// The key id.
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey { key: self.key.verifying_key(), id: self.id.clone() }
    }

    /// Signs `body` under `context`.
    pub fn sign(&self, context: &[u8], body: &[u8]) -> pb::Signature {
        let sig = self.key.sign(&message(context, body));
        pb::Signature { key_id: self.id.0.clone(), sig: Bytes::copy_from_slice(&sig.to_bytes()) }
    }
}

/// A trusted (or advertised) public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    id: KeyId,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id)
    }
}

impl PublicKey {
    /// Reads an SPKI PEM public key (RFC 8410).
    pub fn from_spki_pem(pem: &str) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_public_key_pem(pem).map_err(|e| KeyError::BadPublicKey(e.to_string()))?;
        Ok(PublicKey { id: KeyId::of(&key), key })
    }

    /// A key from its 32 raw bytes (as in the directory).
    pub fn from_raw(raw: &[u8]) -> Result<Self, KeyError> {
        let arr: [u8; 32] = raw.try_into().map_err(|_| KeyError::BadPublicKey(format!("{} bytes", raw.len())))?;
        let key = VerifyingKey::from_bytes(&arr).map_err(|e| KeyError::BadPublicKey(e.to_string()))?;
        Ok(PublicKey { id: KeyId::of(&key), key })
    }

    /// The key as SPKI PEM.
    pub fn to_spki_pem(&self) -> String {
        self.key.to_public_key_pem(LineEnding::LF).unwrap_or_default()
    }

    /// The 32 raw bytes.
    pub fn raw(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The key id.
    pub fn id(&self) -> &KeyId {
        &self.id
    }
}

/// What a verifier trusts: fixed update keys ([`TrustedKeys::new`]), or a
/// root ([`TrustedKeys::root`]) whose key lists say which update keys sign,
/// each within its validity window (see [`crate::verify::trust`]).
#[derive(Clone, Default, Debug)]
pub struct TrustedKeys {
    keys: HashMap<String, PublicKey>,
    /// Per key id: `[not_before_ms, not_after_ms]`, 0 = unbounded.
    windows: HashMap<String, (i64, i64)>,
    root: Option<PublicKey>,
}

impl TrustedKeys {
    /// Trusts the given update keys, always.
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        TrustedKeys { keys: keys.into_iter().map(|k| (k.id.0.clone(), k)).collect(), ..Default::default() }
    }

    /// Trusts `root`: no update key until a key list it signs is accepted.
    pub fn root(root: PublicKey) -> Self {
        TrustedKeys { root: Some(root), ..Default::default() }
    }

    /// The update keys of a key list under `root`, each with its window.
    pub fn with_windows(root: PublicKey, keys: impl IntoIterator<Item = (PublicKey, (i64, i64))>) -> Self {
        let (mut map, mut windows) = (HashMap::new(), HashMap::new());
        for (k, w) in keys {
            windows.insert(k.id.0.clone(), w);
            map.insert(k.id.0.clone(), k);
        }
        TrustedKeys { keys: map, windows, root: Some(root) }
    }

    /// The root trusted (reached), if the lifecycle is in use.
    pub fn trusted_root(&self) -> Option<&PublicKey> {
        self.root.as_ref()
    }

    /// The window `[not_before_ms, not_after_ms]` (0 = unbounded) of key
    /// `id`: keys of a key list have one, fixed keys do not.
    pub fn window(&self, id: &KeyId) -> Option<(i64, i64)> {
        self.windows.get(&id.0).copied()
    }

    /// Whether key `id` may sign a message issued at `issued_at_ms`.
    pub fn valid_at(&self, id: &KeyId, issued_at_ms: i64) -> bool {
        match self.windows.get(&id.0) {
            None => self.keys.contains_key(&id.0),
            Some(&(from, until)) => (from == 0 || issued_at_ms >= from) && (until == 0 || issued_at_ms <= until),
        }
    }

    /// Of `signers` (from [`TrustedKeys::verify_all`]), one that may sign at
    /// `issued_at_ms`, or the error naming them all.
    pub fn signer_at(&self, signers: &[KeyId], issued_at_ms: i64) -> Result<KeyId, SignatureError> {
        signers.iter().find(|k| self.valid_at(k, issued_at_ms)).cloned().ok_or_else(|| SignatureError::OutsideWindow {
            keys: signers.iter().map(KeyId::as_str).collect::<Vec<_>>().join(","),
            issued_at_ms,
        })
    }

    /// True when no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The trusted keys.
    pub fn iter(&self) -> impl Iterator<Item = &PublicKey> {
        self.keys.values()
    }

    /// Checks that at least one signature is by a trusted key and that every
    /// signature by a trusted key verifies. Returns a key id that signed.
    pub fn verify(&self, context: &[u8], body: &[u8], sigs: &[pb::Signature]) -> Result<KeyId, SignatureError> {
        let mut all = self.verify_all(context, body, sigs)?;
        all.pop().ok_or(SignatureError::Missing)
    }

    /// As [`TrustedKeys::verify`], returning every trusted key that signed.
    pub fn verify_all(
        &self,
        context: &[u8],
        body: &[u8],
        sigs: &[pb::Signature],
    ) -> Result<Vec<KeyId>, SignatureError> {
        if sigs.is_empty() {
            return Err(SignatureError::Missing);
        }
        if sigs.len() > MAX_SIGNATURES {
            return Err(SignatureError::TooMany(sigs.len()));
        }
        let msg = message(context, body);
        let mut good = Vec::new();
        for s in sigs {
            let Some(k) = self.keys.get(&s.key_id) else { continue };
            let sig =
                ed25519_dalek::Signature::from_slice(&s.sig).map_err(|_| SignatureError::Invalid(s.key_id.clone()))?;
            k.key.verify_strict(&msg, &sig).map_err(|_| SignatureError::Invalid(s.key_id.clone()))?;
            good.push(k.id.clone());
        }
        (!good.is_empty()).then_some(good).ok_or_else(|| {
            SignatureError::UnknownKey(
                sigs.iter().map(|s| s.key_id.chars().take(32).collect::<String>()).collect::<Vec<_>>().join(","),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_and_context_separation() {
        let k = OriginKey::generate().expect("key");
        let pem = k.to_pkcs8_pem().expect("pem");
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let k2 = OriginKey::from_pkcs8_pem(&pem).expect("read");
        assert_eq!(k.id(), k2.id());
        // Written as PKCS#8 v1 (version 0, no public key), which OpenSSL 3.0 reads.
        // That is exactly: SEQUENCE { INTEGER 0, AlgorithmIdentifier { id-Ed25519 },
        // OCTET STRING { OCTET STRING seed } }, 48 bytes.
        let (_, der) = ed25519_dalek::pkcs8::spki::der::pem::decode_vec(pem.as_bytes()).expect("PEM");
        let prefix = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
        assert_eq!((der.len(), &der[..16]), (48, &prefix[..]), "PKCS#8 v1 without the public key");
        // A v2 key (with the public key, as earlier versions wrote) still reads.
        let v2 = k.key.to_pkcs8_pem(LineEnding::LF).expect("v2").to_string();
        assert_eq!(OriginKey::from_pkcs8_pem(&v2).expect("read v2").id(), k.id());
        let pub_pem = k.public().to_spki_pem();
        assert!(pub_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        let p = PublicKey::from_spki_pem(&pub_pem).expect("read pub");
        let trusted = TrustedKeys::new([p]);
        let sig = k.sign(UPDATE_CONTEXT, b"body");
        assert!(trusted.verify(UPDATE_CONTEXT, b"body", std::slice::from_ref(&sig)).is_ok());
        assert!(matches!(
            trusted.verify(DIRECTORY_CONTEXT, b"body", std::slice::from_ref(&sig)),
            Err(SignatureError::Invalid(_))
        ));
        assert!(matches!(trusted.verify(UPDATE_CONTEXT, b"bodx", &[sig]), Err(SignatureError::Invalid(_))));
        let other = OriginKey::generate().expect("key");
        assert!(matches!(
            trusted.verify(UPDATE_CONTEXT, b"body", &[other.sign(UPDATE_CONTEXT, b"body")]),
            Err(SignatureError::UnknownKey(_))
        ));
    }
}
