"""A malicious proxy (Python gRPC server relaying the honest RProxy) first in the endpoint list."""
import copy
import threading
import time
from concurrent import futures

import grpc
import pytest

from altocast import Options, Subscription, crypto
from altocast._pb import pb, pb_grpc
from conftest import CM0, NM0, Origin, Rproxy, free_port, maps, trusted, view_is, wait_for

TAMPERED = 1000.5   # added to a cost: no legitimate map has such a value


class TamperProxy(pb_grpc.DistributionServicer):
    """mode "cost": re-encode cost-map updates with one cost changed (signatures kept);
    mode "byte": flip the last body byte of cost-map updates;
    mode "withhold": relay for one second, then only replay the last heartbeat of each resource;
    mode "dir-stream": flip a byte of the origin id in every directory frame of Subscribe;
    mode "dir-get": flip the last body byte (inside the key list's root signature) of GetDirectory."""

    def __init__(self, upstream: str, mode: str):
        self.mode, self.port = mode, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.channel = grpc.insecure_channel(upstream.removeprefix("http://"))
        self.stub = pb_grpc.DistributionStub(self.channel)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        pb_grpc.add_DistributionServicer_to_server(self, self.server)
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.tampered = 0

    def __enter__(self):
        self.server.start()
        return self

    def __exit__(self, *exc):
        self.server.stop(grace=0).wait(5)
        self.channel.close()

    def tamper(self, signed):
        u = pb.Update.FromString(signed.body)
        if u.kind != 2 or self.mode not in ("cost", "byte"):
            return signed
        body = signed.body
        if self.mode == "byte":
            body = body[:-1] + bytes([body[-1] ^ 0x01])
        elif u.WhichOneof("payload") == "snapshot" and u.snapshot.cost_map.rows:
            u.snapshot.cost_map.rows[0].cost[0] += TAMPERED
            body = u.SerializeToString()
        elif u.WhichOneof("payload") == "diff" and any(r.set_cost for r in u.diff.cost_map.rows):
            next(r for r in u.diff.cost_map.rows if r.set_cost).set_cost[0] += TAMPERED
            body = u.SerializeToString()
        if body != signed.body:
            self.tampered += 1
        return pb.SignedUpdate(body=body, signatures=signed.signatures)

    def Subscribe(self, request, context):
        call = self.stub.Subscribe(request)
        context.add_callback(call.cancel)
        start, last_hb = time.monotonic(), {}
        frames = iter(call)
        if self.mode == "withhold":
            frames = self._withhold(call, start, last_hb, context)
        try:
            for resp in frames:
                if resp.WhichOneof("item") == "update":
                    resp = pb.SubscribeResponse(update=self.tamper(resp.update))
                elif resp.WhichOneof("item") == "directory" and self.mode == "dir-stream":
                    resp = pb.SubscribeResponse(directory=self.flip(resp.directory, 2))
                yield resp
        except grpc.RpcError:   # upstream ended or was cancelled with the downstream call
            return

    def _withhold(self, call, start, last_hb, context):
        done = threading.Event()
        replay = []
        def drain():                       # keep reading upstream, forward nothing after 1 s
            try:
                for resp in call:
                    if time.monotonic() - start > 1.0:
                        continue
                    replay.append(resp)
                    u = pb.Update.FromString(resp.update.body) if resp.WhichOneof("item") == "update" else None
                    if u and u.WhichOneof("payload") == "heartbeat":
                        last_hb[u.resource_id] = resp
            except grpc.RpcError:
                pass
            done.set()
        threading.Thread(target=drain, daemon=True).start()
        sent = 0
        while context.is_active() and not done.is_set():
            while sent < len(replay):
                sent += 1
                yield replay[sent - 1]
            if time.monotonic() - start > 1.0:
                yield from list(last_hb.values())   # replays of heartbeats already accepted: no-ops
            time.sleep(0.3)

    def Fetch(self, request, context):
        resp = self.stub.Fetch(request)
        return pb.FetchResponse(updates=[self.tamper(s) for s in resp.updates], chunks=resp.chunks)

    def GetDirectory(self, request, context):
        signed = self.stub.GetDirectory(request)
        return self.flip(signed, len(signed.body) - 1) if self.mode == "dir-get" else signed

    def flip(self, signed, i):
        self.tampered += 1
        return pb.SignedDirectory(body=signed.body[:i] + bytes([signed.body[i] ^ 1]) + signed.body[i + 1:],
                                  signatures=signed.signatures)


def legit_costs():
    return {float(c) for row in CM0.values() for c in row.values()} | {7.0}


@pytest.mark.parametrize("mode", ["cost", "byte"])
def test_tampered_updates_are_rejected_and_the_client_fails_over(procs, tmp_path, mode):
    origin = Origin(procs, tmp_path, maps(NM0, CM0))
    rp = Rproxy(procs, origin)
    with TamperProxy(rp.url, mode) as tp:
        sub = Subscription([tp.url, rp.url], trusted(origin), options=Options(backoff_max_s=1)).start()
        try:
            wait_for(lambda: view_is(sub.view, NM0, CM0), 20, "the initial maps via the honest RProxy")
            cm = copy.deepcopy(CM0)
            cm["PID1"]["PID2"] = 7
            origin.write({"cm": maps(NM0, cm)["cm"]})
            wait_for(lambda: view_is(sub.view, NM0, cm), 20, "the cost change")
        finally:
            sub.close()
        assert tp.tampered >= 1
        assert sub.rejections and all(ep == tp.url and e.check == "signature" for ep, e in sub.rejections)
        assert all(ep == tp.url for ep, _ in sub.failures)
        for e in sub.events:          # nothing from the tamperer but the (authentic) network map
            assert e.endpoint == rp.url or e.resource == "nm"
            for pair in e.view.cost_maps.values():
                assert set(v for row in pair.cost.state.to_json().values() for v in row.values()) <= legit_costs()


def test_withholding_proxy_is_declared_stale(procs, tmp_path):
    origin = Origin(procs, tmp_path, maps(NM0, CM0))
    rp = Rproxy(procs, origin)
    with TamperProxy(rp.url, "withhold") as tp:
        sub = Subscription([tp.url, rp.url], trusted(origin), options=Options(backoff_max_s=1)).start()
        try:
            wait_for(lambda: view_is(sub.view, NM0, CM0), 20, "the initial maps via the withholder")
            assert {e.endpoint for e in sub.events} == {tp.url}
            t0 = time.monotonic()
            wait_for(lambda: sub.failures, 30, "the withholder to be declared stale")
            assert sub.failures[0][0] == tp.url and "stale" in sub.failures[0][1]
            assert time.monotonic() - t0 < 25
            cm = copy.deepcopy(CM0)
            cm["PID3"]["PID3"] = 2
            origin.write({"cm": maps(NM0, cm)["cm"]})
            wait_for(lambda: view_is(sub.view, NM0, cm), 20, "the cost change via the honest RProxy")
        finally:
            sub.close()
        assert sub.rejections == []


@pytest.mark.parametrize("mode,check", [("dir-stream", "signature"), ("dir-get", "trust")])
def test_tampered_directory_is_refused(procs, tmp_path, mode, check):
    """A directory with a body byte flipped, pushed on the stream or answered by GetDirectory, is refused
    (on the stream once it is newer than the held one: a not-newer directory is ignored, §9.3)."""
    origin = Origin(procs, tmp_path, maps(NM0, CM0))
    rp = Rproxy(procs, origin)
    with TamperProxy(rp.url, mode) as tp:
        sub = Subscription([tp.url, rp.url], trusted(origin), options=Options(backoff_max_s=1)).start()
        try:
            wait_for(lambda: sub.rejections, 20, "the tampered directory to be refused")
            cm = copy.deepcopy(CM0)
            cm["PID2"]["PID3"] = 3
            origin.write({"cm": maps(NM0, cm)["cm"]})
            wait_for(lambda: view_is(sub.view, NM0, cm), 20, "the cost change via the honest RProxy")
        finally:
            sub.close()
        assert tp.tampered >= 1 and sub.failures and all(ep == tp.url for ep, _ in sub.failures)
        assert all(ep == tp.url and e.check == check and e.step == "§9.3" for ep, e in sub.rejections), sub.rejections
        assert sub.verifier.trust.origin_id == crypto.key_id(crypto.load_public_key(origin.root))
