"""Real origin and RProxy processes on loopback free ports, always killed at the end of a test."""
import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from altocast import Trust, model
from altocast._pb import pb, pb_grpc

HERE = Path(__file__).resolve().parent
BIN = Path(os.environ.get("ALTOCAST_BIN_DIR", HERE.parent.parent.parent / "target" / "release"))
TTL_S, HEARTBEAT_S = 4, 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Procs:
    def __init__(self, tmp: Path):
        self.tmp, self.procs = tmp, []

    def start(self, name: str, *args, log: str):
        exe = BIN / name
        if not exe.exists():
            pytest.fail(f"{exe} not found; set ALTOCAST_BIN_DIR")
        p = subprocess.Popen([str(exe), *map(str, args)], stdout=open(self.tmp / log, "ab"),
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def stop(self, p):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)

    def stop_all(self):
        for p in reversed(self.procs):
            self.stop(p)


@pytest.fixture
def procs(tmp_path):
    ps = Procs(tmp_path)
    try:
        yield ps
    finally:
        ps.stop_all()


def directory_ids(url: str, timeout: float = 2.0):
    """Resource ids of an endpoint's (unverified) directory, or None while it has none."""
    try:
        with grpc.insecure_channel(url.removeprefix("http://")) as ch:
            signed = pb_grpc.DistributionStub(ch).GetDirectory(pb.GetDirectoryRequest(), timeout=timeout)
            return {r.resource_id for r in pb.Directory.FromString(signed.body).resources} or None
    except grpc.RpcError:
        return None


class Origin:
    def __init__(self, procs: Procs, tmp: Path, maps: dict):
        self.procs, self.data, self.maps_dir = procs, tmp / "origin-data", tmp / "maps"
        self.maps_dir.mkdir()
        self.write(maps)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = procs.start("altocast-server", "--data-dir", self.data, "--listen", f"127.0.0.1:{self.port}",
                                "--maps-dir", self.maps_dir, "--no-example", "--ttl-secs", TTL_S,
                                "--heartbeat-secs", HEARTBEAT_S, "--quiet-ms", 150, "--poll-ms", 50, log="origin.log")
        wait_for(lambda: directory_ids(self.url) == set(maps), 20, "the origin's directory")
        self.pub = self.data / "origin-pub.pem"      # the first update key (fixed-key trust)
        self.root = self.data / "root-pub.pem"      # the root key: what clients and RProxies trust

    def keys(self, *args) -> str:
        """`altocast-server keys ARGS --data-dir D` (a running origin picks the change up within a second)."""
        out = subprocess.run([str(BIN / "altocast-server"), "keys", *args, "--data-dir", str(self.data)],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def key_ids(self) -> dict[str, str]:
        """Update key id -> state (active, retired, ...), from `keys list`."""
        return dict(re.findall(r"^\s+([0-9a-f]{16}) (\w+)", self.keys("list"), flags=re.M))

    def write(self, maps: dict):
        """Write RFC 7285 bodies, each to a temporary name and renamed (one maps-dir burst)."""
        for name, body in maps.items():
            tmp = self.maps_dir / f".{name}.tmp"
            tmp.write_text(json.dumps(body))
            tmp.rename(self.maps_dir / f"{name}.json")


class Rproxy:
    def __init__(self, procs: Procs, origin: Origin, port: int | None = None, *extra):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = procs.start("altocast-rproxy", "--upstream", origin.url, "--listen", f"127.0.0.1:{self.port}",
                                "--trust-root", origin.root, *extra, log=f"rproxy-{self.port}.log")
        wait_for(lambda: directory_ids(self.url), 20, "the RProxy's directory")


# ---- the maps the tests publish -------------------------------------------------------------

def network_map(pids: dict) -> dict:
    return {"meta": {"vtag": {"resource-id": "nm", "tag": model.NetworkMap.from_json(pids).tag().hex()}},
            "network-map": pids}


def cost_map(costs: dict, pids: dict) -> dict:
    tag = model.NetworkMap.from_json(pids).tag().hex()
    return {"meta": {"dependent-vtags": [{"resource-id": "nm", "tag": tag}],
                     "cost-type": {"cost-mode": "numerical", "cost-metric": "routingcost"}},
            "cost-map": costs}


NM0 = {"PID1": {"ipv4": ["192.0.2.0/24", "198.51.100.0/25"]}, "PID2": {"ipv4": ["198.51.100.128/25"]},
       "PID3": {"ipv4": ["0.0.0.0/0"], "ipv6": ["::/0"]}}
CM0 = {"PID1": {"PID1": 1, "PID2": 5, "PID3": 10}, "PID2": {"PID1": 5, "PID2": 1, "PID3": 15},
       "PID3": {"PID1": 20, "PID2": 15}}


def maps(nm_pids, costs):
    return {"nm": network_map(nm_pids), "cm": cost_map(costs, nm_pids)}


def view_is(view, nm_pids, costs) -> bool:
    """The view holds exactly these maps, the cost map paired with this network-map version."""
    expected = model.NetworkMap.from_json(nm_pids)
    nm, pair = view.network_maps.get("nm"), view.cost_maps.get("cm")
    return bool(nm and pair and nm.state.pids == expected.pids and pair.network.tag == expected.tag()
                and pair.cost.state.to_json() == {s: {d: float(c) for d, c in r.items()} for s, r in costs.items()})


def trusted(origin: Origin, **kw) -> Trust:
    return Trust(root=origin.root, **kw)
