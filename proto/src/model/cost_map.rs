//! The cost map: a routing cost between PIDs (RFC 7285 §6, §11.2.3), with diffs
//! and an incremental tag.
//!
//! Representation: the PID universe is a sorted list; each source row is a dense
//! `[f64]` indexed by destination, with [`NO_PATH`] (a canonical NaN) for "no
//! path". Rows are `Arc`-shared, so a new version built by [`CostMap::apply`]
//! copies only the rows a diff touches, and the old version stays valid for its
//! readers. Each row keeps its BLAKE3 hash; the tag hashes the header and the
//! ordered row hashes, so a diff touching k rows costs O(k·n + n·32) bytes of
//! hashing.
//!
//! PROTOCOL.md §2.4 (cost type), §2.5 (costs) and §2.6 (cost map); the tag's
//! preimages (§3.5) are in `crate::tag::cost_map`, the wire messages (§6.6,
//! §6.7) in [`crate::wire`].

use std::{collections::HashMap, sync::Arc};

use crate::{
    ModelError, Pid, ResourceId, Tag,
    model::network_map::MAX_PIDS,
    tag::{
        self,
        cost_map::{names_hash, row_bytes, row_hash},
    },
};

/// The marker for "no path" in a dense row. Input costs are validated finite,
/// so this NaN never collides with a real cost, and its bits are fixed so row
/// hashes are canonical.
pub const NO_PATH: f64 = f64::from_bits(0x7ff8_0000_0000_0000);

fn is_absent(v: f64) -> bool {
    v.is_nan()
}

/// RFC 7285 §6.1.2 cost mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CostMode {
    /// Any finite number.
    Numerical,
    /// Non-negative integers meaning only an order.
    Ordinal,
}

impl CostMode {
    /// The RFC 7285 JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CostMode::Numerical => "numerical",
            CostMode::Ordinal => "ordinal",
        }
    }

    /// Parses the RFC 7285 JSON spelling.
    pub fn parse(s: &str) -> Result<Self, ModelError> {
        match s {
            "numerical" => Ok(CostMode::Numerical),
            "ordinal" => Ok(CostMode::Ordinal),
            other => Err(ModelError::BadCostMode(other.chars().take(64).collect())),
        }
    }
}

/// RFC 7285 §10.7 cost type: metric and mode.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CostType {
    /// e.g. `routingcost`.
    pub metric: String,
    /// Numerical or ordinal.
    pub mode: CostMode,
}

impl CostType {
    /// Validates the metric name (1–32 characters, RFC 7285 §10.6 syntax).
    pub fn new(metric: &str, mode: CostMode) -> Result<Self, ModelError> {
        let ok = !metric.is_empty()
            && metric.len() <= 32
            && metric.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '_' | '@' | '.'));
        if !ok {
            return Err(ModelError::BadCostMetric(metric.chars().take(64).collect()));
        }
        Ok(CostType { metric: metric.to_owned(), mode })
    }

    /// The default `numerical` / `routingcost` type.
    pub fn routingcost() -> Self {
        CostType { metric: "routingcost".into(), mode: CostMode::Numerical }
    }

    fn check(&self, src: &str, dst: &str, v: f64) -> Result<f64, ModelError> {
        if !v.is_finite() {
            return Err(ModelError::NonFiniteCost { src: src.into(), dst: dst.into(), value: v });
        }
        if self.mode == CostMode::Ordinal && (v < 0.0 || v.fract() != 0.0) {
            return Err(ModelError::BadOrdinalCost { src: src.into(), dst: dst.into(), value: v });
        }
        // -0.0 and 0.0 are the same cost; keep one bit pattern so hashes agree.
        Ok(v + 0.0)
    }
}

/// A `{resource-id, tag}` pair (RFC 7285 §10.3 VersionTag).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VersionTag {
    /// The resource.
    pub resource_id: ResourceId,
    /// Its content tag.
    pub tag: Tag,
}

/// A validated cost map. Immutable: [`CostMap::apply`] returns a new map.
#[derive(Clone)]
pub struct CostMap {
    cost_type: CostType,
    depends_on: Option<VersionTag>,
    pids: Arc<[Pid]>,
    index: Arc<HashMap<Pid, u32>>,
    names_hash: [u8; 32],
    rows: Vec<Arc<[f64]>>,
    row_hashes: Vec<[u8; 32]>,
    tag: Tag,
}

impl std::fmt::Debug for CostMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CostMap")
            .field("cost_type", &self.cost_type)
            .field("pids", &self.pids.len())
            .field("tag", &self.tag)
            .finish()
    }
}

impl PartialEq for CostMap {
    fn eq(&self, other: &Self) -> bool {
        self.tag == other.tag
            && self.cost_type == other.cost_type
            && self.depends_on == other.depends_on
            && self.pids == other.pids
            && self.rows.iter().zip(&other.rows).all(|(a, b)| row_bytes(a) == row_bytes(b))
    }
}

/// One source row's changes in a [`CostMapDiff`]. Indices refer to the PID
/// universe after the diff's PID additions and removals.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CostRowDiff {
    /// Source PID index.
    pub src: u32,
    /// Destinations set (added or changed), strictly ascending.
    pub set_dst: Vec<u32>,
    /// Costs parallel to `set_dst`.
    pub set_cost: Vec<f64>,
    /// Destinations that became unreachable, strictly ascending.
    pub removed_dst: Vec<u32>,
}

/// The change between two cost maps of the same cost type: O(k) for k changed
/// entries.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CostMapDiff {
    /// PIDs added to the universe, ascending.
    pub added_pids: Vec<Pid>,
    /// PIDs removed from the universe (with their rows and columns), ascending.
    pub removed_pids: Vec<Pid>,
    /// The new dependent network-map version, when it changed.
    pub depends_on: Option<VersionTag>,
    /// Changed rows, ascending `src`.
    pub rows: Vec<CostRowDiff>,
}

impl CostMapDiff {
    /// Entries set or removed (PID additions and removals count once each).
    pub fn entries_changed(&self) -> usize {
        self.added_pids.len()
            + self.removed_pids.len()
            + self.rows.iter().map(|r| r.set_dst.len() + r.removed_dst.len()).sum::<usize>()
    }

    /// True when the diff changes nothing.
    pub fn is_empty(&self) -> bool {
        self.added_pids.is_empty() && self.removed_pids.is_empty() && self.depends_on.is_none() && self.rows.is_empty()
    }
}

/// Builds a [`CostMap`] from entries given by name.
#[derive(Debug)]
pub struct CostMapBuilder {
    cost_type: CostType,
    depends_on: Option<VersionTag>,
    entries: Vec<(Pid, Vec<(Pid, f64)>)>,
}

impl CostMapBuilder {
    /// A builder for a map of `cost_type`, computed against `depends_on`.
    pub fn new(cost_type: CostType, depends_on: Option<VersionTag>) -> Self {
        CostMapBuilder { cost_type, depends_on, entries: Vec::new() }
    }

    /// Adds a source row (possibly empty, which still puts `src` in the universe).
    pub fn row(&mut self, src: Pid, costs: Vec<(Pid, f64)>) -> &mut Self {
        self.entries.push((src, costs));
        self
    }

    /// Validates every cost and builds the map. The PID universe is every PID
    /// named as a source or a destination.
    pub fn build(self) -> Result<CostMap, ModelError> {
        let mut names: Vec<Pid> = self
            .entries
            .iter()
            .flat_map(|(s, r)| std::iter::once(s).chain(r.iter().map(|(d, _)| d)))
            .cloned()
            .collect();
        names.sort_unstable();
        names.dedup();
        if names.len() > MAX_PIDS {
            return Err(ModelError::TooManyPids { what: "cost map", count: names.len(), limit: MAX_PIDS });
        }
        let n = names.len();
        let index: HashMap<Pid, u32> = names.iter().enumerate().map(|(i, p)| (p.clone(), i as u32)).collect();
        let mut rows: Vec<Vec<f64>> = vec![Vec::new(); n];
        for (src, costs) in &self.entries {
            let row = &mut rows[index[src] as usize];
            if row.is_empty() {
                row.resize(n, NO_PATH);
            }
            for (dst, v) in costs {
                row[index[dst] as usize] = self.cost_type.check(src.as_str(), dst.as_str(), *v)?;
            }
        }
        let rows = rows.into_iter().map(|r| if r.is_empty() { vec![NO_PATH; n].into() } else { r.into() }).collect();
        Ok(CostMap::assemble(self.cost_type, self.depends_on, names.into(), Arc::new(index), rows))
    }
}

impl CostMap {
    fn assemble(
        cost_type: CostType,
        depends_on: Option<VersionTag>,
        pids: Arc<[Pid]>,
        index: Arc<HashMap<Pid, u32>>,
        rows: Vec<Arc<[f64]>>,
    ) -> CostMap {
        let row_hashes = rows.iter().map(|r| row_hash(r)).collect();
        let mut m = CostMap {
            cost_type,
            depends_on,
            names_hash: names_hash(&pids),
            pids,
            index,
            rows,
            row_hashes,
            tag: Tag::ZERO,
        };
        m.tag = m.compute_tag();
        m
    }

    fn compute_tag(&self) -> Tag {
        tag::cost_map::map_tag(&self.cost_type, self.depends_on.as_ref(), &self.names_hash, &self.row_hashes)
    }

    /// Rebuilds every row and hash from scratch; for tests and benchmarks that
    /// check the incremental tag against a full one.
    pub fn full_rehash_tag(&self) -> Tag {
        let rows = self.rows.iter().map(|r| Arc::from(&r[..])).collect();
        CostMap::assemble(self.cost_type.clone(), self.depends_on.clone(), self.pids.clone(), self.index.clone(), rows)
            .tag
    }

    /// The content tag.
    pub fn tag(&self) -> Tag {
        self.tag
    }

    /// The cost type.
    pub fn cost_type(&self) -> &CostType {
        &self.cost_type
    }

    /// The network-map version this map was computed against.
    pub fn depends_on(&self) -> Option<&VersionTag> {
        self.depends_on.as_ref()
    }

    /// Returns the same map bound to another network-map version.
    pub fn with_dependency(&self, depends_on: Option<VersionTag>) -> CostMap {
        let mut m = self.clone();
        m.depends_on = depends_on;
        m.tag = m.compute_tag();
        m
    }

    /// The PID universe, ascending.
    pub fn pids(&self) -> &[Pid] {
        &self.pids
    }

    /// Index of `pid` in [`CostMap::pids`].
    pub fn index_of(&self, pid: &str) -> Option<u32> {
        self.index.get(pid).copied()
    }

    /// The cost from `src` to `dst`; `None` when either is unknown or there is no path.
    pub fn cost(&self, src: &str, dst: &str) -> Option<f64> {
        let (s, d) = (self.index_of(src)?, self.index_of(dst)?);
        self.cost_at(s, d)
    }

    /// The cost between two PID indices; `None` for no path.
    pub fn cost_at(&self, src: u32, dst: u32) -> Option<f64> {
        let v = *self.rows.get(src as usize)?.get(dst as usize)?;
        (!is_absent(v)).then_some(v)
    }

    /// The dense row of a source PID index ([`NO_PATH`] where there is none).
    pub fn row(&self, src: u32) -> Option<&[f64]> {
        self.rows.get(src as usize).map(|r| &r[..])
    }

    /// `(dst index, cost)` of every reachable destination of `src`.
    pub fn entries(&self, src: u32) -> impl Iterator<Item = (u32, f64)> + '_ {
        self.rows[src as usize].iter().enumerate().filter(|(_, v)| !is_absent(**v)).map(|(i, v)| (i as u32, *v))
    }

    /// Number of (src, dst) pairs with a cost.
    pub fn entry_count(&self) -> usize {
        self.rows.iter().map(|r| r.iter().filter(|v| !is_absent(**v)).count()).sum()
    }

    /// The change from `self` to `new`, or `None` if it cannot be a diff
    /// (the cost type differs, or the dependency was dropped).
    pub fn diff(&self, new: &CostMap) -> Option<CostMapDiff> {
        if self.cost_type != new.cost_type || (self.depends_on.is_some() && new.depends_on.is_none()) {
            return None;
        }
        let depends_on = (self.depends_on != new.depends_on).then(|| new.depends_on.clone()).flatten();
        let mut d = CostMapDiff { depends_on, ..Default::default() };
        if self.pids == new.pids {
            for (i, (a, b)) in self.rows.iter().zip(&new.rows).enumerate() {
                if self.row_hashes[i] != new.row_hashes[i] {
                    push_row_diff(&mut d.rows, i as u32, a.iter().copied(), b);
                }
            }
            return Some(d);
        }
        d.added_pids = new.pids.iter().filter(|p| !self.index.contains_key(*p)).cloned().collect();
        d.removed_pids = self.pids.iter().filter(|p| !new.index.contains_key(*p)).cloned().collect();
        // Map each new index to the old one (if the PID existed before).
        let old_of: Vec<Option<u32>> = new.pids.iter().map(|p| self.index.get(p).copied()).collect();
        for (i, b) in new.rows.iter().enumerate() {
            let old_row = old_of[i].map(|o| &self.rows[o as usize]);
            let a = old_of.iter().map(|o| match (old_row, o) {
                (Some(r), Some(o)) => r[*o as usize],
                _ => NO_PATH,
            });
            push_row_diff(&mut d.rows, i as u32, a, b);
        }
        Some(d)
    }

    /// Applies `diff` and returns the new map; `self` is never modified. Every
    /// index, ordering and cost is validated; a diff that does not fit this
    /// exact state (e.g. removes an entry that is absent) is rejected.
    pub fn apply(&self, diff: &CostMapDiff) -> Result<CostMap, ModelError> {
        let mut next = if diff.added_pids.is_empty() && diff.removed_pids.is_empty() {
            self.clone()
        } else {
            self.reshape(&diff.added_pids, &diff.removed_pids)?
        };
        if let Some(dep) = &diff.depends_on {
            next.depends_on = Some(dep.clone());
        }
        let n = next.pids.len();
        let mut last_src: Option<u32> = None;
        for (k, rd) in diff.rows.iter().enumerate() {
            let at = || format!("diff row {k}");
            if rd.src as usize >= n {
                return Err(ModelError::IndexOutOfRange { at: at(), index: rd.src, len: n });
            }
            if last_src.is_some_and(|l| l >= rd.src) {
                return Err(ModelError::NotAscending { at: at() });
            }
            last_src = Some(rd.src);
            if rd.set_dst.len() != rd.set_cost.len() {
                return Err(ModelError::LengthMismatch { at: at(), a: rd.set_dst.len(), b: rd.set_cost.len() });
            }
            check_ascending(&rd.set_dst, n, &at)?;
            check_ascending(&rd.removed_dst, n, &at)?;
            let src_name = next.pids[rd.src as usize].clone();
            let mut row: Vec<f64> = next.rows[rd.src as usize].to_vec();
            for &dst in &rd.removed_dst {
                if is_absent(row[dst as usize]) {
                    return Err(ModelError::DiffMismatch(format!(
                        "removes cost-map[{src_name:?}][{:?}], which has no cost",
                        next.pids[dst as usize]
                    )));
                }
                row[dst as usize] = NO_PATH;
            }
            for (&dst, &v) in rd.set_dst.iter().zip(&rd.set_cost) {
                if rd.removed_dst.binary_search(&dst).is_ok() {
                    return Err(ModelError::DiffMismatch(format!("{} both sets and removes index {dst}", at())));
                }
                row[dst as usize] = next.cost_type.check(src_name.as_str(), next.pids[dst as usize].as_str(), v)?;
            }
            next.row_hashes[rd.src as usize] = row_hash(&row);
            next.rows[rd.src as usize] = row.into();
        }
        next.tag = next.compute_tag();
        Ok(next)
    }

    /// A copy with the PID universe changed; rows and columns are remapped.
    fn reshape(&self, added: &[Pid], removed: &[Pid]) -> Result<CostMap, ModelError> {
        for p in removed {
            if !self.index.contains_key(p) {
                return Err(ModelError::DiffMismatch(format!("removes PID {p:?}, which the cost map does not have")));
            }
        }
        for p in added {
            if self.index.contains_key(p) {
                return Err(ModelError::DiffMismatch(format!("adds PID {p:?}, which the cost map already has")));
            }
        }
        let mut names: Vec<Pid> = self.pids.iter().filter(|p| removed.binary_search(p).is_err()).cloned().collect();
        names.extend(added.iter().cloned());
        names.sort_unstable();
        names.dedup();
        if names.len() > MAX_PIDS {
            return Err(ModelError::TooManyPids { what: "cost map", count: names.len(), limit: MAX_PIDS });
        }
        let old_of: Vec<Option<u32>> = names.iter().map(|p| self.index.get(p).copied()).collect();
        let rows = old_of
            .iter()
            .map(|src| match src {
                Some(s) => {
                    let r = &self.rows[*s as usize];
                    old_of.iter().map(|d| d.map_or(NO_PATH, |d| r[d as usize])).collect()
                }
                None => vec![NO_PATH; names.len()].into(),
            })
            .collect();
        let index = names.iter().enumerate().map(|(i, p)| (p.clone(), i as u32)).collect();
        Ok(CostMap::assemble(self.cost_type.clone(), self.depends_on.clone(), names.into(), Arc::new(index), rows))
    }

    /// Checks the map against its network map: every PID exists there and the
    /// dependency names it.
    pub fn check_against(&self, nm_id: &ResourceId, nm: &crate::NetworkMap) -> Result<(), ModelError> {
        for (i, p) in self.pids.iter().enumerate() {
            if !nm.contains(p.as_str()) {
                let is_src = self.entries(i as u32).next().is_some();
                return Err(ModelError::UnknownPid {
                    role: if is_src { "source" } else { "destination" },
                    pid: p.to_string(),
                    network_map: nm_id.to_string(),
                });
            }
        }
        match &self.depends_on {
            Some(v) if v.resource_id == *nm_id && v.tag == nm.tag() => Ok(()),
            other => Err(ModelError::DependentVtagMismatch {
                expected_id: nm_id.to_string(),
                expected: nm.tag().to_hex(),
                got_id: other.as_ref().map(|v| v.resource_id.to_string()).unwrap_or_default(),
                got: other.as_ref().map(|v| v.tag.to_hex()).unwrap_or_default(),
            }),
        }
    }

    /// Builds a map from already-indexed parts, validating everything (used when
    /// decoding a snapshot from the wire).
    pub fn from_indexed(
        cost_type: CostType,
        depends_on: Option<VersionTag>,
        pids: Vec<Pid>,
        rows: impl IntoIterator<Item = (u32, Vec<u32>, Vec<f64>)>,
    ) -> Result<CostMap, ModelError> {
        if pids.windows(2).any(|w| w[0] >= w[1]) {
            return Err(ModelError::NotAscending { at: "snapshot pids".into() });
        }
        if pids.len() > MAX_PIDS {
            return Err(ModelError::TooManyPids { what: "cost map", count: pids.len(), limit: MAX_PIDS });
        }
        let n = pids.len();
        let mut dense: Vec<Option<Arc<[f64]>>> = vec![None; n];
        for (k, (src, dst, cost)) in rows.into_iter().enumerate() {
            let at = || format!("snapshot row {k}");
            let slot = dense.get_mut(src as usize).ok_or_else(|| ModelError::IndexOutOfRange {
                at: at(),
                index: src,
                len: n,
            })?;
            if slot.is_some() {
                return Err(ModelError::NotAscending { at: at() });
            }
            if dst.len() != cost.len() {
                return Err(ModelError::LengthMismatch { at: at(), a: dst.len(), b: cost.len() });
            }
            check_ascending(&dst, n, &at)?;
            let mut row = vec![NO_PATH; n];
            for (d, v) in dst.iter().zip(cost) {
                row[*d as usize] = cost_type.check(pids[src as usize].as_str(), pids[*d as usize].as_str(), v)?;
            }
            *slot = Some(row.into());
        }
        let rows = dense.into_iter().map(|r| r.unwrap_or_else(|| vec![NO_PATH; n].into())).collect();
        let index = pids.iter().enumerate().map(|(i, p)| (p.clone(), i as u32)).collect();
        Ok(CostMap::assemble(cost_type, depends_on, pids.into(), Arc::new(index), rows))
    }
}

fn check_ascending(idx: &[u32], n: usize, at: &dyn Fn() -> String) -> Result<(), ModelError> {
    if let Some(&bad) = idx.iter().find(|&&i| i as usize >= n) {
        return Err(ModelError::IndexOutOfRange { at: at(), index: bad, len: n });
    }
    if idx.windows(2).any(|w| w[0] >= w[1]) {
        return Err(ModelError::NotAscending { at: at() });
    }
    Ok(())
}

fn push_row_diff(out: &mut Vec<CostRowDiff>, src: u32, old: impl Iterator<Item = f64>, new: &[f64]) {
    let mut rd = CostRowDiff { src, ..Default::default() };
    for (j, (a, b)) in old.zip(new.iter().copied()).enumerate() {
        match (is_absent(a), is_absent(b)) {
            (true, true) => {}
            (false, true) => rd.removed_dst.push(j as u32),
            (_, false) if a.to_bits() != b.to_bits() => {
                rd.set_dst.push(j as u32);
                rd.set_cost.push(b);
            }
            _ => {}
        }
    }
    if !rd.set_dst.is_empty() || !rd.removed_dst.is_empty() {
        out.push(rd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(s: &str) -> Pid {
        Pid::new(s).expect("pid")
    }

    fn build(ct: CostType, rows: &[(&str, &[(&str, f64)])]) -> Result<CostMap, ModelError> {
        let mut b = CostMapBuilder::new(ct, None);
        for (s, r) in rows {
            b.row(pid(s), r.iter().map(|(d, v)| (pid(d), *v)).collect());
        }
        b.build()
    }

    #[test]
    fn rejects_non_finite_and_bad_ordinal_costs_naming_the_entry() {
        let err = build(CostType::routingcost(), &[("a", &[("b", f64::NAN)])]).unwrap_err();
        assert!(matches!(&err, ModelError::NonFiniteCost { src, dst, .. } if src == "a" && dst == "b"), "{err}");
        let ord = CostType::new("routingcost", CostMode::Ordinal).expect("ct");
        let err = build(ord.clone(), &[("a", &[("b", 1.5)])]).unwrap_err();
        assert!(matches!(err, ModelError::BadOrdinalCost { .. }));
        let err = build(ord.clone(), &[("a", &[("b", -1.0)])]).unwrap_err();
        assert!(matches!(err, ModelError::BadOrdinalCost { .. }));
        assert!(build(ord, &[("a", &[("b", 3.0)])]).is_ok());
    }

    #[test]
    fn diff_handles_removal_addition_and_universe_change() {
        let a = build(CostType::routingcost(), &[("a", &[("a", 0.0), ("b", 5.0)]), ("b", &[("a", 5.0)])]).expect("a");
        let b = build(CostType::routingcost(), &[("a", &[("a", 0.0), ("c", 7.0)]), ("c", &[("a", 7.0)])]).expect("b");
        let d = a.diff(&b).expect("diffable");
        assert_eq!(d.added_pids, vec![pid("c")]);
        assert_eq!(d.removed_pids, vec![pid("b")]);
        let got = a.apply(&d).expect("apply");
        assert_eq!(got, b);
        assert_eq!(got.tag(), got.full_rehash_tag());
        assert_eq!(got.cost("a", "c"), Some(7.0));
        assert_eq!(got.cost("a", "b"), None);
    }

    #[test]
    fn apply_rejects_removing_an_absent_entry_and_leaves_state() {
        let a = build(CostType::routingcost(), &[("a", &[("b", 5.0)])]).expect("a");
        let tag = a.tag();
        let d = CostMapDiff {
            rows: vec![CostRowDiff { src: 1, removed_dst: vec![0], ..Default::default() }],
            ..Default::default()
        };
        assert!(matches!(a.apply(&d), Err(ModelError::DiffMismatch(_))));
        let d = CostMapDiff { rows: vec![CostRowDiff { src: 9, ..Default::default() }], ..Default::default() };
        assert!(matches!(a.apply(&d), Err(ModelError::IndexOutOfRange { .. })));
        assert_eq!(a.tag(), tag);
    }
}
