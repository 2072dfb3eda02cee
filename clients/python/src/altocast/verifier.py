"""The verifier of PROTOCOL.md §8: held, pending and recent state per resource.

    v = Verifier(Trust(root="root-pub.pem"), resources={"nm", "cm"})   # or {key id: raw key}
    outcome = v.process(signed_update, chunks, now_ms)     # raises VerifyError(check, reason)

or, on a stream where chunks arrive one by one (§7.3): `o = v.open(signed)`, then
`o.add_chunk(chunk)` per chunk frame, then `v.finish(o, now_ms)`. A failed check never changes
any state: the would-be state is computed aside and installed only at the end (COMMIT).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import blake3
from google.protobuf.message import DecodeError

from . import model
from ._pb import pb
from .crypto import UPDATE_CONTEXT, SignatureError, verify_signers
from .model import PayloadError
from .trust import MAX_SKEW_MS, Trust, VerifyError, now_ms, open_directory  # noqa: F401 (re-exported)

MAX_BODY = 16 * 1024 * 1024
MAX_SNAPSHOT = 512 * 1024 * 1024
MAX_CHUNKS = 4096
RECENT = 8


@dataclass(frozen=True)
class Version:
    seq: int
    tag: bytes
    state: object                 # model.NetworkMap | model.CostMap
    issued_at_ms: int
    expires_at_ms: int
    dependencies: tuple = ()      # ((resource_id, seq, tag), ...)


@dataclass(frozen=True)
class Outcome:
    resource: str
    committed: bool
    waiting: str | None           # None, "expired" or "dependency"
    version: Version
    payload: str                  # snapshot, diff, heartbeat, chunked


@dataclass
class Opened:
    """An update past O1-O5, collecting its chunks (§7.3)."""
    signed: object
    update: object
    key_id: str
    chunks: list = field(default_factory=list)
    got: int = 0

    @property
    def chunks_due(self) -> int:
        if self.update.WhichOneof("payload") != "chunked":
            return 0
        return len(self.update.chunked.chunk_hashes) - len(self.chunks)

    def add_chunk(self, chunk) -> None:
        c, i = self.update.chunked, len(self.chunks)
        r = self.update.resource_id
        if i >= len(c.chunk_hashes):
            raise VerifyError("signature", f"chunk {i} is one too many", r, "C3")
        if chunk.index != i:
            raise VerifyError("signature", f"chunk index {chunk.index}, expected {i}", r, "C3")
        if self.got + len(chunk.data) > c.total_len:
            raise VerifyError("signature", "chunks exceed the signed total_len", r, "C3")
        if blake3.blake3(chunk.data).digest() != c.chunk_hashes[i]:
            raise VerifyError("signature", f"chunk {i} does not match its signed hash", r, "C3")
        self.chunks.append(bytes(chunk.data))
        self.got += len(chunk.data)

    def assembled(self) -> bytes:
        c = self.update.chunked
        if len(self.chunks) != len(c.chunk_hashes) or self.got != c.total_len:
            raise VerifyError("signature", "chunked snapshot incomplete", self.update.resource_id, "C3")
        return b"".join(self.chunks)


def wire_tag(b: bytes, resource=None, step="C2") -> bytes:
    """§3.6: 32 bytes, or empty = the all-zero tag; any other length is malformed."""
    if len(b) == 32:
        return bytes(b)
    if len(b) == 0:
        return model.ZERO_TAG
    raise VerifyError("apply", f"malformed: tag of {len(b)} bytes", resource, step)


class Verifier:
    def __init__(self, trust, resources=None, *, max_skew_ms: int = MAX_SKEW_MS):
        """trust: a Trust, or {key id: raw Ed25519 key} (fixed update keys). resources: ids to accept, or None for any."""
        self.trust = trust if isinstance(trust, Trust) else Trust(keys=trust, max_skew_ms=max_skew_ms)
        self.resources = None if resources is None else set(resources)
        self.max_skew_ms = max_skew_ms
        self.held: dict[str, Version] = {}
        self.pending: dict[str, Version] = {}
        self.recent: dict[str, list[Version]] = {}

    def accept_directory(self, signed, now: int | None = None):
        """§9.3 (see Trust.accept_directory): the held directory after this one."""
        return self.trust.accept_directory(signed, now)

    def follow(self, resources) -> None:
        if self.resources is not None:
            self.resources |= set(resources)

    def positions(self) -> dict[str, tuple[int, bytes]]:
        """Resume positions: from held only, never from pending (§8.5)."""
        return {r: (v.seq, v.tag) for r, v in self.held.items()}

    # -- O1-O5 ----------------------------------------------------------------------------
    def open(self, signed) -> Opened:
        if len(signed.body) > MAX_BODY:
            raise VerifyError("size", f"body of {len(signed.body)} bytes", step="O1")
        try:
            signers = verify_signers(UPDATE_CONTEXT, signed.body, list(signed.signatures), self.trust.raw)
        except SignatureError as e:
            raise VerifyError("signature", str(e), step="O2", reread=e.untrusted_only) from None
        try:
            u = pb.Update.FromString(signed.body)
        except DecodeError as e:
            raise VerifyError("apply", f"malformed body: {e}", step="O3") from None
        self.trust.check_update(u, signers)                  # windows and origin id (§9.3)
        r = u.resource_id
        if self.resources is not None and r not in self.resources:
            raise VerifyError("resource", "not requested", r, "O4")
        if not model.valid_name(r):
            raise VerifyError("resource", "invalid resource id", r[:80], "O4")
        if u.WhichOneof("payload") == "chunked":
            if len(u.chunked.chunk_hashes) > MAX_CHUNKS:
                raise VerifyError("size", f"{len(u.chunked.chunk_hashes)} chunks", r, "O5")
            if u.chunked.total_len > MAX_SNAPSHOT:
                raise VerifyError("size", f"snapshot of {u.chunked.total_len} bytes", r, "O5")
        return Opened(signed, u, signers[-1])

    def process(self, signed, chunks=(), now: int | None = None) -> Outcome:
        """One update with its chunks; chunks given with an unchunked update are ignored (§7.2)."""
        o = self.open(signed)
        for c in chunks if o.update.WhichOneof("payload") == "chunked" else ():
            o.add_chunk(c)
        return self.finish(o, now)

    # -- C1-C11, then COMMIT -----------------------------------------------------------------
    def finish(self, o: Opened, now: int | None = None) -> Outcome:
        now = now_ms() if now is None else now
        nxt, waiting, on_pending = self._check(o, now)
        r = o.update.resource_id
        self._commit(r, nxt, waiting, on_pending)
        return Outcome(r, waiting is None, waiting, nxt, o.update.WhichOneof("payload"))

    def _check(self, o: Opened, now: int):
        u, r = o.update, o.update.resource_id

        def fail(check, reason, step):
            raise VerifyError(check, reason, r, step)

        payload = u.WhichOneof("payload")
        hb = payload == "heartbeat"
        P = self.pending.get(r)                                                       # C1
        if P and ((hb and u.seq == P.seq) or (not hb and u.base_seq == P.seq and u.base_tag == P.tag)):
            B, on_pending = P, True
        else:
            B, on_pending = self.held.get(r), False
        b_seq = B.seq if B else 0
        if payload is None:                                                           # C2
            fail("apply", "malformed: no payload", "C2")
        tag, base_tag = wire_tag(u.tag, r), wire_tag(u.base_tag, r)
        data = o.assembled() if payload == "chunked" else None                        # C3
        if hb:                                                                        # C4
            if B and u.seq == B.seq and u.issued_at_ms < B.issued_at_ms:
                fail("sequence", "rollback: heartbeat older than the held one", "C4")
            if u.seq < b_seq:
                fail("sequence", f"rollback: heartbeat seq {u.seq} < {b_seq}", "C4")
            if u.seq > b_seq:
                fail("sequence", f"gap: heartbeat seq {u.seq} > {b_seq}", "C4")
        elif u.seq <= b_seq:
            fail("sequence", f"rollback: seq {u.seq} <= {b_seq}", "C4")
        ct = None
        if u.HasField("cost_type"):                                                   # C5
            try:
                ct = model.check_cost_type(u.cost_type.metric, u.cost_type.mode)
            except PayloadError as e:
                fail("apply", str(e), "C5")
        try:                                                                          # C6
            if hb:
                if not B:
                    fail("sequence", "gap: heartbeat with nothing held", "C6")
                if tag != B.tag:
                    fail("apply", "tag mismatch: heartbeat of another version", "C6")
                S = B.state
            elif payload == "diff":
                if not B:
                    fail("base", "diff with nothing held", "C6")
                if u.base_seq != B.seq:
                    fail("base", f"base_seq {u.base_seq} != {B.seq}", "C6")
                if base_tag != B.tag:
                    fail("base", "base_tag differs from the held tag", "C6")
                S = model.apply_diff(B.state, u.diff)
            else:
                if payload == "chunked":
                    try:
                        snap = pb.Snapshot.FromString(data)
                    except DecodeError as e:
                        fail("apply", f"malformed chunked snapshot: {e}", "C6")
                else:
                    snap = u.snapshot
                S = model.decode_snapshot(snap, ct)
        except PayloadError as e:
            fail("apply", str(e), "C6")
        if u.kind not in (model.KIND_NETWORK_MAP, model.KIND_COST_MAP):               # C7
            fail("apply", f"malformed: kind {u.kind}", "C7")
        if S.kind != u.kind:
            fail("apply", f"kind {u.kind} but the state is of kind {S.kind}", "C7")
        if not hb and S.cost_type != ct:
            fail("apply", f"cost type {ct} but the state has {S.cost_type}", "C7")
        if not hb and S.tag() != tag:                                                 # C8
            fail("apply", "tag mismatch: signed tag differs from the computed one", "C8")
        expired = u.expires_at_ms + self.max_skew_ms < now                            # C9
        if u.issued_at_ms > now + self.max_skew_ms:
            fail("expiry", "issued in the future beyond the clock skew", "C9")
        deps = []                                                                     # C10
        for d in u.dependencies:
            if not model.valid_name(d.resource_id):
                fail("apply", "malformed: invalid dependency resource id", "C10")
            deps.append((d.resource_id, d.seq, wire_tag(d.tag, r, "C10")))
        deps = tuple(deps)
        wait_dep = self._check_dependencies(r, S, deps, B if hb else None)
        waiting = "expired" if expired else ("dependency" if wait_dep else None)      # C11
        nxt = Version(u.seq, tag, S, u.issued_at_ms, u.expires_at_ms, deps)
        return nxt, waiting, on_pending

    def _check_dependencies(self, r, S, deps, heartbeat_of) -> bool:
        """§8.6. Returns True to wait (pending), False if resolved; raises if rejected."""
        def fail(reason):
            raise VerifyError("dependency", reason, r, "C10")

        sd = S.dependency if S.kind == model.KIND_COST_MAP else None
        if sd is None and not deps:
            return False
        if not (sd and len(deps) == 1 and deps[0][0] == sd[0] and deps[0][2] == sd[1]):
            fail("dependencies do not match the state's network map")
        d = deps[0]
        d_id, d_seq, d_tag = d
        if heartbeat_of is not None and d not in heartbeat_of.dependencies:
            fail("a heartbeat cannot re-bind its dependency")
        if self.find_version(d_id, d_tag, d_seq):       # resolves: held or recent (seq 0 = any)
            return False
        h, p = self.held.get(d_id), self.pending.get(d_id)
        N = p if p and (not h or p.seq >= h.seq) else h
        if N and d_seq != 0 and d_seq < N.seq:
            return True
        if N and d_seq == N.seq and d_tag == N.tag:
            return True
        fail(f"network map {d_id} seq {d_seq} is not known here")

    def _commit(self, r, nxt: Version, waiting, on_pending) -> None:
        if waiting:
            old = self.pending.get(r)
            self.pending[r] = nxt
            if old and old.seq != nxt.seq:
                self._remember(r, old)
            return
        P = self.pending.pop(r, None)
        old = self.held.get(r)
        self.held[r] = nxt
        if old and old.seq != nxt.seq:
            self._remember(r, old)
        if P and on_pending and P.seq != nxt.seq:
            self._remember(r, P)

    def _remember(self, r, v: Version) -> None:
        rec = self.recent.setdefault(r, [])
        if any(e.seq == v.seq and e.tag == v.tag for e in rec):
            return
        rec.append(v)
        del rec[:-RECENT]

    def find_version(self, resource: str, tag: bytes, seq: int = 0) -> Version | None:
        """The held or recent version of `resource` with `tag` (and seq, unless 0)."""
        for v in [self.held.get(resource), *reversed(self.recent.get(resource, []))]:
            if v and v.tag == tag and (seq == 0 or v.seq == seq):
                return v
        return None
