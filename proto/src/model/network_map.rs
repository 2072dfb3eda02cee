//! The network map: PIDs and the IP prefixes they group (RFC 7285 §5, §11.2.1),
//! with longest-prefix-match lookup, diffs and an incremental tag.
//!
//! PROTOCOL.md §2.2 (prefixes) and §2.3 (network map); the tag's preimages
//! (§3.4) are in `crate::tag::network_map`, the wire messages (§6.4, §6.5)
//! in [`crate::wire`].

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::Arc,
};

use ipnet::{Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;

use crate::{ModelError, Pid, Tag, tag};

/// Most PIDs one map may have: keeps a malicious or runaway input from making
/// a cost map (PIDs²) exhaust memory.
pub const MAX_PIDS: usize = 4096;
/// Most prefixes per PID.
pub const MAX_PREFIXES_PER_PID: usize = 65_536;

/// One PID's prefixes in canonical order (by address, then length), no duplicates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PidPrefixes {
    /// IPv4 prefixes.
    pub ipv4: Vec<Ipv4Net>,
    /// IPv6 prefixes.
    pub ipv6: Vec<Ipv6Net>,
}

impl PidPrefixes {
    /// Parses and canonicalises prefix strings. `pid` names the PID in errors.
    pub fn parse<S: AsRef<str>>(pid: &str, ipv4: &[S], ipv6: &[S]) -> Result<Self, ModelError> {
        if ipv4.len() + ipv6.len() > MAX_PREFIXES_PER_PID {
            return Err(ModelError::InvalidPrefix {
                pid: pid.to_owned(),
                family: "ipv4/ipv6",
                prefix: format!("{} prefixes", ipv4.len() + ipv6.len()),
                reason: format!("more than {MAX_PREFIXES_PER_PID} prefixes in one PID"),
            });
        }
        let mut out = PidPrefixes {
            ipv4: ipv4.iter().map(|s| parse_v4(pid, s.as_ref())).collect::<Result<_, _>>()?,
            ipv6: ipv6.iter().map(|s| parse_v6(pid, s.as_ref())).collect::<Result<_, _>>()?,
        };
        out.canonicalize();
        Ok(out)
    }

    fn canonicalize(&mut self) {
        self.ipv4.sort_by_key(|n| (n.network(), n.prefix_len()));
        self.ipv4.dedup();
        self.ipv6.sort_by_key(|n| (n.network(), n.prefix_len()));
        self.ipv6.dedup();
    }

    /// Total prefixes of both families.
    pub fn len(&self) -> usize {
        self.ipv4.len() + self.ipv6.len()
    }

    /// True when the PID has no prefixes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn parse_v4(pid: &str, s: &str) -> Result<Ipv4Net, ModelError> {
    let err = |reason: String| ModelError::InvalidPrefix {
        pid: pid.to_owned(),
        family: "ipv4",
        prefix: s.chars().take(64).collect(),
        reason,
    };
    let net: Ipv4Net = s.parse().map_err(|_| err("not IPv4 CIDR notation (a.b.c.d/len)".into()))?;
    if net.trunc() != net {
        return Err(err(format!("host bits set; did you mean {}?", net.trunc())));
    }
    Ok(net)
}

fn parse_v6(pid: &str, s: &str) -> Result<Ipv6Net, ModelError> {
    let err = |reason: String| ModelError::InvalidPrefix {
        pid: pid.to_owned(),
        family: "ipv6",
        prefix: s.chars().take(64).collect(),
        reason,
    };
    let net: Ipv6Net = s.parse().map_err(|_| err("not IPv6 CIDR notation (addr/len)".into()))?;
    if net.trunc() != net {
        return Err(err(format!("host bits set; did you mean {}?", net.trunc())));
    }
    Ok(net)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PidEntry {
    prefixes: PidPrefixes,
    hash: [u8; 32],
}

/// A validated network map. Immutable: [`NetworkMap::apply`] returns a new map and
/// shares unchanged PIDs with the old one.
#[derive(Clone)]
pub struct NetworkMap {
    pids: BTreeMap<Pid, Arc<PidEntry>>,
    /// Shared: clones of a map (views, verifier copies) share one index.
    lpm: Arc<Lpm>,
    tag: Tag,
}

#[derive(Clone, Default)]
struct Lpm {
    v4: PrefixMap<Ipv4Net, Pid>,
    v6: PrefixMap<Ipv6Net, Pid>,
}

impl std::fmt::Debug for NetworkMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkMap").field("pids", &self.pids.len()).field("tag", &self.tag).finish()
    }
}

impl PartialEq for NetworkMap {
    fn eq(&self, other: &Self) -> bool {
        self.tag == other.tag && self.pids == other.pids
    }
}

/// The change between two network maps: PIDs replaced whole, and PIDs removed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkMapDiff {
    /// New or changed PIDs with their complete prefix lists, ascending PID order.
    pub upsert: Vec<(Pid, PidPrefixes)>,
    /// Removed PIDs, ascending.
    pub removed: Vec<Pid>,
}

impl NetworkMapDiff {
    /// True when the diff changes nothing.
    pub fn is_empty(&self) -> bool {
        self.upsert.is_empty() && self.removed.is_empty()
    }
    /// PIDs touched.
    pub fn entries_changed(&self) -> usize {
        self.upsert.len() + self.removed.len()
    }
}

impl NetworkMap {
    /// Builds and validates a map: no prefix may be listed under two PIDs.
    pub fn new(pids: BTreeMap<Pid, PidPrefixes>) -> Result<Self, ModelError> {
        Self::from_entries(
            pids.into_iter()
                .map(|(pid, mut prefixes)| {
                    prefixes.canonicalize();
                    let hash = tag::network_map::row_hash(&pid, &prefixes);
                    (pid, Arc::new(PidEntry { prefixes, hash }))
                })
                .collect(),
        )
    }

    fn from_entries(pids: BTreeMap<Pid, Arc<PidEntry>>) -> Result<Self, ModelError> {
        if pids.len() > MAX_PIDS {
            return Err(ModelError::TooManyPids { what: "network map", count: pids.len(), limit: MAX_PIDS });
        }
        let mut lpm = Lpm::default();
        let dup = |prefix: String, first: &Pid, second: &Pid| ModelError::DuplicatePrefix {
            prefix,
            first: first.to_string(),
            second: second.to_string(),
        };
        for (pid, e) in &pids {
            for n in &e.prefixes.ipv4 {
                if let Some(first) = lpm.v4.insert(*n, pid.clone()) {
                    return Err(dup(n.to_string(), &first, pid));
                }
            }
            for n in &e.prefixes.ipv6 {
                if let Some(first) = lpm.v6.insert(*n, pid.clone()) {
                    return Err(dup(n.to_string(), &first, pid));
                }
            }
        }
        let tag = tag::network_map::map_tag(pids.iter().map(|(pid, e)| (pid, &e.hash)));
        Ok(NetworkMap { pids, lpm: Arc::new(lpm), tag })
    }

    /// The content tag.
    pub fn tag(&self) -> Tag {
        self.tag
    }

    /// Number of PIDs.
    pub fn len(&self) -> usize {
        self.pids.len()
    }

    /// True when the map has no PIDs.
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty()
    }

    /// True when `pid` is in the map.
    pub fn contains(&self, pid: &str) -> bool {
        self.pids.contains_key(pid)
    }

    /// The PIDs and their prefixes in ascending PID order.
    pub fn iter(&self) -> impl Iterator<Item = (&Pid, &PidPrefixes)> {
        self.pids.iter().map(|(p, e)| (p, &e.prefixes))
    }

    /// Total prefixes in the map.
    pub fn prefix_count(&self) -> usize {
        self.pids.values().map(|e| e.prefixes.len()).sum()
    }

    /// The PID an address belongs to, by longest-prefix match (RFC 7285 §11.2.1.6).
    pub fn lookup(&self, ip: IpAddr) -> Option<&Pid> {
        match ip {
            IpAddr::V4(a) => self.lpm.v4.get_lpm(&Ipv4Net::from(a)).map(|(_, p)| p),
            IpAddr::V6(a) => self.lpm.v6.get_lpm(&Ipv6Net::from(a)).map(|(_, p)| p),
        }
    }

    /// The change from `self` to `new`.
    pub fn diff(&self, new: &NetworkMap) -> NetworkMapDiff {
        let upsert = new
            .pids
            .iter()
            .filter(|(pid, e)| self.pids.get(*pid).is_none_or(|old| old.hash != e.hash))
            .map(|(pid, e)| (pid.clone(), e.prefixes.clone()))
            .collect();
        let removed = self.pids.keys().filter(|p| !new.pids.contains_key(*p)).cloned().collect();
        NetworkMapDiff { upsert, removed }
    }

    /// Applies `diff`, returning the new map; `self` is unchanged. Fails if the
    /// diff removes a PID the map does not have or the result is invalid.
    pub fn apply(&self, diff: &NetworkMapDiff) -> Result<NetworkMap, ModelError> {
        let mut pids = self.pids.clone();
        for pid in &diff.removed {
            if pids.remove(pid).is_none() {
                return Err(ModelError::DiffMismatch(format!("removes PID {pid:?}, which the map does not have")));
            }
        }
        for (pid, prefixes) in &diff.upsert {
            let mut prefixes = prefixes.clone();
            prefixes.canonicalize();
            let hash = tag::network_map::row_hash(pid, &prefixes);
            pids.insert(pid.clone(), Arc::new(PidEntry { prefixes, hash }));
        }
        Self::from_entries(pids)
    }

    /// PID name → position in ascending order (used to index cost maps).
    pub fn pid_index(&self) -> HashMap<&str, usize> {
        self.pids.keys().enumerate().map(|(i, p)| (p.as_str(), i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, &[&str], &[&str])]) -> Result<NetworkMap, ModelError> {
        let mut m = BTreeMap::new();
        for (pid, v4, v6) in entries {
            m.insert(Pid::new(pid).expect("pid"), PidPrefixes::parse(pid, v4, v6)?);
        }
        NetworkMap::new(m)
    }

    #[test]
    fn longest_prefix_match_picks_the_most_specific_pid() {
        let m = map(&[
            ("wide", &["192.168.0.0/16", "0.0.0.0/0"], &["::/0"]),
            ("narrow", &["192.168.10.0/24"], &["2001:db8::/32"]),
        ])
        .expect("valid");
        let pid = |s: &str| m.lookup(s.parse().expect("ip")).map(|p| p.as_str().to_owned());
        assert_eq!(pid("192.168.10.7").as_deref(), Some("narrow"));
        assert_eq!(pid("192.168.11.7").as_deref(), Some("wide"));
        assert_eq!(pid("8.8.8.8").as_deref(), Some("wide"));
        assert_eq!(pid("2001:db8::1").as_deref(), Some("narrow"));
        assert_eq!(pid("2001:db9::1").as_deref(), Some("wide"));
    }

    #[test]
    fn rejects_prefix_in_two_pids_naming_both() {
        let err = map(&[("a", &["10.0.0.0/8"], &[]), ("b", &["10.0.0.0/8"], &[])]).unwrap_err();
        assert_eq!(
            err,
            ModelError::DuplicatePrefix { prefix: "10.0.0.0/8".into(), first: "a".into(), second: "b".into() }
        );
    }

    #[test]
    fn rejects_bad_prefix_syntax_naming_pid_and_prefix() {
        let err = map(&[("a", &["10.0.0.1/8"], &[])]).unwrap_err();
        assert!(err.to_string().contains("\"a\"") && err.to_string().contains("10.0.0.0/8"), "{err}");
        let err = map(&[("a", &["10.0.0.0/33"], &[])]).unwrap_err();
        assert!(matches!(err, ModelError::InvalidPrefix { family: "ipv4", .. }), "{err}");
        let err = map(&[("a", &[], &["10.0.0.0/8"])]).unwrap_err();
        assert!(matches!(err, ModelError::InvalidPrefix { family: "ipv6", .. }), "{err}");
    }

    #[test]
    fn diff_apply_roundtrip_and_tag_is_order_independent() {
        let a = map(&[("a", &["10.0.0.0/8"], &[]), ("b", &["11.0.0.0/8"], &[])]).expect("a");
        let b = map(&[("a", &["10.0.0.0/8", "12.0.0.0/8"], &[]), ("c", &["11.0.0.0/8"], &[])]).expect("b");
        let d = a.diff(&b);
        assert_eq!(d.removed.len(), 1);
        assert_eq!(d.upsert.len(), 2);
        assert_eq!(a.apply(&d).expect("apply"), b);
        let b2 = map(&[("c", &["11.0.0.0/8"], &[]), ("a", &["12.0.0.0/8", "10.0.0.0/8"], &[])]).expect("b2");
        assert_eq!(b.tag(), b2.tag());
        assert_ne!(a.tag(), b.tag());
    }
}
