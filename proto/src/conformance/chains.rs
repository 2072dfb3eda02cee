//! `chains.json`: valid update chains and what the verifier reports and holds
//! after each step (§6–§8). The fixtures here are shared with the tamper group.

use std::collections::BTreeMap;

use bytes::Bytes;
use prost::Message as _;
use serde_json::{Value, json};

use super::{
    Error, Group, ORIGIN_SEED, SECOND_SEED, T0_MS, TTL_MS, UNTRUSTED_SEED, chunks_json, disagrees, file, held_json,
    update_json, waiting_json,
};
use crate::{
    CostMap, CostMapBuilder, CostMode, CostType, Limits, MapDiff, MapState, NetworkMap, NetworkMapDiff, OriginKey, Pid,
    PidPrefixes, PublicKey, ResourceId, TrustedKeys, Verifier, VersionTag,
    keys::UPDATE_CONTEXT,
    pb,
    verify::Waiting,
    wire::update::{Dependency, Signed, Signer, Version},
};

pub(super) const NM: &str = "my-default-network-map";
pub(super) const CM: &str = "my-default-cost-map";
pub(super) const ORDINAL_CM: &str = "hopcount-cost-map";

/// What a chain step must do; the build fails otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Intent {
    Committed,
    PendingExpired,
    PendingDependency,
}

#[derive(Debug, Clone)]
pub(super) struct Step {
    pub description: String,
    pub update: pb::SignedUpdate,
    pub chunks: Vec<pb::SnapshotChunk>,
    pub intent: Intent,
}

/// A chain of updates fed, in order, to one fresh verifier at one clock.
#[derive(Debug, Clone)]
pub(super) struct Chain {
    pub name: &'static str,
    pub description: &'static str,
    pub trusted: Vec<PublicKey>,
    pub resources: Vec<ResourceId>,
    pub now_ms: i64,
    pub steps: Vec<Step>,
}

impl Chain {
    fn new(
        name: &'static str,
        description: &'static str,
        trusted: &[&OriginKey],
        resources: &[&str],
        now_ms: i64,
    ) -> Result<Self, Error> {
        Ok(Chain {
            name,
            description,
            trusted: trusted.iter().map(|k| k.public()).collect(),
            resources: resources.iter().map(|r| rid(r)).collect::<Result<_, _>>()?,
            now_ms,
            steps: Vec::new(),
        })
    }

    fn signed(&mut self, description: &str, s: Signed, intent: Intent) -> &mut Self {
        self.raw(description, s.update, s.chunks, intent)
    }

    fn raw(
        &mut self,
        description: &str,
        update: pb::SignedUpdate,
        chunks: Vec<pb::SnapshotChunk>,
        intent: Intent,
    ) -> &mut Self {
        self.steps.push(Step { description: description.into(), update, chunks, intent });
        self
    }

    /// A fresh verifier as the chain configures it.
    pub fn verifier(&self) -> Verifier {
        Verifier::new(TrustedKeys::new(self.trusted.clone()), Limits::default(), self.resources.clone())
    }

    /// A verifier after the first `steps` steps, each checked against its intent.
    pub fn replay(&self, steps: usize) -> Result<(Verifier, Vec<Value>), Error> {
        let mut v = self.verifier();
        let mut outcomes = Vec::new();
        for (i, s) in self.steps.iter().take(steps).enumerate() {
            let at = format!("{} step {i}", self.name);
            let a =
                v.verify(&s.update, &s.chunks, self.now_ms).map_err(|e| disagrees(&at, format!("rejected: {e}")))?;
            let ok = match s.intent {
                Intent::Committed => a.is_committed(),
                Intent::PendingExpired => matches!(a.waiting, Some(Waiting::Expired { .. })),
                Intent::PendingDependency => matches!(a.waiting, Some(Waiting::Dependency { .. })),
            };
            if !ok {
                return Err(disagrees(&at, format!("meant {:?}, got waiting {:?}", s.intent, a.waiting)));
            }
            let id = a.resource_id.as_str();
            outcomes.push(json!({
                "result": if a.is_committed() { "committed" } else { "pending" },
                "kind": a.kind.as_str(),
                "seq": a.seq,
                "tag": a.tag.to_hex(),
                "waiting": waiting_json(a.waiting.as_ref()),
                "held": v.get(id).map(|h| held_json(h, true)),
                "pending": v.pending(id).map(|h| held_json(h, false)),
            }));
        }
        if outcomes.len() != steps {
            return Err(disagrees(self.name, format!("has {} steps, not {steps}", self.steps.len())));
        }
        Ok((v, outcomes))
    }

    fn to_json(&self) -> Result<Value, Error> {
        let (_, outcomes) = self.replay(self.steps.len())?;
        let steps: Vec<Value> = self
            .steps
            .iter()
            .zip(outcomes)
            .map(|(s, expect)| {
                json!({
                    "description": s.description,
                    "update": update_json(&s.update, None),
                    "chunks": chunks_json(&s.chunks),
                    "expect": expect,
                })
            })
            .collect();
        Ok(json!({
            "name": self.name,
            "description": self.description,
            "trusted_keys": self.trusted.iter().map(|k| json!({"key_id": k.id().as_str(), "public_key": hex::encode(k.raw())})).collect::<Vec<_>>(),
            "resources": self.resources.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            "now_ms": self.now_ms,
            "steps": steps,
        }))
    }
}

pub(super) fn rid(s: &str) -> Result<ResourceId, Error> {
    Ok(ResourceId::new(s)?)
}

fn pid(s: &str) -> Result<Pid, Error> {
    Ok(Pid::new(s)?)
}

type PidSpec<'a> = (&'a str, &'a [&'a str], &'a [&'a str]);
type RowSpec<'a> = (&'a str, &'a [(&'a str, f64)]);

pub(super) fn network_map(entries: &[PidSpec<'_>]) -> Result<NetworkMap, Error> {
    let mut m = BTreeMap::new();
    for (p, v4, v6) in entries {
        m.insert(pid(p)?, PidPrefixes::parse(p, v4, v6)?);
    }
    Ok(NetworkMap::new(m)?)
}

fn cost_map(ct: CostType, dep: Option<&NetworkMap>, rows: &[RowSpec<'_>]) -> Result<CostMap, Error> {
    let depends_on = match dep {
        Some(n) => Some(VersionTag { resource_id: rid(NM)?, tag: n.tag() }),
        None => None,
    };
    let mut b = CostMapBuilder::new(ct, depends_on);
    for (s, r) in rows {
        let costs = r.iter().map(|(d, v)| Ok((pid(d)?, *v))).collect::<Result<Vec<_>, Error>>()?;
        b.row(pid(s)?, costs);
    }
    Ok(b.build()?)
}

pub(super) fn nm_version(seq: u64, m: &NetworkMap) -> Version {
    Version { seq, state: MapState::Network(m.clone()), dependencies: vec![] }
}

/// A cost-map version whose dependency (if any) names network-map seq `nm_seq`.
pub(super) fn cm_version(seq: u64, m: &CostMap, nm_seq: u64) -> Version {
    let dependencies = m
        .depends_on()
        .map(|d| vec![Dependency { resource_id: d.resource_id.clone(), seq: nm_seq, tag: d.tag }])
        .unwrap_or_default();
    Version { seq, state: MapState::Cost(m.clone()), dependencies }
}

pub(super) fn diff_of(name: &str, a: &Version, b: &Version) -> Result<MapDiff, Error> {
    a.state.diff(&b.state).ok_or_else(|| disagrees(name, "no diff between the fixture versions"))
}

/// Encodes and signs an `Update` built or edited by hand.
pub(super) fn seal(key: &OriginKey, u: &pb::Update) -> pb::SignedUpdate {
    let body = Bytes::from(u.encode_to_vec());
    let sig = key.sign(UPDATE_CONTEXT, &body);
    pb::SignedUpdate { body, signatures: vec![sig] }
}

/// Decodes a signed body, applies `edit` (which returns `None` when what it
/// edits is not there), and signs the result with `key`.
pub(super) fn resign(
    name: &str,
    key: &OriginKey,
    s: &pb::SignedUpdate,
    edit: impl FnOnce(&mut pb::Update) -> Option<()>,
) -> Result<pb::SignedUpdate, Error> {
    let mut u = pb::Update::decode(s.body.clone()).map_err(|e| disagrees(name, e.to_string()))?;
    edit(&mut u).ok_or_else(|| disagrees(name, "the edit found nothing to change"))?;
    Ok(seal(key, &u))
}

/// The maps, versions and keys every chain and tamper vector is built from.
#[derive(Debug)]
pub(super) struct Fixture {
    pub signer: Signer,
    pub origin: OriginKey,
    pub second: OriginKey,
    pub untrusted: OriginKey,
    pub nm: ResourceId,
    pub cm: ResourceId,
    /// PROTOCOL.md Appendix A.3.
    pub nm_a3: NetworkMap,
    /// Appendix A.5's network-map diff target: PID2 removed, PID4 added.
    pub nm_a5: NetworkMap,
    /// PID2 removed, PID3 changed, PID4 added with IPv4 and IPv6.
    pub nm_b: NetworkMap,
    /// A.3 with one more prefix in PID1 (same PIDs): the re-bind case.
    pub nm_r: NetworkMap,
    /// PID2 removed, PID0 and PID4 added: a PID universe change.
    pub nm_u: NetworkMap,
}

pub(super) fn routingcost() -> CostType {
    CostType::routingcost()
}

impl Fixture {
    pub fn new() -> Result<Self, Error> {
        let a3 = [
            ("PID1", &["192.0.2.0/24", "198.51.100.0/25"][..], &[][..]),
            ("PID2", &["198.51.100.128/25"][..], &[][..]),
            ("PID3", &["0.0.0.0/0"][..], &["::/0", "2001:db8::/32"][..]),
        ];
        Ok(Fixture {
            signer: Signer::new(OriginKey::from_seed(ORIGIN_SEED), TTL_MS),
            origin: OriginKey::from_seed(ORIGIN_SEED),
            second: OriginKey::from_seed(SECOND_SEED),
            untrusted: OriginKey::from_seed(UNTRUSTED_SEED),
            nm: rid(NM)?,
            cm: rid(CM)?,
            nm_a3: network_map(&a3)?,
            nm_a5: network_map(&[a3[0], a3[2], ("PID4", &["203.0.113.0/24"], &[])])?,
            nm_b: network_map(&[
                a3[0],
                ("PID3", &["0.0.0.0/0"], &["::/0", "2001:db8::/33"]),
                ("PID4", &["203.0.113.0/24"], &["2001:db8:4::/48"]),
            ])?,
            nm_r: network_map(&[("PID1", &["192.0.2.0/24", "192.0.3.0/24", "198.51.100.0/25"], &[]), a3[1], a3[2]])?,
            nm_u: network_map(&[
                ("PID0", &["198.51.100.128/25"], &[]),
                a3[0],
                a3[2],
                ("PID4", &["203.0.113.0/24"], &[]),
            ])?,
        })
    }

    /// PROTOCOL.md Appendix A.4's cost map, bound to `nm`.
    pub fn cm_a4(&self, nm: &NetworkMap) -> Result<CostMap, Error> {
        cost_map(
            routingcost(),
            Some(nm),
            &[
                ("PID1", &[("PID1", 1.0), ("PID2", 5.0), ("PID3", 10.0)]),
                ("PID2", &[("PID1", 5.0), ("PID2", -0.0), ("PID3", 15.0)]),
                ("PID3", &[("PID1", 20.0), ("PID2", 15.5)]),
            ],
        )
    }

    /// Appendix A.5's cost-map diff target: PID1 → PID3 removed, PID3 → PID3 = 0.
    pub fn cm_a5(&self, nm: &NetworkMap) -> Result<CostMap, Error> {
        cost_map(
            routingcost(),
            Some(nm),
            &[
                ("PID1", &[("PID1", 1.0), ("PID2", 5.0)]),
                ("PID2", &[("PID1", 5.0), ("PID2", 0.0), ("PID3", 15.0)]),
                ("PID3", &[("PID1", 20.0), ("PID2", 15.5), ("PID3", 0.0)]),
            ],
        )
    }

    /// A.4 with entries changed, removed and added.
    pub fn cm_c(&self, nm: &NetworkMap) -> Result<CostMap, Error> {
        cost_map(
            routingcost(),
            Some(nm),
            &[
                ("PID1", &[("PID1", 1.0), ("PID2", 6.0)]),
                ("PID2", &[("PID2", 2.5), ("PID3", 15.0)]),
                ("PID3", &[("PID1", 20.0), ("PID2", 15.5), ("PID3", 0.0)]),
            ],
        )
    }

    /// A cost map over [`Fixture::nm_u`]'s PIDs.
    pub fn cm_u(&self) -> Result<CostMap, Error> {
        cost_map(
            routingcost(),
            Some(&self.nm_u),
            &[
                ("PID0", &[("PID0", 0.0), ("PID1", 5.0)]),
                ("PID1", &[("PID0", 5.0), ("PID1", 1.0), ("PID3", 10.0), ("PID4", 7.0)]),
                ("PID3", &[("PID1", 20.0)]),
                ("PID4", &[("PID1", 7.0), ("PID4", 0.0)]),
            ],
        )
    }

    /// Ordinal (hopcount) costs bound to A.3: before and after a diff.
    pub fn cm_ordinal(&self, after: bool) -> Result<CostMap, Error> {
        let ct = CostType::new("hopcount", CostMode::Ordinal)?;
        if after {
            cost_map(
                ct,
                Some(&self.nm_a3),
                &[
                    ("PID1", &[("PID1", 0.0), ("PID2", 2.0), ("PID3", 1.0)]),
                    ("PID2", &[("PID1", 2.0), ("PID2", 0.0), ("PID3", 3.0)]),
                    ("PID3", &[("PID3", 0.0)]),
                ],
            )
        } else {
            cost_map(
                ct,
                Some(&self.nm_a3),
                &[
                    ("PID1", &[("PID1", 0.0), ("PID2", 1.0), ("PID3", 2.0)]),
                    ("PID2", &[("PID1", 1.0), ("PID2", 0.0)]),
                    ("PID3", &[("PID1", 2.0), ("PID3", 0.0)]),
                ],
            )
        }
    }

    /// `m` re-bound to network map `nm`.
    pub fn rebound(&self, m: &CostMap, nm: &NetworkMap) -> CostMap {
        m.with_dependency(Some(VersionTag { resource_id: self.nm.clone(), tag: nm.tag() }))
    }

    /// A signer with the origin key and another chunk size.
    pub fn chunking_signer(chunk_size: usize) -> Signer {
        let mut s = Signer::new(OriginKey::from_seed(ORIGIN_SEED), TTL_MS);
        s.chunk_size = chunk_size;
        s
    }
}

/// The updates of PROTOCOL.md Appendix A.5, in the order of its last paragraph.
fn appendix_a5(f: &Fixture) -> Result<Chain, Error> {
    let s = &f.signer;
    let nm1 = nm_version(1, &f.nm_a3);
    let nm2 = nm_version(2, &f.nm_a5);
    let cm1 = cm_version(1, &f.cm_a4(&f.nm_a3)?, 1);
    let cm2 = cm_version(2, &f.cm_a5(&f.nm_a3)?, 1);
    let mut c = Chain::new(
        "appendix-a5",
        "The signed updates of PROTOCOL.md Appendix A.5, committed in the order its last paragraph gives (§8.4, §8.6).",
        &[&f.origin],
        &[NM, CM],
        T0_MS + 20_000,
    )?;
    c.signed("Network-map snapshot seq 1 (the map of Appendix A.3).", s.snapshot(&f.nm, &nm1, T0_MS), Intent::Committed)
        .signed(
            "Cost-map snapshot seq 1 (Appendix A.4), depending on network-map seq 1.",
            s.snapshot(&f.cm, &cm1, T0_MS),
            Intent::Committed,
        )
        .signed(
            "Cost-map diff 1 → 2: PID1 → PID3 removed, PID3 → PID3 set to 0.",
            s.diff(&f.cm, &cm1, &cm2, &diff_of("appendix-a5", &cm1, &cm2)?, T0_MS + 1_000),
            Intent::Committed,
        )
        .signed("Cost-map heartbeat at seq 2.", s.heartbeat(&f.cm, &cm2, T0_MS + 20_000), Intent::Committed)
        .signed(
            "Network-map diff 1 → 2 (PID4 added, PID2 removed); the cost map at seq 2 still depends on network-map seq 1, now in `recent` (§8.6).",
            s.diff(&f.nm, &nm1, &nm2, &diff_of("appendix-a5", &nm1, &nm2)?, T0_MS + 2_000),
            Intent::Committed,
        );
    Ok(c)
}

pub(super) const NETWORK_CHAIN: &str = "network-map-snapshot-diff-heartbeat";

fn network_map_chain(f: &Fixture) -> Result<Chain, Error> {
    let s = &f.signer;
    let nm1 = nm_version(1, &f.nm_a3);
    let nm2 = nm_version(2, &f.nm_b);
    let mut c = Chain::new(
        NETWORK_CHAIN,
        "A network map: snapshot, diff (PIDs upserted and removed), heartbeat (§6.4, §6.5, §8.3).",
        &[&f.origin],
        &[NM],
        T0_MS + 30_000,
    )?;
    c.signed("Network-map snapshot seq 1.", s.snapshot(&f.nm, &nm1, T0_MS), Intent::Committed)
        .signed(
            "Network-map diff 1 → 2: PID2 removed, PID3 replaced, PID4 added with IPv4 and IPv6 prefixes.",
            s.diff(&f.nm, &nm1, &nm2, &diff_of(NETWORK_CHAIN, &nm1, &nm2)?, T0_MS + 10_000),
            Intent::Committed,
        )
        .signed(
            "Heartbeat at seq 2: same state, expiry moved to issued_at_ms + 60,000.",
            s.heartbeat(&f.nm, &nm2, T0_MS + 20_000),
            Intent::Committed,
        );
    Ok(c)
}

pub(super) const COST_CHAIN: &str = "cost-map-snapshot-diff-heartbeat";

fn cost_map_chain(f: &Fixture) -> Result<Chain, Error> {
    let s = &f.signer;
    let nm1 = nm_version(1, &f.nm_a3);
    let cm1 = cm_version(1, &f.cm_a4(&f.nm_a3)?, 1);
    let cm2 = cm_version(2, &f.cm_c(&f.nm_a3)?, 1);
    let mut c = Chain::new(
        COST_CHAIN,
        "A cost map: snapshot, diff (entries set, changed and removed), heartbeat (§6.6, §6.7, §8.3).",
        &[&f.origin],
        &[NM, CM],
        T0_MS + 30_000,
    )?;
    c.signed("Network-map snapshot seq 1, which the cost map depends on.", s.snapshot(&f.nm, &nm1, T0_MS), Intent::Committed)
        .signed("Cost-map snapshot seq 1 (Appendix A.4).", s.snapshot(&f.cm, &cm1, T0_MS), Intent::Committed)
        .signed(
            "Cost-map diff 1 → 2: PID1 → PID2 changed, PID1 → PID3 and PID2 → PID1 removed, PID2 → PID2 changed from 0, PID3 → PID3 set where there was no path.",
            s.diff(&f.cm, &cm1, &cm2, &diff_of(COST_CHAIN, &cm1, &cm2)?, T0_MS + 10_000),
            Intent::Committed,
        )
        .signed("Cost-map heartbeat at seq 2.", s.heartbeat(&f.cm, &cm2, T0_MS + 20_000), Intent::Committed);
    Ok(c)
}

fn universe_chain(f: &Fixture) -> Result<Chain, Error> {
    let name = "pid-universe-change";
    let s = &f.signer;
    let nm1 = nm_version(1, &f.nm_a3);
    let nm2 = nm_version(2, &f.nm_u);
    let cm1 = cm_version(1, &f.cm_a4(&f.nm_a3)?, 1);
    let cm2 = cm_version(2, &f.cm_u()?, 2);
    let mut c = Chain::new(
        name,
        "PIDs added and removed in both maps in one step: the cost-map diff re-indexes rows after the universe change (§6.5, §6.7).",
        &[&f.origin],
        &[NM, CM],
        T0_MS + 30_000,
    )?;
    c.signed("Network-map snapshot seq 1.", s.snapshot(&f.nm, &nm1, T0_MS), Intent::Committed)
        .signed("Cost-map snapshot seq 1.", s.snapshot(&f.cm, &cm1, T0_MS), Intent::Committed)
        .signed(
            "Network-map diff 1 → 2: PID2 removed, PID0 (PID2's prefix) and PID4 added.",
            s.diff(&f.nm, &nm1, &nm2, &diff_of(name, &nm1, &nm2)?, T0_MS + 10_000),
            Intent::Committed,
        )
        .signed(
            "Cost-map diff 1 → 2: added_pids [PID0, PID4], removed_pids [PID2], re-bound to network-map seq 2; row indices refer to the new universe [PID0, PID1, PID3, PID4].",
            s.diff(&f.cm, &cm1, &cm2, &diff_of(name, &cm1, &cm2)?, T0_MS + 10_000),
            Intent::Committed,
        )
        .signed("Network-map heartbeat at seq 2.", s.heartbeat(&f.nm, &nm2, T0_MS + 20_000), Intent::Committed)
        .signed("Cost-map heartbeat at seq 2.", s.heartbeat(&f.cm, &cm2, T0_MS + 20_000), Intent::Committed);
    Ok(c)
}

pub(super) const REBIND_CHAIN: &str = "network-map-change-rebinds-cost-map";

fn rebind_chain(f: &Fixture) -> Result<Chain, Error> {
    let s = &f.signer;
    let nm1 = nm_version(1, &f.nm_a3);
    let nm2 = nm_version(2, &f.nm_r);
    let a4 = f.cm_a4(&f.nm_a3)?;
    let cm1 = cm_version(1, &a4, 1);
    let cm2 = cm_version(2, &f.rebound(&a4, &f.nm_r), 2);
    let mut c = Chain::new(
        REBIND_CHAIN,
        "A network-map change and the cost map re-bound to it: same costs, new dependency seq and tag, so a new cost-map tag (§3.5, §8.6, Appendix B).",
        &[&f.origin],
        &[NM, CM],
        T0_MS + 30_000,
    )?;
    c.signed("Network-map snapshot seq 1.", s.snapshot(&f.nm, &nm1, T0_MS), Intent::Committed)
        .signed("Cost-map snapshot seq 1, depending on network-map seq 1.", s.snapshot(&f.cm, &cm1, T0_MS), Intent::Committed)
        .signed(
            "Network-map diff 1 → 2: PID1 gains 192.0.3.0/24.",
            s.diff(&f.nm, &nm1, &nm2, &diff_of(REBIND_CHAIN, &nm1, &nm2)?, T0_MS + 10_000),
            Intent::Committed,
        )
        .signed(
            "Cost-map diff 1 → 2 with no rows: only network_map_id/network_map_tag move, and the dependency to network-map seq 2.",
            s.diff(&f.cm, &cm1, &cm2, &diff_of(REBIND_CHAIN, &cm1, &cm2)?, T0_MS + 10_000),
            Intent::Committed,
        )
        .signed("Network-map heartbeat at seq 2.", s.heartbeat(&f.nm, &nm2, T0_MS + 20_000), Intent::Committed)
        .signed(
            "Cost-map heartbeat at seq 2, repeating the dependency on network-map seq 2.",
            s.heartbeat(&f.cm, &cm2, T0_MS + 20_000),
            Intent::Committed,
        );
    Ok(c)
}

pub(super) const CHUNKED_CHAIN: &str = "chunked-snapshots";

fn chunked_chain(f: &Fixture) -> Result<Chain, Error> {
    let nm1 = nm_version(1, &f.nm_a3);
    let cm1 = cm_version(1, &f.cm_a4(&f.nm_a3)?, 1);
    let cm2 = cm_version(2, &f.cm_a5(&f.nm_a3)?, 1);
    let nm_snap = Fixture::chunking_signer(64).snapshot(&f.nm, &nm1, T0_MS);
    let cm_snap = Fixture::chunking_signer(48).snapshot(&f.cm, &cm1, T0_MS);
    if nm_snap.chunks.len() != 2 || cm_snap.chunks.len() < 3 {
        return Err(disagrees(CHUNKED_CHAIN, "the fixture snapshots do not chunk as described"));
    }
    let mut c = Chain::new(
        CHUNKED_CHAIN,
        "Snapshots sent as chunks bound by total_len and chunk_hashes, then a diff on top (§7).",
        &[&f.origin],
        &[NM, CM],
        T0_MS + 30_000,
    )?;
    c.signed(
        "Network-map snapshot seq 1 in 64-byte chunks: 108 bytes as two chunks (Appendix A.6).",
        nm_snap,
        Intent::Committed,
    )
    .signed("Cost-map snapshot seq 1 in 48-byte chunks.", cm_snap, Intent::Committed)
    .signed(
        "Cost-map diff 1 → 2 on the chunked snapshot (diffs are never chunked).",
        f.signer.diff(&f.cm, &cm1, &cm2, &diff_of(CHUNKED_CHAIN, &cm1, &cm2)?, T0_MS + 1_000),
        Intent::Committed,
    );
    Ok(c)
}

fn expired_chain(f: &Fixture) -> Result<Chain, Error> {
    let name = "expired-catch-up-committed-by-heartbeat";
    let s = &f.signer;
    let nm1 = nm_version(1, &f.nm_a3);
    let nm2 = nm_version(2, &f.nm_a5);
    let mut c = Chain::new(
        name,
        "A catch-up from a cache older than the TTL: expired updates are kept pending and a fresh heartbeat of the same seq commits them (§8.4 C9, §8.5).",
        &[&f.origin],
        &[NM],
        T0_MS + 200_000,
    )?;
    c.signed(
        "Snapshot seq 1 issued at T0, expired since T0 + 60,000 (+ 5,000 skew): pending, nothing held.",
        s.snapshot(&f.nm, &nm1, T0_MS),
        Intent::PendingExpired,
    )
    .signed(
        "Diff 1 → 2, also expired: it builds on the pending version (§8.4 C1) and replaces it as pending.",
        s.diff(&f.nm, &nm1, &nm2, &diff_of(name, &nm1, &nm2)?, T0_MS + 1_000),
        Intent::PendingExpired,
    )
    .signed(
        "Fresh heartbeat of seq 2: commits the pending chain; held is seq 2 with the heartbeat's times.",
        s.heartbeat(&f.nm, &nm2, T0_MS + 199_000),
        Intent::Committed,
    );
    Ok(c)
}

fn skew_chain(f: &Fixture) -> Result<Chain, Error> {
    let name = "expiry-and-skew-boundaries";
    let s = &f.signer;
    let now = T0_MS + 100_000;
    let nm1 = nm_version(1, &f.nm_a3);
    let nm2 = nm_version(2, &f.nm_a5);
    let mut c = Chain::new(
        name,
        "The 5,000 ms clock skew at its edges: expired only when expires_at_ms + 5,000 < now_ms, from the future only when issued_at_ms > now_ms + 5,000 (§8.4 C9, §11).",
        &[&f.origin],
        &[NM],
        now,
    )?;
    c.signed(
        "Snapshot expiring at now_ms - 5,000 exactly: not expired, committed.",
        s.snapshot(&f.nm, &nm1, now - 5_000 - TTL_MS),
        Intent::Committed,
    )
    .signed(
        "Diff 1 → 2 expiring at now_ms - 5,001: expired, pending.",
        s.diff(&f.nm, &nm1, &nm2, &diff_of(name, &nm1, &nm2)?, now - 5_001 - TTL_MS),
        Intent::PendingExpired,
    )
    .signed(
        "Heartbeat of seq 2 issued at now_ms + 5,000 exactly: not from the future; commits the pending diff.",
        s.heartbeat(&f.nm, &nm2, now + 5_000),
        Intent::Committed,
    );
    Ok(c)
}

fn dependency_seq_zero_chain(f: &Fixture) -> Result<Chain, Error> {
    let s = &f.signer;
    let mut c = Chain::new(
        "dependency-seq-zero-matches-any-seq",
        "A dependency with seq 0 matches the network-map version of that tag at any seq; the reference origin never sends one (§8.6).",
        &[&f.origin],
        &[NM, CM],
        T0_MS + 30_000,
    )?;
    c.signed("Network-map snapshot seq 3.", s.snapshot(&f.nm, &nm_version(3, &f.nm_a3), T0_MS), Intent::Committed)
        .signed(
            "Cost-map snapshot seq 1 whose dependency names the network map's tag with seq 0.",
            s.snapshot(&f.cm, &cm_version(1, &f.cm_a4(&f.nm_a3)?, 0), T0_MS),
            Intent::Committed,
        );
    Ok(c)
}

fn dependency_wait_chain(f: &Fixture) -> Result<Chain, Error> {
    let name = "cost-map-waits-for-pending-network-map";
    let s = &f.signer;
    let nm1 = nm_version(1, &f.nm_a3);
    let nm2 = nm_version(2, &f.nm_r);
    let cm2 = cm_version(2, &f.rebound(&f.cm_a4(&f.nm_a3)?, &f.nm_r), 2);
    let mut c = Chain::new(
        name,
        "A fresh cost map that depends on a network-map version which is only pending waits for it, and commits once it is committed (§8.5, §8.6).",
        &[&f.origin],
        &[NM, CM],
        T0_MS + 200_000,
    )?;
    c.signed("Network-map snapshot seq 1, expired: pending.", s.snapshot(&f.nm, &nm1, T0_MS), Intent::PendingExpired)
        .signed(
            "Network-map diff 1 → 2, expired: pending.",
            s.diff(&f.nm, &nm1, &nm2, &diff_of(name, &nm1, &nm2)?, T0_MS + 1_000),
            Intent::PendingExpired,
        )
        .signed(
            "Fresh cost-map snapshot seq 2 depending on network-map seq 2, which is pending: pending, waiting for that dependency.",
            s.snapshot(&f.cm, &cm2, T0_MS + 195_000),
            Intent::PendingDependency,
        )
        .signed("Fresh network-map heartbeat of seq 2: commits the network map.", s.heartbeat(&f.nm, &nm2, T0_MS + 199_000), Intent::Committed)
        .signed(
            "Fresh cost-map heartbeat of seq 2: builds on the pending cost map, whose dependency now resolves; committed.",
            s.heartbeat(&f.cm, &cm2, T0_MS + 199_000),
            Intent::Committed,
        );
    Ok(c)
}

/// `recent` holds exactly [`crate::verify::RECENT_VERSIONS`] (8) superseded
/// versions: a dependency on the oldest one still resolves, one on the version
/// before it waits. A verifier remembering more or fewer differs here (§8.6, §11).
fn recent_exactly_8_chain(f: &Fixture) -> Result<Chain, Error> {
    let name = "recent-remembers-exactly-8";
    let s = &f.signer;
    // Network-map seq 1 to 10, alternating content (so tags repeat at other seqs).
    let nm_at = |seq: u64| nm_version(seq, if seq % 2 == 1 { &f.nm_a3 } else { &f.nm_r });
    let mut c = Chain::new(
        name,
        "A verifier remembers exactly the last 8 superseded versions of a resource: after network-map seq 10, a cost map depending on seq 1 (superseded 9 versions ago, forgotten) waits while one depending on seq 2 (the oldest remembered) commits (§8.1, §8.6, §11).",
        &[&f.origin],
        &[NM, CM],
        T0_MS + 30_000,
    )?;
    c.signed(
        "Network-map snapshot seq 1 (the map of Appendix A.3).",
        s.snapshot(&f.nm, &nm_at(1), T0_MS),
        Intent::Committed,
    );
    for seq in 2..=10u64 {
        let what = if seq % 2 == 1 { "the map of seq 1 again" } else { "another map" };
        c.signed(
            &format!("Network-map snapshot seq {seq} ({what}); seq {} goes to `recent`.", seq - 1),
            s.snapshot(&f.nm, &nm_at(seq), T0_MS + seq as i64 * 100),
            Intent::Committed,
        );
    }
    c.signed(
        "Cost-map snapshot seq 1 depending on network-map seq 1 (its tag, which seqs 3, 5, 7 and 9 also have): seq 1 is no longer remembered, and is older than the held seq 10, so the update waits (pending, dependency); a verifier remembering 9 or more versions would commit it.",
        s.snapshot(&f.cm, &cm_version(1, &f.cm_a4(&f.nm_a3)?, 1), T0_MS + 2_000),
        Intent::PendingDependency,
    )
    .signed(
        "Cost-map snapshot seq 2 depending on network-map seq 2, the oldest of the 8 remembered versions: committed (a verifier remembering fewer than 8 would keep it pending); the pending seq 1 is discarded.",
        s.snapshot(&f.cm, &cm_version(2, &f.cm_a4(&f.nm_r)?, 2), T0_MS + 3_000),
        Intent::Committed,
    );
    Ok(c)
}

fn jumps_chain(f: &Fixture) -> Result<Chain, Error> {
    let name = "seq-jumps-squashed-diff-and-heartbeat-replays";
    let s = &f.signer;
    let v5 = nm_version(5, &f.nm_a3);
    let v7 = nm_version(7, &f.nm_a5);
    let v9 = nm_version(9, &f.nm_r);
    let hb = s.heartbeat(&f.nm, &v7, T0_MS + 1_000);
    let mut c = Chain::new(
        name,
        "A snapshot may start at any seq, a diff may skip seqs, a heartbeat with the held issued_at_ms (or replayed) changes nothing, and a newer snapshot replaces the held version (§8.3).",
        &[&f.origin],
        &[NM],
        T0_MS + 30_000,
    )?;
    c.signed("Snapshot seq 5 with nothing held.", s.snapshot(&f.nm, &v5, T0_MS), Intent::Committed)
        .signed(
            "Squashed diff 5 → 7 (base_seq 5, seq 7).",
            s.diff(&f.nm, &v5, &v7, &diff_of(name, &v5, &v7)?, T0_MS + 1_000),
            Intent::Committed,
        )
        .signed(
            "Heartbeat of seq 7 issued at the same time as the diff: committed, nothing changes.",
            hb.clone(),
            Intent::Committed,
        )
        .signed("The same heartbeat replayed: committed, nothing changes (§12.2).", hb, Intent::Committed)
        .signed("Snapshot seq 9 over held seq 7.", s.snapshot(&f.nm, &v9, T0_MS + 2_000), Intent::Committed);
    Ok(c)
}

fn with_signatures(u: &pb::SignedUpdate, sigs: Vec<pb::Signature>) -> pb::SignedUpdate {
    pb::SignedUpdate { body: u.body.clone(), signatures: sigs }
}

fn signatures_chain(f: &Fixture) -> Result<Chain, Error> {
    let name = "signature-sets";
    let s = &f.signer;
    let nm1 = nm_version(1, &f.nm_a3);
    let nm2 = nm_version(2, &f.nm_a5);
    let snap = s.snapshot(&f.nm, &nm1, T0_MS).update;
    let diff = s.diff(&f.nm, &nm1, &nm2, &diff_of(name, &nm1, &nm2)?, T0_MS + 1_000).update;
    let hb1 = s.heartbeat(&f.nm, &nm2, T0_MS + 20_000).update;
    let hb2 = s.heartbeat(&f.nm, &nm2, T0_MS + 25_000).update;
    let sig = |k: &OriginKey, u: &pb::SignedUpdate| k.sign(UPDATE_CONTEXT, &u.body);
    let mut upper = sig(&f.origin, &hb2);
    upper.key_id = upper.key_id.to_uppercase();
    let mut short = sig(&f.second, &hb2);
    short.key_id.truncate(8);
    let mut c = Chain::new(
        name,
        "Two trusted keys (rotation): unknown key ids are skipped, every trusted signature must verify, one is enough (§4.2, §5.3).",
        &[&f.origin, &f.second],
        &[NM],
        T0_MS + 30_000,
    )?;
    c.raw(
        "Snapshot signed by the untrusted key, then by the origin key: the unknown key id is skipped.",
        with_signatures(&snap, vec![sig(&f.untrusted, &snap), sig(&f.origin, &snap)]),
        vec![],
        Intent::Committed,
    )
    .raw(
        "Diff signed by both trusted keys: both verify.",
        with_signatures(&diff, vec![sig(&f.origin, &diff), sig(&f.second, &diff)]),
        vec![],
        Intent::Committed,
    )
    .raw("Heartbeat signed by the second key only.", with_signatures(&hb1, vec![sig(&f.second, &hb1)]), vec![], Intent::Committed)
    .raw(
        "Heartbeat whose first signature names the origin key id in upper case and whose second names the second key's id cut to 8 characters (both match no key and are skipped), then a valid one by the second key.",
        with_signatures(&hb2, vec![upper, short, sig(&f.second, &hb2)]),
        vec![],
        Intent::Committed,
    );
    Ok(c)
}

fn raw_pid(pid: &str, ipv4: &[&str], ipv6: &[&str]) -> pb::PidPrefixes {
    pb::PidPrefixes {
        pid: pid.into(),
        ipv4: ipv4.iter().map(|s| s.to_string()).collect(),
        ipv6: ipv6.iter().map(|s| s.to_string()).collect(),
    }
}

fn network_diff_chain(f: &Fixture) -> Result<Chain, Error> {
    let name = "network-map-wire-order-and-diff-edge-cases";
    let s = &f.signer;
    let v1 = nm_version(1, &f.nm_a3);
    let target = network_map(&[
        ("PID1", &["192.0.2.0/25", "192.0.2.128/25"], &[]),
        ("PID3", &["0.0.0.0/0"], &["::/0", "2001:db8::/32"]),
        ("PID5", &["203.0.113.0/25"], &["2001:db8:5::/48"]),
        ("PID6", &[], &[]),
    ])?;
    let v2 = nm_version(2, &target);
    let v3 = nm_version(3, &target);
    let snap = resign(name, &f.origin, &s.snapshot(&f.nm, &v1, T0_MS).update, |u| {
        u.payload = Some(pb::update::Payload::Snapshot(pb::Snapshot {
            map: Some(pb::snapshot::Map::NetworkMap(pb::NetworkMapState {
                pids: vec![
                    raw_pid("PID3", &["0.0.0.0/0"], &["2001:db8::/32", "::/0", "2001:db8::/32"]),
                    raw_pid("PID1", &["198.51.100.0/25", "192.0.2.0/24", "198.51.100.0/25"], &[]),
                    raw_pid("PID2", &["198.51.100.128/25"], &[]),
                ],
            })),
        }));
        Some(())
    })?;
    let diff =
        resign(name, &f.origin, &s.diff(&f.nm, &v1, &v2, &diff_of(name, &v1, &v2)?, T0_MS + 1_000).update, |u| {
            u.payload = Some(pb::update::Payload::Diff(pb::Diff {
                map: Some(pb::diff::Map::NetworkMap(pb::NetworkMapDiff {
                    upsert: vec![
                        raw_pid("PID5", &["203.0.113.0/24"], &[]),
                        raw_pid("PID1", &["192.0.2.128/25", "192.0.2.0/25"], &[]),
                        raw_pid("PID6", &[], &[]),
                        raw_pid("PID5", &["203.0.113.0/25"], &["2001:db8:5::/48"]),
                    ],
                    removed: vec!["PID2".into(), "PID1".into()],
                })),
            }));
            Some(())
        })?;
    let empty = MapDiff::Network(NetworkMapDiff::default());
    let mut c = Chain::new(
        name,
        "Wire lists in any order with repeats, a PID removed and upserted in one diff, a later upsert winning, a PID without prefixes and an empty diff (§6.4, §6.5).",
        &[&f.origin],
        &[NM],
        T0_MS + 30_000,
    )?;
    c.raw(
        "Snapshot whose PIDs and prefixes are unsorted and repeated: canonicalised, its tag is that of Appendix A.3.",
        snap,
        vec![],
        Intent::Committed,
    )
    .raw(
        "Diff with removed [PID2, PID1] and upsert [PID5, PID1, PID6, PID5 again]: PID1 is replaced, the second PID5 wins, PID6 has no prefixes.",
        diff,
        vec![],
        Intent::Committed,
    )
    .signed("Empty diff 2 → 3: seq moves, the tag does not.", s.diff(&f.nm, &v2, &v3, &empty, T0_MS + 2_000), Intent::Committed);
    Ok(c)
}

pub(super) const ORDINAL_CHAIN: &str = "ordinal-cost-map";

fn ordinal_chain(f: &Fixture) -> Result<Chain, Error> {
    let s = &f.signer;
    let ord = rid(ORDINAL_CM)?;
    let nm1 = nm_version(1, &f.nm_a3);
    let cm1 = cm_version(1, &f.cm_ordinal(false)?, 1);
    let cm2 = cm_version(2, &f.cm_ordinal(true)?, 1);
    let mut c = Chain::new(
        ORDINAL_CHAIN,
        "An ordinal (hopcount) cost map: integral non-negative costs, snapshot, diff, heartbeat (§2.4, §2.5, §6.7).",
        &[&f.origin],
        &[NM, ORDINAL_CM],
        T0_MS + 30_000,
    )?;
    c.signed("Network-map snapshot seq 1.", s.snapshot(&f.nm, &nm1, T0_MS), Intent::Committed)
        .signed("Ordinal cost-map snapshot seq 1.", s.snapshot(&ord, &cm1, T0_MS), Intent::Committed)
        .signed(
            "Ordinal cost-map diff 1 → 2.",
            s.diff(&ord, &cm1, &cm2, &diff_of(ORDINAL_CHAIN, &cm1, &cm2)?, T0_MS + 10_000),
            Intent::Committed,
        )
        .signed("Ordinal cost-map heartbeat at seq 2.", s.heartbeat(&ord, &cm2, T0_MS + 20_000), Intent::Committed);
    Ok(c)
}

/// Every chain, in file order.
pub(super) fn all() -> Result<Vec<Chain>, Error> {
    let f = Fixture::new()?;
    Ok(vec![
        appendix_a5(&f)?,
        network_map_chain(&f)?,
        cost_map_chain(&f)?,
        universe_chain(&f)?,
        rebind_chain(&f)?,
        chunked_chain(&f)?,
        expired_chain(&f)?,
        skew_chain(&f)?,
        dependency_wait_chain(&f)?,
        dependency_seq_zero_chain(&f)?,
        jumps_chain(&f)?,
        signatures_chain(&f)?,
        network_diff_chain(&f)?,
        ordinal_chain(&f)?,
        recent_exactly_8_chain(&f)?,
    ])
}

pub(super) fn build() -> Result<Value, Error> {
    let chains = all()?.iter().map(Chain::to_json).collect::<Result<Vec<_>, _>>()?;
    Ok(file(
        Group::Chains,
        "Valid chains of signed updates and the verifier's outcome after each step (PROTOCOL.md §6, §7, §8).",
        vec![("chains", chains)],
    ))
}
