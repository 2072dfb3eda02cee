"""The ALTO model as carried: names, prefixes, network and cost maps, their tags and diffs.

PROTOCOL.md §2 (model), §3 (canonical hashing), §6.4-§6.7 (decoding and applying payloads).
Every decoding or application failure raises PayloadError (check class "apply" in §8).
States are immutable: applying a diff returns a new state and never touches the base.
"""
from __future__ import annotations

import ipaddress
import math
import re
import struct
import sys
from array import array

import blake3

KIND_NETWORK_MAP, KIND_COST_MAP = 1, 2
NUMERICAL, ORDINAL = 1, 2
MODE_NAMES = {NUMERICAL: "numerical", ORDINAL: "ordinal"}
MAX_PIDS = 4096
MAX_PREFIXES_PER_PID = 65536
ZERO_TAG = bytes(32)
NO_PATH_BYTES = bytes.fromhex("000000000000f87f")  # canonical NaN 0x7ff8000000000000, little-endian
NO_PATH = struct.unpack("<d", NO_PATH_BYTES)[0]

D_NM_ROW = b"altocast/v1/network-map/row\0"
D_NM = b"altocast/v1/network-map\0"
D_CM_PIDS = b"altocast/v1/cost-map/pids\0"
D_CM_ROW = b"altocast/v1/cost-map/row\0"
D_CM = b"altocast/v1/cost-map\0"


class PayloadError(ValueError):
    """A payload that does not decode into, or does not apply to, a valid map."""


def H(*parts: bytes) -> bytes:
    return blake3.blake3(b"".join(parts)).digest()


def le64(n: int) -> bytes:
    return struct.pack("<Q", n)


def str_(s: str) -> bytes:
    b = s.encode()
    return le64(len(b)) + b


# ---- §2.1 names, §2.4 cost types ---------------------------------------------------------

_NAME = re.compile(r"[A-Za-z0-9\-:@_]{1,64}")
_METRIC = re.compile(r"[A-Za-z0-9\-:@_.]{1,32}")


def valid_name(s: str) -> bool:
    return _NAME.fullmatch(s) is not None


def check_name(s: str, what: str = "PID") -> str:
    if not valid_name(s):
        raise PayloadError(f"invalid {what} name {s[:80]!r}")
    return s


def check_cost_type(metric: str, mode: int) -> tuple[str, int]:
    if mode not in MODE_NAMES:
        raise PayloadError(f"invalid cost mode {mode}")
    if _METRIC.fullmatch(metric) is None:
        raise PayloadError(f"invalid cost metric {metric[:80]!r}")
    return (metric, mode)


def _ascending(names, what):
    for a, b in zip(names, names[1:]):
        if a >= b:
            raise PayloadError(f"{what} not strictly ascending at {b!r}")


# ---- §2.2 prefixes -----------------------------------------------------------------------

_V4 = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})")
_HEXGROUP = re.compile(r"[0-9A-Fa-f]{1,4}")


def _v4_addr(text: str) -> bytes | None:
    m = _V4.fullmatch(text)
    if not m or any(int(g) > 255 for g in m.groups()):
        return None
    return bytes(int(g) for g in m.groups())


def _v6_addr(text: str) -> bytes | None:
    if "." in text:  # trailing dotted quad: rewrite it as two hex groups
        head, _, quad = text.rpartition(":")
        q = _v4_addr(quad)
        if q is None or not head:
            return None
        text = f"{head}:{q[0] << 8 | q[1]:x}:{q[2] << 8 | q[3]:x}"
    if text.count("::") > 1:
        return None
    if "::" in text:
        left, right = text.split("::")
        groups_l = left.split(":") if left else []
        groups_r = right.split(":") if right else []
        # h <= 7 and h + t <= 8: "::" may stand for no group at all (1:2:3:4::5:6:7:8)
        if len(groups_l) > 7 or len(groups_l) + len(groups_r) > 8:
            return None
        groups = groups_l + ["0"] * (8 - len(groups_l) - len(groups_r)) + groups_r
    else:
        groups = text.split(":")
        if len(groups) != 8:
            return None
    if not all(_HEXGROUP.fullmatch(g) for g in groups):
        return None
    return b"".join(int(g, 16).to_bytes(2, "big") for g in groups)


def parse_prefix(text: str, family: int) -> tuple[bytes, int]:
    """A CIDR string of the §2.2 grammar -> (address bytes, length). No host bits allowed."""
    addr_text, sep, len_text = text.partition("/")
    if not sep or not re.fullmatch(r"[0-9]{1,2}" if family == 4 else r"[0-9]{1,3}", len_text):
        raise PayloadError(f"invalid IPv{family} prefix {text[:80]!r}")
    addr = _v4_addr(addr_text) if family == 4 else _v6_addr(addr_text)
    length, bits = int(len_text), (32 if family == 4 else 128)
    if addr is None or length > bits:
        raise PayloadError(f"invalid IPv{family} prefix {text[:80]!r}")
    if int.from_bytes(addr, "big") & ((1 << (bits - length)) - 1):
        raise PayloadError(f"prefix {text[:80]!r} has host bits set")
    return (addr, length)


def format_prefix(p: tuple[bytes, int]) -> str:
    return f"{ipaddress.ip_address(p[0])}/{p[1]}"


def _decode_pid_prefixes(e) -> tuple[str, tuple]:
    check_name(e.pid)
    if len(e.ipv4) + len(e.ipv6) > MAX_PREFIXES_PER_PID:
        raise PayloadError(f"PID {e.pid} has more than {MAX_PREFIXES_PER_PID} prefixes")
    v4 = tuple(sorted({parse_prefix(t, 4) for t in e.ipv4}))
    v6 = tuple(sorted({parse_prefix(t, 6) for t in e.ipv6}))
    return e.pid, (v4, v6)


# ---- §2.3, §3.4, §6.4, §6.5 network map --------------------------------------------------

class NetworkMap:
    kind = KIND_NETWORK_MAP
    cost_type = None
    dependency = None

    def __init__(self, pids: dict[str, tuple[tuple, tuple]]):
        """pids: PID -> (canonical IPv4 prefixes, canonical IPv6 prefixes). Use validated()."""
        self.pids = pids
        self._tag = None
        self._index = None

    @classmethod
    def validated(cls, pids: dict) -> "NetworkMap":
        if len(pids) > MAX_PIDS:
            raise PayloadError(f"network map has {len(pids)} PIDs, more than {MAX_PIDS}")
        owner = {}
        for pid, (v4, v6) in pids.items():
            for fam, prefixes in ((4, v4), (6, v6)):
                for p in prefixes:
                    other = owner.setdefault((fam, p), pid)
                    if other != pid:
                        raise PayloadError(f"prefix {format_prefix(p)} is in PIDs {other} and {pid}")
        return cls(pids)

    @classmethod
    def from_proto(cls, msg) -> "NetworkMap":
        pids = {}
        for e in msg.pids:
            pid, prefixes = _decode_pid_prefixes(e)
            if pid in pids:
                raise PayloadError(f"PID {pid} listed twice")
            pids[pid] = prefixes
        return cls.validated(pids)

    @classmethod
    def from_json(cls, body: dict) -> "NetworkMap":
        """An RFC 7285 `network-map` object (or the whole body)."""
        nm = body.get("network-map", body)
        return cls.validated({pid: (tuple(sorted({parse_prefix(t, 4) for t in e.get("ipv4", [])})),
                                    tuple(sorted({parse_prefix(t, 6) for t in e.get("ipv6", [])})))
                              for pid, e in nm.items()})

    def apply_diff(self, d) -> "NetworkMap":
        removed = [check_name(p) for p in d.removed]
        upserts = [_decode_pid_prefixes(e) for e in d.upsert]
        m = dict(self.pids)
        for p in removed:
            if p not in m:
                raise PayloadError(f"removes PID {p}, which the map does not have")
            del m[p]
        for pid, prefixes in upserts:
            m[pid] = prefixes
        return NetworkMap.validated(m)

    def row_preimage(self, pid: str) -> bytes:
        v4, v6 = self.pids[pid]
        return b"".join([D_NM_ROW, str_(pid), le64(len(v4)), *(a + bytes([n]) for a, n in v4),
                         le64(len(v6)), *(a + bytes([n]) for a, n in v6)])

    def preimage(self) -> bytes:
        return b"".join([D_NM, le64(len(self.pids)),
                         *(str_(p) + H(self.row_preimage(p)) for p in sorted(self.pids))])

    def tag(self) -> bytes:
        if self._tag is None:
            self._tag = H(self.preimage())
        return self._tag

    def lookup(self, ip: str) -> str | None:
        """Longest-prefix match (RFC 7285 §11.2.1.6): the PID of an address, or None."""
        if self._index is None:
            index = {4: {}, 6: {}}
            for pid, (v4, v6) in self.pids.items():
                for fam, prefixes in ((4, v4), (6, v6)):
                    for a, n in prefixes:
                        index[fam].setdefault(n, {})[int.from_bytes(a, "big")] = pid
            self._index = {f: sorted(d.items(), reverse=True) for f, d in index.items()}
        addr = ipaddress.ip_address(ip)
        bits = addr.max_prefixlen
        for length, nets in self._index[addr.version]:
            pid = nets.get(int(addr) >> (bits - length) << (bits - length))
            if pid is not None:
                return pid
        return None


# ---- §2.5, §2.6, §3.5, §6.6, §6.7 cost map -----------------------------------------------

def _cost(v: float, cost_type) -> float:
    if not math.isfinite(v):
        raise PayloadError(f"cost {v} is not finite")
    if cost_type[1] == ORDINAL and (v < 0 or v != math.floor(v)):
        raise PayloadError(f"ordinal cost {v} is not a non-negative integer")
    return 0.0 if v == 0 else v  # -0.0 -> +0.0


def _indices(idx, n, what):
    for k, j in enumerate(idx):
        if j >= n or (k and j <= idx[k - 1]):
            raise PayloadError(f"{what} index {j} out of range or not strictly ascending")


def _dependency(nm_id: str, nm_tag: bytes):
    if not nm_id:
        return None
    check_name(nm_id, "resource id")
    if len(nm_tag) != 32:
        raise PayloadError(f"network_map_tag of {len(nm_tag)} bytes")
    return (nm_id, bytes(nm_tag))


def _empty_row(n):
    return array("d", [NO_PATH]) * n


class CostMap:
    kind = KIND_COST_MAP

    def __init__(self, cost_type, dependency, pids: tuple[str, ...], rows: list[array]):
        self.cost_type = cost_type      # (metric, mode)
        self.dependency = dependency    # (network map id, 32-byte tag) or None
        self.pids = pids                # ascending universe
        self.rows = rows                # dense rows; NO_PATH (NaN) for "no path"
        self._tag = None
        self._index = None

    @classmethod
    def from_proto(cls, msg, cost_type) -> "CostMap":
        if cost_type is None:
            raise PayloadError("cost-map snapshot without a cost type")
        pids = tuple(check_name(p) for p in msg.pids)
        dep = _dependency(msg.network_map_id, msg.network_map_tag)
        _ascending(pids, "pids")
        n = len(pids)
        if n > MAX_PIDS:
            raise PayloadError(f"cost map has {n} PIDs, more than {MAX_PIDS}")
        rows = [_empty_row(n) for _ in range(n)]
        seen = set()
        for r in msg.rows:
            if r.src >= n or r.src in seen:
                raise PayloadError(f"row src {r.src} out of range or repeated")
            seen.add(r.src)
            if len(r.dst) != len(r.cost):
                raise PayloadError(f"row {r.src}: {len(r.dst)} dst but {len(r.cost)} costs")
            _indices(r.dst, n, "dst")
            row = rows[r.src]
            for j, v in zip(r.dst, r.cost):
                row[j] = _cost(v, cost_type)
        return cls(cost_type, dep, pids, rows)

    @classmethod
    def from_json(cls, body: dict, dependency=None) -> "CostMap":
        """An RFC 7285 cost-map body; `dependency` overrides meta.dependent-vtags."""
        meta = body.get("meta", {})
        ct = meta.get("cost-type", {})
        cost_type = (ct.get("cost-metric"), {"numerical": NUMERICAL, "ordinal": ORDINAL}[ct.get("cost-mode")])
        if dependency is None and meta.get("dependent-vtags"):
            v = meta["dependent-vtags"][0]
            dependency = (v["resource-id"], bytes.fromhex(v["tag"]))
        cm = body["cost-map"]
        pids = tuple(sorted(set(cm) | {d for row in cm.values() for d in row}))
        pos = {p: i for i, p in enumerate(pids)}
        rows = [_empty_row(len(pids)) for _ in pids]
        for s, row in cm.items():
            for d, v in row.items():
                rows[pos[s]][pos[d]] = _cost(float(v), cost_type)
        return cls(cost_type, dependency, pids, rows)

    def apply_diff(self, d) -> "CostMap":
        added = [check_name(p) for p in d.added_pids]
        removed = [check_name(p) for p in d.removed_pids]
        _ascending(added, "added_pids")
        _ascending(removed, "removed_pids")
        dep = _dependency(d.network_map_id, d.network_map_tag) or self.dependency
        pids, rows = self.pids, list(self.rows)
        if added or removed:
            old = {p: i for i, p in enumerate(pids)}
            for p in removed:
                if p not in old:
                    raise PayloadError(f"removes PID {p}, which the cost map does not have")
            for p in added:
                if p in old:
                    raise PayloadError(f"adds PID {p}, which the cost map already has")
            new = tuple(sorted((set(pids) - set(removed)) | set(added)))
            if len(new) > MAX_PIDS:
                raise PayloadError(f"cost map would have {len(new)} PIDs")
            m = [old.get(p) for p in new]
            rows = [_empty_row(len(new)) if oi is None else
                    array("d", (NO_PATH if k is None else self.rows[oi][k] for k in m)) for oi in m]
            pids = new
        n, last, copied = len(pids), -1, set()
        for r in d.rows:
            if r.src >= n or r.src <= last:
                raise PayloadError(f"row src {r.src} out of range or not strictly ascending")
            last = r.src
            if len(r.set_dst) != len(r.set_cost):
                raise PayloadError(f"row {r.src}: {len(r.set_dst)} set_dst but {len(r.set_cost)} costs")
            _indices(r.set_dst, n, "set_dst")
            _indices(r.removed_dst, n, "removed_dst")
            if r.src not in copied:
                rows[r.src] = array("d", rows[r.src])
                copied.add(r.src)
            row = rows[r.src]
            for j in r.removed_dst:
                if math.isnan(row[j]):
                    raise PayloadError(f"row {r.src} removes entry {j}, which has no cost")
                row[j] = NO_PATH
            gone = set(r.removed_dst)
            for j, v in zip(r.set_dst, r.set_cost):
                if j in gone:
                    raise PayloadError(f"row {r.src} both sets and removes index {j}")
                row[j] = _cost(v, self.cost_type)
        return CostMap(self.cost_type, dep, pids, rows)

    def names_preimage(self) -> bytes:
        return b"".join([D_CM_PIDS, le64(len(self.pids)), *(str_(p) for p in self.pids)])

    def row_preimage(self, i: int) -> bytes:
        row = self.rows[i]
        if sys.byteorder == "big":
            row = array("d", row)
            row.byteswap()
        return D_CM_ROW + row.tobytes()

    def preimage(self) -> bytes:
        metric, mode = self.cost_type
        dep = (le64(1) + str_(self.dependency[0]) + self.dependency[1]) if self.dependency else le64(0)
        return b"".join([D_CM, str_(metric), str_(MODE_NAMES[mode]), dep, H(self.names_preimage()),
                         le64(len(self.pids)), *(H(self.row_preimage(i)) for i in range(len(self.rows)))])

    def tag(self) -> bytes:
        if self._tag is None:
            self._tag = H(self.preimage())
        return self._tag

    def cost(self, src: str, dst: str) -> float | None:
        if self._index is None:
            self._index = {p: i for i, p in enumerate(self.pids)}
        i, j = self._index.get(src), self._index.get(dst)
        if i is None or j is None or math.isnan(self.rows[i][j]):
            return None
        return self.rows[i][j]

    def to_json(self) -> dict:
        """RFC 7285 `cost-map`: source -> destination -> cost, pairs without a path omitted."""
        out = {}
        for i, s in enumerate(self.pids):
            row = {d: self.rows[i][j] for j, d in enumerate(self.pids) if not math.isnan(self.rows[i][j])}
            if row:
                out[s] = row
        return out


def decode_snapshot(snap, cost_type):
    """A `Snapshot` message -> NetworkMap or CostMap (§6.4, §6.6)."""
    which = snap.WhichOneof("map")
    if which == "network_map":
        return NetworkMap.from_proto(snap.network_map)
    if which == "cost_map":
        return CostMap.from_proto(snap.cost_map, cost_type)
    raise PayloadError("snapshot without a map")


def apply_diff(state, diff):
    """A `Diff` message applied to a state of the same kind (§6.5, §6.7)."""
    which = diff.WhichOneof("map")
    if which == "network_map" and isinstance(state, NetworkMap):
        return state.apply_diff(diff.network_map)
    if which == "cost_map" and isinstance(state, CostMap):
        return state.apply_diff(diff.cost_map)
    raise PayloadError(f"diff of kind {which} does not apply to a {type(state).__name__}")
