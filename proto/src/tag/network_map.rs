//! The network-map tag (PROTOCOL.md §3.4): one hash per PID row, then the
//! map's tag over the rows in ascending PID order. The model
//! ([`crate::NetworkMap`]) keeps each row's hash, so a diff rehashes only the
//! PIDs it replaces.

use crate::{Pid, PidPrefixes, Tag, tag::Canon};

/// `row_hash(p)` of §3.4: the PID's name and its canonical prefix lists
/// (address bytes in network order, then the one-byte length).
pub(crate) fn row_hash(pid: &Pid, prefixes: &PidPrefixes) -> [u8; 32] {
    let mut c = Canon::new("altocast/v1/network-map/row");
    c.str(pid.as_str()).u64(prefixes.ipv4.len() as u64);
    for n in &prefixes.ipv4 {
        c.raw(&n.network().octets()).raw(&[n.prefix_len()]);
    }
    c.u64(prefixes.ipv6.len() as u64);
    for n in &prefixes.ipv6 {
        c.raw(&n.network().octets()).raw(&[n.prefix_len()]);
    }
    c.finish().0
}

/// `network_map_tag` of §3.4 over `rows`: every PID with its row hash, in
/// ascending PID order.
pub(crate) fn map_tag<'a>(rows: impl ExactSizeIterator<Item = (&'a Pid, &'a [u8; 32])>) -> Tag {
    let mut c = Canon::new("altocast/v1/network-map");
    c.u64(rows.len() as u64);
    for (pid, hash) in rows {
        c.str(pid.as_str()).raw(hash);
    }
    c.finish()
}
