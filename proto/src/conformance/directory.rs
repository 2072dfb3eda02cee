//! `directory.json`: the signed directory and the key chain (§9).
//!
//! Two arrays. `vectors`: one signed directory each, opened with fixed
//! trusted keys ([`open_directory`]). `lifecycles`: a [`Verifier`] trusting
//! only a root key is fed a sequence of signed directories (and updates),
//! each at its own clock, and the vector gives the outcome of every step and
//! the verifier's trust state after it: the whole trust lifecycle of §9.3
//! (key lists, update-key rotation and retirement, revocation, root
//! rotations, rollbacks, expiry, origin ids, restoring a saved directory).

use bytes::Bytes;
use prost::Message as _;
use serde_json::{Value, json};

use super::{
    Error, Fill, Group, ORIGIN_SEED, SECOND_SEED, T0_MS, TTL_MS, UNTRUSTED_SEED, chains, disagrees, error_name, file,
    signed_json, update_json,
};
use crate::{
    Check, Limits, OriginKey, PublicKey, TrustedKeys, Verifier,
    keys::{DIRECTORY_CONTEXT, UPDATE_CONTEXT},
    pb,
    verify::{
        directory::{open_directory, sign_directory},
        trust::{KeyList, UpdateKey},
    },
    wire::update::Signer,
};

fn public_key_json(k: Option<&pb::PublicKey>) -> Value {
    k.map_or(Value::Null, |k| json!({"key_id": k.key_id, "ed25519": hex::encode(&k.ed25519)}))
}

/// A signed key list: the signed message form, `decoded` its `KeyList` fields.
fn key_list_json(s: &pb::SignedKeyList) -> Value {
    let decoded = pb::KeyList::decode(s.body.clone()).map_or(Value::Null, |l| {
        json!({
            "origin_id": l.origin_id,
            "version": l.version,
            "issued_at_ms": l.issued_at_ms,
            "expires_at_ms": l.expires_at_ms,
            "root": public_key_json(l.root.as_ref()),
            "keys": l.keys.iter().map(|k| json!({
                "key": public_key_json(k.key.as_ref()),
                "not_before_ms": k.not_before_ms,
                "not_after_ms": k.not_after_ms,
            })).collect::<Vec<_>>(),
            "revoked": l.revoked,
        })
    });
    signed_json(&s.body, &s.signatures, None, decoded)
}

/// The directory fields as the vectors give them (enums as numbers, bytes as
/// hex, the key lists of the key chain as signed messages).
fn directory_json(d: &pb::Directory) -> Value {
    json!({
        "origin_id": d.origin_id,
        "seq": d.seq,
        "issued_at_ms": d.issued_at_ms,
        "expires_at_ms": d.expires_at_ms,
        "resources": d.resources.iter().map(|r| json!({
            "resource_id": r.resource_id,
            "kind": r.kind,
            "cost_type": r.cost_type.as_ref().map(|c| json!({"metric": c.metric, "mode": c.mode})),
            "uses": r.uses,
        })).collect::<Vec<_>>(),
        "keys": d.keys.iter().map(|k| public_key_json(Some(k))).collect::<Vec<_>>(),
        "rproxies": d.rproxies,
        "key_chain": d.key_chain.as_ref().map(|c| json!({
            "root_history": c.root_history.iter().map(key_list_json).collect::<Vec<_>>(),
            "current": c.current.as_ref().map_or(Value::Null, key_list_json),
        })),
    })
}

fn directory_signed_json(s: &pb::SignedDirectory) -> Value {
    let decoded = pb::Directory::decode(s.body.clone()).map_or(Value::Null, |d| directory_json(&d));
    signed_json(&s.body, &s.signatures, None, decoded)
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
        let signed = match self.fill {
            Some(_) => signed_json(&self.signed.body, &self.signed.signatures, self.fill, Value::Null),
            None => directory_signed_json(&self.signed),
        };
        Ok(json!({
            "name": self.name,
            "description": self.description,
            "trusted_keys": self.trusted.iter().map(|k| json!({"key_id": k.id().as_str(), "public_key": hex::encode(k.public().raw())})).collect::<Vec<_>>(),
            "signed": signed,
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
    let lifecycles = lifecycles()?.iter().map(Lifecycle::to_json).collect::<Result<Vec<_>, _>>()?;
    Ok(file(
        Group::Directory,
        "The signed directory and the key chain (PROTOCOL.md §9): `vectors` open one directory with fixed trusted keys; `lifecycles` feed a verifier trusting a root key a sequence of directories and updates (§9.3).",
        vec![("vectors", vectors), ("lifecycles", lifecycles)],
    ))
}

// ---------------------------------------------------------------- lifecycles

/// Seed of the first root key (its key id is the lifecycles' origin id, §9.2).
const ROOT_SEED: [u8; 32] = [21; 32];
/// Seed of the root after the first rotation.
const ROOT2_SEED: [u8; 32] = [22; 32];
/// Seed of the root after the second rotation.
const ROOT3_SEED: [u8; 32] = [23; 32];
/// Seed of a root no lifecycle trusts.
const STRANGER_ROOT_SEED: [u8; 32] = [29; 32];
/// Seed of a third update key (the first two are [`ORIGIN_SEED`] and [`SECOND_SEED`]).
const THIRD_SEED: [u8; 32] = [10; 32];
/// Key lists expire a year after T0 unless a vector says otherwise.
const YEAR_MS: i64 = 365 * 86_400_000;
/// One day.
const DAY_MS: i64 = 86_400_000;

/// What one lifecycle step gives the verifier.
enum Action {
    /// `accept_directory(signed, now_ms)`.
    Accept(pb::SignedDirectory, i64),
    /// `restore_directory(signed)`: no clock, no expiry checks.
    Restore(pb::SignedDirectory),
    /// `verify(update, [], now_ms)`.
    Update(pb::SignedUpdate, i64),
}

/// What a step must do; the build fails otherwise.
enum Intent {
    /// Accepted (an update: committed). For a directory, the root the verifier
    /// must have reached and the key list version it must hold after it.
    Accepted(Option<(PublicKey, u64)>),
    /// Rejected with this check class, error name and section, nothing changed.
    Rejected(Check, &'static str, &'static str),
}

struct Step {
    description: String,
    action: Action,
    intent: Intent,
}

/// A fresh verifier trusting `root`, following the network map, fed `steps` in order.
struct Lifecycle {
    name: &'static str,
    description: &'static str,
    root: PublicKey,
    steps: Vec<Step>,
}

impl Lifecycle {
    fn new(name: &'static str, description: &'static str, root: &OriginKey) -> Self {
        Lifecycle { name, description, root: root.public(), steps: Vec::new() }
    }

    fn step(mut self, description: &str, action: Action, intent: Intent) -> Self {
        self.steps.push(Step { description: description.into(), action, intent });
        self
    }

    /// A directory accepted at `now_ms`, leaving the verifier at `root` and `version`.
    fn accept(self, description: &str, d: &pb::SignedDirectory, now_ms: i64, root: &OriginKey, version: u64) -> Self {
        self.step(description, Action::Accept(d.clone(), now_ms), Intent::Accepted(Some((root.public(), version))))
    }

    fn reject(
        self,
        description: &str,
        d: &pb::SignedDirectory,
        now_ms: i64,
        why: (Check, &'static str, &'static str),
    ) -> Self {
        self.step(description, Action::Accept(d.clone(), now_ms), Intent::Rejected(why.0, why.1, why.2))
    }

    fn update(self, description: &str, u: &pb::SignedUpdate, now_ms: i64) -> Self {
        self.step(description, Action::Update(u.clone(), now_ms), Intent::Accepted(None))
    }

    fn reject_update(
        self,
        description: &str,
        u: &pb::SignedUpdate,
        now_ms: i64,
        why: (Check, &'static str, &'static str),
    ) -> Self {
        self.step(description, Action::Update(u.clone(), now_ms), Intent::Rejected(why.0, why.1, why.2))
    }

    fn to_json(&self) -> Result<Value, Error> {
        let nm = chains::rid(chains::NM)?;
        let mut v = Verifier::new(TrustedKeys::root(self.root.clone()), Limits::default(), [nm.clone()]);
        let mut steps = Vec::new();
        for (i, s) in self.steps.iter().enumerate() {
            let at = format!("{} step {i}", self.name);
            let before = state_json(&v);
            let (outcome, now_ms) = match &s.action {
                Action::Accept(d, now) => (v.accept_directory(d, *now).map(drop), Some(*now)),
                Action::Restore(d) => (v.restore_directory(d).map(drop), None),
                Action::Update(u, now) => {
                    let r = v.verify(u, &[], *now);
                    if let Ok(a) = &r
                        && !a.is_committed()
                    {
                        return Err(disagrees(&at, format!("the update is pending: {:?}", a.waiting)));
                    }
                    (r.map(drop), Some(*now))
                }
            };
            let after = state_json(&v);
            let mut expect = match (outcome, &s.intent) {
                (Ok(()), Intent::Accepted(reached)) => {
                    if let Some((root, version)) = reached {
                        let got = (v.keys().trusted_root().map(PublicKey::id), v.key_list_version());
                        if got != (Some(root.id()), *version) {
                            return Err(disagrees(&at, format!("reached {got:?}, not ({}, {version})", root.id())));
                        }
                    }
                    json!({"result": "accepted"})
                }
                (Err(e), Intent::Rejected(check, error, section))
                    if e.check() == *check && error_name(&e) == *error =>
                {
                    if after != before {
                        return Err(disagrees(&at, format!("the rejection ({e}) changed the verifier's state")));
                    }
                    json!({"result": "rejected", "check": check.as_str(), "error": error, "section": section})
                }
                (got, _) => return Err(disagrees(&at, format!("the library gave {got:?}"))),
            };
            if let Value::Object(m) = &mut expect {
                m.insert("state".into(), after);
            }
            let mut step = json!({
                "description": s.description,
                "now_ms": now_ms,
                "expect": expect,
            });
            if let Value::Object(m) = &mut step {
                let (action, key, signed) = match &s.action {
                    Action::Accept(d, _) => ("accept_directory", "directory", directory_signed_json(d)),
                    Action::Restore(d) => ("restore_directory", "directory", directory_signed_json(d)),
                    Action::Update(u, _) => {
                        m.insert("chunks".into(), json!([]));
                        ("verify_update", "update", update_json(u, None))
                    }
                };
                m.insert("action".into(), action.into());
                m.insert(key.into(), signed);
            }
            steps.push(step);
        }
        Ok(json!({
            "name": self.name,
            "description": self.description,
            "trusted_root": {"key_id": self.root.id().as_str(), "public_key": hex::encode(self.root.raw())},
            "resources": [nm.as_str()],
            "steps": steps,
        }))
    }
}

/// The verifier's trust state (§9.3) and what it holds, in the vectors' form.
fn state_json(v: &Verifier) -> Value {
    let keys = v.keys();
    let mut update_keys: Vec<(String, Value)> = keys
        .iter()
        .map(|k| {
            let (from, until) = keys.window(k.id()).unwrap_or((0, 0));
            let id = k.id().to_string();
            (id.clone(), json!({"key_id": id, "not_before_ms": from, "not_after_ms": until}))
        })
        .collect();
    update_keys.sort_by(|a, b| a.0.cmp(&b.0));
    let mut held: Vec<(String, Value)> = v
        .resources()
        .filter_map(|(id, h)| {
            h.map(|h| {
                (
                    id.to_string(),
                    json!({
                        "resource_id": id.as_str(),
                        "seq": h.seq,
                        "tag": h.tag.to_hex(),
                        "issued_at_ms": h.issued_at_ms,
                        "expires_at_ms": h.expires_at_ms,
                    }),
                )
            })
        })
        .collect();
    held.sort_by(|a, b| a.0.cmp(&b.0));
    json!({
        "root": keys.trusted_root().map(|r| r.id().as_str()),
        "key_list_version": v.key_list_version(),
        "origin_id": v.origin_id(),
        "directory": v.directory().map(|d| json!({
            "seq": d.seq, "issued_at_ms": d.issued_at_ms, "expires_at_ms": d.expires_at_ms,
        })),
        "update_keys": update_keys.into_iter().map(|(_, k)| k).collect::<Vec<_>>(),
        "held": held.into_iter().map(|(_, h)| h).collect::<Vec<_>>(),
    })
}

/// An update key of a key list with its window (0 = unbounded).
fn uk(k: &OriginKey, not_before_ms: i64, not_after_ms: i64) -> UpdateKey {
    UpdateKey { key: k.public(), not_before_ms, not_after_ms }
}

/// The keys and fixtures every lifecycle is built from.
struct Fixture {
    r1: OriginKey,
    r2: OriginKey,
    r3: OriginKey,
    stranger: OriginKey,
    k1: OriginKey,
    k2: OriginKey,
    k3: OriginKey,
    /// The origin id: the key id of the first root (§9.2).
    origin: String,
    resources: Vec<pb::DirectoryResource>,
    /// The resources after a content change (a cost map added).
    more_resources: Vec<pb::DirectoryResource>,
    nm: crate::NetworkMap,
}

impl Fixture {
    fn new() -> Result<Self, Error> {
        use pb::{CostMode::*, ResourceKind::*};
        let r1 = OriginKey::from_seed(ROOT_SEED);
        let nm_entry = resource(chains::NM, NetworkMap, None, &[]);
        let cm_entry = resource(chains::CM, CostMap, Some(("routingcost", Numerical)), &[chains::NM]);
        Ok(Fixture {
            origin: r1.id().to_string(),
            r1,
            r2: OriginKey::from_seed(ROOT2_SEED),
            r3: OriginKey::from_seed(ROOT3_SEED),
            stranger: OriginKey::from_seed(STRANGER_ROOT_SEED),
            k1: OriginKey::from_seed(ORIGIN_SEED),
            k2: OriginKey::from_seed(SECOND_SEED),
            k3: OriginKey::from_seed(THIRD_SEED),
            resources: vec![nm_entry.clone()],
            more_resources: vec![nm_entry, cm_entry],
            nm: chains::network_map(&[
                ("PID1", &["192.0.2.0/24", "198.51.100.0/25"], &[]),
                ("PID2", &["198.51.100.128/25"], &[]),
                ("PID3", &["0.0.0.0/0"], &["::/0"]),
            ])?,
        })
    }

    /// Key list `version` of this origin under `root`, issued at `issued_at_ms`,
    /// expiring a year after T0.
    fn list(&self, version: u64, issued_at_ms: i64, root: &OriginKey, keys: Vec<UpdateKey>) -> KeyList {
        KeyList {
            origin_id: self.origin.clone(),
            version,
            issued_at_ms,
            expires_at_ms: T0_MS + YEAR_MS,
            root: root.public(),
            keys,
            revoked: Vec::new(),
        }
    }

    /// Key list 1: root r1, update key k1 (no window). Every lifecycle starts from it.
    fn list1(&self) -> pb::SignedKeyList {
        self.list(1, T0_MS, &self.r1, vec![uk(&self.k1, 0, 0)]).sign(&[&self.r1])
    }

    /// A directory of this origin: seq, issued at `issued_at_ms`, expiring a
    /// TTL later, listing `signing` as the update keys, carrying `chain`.
    fn dir(&self, seq: u64, issued_at_ms: i64, signing: &[&OriginKey], chain: Option<pb::KeyChain>) -> pb::Directory {
        pb::Directory {
            origin_id: self.origin.clone(),
            issued_at_ms,
            resources: self.resources.clone(),
            keys: signing.iter().map(|k| key_entry(k)).collect(),
            rproxies: Vec::new(),
            seq,
            expires_at_ms: issued_at_ms + TTL_MS,
            key_chain: chain,
        }
    }

    /// The first directory (seq 1, T0, key list 1, signed by k1).
    fn d1(&self) -> pb::SignedDirectory {
        sign(&[&self.k1], &self.dir(1, T0_MS, &[&self.k1], Some(chain(&[], &self.list1()))))
    }

    /// A snapshot of the network map at `seq`, issued at `issued_at_ms` by `keys` for origin `origin`.
    fn update(
        &self,
        origin: &str,
        keys: &[&OriginKey],
        seq: u64,
        issued_at_ms: i64,
    ) -> Result<pb::SignedUpdate, Error> {
        let signer = Signer::with_keys(origin.into(), keys.iter().map(|k| (*k).clone()).collect(), TTL_MS)
            .ok_or_else(|| disagrees("lifecycles", "a signer needs a key"))?;
        Ok(signer.snapshot(&chains::rid(chains::NM)?, &chains::nm_version(seq, &self.nm), issued_at_ms).update)
    }
}

fn chain(history: &[&pb::SignedKeyList], current: &pb::SignedKeyList) -> pb::KeyChain {
    pb::KeyChain { root_history: history.iter().map(|s| (*s).clone()).collect(), current: Some(current.clone()) }
}

fn sign(keys: &[&OriginKey], d: &pb::Directory) -> pb::SignedDirectory {
    sign_directory(&keys.iter().map(|k| (*k).clone()).collect::<Vec<_>>(), d)
}

/// `d` re-signed at `issued_at_ms` (a directory heartbeat: same seq, same content).
fn at(d: &pb::Directory, issued_at_ms: i64) -> pb::Directory {
    pb::Directory { issued_at_ms, expires_at_ms: issued_at_ms + TTL_MS, ..d.clone() }
}

fn decoded(s: &pb::SignedDirectory) -> Result<pb::Directory, Error> {
    pb::Directory::decode(s.body.clone()).map_err(|e| disagrees("lifecycles", e.to_string()))
}

const SIG_UNKNOWN: (Check, &str, &str) = (Check::Signature, "Signature(UnknownKey)", "§9.3");
const SIG_WINDOW: (Check, &str, &str) = (Check::Signature, "Signature(OutsideWindow)", "§9.3");
const ORIGIN: (Check, &str, &str) = (Check::Trust, "Origin", "§9.3");

fn lifecycles() -> Result<Vec<Lifecycle>, Error> {
    let f = Fixture::new()?;
    let (r1, r2, r3, k1, k2, k3) = (&f.r1, &f.r2, &f.r3, &f.k1, &f.k2, &f.k3);
    let t = T0_MS;
    let origin = f.origin.as_str();
    let d1 = f.d1();
    let d1_body = decoded(&d1)?;
    let mut out = Vec::new();

    // ---- accepted

    out.push(
        Lifecycle::new(
            "root-first-directory",
            "A verifier trusting only a root key accepts a first directory whose key chain is key list 1 (one update key) signed by that root, then an update signed by that key (PROTOCOL.md §9.3).",
            r1,
        )
        .accept("The first directory: seq 1, key list 1 (root r1, update key k1), signed by k1.", &d1, t, r1, 1)
        .update("A network-map snapshot signed by k1.", &f.update(origin, &[k1], 1, t + 1_000)?, t + 1_000),
    );

    let d2_content = pb::Directory {
        resources: f.more_resources.clone(),
        ..f.dir(2, t + 40_000, &[k1], Some(chain(&[], &f.list1())))
    };
    out.push(
        Lifecycle::new(
            "directory-heartbeat-and-content-change",
            "A directory heartbeat (the same seq re-signed later) and a content change (seq + 1) are accepted and move the directory position (PROTOCOL.md §9.2, §9.3).",
            r1,
        )
        .accept("The first directory, seq 1 issued at T0.", &d1, t, r1, 1)
        .accept("Its heartbeat: seq 1 issued at T0 + 20 s.", &sign(&[k1], &at(&d1_body, t + 20_000)), t + 20_000, r1, 1)
        .accept(
            "A content change (a cost map added): seq 2 issued at T0 + 40 s.",
            &sign(&[k1], &d2_content),
            t + 40_000,
            r1,
            1,
        ),
    );

    let list2_both = f.list(2, t + 20_000, r1, vec![uk(k1, 0, 0), uk(k2, 0, 0)]).sign(&[r1]);
    let list3_k2 = f.list(3, t + 40_000, r1, vec![uk(k2, 0, 0)]).sign(&[r1]);
    out.push(
        Lifecycle::new(
            "update-key-rotation",
            "An update-key rotation: key list 2 adds k2 and the directory is signed by k1 and k2; key list 3 drops k1 and the directory is signed by k2 alone; updates follow the keys of the list accepted (PROTOCOL.md §9.2, §9.3, §5.3).",
            r1,
        )
        .accept("The first directory (key list 1: k1).", &d1, t, r1, 1)
        .accept(
            "Key list 2 (k1 and k2), the directory signed by both update keys.",
            &sign(&[k1, k2], &f.dir(2, t + 20_000, &[k1, k2], Some(chain(&[], &list2_both)))),
            t + 20_000,
            r1,
            2,
        )
        .update("An update signed by k1 and k2.", &f.update(origin, &[k1, k2], 1, t + 21_000)?, t + 21_000)
        .accept(
            "Key list 3 (k2 only), the directory signed by k2.",
            &sign(&[k2], &f.dir(3, t + 40_000, &[k2], Some(chain(&[], &list3_k2)))),
            t + 40_000,
            r1,
            3,
        )
        .update("An update signed by k2 alone.", &f.update(origin, &[k2], 2, t + 41_000)?, t + 41_000)
        .reject_update(
            "An update signed by k1 alone, which key list 3 no longer names.",
            &f.update(origin, &[k1], 3, t + 42_000)?,
            t + 42_000,
            SIG_UNKNOWN,
        ),
    );

    let retire = t + 60_000;
    let list2_retire = f.list(2, t + 50_000, r1, vec![uk(k1, 0, retire), uk(k2, t + 50_000, 0)]).sign(&[r1]);
    let d2_retire = f.dir(2, t + 50_000, &[k1, k2], Some(chain(&[], &list2_retire)));
    out.push(
        Lifecycle::new(
            "retired-key-window",
            "Key list 2 retires k1 (not_after_ms = T0 + 60 s) and adds k2: what k1 signed up to and at not_after_ms verifies, what it signed after is outside its window, for updates and for the directory (PROTOCOL.md §9.2, §9.3).",
            r1,
        )
        .accept("The first directory (key list 1: k1 without a window).", &d1, t, r1, 1)
        .accept(
            "Key list 2: k1 until T0 + 60 s, k2 from T0 + 50 s; the directory signed by both.",
            &sign(&[k1, k2], &d2_retire),
            t + 50_000,
            r1,
            2,
        )
        .update(
            "An update by k1 issued at T0 + 59 s, before its not_after_ms.",
            &f.update(origin, &[k1], 1, t + 59_000)?,
            t + 59_000,
        )
        .update(
            "An update by k1 issued at its not_after_ms exactly (the window is inclusive).",
            &f.update(origin, &[k1], 2, retire)?,
            retire,
        )
        .reject_update(
            "An update by k1 issued 1 ms after its not_after_ms.",
            &f.update(origin, &[k1], 3, retire + 1)?,
            retire + 1,
            SIG_WINDOW,
        )
        .update("The same seq signed by k2 at the same time.", &f.update(origin, &[k2], 3, retire + 1)?, retire + 1)
        .reject(
            "A directory heartbeat signed by the retired k1 alone, issued after its not_after_ms.",
            &sign(&[k1], &at(&d2_retire, retire + 1_000)),
            retire + 1_000,
            SIG_WINDOW,
        )
        .accept(
            "The same heartbeat signed by k2.",
            &sign(&[k2], &at(&d2_retire, retire + 1_000)),
            retire + 1_000,
            r1,
            2,
        ),
    );

    // Root rotations: r1 → r2 (list 2), r2 → r3 (list 4).
    let rot2 = f.list(2, t + DAY_MS, r2, vec![uk(k1, 0, 0)]).sign(&[r1, r2]);
    let list3_r2 = f.list(3, t + DAY_MS + 1_000, r2, vec![uk(k1, 0, 0), uk(k2, 0, 0)]).sign(&[r2]);
    let rot4 = f.list(4, t + 2 * DAY_MS, r3, vec![uk(k1, 0, 0), uk(k2, 0, 0)]).sign(&[r2, r3]);
    let list5_r3 =
        KeyList { revoked: vec![k1.id().to_string()], ..f.list(5, t + 3 * DAY_MS, r3, vec![uk(k2, 0, 0)]) }.sign(&[r3]);
    let d_rot2 = sign(&[k1], &f.dir(2, t + DAY_MS, &[k1], Some(chain(&[&rot2], &rot2))));
    let d_list3 = sign(&[k1, k2], &f.dir(3, t + DAY_MS + 1_000, &[k1, k2], Some(chain(&[&rot2], &list3_r2))));
    let back_to_r1 = f.list(4, t + DAY_MS + 2_000, r1, vec![uk(k1, 0, 0)]).sign(&[r1]);
    let later = t + 3 * DAY_MS;
    let d_twice = sign(&[k2], &f.dir(5, later, &[k2], Some(chain(&[&rot2, &rot4], &list5_r3))));
    out.push(
        Lifecycle::new(
            "root-rotation",
            "A root rotation: key list 2 names root r2 and is signed by r1 and r2 (root_history); a verifier trusting r1 walks to r2, then takes key lists signed by r2 alone, walks from r2 from then on and refuses lists signed by r1 (PROTOCOL.md §9.2, §9.3).",
            r1,
        )
        .accept("The first directory under r1.", &d1, t, r1, 1)
        .accept(
            "Key list 2 changes the root to r2, signed by r1 and r2; it is both the root_history entry and the current list.",
            &d_rot2,
            t + DAY_MS,
            r2,
            2,
        )
        .update(
            "An update signed by k1 under r2's key list.",
            &f.update(origin, &[k1], 1, t + DAY_MS + 500)?,
            t + DAY_MS + 500,
        )
        .accept(
            "Key list 3, signed by r2 alone, adds k2; root_history still holds the rotation.",
            &d_list3,
            t + DAY_MS + 1_000,
            r2,
            3,
        )
        .reject(
            "Key list 4 naming r1 again, signed by r1 alone: the old root no longer signs for this verifier.",
            &sign(&[k1], &f.dir(4, t + DAY_MS + 2_000, &[k1], Some(chain(&[&rot2], &back_to_r1)))),
            t + DAY_MS + 2_000,
            (Check::Trust, "Trust(UnknownRoot)", "§9.3"),
        )
        .accept(
            "Key list 3 with an empty root_history: the walk starts at the root reached (r2), not at the root first trusted.",
            &sign(&[k1, k2], &f.dir(5, t + DAY_MS + 3_000, &[k1, k2], Some(chain(&[], &list3_r2)))),
            t + DAY_MS + 3_000,
            r2,
            3,
        ),
    );
    out.push(
        Lifecycle::new(
            "two-root-rotations-offline",
            "A client that accepted a directory under r1 and was offline through two root rotations (r1 → r2 at list 2, r2 → r3 at list 4) walks both from r1 to r3 and takes key list 5, which revokes k1 (PROTOCOL.md §9.2, §9.3).",
            r1,
        )
        .accept("The first directory under r1.", &d1, t, r1, 1)
        .accept(
            "Three days later: root_history [list 2 (r1+r2), list 4 (r2+r3)], current list 5 (r3, k2, k1 revoked).",
            &d_twice,
            later,
            r3,
            5,
        )
        .update("An update signed by k2.", &f.update(origin, &[k2], 1, later + 1_000)?, later + 1_000)
        .reject_update(
            "An update signed by the revoked k1.",
            &f.update(origin, &[k1], 2, later + 2_000)?,
            later + 2_000,
            SIG_UNKNOWN,
        ),
    );
    out.push(
        Lifecycle::new(
            "two-root-rotations-first-contact",
            "A verifier trusting r1 whose first directory already carries two root rotations walks from r1 to r3 (PROTOCOL.md §9.3).",
            r1,
        )
        .accept("root_history [list 2 (r1+r2), list 4 (r2+r3)], current list 5 under r3.", &d_twice, later, r3, 5),
    );
    out.push(
        Lifecycle::new(
            "root-history-before-the-trusted-root",
            "A verifier trusting r2 skips the rotation to r2 (to the root it already trusts) and follows the one to r3 (PROTOCOL.md §9.3).",
            r2,
        )
        .accept("The same directory: root_history [list 2, list 4], current list 5.", &d_twice, later, r3, 5),
    );

    // ---- rejected

    out.push(
        Lifecycle::new(
            "no-key-chain-under-root",
            "A directory without a key chain is refused by a verifier trusting a root, even signed by a key that a later chain names (PROTOCOL.md §9.3).",
            r1,
        )
        .reject(
            "Seq 1 signed by k1, no key_chain.",
            &sign(&[k1], &f.dir(1, t, &[k1], None)),
            t,
            (Check::Trust, "Trust(NoKeyChain)", "§9.3"),
        )
        .accept("The same directory with its key chain.", &d1, t, r1, 1),
    );

    let stranger_list = f.list(2, t + 20_000, &f.stranger, vec![uk(k1, 0, 0)]).sign(&[&f.stranger]);
    out.push(
        Lifecycle::new(
            "current-list-unknown-root",
            "A current key list signed by a root the chain does not lead to (another root, no rotation to it) is refused and nothing changes (PROTOCOL.md §9.3).",
            r1,
        )
        .accept("The first directory under r1.", &d1, t, r1, 1)
        .reject(
            "Seq 2 whose current list 2 names and is signed by another root.",
            &sign(&[k1], &f.dir(2, t + 20_000, &[k1], Some(chain(&[], &stranger_list)))),
            t + 20_000,
            (Check::Trust, "Trust(UnknownRoot)", "§9.3"),
        ),
    );

    let by_stranger = f.list(2, t + 20_000, r1, vec![uk(k1, 0, 0)]).sign(&[&f.stranger]);
    let mut tampered = f.list(2, t + 20_000, r1, vec![uk(k1, 0, 0)]).sign(&[r1]);
    tampered.body = Bytes::from(f.list(2, t + 20_000, r1, vec![uk(k1, 0, 0), uk(k3, 0, 0)]).to_pb().encode_to_vec());
    out.push(
        Lifecycle::new(
            "current-list-not-signed-by-its-root",
            "A current key list naming the trusted root but not validly signed by it (signed by another root; or its body changed after signing) is refused (PROTOCOL.md §9.3).",
            r1,
        )
        .accept("The first directory under r1.", &d1, t, r1, 1)
        .reject(
            "Seq 2 whose current list 2 names r1 but is signed by another root.",
            &sign(&[k1], &f.dir(2, t + 20_000, &[k1], Some(chain(&[], &by_stranger)))),
            t + 20_000,
            (Check::Trust, "Trust(RootSignature)", "§9.3"),
        )
        .reject(
            "Seq 2 whose current list 2 is r1's signature over a list without k3, with k3 added to the body.",
            &sign(&[k1], &f.dir(2, t + 20_000, &[k1], Some(chain(&[], &tampered)))),
            t + 20_000,
            (Check::Trust, "Trust(RootSignature)", "§9.3"),
        ),
    );

    let new_only = f.list(2, t + DAY_MS, r2, vec![uk(k1, 0, 0)]).sign(&[r2]);
    out.push(
        Lifecycle::new(
            "root-rotation-signed-by-new-root-only",
            "A rotation to r2 signed by r2 alone is not followed (the trusted root r1 did not sign it), so the current list under r2 is under an unknown root; the genuine rotation is then accepted (PROTOCOL.md §9.2, §9.3).",
            r1,
        )
        .accept("The first directory under r1.", &d1, t, r1, 1)
        .reject(
            "root_history [list 2 signed by r2 only], current the same list.",
            &sign(&[k1], &f.dir(2, t + DAY_MS, &[k1], Some(chain(&[&new_only], &new_only)))),
            t + DAY_MS,
            (Check::Trust, "Trust(UnknownRoot)", "§9.3"),
        )
        .accept("The rotation signed by r1 and r2.", &d_rot2, t + DAY_MS, r2, 2),
    );

    let old_only = f.list(2, t + DAY_MS, r2, vec![uk(k1, 0, 0)]).sign(&[r1]);
    out.push(
        Lifecycle::new(
            "root-rotation-signed-by-old-root-only",
            "A rotation to r2 signed by the old root r1 but not by r2 is refused, even when the current list is validly signed by r2: a new root must sign the list that introduces it (PROTOCOL.md §9.2, §9.3).",
            r1,
        )
        .accept("The first directory under r1.", &d1, t, r1, 1)
        .reject(
            "root_history [list 2 naming r2, signed by r1 only], current list 3 signed by r2.",
            &sign(&[k1], &f.dir(2, t + DAY_MS + 1_000, &[k1], Some(chain(&[&old_only], &list3_r2)))),
            t + DAY_MS + 1_000,
            (Check::Trust, "Trust(RootSignature)", "§9.3"),
        )
        .accept("The rotation signed by r1 and r2.", &d_rot2, t + DAY_MS, r2, 2),
    );

    out.push(
        Lifecycle::new(
            "key-list-rollback",
            "After key list 2 was accepted, a newer directory (higher seq) carrying key list 1 is a key-list rollback (PROTOCOL.md §9.3).",
            r1,
        )
        .accept("The first directory (key list 1).", &d1, t, r1, 1)
        .accept(
            "Seq 2 with key list 2 (k1 and k2).",
            &sign(&[k1, k2], &f.dir(2, t + 20_000, &[k1, k2], Some(chain(&[], &list2_both)))),
            t + 20_000,
            r1,
            2,
        )
        .reject(
            "Seq 3 with key list 1 again.",
            &sign(&[k1], &f.dir(3, t + 40_000, &[k1], Some(chain(&[], &f.list1())))),
            t + 40_000,
            (Check::Trust, "Trust(Rollback)", "§9.3"),
        ),
    );

    let list_expires = t + 100_000;
    let short = KeyList { expires_at_ms: list_expires, ..f.list(1, t, r1, vec![uk(k1, 0, 0)]) }.sign(&[r1]);
    let d_short = f.dir(1, t, &[k1], Some(chain(&[], &short)));
    out.push(
        Lifecycle::new(
            "key-list-expired",
            "Key list 1 expires at T0 + 100 s: a directory carrying it is accepted until its expiry plus the 5 s skew and refused 1 ms later (PROTOCOL.md §9.3, §11).",
            r1,
        )
        .accept("Seq 1 at T0.", &sign(&[k1], &d_short), t, r1, 1)
        .accept(
            "Its heartbeat at the key list's expiry + 5000 ms.",
            &sign(&[k1], &at(&d_short, list_expires + 5_000)),
            list_expires + 5_000,
            r1,
            1,
        )
        .reject(
            "Its heartbeat at the key list's expiry + 5001 ms.",
            &sign(&[k1], &at(&d_short, list_expires + 5_001)),
            list_expires + 5_001,
            (Check::Trust, "Trust(Expired)", "§9.3"),
        ),
    );

    out.push(
        Lifecycle::new(
            "directory-origin-differs-from-key-list",
            "A directory whose origin_id is not its key list's is refused (PROTOCOL.md §9.3).",
            r1,
        )
        .reject(
            "Seq 1, key list 1, origin_id of another origin (the stranger root's key id).",
            &sign(&[k1], &pb::Directory { origin_id: f.stranger.id().to_string(), ..d1_body.clone() }),
            t,
            ORIGIN,
        )
        .accept("The same directory with the key list's origin_id.", &d1, t, r1, 1),
    );

    let other_origin =
        KeyList { origin_id: f.stranger.id().to_string(), ..f.list(2, t + 20_000, r1, vec![uk(k1, 0, 0)]) }.sign(&[r1]);
    let d2_other = f.dir(2, t + 20_000, &[k1], Some(chain(&[], &other_origin)));
    out.push(
        Lifecycle::new(
            "key-list-origin-changes",
            "After a directory of one origin was accepted, a directory and key list agreeing on another origin id, under the same root, is refused (PROTOCOL.md §9.3).",
            r1,
        )
        .accept("The first directory.", &d1, t, r1, 1)
        .reject(
            "Seq 2, key list 2 and the directory both with another origin_id.",
            &sign(&[k1], &pb::Directory { origin_id: f.stranger.id().to_string(), ..d2_other }),
            t + 20_000,
            ORIGIN,
        ),
    );

    let d2_body = f.dir(2, t + 20_000, &[k1], Some(chain(&[], &f.list1())));
    out.push(
        Lifecycle::new(
            "directory-older-is-ignored",
            "After seq 2, seq 1 is ignored (the state stays at seq 2); after a heartbeat of seq 2, the earlier signing of seq 2 is ignored too; the directory accepted last may come again (PROTOCOL.md §9.3, §9.4).",
            r1,
        )
        .accept("Seq 1 at T0.", &d1, t, r1, 1)
        .accept("Seq 2 at T0 + 20 s.", &sign(&[k1], &d2_body), t + 20_000, r1, 1)
        .accept("Seq 1 again (not expired yet): ignored, the position stays at seq 2.", &d1, t + 20_000, r1, 1)
        .accept(
            "Seq 2 re-signed at T0 + 40 s (a heartbeat).",
            &sign(&[k1], &at(&d2_body, t + 40_000)),
            t + 40_000,
            r1,
            1,
        )
        .accept(
            "Seq 2 as signed at T0 + 20 s (not expired yet): ignored, the position stays at T0 + 40 s.",
            &sign(&[k1], &d2_body),
            t + 40_000,
            r1,
            1,
        )
        .accept("The heartbeat of T0 + 40 s again.", &sign(&[k1], &at(&d2_body, t + 40_000)), t + 45_000, r1, 1),
    );

    let d1_expires = t + TTL_MS;
    out.push(
        Lifecycle::new(
            "directory-expired-skew-edge",
            "A directory expiring at T0 + 60 s is accepted by a verifier holding none at its expiry + 5000 ms (PROTOCOL.md §9.3, §11).",
            r1,
        )
        .accept("Seq 1 at its expiry + 5000 ms.", &d1, d1_expires + 5_000, r1, 1),
    );
    out.push(
        Lifecycle::new(
            "directory-expired",
            "The same directory is refused by a verifier holding none at its expiry + 5001 ms (PROTOCOL.md §9.3, §11).",
            r1,
        )
        .reject(
            "Seq 1 at its expiry + 5001 ms.",
            &d1,
            d1_expires + 5_001,
            (Check::Expiry, "DirectoryExpired", "§9.3"),
        ),
    );

    // k1 is revoked but still in `keys`: the verifier drops it (§9.3), though an origin would not list it (§9.2).
    let list2_revoke =
        KeyList { revoked: vec![k1.id().to_string()], ..f.list(2, t + 20_000, r1, vec![uk(k1, 0, 0), uk(k2, 0, 0)]) }
            .sign(&[r1]);
    let d2_revoke = f.dir(2, t + 20_000, &[k2], Some(chain(&[], &list2_revoke)));
    out.push(
        Lifecycle::new(
            "directory-signed-by-revoked-key",
            "Key list 2 revokes k1 and, as no origin should, still lists it among its keys: a directory carrying it signed by k1 alone is refused, signed by k2 accepted, and k1 is not an update key (PROTOCOL.md §9.2, §9.3).",
            r1,
        )
        .accept("The first directory (key list 1: k1).", &d1, t, r1, 1)
        .reject(
            "Seq 2 with key list 2 (keys k1 and k2; k1 revoked), signed by k1 alone.",
            &sign(&[k1], &d2_revoke),
            t + 20_000,
            SIG_UNKNOWN,
        )
        .accept("The same directory signed by k2.", &sign(&[k2], &d2_revoke), t + 20_000, r1, 2),
    );

    let k3_from = t + 30_000;
    let list2_updates = KeyList {
        revoked: vec![k1.id().to_string()],
        ..f.list(2, t + 20_000, r1, vec![uk(k1, 0, 0), uk(k2, 0, 0), uk(k3, k3_from, 0)])
    }
    .sign(&[r1]);
    out.push(
        Lifecycle::new(
            "updates-under-the-key-list",
            "After key list 2 (keys k1, k2, and k3 from T0 + 30 s; k1 revoked but still listed) is accepted, updates are checked with its keys not revoked, their windows and its origin id (PROTOCOL.md §9.3).",
            r1,
        )
        .accept("The first directory (key list 1: k1).", &d1, t, r1, 1)
        .accept(
            "Seq 2 with key list 2, signed by k2.",
            &sign(&[k2], &f.dir(2, t + 20_000, &[k2], Some(chain(&[], &list2_updates)))),
            t + 20_000,
            r1,
            2,
        )
        .update("An update signed by k2.", &f.update(origin, &[k2], 1, t + 21_000)?, t + 21_000)
        .reject_update(
            "An update signed by the revoked k1 alone.",
            &f.update(origin, &[k1], 2, t + 22_000)?,
            t + 22_000,
            SIG_UNKNOWN,
        )
        .reject_update(
            "An update signed by k2 carrying another origin_id.",
            &f.update(&f.stranger.id().to_string(), &[k2], 2, t + 23_000)?,
            t + 23_000,
            ORIGIN,
        )
        .reject_update(
            "An update signed by k3 alone, issued before its not_before_ms.",
            &f.update(origin, &[k3], 2, k3_from - 1)?,
            k3_from - 1,
            SIG_WINDOW,
        )
        .update("An update signed by k3 issued at its not_before_ms.", &f.update(origin, &[k3], 2, k3_from)?, k3_from),
    );

    let saved = KeyList { expires_at_ms: t + 100_000, ..f.list(1, t, r1, vec![uk(k1, 0, 0)]) }.sign(&[r1]);
    let saved_dir = sign(&[k1], &f.dir(2, t + 20_000, &[k1], Some(chain(&[], &saved))));
    let list2_restart = f.list(2, t + 190_000, r1, vec![uk(k1, 0, 0)]).sign(&[r1]);
    let restart = t + 200_000;
    out.push(
        Lifecycle::new(
            "restore-expired-directory",
            "A client restarting restores its saved directory (seq 2, expired, with an expired key list): restoring checks everything but expiry and sets the position later directories must not go below (PROTOCOL.md §9.3).",
            r1,
        )
        .step(
            "restore_directory of the saved directory: seq 2 issued at T0 + 20 s, expired at T0 + 80 s, key list 1 expired at T0 + 100 s.",
            Action::Restore(saved_dir.clone()),
            Intent::Accepted(Some((r1.public(), 1))),
        )
        .accept(
            "The same directory given to accept_directory at T0 + 200 s: not newer than the restored one, so ignored (the held directory is then stale, §9.3).",
            &saved_dir,
            restart,
            r1,
            1,
        )
        .accept(
            "Seq 1 issued at T0 + 190 s with a fresh key list 2: older than the restored seq 2, so ignored.",
            &sign(&[k1], &f.dir(1, t + 190_000, &[k1], Some(chain(&[], &list2_restart)))),
            restart,
            r1,
            1,
        )
        .accept(
            "Seq 3 issued at T0 + 200 s with key list 2.",
            &sign(&[k1], &f.dir(3, restart, &[k1], Some(chain(&[], &list2_restart)))),
            restart,
            r1,
            2,
        ),
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An older directory is ignored, and what a node saves or relays
    /// (`signed_directory`) stays the newer one it holds: an RProxy never
    /// serves, and a state file never keeps, the directory it ignored.
    #[test]
    fn an_ignored_older_directory_is_not_what_is_held() {
        let f = Fixture::new().expect("fixture");
        let d1 = f.d1();
        let d2 = sign(&[&f.k1], &f.dir(2, T0_MS + 1_000, &[&f.k1], Some(chain(&[], &f.list1()))));
        let mut v = Verifier::new(TrustedKeys::root(f.r1.public()), Limits::default(), []);
        v.accept_directory(&d2, T0_MS + 2_000).expect("seq 2");
        let held = v.accept_directory(&d1, T0_MS + 2_000).expect("an older directory is not an error");
        assert_eq!(held.seq, 2, "the held content is returned");
        assert_eq!(v.signed_directory(), Some(&d2), "the held signed bytes, not the ignored ones");
    }
}
