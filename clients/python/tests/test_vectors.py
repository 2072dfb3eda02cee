"""PROTOCOL.md Appendix A, every vector, plus the strictness checks of §5.2, §5.3 and §7.3."""
import blake3
import pytest

from altocast import crypto, model
from altocast._pb import pb
from altocast.verifier import Verifier, VerifyError, open_directory

import docvectors

A = docvectors.sections()
T = 1_700_000_000_000
SEED = bytes([7]) * 32
PUB = bytes.fromhex("ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c")
KID = "0871f3aabc26e458"
NM_TAG = bytes.fromhex("5e57e0ad0af0355061b226a259485dd13d1197257e94ee4a778cec0659d445fb")
NM2_TAG = bytes.fromhex("5cbf8118236d4f39464b3eabc8613a9370627abd659fcb4170b2a60477c2f1c0")
CM_TAG = bytes.fromhex("b3ea583ec64460661cdafeea339ed4cf030a6f213db699d97c6a9dfc8172b2a5")
CM2_TAG = bytes.fromhex("b97cda59f1450d900a16f026f8eb5a2315a2c131fcc523303d1abfbb3defb95d")
NM, CM = "my-default-network-map", "my-default-cost-map"
NM_SNAP, CM_SNAP, CM_DIFF, CM_HB, NM_DIFF = docvectors.signed(A["A.5"])
KEY = crypto.load_private_key(docvectors.pems(A["A.1"])[0])


def su(body, sig=None, kid=KID):
    """A SignedUpdate; with sig=None, signed here with the key of A.1."""
    if sig is None:
        kid, sig = crypto.sign(KEY, crypto.UPDATE_CONTEXT, body)
    return pb.SignedUpdate(body=body, signatures=[pb.Signature(key_id=kid, sig=sig)])


def verifier():
    return Verifier({KID: PUB}, resources={NM, CM})


def resigned(body, **fields):
    u = pb.Update.FromString(body)
    for k, v in fields.items():
        setattr(u, k, v)
    return su(u.SerializeToString())


def heartbeat(resource, kind, seq, tag, issued, deps=()):
    u = pb.Update(origin_id=KID, resource_id=resource, kind=kind, seq=seq, base_seq=seq, base_tag=tag, tag=tag,
                  issued_at_ms=issued, expires_at_ms=issued + 60000, heartbeat=pb.Heartbeat())
    u.dependencies.extend(deps)
    return su(u.SerializeToString())


def rejects(v, signed, check, now, chunks=()):
    with pytest.raises(VerifyError) as e:
        v.process(signed, chunks, now)
    assert e.value.check == check, str(e.value)
    return e.value


# ---- A.1 key, A.2 signed message -----------------------------------------------------------

def test_a1_key():
    priv_pem, pub_pem = docvectors.pems(A["A.1"])
    assert crypto.public_bytes(KEY) == PUB
    assert crypto.load_public_key(pub_pem) == PUB
    assert blake3.blake3(PUB).hexdigest() == "0871f3aabc26e4582c508af5c03884e6a96f0989d1dd8cfb49cd17ed25792433"
    assert crypto.key_id(PUB) == KID
    assert crypto._pem_der(priv_pem, "PRIVATE KEY") == bytes.fromhex("302e020100300506032b657004220420") + SEED
    assert crypto._pem_der(pub_pem, "PUBLIC KEY") == bytes.fromhex("302a300506032b6570032100") + PUB


def test_a1_pkcs8_v2_both_encodings():
    import base64
    for pub_field in ("812100", "a123032100"):
        body = bytes.fromhex("020101300506032b657004220420") + SEED + bytes.fromhex(pub_field) + PUB
        der = bytes([0x30, len(body)]) + body
        pem = b"-----BEGIN PRIVATE KEY-----\n" + base64.encodebytes(der) + b"-----END PRIVATE KEY-----\n"
        assert crypto.public_bytes(crypto.load_private_key(pem)) == PUB
        bad = pem.replace(base64.encodebytes(der), base64.encodebytes(der[:-1] + bytes([der[-1] ^ 1])))
        with pytest.raises(ValueError):
            crypto.load_private_key(bad)


def test_a2_signed_message():
    m = crypto.signed_message(crypto.UPDATE_CONTEXT, b"body")
    assert m.hex() == ("b2abe6d2e163bf50454ee7fec32a43c118225c4ebc6d37ddeed65901bf385d75"
                       "0be9c598ae63835518e7fb422dc3027f452d75f3dbdb94c90d843298b1180ad9")
    assert blake3.blake3(crypto.DIRECTORY_CONTEXT).hexdigest() == \
        "50c68a553f4cfb82b0aed5dcbcefba4184d54ddab9cb6ecf69faec61a123f86a"
    sig = bytes.fromhex(A["A.2"].split("| signature | `")[1][:128])
    assert KEY.sign(m) == sig and crypto.strict_verify(PUB, m, sig)
    assert not crypto.strict_verify(PUB, crypto.signed_message(crypto.DIRECTORY_CONTEXT, b"body"), sig)
    assert not crypto.strict_verify(PUB, crypto.signed_message(crypto.UPDATE_CONTEXT, b"bodz"), sig)


# ---- §5.2 strictness, §5.3 several signatures ----------------------------------------------

L = 2**252 + 27742317777372353535851937790883648493


def test_strict_rejects_s_not_below_l():
    m = crypto.signed_message(crypto.UPDATE_CONTEXT, b"body")
    sig = KEY.sign(m)
    s = int.from_bytes(sig[32:], "little") + L
    assert s < 2**256
    assert not crypto.strict_verify(PUB, m, sig[:32] + s.to_bytes(32, "little"))


def test_strict_rejects_small_order_points():
    identity = bytes([1]) + bytes(31)
    # A = R = identity, S = 0 satisfies the plain equation for every message (cryptography accepts it).
    assert not crypto.strict_verify(identity, b"anything", identity + bytes(32))
    # every small-order point, as R with an honest key (order-2 point: y = -1)
    for y in (1, 2**255 - 20, 0):
        assert crypto._decode_point(y.to_bytes(32, "little")) is not None
        assert crypto._small_order(crypto._decode_point(y.to_bytes(32, "little")))
    assert not crypto._small_order(crypto._decode_point(PUB))
    m = crypto.signed_message(crypto.UPDATE_CONTEXT, b"body")
    assert not crypto.strict_verify(PUB, m, identity + KEY.sign(m)[32:])
    assert not crypto.strict_verify(PUB, m, KEY.sign(m)[:63])


def test_signature_lists():
    m_body, sig = NM_SNAP
    good = pb.Signature(key_id=KID, sig=sig)
    unknown = pb.Signature(key_id="0000000000000000", sig=bytes(64))
    bad = pb.Signature(key_id=KID, sig=bytes(64))
    upper = pb.Signature(key_id=KID.upper(), sig=sig)
    trusted = {KID: PUB}
    verify = crypto.verify_signatures
    assert verify(crypto.UPDATE_CONTEXT, m_body, [unknown, good], trusted) == KID
    for sigs, msg in (([], "no signature"), ([unknown] * 4 + [good], "too many"),
                      ([good, bad], "bad signature"), ([unknown, upper], "untrusted")):
        with pytest.raises(crypto.SignatureError, match=msg):
            verify(crypto.UPDATE_CONTEXT, m_body, sigs, trusted)


# ---- A.3, A.4 tags --------------------------------------------------------------------------

def test_a3_network_map_tag():
    nm = model.NetworkMap.from_json({"PID1": {"ipv4": ["198.51.100.0/25", "192.0.2.0/24", "192.0.2.0/24"]},
                                     "PID2": {"ipv4": ["198.51.100.128/25"]},
                                     "PID3": {"ipv4": ["0.0.0.0/0"], "ipv6": ["2001:DB8:0::/32", "::/0"]}})
    assert nm.tag() == NM_TAG
    assert model.NetworkMap({}).tag().hex() == "b12c0ee98113a07eb22ea743b10e1f88ab9675404969fa403880d3de23a1ea7e"
    assert nm.lookup("198.51.100.200") == "PID2" and nm.lookup("10.0.0.1") == "PID3"
    assert nm.lookup("2001:db8::1") == "PID3"


def test_a4_cost_map_tag():
    cm = model.CostMap.from_json({"meta": {"cost-type": {"cost-metric": "routingcost", "cost-mode": "numerical"}},
                                  "cost-map": {"PID1": {"PID1": 1, "PID2": 5, "PID3": 10},
                                               "PID2": {"PID1": 5, "PID2": -0.0, "PID3": 15},
                                               "PID3": {"PID1": 20, "PID2": 15.5}}}, dependency=(NM, NM_TAG))
    assert cm.tag() == CM_TAG
    empty = model.CostMap(("hopcount", model.ORDINAL), None, (), [])
    assert empty.tag().hex() == "7ce2fa74d958a46c8f8993c31729e47e177be21cdc454fa9f9dc512131f14bd1"


@pytest.mark.parametrize("text,family,ok", [
    ("010.0.0.0/8", 4, True), ("10.0.0.1/8", 4, False), ("10.0.0.0/33", 4, False), ("10.0.0.0", 4, False),
    ("256.0.0.0/8", 4, False), (" 10.0.0.0/8", 4, False), ("10.0.0.0/08", 4, True), ("10.0.0.0/008", 4, False),
    ("::ffff:192.0.2.0/120", 6, True), ("2001:DB8::/32", 6, True), ("fe80::%1/64", 6, False),
    ("1:2:3:4:5:6:7:8:9/128", 6, False), ("1::2::3/128", 6, False), ("::/129", 6, False), ("::1/127", 6, False),
    ("1:2:3:4:5:6:1.2.3.4/128", 6, True), ("12345::/16", 6, False), ("::/0", 6, True), ("١.0.0.0/8", 4, False)])
def test_prefix_grammar(text, family, ok):
    if ok:
        model.parse_prefix(text, family)
    else:
        with pytest.raises(model.PayloadError):
            model.parse_prefix(text, family)


# Every example string of §2.2, with the address an accepted one means.
@pytest.mark.parametrize("text,family,means", [
    ("010.000.0.0/16", 4, "10.0.0.0/16"), ("0010.0.0.0/8", 4, None), ("10.0.0.0/08", 4, "10.0.0.0/8"),
    ("0.0.0.0/00", 4, "0.0.0.0/0"), ("10.0.0.0/032", 4, None), ("::/000", 6, "::/0"), ("::/0128", 6, None),
    ("00000::/128", 6, None), ("::192.000.002.001/128", 6, "::c000:201/128"), ("::0192.0.2.1/128", 6, None),
    ("1:2:3:4:5:6:1.2.3.4/128", 6, "1:2:3:4:5:6:102:304/128"), (":1::/128", 6, None), ("1:::2/128", 6, None),
    ("1::2::3/128", 6, None), ("1:2:3:4:5:6:7:8::/128", 6, None), ("1:2:3:4::5:6:7:8/128", 6, "1:2:3:4:5:6:7:8/128"),
    ("::1:2:3:4:5:6:7:8/128", 6, "1:2:3:4:5:6:7:8/128"), ("1:2:3:4:5:6:7::8/128", 6, "1:2:3:4:5:6:7:8/128"),
    ("::1:2:3:4:5:6:7:8:9/128", 6, None), ("::1.2.3.4/128", 6, "::102:304/128"),
    ("::ffff:1.2.3.4/128", 6, "::ffff:1.2.3.4/128"), ("1:2:3:4:5:6::1.2.3.4/128", 6, "1:2:3:4:5:6:102:304/128"),
    ("::1:2:3:4:5:6:1.2.3.4/128", 6, "1:2:3:4:5:6:102:304/128"), ("1.2.3.4::/128", 6, None),
    ("ffff:1.2.3.4::/128", 6, None), ("::1.2.3.4:5/128", 6, None), ("1:2:3:4:5:6:7::1.2.3.4/128", 6, None),
    ("1:2:3:4:5:1.2.3.4/128", 6, None), ("[::]/0", 6, None), ("::/+0", 6, None)])
def test_prefix_grammar_examples(text, family, means):
    if means is None:
        with pytest.raises(model.PayloadError):
            model.parse_prefix(text, family)
    else:
        assert model.parse_prefix(text, family) == model.parse_prefix(means, family)


# ---- A.5 signed updates ---------------------------------------------------------------------

def test_a5_sequence_commits():
    assert blake3.blake3(NM_SNAP[0]).hexdigest() == "4b2dadda2527206e4b15fbb7031ae8f950099eea4585b9ae1e59a75704719391"
    assert blake3.blake3(CM_SNAP[0]).hexdigest() == "324a8bc2ca088572133f1101e41e51b50ce7983ce0698b8bbb7b764a9269a517"
    u = pb.Update.FromString(NM_SNAP[0])
    assert (u.origin_id, u.resource_id, u.kind, u.seq, u.base_seq, u.base_tag, u.tag, u.issued_at_ms,
            u.expires_at_ms) == (KID, NM, 1, 1, 0, b"", NM_TAG, T, T + 60000)
    v = verifier()
    for (body, sig), seq in zip((NM_SNAP, CM_SNAP, CM_DIFF, CM_HB, NM_DIFF), (1, 1, 2, 2, 2)):
        out = v.process(su(body, sig), now=T + 20000)
        assert out.committed and out.version.seq == seq
    assert v.held[NM].tag == NM2_TAG and v.held[CM].tag == CM2_TAG
    assert v.held[CM].state.dependency == (NM, NM_TAG) and v.find_version(NM, NM_TAG, 1)
    assert v.held[CM].state.cost("PID3", "PID3") == 0.0 and v.held[CM].state.cost("PID1", "PID3") is None
    assert set(v.held[NM].state.pids) == {"PID1", "PID3", "PID4"}


# ---- A.6 chunked snapshot -------------------------------------------------------------------

def test_a6_chunked():
    (body, sig), = docvectors.signed(A["A.6"])
    chunks = [pb.SnapshotChunk(index=i, data=d) for i, (d, h) in enumerate(docvectors.chunks(A["A.6"]))]
    assert [blake3.blake3(c.data).digest() for c in chunks] == list(pb.Update.FromString(body).chunked.chunk_hashes)
    assert [len(c.data) for c in chunks] == [64, 44]
    out = verifier().process(su(body, sig), chunks, T)
    assert out.committed and out.version.tag == NM_TAG and out.payload == "chunked"
    bad_data = pb.SnapshotChunk(index=1, data=chunks[1].data[:-1] + b"3")
    for cs in ([chunks[1], chunks[0]], [chunks[0]], [chunks[0], bad_data], chunks + [chunks[1]],
               [chunks[0], pb.SnapshotChunk(index=2, data=chunks[1].data)]):
        rejects(verifier(), su(body, sig), "signature", T, cs)


# ---- A.7 directory --------------------------------------------------------------------------

def test_a7_directory():
    (body, sig), = docvectors.signed(A["A.7"])
    signed = pb.SignedDirectory(body=body, signatures=[pb.Signature(key_id=KID, sig=sig)])
    d = open_directory(signed, {KID: PUB})
    assert d.origin_id == KID and d.issued_at_ms == T and list(d.rproxies) == ["http://127.0.0.1:7200"]
    assert [(r.resource_id, r.kind, list(r.uses)) for r in d.resources] == [(NM, 1, []), (CM, 2, [NM])]
    assert d.resources[1].cost_type.metric == "routingcost" and d.keys[0].ed25519 == PUB
    rejects(verifier(), su(body, sig), "signature", T)   # not an update signature
    with pytest.raises(VerifyError):
        open_directory(pb.SignedDirectory(body=NM_SNAP[0], signatures=[pb.Signature(key_id=KID, sig=NM_SNAP[1])]),
                       {KID: PUB})


# ---- A.8 expected verdicts ------------------------------------------------------------------

def test_a8_verdicts():
    now = T + 20000
    rejects(verifier(), su(*CM_SNAP), "dependency", now)
    rejects(verifier(), su(*CM_DIFF), "base", now)

    v = verifier()
    for s in (NM_SNAP, CM_SNAP, CM_DIFF):
        v.process(su(*s), now=now)
    rejects(v, su(*CM_DIFF), "sequence", now)
    rejects(v, su(*CM_SNAP), "sequence", now)
    assert v.process(su(*CM_HB), now=now).committed
    older = resigned(CM_HB[0], issued_at_ms=T + 10000, expires_at_ms=T + 70000)
    assert "older" in rejects(v, older, "sequence", now).reason
    assert v.process(su(*CM_HB), now=now).committed

    v = verifier()
    v.process(su(*NM_SNAP), now=T)
    out = v.process(su(*NM_DIFF), now=T + 67001)
    assert not out.committed and out.waiting == "expired" and v.held[NM].seq == 1 and v.pending[NM].seq == 2
    out = v.process(heartbeat(NM, 1, 2, NM2_TAG, T + 70000), now=T + 70000)
    assert out.committed and v.held[NM].seq == 2 and NM not in v.pending
    assert [r.seq for r in v.recent[NM]] == [1]

    rejects(verifier(), su(*NM_SNAP), "expiry", T - 5001)
    rejects(verifier(), su(NM_SNAP[0][:-1] + bytes([NM_SNAP[0][-1] ^ 1]), NM_SNAP[1]), "signature", now)

    v = verifier()
    v.process(su(*NM_SNAP), now=now)
    v.process(su(*CM_SNAP), now=now)
    assert "gap" in rejects(v, heartbeat(NM, 1, 2, NM2_TAG, now), "sequence", now).reason


# ---- more of §8 -----------------------------------------------------------------------------

def test_failed_checks_change_nothing_and_bad_tags():
    v = verifier()
    v.process(su(*NM_SNAP), now=T)
    before = (dict(v.held), dict(v.pending), {k: list(x) for k, x in v.recent.items()})
    rejects(v, resigned(NM_DIFF[0], tag=NM2_TAG[:31]), "apply", T)          # C2 tag length
    rejects(v, resigned(NM_DIFF[0], tag=NM_TAG), "apply", T)                # C8 tag mismatch
    rejects(v, resigned(NM_DIFF[0], base_tag=b""), "base", T)               # empty = all-zero tag
    rejects(v, resigned(NM_DIFF[0], resource_id="other"), "resource", T)    # O4
    rejects(v, resigned(NM_DIFF[0], kind=2), "apply", T)                    # C7
    rejects(v, resigned(NM_DIFF[0], issued_at_ms=T + 5001), "expiry", T)    # C9
    assert (dict(v.held), dict(v.pending), {k: list(x) for k, x in v.recent.items()}) == before
    big = pb.SignedUpdate(body=bytes(16 * 1024 * 1024 + 1))
    rejects(v, big, "size", T)                                              # O1 before the signature


def test_pending_dependency_then_commit():
    """Catch-up from an old cache (§8.5): expired chain pending, then heartbeats commit it."""
    v = verifier()
    late = T + 70000
    assert v.process(su(*NM_SNAP), now=late).waiting == "expired"
    assert v.process(su(*CM_SNAP), now=late).waiting == "expired"
    dep = pb.Dependency(resource_id=NM, seq=1, tag=NM_TAG)
    assert v.process(heartbeat(NM, 1, 1, NM_TAG, late), now=late).committed
    out = v.process(heartbeat(CM, 2, 1, CM_TAG, late, [dep]), now=late)
    assert out.committed and v.held[CM].expires_at_ms == late + 60000
    rebind = pb.Dependency(resource_id=NM, seq=0, tag=NM_TAG)
    rejects(v, heartbeat(CM, 2, 1, CM_TAG, late + 1, [rebind]), "dependency", late + 1)


def test_invalid_utf8_in_a_string_field_is_malformed():
    """§6.1: a body with invalid UTF-8 in a string field is not a valid Update (last origin_id wins: 0xff 0xfe)."""
    rejects(verifier(), su(NM_SNAP[0] + b"\x0a\x02\xff\xfe"), "apply", T)
