"""The conformance vectors of proto/vectors/ (format: PROTOCOL.md Appendix C), one test per vector."""
import json
from pathlib import Path

import blake3
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from altocast import Trust, crypto, model
from altocast._pb import pb
from altocast.verifier import Verifier, VerifyError, open_directory

DIR = Path(__file__).resolve().parents[3] / "proto" / "vectors"
CONTEXTS = {"update": crypto.UPDATE_CONTEXT, "directory": crypto.DIRECTORY_CONTEXT}
MODES = {"numerical": model.NUMERICAL, "ordinal": model.ORDINAL}
X = bytes.fromhex


def load(group, array):
    if not DIR.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{DIR} does not exist"))]
    f = json.loads((DIR / f"{group}.json").read_text())
    assert f["format"] == "altocast-conformance-vectors/1" and f["group"] == group
    return [pytest.param(v, id=v["name"]) for v in f.get(array, [])]


def body_of(m) -> bytes:
    """`body`, or `body_fill`: `len` copies of one byte (given as hex, like all bytes)."""
    return X(m["body"]) if "body" in m else X(m["body_fill"]["byte"]) * m["body_fill"]["len"]


def signed_update(m):
    body = body_of(m)
    assert blake3.blake3(body).hexdigest() == m["body_hash"]
    return pb.SignedUpdate(body=body, signatures=[pb.Signature(key_id=s["key_id"], sig=X(s["sig"]))
                                                  for s in m["signatures"]])


def chunks(v):
    return [pb.SnapshotChunk(index=c["index"], data=X(c["data"])) for c in v["chunks"]]


def trusted(v):
    return {k["key_id"]: X(k["public_key"]) for k in v["trusted_keys"]}


def state_is(state, exp):
    """A state of Appendix C.1 against a model state; prefixes compared as networks."""
    if exp["kind"] == "network-map":
        want = {p["pid"]: (tuple(sorted(model.parse_prefix(t, 4) for t in p["ipv4"])),
                           tuple(sorted(model.parse_prefix(t, 6) for t in p["ipv6"]))) for p in exp["pids"]}
        assert [p["pid"] for p in exp["pids"]] == sorted(want)
        return isinstance(state, model.NetworkMap) and state.pids == want
    dep = exp["dependency"] and (exp["dependency"]["resource_id"], X(exp["dependency"]["tag"]))
    costs = [[None if x != x else x for x in row] for row in state.rows]
    return (isinstance(state, model.CostMap) and list(state.pids) == exp["pids"] and costs == exp["costs"]
            and state.cost_type == (exp["cost_type"]["metric"], MODES[exp["cost_type"]["mode"]])
            and state.dependency == dep)


def version_is(v, exp, with_state=True):
    if exp is None or v is None:
        return v is None and exp is None
    deps = [{"resource_id": r, "seq": s, "tag": t.hex()} for r, s, t in v.dependencies]
    return ((v.seq, v.tag.hex(), v.issued_at_ms, v.expires_at_ms, deps) ==
            (exp["seq"], exp["tag"], exp["issued_at_ms"], exp["expires_at_ms"], exp["dependencies"])
            and (not with_state or state_is(v.state, exp["state"])))


# ---- keys.json ------------------------------------------------------------------------------

@pytest.mark.parametrize("v", load("keys", "keys"))
def test_key(v):
    key = crypto.load_private_key(v["private_key_pem"].encode())
    raw = crypto.public_bytes(key)
    assert Ed25519PrivateKey.from_private_bytes(X(v["seed"])) and raw.hex() == v["public_key"]
    assert blake3.blake3(raw).hexdigest() == v["public_key_hash"] and crypto.key_id(raw) == v["key_id"]
    assert crypto.load_public_key(v["public_key_pem"].encode()) == raw
    assert crypto._pem_der(v["private_key_pem"].encode(), "PRIVATE KEY").hex() == v["private_key_der"]
    assert crypto._pem_der(v["public_key_pem"].encode(), "PUBLIC KEY").hex() == v["public_key_der"]


@pytest.mark.parametrize("v", load("keys", "signed_messages"))
def test_signed_message(v):
    body, ctx = X(v["body"]), X(v["context"])
    assert blake3.blake3(ctx).hexdigest() == v["context_hash"] and blake3.blake3(body).hexdigest() == v["body_hash"]
    m = crypto.signed_message(ctx, body)
    assert m.hex() == v["message"]
    seeds = {k["key_id"]: k["seed"] for k in json.loads((DIR / "keys.json").read_text())["keys"]}
    assert Ed25519PrivateKey.from_private_bytes(X(seeds[v["key_id"]])).sign(m).hex() == v["signature"]
    for name, c in CONTEXTS.items():
        ok = crypto.strict_verify(X(v["public_key"]), crypto.signed_message(c, body), X(v["signature"]))
        assert ok == (name in v["verifies_under"]), name


@pytest.mark.parametrize("v", load("keys", "invalid_signatures"))
def test_invalid_signature(v):
    m = crypto.signed_message(X(v["context"]), X(v["body"]))
    assert v["expect"]["result"] == "rejected"
    assert not crypto.strict_verify(X(v["public_key"]), m, X(v["signature"]))


# ---- tags.json ------------------------------------------------------------------------------

@pytest.mark.parametrize("v", load("tags", "network_maps"))
def test_network_map_tag(v):
    msg = pb.NetworkMapState(pids=[pb.PidPrefixes(**p) for p in v["input"]["pids"]])
    nm = model.NetworkMap.from_proto(msg)
    assert state_is(nm, {"kind": "network-map", **v["canonical"]})
    for row in v["rows"]:
        assert nm.row_preimage(row["pid"]).hex() == row["preimage"]
        assert blake3.blake3(X(row["preimage"])).hexdigest() == row["hash"]
    assert nm.preimage().hex() == v["preimage"] and nm.tag().hex() == v["tag"]


@pytest.mark.parametrize("v", load("tags", "cost_maps"))
def test_cost_map_tag(v):
    i = v["input"]
    msg = pb.CostMapState(pids=i["pids"], network_map_id=i.get("network_map_id", ""),
                          network_map_tag=X(i.get("network_map_tag", "")), rows=[pb.CostRow(**r) for r in i["rows"]])
    cm = model.CostMap.from_proto(msg, (i["cost_type"]["metric"], MODES[i["cost_type"]["mode"]]))
    assert state_is(cm, {"kind": "cost-map", "cost_type": i["cost_type"], **v["canonical"]})
    assert cm.names_preimage().hex() == v["names_preimage"]
    assert blake3.blake3(cm.names_preimage()).hexdigest() == v["names_hash"]
    for k, row in enumerate(v["rows"]):
        assert cm.pids[k] == row["src"] and cm.row_preimage(k).hex() == row["preimage"]
        assert blake3.blake3(X(row["preimage"])).hexdigest() == row["hash"]
    assert cm.preimage().hex() == v["preimage"] and cm.tag().hex() == v["tag"]


# ---- chains.json, tamper.json ----------------------------------------------------------------

def chains():
    return {c["name"]: c for c in json.loads((DIR / "chains.json").read_text())["chains"]} if DIR.is_dir() else {}


def run(chain, steps=None):
    v = Verifier(trusted(chain), resources=chain["resources"])
    for k, step in enumerate(chain["steps"][:steps]):
        out, e = v.process(signed_update(step["update"]), chunks(step), chain["now_ms"]), step["expect"]
        r = out.resource
        kind = "snapshot" if out.payload == "chunked" else out.payload
        waiting = None if out.waiting is None else {"reason": out.waiting}
        if out.waiting == "expired":
            waiting["expires_at_ms"] = out.version.expires_at_ms
        elif out.waiting == "dependency":
            rid, seq, tag = out.version.dependencies[0]
            waiting.update(resource_id=rid, seq=seq, tag=tag.hex())
        assert (("committed" if out.committed else "pending"), kind, out.version.seq, out.version.tag.hex(),
                waiting) == (e["result"], e["kind"], e["seq"], e["tag"], e["waiting"]), f"step {k}"
        assert version_is(v.held.get(r), e["held"]), f"step {k}: held"
        assert version_is(v.pending.get(r), e["pending"], with_state=False), f"step {k}: pending"
    return v


@pytest.mark.parametrize("v", load("chains", "chains"))
def test_chain(v):
    run(v)


@pytest.mark.parametrize("v", load("tamper", "vectors"))
def test_tamper(v):
    verifier = run(chains()[v["base"]["chain"]], v["base"]["steps"])
    before = (dict(verifier.held), dict(verifier.pending), {r: list(x) for r, x in verifier.recent.items()})
    with pytest.raises(VerifyError) as err:
        verifier.process(signed_update(v["update"]), chunks(v), v["now_ms"])
    assert v["expect"]["result"] == "rejected" and err.value.check == v["expect"]["check"], str(err.value)
    assert (dict(verifier.held), dict(verifier.pending), {r: list(x) for r, x in verifier.recent.items()}) == before


# ---- directory.json -------------------------------------------------------------------------

def signed_directory(s):
    assert blake3.blake3(body_of(s)).hexdigest() == s["body_hash"]
    return pb.SignedDirectory(body=body_of(s), signatures=[pb.Signature(key_id=x["key_id"], sig=X(x["sig"]))
                                                           for x in s["signatures"]])


@pytest.mark.parametrize("v", load("directory", "vectors"))
def test_directory(v):
    signed = signed_directory(v["signed"])
    e = v["expect"]
    if e["result"] == "rejected":
        with pytest.raises(VerifyError) as err:
            open_directory(signed, trusted(v))
        assert err.value.check == e["check"], str(err.value)
        return
    d, want = open_directory(signed, trusted(v)), e["directory"]
    assert (d.origin_id, d.issued_at_ms, list(d.rproxies)) == (want["origin_id"], want["issued_at_ms"], want["rproxies"])
    assert [(k.key_id, k.ed25519.hex()) for k in d.keys] == [(k["key_id"], k["ed25519"]) for k in want["keys"]]
    got = [(r.resource_id, r.kind, list(r.uses), (r.cost_type.metric, r.cost_type.mode) if r.HasField("cost_type")
            else None) for r in d.resources]
    assert got == [(r["resource_id"], r["kind"], r["uses"], r["cost_type"] and (r["cost_type"]["metric"],
                    r["cost_type"]["mode"])) for r in want["resources"]]


def trust_state(v: Verifier):
    """The verifier's state as `expect.state` of a directory lifecycle gives it (Appendix C.2)."""
    t, d = v.trust, v.trust.directory
    return {"root": crypto.key_id(t.root), "key_list_version": t.key_list_version, "origin_id": t.origin_id,
            "directory": d and {"seq": d.seq, "issued_at_ms": d.issued_at_ms, "expires_at_ms": d.expires_at_ms},
            "update_keys": [{"key_id": k, "not_before_ms": u.not_before_ms, "not_after_ms": u.not_after_ms}
                            for k, u in sorted(t.keys.items())],
            "held": [{"resource_id": r, "seq": h.seq, "tag": h.tag.hex(), "issued_at_ms": h.issued_at_ms,
                      "expires_at_ms": h.expires_at_ms} for r, h in sorted(v.held.items())]}


@pytest.mark.parametrize("v", load("directory", "lifecycles"))
def test_directory_lifecycle(v):
    root = X(v["trusted_root"]["public_key"])
    assert crypto.key_id(root) == v["trusted_root"]["key_id"]
    ver = Verifier(Trust(root=root), resources=v["resources"])
    for k, step in enumerate(v["steps"]):
        e, act = step["expect"], step["action"]
        if act == "verify_update":
            run_step = lambda: ver.process(signed_update(step["update"]), chunks(step), step["now_ms"]).committed  # noqa: E731
        else:
            assert act in ("accept_directory", "restore_directory"), act
            run_step = lambda: ver.trust.accept_directory(signed_directory(step["directory"]), step["now_ms"],  # noqa: E731
                                                          restoring=act == "restore_directory") is not None
        if e["result"] == "rejected":
            with pytest.raises(VerifyError) as err:
                run_step()
            assert err.value.check == e["check"], f"step {k}: {err.value} ({e['error']})"
        else:
            assert e["result"] == "accepted" and run_step(), f"step {k}"
        assert trust_state(ver) == e["state"], f"step {k}: {step['description']}"
