"""End to end at size: a chunked snapshot (§7) and a subscription split over streams (§10.4)."""
from altocast import Options, Subscription, model
from conftest import Origin, Rproxy, cost_map, network_map, trusted, wait_for


def test_chunked_snapshot_through_rproxy(procs, tmp_path):
    n = 400   # a dense 400 x 400 cost map encodes to about 1.6 MB: more than one 1 MiB chunk
    pids = {f"PID{i:03}": {"ipv4": [f"10.{i // 256}.{i % 256}.0/24"]} for i in range(n)}
    costs = {s: {d: float((i * 7 + j * 13) % 97 + 1) for j, d in enumerate(pids)} for i, s in enumerate(pids)}
    origin = Origin(procs, tmp_path, {"nm": network_map(pids), "cm": cost_map(costs, pids)})
    rp = Rproxy(procs, origin)
    sub = Subscription([rp.url], trusted(origin), options=Options(backoff_max_s=1)).start()
    try:
        def cm_is(expected):
            pair = sub.view.cost_maps.get("cm")
            return pair is not None and pair.cost.state.to_json() == expected
        wait_for(lambda: cm_is(costs), 60, "the chunked cost map")
        assert ("cm", "chunked") in {(e.resource, e.payload) for e in sub.events}
        costs["PID007"]["PID123"] = 0.5
        origin.write({"cm": cost_map(costs, pids)})
        wait_for(lambda: cm_is(costs), 30, "the cost change")
        assert sub.rejections == [] and sub.events[-1].payload in ("diff", "heartbeat")
        assert sub.view.rank("10.0.7.1", ["10.0.123.9", "10.0.1.1"])[0] == ("10.0.123.9", 0.5)
    finally:
        sub.close()


def test_many_resources_split_over_streams(procs, tmp_path):
    maps, nms = {}, {}
    for g in range(2):
        nms[f"nm{g}"] = {"A": {"ipv4": [f"10.{g}.0.0/16"]}, "B": {"ipv4": [f"10.{g + 100}.0.0/16"]}}
        maps[f"nm{g}"] = network_map(nms[f"nm{g}"])
        for k in range(150):
            body = cost_map({"A": {"B": k + 1}, "B": {"A": k + 2}}, nms[f"nm{g}"])
            body["meta"]["dependent-vtags"][0]["resource-id"] = f"nm{g}"
            maps[f"cm{g}-{k}"] = body
    for g in range(2):
        maps[f"nm{g}"]["meta"]["vtag"]["resource-id"] = f"nm{g}"
    origin = Origin(procs, tmp_path, maps)
    rp = Rproxy(procs, origin)
    sub = Subscription([rp.url], trusted(origin), options=Options(backoff_max_s=1)).start()

    def paired(g, tag):
        pairs = [sub.view.cost_maps.get(f"cm{g}-{k}") for k in range(150)]
        return all(p is not None and p.network.tag == tag for p in pairs)
    try:
        tags = [model.NetworkMap.from_json(nms[f"nm{g}"]).tag() for g in range(2)]
        wait_for(lambda: paired(0, tags[0]) and paired(1, tags[1]), 60, "302 resources")
        assert sorted(len(s) for s in sub._plan) == [151, 151]
        nms["nm0"]["A"]["ipv4"].append("192.0.2.0/24")        # the origin re-binds 150 cost maps
        body = network_map(nms["nm0"])
        body["meta"]["vtag"]["resource-id"] = "nm0"
        origin.write({"nm0": body})
        new = model.NetworkMap.from_json(nms["nm0"]).tag()
        wait_for(lambda: paired(0, new), 30, "the re-bound cost maps")
        assert sub.rejections == [] and sub.view.cost_maps["cm0-7"].cost.state.cost("A", "B") == 8
    finally:
        sub.close()
