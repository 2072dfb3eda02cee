"""View pairing, freshness and ranking; the stream plan of §10.4 (no network)."""
import pytest

from altocast import StaleError, Subscription, View
from altocast._pb import pb
from test_vectors import CM, CM_DIFF, CM_SNAP, KID, NM, NM_DIFF, NM_SNAP, PUB, T, su, verifier


def committed_view(updates, now):
    v, view = verifier(), View()
    for s in updates:
        out = v.process(su(*s), now=now)
        assert out.committed
        view = view.with_commit(v, out.resource)
    return v, view


def test_cost_map_stays_paired_with_its_network_map_version():
    v, view = committed_view([NM_SNAP, CM_SNAP, CM_DIFF, NM_DIFF], T + 20000)
    pair = view.cost_maps[CM]
    assert view.network_maps[NM].seq == 2 and pair.network.seq == 1      # the cm still depends on nm seq 1
    assert pair.network.tag == pair.cost.state.dependency[1]
    # PID2 (198.51.100.128/25) is gone from the held network map, but the pair uses nm seq 1
    assert view.lookup("198.51.100.200", now=T + 20000) == "PID3"
    assert view.cost("198.51.100.200", "192.0.2.1", now=T + 20000) == 5.0


def test_rank_ties_and_unknown_last():
    _, view = committed_view([NM_SNAP, CM_SNAP], T + 1000)
    peers = ["10.0.0.1", "198.51.100.130", "192.0.2.7", "198.51.100.1"]
    # from PID3: PID1 20, PID2 15.5, PID3 no path
    assert view.rank("10.1.1.1", peers, now=T + 1000) == [
        ("198.51.100.130", 15.5), ("192.0.2.7", 20.0), ("198.51.100.1", 20.0), ("10.0.0.1", None)]
    with pytest.raises(StaleError):
        view.rank("10.1.1.1", peers, now=T + 60001)
    assert view.rank("10.1.1.1", peers, now=T + 60001, allow_stale=True)[0][1] == 15.5
    assert not view.fresh(NM, T + 60001) and view.fresh(NM, T + 60000)


def directory(groups):
    d = pb.Directory(origin_id=KID)
    for nm, cms in groups.items():
        d.resources.add(resource_id=nm, kind=1)
    for nm, cms in groups.items():
        for cm in cms:
            d.resources.add(resource_id=cm, kind=2, uses=[nm])
    return d


def test_stream_plan_keeps_cost_maps_with_their_network_map():
    groups = {f"nm{i}": [f"cm{i}-{j}" for j in range(100)] for i in range(3)}
    groups["big"] = [f"b{j}" for j in range(300)]
    sub = Subscription(["http://127.0.0.1:1"], {KID: PUB})
    sub._plan_streams(directory(groups))
    assert [len(s) for s in sub._plan] == [202, 301, 101]
    for stream in sub._plan:
        for r in stream:
            nm = "big" if r.startswith("b") else "nm" + r[2] if r.startswith("cm") else r
            assert nm in stream and stream.index(nm) <= stream.index(r)
    one = Subscription(["http://127.0.0.1:1"], {KID: PUB}, resources=["cm1-5"])
    one._plan_streams(directory(groups))
    assert one._plan == [["nm1", "cm1-5"]] and one.verifier.resources == {"nm1", "cm1-5"}
