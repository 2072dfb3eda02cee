//! `keys.json`: key encodings (§4) and the signed-message construction (§5).

use ed25519_dalek::pkcs8::spki::der::pem;
use serde_json::{Value, json};

use super::{Error, Group, ORIGIN_SEED, SECOND_SEED, UNTRUSTED_SEED, disagrees, error_name, file};
use crate::{
    OriginKey, PublicKey, TrustedKeys, VerifyError,
    keys::{DIRECTORY_CONTEXT, UPDATE_CONTEXT},
    pb,
};

/// `302e020100300506032b657004220420 ‖ seed` (§4.3).
const PKCS8_V1_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
/// `302a300506032b6570032100 ‖ raw public key` (§4.3).
const SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// The Ed25519 group order L, little-endian (§5.2).
pub(crate) const GROUP_ORDER_LE: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// A valid signature made malleable: `R ‖ (S + L)`, which a non-strict
/// verifier accepts and §5.2 requires rejecting.
pub(crate) fn malleate(sig: &[u8]) -> Vec<u8> {
    let mut out = sig.to_vec();
    let mut carry = 0u16;
    for (i, l) in GROUP_ORDER_LE.iter().enumerate() {
        let Some(b) = out.get_mut(32 + i) else { break };
        let sum = u16::from(*b) + u16::from(*l) + carry;
        *b = sum as u8;
        carry = sum >> 8;
    }
    out
}

fn context_name(ctx: &[u8]) -> &'static str {
    if ctx == UPDATE_CONTEXT { "update" } else { "directory" }
}

fn der_of(name: &str, pem_text: &str) -> Result<Vec<u8>, Error> {
    pem::decode_vec(pem_text.as_bytes()).map(|(_, der)| der).map_err(|e| disagrees(name, e.to_string()))
}

fn key_vector(name: &str, description: &str, seed: [u8; 32]) -> Result<Value, Error> {
    let key = OriginKey::from_seed(seed);
    let public = key.public();
    let raw = public.raw();
    let private_pem = key.to_pkcs8_pem().map_err(|e| disagrees(name, e.to_string()))?;
    let public_pem = public.to_spki_pem();
    let private_der = der_of(name, &private_pem)?;
    let public_der = der_of(name, &public_pem)?;
    // §4.3 gives the DER byte for byte; the library must write exactly that.
    if private_der != [&PKCS8_V1_PREFIX[..], &seed].concat() || public_der != [&SPKI_PREFIX[..], &raw].concat() {
        return Err(disagrees(name, "key DER differs from PROTOCOL.md §4.3"));
    }
    let hash = blake3::hash(&raw);
    if key.id().as_str() != hex::encode(&hash.as_bytes()[..8]) {
        return Err(disagrees(name, "key id is not hex(H(raw)[0..8]) (§4.2)"));
    }
    let reread = OriginKey::from_pkcs8_pem(&private_pem).map_err(|e| disagrees(name, e.to_string()))?;
    let reread_public = PublicKey::from_spki_pem(&public_pem).map_err(|e| disagrees(name, e.to_string()))?;
    if reread.id() != key.id() || reread_public.raw() != raw {
        return Err(disagrees(name, "PEM does not read back to the same key"));
    }
    Ok(json!({
        "name": name,
        "description": description,
        "seed": hex::encode(seed),
        "public_key": hex::encode(raw),
        "public_key_hash": hex::encode(hash.as_bytes()),
        "key_id": key.id().as_str(),
        "private_key_der": hex::encode(&private_der),
        "private_key_pem": private_pem,
        "public_key_der": hex::encode(&public_der),
        "public_key_pem": public_pem,
    }))
}

fn message_vector(name: &str, description: &str, seed: [u8; 32], ctx: &[u8], body: &[u8]) -> Result<Value, Error> {
    let key = OriginKey::from_seed(seed);
    let sig = key.sign(ctx, body);
    let ctx_hash = blake3::hash(ctx);
    let body_hash = blake3::hash(body);
    let message = [&ctx_hash.as_bytes()[..], body_hash.as_bytes()].concat();
    // The signature is pure Ed25519 over M (§5.1): check it with the raw
    // algorithm too, not only through TrustedKeys.
    let dalek = ed25519_dalek::SigningKey::from_bytes(&seed);
    let raw_sig = ed25519_dalek::Signer::sign(&dalek, &message);
    if raw_sig.to_bytes()[..] != sig.sig[..] {
        return Err(disagrees(name, "signature is not Ed25519 over H(context) ‖ H(body)"));
    }
    let trusted = TrustedKeys::new([key.public()]);
    let mut verifies_under = Vec::new();
    for c in [UPDATE_CONTEXT, DIRECTORY_CONTEXT] {
        if trusted.verify(c, body, std::slice::from_ref(&sig)).is_ok() {
            verifies_under.push(context_name(c));
        }
    }
    if verifies_under != [context_name(ctx)] {
        return Err(disagrees(name, format!("verifies under {verifies_under:?}")));
    }
    Ok(json!({
        "name": name,
        "description": description,
        "key_id": key.id().as_str(),
        "public_key": hex::encode(key.public().raw()),
        "context": hex::encode(ctx),
        "context_text": String::from_utf8_lossy(&ctx[..ctx.len() - 1]) + "\\0",
        "context_hash": hex::encode(ctx_hash.as_bytes()),
        "body": hex::encode(body),
        "body_hash": hex::encode(body_hash.as_bytes()),
        "message": hex::encode(&message),
        "signature": hex::encode(&sig.sig),
        "verifies_under": verifies_under,
    }))
}

/// A signature a strict verifier rejects; checked to be rejected by
/// [`TrustedKeys::verify`] with `Signature(Invalid)`.
fn invalid_vector(
    name: &str,
    description: &str,
    public: [u8; 32],
    body: &[u8],
    sig: Vec<u8>,
    why: &str,
) -> Result<Value, Error> {
    let key = PublicKey::from_raw(&public).map_err(|e| disagrees(name, e.to_string()))?;
    let s = pb::Signature { key_id: key.id().to_string(), sig: sig.clone().into() };
    let err = match TrustedKeys::new([key.clone()]).verify(UPDATE_CONTEXT, body, &[s]) {
        Ok(_) => return Err(disagrees(name, "accepted")),
        Err(e) => VerifyError::from(e),
    };
    if error_name(&err) != "Signature(Invalid)" {
        return Err(disagrees(name, format!("rejected as {err}")));
    }
    Ok(json!({
        "name": name,
        "description": description,
        "why": why,
        "key_id": key.id().as_str(),
        "public_key": hex::encode(public),
        "context": hex::encode(UPDATE_CONTEXT),
        "body": hex::encode(body),
        "signature": hex::encode(&sig),
        "expect": {"result": "rejected", "error": error_name(&err)},
    }))
}

pub(super) fn build() -> Result<Value, Error> {
    let keys = vec![
        key_vector(
            "origin-key",
            "The origin key of PROTOCOL.md Appendix A.1 and of every chain: key id (§4.2) and key files (§4.3).",
            ORIGIN_SEED,
        )?,
        key_vector(
            "second-key",
            "A second trusted key, used by the key-rotation chain: key id (§4.2) and key files (§4.3).",
            SECOND_SEED,
        )?,
        key_vector(
            "untrusted-key",
            "A key no vector's verifier trusts: key id (§4.2) and key files (§4.3).",
            UNTRUSTED_SEED,
        )?,
        key_vector(
            "counting-seed-key",
            "A key from the seed 00 01 … 1f: key id (§4.2) and key files (§4.3).",
            std::array::from_fn(|i| i as u8),
        )?,
    ];
    let long: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let signed_messages = vec![
        message_vector(
            "update-context",
            "The signed message of PROTOCOL.md Appendix A.2: update context, body `body` (§5.1).",
            ORIGIN_SEED,
            UPDATE_CONTEXT,
            b"body",
        )?,
        message_vector(
            "directory-context",
            "The same key and body under the directory context give another M and signature (§5.1).",
            ORIGIN_SEED,
            DIRECTORY_CONTEXT,
            b"body",
        )?,
        message_vector(
            "update-context-empty-body",
            "An empty body under the update context; H(body) is BLAKE3 of no bytes (§5.1).",
            ORIGIN_SEED,
            UPDATE_CONTEXT,
            b"",
        )?,
        message_vector(
            "update-context-3000-byte-body",
            "A 3,000-byte body (byte i = i mod 251), longer than one 1,024-byte BLAKE3 chunk (§3.1, §5.1).",
            ORIGIN_SEED,
            UPDATE_CONTEXT,
            &long,
        )?,
        message_vector(
            "directory-context-second-key",
            "The directory context signed by the second key (§5.1).",
            SECOND_SEED,
            DIRECTORY_CONTEXT,
            b"directory body",
        )?,
    ];
    let origin = OriginKey::from_seed(ORIGIN_SEED);
    let good = origin.sign(UPDATE_CONTEXT, b"body").sig.to_vec();
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut small_order_sig = vec![0u8; 64];
    small_order_sig[0] = 1;
    let invalid_signatures = vec![
        invalid_vector(
            "s-plus-group-order",
            "The signature of Appendix A.2 with L added to S: a strict verifier requires S < L (§5.2).",
            origin.public().raw(),
            b"body",
            malleate(&good),
            "S >= L (non-canonical scalar); a lax RFC 8032 verifier that reduces S accepts it",
        )?,
        invalid_vector(
            "small-order-public-key",
            "Public key and R are the identity point and S = 0: the equation holds but §5.2 rejects small-order points.",
            identity,
            b"body",
            small_order_sig,
            "A and R of small order; a cofactorless verifier without the small-order check accepts it for any body",
        )?,
        invalid_vector(
            "truncated-signature",
            "The signature of Appendix A.2 without its last byte: a signature is exactly 64 bytes (§5.2).",
            origin.public().raw(),
            b"body",
            good[..63].to_vec(),
            "63 bytes",
        )?,
    ];
    Ok(file(
        Group::Keys,
        "Ed25519 keys, key ids, key files and signed messages (PROTOCOL.md §4, §5).",
        vec![("keys", keys), ("signed_messages", signed_messages), ("invalid_signatures", invalid_signatures)],
    ))
}
