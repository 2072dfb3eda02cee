"""Verified, resumable subscription with failover and pull fallback (PROTOCOL.md §8.8, §9.3, §10).

    sub = Subscription(["http://127.0.0.1:7200", "http://127.0.0.1:7100"], Trust(root="root-pub.pem"))
    for event in sub:                  # one Event per committed update
        print(event.resource, event.seq, event.view.rank("192.0.2.1", peers))

Endpoints are tried in order. Any verification failure, protocol error, staleness or pending
run over the limit abandons the endpoint (put aside for `aside_s`), keeps the verified state and
resumes from the held positions at the next one. A Subscribe refused with a status other than
UNAVAILABLE falls back to polling that endpoint with Fetch. One Verifier serves every stream.
Every stream starts with a directory frame (§10.4), verified before what follows (§9.4); an update
signed only by keys not known (or outside their windows) makes the client re-read that endpoint's
directory once and try again before rejecting it (§9.4).
"""
from __future__ import annotations

import logging
import queue
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass

import grpc

from . import model
from ._pb import pb, pb_grpc
from .verifier import Opened, Verifier, VerifyError, now_ms
from .view import View

log = logging.getLogger("altocast")
MAX_MESSAGE = 64 * 1024 * 1024


@dataclass(frozen=True)
class Event:
    resource: str
    seq: int
    payload: str          # snapshot, diff, heartbeat, chunked
    endpoint: str
    mode: str             # "push" (Subscribe) or "pull" (Fetch)
    view: View            # the view right after this commit


@dataclass
class Options:
    aside_s: float = 30.0            # an abandoned endpoint is put aside this long
    chunk_timeout_s: float = 30.0    # wait per snapshot chunk (§7.3)
    grace_s: float = 10.0            # staleness grace after connecting (§8.8)
    first_commit_s: float = 30.0     # when nothing is held: first commit within this
    poll_interval_s: float = 5.0     # pull fallback (§10.6)
    poll_rounds: int = 6
    fetch_retries: int = 3           # a dependency failure while pulling retries the set (§10.5)
    directory_refresh_s: float = 30.0  # re-read the directory this often, at least once per TTL (§9.4)
    rpc_timeout_s: float = 10.0
    backoff_min_s: float = 0.1
    backoff_max_s: float = 10.0
    stream_resources: int = 256      # SUBSCRIBE_RESOURCES (§10.4)
    max_pending_run: int = 1024      # pending results allowed in a row per session; one more abandons (§8.5)


_URL = re.compile(r"(http|https)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-_]+)(?::([0-9]{1,5}))?(/[^?#]*)?")


def endpoint_target(url: str) -> tuple[bool, str]:
    """§10.1: `http://` or `https://`, then host (DNS name, IPv4, [IPv6]) and port (default 80 or 443); no
    userinfo; a path is not used (gRPC calls go to absolute paths). -> (TLS?, grpc target "host:port")."""
    m = _URL.fullmatch(url)
    port = int(m.group(3) or (443 if m.group(1) == "https" else 80)) if m else 0
    if not m or not 0 < port < 65536:
        raise ValueError(f"bad endpoint URL {url!r}: expected http://host[:port] or https://host[:port]")
    return m.group(1) == "https", f"{m.group(2)}:{port}"


class _Abandon(Exception):
    def __init__(self, reason, aside=True):
        super().__init__(reason)
        self.aside = aside


class _Refused(Exception):
    pass


class _Ended(Exception):
    pass


class _Resubscribe(Exception):
    pass


class Subscription:
    def __init__(self, endpoints, trust, resources=None, options: Options | None = None, ca: bytes | None = None):
        """trust: a Trust (root, fixed keys or first-use pin; optional state dir), or {key id: raw key}."""
        self.endpoints = list(endpoints)
        for ep in self.endpoints:
            if endpoint_target(ep)[0] and ca is None:
                raise ValueError(f"{ep}: an https:// endpoint needs a CA to check its certificate")
        self.configured = list(dict.fromkeys(resources)) if resources else None   # never listed twice (§10.4)
        self.options = options or Options()
        self.ca = ca
        self.verifier = Verifier(trust, resources=self.configured or ())
        self.view = View()
        self.stats = Counter()
        self.rejections: list[tuple[str, VerifyError]] = []   # (endpoint, error)
        self.events: list[Event] = []                         # filled by start()
        self.failures: list[tuple[str, str]] = []             # (endpoint, why it was abandoned)
        self._plan: list[list[str]] | None = None             # resources per Subscribe stream
        self._kinds: dict[str, int] = {}
        self._listed: set[str] = set()
        self._aside: dict[str, float] = {}
        self._closed = threading.Event()
        self._thread = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, on_event=None) -> "Subscription":
        """Run in a background thread, appending to self.events (and calling on_event)."""
        def run():
            try:
                for ev in self:
                    self.events.append(ev)
                    if on_event:
                        on_event(ev)
            except Exception:
                log.exception("subscription stopped")
        self._thread = threading.Thread(target=run, name="altocast-subscription", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._closed.set()
        if self._thread:
            self._thread.join(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- the endpoint loop ---------------------------------------------------------------------
    def __iter__(self):
        o, idx, misses, backoff = self.options, 0, 0, self.options.backoff_min_s
        while not self._closed.is_set():
            i = self._pick(idx)
            if i is None:
                return
            ep, idx = self.endpoints[i], (i + 1) % len(self.endpoints)
            before = self.stats["commits"]
            try:
                try:
                    yield from self._push(ep)
                except _Refused as e:
                    log.warning("%s refused Subscribe (%s): polling it with Fetch", ep, e)
                    self.stats["pull_fallbacks"] += 1
                    yield from self._poll(ep)
            except _Abandon as e:
                log.warning("abandoning %s: %s", ep, e)
                self.failures.append((ep, str(e)))
                self.stats["failovers"] += 1
                if e.aside:
                    self._aside[ep] = time.monotonic() + o.aside_s
            except _Ended:
                log.info("%s ended the stream; resuming elsewhere", ep)
            except _Resubscribe:
                idx = i
                continue
            if self.stats["commits"] > before:
                misses, backoff = 0, o.backoff_min_s
            else:
                misses += 1
                if misses >= len(self.endpoints):
                    misses = 0
                    self._closed.wait(backoff * random.uniform(0.5, 1.5))
                    backoff = min(backoff * 2, o.backoff_max_s)

    def _pick(self, idx):
        """The next endpoint not put aside; if all are, wait for the first to come back."""
        while not self._closed.is_set():
            now, n = time.monotonic(), len(self.endpoints)
            for k in range(n):
                if self._aside.get(self.endpoints[(idx + k) % n], 0) <= now:
                    return (idx + k) % n
            self._closed.wait(max(0.05, min(self._aside.values()) - now))
        return None

    def _channel(self, ep: str):
        opts = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)]
        tls, target = endpoint_target(ep)
        if tls:   # only the CA given: no built-in roots (§10.1); grpc checks the name against the URL's host
            return grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=self.ca), options=opts)
        return grpc.insecure_channel(target, options=opts)

    def _reject(self, ep, e: VerifyError):
        self.rejections.append((ep, e))
        self.stats["rejected"] += 1
        return _Abandon(f"verification failed: {e}")

    def _finish(self, ep, o: Opened, mode) -> Event | None:
        out = self.verifier.finish(o)
        if not out.committed:
            self.stats["pending"] += 1
            return None
        self.stats["commits"] += 1
        self.view = self.view.with_commit(self.verifier, out.resource)
        return Event(out.resource, out.version.seq, out.payload, ep, mode, self.view)

    # -- directory and stream plan (§9.3, §10.4) -----------------------------------------------
    def _directory(self, stub, ep):
        """GetDirectory, verified (§9.3): the held directory after it (None if there is none)."""
        try:
            signed = stub.GetDirectory(pb.GetDirectoryRequest(), timeout=self.options.rpc_timeout_s)
        except grpc.RpcError as e:
            held = self.verifier.trust.directory
            if self.configured is None and self._plan is None and held is None:
                raise _Abandon(f"GetDirectory: {e.code()}", aside=False) from None
            log.info("%s: GetDirectory failed (%s); using the resources already known", ep, e.code())
            return held
        return self._accept_directory(ep, signed)

    def _accept_directory(self, ep, signed):
        try:
            return self.verifier.accept_directory(signed)
        except VerifyError as e:
            raise self._reject(ep, e) from None

    def _open(self, stub, ep, signed) -> Opened:
        """O1-O5; signed only by unknown keys or outside their windows: re-read the directory once (§9.4)."""
        try:
            return self.verifier.open(signed)
        except VerifyError as e:
            if not e.reread:
                raise
        self.stats["directory_rereads"] += 1
        self._directory(stub, ep)
        return self.verifier.open(signed)

    def _new_resources(self, d) -> bool:
        """Following the whole directory and it lists a resource not followed yet (§9.4)."""
        return d is not None and self.configured is None and \
            bool({e.resource_id for e in d.resources if model.valid_name(e.resource_id)} - self._listed)

    def _plan_streams(self, d) -> None:
        if d is None:
            if self._plan is None:
                self._plan = self._pack([[r] for r in self.configured])
            return
        entries = {e.resource_id: e for e in d.resources if model.valid_name(e.resource_id)}
        self._listed = set(entries)
        self._kinds.update({r: e.kind for r, e in entries.items()})
        wanted = self.configured or list(entries)
        chosen = list(dict.fromkeys(wanted + [u for r in wanted if r in entries
                                              for u in entries[r].uses if model.valid_name(u)]))
        groups = {r: [r] for r in chosen if self._kinds.get(r) == model.KIND_NETWORK_MAP}
        singles = []
        for r in chosen:
            if r in groups:
                continue
            uses = [u for u in (entries[r].uses if r in entries else ()) if u in groups]
            if uses:
                groups[uses[0]].append(r)
            else:
                singles.append([r])
        self._plan = self._pack(list(groups.values()) + singles)
        self.verifier.follow(chosen)

    def _pack(self, groups):
        """Streams of at most `stream_resources`, each network map with its cost maps (§10.4)."""
        limit, streams, cur = self.options.stream_resources, [], []
        for g in groups:
            if len(g) > limit:
                streams.append(g)
            elif len(cur) + len(g) > limit:
                streams.append(cur)
                cur = list(g)
            else:
                cur += g
        return streams + ([cur] if cur else [])

    def _followed(self):
        return [r for s in self._plan for r in s]

    # -- push (§10.4) --------------------------------------------------------------------------
    def _push(self, ep):
        channel = self._channel(ep)
        stop = threading.Event()
        try:
            stub = pb_grpc.DistributionStub(channel)
            self._plan_streams(self._directory(stub, ep))
            q = queue.Queue(maxsize=64)
            for i, group in enumerate(self._plan):
                req = pb.SubscribeRequest(resources=[self._position(r) for r in group])
                threading.Thread(target=_read, args=(stub.Subscribe(req), i, q, stop), daemon=True).start()
            yield from self._consume(ep, stub, q)
        finally:
            stop.set()
            channel.close()

    def _position(self, r):
        v = self.verifier.held.get(r)
        return pb.ResumePosition(resource_id=r, have_seq=v.seq, have_tag=v.tag) if v else \
            pb.ResumePosition(resource_id=r)

    def _stale_deadline(self, connected):
        """§8.8, and the held directory's expiry (§9.3), after the grace period of a new connection."""
        o, skew = self.options, self.verifier.max_skew_ms
        grace = connected + int(o.grace_s * 1000)
        held = [self.verifier.held[r].expires_at_ms for r in self._followed() if r in self.verifier.held]
        out = [(max(min(held) + skew, grace), "stale") if held else
               (connected + int(o.first_commit_s * 1000), "nothing committed in time")]
        if self.verifier.trust.deadline_ms() is not None:
            out.append((max(self.verifier.trust.deadline_ms(), grace), "stale directory (expiry)"))
        return min(out)

    def _refresh_ms(self) -> int:
        """§9.4: the directory is re-read periodically, at least once per TTL."""
        ttls = [v.expires_at_ms - v.issued_at_ms for v in self.verifier.held.values()]
        return int(min([self.options.directory_refresh_s * 1000] + [t for t in ttls if t > 0]))

    def _consume(self, ep, stub, q):
        o = self.options
        chunking: dict[int, tuple[Opened, int]] = {}   # stream -> (update awaiting chunks, deadline)
        pending_run, connected, opened_streams = 0, now_ms(), set()
        refresh = connected + self._refresh_ms()
        while not self._closed.is_set():
            deadlines = [self._stale_deadline(connected), (refresh, "refresh")]
            deadline, why = min(deadlines + [(d, "chunk timeout") for _, d in chunking.values()])
            wait = deadline - now_ms()
            if wait <= 0:      # checked before every frame, not only when the streams are idle (§8.8)
                if why != "refresh":
                    raise _Abandon(why)
                if self._new_resources(self._directory(stub, ep)):
                    raise _Resubscribe()
                refresh = now_ms() + self._refresh_ms()
                continue
            try:
                i, kind, val = q.get(timeout=min(wait, 500) / 1000)
            except queue.Empty:
                continue
            if kind == "end":
                raise _Ended()
            if kind == "error":
                if val.code() == grpc.StatusCode.UNAVAILABLE or i in opened_streams:   # §10.2: an open stream fails
                    raise _Abandon(f"stream: {val.code().name}: {val.details()}", aside=False)
                raise _Refused(f"{val.code().name}: {val.details()}")     # the Subscribe call was refused (§10.6)
            opened_streams.add(i)
            which = val.WhichOneof("item")
            try:
                if which == "update":
                    if i in chunking:
                        raise _Abandon("protocol error: update while snapshot chunks are due")
                    opened = self._open(stub, ep, val.update)
                elif which == "directory":
                    if i in chunking:
                        raise _Abandon("protocol error: directory while snapshot chunks are due")
                    if self._new_resources(self._accept_directory(ep, val.directory)):
                        raise _Resubscribe()
                    continue
                elif which == "chunk":
                    if i not in chunking:
                        raise _Abandon("protocol error: chunk without a chunked update")
                    opened = chunking.pop(i)[0]
                    opened.add_chunk(val.chunk)
                else:
                    raise _Abandon("protocol error: empty frame")
                if opened.chunks_due:
                    chunking[i] = (opened, now_ms() + int(o.chunk_timeout_s * 1000))
                    continue
                ev = self._finish(ep, opened, "push")
            except VerifyError as e:
                raise self._reject(ep, e) from None
            if ev is None:
                pending_run += 1
                if pending_run > o.max_pending_run:             # the 1,025th in a row (§8.5)
                    raise _Abandon(f"{pending_run} pending updates in a row")
                continue
            pending_run = 0
            yield ev

    # -- pull fallback (§10.5, §10.6) ----------------------------------------------------------
    def _poll(self, ep):
        channel = self._channel(ep)
        try:
            stub = pb_grpc.DistributionStub(channel)
            for n in range(self.options.poll_rounds):
                if n:   # §8.8 "Pull fallback": re-read, then the directory clock without grace; the maps
                    self._directory(stub, ep)     # clock is not enforced (an answer may refresh nothing)
                    deadline = self.verifier.trust.deadline_ms()
                    if deadline is not None and now_ms() > deadline:
                        raise _Abandon("stale directory (expiry)")
                yield from self._pull_once(ep, stub)
                if n + 1 < self.options.poll_rounds and self._closed.wait(self.options.poll_interval_s):
                    return
        finally:
            channel.close()

    def _pull_once(self, ep, stub):
        order = sorted(self._followed(), key=lambda r: self._kinds.get(r) != model.KIND_NETWORK_MAP)
        for attempt in range(self.options.fetch_retries):
            retry = False
            for r in order:
                try:
                    resp = stub.Fetch(pb.FetchRequest(resource_id=r), timeout=self.options.rpc_timeout_s)
                except grpc.RpcError as e:
                    if e.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.OUT_OF_RANGE):
                        log.warning("%s: Fetch %s: %s", ep, r, e.code().name)
                        continue
                    raise _Abandon(f"Fetch {r}: {e.code().name}", aside=False) from None
                try:
                    committed = None                      # did the last update applied commit?
                    for k, su in enumerate(resp.updates):
                        opened = self._open(stub, ep, su)
                        u = opened.update
                        if u.resource_id != r:
                            raise VerifyError("resource", f"Fetch of {r} answered with another resource", u.resource_id)
                        held = self.verifier.held.get(r)   # skipped: checked by OPEN and the resource only (§10.5)
                        if held and u.WhichOneof("payload") != "heartbeat" and u.seq <= held.seq:
                            continue
                        for c in resp.chunks if k == 0 and opened.chunks_due else ():   # else ignored (§7.2)
                            opened.add_chunk(c)
                        ev = self._finish(ep, opened, "pull")
                        committed = ev is not None
                        if ev:
                            yield ev
                    if committed is False:                # the answer ends pending: not usable (§8.5, §10.5)
                        raise _Abandon(f"Fetch {r}: the answer ends pending (not exposable)", aside=False)
                except VerifyError as e:
                    if e.check != "dependency" or attempt + 1 == self.options.fetch_retries:
                        raise self._reject(ep, e) from None
                    retry = True
                    break
            if not retry:
                return


def _read(call, i, q, stop):
    """Reader thread of one Subscribe stream: frames, then ("end") or ("error", RpcError)."""
    def put(item):
        while not stop.is_set():
            try:
                q.put(item, timeout=0.5)
                return True
            except queue.Full:
                pass
        return False
    try:
        for resp in call:
            if not put((i, "frame", resp)):
                return
        put((i, "end", None))
    except grpc.RpcError as e:
        put((i, "error", e))
