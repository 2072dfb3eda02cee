//! RFC 7285 JSON bodies in and out: `application/alto-networkmap+json` (§11.2.1)
//! and `application/alto-costmap+json` (§11.2.3). Input tolerates unknown
//! members (RFC 7285 §8.3.7); output is compact and deterministic.
//!
//! PROTOCOL.md names these bodies but leaves their grammar to RFC 7285: what
//! `Publish` carries (§10.8, with RFC 7396 merge patches) and what a node
//! serves next to its IRD (§10.9).

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
};

use serde::Deserialize;

use crate::{CostMap, CostMode, CostType, ModelError, NetworkMap, Pid, PidPrefixes, ResourceId, Tag, VersionTag};

/// Media type of a network map body.
pub const NETWORK_MAP_MEDIA_TYPE: &str = "application/alto-networkmap+json";
/// Media type of a cost map body.
pub const COST_MAP_MEDIA_TYPE: &str = "application/alto-costmap+json";
/// Media type of an RFC 7396 merge patch.
pub const MERGE_PATCH_MEDIA_TYPE: &str = "application/merge-patch+json";

#[derive(Deserialize)]
struct JsonVtag {
    #[serde(rename = "resource-id")]
    resource_id: String,
    tag: String,
}

#[derive(Deserialize, Default)]
struct NmMeta {
    vtag: Option<JsonVtag>,
}

#[derive(Deserialize)]
struct NmBody {
    #[serde(default)]
    meta: NmMeta,
    #[serde(rename = "network-map")]
    network_map: Option<Unique<String, JsonPid>>,
}

#[derive(Deserialize)]
struct JsonPid {
    #[serde(default)]
    ipv4: Vec<String>,
    #[serde(default)]
    ipv6: Vec<String>,
}

#[derive(Deserialize)]
struct JsonCostType {
    #[serde(rename = "cost-mode")]
    cost_mode: String,
    #[serde(rename = "cost-metric")]
    cost_metric: String,
}

#[derive(Deserialize)]
struct CmMeta {
    #[serde(rename = "dependent-vtags", default)]
    dependent_vtags: Vec<JsonVtag>,
    #[serde(rename = "cost-type")]
    cost_type: Option<JsonCostType>,
}

/// A cost map body, parsed in one pass: PID names are borrowed from the input
/// (no allocation per entry) and each row keeps its entries in input order.
struct CmBody<'a> {
    meta: Option<CmMeta>,
    rows: Option<BorrowedRows<'a>>,
}

/// `(source, [(destination, cost)])` with names borrowed from the input.
type BorrowedRows<'a> = Vec<(&'a str, Vec<(&'a str, f64)>)>;

impl<'de> Deserialize<'de> for CmBody<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Body;
        impl<'de> serde::de::Visitor<'de> for Body {
            type Value = CmBody<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an RFC 7285 cost map object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut body = CmBody { meta: None, rows: None };
                while let Some(k) = m.next_key::<std::borrow::Cow<'de, str>>()? {
                    let repeated = match k.as_ref() {
                        "meta" => body.meta.is_some(),
                        "cost-map" => body.rows.is_some(),
                        _ => false,
                    };
                    if repeated {
                        return Err(serde::de::Error::custom(format!("duplicate key \"{k}\"")));
                    }
                    match k.as_ref() {
                        "meta" => body.meta = Some(m.next_value()?),
                        "cost-map" => body.rows = Some(m.next_value::<Rows<'de>>()?.0),
                        _ => {
                            m.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(body)
            }
        }
        d.deserialize_map(Body)
    }
}

struct Rows<'a>(BorrowedRows<'a>);

impl<'de> Deserialize<'de> for Rows<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Rows<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of source PIDs")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut rows = Vec::new();
                while let Some(src) = m.next_key::<&'de str>()? {
                    rows.push((src, m.next_value::<Row<'de>>()?.0));
                }
                Ok(Rows(rows))
            }
        }
        d.deserialize_map(V)
    }
}

struct Row<'a>(Vec<(&'a str, f64)>);

impl<'de> Deserialize<'de> for Row<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Row<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of destination PIDs and costs")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut row = Vec::with_capacity(m.size_hint().unwrap_or(0));
                while let Some(dst) = m.next_key::<&'de str>()? {
                    row.push((dst, m.next_value::<f64>()?));
                }
                Ok(Row(row))
            }
        }
        d.deserialize_map(V)
    }
}

/// A JSON object whose keys must be unique. RFC 8259 leaves repeated keys
/// to the parser; here a repeated PID, destination or source is refused with
/// the key named, never resolved by keeping the first or the last value.
struct Unique<K, V>(BTreeMap<K, V>);

impl<'de, K, V> Deserialize<'de> for Unique<K, V>
where
    K: Deserialize<'de> + Ord + std::fmt::Display,
    V: Deserialize<'de>,
{
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<K, V>(std::marker::PhantomData<(K, V)>);
        impl<'de, K, V> serde::de::Visitor<'de> for Visit<K, V>
        where
            K: Deserialize<'de> + Ord + std::fmt::Display,
            V: Deserialize<'de>,
        {
            type Value = Unique<K, V>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object with unique keys")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(k) = m.next_key::<K>()? {
                    if out.contains_key(&k) {
                        return Err(serde::de::Error::custom(format!("duplicate key \"{k}\"")));
                    }
                    let v = m.next_value()?;
                    out.insert(k, v);
                }
                Ok(Unique(out))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// A parsed network map body.
#[derive(Debug, Clone)]
pub struct NetworkMapDoc {
    /// `meta.vtag`, as written by the producer (its tag format may differ from ours).
    pub vtag: Option<(String, String)>,
    /// The validated map.
    pub map: NetworkMap,
}

/// A parsed cost map body; its dependency is resolved with [`CostMapDoc::bind`].
#[derive(Debug, Clone)]
pub struct CostMapDoc {
    /// `meta.dependent-vtags` as written: `(resource-id, tag)`.
    pub dependent_vtags: Vec<(String, String)>,
    /// The validated map, not yet bound to a network map version.
    pub map: CostMap,
}

fn json_err(e: serde_json::Error) -> ModelError {
    ModelError::Json(e.to_string())
}

fn pid_at(s: &str, at: impl FnOnce() -> String) -> Result<Pid, ModelError> {
    Pid::new(s).map_err(|source| ModelError::InvalidPid { at: at(), source })
}

/// The kind of an RFC 7285 map body, from its top-level members: `Some` when
/// it has exactly one of `network-map` and `cost-map` (a PID may be named
/// "cost-map"; only the top level counts). Reads the body without building it.
pub fn body_kind(body: &[u8]) -> Option<crate::Kind> {
    struct Members;
    impl<'de> serde::de::Visitor<'de> for Members {
        type Value = (bool, bool);
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let (mut nm, mut cm) = (false, false);
            while let Some(k) = m.next_key::<std::borrow::Cow<'de, str>>()? {
                nm |= k == "network-map";
                cm |= k == "cost-map";
                m.next_value::<serde::de::IgnoredAny>()?;
            }
            Ok((nm, cm))
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    match serde::Deserializer::deserialize_map(&mut de, Members).ok()? {
        (true, false) => Some(crate::Kind::NetworkMap),
        (false, true) => Some(crate::Kind::CostMap),
        _ => None,
    }
}

/// Parses and validates an RFC 7285 network map body.
pub fn parse_network_map(body: &[u8]) -> Result<NetworkMapDoc, ModelError> {
    let b: NmBody = serde_json::from_slice(body).map_err(json_err)?;
    let entries = b.network_map.ok_or(ModelError::MissingField("network-map"))?;
    let mut pids = BTreeMap::new();
    for (name, p) in entries.0 {
        let pid = pid_at(&name, || "network-map".into())?;
        pids.insert(pid, PidPrefixes::parse(&name, &p.ipv4, &p.ipv6)?);
    }
    Ok(NetworkMapDoc { vtag: b.meta.vtag.map(|v| (v.resource_id, v.tag)), map: NetworkMap::new(pids)? })
}

/// Parses and validates an RFC 7285 cost map body. PID names must not contain
/// JSON escapes (RFC 7285 PID names are plain ASCII).
pub fn parse_cost_map(body: &[u8]) -> Result<CostMapDoc, ModelError> {
    let b: CmBody<'_> = serde_json::from_slice(body).map_err(json_err)?;
    let meta = b.meta.ok_or(ModelError::MissingField("meta"))?;
    let ct = meta.cost_type.ok_or(ModelError::MissingField("meta.cost-type"))?;
    let cost_type = CostType::new(&ct.cost_metric, CostMode::parse(&ct.cost_mode)?)?;
    let rows = b.rows.ok_or(ModelError::MissingField("cost-map"))?;
    // Intern every name in one hash pass (first-seen ids), then sort only the
    // unique names: the PID universe, each validated once.
    fn intern<'a>(seen: &mut HashMap<&'a str, u32>, n: &'a str) -> u32 {
        let next = seen.len() as u32;
        *seen.entry(n).or_insert(next)
    }
    let mut seen: HashMap<&str, u32> = HashMap::new();
    let mut interned: Vec<(u32, Vec<(u32, f64)>)> = Vec::with_capacity(rows.len());
    for (src, row) in &rows {
        let s = intern(&mut seen, src);
        interned.push((s, row.iter().map(|(d, v)| (intern(&mut seen, d), *v)).collect()));
    }
    let mut names: Vec<(&str, u32)> = seen.into_iter().collect();
    names.sort_unstable();
    let mut remap = vec![0u32; names.len()];
    let mut pids = Vec::with_capacity(names.len());
    for (i, (n, first)) in names.iter().enumerate() {
        remap[*first as usize] = i as u32;
        pids.push(pid_at(n, || "cost-map".into())?);
    }
    let mut indexed: Vec<(u32, Vec<u32>, Vec<f64>)> = Vec::with_capacity(interned.len());
    for (src, row) in interned {
        let mut entries: Vec<(u32, f64)> = row.into_iter().map(|(d, v)| (remap[d as usize], v)).collect();
        entries.sort_by_key(|e| e.0);
        let src = remap[src as usize];
        // A repeated key is an error, not a silent choice of one value.
        if let Some(w) = entries.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(ModelError::DuplicateKey {
                at: format!("cost-map.{:?}", names[src as usize].0),
                key: names[w[0].0 as usize].0.to_owned(),
            });
        }
        let (dst, cost) = entries.into_iter().unzip();
        indexed.push((src, dst, cost));
    }
    indexed.sort_by_key(|r| r.0);
    if let Some(w) = indexed.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(ModelError::DuplicateKey { at: "cost-map".into(), key: names[w[0].0 as usize].0.to_owned() });
    }
    Ok(CostMapDoc {
        dependent_vtags: meta.dependent_vtags.into_iter().map(|v| (v.resource_id, v.tag)).collect(),
        map: crate::CostMap::from_indexed(cost_type, None, pids, indexed)?,
    })
}

impl CostMapDoc {
    /// Binds the cost map to network map `nm_id` at version `nm`: the body's
    /// `dependent-vtags` must name `nm_id` with a tag in `accepted_tags` (our tag
    /// of `nm`, and the tag the network map's own producer gave it), and every
    /// PID must exist in `nm`. A body without `dependent-vtags` is bound to the
    /// current version.
    pub fn bind(&self, nm_id: &ResourceId, nm: &NetworkMap, accepted_tags: &[&str]) -> Result<CostMap, ModelError> {
        let ours = nm.tag().to_hex();
        if let Some((id, tag)) = self.dependent_vtags.first() {
            let ok = id == nm_id.as_str() && (tag.eq_ignore_ascii_case(&ours) || accepted_tags.contains(&tag.as_str()));
            if !ok {
                return Err(ModelError::DependentVtagMismatch {
                    expected_id: nm_id.to_string(),
                    expected: std::iter::once(ours.as_str())
                        .chain(accepted_tags.iter().copied())
                        .collect::<Vec<_>>()
                        .join(", "),
                    got_id: id.clone(),
                    got: tag.clone(),
                });
            }
        }
        let map = self.map.with_dependency(Some(VersionTag { resource_id: nm_id.clone(), tag: nm.tag() }));
        map.check_against(nm_id, nm)?;
        Ok(map)
    }
}

#[derive(Deserialize)]
struct PatchMeta {
    #[serde(rename = "dependent-vtags")]
    dependent_vtags: Option<Vec<JsonVtag>>,
    #[serde(rename = "cost-type")]
    cost_type: Option<JsonCostType>,
}

/// `null` (remove) or a value, for merge-patch members.
type Nullable<T> = Option<T>;

#[derive(Deserialize)]
struct PatchBody<'a> {
    meta: Option<PatchMeta>,
    #[serde(rename = "cost-map", borrow)]
    cost_map: Option<PatchRows<'a>>,
}

/// Patch rows: source → `null` (remove the row) or destination → cost or `null`.
type PatchRows<'a> = Unique<&'a str, Nullable<Unique<&'a str, Nullable<f64>>>>;

/// An RFC 7396 merge patch of a cost map body, turned into a diff.
#[derive(Debug, Clone)]
pub struct CostMapPatch {
    /// The change, in the indices of the patched map (apply it to the map the
    /// patch was read against).
    pub diff: crate::CostMapDiff,
    /// `meta.dependent-vtags` when the patch replaces it.
    pub dependent_vtags: Option<Vec<(String, String)>>,
}

/// Reads an RFC 7396 merge patch of `current`'s RFC 7285 body (the update form
/// of RFC 8895): under `cost-map`, `"src": {"dst": cost}` sets a cost,
/// `"dst": null` removes it, `"src": null` removes the source row. A PID no
/// longer named as a source or destination leaves the map. Costs are validated
/// when the diff is applied.
pub fn parse_cost_map_patch(current: &CostMap, patch: &[u8]) -> Result<CostMapPatch, ModelError> {
    let p: PatchBody<'_> = serde_json::from_slice(patch).map_err(json_err)?;
    if let Some(ct) = p.meta.as_ref().and_then(|m| m.cost_type.as_ref()) {
        let ct = CostType::new(&ct.cost_metric, CostMode::parse(&ct.cost_mode)?)?;
        if &ct != current.cost_type() {
            return Err(ModelError::DiffMismatch(
                "a merge patch cannot change meta.cost-type; publish the full map".into(),
            ));
        }
    }
    let rows: BTreeMap<&str, Nullable<BTreeMap<&str, Nullable<f64>>>> =
        p.cost_map.map(|u| u.0.into_iter().map(|(k, v)| (k, v.map(|r| r.0))).collect()).unwrap_or_default();
    let old = current.pids();
    // Value of (src, dst) after the patch, by old index where both are old PIDs.
    let patched = |s: &str, d: &str| -> Option<f64> {
        match rows.get(s) {
            Some(None) => None,
            Some(Some(r)) if r.contains_key(d) => r[d],
            _ => current.cost(s, d),
        }
    };
    // The universe after the patch: every PID still named as a source (old ones
    // not removed, new ones in the patch) or as a destination with a cost.
    let mut names: Vec<&str> = old.iter().map(|p| p.as_str()).collect();
    for (s, r) in &rows {
        if r.is_some() {
            names.push(s);
        }
        for (d, v) in r.iter().flatten() {
            if v.is_some() {
                names.push(d);
            }
        }
    }
    names.sort_unstable();
    names.dedup();
    let removed_srcs: Vec<&str> = rows.iter().filter(|(_, r)| r.is_none()).map(|(s, _)| *s).collect();
    let sources: Vec<&str> = names.iter().copied().filter(|s| !removed_srcs.contains(s)).collect();
    names.retain(|n| !removed_srcs.contains(n) || sources.iter().any(|s| patched(s, n).is_some()));
    let mut universe = Vec::with_capacity(names.len());
    for n in &names {
        universe.push(pid_at(n, || "merge patch cost-map".into())?);
    }
    let index: HashMap<&str, u32> = names.iter().enumerate().map(|(i, n)| (*n, i as u32)).collect();
    let mut diff = crate::CostMapDiff {
        added_pids: universe.iter().filter(|p| current.index_of(p.as_str()).is_none()).cloned().collect(),
        removed_pids: old.iter().filter(|p| !index.contains_key(p.as_str())).cloned().collect(),
        ..Default::default()
    };
    for (src, r) in &rows {
        let Some(&si) = index.get(src) else { continue };
        let mut rd = crate::CostRowDiff { src: si, ..Default::default() };
        let had = |d: &str| current.cost(src, d).is_some();
        match r {
            None => {
                // The source row goes; the PID stays as a destination.
                rd.removed_dst = names.iter().filter(|d| had(d)).map(|d| index[d]).collect();
            }
            Some(r) => {
                for (d, v) in r {
                    match (v, index.get(d)) {
                        (Some(v), Some(&di)) => {
                            rd.set_dst.push(di);
                            rd.set_cost.push(*v);
                        }
                        (None, Some(&di)) if had(d) => rd.removed_dst.push(di),
                        _ => {}
                    }
                }
            }
        }
        let mut set: Vec<(u32, f64)> = rd.set_dst.iter().copied().zip(rd.set_cost.iter().copied()).collect();
        set.sort_by_key(|e| e.0);
        (rd.set_dst, rd.set_cost) = set.into_iter().unzip();
        rd.removed_dst.sort_unstable();
        if !rd.set_dst.is_empty() || !rd.removed_dst.is_empty() {
            diff.rows.push(rd);
        }
    }
    diff.rows.sort_by_key(|r| r.src);
    Ok(CostMapPatch {
        diff,
        dependent_vtags: p
            .meta
            .and_then(|m| m.dependent_vtags)
            .map(|v| v.into_iter().map(|v| (v.resource_id, v.tag)).collect()),
    })
}

/// The RFC 7396 merge patch turning `old`'s body into `new`'s (what a
/// producer sends with [`MERGE_PATCH_MEDIA_TYPE`]).
pub fn cost_map_merge_patch(old: &CostMap, new: &CostMap) -> String {
    let mut out = String::from("{\"cost-map\":{");
    let mut first_row = true;
    let mut dsts: Vec<&Pid> = old.pids().iter().chain(new.pids()).collect();
    dsts.sort_unstable();
    dsts.dedup();
    for src in new.pids() {
        let mut row = String::new();
        for dst in &dsts {
            let (a, b) = (old.cost(src.as_str(), dst.as_str()), new.cost(src.as_str(), dst.as_str()));
            if a.map(f64::to_bits) == b.map(f64::to_bits) {
                continue;
            }
            if !row.is_empty() {
                row.push(',');
            }
            push_json_str(&mut row, dst.as_str());
            row.push(':');
            match b {
                Some(v) => push_cost(&mut row, v),
                None => row.push_str("null"),
            }
        }
        // A new source is named even with an empty row: it is in the new body.
        if !row.is_empty() || old.index_of(src.as_str()).is_none() {
            if !first_row {
                out.push(',');
            }
            first_row = false;
            push_json_str(&mut out, src.as_str());
            let _ = write!(out, ":{{{row}}}");
        }
    }
    for src in old.pids().iter().filter(|p| new.index_of(p.as_str()).is_none()) {
        if !first_row {
            out.push(',');
        }
        first_row = false;
        push_json_str(&mut out, src.as_str());
        out.push_str(":null");
    }
    out.push_str("}}");
    out
}

/// Appends `s` as a JSON string (for bodies written straight into a buffer).
pub fn push_json_str(out: &mut String, s: &str) {
    // PID names, resource ids, prefixes and hex tags never need escaping, but a
    // cost metric could; serde_json escapes correctly.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

/// Appends a cost: whole costs as integers, as in RFC 7285's examples.
pub fn push_cost(out: &mut String, v: f64) {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        out.push_str(&serde_json::to_string(&v).unwrap_or_else(|_| "null".into()));
    }
}

/// The RFC 7285 network map body for `map`, with `meta.vtag` = our tag.
pub fn network_map_json(resource_id: &ResourceId, map: &NetworkMap) -> String {
    let mut out = String::with_capacity(64 + map.prefix_count() * 24 + map.len() * 32);
    out.push_str("{\"meta\":{\"vtag\":{\"resource-id\":");
    push_json_str(&mut out, resource_id.as_str());
    let _ = write!(out, ",\"tag\":\"{}\"}}}},\"network-map\":{{", map.tag());
    for (i, (pid, p)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(&mut out, pid.as_str());
        out.push_str(":{");
        let mut first = true;
        let mut family = |name: &str, list: Vec<String>| {
            if list.is_empty() {
                return;
            }
            if !first {
                out.push(',');
            }
            first = false;
            let _ = write!(out, "\"{name}\":[");
            for (k, n) in list.iter().enumerate() {
                if k > 0 {
                    out.push(',');
                }
                let _ = write!(out, "\"{n}\"");
            }
            out.push(']');
        };
        family("ipv4", p.ipv4.iter().map(|n| n.to_string()).collect());
        family("ipv6", p.ipv6.iter().map(|n| n.to_string()).collect());
        out.push('}');
    }
    out.push_str("}}");
    out
}

/// The RFC 7285 cost map body for `map`. Every PID of the map's universe is
/// written as a source (with `{}` when it has no costs) so that parsing the
/// output gives back the same map.
pub fn cost_map_json(map: &CostMap) -> String {
    cost_map_json_filtered(map, None, None)
}

/// Like [`cost_map_json`], restricted to the given source and destination PID
/// indices (RFC 7285 §11.3.2 filtered cost map). `None` means all.
pub fn cost_map_json_filtered(map: &CostMap, srcs: Option<&[u32]>, dsts: Option<&[u32]>) -> String {
    let pids = map.pids();
    let mut out = String::with_capacity(128 + map.entry_count() * 24);
    out.push_str("{\"meta\":{\"dependent-vtags\":[");
    if let Some(v) = map.depends_on() {
        out.push_str("{\"resource-id\":");
        push_json_str(&mut out, v.resource_id.as_str());
        let _ = write!(out, ",\"tag\":\"{}\"}}", v.tag);
    }
    out.push_str("],\"cost-type\":{\"cost-mode\":");
    push_json_str(&mut out, map.cost_type().mode.as_str());
    out.push_str(",\"cost-metric\":");
    push_json_str(&mut out, &map.cost_type().metric);
    out.push_str("}},\"cost-map\":{");
    let all: Vec<u32> = (0..pids.len() as u32).collect();
    let srcs = srcs.unwrap_or(&all);
    for (i, &s) in srcs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(&mut out, pids[s as usize].as_str());
        out.push_str(":{");
        let mut first = true;
        let mut put = |d: u32, v: f64| {
            if !first {
                out.push(',');
            }
            first = false;
            push_json_str(&mut out, pids[d as usize].as_str());
            out.push(':');
            push_cost(&mut out, v);
        };
        match dsts {
            None => map.entries(s).for_each(|(d, v)| put(d, v)),
            Some(ds) => ds.iter().for_each(|&d| {
                if let Some(v) = map.cost_at(s, d) {
                    put(d, v)
                }
            }),
        }
        out.push('}');
    }
    out.push_str("}}");
    out
}

/// Parses a 64-hex-character tag, naming `at` in the error.
pub fn parse_tag(at: &str, s: &str) -> Result<Tag, ModelError> {
    Tag::from_hex(s).map_err(|_| ModelError::BadTag { at: at.into(), tag: s.chars().take(80).collect() })
}

/// Validates a resource id, naming `at` in the error.
pub fn parse_resource_id(at: &str, s: &str) -> Result<ResourceId, ModelError> {
    ResourceId::new(s).map_err(|source| ModelError::InvalidResourceId { at: at.into(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7285 §11.2.1.7 example response body.
    pub(crate) const RFC_NETWORK_MAP: &str = r#"{
      "meta" : {
        "vtag": {
          "resource-id": "my-default-network-map",
          "tag": "da65eca2eb7a10ce8b059740b0b2e3f8eb1d4785"
        }
      },
      "network-map" : {
        "PID1" : { "ipv4" : [ "192.0.2.0/24", "198.51.100.0/25" ] },
        "PID2" : { "ipv4" : [ "198.51.100.128/25" ] },
        "PID3" : { "ipv4" : [ "0.0.0.0/0" ], "ipv6" : [ "::/0" ] }
      }
    }"#;

    /// RFC 7285 §11.2.3.7 example response body.
    pub(crate) const RFC_COST_MAP: &str = r#"{
      "meta" : {
        "dependent-vtags" : [
          {"resource-id": "my-default-network-map",
           "tag": "3ee2cb7e8d63d9fab71b9b34cbf764436315542e"
          }
        ],
        "cost-type" : {"cost-mode"  : "numerical",
                       "cost-metric": "routingcost"
        }
      },
      "cost-map" : {
        "PID1": { "PID1": 1,  "PID2": 5,  "PID3": 10 },
        "PID2": { "PID1": 5,  "PID2": 1,  "PID3": 15 },
        "PID3": { "PID1": 20, "PID2": 15  }
      }
    }"#;

    fn nm_id() -> ResourceId {
        ResourceId::new("my-default-network-map").expect("id")
    }

    #[test]
    fn rfc7285_network_map_example_parses_and_round_trips() {
        let doc = parse_network_map(RFC_NETWORK_MAP.as_bytes()).expect("parse");
        assert_eq!(doc.vtag.as_ref().map(|v| v.1.as_str()), Some("da65eca2eb7a10ce8b059740b0b2e3f8eb1d4785"));
        let m = &doc.map;
        assert_eq!(m.len(), 3);
        assert_eq!(m.lookup("192.0.2.7".parse().expect("ip")).map(|p| p.as_str()), Some("PID1"));
        assert_eq!(m.lookup("198.51.100.200".parse().expect("ip")).map(|p| p.as_str()), Some("PID2"));
        assert_eq!(m.lookup("203.0.113.1".parse().expect("ip")).map(|p| p.as_str()), Some("PID3"));
        assert_eq!(m.lookup("2001:db8::1".parse().expect("ip")).map(|p| p.as_str()), Some("PID3"));
        let out = network_map_json(&nm_id(), m);
        let again = parse_network_map(out.as_bytes()).expect("reparse");
        assert_eq!(&again.map, m);
        assert_eq!(again.vtag.map(|v| v.1), Some(m.tag().to_hex()));
    }

    #[test]
    fn rfc7285_cost_map_example_parses_binds_and_round_trips() {
        let nm = parse_network_map(RFC_NETWORK_MAP.as_bytes()).expect("nm");
        let doc = parse_cost_map(RFC_COST_MAP.as_bytes()).expect("parse");
        assert_eq!(doc.map.cost("PID3", "PID1"), Some(20.0));
        assert_eq!(doc.map.cost("PID3", "PID3"), None);
        assert_eq!(doc.map.entry_count(), 8);
        // The RFC's example cost map names another tag than its example network map:
        // binding must refuse it unless that tag is accepted.
        let err = doc.bind(&nm_id(), &nm.map, &["da65eca2eb7a10ce8b059740b0b2e3f8eb1d4785"]).unwrap_err();
        assert!(matches!(err, ModelError::DependentVtagMismatch { .. }), "{err}");
        let cm = doc.bind(&nm_id(), &nm.map, &["3ee2cb7e8d63d9fab71b9b34cbf764436315542e"]).expect("bind");
        let out = cost_map_json(&cm);
        assert!(out.contains("\"PID3\":{\"PID1\":20,\"PID2\":15}"), "{out}");
        let back = parse_cost_map(out.as_bytes()).expect("reparse");
        assert_eq!(back.bind(&nm_id(), &nm.map, &[]).expect("bind ours"), cm);
    }

    #[test]
    fn tolerates_unknown_fields_and_names_errors() {
        let body = r#"{"meta":{"x":1},"network-map":{"A":{"ipv4":["10.0.0.0/8"],"future":[1]}},"extra":true}"#;
        assert!(parse_network_map(body.as_bytes()).is_ok());
        let err = parse_network_map(br#"{"network-map":{"bad.pid":{}}}"#).unwrap_err();
        assert!(err.to_string().contains("bad.pid"), "{err}");
        let err = parse_network_map(br#"{"network-map":{"A":{"ipv4":["10.0.0.0/8"]},"B":{"ipv4":["10.0.0.0/8"]}}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("10.0.0.0/8") && err.to_string().contains("\"B\""), "{err}");
        let err = parse_network_map(b"{not json").unwrap_err();
        assert!(matches!(err, ModelError::Json(_)));
        let err = parse_cost_map(br#"{"meta":{"cost-type":{"cost-mode":"bogus","cost-metric":"x"}},"cost-map":{}}"#)
            .unwrap_err();
        assert!(matches!(err, ModelError::BadCostMode(_)));
        let err = parse_cost_map(
            br#"{"meta":{"cost-type":{"cost-mode":"ordinal","cost-metric":"x"}},"cost-map":{"A":{"B":1.5}}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("\"A\"") && err.to_string().contains("\"B\""), "{err}");
    }

    #[test]
    fn merge_patch_equals_publishing_the_full_map() {
        let a = parse_cost_map(RFC_COST_MAP.as_bytes()).expect("a").map;
        let b = parse_cost_map(
            br#"{"meta":{"cost-type":{"cost-mode":"numerical","cost-metric":"routingcost"}},
                "cost-map":{"PID1":{"PID1":1,"PID2":6,"PID4":3},"PID2":{"PID1":5,"PID2":1},"PID4":{"PID4":0}}}"#,
        )
        .expect("b")
        .map;
        let patch = cost_map_merge_patch(&a, &b);
        let p = parse_cost_map_patch(&a, patch.as_bytes()).expect("patch");
        assert_eq!(a.apply(&p.diff).expect("apply"), b, "patch {patch}");
        // Removing PID3 entirely (as source and destination) removes it from the map.
        assert!(patch.contains("\"PID3\":null"), "{patch}");
        let bad =
            parse_cost_map_patch(&a, br#"{"meta":{"cost-type":{"cost-mode":"ordinal","cost-metric":"routingcost"}}}"#);
        assert!(matches!(bad, Err(ModelError::DiffMismatch(_))));
    }

    #[test]
    fn cost_map_naming_unknown_pid_is_rejected() {
        let nm = parse_network_map(RFC_NETWORK_MAP.as_bytes()).expect("nm");
        let body = r#"{"meta":{"cost-type":{"cost-mode":"numerical","cost-metric":"routingcost"}},"cost-map":{"PID1":{"PID9":1}}}"#;
        let doc = parse_cost_map(body.as_bytes()).expect("parse");
        let err = doc.bind(&nm_id(), &nm.map, &[]).unwrap_err();
        assert!(matches!(&err, ModelError::UnknownPid { pid, .. } if pid == "PID9"), "{err}");
    }
}

#[cfg(test)]
mod duplicate_keys {
    use super::*;

    const NM: &str = r#"{"meta":{},"network-map":{"a":{"ipv4":["10.0.0.0/8"]},"b":{"ipv4":["11.0.0.0/8"]}}}"#;

    fn cm(rows: &str) -> String {
        format!(
            r#"{{"meta":{{"cost-type":{{"cost-mode":"numerical","cost-metric":"routingcost"}}}},"cost-map":{rows}}}"#
        )
    }

    #[test]
    fn a_repeated_pid_destination_source_or_member_is_refused_naming_it() {
        let nm = r#"{"network-map":{"a":{"ipv4":["10.0.0.0/8"]},"a":{"ipv4":["11.0.0.0/8"]}}}"#;
        let e = parse_network_map(nm.as_bytes()).expect_err("repeated PID").to_string();
        assert!(e.contains("duplicate key \"a\""), "{e}");
        let e = parse_cost_map(cm(r#"{"a":{"a":0,"b":1,"b":2},"b":{"a":1}}"#).as_bytes())
            .expect_err("repeated destination")
            .to_string();
        assert!(e.contains(r#"cost-map."a": key "b""#), "{e}");
        let e = parse_cost_map(cm(r#"{"a":{"b":1},"b":{"a":1},"a":{"b":5}}"#).as_bytes())
            .expect_err("repeated source")
            .to_string();
        assert!(e.contains(r#"cost-map: key "a""#), "{e}");
        let twice = r#"{"meta":{"cost-type":{"cost-mode":"numerical","cost-metric":"routingcost"}},"cost-map":{"a":{"a":0}},"cost-map":{}}"#;
        let e = parse_cost_map(twice.as_bytes()).expect_err("repeated member").to_string();
        assert!(e.contains("duplicate key \"cost-map\""), "{e}");
        // The same maps without repetition are fine.
        parse_network_map(NM.as_bytes()).expect("network map");
        parse_cost_map(cm(r#"{"a":{"a":0,"b":1},"b":{"a":1}}"#).as_bytes()).expect("cost map");
    }

    #[test]
    fn a_merge_patch_with_a_repeated_key_is_refused() {
        let current = parse_cost_map(cm(r#"{"a":{"a":0,"b":1},"b":{"a":1}}"#).as_bytes()).expect("cost map").map;
        for patch in [r#"{"cost-map":{"a":{"b":2,"b":3}}}"#, r#"{"cost-map":{"a":{"b":2},"a":null}}"#] {
            let e = parse_cost_map_patch(&current, patch.as_bytes()).expect_err(patch).to_string();
            assert!(e.contains("duplicate key"), "{patch}: {e}");
        }
        parse_cost_map_patch(&current, br#"{"cost-map":{"a":{"b":2}}}"#).expect("a plain patch");
    }
}
