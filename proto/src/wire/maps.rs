//! Conversions between the model and the generated protobuf types. Decoding
//! validates (`TryFrom<&pb::…>`), so code past this point sees only valid maps.
//!
//! PROTOCOL.md §6.4 (network-map state), §6.5 (network-map diff), §6.6
//! (cost-map state) and §6.7 (cost-map diff).

use std::collections::BTreeMap;

use crate::{
    CostMap, CostMapDiff, CostMode, CostRowDiff, CostType, ModelError, NetworkMap, NetworkMapDiff, Pid, PidPrefixes,
    ResourceId, Tag, VersionTag, pb,
};

fn pid(at: &str, s: &str) -> Result<Pid, ModelError> {
    Pid::new(s).map_err(|source| ModelError::InvalidPid { at: at.into(), source })
}

fn tag(at: &str, b: &[u8]) -> Result<Tag, ModelError> {
    Tag::from_slice(b).map_err(|_| ModelError::BadTag { at: at.into(), tag: hex::encode(&b[..b.len().min(40)]) })
}

fn prefixes_to_pb(pid: &Pid, p: &PidPrefixes) -> pb::PidPrefixes {
    pb::PidPrefixes {
        pid: pid.to_string(),
        ipv4: p.ipv4.iter().map(|n| n.to_string()).collect(),
        ipv6: p.ipv6.iter().map(|n| n.to_string()).collect(),
    }
}

fn prefixes_from_pb(p: &pb::PidPrefixes) -> Result<(Pid, PidPrefixes), ModelError> {
    Ok((pid("network map PID", &p.pid)?, PidPrefixes::parse(&p.pid, &p.ipv4, &p.ipv6)?))
}

impl From<&NetworkMap> for pb::NetworkMapState {
    fn from(m: &NetworkMap) -> Self {
        pb::NetworkMapState { pids: m.iter().map(|(p, e)| prefixes_to_pb(p, e)).collect() }
    }
}

impl TryFrom<&pb::NetworkMapState> for NetworkMap {
    type Error = ModelError;
    fn try_from(s: &pb::NetworkMapState) -> Result<Self, ModelError> {
        let mut pids = BTreeMap::new();
        for p in &s.pids {
            let (k, v) = prefixes_from_pb(p)?;
            if pids.insert(k, v).is_some() {
                return Err(ModelError::DiffMismatch(format!("PID {:?} listed twice", p.pid)));
            }
        }
        NetworkMap::new(pids)
    }
}

impl From<&NetworkMapDiff> for pb::NetworkMapDiff {
    fn from(d: &NetworkMapDiff) -> Self {
        pb::NetworkMapDiff {
            upsert: d.upsert.iter().map(|(p, e)| prefixes_to_pb(p, e)).collect(),
            removed: d.removed.iter().map(|p| p.to_string()).collect(),
        }
    }
}

impl TryFrom<&pb::NetworkMapDiff> for NetworkMapDiff {
    type Error = ModelError;
    fn try_from(d: &pb::NetworkMapDiff) -> Result<Self, ModelError> {
        Ok(NetworkMapDiff {
            upsert: d.upsert.iter().map(prefixes_from_pb).collect::<Result<_, _>>()?,
            removed: d.removed.iter().map(|s| pid("removed PID", s)).collect::<Result<_, _>>()?,
        })
    }
}

impl From<&CostType> for pb::CostType {
    fn from(c: &CostType) -> Self {
        pb::CostType {
            metric: c.metric.clone(),
            mode: match c.mode {
                CostMode::Numerical => pb::CostMode::Numerical,
                CostMode::Ordinal => pb::CostMode::Ordinal,
            } as i32,
        }
    }
}

impl TryFrom<&pb::CostType> for CostType {
    type Error = ModelError;
    fn try_from(c: &pb::CostType) -> Result<Self, ModelError> {
        let mode = match pb::CostMode::try_from(c.mode) {
            Ok(pb::CostMode::Numerical) => CostMode::Numerical,
            Ok(pb::CostMode::Ordinal) => CostMode::Ordinal,
            _ => return Err(ModelError::BadCostMode(format!("enum value {}", c.mode))),
        };
        CostType::new(&c.metric, mode)
    }
}

fn dep_to_pb(v: Option<&VersionTag>) -> (String, bytes::Bytes) {
    v.map(|v| (v.resource_id.to_string(), bytes::Bytes::copy_from_slice(&v.tag.0))).unwrap_or_default()
}

fn dep_from_pb(id: &str, t: &[u8]) -> Result<Option<VersionTag>, ModelError> {
    if id.is_empty() {
        return Ok(None);
    }
    let resource_id =
        ResourceId::new(id).map_err(|source| ModelError::InvalidResourceId { at: "network_map_id".into(), source })?;
    Ok(Some(VersionTag { resource_id, tag: tag("network_map_tag", t)? }))
}

impl From<&CostMap> for pb::CostMapState {
    fn from(m: &CostMap) -> Self {
        let (network_map_id, network_map_tag) = dep_to_pb(m.depends_on());
        let rows = (0..m.pids().len() as u32)
            .filter_map(|s| {
                let (dst, cost): (Vec<u32>, Vec<f64>) = m.entries(s).unzip();
                (!dst.is_empty()).then_some(pb::CostRow { src: s, dst, cost })
            })
            .collect();
        pb::CostMapState {
            pids: m.pids().iter().map(|p| p.to_string()).collect(),
            network_map_id,
            network_map_tag,
            rows,
        }
    }
}

/// Decodes a cost map snapshot of `cost_type` (which the update header carries).
pub fn cost_map_from_pb(cost_type: CostType, s: pb::CostMapState) -> Result<CostMap, ModelError> {
    let pids = s.pids.iter().map(|p| pid("snapshot pids", p)).collect::<Result<Vec<_>, _>>()?;
    let dep = dep_from_pb(&s.network_map_id, &s.network_map_tag)?;
    CostMap::from_indexed(cost_type, dep, pids, s.rows.into_iter().map(|r| (r.src, r.dst, r.cost)))
}

impl From<&CostMapDiff> for pb::CostMapDiff {
    fn from(d: &CostMapDiff) -> Self {
        let (network_map_id, network_map_tag) = dep_to_pb(d.depends_on.as_ref());
        pb::CostMapDiff {
            added_pids: d.added_pids.iter().map(|p| p.to_string()).collect(),
            removed_pids: d.removed_pids.iter().map(|p| p.to_string()).collect(),
            network_map_id,
            network_map_tag,
            rows: d
                .rows
                .iter()
                .map(|r| pb::CostRowDiff {
                    src: r.src,
                    set_dst: r.set_dst.clone(),
                    set_cost: r.set_cost.clone(),
                    removed_dst: r.removed_dst.clone(),
                })
                .collect(),
        }
    }
}

impl TryFrom<pb::CostMapDiff> for CostMapDiff {
    type Error = ModelError;
    fn try_from(d: pb::CostMapDiff) -> Result<Self, ModelError> {
        let names = |v: &[String], at: &str| -> Result<Vec<Pid>, ModelError> {
            let out = v.iter().map(|s| pid(at, s)).collect::<Result<Vec<_>, _>>()?;
            if out.windows(2).any(|w| w[0] >= w[1]) {
                return Err(ModelError::NotAscending { at: at.into() });
            }
            Ok(out)
        };
        Ok(CostMapDiff {
            added_pids: names(&d.added_pids, "added_pids")?,
            removed_pids: names(&d.removed_pids, "removed_pids")?,
            depends_on: dep_from_pb(&d.network_map_id, &d.network_map_tag)?,
            rows: d
                .rows
                .into_iter()
                .map(|r| CostRowDiff {
                    src: r.src,
                    set_dst: r.set_dst,
                    set_cost: r.set_cost,
                    removed_dst: r.removed_dst,
                })
                .collect(),
        })
    }
}
