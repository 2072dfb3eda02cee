//! The conformance vectors in `proto/vectors/` (`altocast_proto::conformance`).
//!
//! Two independent checks. First, the committed files are byte-for-byte what
//! the library generates, so code and vectors cannot drift apart silently.
//! Second, every vector read back from the files holds for the library
//! without the generator: keys and signatures, tags against preimages built
//! here from the canonical forms (PROTOCOL.md §3), every chain step's outcome
//! on a fresh verifier, every tamper rejection by exactly the named check, the
//! directory, and the values of PROTOCOL.md Appendix A. The second part is what
//! makes the files trustworthy even if they were regenerated blindly.

use std::{fs, path::PathBuf};

use altocast_proto::{
    CostMode, CostType, Held, Limits, MapState, NetworkMap, OriginKey, PublicKey, ResourceId, TrustedKeys, Verifier,
    VerifyError,
    conformance::{Group, REGENERATE, error_name},
    cost_map_from_pb, pb,
    verify::directory::open_directory,
};
use bytes::Bytes;
use prost::Message as _;
use serde_json::Value;

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vectors")
}

fn read(g: Group) -> String {
    let path = vectors_dir().join(g.file_name());
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}; generate it with `{REGENERATE}`", path.display()))
}

fn load(g: Group) -> Value {
    serde_json::from_str(&read(g)).unwrap_or_else(|e| panic!("{}: not JSON: {e}", g.file_name()))
}

fn field<'a>(v: &'a Value, k: &str) -> &'a Value {
    v.get(k).unwrap_or_else(|| panic!("missing {k:?} in {}", name_of(v)))
}

fn name_of(v: &Value) -> &str {
    v.get("name").and_then(Value::as_str).unwrap_or("?")
}

fn text<'a>(v: &'a Value, k: &str) -> &'a str {
    field(v, k).as_str().unwrap_or_else(|| panic!("{k:?} of {} is not a string", name_of(v)))
}

fn num(v: &Value, k: &str) -> u64 {
    field(v, k).as_u64().unwrap_or_else(|| panic!("{k:?} of {} is not an unsigned integer", name_of(v)))
}

fn int(v: &Value, k: &str) -> i64 {
    field(v, k).as_i64().unwrap_or_else(|| panic!("{k:?} of {} is not an integer", name_of(v)))
}

fn bytes_of(v: &Value, k: &str) -> Vec<u8> {
    let s = text(v, k);
    assert_eq!(s, s.to_lowercase(), "{k:?} of {}: hex must be lowercase", name_of(v));
    hex::decode(s).unwrap_or_else(|e| panic!("{k:?} of {}: not hex: {e}", name_of(v)))
}

fn list<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    field(v, k).as_array().unwrap_or_else(|| panic!("{k:?} of {} is not an array", name_of(v)))
}

fn strings(v: &Value, k: &str) -> Vec<String> {
    list(v, k).iter().map(|s| s.as_str().expect("string").to_owned()).collect()
}

fn h(b: &[u8]) -> String {
    hex::encode(blake3::hash(b).as_bytes())
}

/// The named vectors of a list, checking names are unique.
fn names(items: &[Value]) -> Vec<&str> {
    let mut n: Vec<&str> = items.iter().map(name_of).collect();
    let count = n.len();
    n.sort_unstable();
    n.dedup();
    assert_eq!(n.len(), count, "vector names must be unique");
    n
}

#[test]
fn committed_files_are_what_the_library_generates() {
    let mut stale = Vec::new();
    for g in Group::ALL {
        let want = g.render().expect("the vectors build");
        let path = vectors_dir().join(g.file_name());
        let have = fs::read_to_string(&path).unwrap_or_default();
        if have != want {
            let line = have.lines().zip(want.lines()).position(|(a, b)| a != b).map_or_else(
                || format!("lengths {} and {} bytes", have.len(), want.len()),
                |i| format!("first difference at line {}", i + 1),
            );
            stale.push(format!("{} ({line})", path.display()));
        }
    }
    assert!(
        stale.is_empty(),
        "the code and the committed vectors disagree: {}. If the change to the protocol is intended, regenerate \
         with `{REGENERATE}` and review the diff; otherwise fix the code.",
        stale.join(", ")
    );
}

#[test]
fn every_file_has_the_common_header() {
    for g in Group::ALL {
        let v = load(g);
        assert_eq!(text(&v, "format"), "altocast-conformance-vectors/1");
        assert_eq!(text(&v, "regenerate"), REGENERATE);
        assert_eq!(text(&v, "protocol"), "docs/PROTOCOL.md");
        assert!(read(g).is_ascii(), "{} must be ASCII", g.file_name());
        assert!(read(g).ends_with("}\n"), "{} must end with a newline", g.file_name());
    }
}

// ---------------------------------------------------------------- keys (§4, §5)

#[test]
fn keys_vectors_hold() {
    let f = load(Group::Keys);
    assert!(names(list(&f, "keys")).len() >= 3);
    for k in list(&f, "keys") {
        let seed: [u8; 32] = bytes_of(k, "seed").try_into().expect("32-byte seed");
        let raw = bytes_of(k, "public_key");
        let key = OriginKey::from_seed(seed);
        assert_eq!(key.public().raw().to_vec(), raw, "{}", name_of(k));
        assert_eq!(text(k, "public_key_hash"), h(&raw));
        assert_eq!(text(k, "key_id"), &h(&raw)[..16], "key id = hex(H(raw)[0..8]) (§4.2)");
        assert_eq!(key.id().as_str(), text(k, "key_id"));
        // §4.3 byte layouts, written out here.
        assert_eq!(
            bytes_of(k, "private_key_der"),
            [&hex::decode("302e020100300506032b657004220420").expect("hex")[..], &seed].concat()
        );
        assert_eq!(
            bytes_of(k, "public_key_der"),
            [&hex::decode("302a300506032b6570032100").expect("hex")[..], &raw].concat()
        );
        let private_pem = text(k, "private_key_pem");
        let public_pem = text(k, "public_key_pem");
        for (pem, der) in [(private_pem, "private_key_der"), (public_pem, "public_key_der")] {
            let (_, decoded) = ed25519_dalek::pkcs8::spki::der::pem::decode_vec(pem.as_bytes()).expect("PEM");
            assert_eq!(decoded, bytes_of(k, der), "{}: PEM body is the DER", name_of(k));
        }
        assert_eq!(key.to_pkcs8_pem().expect("pem"), private_pem);
        assert_eq!(key.public().to_spki_pem(), public_pem);
        assert_eq!(OriginKey::from_pkcs8_pem(private_pem).expect("read").id().as_str(), text(k, "key_id"));
        assert_eq!(PublicKey::from_spki_pem(public_pem).expect("read").raw().to_vec(), raw);
    }
    let contexts =
        [("update", altocast_proto::keys::UPDATE_CONTEXT), ("directory", altocast_proto::keys::DIRECTORY_CONTEXT)];
    let messages = list(&f, "signed_messages");
    names(messages);
    let mut seen = Vec::new();
    for m in messages {
        let ctx = bytes_of(m, "context");
        let body = bytes_of(m, "body");
        let text_ctx = text(m, "context_text").strip_suffix("\\0").expect("context text ends in \\0");
        assert_eq!([text_ctx.as_bytes(), &[0]].concat(), ctx, "{}", name_of(m));
        assert_eq!(text(m, "context_hash"), h(&ctx));
        assert_eq!(text(m, "body_hash"), h(&body));
        assert_eq!(text(m, "message"), format!("{}{}", h(&ctx), h(&body)), "M = H(C) ‖ H(B) (§5.1)");
        let key = PublicKey::from_raw(&bytes_of(m, "public_key")).expect("key");
        assert_eq!(key.id().as_str(), text(m, "key_id"));
        let sig = pb::Signature { key_id: key.id().to_string(), sig: bytes_of(m, "signature").into() };
        let trusted = TrustedKeys::new([key]);
        let under: Vec<&str> = contexts
            .iter()
            .filter(|(_, c)| trusted.verify(c, &body, std::slice::from_ref(&sig)).is_ok())
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(under, strings(m, "verifies_under"), "{}", name_of(m));
        seen.extend(under.iter().map(|s| s.to_string()));
    }
    assert!(seen.contains(&"update".into()) && seen.contains(&"directory".into()), "both contexts are covered");
    for s in list(&f, "invalid_signatures") {
        let key = PublicKey::from_raw(&bytes_of(s, "public_key")).expect("key");
        let sig = pb::Signature { key_id: key.id().to_string(), sig: bytes_of(s, "signature").into() };
        let err = TrustedKeys::new([key])
            .verify(&bytes_of(s, "context"), &bytes_of(s, "body"), &[sig])
            .expect_err(name_of(s));
        assert_eq!(error_name(&VerifyError::from(err)), text(field(s, "expect"), "error"), "{}", name_of(s));
    }
}

// ---------------------------------------------------------------- tags (§3)

/// `"domain\0"` then the writes of §3.3.
struct Pre(Vec<u8>);

impl Pre {
    fn new(domain: &str) -> Self {
        Pre([domain.as_bytes(), &[0]].concat())
    }
    fn u64(mut self, n: usize) -> Self {
        self.0.extend_from_slice(&(n as u64).to_le_bytes());
        self
    }
    fn str(self, s: &str) -> Self {
        let mut p = self.u64(s.len());
        p.0.extend_from_slice(s.as_bytes());
        p
    }
    fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
}

/// Address bytes and length of a canonical prefix text.
fn prefix_record(s: &str) -> Vec<u8> {
    let (addr, len) = s.split_once('/').expect("prefix has /L");
    let ip: std::net::IpAddr = addr.parse().expect("canonical address");
    let bytes = match ip {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    };
    [bytes, vec![len.parse::<u8>().expect("length")]].concat()
}

#[test]
fn tag_vectors_hold() {
    let f = load(Group::Tags);
    let maps = list(&f, "network_maps");
    assert!(names(maps).len() >= 4);
    for v in maps {
        let n = name_of(v);
        // The library, from the map as received.
        let input = pb::NetworkMapState {
            pids: list(field(v, "input"), "pids")
                .iter()
                .map(|p| pb::PidPrefixes {
                    pid: text(p, "pid").into(),
                    ipv4: strings(p, "ipv4"),
                    ipv6: strings(p, "ipv6"),
                })
                .collect(),
        };
        let m = NetworkMap::try_from(&input).unwrap_or_else(|e| panic!("{n}: {e}"));
        assert_eq!(m.tag().to_hex(), text(v, "tag"), "{n}: library tag");
        // Its canonical form is the vector's.
        let canonical = list(field(v, "canonical"), "pids");
        assert_eq!(canonical.len(), m.len(), "{n}");
        for ((pid, p), c) in m.iter().zip(canonical) {
            assert_eq!(pid.as_str(), text(c, "pid"), "{n}");
            assert_eq!(p.ipv4.iter().map(|x| x.to_string()).collect::<Vec<_>>(), strings(c, "ipv4"), "{n}");
            assert_eq!(p.ipv6.iter().map(|x| x.to_string()).collect::<Vec<_>>(), strings(c, "ipv6"), "{n}");
        }
        // §3.4 from the canonical form, written out here.
        let mut top = Pre::new("altocast/v1/network-map").u64(canonical.len());
        let rows = list(v, "rows");
        assert_eq!(rows.len(), canonical.len());
        for (c, r) in canonical.iter().zip(rows) {
            let (v4, v6) = (strings(c, "ipv4"), strings(c, "ipv6"));
            let mut row = Pre::new("altocast/v1/network-map/row").str(text(c, "pid")).u64(v4.len());
            for p in &v4 {
                row = row.raw(&prefix_record(p));
            }
            row = row.u64(v6.len());
            for p in &v6 {
                row = row.raw(&prefix_record(p));
            }
            assert_eq!(hex::encode(&row.0), text(r, "preimage"), "{n}: row {}", text(c, "pid"));
            assert_eq!(h(&row.0), text(r, "hash"));
            top = top.str(text(c, "pid")).raw(blake3::hash(&row.0).as_bytes());
        }
        assert_eq!(hex::encode(&top.0), text(v, "preimage"), "{n}: map preimage");
        assert_eq!(h(&top.0), text(v, "tag"), "{n}: H(preimage) is the tag");
    }

    let maps = list(&f, "cost_maps");
    assert!(names(maps).len() >= 4);
    for v in maps {
        let n = name_of(v);
        let input = field(v, "input");
        let ct = field(input, "cost_type");
        let mode = CostMode::parse(text(ct, "mode")).expect("mode");
        let state = pb::CostMapState {
            pids: strings(input, "pids"),
            network_map_id: text(input, "network_map_id").into(),
            network_map_tag: bytes_of(input, "network_map_tag").into(),
            rows: list(input, "rows")
                .iter()
                .map(|r| pb::CostRow {
                    src: num(r, "src") as u32,
                    dst: list(r, "dst").iter().map(|d| d.as_u64().expect("index") as u32).collect(),
                    cost: list(r, "cost").iter().map(|c| c.as_f64().expect("cost")).collect(),
                })
                .collect(),
        };
        let m = cost_map_from_pb(CostType::new(text(ct, "metric"), mode).expect("cost type"), state)
            .unwrap_or_else(|e| panic!("{n}: {e}"));
        assert_eq!(m.tag().to_hex(), text(v, "tag"), "{n}: library tag");
        // §3.5 from the canonical form, written out here.
        let canonical = field(v, "canonical");
        let pids = strings(canonical, "pids");
        assert_eq!(m.pids().iter().map(|p| p.to_string()).collect::<Vec<_>>(), pids, "{n}");
        let mut names_pre = Pre::new("altocast/v1/cost-map/pids").u64(pids.len());
        for p in &pids {
            names_pre = names_pre.str(p);
        }
        assert_eq!(hex::encode(&names_pre.0), text(v, "names_preimage"), "{n}");
        assert_eq!(h(&names_pre.0), text(v, "names_hash"));
        let costs = list(canonical, "costs");
        let rows = list(v, "rows");
        assert_eq!((costs.len(), rows.len()), (pids.len(), pids.len()), "{n}: one dense row per PID");
        let mut row_hashes = Vec::new();
        for (i, (dense, r)) in costs.iter().zip(rows).enumerate() {
            let dense = dense.as_array().expect("row");
            assert_eq!(dense.len(), pids.len(), "{n}: rows are dense");
            let mut row = Pre::new("altocast/v1/cost-map/row");
            for (j, c) in dense.iter().enumerate() {
                let x = match c.as_f64() {
                    None => f64::from_bits(0x7ff8_0000_0000_0000),
                    Some(x) => x + 0.0,
                };
                assert_eq!(m.cost_at(i as u32, j as u32).map(f64::to_bits), c.as_f64().map(f64::to_bits), "{n}");
                row = row.raw(&x.to_le_bytes());
            }
            assert_eq!(hex::encode(&row.0), text(r, "preimage"), "{n}: row {i}");
            assert_eq!(text(r, "src"), pids[i]);
            assert_eq!(h(&row.0), text(r, "hash"));
            row_hashes.push(*blake3::hash(&row.0).as_bytes());
        }
        let mut top = Pre::new("altocast/v1/cost-map").str(text(ct, "metric")).str(text(ct, "mode"));
        top = match field(canonical, "dependency") {
            Value::Null => top.u64(0),
            d => top.u64(1).str(text(d, "resource_id")).raw(&bytes_of(d, "tag")),
        };
        top = top.raw(blake3::hash(&names_pre.0).as_bytes()).u64(pids.len());
        for rh in &row_hashes {
            top = top.raw(rh);
        }
        assert_eq!(hex::encode(&top.0), text(v, "preimage"), "{n}: map preimage");
        assert_eq!(h(&top.0), text(v, "tag"), "{n}: H(preimage) is the tag");
    }
}

// ---------------------------------------------------------------- chains (§6–§8)

/// The body (given or filled, checked against `body_hash`) and signatures of
/// a signed message.
fn signed_parts(v: &Value) -> (Bytes, Vec<pb::Signature>) {
    let body = match v.get("body_fill") {
        Some(f) => {
            let byte = bytes_of(f, "byte");
            assert_eq!(byte.len(), 1, "body_fill.byte is one byte");
            Bytes::from(vec![byte[0]; num(f, "len") as usize])
        }
        None => Bytes::from(bytes_of(v, "body")),
    };
    assert_eq!(h(&body), text(v, "body_hash"), "body_hash is H(body)");
    let signatures = list(v, "signatures")
        .iter()
        .map(|s| pb::Signature { key_id: text(s, "key_id").into(), sig: bytes_of(s, "sig").into() })
        .collect();
    (body, signatures)
}

fn signed_update(v: &Value) -> pb::SignedUpdate {
    let (body, signatures) = signed_parts(v);
    if let Some(d) = v.get("decoded").filter(|d| !d.is_null()) {
        check_decoded(d, &pb::Update::decode(body.clone()).expect("decoded is given, so the body decodes"));
    }
    pb::SignedUpdate { body, signatures }
}

/// The informational `decoded` fields are what the body decodes to.
fn check_decoded(d: &Value, u: &pb::Update) {
    assert_eq!(text(d, "origin_id"), u.origin_id);
    assert_eq!(text(d, "resource_id"), u.resource_id);
    assert_eq!(int(d, "kind"), i64::from(u.kind));
    assert_eq!((num(d, "seq"), num(d, "base_seq")), (u.seq, u.base_seq));
    assert_eq!((bytes_of(d, "tag"), bytes_of(d, "base_tag")), (u.tag.to_vec(), u.base_tag.to_vec()));
    assert_eq!((int(d, "issued_at_ms"), int(d, "expires_at_ms")), (u.issued_at_ms, u.expires_at_ms));
    let deps: Vec<(String, u64, Vec<u8>)> = list(d, "dependencies")
        .iter()
        .map(|x| (text(x, "resource_id").into(), num(x, "seq"), bytes_of(x, "tag")))
        .collect();
    assert_eq!(deps, u.dependencies.iter().map(|x| (x.resource_id.clone(), x.seq, x.tag.to_vec())).collect::<Vec<_>>());
    match (field(d, "cost_type"), &u.cost_type) {
        (Value::Null, None) => {}
        (c, Some(ct)) => assert_eq!((text(c, "metric"), int(c, "mode")), (ct.metric.as_str(), i64::from(ct.mode))),
        (c, None) => panic!("decoded cost_type {c} but the body has none"),
    }
    let payload = match &u.payload {
        None => Value::Null,
        Some(pb::update::Payload::Snapshot(_)) => "snapshot".into(),
        Some(pb::update::Payload::Diff(_)) => "diff".into(),
        Some(pb::update::Payload::Heartbeat(_)) => "heartbeat".into(),
        Some(pb::update::Payload::Chunked(c)) => {
            let dc = field(d, "chunked");
            assert_eq!(num(dc, "total_len"), c.total_len);
            assert_eq!(strings(dc, "chunk_hashes"), c.chunk_hashes.iter().map(hex::encode).collect::<Vec<_>>());
            "chunked".into()
        }
    };
    assert_eq!(field(d, "payload"), &payload);
}

fn chunks(v: &Value) -> Vec<pb::SnapshotChunk> {
    v.as_array()
        .expect("chunks is an array")
        .iter()
        .map(|c| pb::SnapshotChunk { index: num(c, "index") as u32, data: bytes_of(c, "data").into() })
        .collect()
}

fn assert_state(at: &str, state: &MapState, e: &Value) {
    match state {
        MapState::Network(m) => {
            assert_eq!(text(e, "kind"), "network-map", "{at}");
            let pids = list(e, "pids");
            assert_eq!(pids.len(), m.len(), "{at}: PIDs");
            for ((pid, p), j) in m.iter().zip(pids) {
                assert_eq!(pid.as_str(), text(j, "pid"), "{at}");
                assert_eq!(p.ipv4.iter().map(|x| x.to_string()).collect::<Vec<_>>(), strings(j, "ipv4"), "{at} {pid}");
                assert_eq!(p.ipv6.iter().map(|x| x.to_string()).collect::<Vec<_>>(), strings(j, "ipv6"), "{at} {pid}");
            }
        }
        MapState::Cost(m) => {
            assert_eq!(text(e, "kind"), "cost-map", "{at}");
            let ct = field(e, "cost_type");
            assert_eq!(
                (text(ct, "metric"), text(ct, "mode")),
                (m.cost_type().metric.as_str(), m.cost_type().mode.as_str())
            );
            match (field(e, "dependency"), m.depends_on()) {
                (Value::Null, None) => {}
                (d, Some(dep)) => {
                    assert_eq!(
                        (text(d, "resource_id"), text(d, "tag")),
                        (dep.resource_id.as_str(), dep.tag.to_hex().as_str())
                    )
                }
                (d, None) => panic!("{at}: dependency {d} expected, none held"),
            }
            let pids = strings(e, "pids");
            assert_eq!(m.pids().iter().map(|p| p.to_string()).collect::<Vec<_>>(), pids, "{at}");
            let costs = list(e, "costs");
            assert_eq!(costs.len(), pids.len(), "{at}");
            for (i, row) in costs.iter().enumerate() {
                let row = row.as_array().expect("row");
                assert_eq!(row.len(), pids.len(), "{at}");
                for (j, c) in row.iter().enumerate() {
                    assert_eq!(
                        m.cost_at(i as u32, j as u32).map(f64::to_bits),
                        c.as_f64().map(f64::to_bits),
                        "{at} [{i}][{j}]"
                    );
                }
            }
        }
    }
}

fn assert_held(at: &str, got: Option<&Held>, e: &Value, with_state: bool) {
    let Some(h) = got else {
        assert!(e.is_null(), "{at}: nothing held, expected {e}");
        return;
    };
    assert!(!e.is_null(), "{at}: holds seq {}, expected nothing", h.seq);
    assert_eq!((num(e, "seq"), text(e, "tag")), (h.seq, h.tag.to_hex().as_str()), "{at}");
    assert_eq!((int(e, "issued_at_ms"), int(e, "expires_at_ms")), (h.issued_at_ms, h.expires_at_ms), "{at}");
    let deps: Vec<(String, u64, String)> = list(e, "dependencies")
        .iter()
        .map(|d| (text(d, "resource_id").into(), num(d, "seq"), text(d, "tag").into()))
        .collect();
    assert_eq!(
        deps,
        h.dependencies.iter().map(|d| (d.resource_id.to_string(), d.seq, d.tag.to_hex())).collect::<Vec<_>>(),
        "{at}"
    );
    if with_state {
        assert_state(at, &h.state, field(e, "state"));
    } else {
        assert!(e.get("state").is_none(), "{at}: a pending state is never given (it is never exposed)");
    }
}

fn chain_verifier(chain: &Value) -> Verifier {
    let keys = list(chain, "trusted_keys").iter().map(|k| {
        let key = PublicKey::from_raw(&bytes_of(k, "public_key")).expect("trusted key");
        assert_eq!(key.id().as_str(), text(k, "key_id"));
        key
    });
    let resources = strings(chain, "resources").into_iter().map(|r| ResourceId::new(&r).expect("resource id"));
    Verifier::new(TrustedKeys::new(keys), Limits::default(), resources)
}

/// Feeds a chain's first `steps` steps to `v`, asserting each expected outcome.
fn run_chain(chain: &Value, v: &mut Verifier, steps: usize) {
    let now = int(chain, "now_ms");
    let all = list(chain, "steps");
    assert!(steps <= all.len(), "{} has {} steps", name_of(chain), all.len());
    for (i, st) in all.iter().take(steps).enumerate() {
        let at = format!("{} step {i}", name_of(chain));
        let a = v
            .verify(&signed_update(field(st, "update")), &chunks(field(st, "chunks")), now)
            .unwrap_or_else(|e| panic!("{at}: rejected ({}): {e}", error_name(&e)));
        let e = field(st, "expect");
        let result = if a.is_committed() { "committed" } else { "pending" };
        assert_eq!(text(e, "result"), result, "{at}");
        assert_eq!(
            (text(e, "kind"), num(e, "seq"), text(e, "tag")),
            (a.kind.as_str(), a.seq, a.tag.to_hex().as_str()),
            "{at}"
        );
        let waiting = field(e, "waiting");
        match &a.waiting {
            None => assert!(waiting.is_null(), "{at}"),
            Some(altocast_proto::Waiting::Expired { expires_at_ms }) => {
                assert_eq!(
                    (text(waiting, "reason"), int(waiting, "expires_at_ms")),
                    ("expired", *expires_at_ms),
                    "{at}"
                )
            }
            Some(altocast_proto::Waiting::Dependency { resource, seq, tag }) => assert_eq!(
                (text(waiting, "reason"), text(waiting, "resource_id"), num(waiting, "seq"), text(waiting, "tag")),
                ("dependency", resource.as_str(), *seq, tag.to_hex().as_str()),
                "{at}"
            ),
        }
        let id = a.resource_id.as_str();
        assert_held(&format!("{at} held"), v.get(id), field(e, "held"), true);
        assert_held(&format!("{at} pending"), v.pending(id), field(e, "pending"), false);
    }
}

#[test]
fn chains_replay_on_a_fresh_verifier_with_the_expected_outcomes() {
    let f = load(Group::Chains);
    let chains = list(&f, "chains");
    let have = names(chains);
    for required in [
        "network-map-snapshot-diff-heartbeat",
        "cost-map-snapshot-diff-heartbeat",
        "pid-universe-change",
        "network-map-change-rebinds-cost-map",
        "chunked-snapshots",
        "expired-catch-up-committed-by-heartbeat",
    ] {
        assert!(have.contains(&required), "chain {required} is missing");
    }
    let mut pending_then_committed = false;
    for chain in chains {
        let mut v = chain_verifier(chain);
        let steps = list(chain, "steps");
        run_chain(chain, &mut v, steps.len());
        let results: Vec<&str> = steps.iter().map(|s| text(field(s, "expect"), "result")).collect();
        pending_then_committed |= results.contains(&"pending") && results.last() == Some(&"committed");
        assert!(steps.iter().any(|s| !list(s, "chunks").is_empty()) || name_of(chain) != "chunked-snapshots");
    }
    assert!(pending_then_committed, "some chain commits after pending steps (§8.5)");
}

/// Seq, tag and expiry of a held or pending version.
type Brief = Option<(u64, String, i64)>;

fn fingerprint(v: &Verifier) -> Vec<(String, Brief, Brief)> {
    let brief = |h: &Held| (h.seq, h.tag.to_hex(), h.expires_at_ms);
    let mut out: Vec<_> =
        v.resources().map(|(id, h)| (id.to_string(), h.map(brief), v.pending(id.as_str()).map(brief))).collect();
    out.sort();
    out
}

#[test]
fn tamper_vectors_are_rejected_by_exactly_the_named_check() {
    let chains = load(Group::Chains);
    let chains = list(&chains, "chains");
    let f = load(Group::Tamper);
    let vectors = list(&f, "vectors");
    let have = names(vectors);
    for required in [
        "flipped-body-byte",
        "signed-by-untrusted-key-only",
        "wrong-resource-id",
        "rollback-lower-seq",
        "replayed-older-heartbeat",
        "heartbeat-above-held-seq",
        "diff-base-seq-mismatch",
        "diff-base-tag-mismatch",
        "wrong-tag-after-apply",
        "too-many-signatures",
        "body-over-size-limit",
        "chunk-wrong-hash",
        "chunk-index-out-of-range",
        "dependency-newer-than-held",
        "removing-absent-pid",
        "prefix-in-two-pids-snapshot",
        "cost-diff-unsorted-set-indices",
        "cost-diff-duplicate-set-index",
        "cost-diff-set-and-remove-same-index",
    ] {
        assert!(have.contains(&required), "tamper vector {required} is missing");
    }
    for t in vectors {
        let n = name_of(t);
        assert!(!text(t, "mutation").is_empty() && text(t, "description").contains('§'), "{n}: described");
        let base = field(t, "base");
        let chain =
            chains.iter().find(|c| name_of(c) == text(base, "chain")).unwrap_or_else(|| panic!("{n}: no base chain"));
        let mut v = chain_verifier(chain);
        run_chain(chain, &mut v, num(base, "steps") as usize);
        let before = fingerprint(&v);
        let err =
            v.verify(&signed_update(field(t, "update")), &chunks(field(t, "chunks")), int(t, "now_ms")).expect_err(n);
        let e = field(t, "expect");
        assert_eq!(text(e, "result"), "rejected");
        assert_eq!(
            (err.check().as_str(), error_name(&err).as_str()),
            (text(e, "check"), text(e, "error")),
            "{n}: {err}"
        );
        assert!(text(e, "section").starts_with('§'), "{n}");
        assert_eq!(fingerprint(&v), before, "{n}: a rejection changed the verifier's state");
    }
}

// ---------------------------------------------------------------- directory (§9)

/// A `{key_id, ed25519}` of a decoded directory or key list against the message's.
fn assert_public_key(at: &str, x: &Value, k: Option<&pb::PublicKey>) {
    let Some(k) = k else {
        assert!(x.is_null(), "{at}: {x} given, the message has no key");
        return;
    };
    assert_eq!((text(x, "key_id"), bytes_of(x, "ed25519")), (k.key_id.as_str(), k.ed25519.to_vec()), "{at}");
    let key = PublicKey::from_raw(&k.ed25519).expect("listed key");
    assert_eq!(key.id().as_str(), k.key_id, "{at}: a listed key id is that key's id (§4.2)");
}

/// A signed key list (`body`, `signatures`, `body_hash`, `decoded`) against
/// the one the directory body carries.
fn assert_key_list(at: &str, x: &Value, got: &pb::SignedKeyList) {
    let (body, signatures) = signed_parts(x);
    assert_eq!(body, got.body, "{at}: key list body");
    assert_eq!(signatures, got.signatures, "{at}: key list signatures");
    let d = field(x, "decoded");
    let l = pb::KeyList::decode(body).expect("the key list decodes");
    assert_eq!((text(d, "origin_id"), num(d, "version")), (l.origin_id.as_str(), l.version), "{at}");
    assert_eq!((int(d, "issued_at_ms"), int(d, "expires_at_ms")), (l.issued_at_ms, l.expires_at_ms), "{at}");
    assert_public_key(&format!("{at} root"), field(d, "root"), l.root.as_ref());
    let keys = list(d, "keys");
    assert_eq!(keys.len(), l.keys.len(), "{at}: keys");
    for (k, got) in keys.iter().zip(&l.keys) {
        assert_public_key(&format!("{at} key"), field(k, "key"), got.key.as_ref());
        assert_eq!((int(k, "not_before_ms"), int(k, "not_after_ms")), (got.not_before_ms, got.not_after_ms), "{at}");
    }
    assert_eq!(strings(d, "revoked"), l.revoked, "{at}");
}

/// Every field of a decoded directory (`decoded`, or an accepted vector's
/// `directory`) against the directory body.
fn assert_directory(at: &str, x: &Value, dir: &pb::Directory) {
    assert_eq!((text(x, "origin_id"), num(x, "seq")), (dir.origin_id.as_str(), dir.seq), "{at}");
    assert_eq!((int(x, "issued_at_ms"), int(x, "expires_at_ms")), (dir.issued_at_ms, dir.expires_at_ms), "{at}");
    let res = list(x, "resources");
    assert_eq!(res.len(), dir.resources.len(), "{at}");
    for (r, got) in res.iter().zip(&dir.resources) {
        assert_eq!((text(r, "resource_id"), int(r, "kind")), (got.resource_id.as_str(), i64::from(got.kind)));
        assert_eq!(strings(r, "uses"), got.uses);
        match (field(r, "cost_type"), &got.cost_type) {
            (Value::Null, None) => {}
            (c, Some(ct)) => assert_eq!((text(c, "metric"), int(c, "mode")), (ct.metric.as_str(), i64::from(ct.mode))),
            (c, None) => panic!("{at}: cost_type {c} expected"),
        }
    }
    let listed = list(x, "keys");
    assert_eq!(listed.len(), dir.keys.len(), "{at}");
    for (k, got) in listed.iter().zip(&dir.keys) {
        assert_public_key(at, k, Some(got));
    }
    assert_eq!(strings(x, "rproxies"), dir.rproxies, "{at}");
    match (field(x, "key_chain"), &dir.key_chain) {
        (Value::Null, None) => {}
        (c, Some(chain)) => {
            let history = list(c, "root_history");
            assert_eq!(history.len(), chain.root_history.len(), "{at}: root_history");
            for (i, (h, got)) in history.iter().zip(&chain.root_history).enumerate() {
                assert_key_list(&format!("{at} root_history[{i}]"), h, got);
            }
            match (field(c, "current"), &chain.current) {
                (Value::Null, None) => {}
                (x, Some(got)) => assert_key_list(&format!("{at} current"), x, got),
                (x, None) => panic!("{at}: current {x} expected"),
            }
        }
        (c, None) => panic!("{at}: key_chain {c} expected"),
    }
}

/// A signed directory of the vectors, its `decoded` form checked against the body.
fn signed_directory(at: &str, v: &Value) -> pb::SignedDirectory {
    let (body, signatures) = signed_parts(v);
    if let Some(d) = v.get("decoded").filter(|d| !d.is_null()) {
        assert_directory(at, d, &pb::Directory::decode(body.clone()).expect("decoded is given, so the body decodes"));
    }
    pb::SignedDirectory { body, signatures }
}

#[test]
fn directory_vectors_hold() {
    let f = load(Group::Directory);
    let vectors = list(&f, "vectors");
    names(vectors);
    let mut accepted = 0;
    for d in vectors {
        let n = name_of(d);
        let keys = TrustedKeys::new(
            list(d, "trusted_keys").iter().map(|k| PublicKey::from_raw(&bytes_of(k, "public_key")).expect("key")),
        );
        let signed = signed_directory(n, field(d, "signed"));
        let e = field(d, "expect");
        match (text(e, "result"), open_directory(&keys, &signed)) {
            ("accepted", Ok(dir)) => {
                accepted += 1;
                let x = field(e, "directory");
                assert_eq!(field(field(d, "signed"), "decoded"), x, "{n}: decoded is the accepted directory");
                assert_directory(n, x, &dir);
            }
            ("rejected", Err(err)) => {
                assert_eq!(
                    (err.check().as_str(), error_name(&err).as_str()),
                    (text(e, "check"), text(e, "error")),
                    "{n}"
                );
            }
            (want, got) => panic!("{n}: expected {want}, open_directory gave {got:?}"),
        }
    }
    assert!(accepted >= 1);
}

/// Root reached, key list version, origin id, directory position, update
/// keys with their windows, and what is held: the verifier's state of §9.3.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TrustState {
    root: Option<String>,
    key_list_version: u64,
    origin_id: Option<String>,
    directory: Option<(u64, i64, i64)>,
    update_keys: Vec<(String, i64, i64)>,
    held: Vec<(String, u64, String, i64, i64)>,
}

impl TrustState {
    fn of(v: &Verifier) -> Self {
        let keys = v.keys();
        let mut update_keys: Vec<_> = keys
            .iter()
            .map(|k| {
                let (from, until) = keys.window(k.id()).expect("a key list's update key has a window");
                (k.id().to_string(), from, until)
            })
            .collect();
        update_keys.sort();
        let mut held: Vec<_> = v
            .resources()
            .filter_map(|(id, h)| h.map(|h| (id.to_string(), h.seq, h.tag.to_hex(), h.issued_at_ms, h.expires_at_ms)))
            .collect();
        held.sort();
        TrustState {
            root: keys.trusted_root().map(|r| r.id().to_string()),
            key_list_version: v.key_list_version(),
            origin_id: v.origin_id().map(str::to_owned),
            directory: v.directory().map(|d| (d.seq, d.issued_at_ms, d.expires_at_ms)),
            update_keys,
            held,
        }
    }

    fn parse(s: &Value) -> Self {
        TrustState {
            root: Some(text(s, "root").to_owned()),
            key_list_version: num(s, "key_list_version"),
            origin_id: field(s, "origin_id").as_str().map(str::to_owned),
            directory: match field(s, "directory") {
                Value::Null => None,
                d => Some((num(d, "seq"), int(d, "issued_at_ms"), int(d, "expires_at_ms"))),
            },
            update_keys: list(s, "update_keys")
                .iter()
                .map(|k| (text(k, "key_id").to_owned(), int(k, "not_before_ms"), int(k, "not_after_ms")))
                .collect(),
            held: list(s, "held")
                .iter()
                .map(|h| {
                    let times = (int(h, "issued_at_ms"), int(h, "expires_at_ms"));
                    (text(h, "resource_id").to_owned(), num(h, "seq"), text(h, "tag").to_owned(), times.0, times.1)
                })
                .collect(),
        }
    }

    /// What §9.3's commit makes of an accepted directory, from its decoded
    /// form alone: the current list's root, version and keys not revoked (with
    /// their windows), the directory's origin id and position.
    fn committed(&self, dir: &pb::Directory) -> Self {
        let current = dir.key_chain.as_ref().and_then(|c| c.current.as_ref()).expect("a current key list");
        let l = pb::KeyList::decode(current.body.clone()).expect("the current key list decodes");
        let mut update_keys: Vec<_> = l
            .keys
            .iter()
            .filter_map(|k| {
                let id = k.key.as_ref().expect("key").key_id.clone();
                (!l.revoked.contains(&id)).then_some((id, k.not_before_ms, k.not_after_ms))
            })
            .collect();
        update_keys.sort();
        TrustState {
            root: Some(l.root.expect("root").key_id),
            key_list_version: l.version,
            origin_id: Some(dir.origin_id.clone()),
            directory: Some((dir.seq, dir.issued_at_ms, dir.expires_at_ms)),
            update_keys,
            held: self.held.clone(),
        }
    }
}

#[test]
fn directory_lifecycles_replay_from_the_trusted_root() {
    let f = load(Group::Directory);
    let lifecycles = list(&f, "lifecycles");
    let have = names(lifecycles);
    for required in [
        "root-first-directory",
        "directory-heartbeat-and-content-change",
        "update-key-rotation",
        "retired-key-window",
        "root-rotation",
        "two-root-rotations-offline",
        "no-key-chain-under-root",
        "current-list-unknown-root",
        "current-list-not-signed-by-its-root",
        "root-rotation-signed-by-new-root-only",
        "root-rotation-signed-by-old-root-only",
        "key-list-rollback",
        "key-list-expired",
        "directory-origin-differs-from-key-list",
        "directory-older-is-ignored",
        "directory-expired-skew-edge",
        "directory-expired",
        "directory-signed-by-revoked-key",
        "updates-under-the-key-list",
        "restore-expired-directory",
    ] {
        assert!(have.contains(&required), "lifecycle {required} is missing");
    }
    let mut errors = std::collections::BTreeSet::new();
    let mut actions = std::collections::BTreeSet::new();
    for lc in lifecycles {
        let n = name_of(lc);
        assert!(text(lc, "description").contains('§'), "{n}: described");
        let root = field(lc, "trusted_root");
        let key = PublicKey::from_raw(&bytes_of(root, "public_key")).expect("root key");
        assert_eq!(key.id().as_str(), text(root, "key_id"), "{n}: root key id (§4.2)");
        let resources = strings(lc, "resources").into_iter().map(|r| ResourceId::new(&r).expect("resource id"));
        let mut v = Verifier::new(TrustedKeys::root(key), Limits::default(), resources);
        let mut expected = TrustState {
            root: Some(text(root, "key_id").to_owned()),
            key_list_version: 0,
            origin_id: None,
            directory: None,
            update_keys: Vec::new(),
            held: Vec::new(),
        };
        assert_eq!(TrustState::of(&v), expected, "{n}: a fresh verifier trusts the root and nothing else");
        for (i, st) in list(lc, "steps").iter().enumerate() {
            let at = format!("{n} step {i}");
            assert!(!text(st, "description").is_empty(), "{at}: described");
            let action = text(st, "action");
            actions.insert(action.to_owned());
            let mut directory = None;
            let outcome = match action {
                "accept_directory" | "restore_directory" => {
                    let signed = signed_directory(&at, field(st, "directory"));
                    directory = pb::Directory::decode(signed.body.clone()).ok();
                    if action == "accept_directory" {
                        v.accept_directory(&signed, int(st, "now_ms")).map(drop)
                    } else {
                        assert!(field(st, "now_ms").is_null(), "{at}: restoring has no clock");
                        v.restore_directory(&signed).map(drop)
                    }
                }
                "verify_update" => v
                    .verify(&signed_update(field(st, "update")), &chunks(field(st, "chunks")), int(st, "now_ms"))
                    .map(|a| assert!(a.is_committed(), "{at}: accepted updates are committed ({:?})", a.waiting)),
                other => panic!("{at}: unknown action {other:?}"),
            };
            let e = field(st, "expect");
            let state = TrustState::parse(field(e, "state"));
            match (text(e, "result"), outcome) {
                ("accepted", Ok(())) => {
                    if let Some(dir) = &directory {
                        // Not newer than the one held: ignored, nothing changes (§9.3).
                        let older = expected
                            .directory
                            .is_some_and(|(s, i, _)| dir.seq < s || (dir.seq == s && dir.issued_at_ms <= i));
                        let want = if older { expected.clone() } else { expected.committed(dir) };
                        assert_eq!(state, want, "{at}: the state §9.3 commits");
                    }
                }
                ("rejected", Err(err)) => {
                    assert_eq!(
                        (err.check().as_str(), error_name(&err).as_str()),
                        (text(e, "check"), text(e, "error")),
                        "{at}: {err}"
                    );
                    assert!(text(e, "section").starts_with('§'), "{at}");
                    assert_eq!(state, expected, "{at}: a rejection leaves the state as it was");
                    errors.insert(error_name(&err));
                }
                (want, got) => panic!("{at}: expected {want}, the verifier gave {got:?}"),
            }
            assert_eq!(TrustState::of(&v), state, "{at}: the verifier's state");
            expected = state;
        }
    }
    for required in [
        "Trust(NoKeyChain)",
        "Trust(UnknownRoot)",
        "Trust(RootSignature)",
        "Trust(Rollback)",
        "Trust(Expired)",
        "Origin",
        "DirectoryExpired",
        "Signature(OutsideWindow)",
        "Signature(UnknownKey)",
    ] {
        assert!(errors.contains(required), "no lifecycle is rejected with {required}");
    }
    assert_eq!(actions.len(), 3, "every action is used: {actions:?}");
}

// ---------------------------------------------------------------- PROTOCOL.md

#[test]
fn protocol_appendix_a_agrees_with_the_vectors() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/PROTOCOL.md");
    let doc = fs::read_to_string(&path).expect("docs/PROTOCOL.md");
    let start = doc.find("## Appendix A").expect("Appendix A");
    let end = doc[start..].find("## Appendix B").map_or(doc.len(), |i| start + i);
    let appendix = &doc[start..end];
    let files: String = Group::ALL.iter().map(|g| read(*g)).collect();
    // Every full-length hex value of Appendix A (keys, hashes, tags, bodies,
    // signatures, chunks) is one the vectors carry.
    let mut values = 0;
    for token in appendix.split(|c: char| !c.is_ascii_hexdigit()).filter(|t| t.len() >= 64) {
        values += 1;
        assert!(files.contains(token), "PROTOCOL.md Appendix A value {}… is in no vector file", &token[..16]);
    }
    assert!(values >= 30, "Appendix A has its values ({values} found)");
    for g in Group::ALL {
        assert!(doc.contains(g.file_name()), "PROTOCOL.md describes {}", g.file_name());
    }
}
