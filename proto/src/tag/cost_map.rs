//! The cost-map tag (PROTOCOL.md §3.5): a hash of the PID universe, one hash
//! per dense source row, and the map's tag over the cost type, the
//! dependency, the universe and the row hashes. The model
//! ([`crate::CostMap`]) keeps the universe's hash and each row's, so a diff
//! touching k rows costs k row hashes plus one pass over n·32 bytes.

use crate::{CostType, Pid, Tag, VersionTag, tag::Canon};

/// A dense row as hashed: its `F64` values, little-endian (§3.3).
#[cfg(target_endian = "little")]
pub(crate) fn row_bytes(row: &[f64]) -> &[u8] {
    bytemuck::cast_slice(row)
}

/// A dense row as hashed: its `F64` values, little-endian (§3.3).
#[cfg(not(target_endian = "little"))]
pub(crate) fn row_bytes(row: &[f64]) -> Vec<u8> {
    row.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `row_hash(i)` of §3.5. No length prefix: the row's length is the
/// universe's size, which the tag binds.
pub(crate) fn row_hash(row: &[f64]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"altocast/v1/cost-map/row\0");
    h.update(row_bytes(row));
    *h.finalize().as_bytes()
}

/// `names_hash` of §3.5: the PID universe in ascending order.
pub(crate) fn names_hash(pids: &[Pid]) -> [u8; 32] {
    let mut c = Canon::new("altocast/v1/cost-map/pids");
    c.u64(pids.len() as u64);
    for p in pids {
        c.str(p.as_str());
    }
    c.finish().0
}

/// `cost_map_tag` of §3.5, from the map's `row_hashes` (one per row, in
/// source index order).
pub(crate) fn map_tag(
    cost_type: &CostType,
    depends_on: Option<&VersionTag>,
    names_hash: &[u8; 32],
    row_hashes: &[[u8; 32]],
) -> Tag {
    let mut c = Canon::new("altocast/v1/cost-map");
    c.str(&cost_type.metric).str(cost_type.mode.as_str());
    match depends_on {
        Some(v) => c.u64(1).str(v.resource_id.as_str()).raw(&v.tag.0),
        None => c.u64(0),
    };
    c.raw(names_hash).u64(row_hashes.len() as u64);
    for h in row_hashes {
        c.raw(h);
    }
    c.finish()
}
