"""The directory and the key chain (PROTOCOL.md §9.3-§9.5) with keys made here (no network)."""
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from altocast import Subscription, Trust, Verifier, VerifyError, crypto
from altocast._pb import pb
from test_vectors import NM, NM_SNAP, T

SKEW = 5000


def key(n):
    return Ed25519PrivateKey.from_private_bytes(bytes([n]) * 32)


R1, R2, R9, K1, K2 = key(1), key(2), key(9), key(11), key(12)
ORIGIN = crypto.key_id(crypto.public_bytes(R1))


def pub(k, kid=None):
    raw = crypto.public_bytes(k)
    return pb.PublicKey(key_id=kid or crypto.key_id(raw), ed25519=raw)


def signed(msg_cls, body, ctx, signers):
    sigs = [pb.Signature(key_id=kid, sig=sig) for kid, sig in (crypto.sign(k, ctx, body) for k in signers)]
    return msg_cls(body=body, signatures=sigs)


def key_list(version, root, keys, revoked=(), expires=0, origin=ORIGIN, signers=None):
    body = pb.KeyList(origin_id=origin, version=version, issued_at_ms=T, expires_at_ms=expires, root=pub(root),
                      keys=[pb.UpdateKey(key=pub(k), not_before_ms=nb, not_after_ms=na) for k, nb, na in keys],
                      revoked=list(revoked)).SerializeToString()
    return signed(pb.SignedKeyList, body, crypto.KEYLIST_CONTEXT, signers or [root])


def directory(seq, current, signers, issued=None, history=(), expires=0, origin=ORIGIN):
    d = pb.Directory(origin_id=origin, seq=seq, issued_at_ms=T + seq if issued is None else issued,
                     expires_at_ms=expires, resources=[pb.DirectoryResource(resource_id=NM, kind=1)])
    if current is not None:
        d.key_chain.CopyFrom(pb.KeyChain(root_history=list(history), current=current))
    return signed(pb.SignedDirectory, d.SerializeToString(), crypto.DIRECTORY_CONTEXT, signers)


def update(signers, issued, origin=ORIGIN, seq=1):
    u = pb.Update.FromString(NM_SNAP[0])
    u.origin_id, u.issued_at_ms, u.expires_at_ms, u.seq = origin, issued, issued + 60000, seq
    return signed(pb.SignedUpdate, u.SerializeToString(), crypto.UPDATE_CONTEXT, signers)


def rejects(f, check, *args, **kw):
    with pytest.raises(VerifyError) as e:
        f(*args, **kw)
    assert e.value.check == check, str(e.value)
    return e.value


L1 = key_list(1, R1, [(K1, 0, 0)])


def test_root_chain_names_the_update_keys():
    v = Verifier(Trust(root=crypto.public_key_pem(crypto.public_bytes(R1))), {NM})
    assert rejects(v.open, "signature", update([K1], T)).reread          # no directory yet: no update key
    v.accept_directory(directory(1, L1, [K1]), now=T)
    assert v.trust.origin_id == ORIGIN and v.trust.key_list_version == 1
    assert v.process(update([K1], T), now=T).committed
    assert rejects(v.open, "signature", update([K2], T + 1, seq=2)).reread   # unknown key: a re-read may help
    assert not rejects(v.open, "trust", update([K1], T + 1, "ffffffffffffffff", 2)).reread
    bad_sig = pb.SignedUpdate(body=b"x", signatures=[pb.Signature(key_id=pub(K1).key_id, sig=bytes(64))])
    assert not rejects(v.open, "signature", bad_sig).reread                  # a bad signature by a known key
    # rotation: K2 from T+100; K1 retired at T+300; then K1 revoked
    v.accept_directory(directory(2, key_list(2, R1, [(K1, 0, 0), (K2, T + 100, 0)]), [K1, K2]), now=T)
    assert rejects(v.open, "signature", update([K2], T + 99, seq=2)).reread     # before its window
    assert v.process(update([K2], T + 100, seq=2), now=T).committed             # windows are inclusive
    v.accept_directory(directory(3, key_list(3, R1, [(K1, 0, T + 300), (K2, T + 100, 0)]), [K2], T + 200), now=T)
    assert v.process(update([K1], T + 300, seq=3), now=T).committed             # what it signed before stays valid
    assert rejects(v.open, "signature", update([K1], T + 301, seq=4)).reread
    v.accept_directory(directory(4, key_list(4, R1, [(K2, T + 100, 0)], revoked=[pub(K1).key_id]), [K2], T + 400), now=T)
    rejects(v.open, "signature", update([K1], T + 200, seq=4))
    assert v.process(update([K1, K2], T + 400, seq=4), now=T).committed         # unknown K1 skipped, K2 verifies


def test_directory_checks():
    t = Trust(root=crypto.public_bytes(R1))
    d = directory(5, key_list(2, R1, [(K1, 0, 0)]), [K1])
    t.accept_directory(d, now=T)
    held = t.directory
    # not newer: ignored, not rejected, whatever it carries (a lagging RProxy)
    for old in (directory(4, L1, [K1]), directory(5, L1, [R9], issued=T + 5), directory(5, None, [])):
        assert t.accept_directory(old, now=T) is held and t.position == (5, T + 5)
    flipped = pb.SignedDirectory(body=d.body[:2] + bytes([d.body[2] ^ 1]) + d.body[3:], signatures=d.signatures)
    rejects(Trust(root=crypto.public_bytes(R1)).accept_directory, "signature", flipped, T)   # a body byte flipped
    bad = [("trust", directory(6, L1, [K1])),                                          # key-list rollback
           ("trust", directory(6, key_list(3, R1, [(K1, 0, 0)], expires=T - SKEW - 1), [K1])),   # key list expired
           ("expiry", directory(6, key_list(3, R1, [(K1, 0, 0)]), [K1], expires=T - SKEW - 1)),
           ("trust", directory(6, key_list(3, R1, [(K1, 0, 0)]), [K1], origin="0123456789abcdef")),
           ("trust", directory(6, key_list(3, R1, [(K1, 0, 0)], origin="0123456789abcdef"), [K1], origin="0123456789abcdef")),
           ("trust", directory(6, key_list(3, R1, [(K1, 0, 0)], signers=[K1]), [K1])),   # list not signed by the root
           ("trust", directory(6, None, [K1])),                                            # no key chain
           ("signature", directory(6, key_list(3, R1, [(K1, T + 10, 0)]), [K1])),        # directory outside the window
           ("signature", directory(6, key_list(3, R1, [(K2, 0, 0)]), [K1])),             # by a key the list does not name
           ("signature", directory(6, key_list(3, R1, [(K1, 0, 0)], revoked=[pub(K1).key_id]), [K1]))]
    t2 = key_list(3, R1, [(K1, 0, 0)])
    t2m = pb.KeyList.FromString(t2.body)
    t2m.keys[0].key.key_id = "0000000000000000"                                     # id not of its key
    bad.append(("trust", directory(6, signed(pb.SignedKeyList, t2m.SerializeToString(), crypto.KEYLIST_CONTEXT, [R1]), [K1])))
    for check, x in bad:
        rejects(t.accept_directory, check, x, now=T)
        assert t.directory is held and t.key_list_version == 2 and t.position == (5, T + 5)
    e = rejects(t.accept_directory, "trust", directory(6, key_list(3, R9, [(K1, 0, 0)]), [K1]), now=T)
    assert crypto.key_id(crypto.public_bytes(R1)) in e.reason and pub(R9).key_id in e.reason
    assert t.accept_directory(directory(6, key_list(2, R1, [(K1, 0, 0)]), [K1]), now=T).seq == 6   # same version: fine


def test_root_rotation_and_history():
    rot = key_list(2, R2, [(K2, 0, 0)], signers=[R1, R2])          # signed by the old and the new root
    cur = key_list(3, R2, [(K2, 0, 0)], signers=[R2])
    t = Trust(root=crypto.public_bytes(R1))
    t.accept_directory(directory(1, L1, [K1]), now=T)
    rejects(t.accept_directory, "trust", directory(2, cur, [K2]), now=T)                       # no history: no path
    rejects(t.accept_directory, "trust", directory(2, cur, [K2], history=[key_list(2, R2, [], signers=[R1])]), now=T)
    rejects(t.accept_directory, "trust", directory(2, cur, [K2], history=[key_list(2, R2, [], signers=[R2])]), now=T)
    rejects(t.accept_directory, "trust", directory(2, cur, [K2], history=[rot] * 65), now=T)  # over 64 root changes
    t.accept_directory(directory(2, cur, [K2], history=[rot]), now=T)
    assert t.root == crypto.public_bytes(R2) and t.origin_id == ORIGIN and t.key_list_version == 3
    # a newcomer trusting R2 skips the rotation before its root; one trusting R1 follows it
    assert Trust(root=crypto.public_bytes(R2)).accept_directory(directory(2, cur, [K2], history=[rot]), now=T).seq == 2


def test_first_use_pin_and_state_dir(tmp_path):
    pin, state = tmp_path / "pin.pem", tmp_path / "state"
    rot = key_list(2, R2, [(K2, 0, 0)], signers=[R1, R2])
    t = Trust(first_use=pin, state_dir=state)
    assert not pin.exists()
    t.accept_directory(directory(1, L1, [K1], expires=T + 60000), now=T)
    assert crypto.load_public_key(pin) == crypto.public_bytes(R1) and (state / "directory.pb").exists()
    # restart long after the directory expired: restored without the expiry checks
    t = Trust(first_use=pin, state_dir=state)
    assert t.position == (1, T + 1) and t.key_list_version == 1 and t.origin_id == ORIGIN
    assert t.accept_directory(directory(1, L1, [K1], issued=T), now=T + 10**9) is t.directory  # older: ignored
    e = rejects(t.accept_directory, "trust", directory(2, key_list(1, R9, [(K1, 0, 0)]), [K1]), now=T)
    assert pub(R1).key_id in e.reason and pub(R9).key_id in e.reason
    t.accept_directory(directory(3, key_list(3, R2, [(K2, 0, 0)]), [K2], history=[rot]), now=T)
    assert crypto.load_public_key(pin) == crypto.public_bytes(R2)                   # the pin follows the rotation
    assert Trust(root=crypto.public_bytes(R1), state_dir=state).root == crypto.public_bytes(R2)


def test_fixed_update_keys():
    kid1 = pub(K1).key_id
    v = Verifier({kid1: crypto.public_bytes(K1)}, {NM})
    assert v.process(update([K1], T, "any-origin-id"), now=T).committed          # no directory: origin not known
    v.accept_directory(directory(2, None, [K1], origin="fixed-origin"), now=T)   # no key chain needed
    rejects(v.open, "trust", update([K1], T, "any-origin-id", 2))
    assert v.process(update([K1], T, "fixed-origin", 2), now=T).committed
    rejects(v.accept_directory, "trust", directory(3, None, [K1], origin="other"), now=T)
    rejects(v.accept_directory, "signature", directory(3, L1, [K2], origin="fixed-origin"), now=T)
    with pytest.raises(ValueError):
        Trust()


def test_unknown_signer_rereads_the_directory_once():
    """§9.4: an update signed only by a key not known yet: re-read that endpoint's directory, retry."""
    class Stub:
        def __init__(self, *answers):
            self.answers, self.calls = list(answers), 0

        def GetDirectory(self, request, timeout=None):
            self.calls += 1
            return self.answers.pop(0)
    sub = Subscription(["http://127.0.0.1:1"], Trust(root=crypto.public_bytes(R1)), resources=[NM])
    sub.verifier.accept_directory(directory(1, L1, [K1]), now=T)
    later = directory(2, key_list(2, R1, [(K1, 0, 0), (K2, 0, 0)]), [K1, K2])
    stub = Stub(later)
    assert sub._open(stub, "ep", update([K2], T)).update.seq == 1 and stub.calls == 1
    stub = Stub(later)                                    # the same directory again: ignored, so rejected
    rejects(sub._open, "signature", stub, "ep", update([R9], T))
    assert stub.calls == 1 and sub.stats["directory_rereads"] == 2


def test_malformed_key_lists():
    """§9.3 decode_key_list: the root and every key present, 32 bytes that are a point, with their own id."""
    bad_point = next(bytes([i]) + bytes(30) + b"\x00" for i in range(2, 255) if crypto._decode_point(bytes([i]) + bytes(31)) is None)
    for mutate in (lambda kl: kl.ClearField("root"), lambda kl: kl.keys.add(),
                   lambda kl: kl.keys[0].key.CopyFrom(pb.PublicKey(key_id=crypto.key_id(bad_point), ed25519=bad_point)),
                   lambda kl: setattr(kl, "version", 0), lambda kl: setattr(kl, "origin_id", "")):
        kl = pb.KeyList.FromString(L1.body)
        mutate(kl)
        s = signed(pb.SignedKeyList, kl.SerializeToString(), crypto.KEYLIST_CONTEXT, [R1])
        rejects(Trust(root=crypto.public_bytes(R1)).accept_directory, "trust", directory(1, s, [K1]), now=T)


def test_keys_that_are_no_curve_point_do_not_load():
    """§5.2: a key is decoded when it is loaded (a trust file, a raw root, a fixed key); small order decodes."""
    bad = next(bytes([i]) + bytes(31) for i in range(2, 255) if crypto._decode_point(bytes([i]) + bytes(31)) is None)
    pem = crypto.public_key_pem(bad)
    for load in (lambda: crypto.load_public_key(pem), lambda: Trust(root=pem), lambda: Trust(root=bad),
                 lambda: Trust(keys={crypto.key_id(bad): bad})):
        with pytest.raises(ValueError, match="not a curve point"):
            load()
    small = bytes([1]) + bytes(31)
    assert crypto.load_public_key(crypto.public_key_pem(small)) == small


def test_undecodable_state_file_is_ignored(tmp_path):
    """§9.6: a saved directory that does not decode: start as if there were none; the next accepted one replaces it."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "directory.pb").write_bytes(b"\xff\xff\xff not a SignedDirectory")
    t = Trust(root=crypto.public_bytes(R1), state_dir=state)
    assert t.position is None and t.directory is None
    d = directory(1, L1, [K1])
    t.accept_directory(d, now=T)
    assert (state / "directory.pb").read_bytes() == d.SerializeToString()


def test_saved_directory_decides_the_pin_or_refuses_the_start(tmp_path):
    """§9.5 step 3: no pin file but a saved directory: its root is pinned. §9.6: a saved directory that fails a
    check (another trust anchor) refuses the start, naming the file and what to do."""
    state, pin = tmp_path / "state", tmp_path / "pin.pem"
    Trust(root=crypto.public_bytes(R1), state_dir=state).accept_directory(directory(1, L1, [K1]), now=T)
    t = Trust(first_use=pin, state_dir=state)
    assert crypto.load_public_key(pin) == crypto.public_bytes(R1) and t.position == (1, T + 1)
    e = rejects(Trust, "trust", root=crypto.public_bytes(R9), state_dir=state)
    assert str(state / "directory.pb") in e.reason and "remove the file" in e.reason
