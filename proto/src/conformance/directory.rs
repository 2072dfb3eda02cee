//! `directory.json`: the signed directory as it stands (§9). Kept apart from
//! the other groups: the directory format will change (DESIGN §6a), and this
//! file can then be rebuilt alone.

use bytes::Bytes;
use prost::Message as _;
use serde_json::{Value, json};

use super::{
    Error, Fill, Group, ORIGIN_SEED, SECOND_SEED, T0_MS, UNTRUSTED_SEED, disagrees, error_name, file, signed_json,
};
use crate::{
    Check, OriginKey, TrustedKeys,
    keys::{DIRECTORY_CONTEXT, UPDATE_CONTEXT},
    pb,
    update::{open_directory, sign_directory},
};

/// The directory fields as the vectors give them (enums as numbers, bytes as hex).
fn directory_json(d: &pb::Directory) -> Value {
    json!({
        "origin_id": d.origin_id,
        "issued_at_ms": d.issued_at_ms,
        "resources": d.resources.iter().map(|r| json!({
            "resource_id": r.resource_id,
            "kind": r.kind,
            "cost_type": r.cost_type.as_ref().map(|c| json!({"metric": c.metric, "mode": c.mode})),
            "uses": r.uses,
        })).collect::<Vec<_>>(),
        "keys": d.keys.iter().map(|k| json!({"key_id": k.key_id, "ed25519": hex::encode(&k.ed25519)})).collect::<Vec<_>>(),
        "rproxies": d.rproxies,
    })
}

fn resource(
    id: &str,
    kind: pb::ResourceKind,
    cost_type: Option<(&str, pb::CostMode)>,
    uses: &[&str],
) -> pb::DirectoryResource {
    pb::DirectoryResource {
        resource_id: id.into(),
        kind: kind as i32,
        cost_type: cost_type.map(|(metric, mode)| pb::CostType { metric: metric.into(), mode: mode as i32 }),
        uses: uses.iter().map(|s| s.to_string()).collect(),
    }
}

fn key_entry(k: &OriginKey) -> pb::PublicKey {
    pb::PublicKey { key_id: k.id().to_string(), ed25519: Bytes::copy_from_slice(&k.public().raw()) }
}

struct Vector {
    name: &'static str,
    description: &'static str,
    trusted: Vec<OriginKey>,
    signed: pb::SignedDirectory,
    fill: Option<Fill>,
    /// `None`: accepted. `Some`: rejected with this check, error name and section.
    rejected: Option<(Check, &'static str, &'static str)>,
}

impl Vector {
    fn to_json(&self) -> Result<Value, Error> {
        let keys = TrustedKeys::new(self.trusted.iter().map(|k| k.public()));
        let expect = match (open_directory(&keys, &self.signed), self.rejected) {
            (Ok(d), None) => json!({"result": "accepted", "directory": directory_json(&d)}),
            (Err(e), Some((check, error, section))) if e.check() == check && error_name(&e) == error => {
                json!({"result": "rejected", "check": check.as_str(), "error": error, "section": section})
            }
            (got, _) => return Err(disagrees(self.name, format!("open_directory gave {got:?}"))),
        };
        let decoded = match self.fill {
            Some(_) => Value::Null,
            None => pb::Directory::decode(self.signed.body.clone()).map_or(Value::Null, |d| directory_json(&d)),
        };
        Ok(json!({
            "name": self.name,
            "description": self.description,
            "trusted_keys": self.trusted.iter().map(|k| json!({"key_id": k.id().as_str(), "public_key": hex::encode(k.public().raw())})).collect::<Vec<_>>(),
            "signed": signed_json(&self.signed.body, &self.signed.signatures, self.fill, decoded),
            "expect": expect,
        }))
    }
}

pub(super) fn build() -> Result<Value, Error> {
    let origin = OriginKey::from_seed(ORIGIN_SEED);
    let second = OriginKey::from_seed(SECOND_SEED);
    let untrusted = OriginKey::from_seed(UNTRUSTED_SEED);
    use pb::{CostMode::*, ResourceKind::*};
    let a7 = pb::Directory {
        origin_id: origin.id().to_string(),
        issued_at_ms: T0_MS,
        resources: vec![
            resource("my-default-network-map", NetworkMap, None, &[]),
            resource("my-default-cost-map", CostMap, Some(("routingcost", Numerical)), &["my-default-network-map"]),
        ],
        keys: vec![key_entry(&origin)],
        rproxies: vec!["http://127.0.0.1:7200".into()],
        seq: 1,
        expires_at_ms: 0,
        key_chain: None,
    };
    let two_keys = pb::Directory {
        origin_id: origin.id().to_string(),
        issued_at_ms: T0_MS + 1_000,
        resources: vec![
            resource("my-default-network-map", NetworkMap, None, &[]),
            resource("hopcount-cost-map", CostMap, Some(("hopcount", Ordinal)), &["my-default-network-map"]),
            resource("my-default-cost-map", CostMap, Some(("routingcost", Numerical)), &["my-default-network-map"]),
        ],
        keys: vec![key_entry(&origin), key_entry(&second)],
        rproxies: vec!["http://127.0.0.1:7200".into(), "https://rproxy.example.net:7200".into()],
        seq: 2,
        expires_at_ms: 0,
        key_chain: None,
    };
    let signed_a7 = sign_directory(std::slice::from_ref(&origin), &a7);
    let mut both = sign_directory(std::slice::from_ref(&origin), &two_keys);
    both.signatures.push(second.sign(DIRECTORY_CONTEXT, &both.body));
    let mut flipped = signed_a7.clone();
    let mut b = flipped.body.to_vec();
    let last = b.len() - 1;
    b[last] ^= 0x01;
    flipped.body = b.into();
    let over = Fill { byte: 0, len: (1 << 20) + 1 };
    let over_body = over.bytes();
    let junk = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff]);
    let accepted =
        |name, description, trusted, signed| Vector { name, description, trusted, signed, fill: None, rejected: None };
    let rejected = |name, description, signed, check, error, section| Vector {
        name,
        description,
        trusted: vec![OriginKey::from_seed(ORIGIN_SEED)],
        signed,
        fill: None,
        rejected: Some((check, error, section)),
    };
    let vectors = [
        accepted(
            "directory-appendix-a7",
            "The signed directory of PROTOCOL.md Appendix A.7, signed with the directory context (§9.2).",
            vec![OriginKey::from_seed(ORIGIN_SEED)],
            signed_a7.clone(),
        ),
        accepted(
            "directory-two-keys",
            "A directory listing two keys and an ordinal cost map, signed by both keys; a verifier trusting only the second accepts it (§9.2, §5.3).",
            vec![OriginKey::from_seed(SECOND_SEED)],
            both,
        ),
        rejected(
            "directory-signed-with-update-context",
            "A directory signed with the update context (PROTOCOL.md §5.1, §9.3).",
            pb::SignedDirectory {
                signatures: vec![origin.sign(UPDATE_CONTEXT, &signed_a7.body)],
                body: signed_a7.body.clone(),
            },
            Check::Signature,
            "Signature(Invalid)",
            "§5.1",
        ),
        rejected(
            "directory-flipped-body-byte",
            "The directory of Appendix A.7 with its last body byte flipped (PROTOCOL.md §9.3).",
            flipped,
            Check::Signature,
            "Signature(Invalid)",
            "§9.3",
        ),
        rejected(
            "directory-untrusted-key",
            "A directory signed only by a key the client does not trust; the keys it lists do not make it trusted (PROTOCOL.md §9.3, §9.4).",
            sign_directory(
                std::slice::from_ref(&untrusted),
                &pb::Directory { keys: vec![key_entry(&untrusted)], ..a7.clone() },
            ),
            Check::Signature,
            "Signature(UnknownKey)",
            "§9.4",
        ),
        rejected(
            "directory-not-a-directory",
            "Validly signed bytes that are not a protobuf Directory (PROTOCOL.md §9.3).",
            pb::SignedDirectory { signatures: vec![origin.sign(DIRECTORY_CONTEXT, &junk)], body: junk },
            Check::Apply,
            "Malformed",
            "§9.3",
        ),
        Vector {
            fill: Some(over),
            ..rejected(
                "directory-body-over-1-mib",
                "A directory body of 1 MiB + 1 bytes is refused before its signature is checked (PROTOCOL.md §9.3, §11).",
                pb::SignedDirectory { signatures: vec![origin.sign(DIRECTORY_CONTEXT, &over_body)], body: over_body },
                Check::Size,
                "TooLarge",
                "§9.3",
            )
        },
    ];
    let vectors = vectors.iter().map(Vector::to_json).collect::<Result<Vec<_>, _>>()?;
    Ok(file(
        Group::Directory,
        "The signed directory as it stands (PROTOCOL.md §9); this group is rebuilt when the directory format changes.",
        vec![("vectors", vectors)],
    ))
}
