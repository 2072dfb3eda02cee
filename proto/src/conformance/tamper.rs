//! `tamper.json`: a valid prefix of a chain, then one mutated update (or
//! mutated chunks), and the check that must reject it (§5, §7, §8).

use serde_json::{Value, json};

use super::{
    Error, Fill, Group, T0_MS,
    chains::{
        self, CHUNKED_CHAIN, COST_CHAIN, Chain, Fixture, NETWORK_CHAIN, ORDINAL_CHAIN, cm_version, nm_version, resign,
    },
    chunks_json, disagrees, error_name, file,
    keys::malleate,
    update_json,
};
use crate::{
    Check, Verifier,
    keys::{DIRECTORY_CONTEXT, UPDATE_CONTEXT},
    pb,
    wire::update::Dependency,
};

struct Tamper {
    name: &'static str,
    description: &'static str,
    mutation: &'static str,
    chain: &'static str,
    steps: usize,
    update: pb::SignedUpdate,
    chunks: Vec<pb::SnapshotChunk>,
    fill: Option<Fill>,
    check: Check,
    error: &'static str,
    section: &'static str,
}

/// What a rejection must leave untouched: every resource's held and pending
/// (seq, tag, issue and expiry times).
/// Seq, tag, issue and expiry time of a held or pending version.
type Brief = Option<(u64, String, i64, i64)>;

fn fingerprint(v: &Verifier) -> Vec<(String, Brief, Brief)> {
    let brief = |h: &crate::Held| (h.seq, h.tag.to_hex(), h.issued_at_ms, h.expires_at_ms);
    let mut out: Vec<_> =
        v.resources().map(|(id, h)| (id.to_string(), h.map(brief), v.pending(id.as_str()).map(brief))).collect();
    out.sort();
    out
}

impl Tamper {
    fn to_json(&self, chains: &[Chain]) -> Result<Value, Error> {
        let chain = find(chains, self.chain)?;
        let (mut v, _) = chain.replay(self.steps)?;
        let before = fingerprint(&v);
        let err = match v.verify(&self.update, &self.chunks, chain.now_ms) {
            Ok(a) => return Err(disagrees(self.name, format!("accepted: {a:?}"))),
            Err(e) => e,
        };
        if err.check() != self.check || error_name(&err) != self.error {
            return Err(disagrees(
                self.name,
                format!(
                    "meant {} {}, rejected as {} {}: {err}",
                    self.check.as_str(),
                    self.error,
                    err.check().as_str(),
                    error_name(&err)
                ),
            ));
        }
        if fingerprint(&v) != before {
            return Err(disagrees(self.name, "a rejection changed the verifier's state"));
        }
        Ok(json!({
            "name": self.name,
            "description": self.description,
            "mutation": self.mutation,
            "base": {"chain": self.chain, "steps": self.steps},
            "now_ms": chain.now_ms,
            "update": update_json(&self.update, self.fill),
            "chunks": chunks_json(&self.chunks),
            "expect": {"result": "rejected", "check": self.check.as_str(), "error": self.error, "section": self.section},
        }))
    }
}

fn find<'a>(chains: &'a [Chain], name: &str) -> Result<&'a Chain, Error> {
    chains.iter().find(|c| c.name == name).ok_or_else(|| disagrees(name, "no such chain"))
}

fn step<'a>(chains: &'a [Chain], name: &str, i: usize) -> Result<&'a chains::Step, Error> {
    find(chains, name)?.steps.get(i).ok_or_else(|| disagrees(name, format!("no step {i}")))
}

fn network_diff(u: &mut pb::Update) -> Option<&mut pb::NetworkMapDiff> {
    match &mut u.payload {
        Some(pb::update::Payload::Diff(pb::Diff { map: Some(pb::diff::Map::NetworkMap(d)) })) => Some(d),
        _ => None,
    }
}

fn cost_diff(u: &mut pb::Update) -> Option<&mut pb::CostMapDiff> {
    match &mut u.payload {
        Some(pb::update::Payload::Diff(pb::Diff { map: Some(pb::diff::Map::CostMap(d)) })) => Some(d),
        _ => None,
    }
}

fn network_snapshot(u: &mut pb::Update) -> Option<&mut pb::NetworkMapState> {
    match &mut u.payload {
        Some(pb::update::Payload::Snapshot(pb::Snapshot { map: Some(pb::snapshot::Map::NetworkMap(s)) })) => Some(s),
        _ => None,
    }
}

fn cost_snapshot(u: &mut pb::Update) -> Option<&mut pb::CostMapState> {
    match &mut u.payload {
        Some(pb::update::Payload::Snapshot(pb::Snapshot { map: Some(pb::snapshot::Map::CostMap(s)) })) => Some(s),
        _ => None,
    }
}

fn row_diff(src: u32, set_dst: &[u32], set_cost: &[f64], removed_dst: &[u32]) -> pb::CostRowDiff {
    pb::CostRowDiff { src, set_dst: set_dst.to_vec(), set_cost: set_cost.to_vec(), removed_dst: removed_dst.to_vec() }
}

fn with_sigs(u: &pb::SignedUpdate, signatures: Vec<pb::Signature>) -> pb::SignedUpdate {
    pb::SignedUpdate { body: u.body.clone(), signatures }
}

pub(super) fn build() -> Result<Value, Error> {
    let chains = chains::all()?;
    let f = Fixture::new()?;
    let key = &f.origin;
    let s = &f.signer;
    let nm_diff = &step(&chains, NETWORK_CHAIN, 1)?.update;
    let nm_snap = &step(&chains, NETWORK_CHAIN, 0)?.update;
    let nm_hb = &step(&chains, NETWORK_CHAIN, 2)?.update;
    let cm_snap = &step(&chains, COST_CHAIN, 1)?.update;
    let cm_diff = &step(&chains, COST_CHAIN, 2)?.update;
    let chunked = step(&chains, CHUNKED_CHAIN, 0)?;
    let ord_diff = &step(&chains, ORDINAL_CHAIN, 2)?.update;
    let good = |name, description, mutation, chain, steps, update, check, error, section| Tamper {
        name,
        description,
        mutation,
        chain,
        steps,
        update,
        chunks: vec![],
        fill: None,
        check,
        error,
        section,
    };
    let sig = |k: &crate::OriginKey, body: &[u8]| k.sign(UPDATE_CONTEXT, body);

    let mut flipped = nm_diff.clone();
    let mut body = flipped.body.to_vec();
    let mid = body.len() / 2;
    body[mid] ^= 0x01;
    flipped.body = body.into();
    let mut bad_sig = nm_diff.signatures[0].clone();
    let mut b = bad_sig.sig.to_vec();
    b[10] ^= 0x01;
    bad_sig.sig = b.into();
    let mut malleated = nm_diff.signatures[0].clone();
    malleated.sig = malleate(&malleated.sig).into();
    let mut short = nm_diff.signatures[0].clone();
    short.sig = short.sig.slice(..63);
    let mut upper = nm_diff.signatures[0].clone();
    upper.key_id = upper.key_id.to_uppercase();

    let over = Fill { byte: 0, len: (16 << 20) + 1 };
    let at = Fill { byte: 0, len: 16 << 20 };
    let filled = |fill: Fill| {
        let body = fill.bytes();
        pb::SignedUpdate { signatures: vec![key.sign(UPDATE_CONTEXT, &body)], body }
    };

    let bound_b = f.cm_a4(&f.nm_b)?;
    let nm_b_dep = Dependency { resource_id: f.nm.clone(), seq: 2, tag: f.nm_b.tag() };

    let mut t = vec![
        // §5: signatures.
        good(
            "flipped-body-byte",
            "One body byte flipped: the signature no longer verifies (PROTOCOL.md §5.3, §8.4 O2).",
            "the network-map diff of the base chain's step 1 with its middle body byte XORed with 0x01, signature unchanged",
            NETWORK_CHAIN,
            1,
            flipped,
            Check::Signature,
            "Signature(Invalid)",
            "§5.3",
        ),
        good(
            "flipped-signature-bit",
            "One signature bit flipped (PROTOCOL.md §5.2).",
            "the network-map diff of step 1 with bit 0 of signature byte 10 flipped",
            NETWORK_CHAIN,
            1,
            with_sigs(nm_diff, vec![bad_sig.clone()]),
            Check::Signature,
            "Signature(Invalid)",
            "§5.2",
        ),
        good(
            "malleated-signature-s-plus-l",
            "The valid signature with the group order added to S: strict verification rejects S ≥ L (PROTOCOL.md §5.2).",
            "the network-map diff of step 1 with S replaced by S + L",
            NETWORK_CHAIN,
            1,
            with_sigs(nm_diff, vec![malleated]),
            Check::Signature,
            "Signature(Invalid)",
            "§5.2",
        ),
        good(
            "truncated-signature",
            "A 63-byte signature by a trusted key id (PROTOCOL.md §5.2).",
            "the network-map diff of step 1 with its signature cut to 63 bytes",
            NETWORK_CHAIN,
            1,
            with_sigs(nm_diff, vec![short]),
            Check::Signature,
            "Signature(Invalid)",
            "§5.2",
        ),
        good(
            "signature-under-directory-context",
            "A signature over the directory context is not an update signature (PROTOCOL.md §5.1).",
            "the network-map diff of step 1 signed by the origin key with M = H(\"altocast/v1/directory\\0\") ‖ H(body)",
            NETWORK_CHAIN,
            1,
            with_sigs(nm_diff, vec![key.sign(DIRECTORY_CONTEXT, &nm_diff.body)]),
            Check::Signature,
            "Signature(Invalid)",
            "§5.1",
        ),
        good(
            "signed-by-untrusted-key-only",
            "A valid signature by a key the verifier does not trust (PROTOCOL.md §5.3).",
            "the network-map diff of step 1 signed by the untrusted key only",
            NETWORK_CHAIN,
            1,
            with_sigs(nm_diff, vec![sig(&f.untrusted, &nm_diff.body)]),
            Check::Signature,
            "Signature(UnknownKey)",
            "§5.3",
        ),
        good(
            "trusted-key-id-in-upper-case",
            "Key ids are compared as exact lowercase strings, so an upper-case id names no key (PROTOCOL.md §4.2, §5.3).",
            "the network-map diff of step 1 with the valid signature's key_id in upper case",
            NETWORK_CHAIN,
            1,
            with_sigs(nm_diff, vec![upper]),
            Check::Signature,
            "Signature(UnknownKey)",
            "§4.2",
        ),
        good(
            "no-signatures",
            "An update without any signature (PROTOCOL.md §5.3).",
            "the network-map diff of step 1 with an empty signature list",
            NETWORK_CHAIN,
            1,
            with_sigs(nm_diff, vec![]),
            Check::Signature,
            "Signature(Missing)",
            "§5.3",
        ),
        good(
            "good-and-bad-trusted-signatures",
            "Every signature by a trusted key must verify, even after a good one (PROTOCOL.md §5.3).",
            "the network-map diff of step 1 with its valid signature followed by a corrupted one with the same key id",
            NETWORK_CHAIN,
            1,
            with_sigs(nm_diff, vec![nm_diff.signatures[0].clone(), bad_sig]),
            Check::Signature,
            "Signature(Invalid)",
            "§5.3",
        ),
        good(
            "too-many-signatures",
            "More than 4 signatures is rejected before any is looked at (PROTOCOL.md §5.3, §11).",
            "the network-map diff of step 1 with its valid signature repeated 5 times",
            NETWORK_CHAIN,
            1,
            with_sigs(nm_diff, vec![nm_diff.signatures[0].clone(); 5]),
            Check::Signature,
            "Signature(TooMany)",
            "§5.3",
        ),
        // §11 / §8.4 O1: size.
        Tamper {
            fill: Some(over),
            ..good(
                "body-over-size-limit",
                "A body of 16 MiB + 1 bytes is refused before its signature is checked (PROTOCOL.md §8.4 O1, §11).",
                "a body of 16,777,217 zero bytes (body_fill), validly signed by the origin key",
                NETWORK_CHAIN,
                0,
                filled(over),
                Check::Size,
                "TooLarge",
                "§8.4 O1",
            )
        },
        Tamper {
            fill: Some(at),
            ..good(
                "body-at-size-limit-is-decoded",
                "A body of exactly 16 MiB passes the size and signature checks and then fails protobuf decoding, reported as apply (PROTOCOL.md §8.4 O1, O3).",
                "a body of 16,777,216 zero bytes (body_fill), validly signed by the origin key",
                NETWORK_CHAIN,
                0,
                filled(at),
                Check::Apply,
                "Malformed",
                "§8.4 O3",
            )
        },
        // §8.4 O4: resource.
        good(
            "wrong-resource-id",
            "An update for a resource the verifier did not ask for (PROTOCOL.md §8.4 O4).",
            "the network-map diff of step 1 re-signed with resource_id \"other-network-map\"",
            NETWORK_CHAIN,
            1,
            resign("wrong-resource-id", key, nm_diff, |u| {
                u.resource_id = "other-network-map".into();
                Some(())
            })?,
            Check::Resource,
            "UnexpectedResource",
            "§8.4 O4",
        ),
        // §8.3 / §8.4 C4: sequence.
        good(
            "rollback-lower-seq",
            "A snapshot of seq 1 while seq 2 is held is a rollback (PROTOCOL.md §8.3, §8.4 C4).",
            "the chain's step 0 (snapshot seq 1) replayed after step 1",
            NETWORK_CHAIN,
            2,
            nm_snap.clone(),
            Check::Sequence,
            "Rollback",
            "§8.4 C4",
        ),
        good(
            "replayed-diff",
            "A diff to the held seq, replayed, is a rollback (PROTOCOL.md §8.3).",
            "the chain's step 1 (diff 1 → 2) replayed",
            NETWORK_CHAIN,
            2,
            nm_diff.clone(),
            Check::Sequence,
            "Rollback",
            "§8.3",
        ),
        good(
            "replayed-snapshot-same-seq",
            "A snapshot of the held seq is a replay, rejected as rollback (PROTOCOL.md §8.3).",
            "the chain's step 0 (snapshot seq 1) replayed",
            NETWORK_CHAIN,
            1,
            nm_snap.clone(),
            Check::Sequence,
            "Rollback",
            "§8.3",
        ),
        good(
            "replayed-older-heartbeat",
            "A heartbeat of the held seq issued before the held one is a rollback (PROTOCOL.md §8.3).",
            "a validly signed heartbeat of seq 2 issued at T0 + 15,000, after the heartbeat issued at T0 + 20,000",
            NETWORK_CHAIN,
            3,
            s.heartbeat(&f.nm, &nm_version(2, &f.nm_b), T0_MS + 15_000).update,
            Check::Sequence,
            "Rollback",
            "§8.3",
        ),
        good(
            "heartbeat-below-held-seq",
            "A heartbeat of a seq older than the held one is a rollback (PROTOCOL.md §8.3).",
            "a validly signed heartbeat of seq 1 issued at T0 + 25,000 while seq 2 is held",
            NETWORK_CHAIN,
            2,
            s.heartbeat(&f.nm, &nm_version(1, &f.nm_a3), T0_MS + 25_000).update,
            Check::Sequence,
            "Rollback",
            "§8.3",
        ),
        good(
            "heartbeat-above-held-seq",
            "A heartbeat of a seq above the held one means updates were skipped (gap) (PROTOCOL.md §8.3, §12.2).",
            "the chain's step 2 (heartbeat of seq 2) while seq 1 is held",
            NETWORK_CHAIN,
            1,
            nm_hb.clone(),
            Check::Sequence,
            "Gap",
            "§8.3",
        ),
        good(
            "heartbeat-with-nothing-held",
            "A heartbeat when nothing is held is a gap (PROTOCOL.md §8.3).",
            "the chain's step 2 (heartbeat of seq 2) to a fresh verifier",
            NETWORK_CHAIN,
            0,
            nm_hb.clone(),
            Check::Sequence,
            "Gap",
            "§8.3",
        ),
        // §8.4 C6: base.
        good(
            "diff-base-seq-mismatch",
            "A diff whose base_seq is not the held seq (PROTOCOL.md §8.4 C6).",
            "the network-map diff of step 1 re-signed with base_seq 2 and seq 3 while seq 1 is held",
            NETWORK_CHAIN,
            1,
            resign("diff-base-seq-mismatch", key, nm_diff, |u| {
                u.base_seq = 2;
                u.seq = 3;
                Some(())
            })?,
            Check::Base,
            "BaseSeq",
            "§8.4 C6",
        ),
        good(
            "diff-base-tag-mismatch",
            "A diff whose base_tag is not the held tag (PROTOCOL.md §8.4 C6).",
            "the network-map diff of step 1 re-signed with base_tag = 32 bytes 0x01",
            NETWORK_CHAIN,
            1,
            resign("diff-base-tag-mismatch", key, nm_diff, |u| {
                u.base_tag = vec![1u8; 32].into();
                Some(())
            })?,
            Check::Base,
            "BaseTag",
            "§8.4 C6",
        ),
        good(
            "diff-base-tag-empty",
            "An empty base_tag is the all-zero tag, which no held state has (PROTOCOL.md §3.6, §8.4 C6).",
            "the network-map diff of step 1 re-signed with an empty base_tag",
            NETWORK_CHAIN,
            1,
            resign("diff-base-tag-empty", key, nm_diff, |u| {
                u.base_tag = Default::default();
                Some(())
            })?,
            Check::Base,
            "BaseTag",
            "§3.6",
        ),
        good(
            "diff-with-nothing-held",
            "A diff when nothing is held has no base (PROTOCOL.md §8.4 C6, Appendix A.8).",
            "the chain's step 1 (diff 1 → 2) to a fresh verifier",
            NETWORK_CHAIN,
            0,
            nm_diff.clone(),
            Check::Base,
            "BaseSeq",
            "§8.4 C6",
        ),
        // §8.4 C8 and §3.6: tags.
        good(
            "wrong-tag-after-apply",
            "A cost-map diff whose content does not produce the signed tag (PROTOCOL.md §8.4 C8).",
            "the cost-map diff of the base chain's step 2 re-signed with row PID1's set_cost [6] changed to [7], tag unchanged",
            COST_CHAIN,
            2,
            resign("wrong-tag-after-apply", key, cm_diff, |u| {
                cost_diff(u)?.rows.get_mut(0)?.set_cost = vec![7.0];
                Some(())
            })?,
            Check::Apply,
            "TagMismatch",
            "§8.4 C8",
        ),
        good(
            "heartbeat-wrong-tag",
            "A heartbeat whose tag is not the held tag (PROTOCOL.md §8.4 C6).",
            "a validly signed heartbeat of seq 2 carrying the tag of seq 1's state",
            NETWORK_CHAIN,
            2,
            s.heartbeat(&f.nm, &nm_version(2, &f.nm_a3), T0_MS + 25_000).update,
            Check::Apply,
            "TagMismatch",
            "§8.4 C6",
        ),
        good(
            "tag-empty",
            "An empty tag is the all-zero tag, which no state has (PROTOCOL.md §3.6).",
            "the network-map snapshot of step 0 re-signed with an empty tag",
            NETWORK_CHAIN,
            0,
            resign("tag-empty", key, nm_snap, |u| {
                u.tag = Default::default();
                Some(())
            })?,
            Check::Apply,
            "TagMismatch",
            "§3.6",
        ),
        good(
            "tag-wrong-length",
            "A tag of 31 bytes is malformed (PROTOCOL.md §3.6, §8.4 C2).",
            "the network-map snapshot of step 0 re-signed with its tag cut to 31 bytes",
            NETWORK_CHAIN,
            0,
            resign("tag-wrong-length", key, nm_snap, |u| {
                u.tag = u.tag.slice(..31);
                Some(())
            })?,
            Check::Apply,
            "Malformed",
            "§3.6",
        ),
        // §8.4 C2, C5, C7: malformed headers.
        good(
            "no-payload",
            "An update without a payload is malformed (PROTOCOL.md §6.2, §8.4 C2).",
            "the network-map snapshot of step 0 re-signed without its payload",
            NETWORK_CHAIN,
            0,
            resign("no-payload", key, nm_snap, |u| {
                u.payload = None;
                Some(())
            })?,
            Check::Apply,
            "Malformed",
            "§8.4 C2",
        ),
        good(
            "kind-unspecified",
            "Kind 0 is malformed (PROTOCOL.md §6.2, §8.4 C7).",
            "the network-map snapshot of step 0 re-signed with kind 0",
            NETWORK_CHAIN,
            0,
            resign("kind-unspecified", key, nm_snap, |u| {
                u.kind = 0;
                Some(())
            })?,
            Check::Apply,
            "Malformed",
            "§8.4 C7",
        ),
        good(
            "kind-disagrees-with-payload",
            "A network-map payload under kind 2 (cost map) (PROTOCOL.md §6.3, §8.4 C7).",
            "the network-map snapshot of step 0 re-signed with kind 2",
            NETWORK_CHAIN,
            0,
            resign("kind-disagrees-with-payload", key, nm_snap, |u| {
                u.kind = 2;
                Some(())
            })?,
            Check::Apply,
            "Payload(DiffMismatch)",
            "§8.4 C7",
        ),
        good(
            "network-map-with-cost-type",
            "A network-map snapshot must not carry a cost type (PROTOCOL.md §6.2, §8.4 C7).",
            "the network-map snapshot of step 0 re-signed with cost_type routingcost/numerical",
            NETWORK_CHAIN,
            0,
            resign("network-map-with-cost-type", key, nm_snap, |u| {
                u.cost_type = Some((&chains::routingcost()).into());
                Some(())
            })?,
            Check::Apply,
            "Payload(DiffMismatch)",
            "§8.4 C7",
        ),
        good(
            "cost-mode-unspecified",
            "Cost mode 0 is invalid (PROTOCOL.md §2.4, §8.4 C5).",
            "the cost-map snapshot of step 1 re-signed with cost_type.mode 0",
            COST_CHAIN,
            1,
            resign("cost-mode-unspecified", key, cm_snap, |u| {
                u.cost_type.as_mut()?.mode = 0;
                Some(())
            })?,
            Check::Apply,
            "Payload(BadCostMode)",
            "§8.4 C5",
        ),
        good(
            "cost-type-missing-on-cost-snapshot",
            "A cost-map snapshot without cost_type (PROTOCOL.md §6.6).",
            "the cost-map snapshot of step 1 re-signed without cost_type",
            COST_CHAIN,
            1,
            resign("cost-type-missing-on-cost-snapshot", key, cm_snap, |u| {
                u.cost_type = None;
                Some(())
            })?,
            Check::Apply,
            "Payload(MissingField)",
            "§6.6",
        ),
        // §8.4 C9: expiry.
        good(
            "issued-in-the-future",
            "Issued more than the 5,000 ms skew after now (PROTOCOL.md §8.4 C9, §11).",
            "the network-map snapshot of step 0 re-signed with issued_at_ms = now_ms + 5,001",
            NETWORK_CHAIN,
            0,
            resign("issued-in-the-future", key, nm_snap, |u| {
                u.issued_at_ms = T0_MS + 35_001;
                u.expires_at_ms = T0_MS + 95_001;
                Some(())
            })?,
            Check::Expiry,
            "FromTheFuture",
            "§8.4 C9",
        ),
        // §8.6: dependencies.
        good(
            "cost-map-before-its-network-map",
            "A cost map whose network map is not held (PROTOCOL.md §8.6, Appendix A.8).",
            "the cost-map snapshot of step 1 to a fresh verifier",
            COST_CHAIN,
            0,
            cm_snap.clone(),
            Check::Dependency,
            "Dependency",
            "§8.6",
        ),
        good(
            "dependency-newer-than-held",
            "A cost map bound to a network-map seq newer than the held one: the network-map update was withheld (PROTOCOL.md §8.6, §12.2).",
            "a validly signed cost-map snapshot seq 1 computed against another network map at seq 2, while network-map seq 1 is held",
            COST_CHAIN,
            1,
            s.snapshot(
                &f.cm,
                &crate::wire::update::Version {
                    seq: 1,
                    state: crate::MapState::Cost(bound_b.clone()),
                    dependencies: vec![nm_b_dep.clone()],
                },
                T0_MS,
            )
            .update,
            Check::Dependency,
            "Dependency",
            "§8.6",
        ),
        good(
            "dependency-other-tag-at-held-seq",
            "A dependency naming the held network-map seq with another tag (PROTOCOL.md §8.6).",
            "a validly signed cost-map snapshot computed against another network map, naming it as network-map seq 1",
            COST_CHAIN,
            1,
            s.snapshot(
                &f.cm,
                &crate::wire::update::Version {
                    seq: 1,
                    state: crate::MapState::Cost(bound_b),
                    dependencies: vec![Dependency { seq: 1, ..nm_b_dep.clone() }],
                },
                T0_MS,
            )
            .update,
            Check::Dependency,
            "Dependency",
            "§8.6",
        ),
        good(
            "dependency-header-disagrees-with-content",
            "Update.dependencies must name the network map the state names (PROTOCOL.md §8.6).",
            "the cost-map snapshot of step 1 re-signed with its dependency's tag replaced by another network map's",
            COST_CHAIN,
            1,
            resign("dependency-header-disagrees-with-content", key, cm_snap, |u| {
                u.dependencies.get_mut(0)?.tag = f.nm_b.tag().0.to_vec().into();
                Some(())
            })?,
            Check::Dependency,
            "Dependency",
            "§8.6",
        ),
        good(
            "dependency-missing-in-header",
            "A cost map with a dependency in its state and none in Update.dependencies (PROTOCOL.md §8.6).",
            "the cost-map snapshot of step 1 re-signed with an empty dependencies list",
            COST_CHAIN,
            1,
            resign("dependency-missing-in-header", key, cm_snap, |u| {
                u.dependencies.clear();
                Some(())
            })?,
            Check::Dependency,
            "Dependency",
            "§8.6",
        ),
        good(
            "heartbeat-rebinds-dependency",
            "A heartbeat must repeat the held version's dependencies; it cannot re-bind (PROTOCOL.md §8.6).",
            "a validly signed cost-map heartbeat of seq 2 whose dependency names network-map seq 7 (same tag)",
            COST_CHAIN,
            4,
            s.heartbeat(&f.cm, &cm_version(2, &f.cm_c(&f.nm_a3)?, 7), T0_MS + 25_000).update,
            Check::Dependency,
            "Dependency",
            "§8.6",
        ),
        // §6.4, §6.5, §2.2: network-map payloads.
        good(
            "removing-absent-pid",
            "A network-map diff that removes a PID the map does not have (PROTOCOL.md §6.5).",
            "the network-map diff of step 1 re-signed with removed [\"PID9\"]",
            NETWORK_CHAIN,
            1,
            resign("removing-absent-pid", key, nm_diff, |u| {
                network_diff(u)?.removed = vec!["PID9".into()];
                Some(())
            })?,
            Check::Apply,
            "Payload(DiffMismatch)",
            "§6.5",
        ),
        good(
            "removing-a-pid-twice",
            "Removing one PID twice in a diff: the second removal finds nothing (PROTOCOL.md §6.5).",
            "the network-map diff of step 1 re-signed with removed [\"PID2\", \"PID2\"]",
            NETWORK_CHAIN,
            1,
            resign("removing-a-pid-twice", key, nm_diff, |u| {
                network_diff(u)?.removed = vec!["PID2".into(), "PID2".into()];
                Some(())
            })?,
            Check::Apply,
            "Payload(DiffMismatch)",
            "§6.5",
        ),
        good(
            "prefix-in-two-pids-after-diff",
            "A diff that upserts a prefix another PID keeps (PROTOCOL.md §2.2, §6.5).",
            "the network-map diff of step 1 re-signed with 192.0.2.0/24 (held by PID1) added to PID4's ipv4 list",
            NETWORK_CHAIN,
            1,
            resign("prefix-in-two-pids-after-diff", key, nm_diff, |u| {
                network_diff(u)?.upsert.iter_mut().find(|p| p.pid == "PID4")?.ipv4.push("192.0.2.0/24".into());
                Some(())
            })?,
            Check::Apply,
            "Payload(DuplicatePrefix)",
            "§2.2",
        ),
        good(
            "prefix-in-two-pids-snapshot",
            "A network map listing one prefix under two PIDs (PROTOCOL.md §2.2, §6.4).",
            "the network-map snapshot of step 0 re-signed with 192.0.2.0/24 (PID1's) added to PID2",
            NETWORK_CHAIN,
            0,
            resign("prefix-in-two-pids-snapshot", key, nm_snap, |u| {
                network_snapshot(u)?.pids.iter_mut().find(|p| p.pid == "PID2")?.ipv4.push("192.0.2.0/24".into());
                Some(())
            })?,
            Check::Apply,
            "Payload(DuplicatePrefix)",
            "§2.2",
        ),
        good(
            "pid-listed-twice-in-snapshot",
            "A network-map snapshot listing one PID twice (PROTOCOL.md §6.4 step 2).",
            "the network-map snapshot of step 0 re-signed with a second PidPrefixes entry for PID2 with no prefixes",
            NETWORK_CHAIN,
            0,
            resign("pid-listed-twice-in-snapshot", key, nm_snap, |u| {
                network_snapshot(u)?.pids.push(pb::PidPrefixes { pid: "PID2".into(), ..Default::default() });
                Some(())
            })?,
            Check::Apply,
            "Payload(DiffMismatch)",
            "§6.4",
        ),
        good(
            "prefix-host-bits-set",
            "A prefix with host bits set is rejected, not truncated (PROTOCOL.md §2.2).",
            "the network-map diff of step 1 re-signed with PID4's 203.0.113.0/24 written 203.0.113.1/24",
            NETWORK_CHAIN,
            1,
            resign("prefix-host-bits-set", key, nm_diff, |u| {
                *network_diff(u)?.upsert.iter_mut().find(|p| p.pid == "PID4")?.ipv4.get_mut(0)? =
                    "203.0.113.1/24".into();
                Some(())
            })?,
            Check::Apply,
            "Payload(InvalidPrefix)",
            "§2.2",
        ),
        good(
            "ipv6-prefix-in-ipv4-list",
            "The list decides the family: an IPv6 prefix in the ipv4 list (PROTOCOL.md §2.2).",
            "the network-map diff of step 1 re-signed with 2001:db8:4::/48 added to PID4's ipv4 list",
            NETWORK_CHAIN,
            1,
            resign("ipv6-prefix-in-ipv4-list", key, nm_diff, |u| {
                network_diff(u)?.upsert.iter_mut().find(|p| p.pid == "PID4")?.ipv4.push("2001:db8:4::/48".into());
                Some(())
            })?,
            Check::Apply,
            "Payload(InvalidPrefix)",
            "§2.2",
        ),
        good(
            "prefix-without-length",
            "The /L is mandatory (PROTOCOL.md §2.2).",
            "the network-map snapshot of step 0 re-signed with PID2's prefix written 198.51.100.128",
            NETWORK_CHAIN,
            0,
            resign("prefix-without-length", key, nm_snap, |u| {
                *network_snapshot(u)?.pids.iter_mut().find(|p| p.pid == "PID2")?.ipv4.get_mut(0)? =
                    "198.51.100.128".into();
                Some(())
            })?,
            Check::Apply,
            "Payload(InvalidPrefix)",
            "§2.2",
        ),
        good(
            "invalid-pid-name",
            "A PID name with the reserved '.' (PROTOCOL.md §2.1).",
            "the network-map diff of step 1 re-signed with PID4 renamed \"PID.4\"",
            NETWORK_CHAIN,
            1,
            resign("invalid-pid-name", key, nm_diff, |u| {
                network_diff(u)?.upsert.iter_mut().find(|p| p.pid == "PID4")?.pid = "PID.4".into();
                Some(())
            })?,
            Check::Apply,
            "Payload(InvalidPid)",
            "§2.1",
        ),
        // §6.6, §6.7, §2.5: cost-map payloads.
        good(
            "cost-diff-unsorted-set-indices",
            "set_dst must be strictly ascending (PROTOCOL.md §6.7).",
            "the cost-map diff of step 2 re-signed with rows [{src 0, set_dst [2, 1], set_cost [11, 6]}]",
            COST_CHAIN,
            2,
            resign("cost-diff-unsorted-set-indices", key, cm_diff, |u| {
                cost_diff(u)?.rows = vec![row_diff(0, &[2, 1], &[11.0, 6.0], &[])];
                Some(())
            })?,
            Check::Apply,
            "Payload(NotAscending)",
            "§6.7",
        ),
        good(
            "cost-diff-duplicate-set-index",
            "A duplicate index in set_dst is not strictly ascending (PROTOCOL.md §6.7).",
            "the cost-map diff of step 2 re-signed with rows [{src 0, set_dst [1, 1], set_cost [6, 7]}]",
            COST_CHAIN,
            2,
            resign("cost-diff-duplicate-set-index", key, cm_diff, |u| {
                cost_diff(u)?.rows = vec![row_diff(0, &[1, 1], &[6.0, 7.0], &[])];
                Some(())
            })?,
            Check::Apply,
            "Payload(NotAscending)",
            "§6.7",
        ),
        good(
            "cost-diff-unsorted-removed-indices",
            "removed_dst must be strictly ascending (PROTOCOL.md §6.7).",
            "the cost-map diff of step 2 re-signed with rows [{src 0, removed_dst [2, 1]}]",
            COST_CHAIN,
            2,
            resign("cost-diff-unsorted-removed-indices", key, cm_diff, |u| {
                cost_diff(u)?.rows = vec![row_diff(0, &[], &[], &[2, 1])];
                Some(())
            })?,
            Check::Apply,
            "Payload(NotAscending)",
            "§6.7",
        ),
        good(
            "cost-diff-rows-not-ascending",
            "Row src must be strictly ascending across rows (PROTOCOL.md §6.7).",
            "the cost-map diff of step 2 re-signed with rows [{src 2, set_dst [2], set_cost [0]}, {src 0, set_dst [1], set_cost [6]}]",
            COST_CHAIN,
            2,
            resign("cost-diff-rows-not-ascending", key, cm_diff, |u| {
                cost_diff(u)?.rows = vec![row_diff(2, &[2], &[0.0], &[]), row_diff(0, &[1], &[6.0], &[])];
                Some(())
            })?,
            Check::Apply,
            "Payload(NotAscending)",
            "§6.7",
        ),
        good(
            "cost-diff-set-and-remove-same-index",
            "One index both set and removed in a row (PROTOCOL.md §6.7).",
            "the cost-map diff of step 2 re-signed with rows [{src 0, set_dst [2], set_cost [11], removed_dst [2]}] (PID1 → PID3 has a cost)",
            COST_CHAIN,
            2,
            resign("cost-diff-set-and-remove-same-index", key, cm_diff, |u| {
                cost_diff(u)?.rows = vec![row_diff(0, &[2], &[11.0], &[2])];
                Some(())
            })?,
            Check::Apply,
            "Payload(DiffMismatch)",
            "§6.7",
        ),
        good(
            "cost-diff-removes-entry-without-cost",
            "Removing an entry that has no cost (PROTOCOL.md §6.7).",
            "the cost-map diff of step 2 re-signed with rows [{src 2, removed_dst [2]}] (PID3 → PID3 has no path)",
            COST_CHAIN,
            2,
            resign("cost-diff-removes-entry-without-cost", key, cm_diff, |u| {
                cost_diff(u)?.rows = vec![row_diff(2, &[], &[], &[2])];
                Some(())
            })?,
            Check::Apply,
            "Payload(DiffMismatch)",
            "§6.7",
        ),
        good(
            "cost-diff-index-out-of-range",
            "A destination index not below the universe size (PROTOCOL.md §6.7).",
            "the cost-map diff of step 2 re-signed with rows [{src 0, set_dst [3], set_cost [1]}] (3 PIDs)",
            COST_CHAIN,
            2,
            resign("cost-diff-index-out-of-range", key, cm_diff, |u| {
                cost_diff(u)?.rows = vec![row_diff(0, &[3], &[1.0], &[])];
                Some(())
            })?,
            Check::Apply,
            "Payload(IndexOutOfRange)",
            "§6.7",
        ),
        good(
            "cost-diff-length-mismatch",
            "set_dst and set_cost of different lengths (PROTOCOL.md §6.7).",
            "the cost-map diff of step 2 re-signed with rows [{src 0, set_dst [1, 2], set_cost [6]}]",
            COST_CHAIN,
            2,
            resign("cost-diff-length-mismatch", key, cm_diff, |u| {
                cost_diff(u)?.rows = vec![row_diff(0, &[1, 2], &[6.0], &[])];
                Some(())
            })?,
            Check::Apply,
            "Payload(LengthMismatch)",
            "§6.7",
        ),
        good(
            "cost-diff-infinite-cost",
            "Costs must be finite (PROTOCOL.md §2.5, §6.7).",
            "the cost-map diff of step 2 re-signed with rows [{src 0, set_dst [1], set_cost [+infinity]}]",
            COST_CHAIN,
            2,
            resign("cost-diff-infinite-cost", key, cm_diff, |u| {
                cost_diff(u)?.rows = vec![row_diff(0, &[1], &[f64::INFINITY], &[])];
                Some(())
            })?,
            Check::Apply,
            "Payload(NonFiniteCost)",
            "§2.5",
        ),
        good(
            "cost-diff-adds-existing-pid",
            "added_pids naming a PID already in the universe (PROTOCOL.md §6.7).",
            "the cost-map diff of step 2 re-signed with added_pids [\"PID1\"]",
            COST_CHAIN,
            2,
            resign("cost-diff-adds-existing-pid", key, cm_diff, |u| {
                cost_diff(u)?.added_pids = vec!["PID1".into()];
                Some(())
            })?,
            Check::Apply,
            "Payload(DiffMismatch)",
            "§6.7",
        ),
        good(
            "cost-diff-removes-absent-pid",
            "removed_pids naming a PID not in the universe (PROTOCOL.md §6.7).",
            "the cost-map diff of step 2 re-signed with removed_pids [\"PID9\"]",
            COST_CHAIN,
            2,
            resign("cost-diff-removes-absent-pid", key, cm_diff, |u| {
                cost_diff(u)?.removed_pids = vec!["PID9".into()];
                Some(())
            })?,
            Check::Apply,
            "Payload(DiffMismatch)",
            "§6.7",
        ),
        good(
            "cost-diff-added-pids-unsorted",
            "added_pids must be strictly ascending (PROTOCOL.md §6.7).",
            "the cost-map diff of step 2 re-signed with added_pids [\"PID5\", \"PID4\"]",
            COST_CHAIN,
            2,
            resign("cost-diff-added-pids-unsorted", key, cm_diff, |u| {
                cost_diff(u)?.added_pids = vec!["PID5".into(), "PID4".into()];
                Some(())
            })?,
            Check::Apply,
            "Payload(NotAscending)",
            "§6.7",
        ),
        good(
            "cost-snapshot-nan-cost",
            "NaN is not a cost; no path is sent by omission (PROTOCOL.md §2.5, §2.6).",
            "the cost-map snapshot of step 1 re-signed with the first cost of row PID1 replaced by NaN",
            COST_CHAIN,
            1,
            resign("cost-snapshot-nan-cost", key, cm_snap, |u| {
                *cost_snapshot(u)?.rows.get_mut(0)?.cost.get_mut(0)? = f64::NAN;
                Some(())
            })?,
            Check::Apply,
            "Payload(NonFiniteCost)",
            "§2.5",
        ),
        good(
            "cost-snapshot-unsorted-pids",
            "A cost-map snapshot's pids must be strictly ascending (PROTOCOL.md §6.6).",
            "the cost-map snapshot of step 1 re-signed with pids [\"PID2\", \"PID1\", \"PID3\"]",
            COST_CHAIN,
            1,
            resign("cost-snapshot-unsorted-pids", key, cm_snap, |u| {
                cost_snapshot(u)?.pids.swap(0, 1);
                Some(())
            })?,
            Check::Apply,
            "Payload(NotAscending)",
            "§6.6",
        ),
        good(
            "cost-snapshot-src-in-two-rows",
            "No src may appear in two CostRows (PROTOCOL.md §6.6).",
            "the cost-map snapshot of step 1 re-signed with the second row's src changed from 1 to 0",
            COST_CHAIN,
            1,
            resign("cost-snapshot-src-in-two-rows", key, cm_snap, |u| {
                cost_snapshot(u)?.rows.get_mut(1)?.src = 0;
                Some(())
            })?,
            Check::Apply,
            "Payload(NotAscending)",
            "§6.6",
        ),
        good(
            "cost-snapshot-dst-not-ascending",
            "A snapshot row's dst must be strictly ascending (PROTOCOL.md §6.6).",
            "the cost-map snapshot of step 1 re-signed with row PID1's dst [0, 1, 2] written [0, 2, 1]",
            COST_CHAIN,
            1,
            resign("cost-snapshot-dst-not-ascending", key, cm_snap, |u| {
                cost_snapshot(u)?.rows.get_mut(0)?.dst.swap(1, 2);
                Some(())
            })?,
            Check::Apply,
            "Payload(NotAscending)",
            "§6.6",
        ),
        good(
            "cost-snapshot-network-map-tag-wrong-length",
            "network_map_tag must be 32 bytes when network_map_id is set (PROTOCOL.md §3.6, §6.6).",
            "the cost-map snapshot of step 1 re-signed with network_map_tag cut to 31 bytes",
            COST_CHAIN,
            1,
            resign("cost-snapshot-network-map-tag-wrong-length", key, cm_snap, |u| {
                let s = cost_snapshot(u)?;
                s.network_map_tag = s.network_map_tag.slice(..31);
                Some(())
            })?,
            Check::Apply,
            "Payload(BadTag)",
            "§3.6",
        ),
        good(
            "ordinal-fractional-cost",
            "Ordinal costs must be integral (PROTOCOL.md §2.5).",
            "the ordinal cost-map diff of the base chain's step 2 re-signed with rows [{src 0, set_dst [1], set_cost [1.5]}]",
            ORDINAL_CHAIN,
            2,
            resign("ordinal-fractional-cost", key, ord_diff, |u| {
                cost_diff(u)?.rows = vec![row_diff(0, &[1], &[1.5], &[])];
                Some(())
            })?,
            Check::Apply,
            "Payload(BadOrdinalCost)",
            "§2.5",
        ),
        good(
            "ordinal-negative-cost",
            "Ordinal costs must be non-negative (PROTOCOL.md §2.5).",
            "the ordinal cost-map diff of step 2 re-signed with rows [{src 0, set_dst [1], set_cost [-1]}]",
            ORDINAL_CHAIN,
            2,
            resign("ordinal-negative-cost", key, ord_diff, |u| {
                cost_diff(u)?.rows = vec![row_diff(0, &[1], &[-1.0], &[])];
                Some(())
            })?,
            Check::Apply,
            "Payload(BadOrdinalCost)",
            "§2.5",
        ),
    ];

    // §7: chunks, against the chunked network-map snapshot (two chunks).
    let chunk_tamper = |name, description, mutation, chunks: Vec<pb::SnapshotChunk>| Tamper {
        chunks,
        ..good(name, description, mutation, CHUNKED_CHAIN, 0, chunked.update.clone(), Check::Signature, "Chunk", "§7.3")
    };
    let mut wrong_hash = chunked.chunks.clone();
    let last = wrong_hash.len() - 1;
    let mut d = wrong_hash[last].data.to_vec();
    d[0] ^= 0x80;
    wrong_hash[last].data = d.into();
    let mut out_of_range = chunked.chunks.clone();
    out_of_range[last].index = out_of_range.len() as u32;
    let mut one_too_many = chunked.chunks.clone();
    one_too_many.push(chunked.chunks[last].clone());
    one_too_many[last + 1].index = one_too_many.len() as u32 - 1;
    let mut reordered = chunked.chunks.clone();
    reordered.swap(0, 1);
    t.extend([
        chunk_tamper(
            "chunk-wrong-hash",
            "A chunk whose data does not hash to the signed chunk hash (PROTOCOL.md §7.3).",
            "the chunked snapshot of the base chain's step 0 with bit 7 of the first byte of its last chunk flipped",
            wrong_hash,
        ),
        chunk_tamper(
            "chunk-index-out-of-range",
            "A chunk whose index is not its position; here N, past the last (PROTOCOL.md §7.3).",
            "the chunked snapshot of step 0 with its last chunk's index set to the chunk count",
            out_of_range,
        ),
        chunk_tamper(
            "chunk-one-too-many",
            "More chunks than chunk_hashes (PROTOCOL.md §7.3).",
            "the chunked snapshot of step 0 with a copy of its last chunk appended as index N",
            one_too_many,
        ),
        chunk_tamper(
            "chunk-missing",
            "Fewer chunks than chunk_hashes (PROTOCOL.md §7.3).",
            "the chunked snapshot of step 0 without its last chunk",
            chunked.chunks[..last].to_vec(),
        ),
        chunk_tamper(
            "chunks-reordered",
            "Chunks out of order (PROTOCOL.md §7.3).",
            "the chunked snapshot of step 0 with its first two chunks swapped (indices travel with them)",
            reordered,
        ),
        good(
            "chunked-total-len-over-limit",
            "A chunked snapshot announcing more than 512 MiB is refused before any chunk (PROTOCOL.md §7.3, §8.4 O5).",
            "the chunked snapshot of step 0 re-signed with total_len = 536,870,913",
            CHUNKED_CHAIN,
            0,
            resign("chunked-total-len-over-limit", key, &chunked.update, |u| match &mut u.payload {
                Some(pb::update::Payload::Chunked(c)) => {
                    c.total_len = (512 << 20) + 1;
                    Some(())
                }
                _ => None,
            })?,
            Check::Size,
            "TooLarge",
            "§8.4 O5",
        ),
    ]);
    let vectors = t.iter().map(|x| x.to_json(&chains)).collect::<Result<Vec<_>, _>>()?;
    Ok(file(
        Group::Tamper,
        "Tampered or invalid updates after a valid chain prefix, and the check that rejects each (PROTOCOL.md §5, §7, §8).",
        vec![("vectors", vectors)],
    ))
}
