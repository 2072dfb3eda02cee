//! Property tests of the model and the verifier (STYLE: tests).

use std::collections::BTreeMap;

use altocast_proto::{
    CostMapBuilder, CostType, Limits, MapState, NetworkMap, OriginKey, Pid, PidPrefixes, ResourceId, TrustedKeys,
    Verifier,
    model::json,
    pb,
    wire::update::{Signer, Version},
};
use bytes::Bytes;
use proptest::prelude::*;
use prost::Message as _;

fn pid(i: usize) -> Pid {
    Pid::new(&format!("p{i}")).expect("pid")
}

/// A random cost map over a random subset of 12 PIDs; some pairs absent.
fn cost_map() -> impl Strategy<Value = altocast_proto::CostMap> {
    (prop::collection::btree_set(0usize..12, 1..10), prop::collection::vec(prop::option::weighted(0.8, 0u32..50), 144))
        .prop_map(|(pids, costs)| {
            let pids: Vec<usize> = pids.into_iter().collect();
            let mut b = CostMapBuilder::new(CostType::routingcost(), None);
            for &s in &pids {
                let row = pids.iter().filter_map(|&d| costs[s * 12 + d].map(|c| (pid(d), c as f64 / 2.0))).collect();
                b.row(pid(s), row);
            }
            b.build().expect("valid")
        })
}

fn network_map() -> impl Strategy<Value = NetworkMap> {
    prop::collection::btree_map(0usize..10, prop::collection::btree_set(0u8..40, 0..4), 0..8).prop_map(|m| {
        let mut out = BTreeMap::new();
        let mut used = std::collections::HashSet::new();
        for (p, blocks) in m {
            let v4: Vec<String> =
                blocks.into_iter().filter(|b| used.insert(*b)).map(|b| format!("10.{b}.0.0/16")).collect();
            out.insert(pid(p), PidPrefixes::parse("p", &v4, &[format!("2001:db8:{p:x}::/48")]).expect("prefixes"));
        }
        NetworkMap::new(out).expect("valid")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn cost_map_apply_of_diff_gives_target(a in cost_map(), b in cost_map()) {
        let d = a.diff(&b).expect("same cost type");
        let got = a.apply(&d).expect("applies");
        prop_assert_eq!(got.tag(), b.tag());
        prop_assert_eq!(&got, &b);
        // The incrementally maintained tag equals a full rehash.
        prop_assert_eq!(got.tag(), got.full_rehash_tag());
        // And the diff survives the wire.
        let wire = MapState::Cost(a.clone()).diff(&MapState::Cost(b.clone())).expect("diff").to_pb();
        let back = altocast_proto::MapDiff::from_pb(pb::Diff::decode(wire.encode_to_vec().as_slice()).expect("decode")).expect("valid");
        prop_assert_eq!(MapState::Cost(a).apply(&back).expect("apply").tag(), b.tag());
    }

    #[test]
    fn network_map_apply_of_diff_gives_target(a in network_map(), b in network_map()) {
        let d = a.diff(&b);
        let got = a.apply(&d).expect("applies");
        prop_assert_eq!(got.tag(), b.tag());
        prop_assert_eq!(&got, &b);
    }

    #[test]
    fn merge_patch_of_two_maps_applies_to_the_target(a in cost_map(), b in cost_map()) {
        let patch = json::cost_map_merge_patch(&a, &b);
        let p = json::parse_cost_map_patch(&a, patch.as_bytes()).expect("patch parses");
        let got = a.apply(&p.diff).expect("patch applies");
        prop_assert_eq!(got.tag(), b.tag(), "patch {}", patch);
    }

    #[test]
    fn json_round_trip_keeps_the_tag(b in cost_map()) {
        let doc = json::parse_cost_map(json::cost_map_json(&b).as_bytes()).expect("parse");
        prop_assert_eq!(doc.map.tag(), b.tag());
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = pb::Update::decode(bytes.as_slice());
        let _ = pb::SubscribeResponse::decode(bytes.as_slice());
        let _ = json::parse_network_map(&bytes);
        let _ = json::parse_cost_map(&bytes);
        let key = OriginKey::from_seed([1; 32]);
        let mut v = Verifier::accepting_all(TrustedKeys::new([key.public()]), Limits::default());
        // Arbitrary bytes, even validly signed, never panic the verifier.
        let body = Bytes::from(bytes);
        let sig = key.sign(altocast_proto::keys::UPDATE_CONTEXT, &body);
        let _ = v.verify(&pb::SignedUpdate { body: body.clone(), signatures: vec![sig] }, &[], 0);
        // Nor the directory's decoder.
        let sig = key.sign(altocast_proto::keys::DIRECTORY_CONTEXT, &body);
        let dir = pb::SignedDirectory { body, signatures: vec![sig] };
        let _ = altocast_proto::verify::directory::open_directory(&TrustedKeys::new([key.public()]), &dir);
    }
}

/// Any single flipped bit in the body or the signature fails verification.
#[test]
fn any_flipped_bit_fails_verification() {
    let signer = Signer::new(OriginKey::from_seed([3; 32]), 60_000);
    let mut b = CostMapBuilder::new(CostType::routingcost(), None);
    b.row(pid(0), vec![(pid(0), 0.0), (pid(1), 4.0)]).row(pid(1), vec![(pid(0), 4.0)]);
    let v = Version { seq: 1, state: MapState::Cost(b.build().expect("cm")), dependencies: vec![] };
    let id = ResourceId::new("cm").expect("id");
    let s = signer.snapshot(&id, &v, 1000).update;
    let verifier = || Verifier::new(TrustedKeys::new([signer.key().public()]), Limits::default(), [id.clone()]);
    verifier().verify(&s, &[], 1000).expect("intact update verifies");
    for bit in 0..s.body.len() * 8 {
        let mut body = s.body.to_vec();
        body[bit / 8] ^= 1 << (bit % 8);
        let t = pb::SignedUpdate { body: body.into(), signatures: s.signatures.clone() };
        assert!(verifier().verify(&t, &[], 1000).is_err(), "body bit {bit} flipped but verified");
    }
    for bit in 0..64 * 8 {
        let mut sig = s.signatures[0].sig.to_vec();
        sig[bit / 8] ^= 1 << (bit % 8);
        let mut t = s.clone();
        t.signatures[0].sig = sig.into();
        assert!(verifier().verify(&t, &[], 1000).is_err(), "signature bit {bit} flipped but verified");
    }
}

/// A byte-level mutation of a valid input: replace, insert, delete or
/// duplicate a span at a position.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, u8),
    Insert(usize, u8),
    Delete(usize, usize),
    Duplicate(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        (any::<usize>(), prop::sample::select(b"{}[]\":,0-.e\\nul ".to_vec()))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..8).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<usize>(), 1usize..40).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
    ]
}

fn mutate(input: &[u8], ms: &[Mutation]) -> Vec<u8> {
    let mut v = input.to_vec();
    for m in ms {
        let at = |i: usize, v: &Vec<u8>| if v.is_empty() { 0 } else { i % v.len() };
        match *m {
            Mutation::Replace(i, b) if !v.is_empty() => {
                let i = at(i, &v);
                v[i] = b;
            }
            Mutation::Insert(i, b) => {
                let i = at(i, &v);
                v.insert(i, b);
            }
            Mutation::Delete(i, n) if !v.is_empty() => {
                let i = at(i, &v);
                v.drain(i..(i + n).min(v.len()));
            }
            Mutation::Duplicate(i, n) if !v.is_empty() => {
                let i = at(i, &v);
                let span: Vec<u8> = v[i..(i + n).min(v.len())].to_vec();
                v.splice(i..i, span);
            }
            _ => {}
        }
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Structure-aware fuzzing of the RFC 7285 decoders: a mutated valid
    /// network map, cost map or merge patch is either accepted as a valid map
    /// or refused with a named, non-empty error — never a panic.
    #[test]
    fn mutated_rfc7285_bodies_parse_or_fail_with_a_named_error(
        b in cost_map(),
        ms in prop::collection::vec(mutation(), 1..6),
    ) {
        let nm_body = json::network_map_json(
            &ResourceId::new("nm").expect("id"),
            &NetworkMap::new(b.pids().iter().map(|p| {
                let i: u32 = p.as_str()[1..].parse().expect("index");
                (p.clone(), PidPrefixes::parse(p.as_str(), &[format!("10.{i}.0.0/16")], &[] as &[String]).expect("p"))
            }).collect()).expect("nm"),
        );
        let cm_body = json::cost_map_json(&b);
        for (what, body) in [("network map", &nm_body), ("cost map", &cm_body)] {
            let m = mutate(body.as_bytes(), &ms);
            let r = if what == "network map" {
                json::parse_network_map(&m).map(|_| ())
            } else {
                json::parse_cost_map(&m).map(|_| ())
            };
            if let Err(e) = r {
                prop_assert!(!e.to_string().trim().is_empty(), "{} error without a name", what);
            }
        }
        let patch = mutate(br#"{"cost-map":{"p0":{"p1":3}}}"#, &ms);
        if let Err(e) = json::parse_cost_map_patch(&b, &patch) {
            prop_assert!(!e.to_string().trim().is_empty());
        }
    }

    /// Structure-aware fuzzing of the verifier: a validly *signed* update whose
    /// fields were changed (seq, base, tags, times, payload bytes) is applied
    /// or refused, and a refusal leaves what the verifier holds unchanged.
    #[test]
    fn validly_signed_mutated_updates_never_change_state_when_refused(
        a in cost_map(),
        b in cost_map(),
        seq in prop_oneof![Just(0u64), Just(1), Just(2), Just(3), any::<u64>()],
        base in prop_oneof![Just(0u64), Just(1), Just(2), any::<u64>()],
        flip_tag in any::<bool>(),
        times in prop_oneof![Just(None), (any::<i64>(), any::<i64>()).prop_map(Some)],
        payload_ms in prop::collection::vec(mutation(), 0..4),
    ) {
        let signer = Signer::new(OriginKey::from_seed([9; 32]), 60_000);
        let id = ResourceId::new("cm").expect("id");
        let va = Version { seq: 1, state: MapState::Cost(a), dependencies: vec![] };
        let vb = Version { seq: 2, state: MapState::Cost(b), dependencies: vec![] };
        let mut v = Verifier::new(TrustedKeys::new([signer.key().public()]), Limits::default(), [id.clone()]);
        let s = signer.snapshot(&id, &va, 1_000);
        v.verify(&s.update, &s.chunks, 1_000).expect("snapshot");
        let held = |v: &Verifier| v.get("cm").map(|h| (h.seq, h.tag, h.expires_at_ms));
        let before = held(&v);
        let Some(d) = va.state.diff(&vb.state) else { return Ok(()) };
        let diff = signer.diff(&id, &va, &vb, &d, 2_000).update;
        let mut u = pb::Update::decode(diff.body.clone()).expect("decode");
        u.seq = seq;
        u.base_seq = base;
        if flip_tag && !u.tag.is_empty() {
            let mut t = u.tag.to_vec();
            t[0] ^= 1;
            u.tag = t.into();
        }
        if let Some((i, e)) = times {
            u.issued_at_ms = i;
            u.expires_at_ms = e;
        }
        let mut body = u.encode_to_vec();
        if !payload_ms.is_empty() {
            body = mutate(&body, &payload_ms);
        }
        let body = Bytes::from(body);
        let sig = signer.key().sign(altocast_proto::keys::UPDATE_CONTEXT, &body);
        match v.verify(&pb::SignedUpdate { body, signatures: vec![sig] }, &[], 2_000) {
            Ok(_) => {}
            Err(e) => {
                prop_assert!(!e.to_string().trim().is_empty());
                prop_assert_eq!(held(&v), before, "a refused update changed the held state: {}", e);
            }
        }
    }
}
