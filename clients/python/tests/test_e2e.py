"""End to end: a real origin (maps dir) and a real RProxy; the view follows every change."""
import copy
import itertools
import json
import subprocess
import threading
import time

from altocast import Options, Subscription, Trust, crypto, model
from conftest import BIN, CM0, NM0, Origin, Rproxy, maps, trusted, view_is, wait_for


def altocast_get(endpoint, origin, resource):
    out = subprocess.run([str(BIN / "altocast"), "get", "--endpoint", endpoint, "--trust-root", str(origin.root),
                          "--resource", resource, "--timeout", "10"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def agrees_with_reference_client(view, endpoint, origin):
    """`altocast get` (the Rust client) through the same RProxy shows the same maps and tags."""
    nm, cm = altocast_get(endpoint, origin, "nm"), altocast_get(endpoint, origin, "cm")
    pair = view.cost_maps["cm"]
    return (model.NetworkMap.from_json(nm).pids == view.network_maps["nm"].state.pids
            and nm["meta"]["vtag"]["tag"] == view.network_maps["nm"].tag.hex()
            and cm["meta"]["dependent-vtags"][0]["tag"] == pair.network.tag.hex()
            and model.CostMap.from_json(cm).to_json() == pair.cost.state.to_json())


def steps():
    nm, cm = copy.deepcopy(NM0), copy.deepcopy(CM0)
    cm["PID1"]["PID2"] = 7                                                       # a cost change
    yield "cost change", {"cm"}, nm, copy.deepcopy(cm)
    nm["PID1"]["ipv4"].remove("198.51.100.0/25")                                 # a prefix move
    nm["PID2"]["ipv4"].insert(0, "198.51.100.0/25")
    yield "prefix move", {"nm"}, copy.deepcopy(nm), copy.deepcopy(cm)
    nm["PID4"] = {"ipv4": ["203.0.113.0/24"], "ipv6": ["2001:db8::/32"]}          # a PID added
    cm["PID4"] = {"PID1": 3, "PID4": 0}
    cm["PID1"]["PID4"] = 2.5
    yield "PID added", {"nm", "cm"}, copy.deepcopy(nm), copy.deepcopy(cm)
    del nm["PID2"]                                                               # a PID removed
    del cm["PID2"]
    for row in cm.values():
        row.pop("PID2", None)
    yield "PID removed", {"nm", "cm"}, copy.deepcopy(nm), copy.deepcopy(cm)


def test_subscribe_through_rproxy_follows_every_change(procs, tmp_path):
    origin = Origin(procs, tmp_path, maps(NM0, CM0))
    rp = Rproxy(procs, origin)
    opts = Options(backoff_max_s=1, directory_refresh_s=1)
    sub = Subscription([rp.url], trusted(origin), options=opts).start()
    try:
        wait_for(lambda: view_is(sub.view, NM0, CM0), 20, "the initial maps")
        assert agrees_with_reference_client(sub.view, rp.url, origin)
        for i, (name, files, nm, cm) in enumerate(steps()):
            if i == 2:   # the RProxy goes down, the maps change, it comes back: the client resumes
                held = dict(sub.verifier.positions())
                procs.stop(rp.proc)
            origin.write({k: v for k, v in maps(nm, cm).items() if k in files})
            if i == 2:
                rp = Rproxy(procs, origin, rp.port)
            wait_for(lambda: view_is(sub.view, nm, cm), 20, f"the view after the {name}")
            assert agrees_with_reference_client(sub.view, rp.url, origin), name
            if i == 2:
                assert all(sub.verifier.held[r].seq >= seq for r, (seq, _) in held.items())
        view = sub.view
        assert view.rank("192.0.2.9", ["203.0.113.5", "10.9.9.9", "192.0.2.1", "198.51.100.1", "fe80::1"]) == [
            ("192.0.2.1", 1.0), ("203.0.113.5", 2.5), ("10.9.9.9", 10.0), ("198.51.100.1", 10.0), ("fe80::1", 10.0)]
        assert view.lookup("2001:db8::7") == "PID4" and view.lookup("198.51.100.200") == "PID3"
        # a resource added at the origin is picked up by a subscription following the whole directory
        origin.write({"cm2": maps(nm, {"PID1": {"PID3": 42}})["cm"]})
        wait_for(lambda: "cm2" in sub.view.cost_maps, 30, "the new cost map")
        assert sub.view.cost_maps["cm2"].cost.state.to_json() == {"PID1": {"PID3": 42.0}}
        assert sub.rejections == [] and sub.stats["commits"] == len(sub.events)
        payloads = {(e.resource, e.payload) for e in sub.events}
        assert {("nm", "diff"), ("cm", "diff"), ("cm", "heartbeat")} <= payloads, payloads
        for e in sub.events:   # every cost map exposed is paired with its own network-map version
            for pair in e.view.cost_maps.values():
                assert pair.cost.state.dependency == (pair.network_map_id, pair.network.tag)
    finally:
        sub.close()


def test_pull_fallback_when_subscribe_is_refused(procs, tmp_path):
    """A Subscribe naming a resource the server does not have is refused (NOT_FOUND): poll with Fetch."""
    origin = Origin(procs, tmp_path, maps(NM0, CM0))
    rp = Rproxy(procs, origin)
    opts = Options(poll_interval_s=0.5, backoff_max_s=1)
    sub = Subscription([rp.url], trusted(origin), resources=["cm", "no-such-map"], options=opts).start()
    try:
        wait_for(lambda: view_is(sub.view, NM0, CM0), 20, "the maps pulled with Fetch")
        nm, cm = NM0, copy.deepcopy(CM0)
        cm["PID3"]["PID3"] = 4
        origin.write({"cm": maps(nm, cm)["cm"]})
        wait_for(lambda: view_is(sub.view, nm, cm), 20, "the pulled cost change")
        assert sub.stats["pull_fallbacks"] >= 1 and sub.rejections == []
        assert {e.mode for e in sub.events} == {"pull"}
    finally:
        sub.close()


def test_update_key_rotation_while_updates_flow(procs, tmp_path):
    """keys add, then retire the old key, then rotate the root, while the cost map changes every 0.3 s:
    the subscriber (trusting the first root) never rejects, never goes stale, and converges (§9.2-§9.4)."""
    origin = Origin(procs, tmp_path, maps(NM0, CM0))
    rp = Rproxy(procs, origin)
    state = tmp_path / "client-state"
    sub = Subscription([rp.url], trusted(origin, state_dir=state), options=Options(backoff_max_s=1)).start()
    cm, stop = copy.deepcopy(CM0), threading.Event()

    def publish():
        for k in itertools.count(1):
            if stop.wait(0.3):
                return
            cm["PID1"]["PID2"] = 100 + k
            origin.write({"cm": maps(NM0, cm)["cm"]})

    def flowing(what):   # more changes arrive after this point
        n = len(sub.events)
        wait_for(lambda: len([e for e in sub.events[n:] if e.payload == "diff"]) >= 3, 20, f"changes after {what}")
    writer = threading.Thread(target=publish, daemon=True)
    try:
        wait_for(lambda: view_is(sub.view, NM0, CM0), 20, "the initial maps")
        (old,) = origin.key_ids()
        first_root = sub.verifier.trust.root
        writer.start()
        flowing("the start")
        origin.keys("add")
        time.sleep(2)
        flowing("keys add")
        new = wait_for(lambda: set(sub.verifier.trust.keys) - {old}, 10, "the new key at the client").pop()
        origin.keys("retire", old)
        flowing("keys retire")
        wait_for(lambda: sub.verifier.trust.keys[old].not_after_ms, 10, "the retirement at the client")
        assert origin.key_ids() == {old: "retired", new: "active"}
        origin.keys("rotate-root")
        flowing("keys rotate-root")
        wait_for(lambda: sub.verifier.trust.root != first_root, 10, "the new root at the client")
        stop.set()
        writer.join()
        wait_for(lambda: view_is(sub.view, NM0, cm), 20, "the last change")
        assert sub.rejections == [] and sub.failures == [], (sub.rejections, sub.failures)
        assert sub.verifier.trust.origin_id == crypto.key_id(first_root)       # the origin id survives the root
        restored = Trust(root=first_root, state_dir=state)                     # a restart resumes from the state
        assert restored.root == sub.verifier.trust.root and restored.key_list_version >= 4
    finally:
        stop.set()
        sub.close()
