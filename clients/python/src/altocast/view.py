"""A consistent view of verified maps (PROTOCOL.md §8.7).

A View is immutable; the Subscription swaps in a new one after every commit, so a reader
always sees one consistent set. A cost map is exposed only paired with the exact network-map
version its dependency names (found by tag in the verifier's held or recent versions), never
with another one; a cost map without a dependency is not exposed (as the reference view).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import model
from .verifier import Verifier, Version, now_ms


class StaleError(Exception):
    """The data asked for has passed its signed expiry (§8.7): not presented as fresh."""


@dataclass(frozen=True)
class CostPair:
    cost_map_id: str
    cost: Version
    network_map_id: str
    network: Version    # the exact network-map version `cost` was computed against

    def fresh(self, now: int | None = None) -> bool:
        """Fresh while the cost map's signed expiry has not passed (its heartbeats vouch for the
        pair; the network-map version may be a superseded one from `recent`)."""
        return (now_ms() if now is None else now) <= self.cost.expires_at_ms


@dataclass(frozen=True)
class View:
    network_maps: dict = field(default_factory=dict)   # resource id -> Version (held)
    cost_maps: dict = field(default_factory=dict)      # resource id -> CostPair

    def with_commit(self, verifier: Verifier, resource: str) -> "View":
        """The view after `resource` committed in `verifier`."""
        v = verifier.held[resource]
        if v.state.kind == model.KIND_NETWORK_MAP:
            return View({**self.network_maps, resource: v}, self.cost_maps)
        cost_maps = dict(self.cost_maps)
        cost_maps.pop(resource, None)
        dep = v.state.dependency
        if dep is not None:
            nm = verifier.find_version(dep[0], dep[1], v.dependencies[0][1] if v.dependencies else 0)
            if nm is not None:
                cost_maps[resource] = CostPair(resource, v, dep[0], nm)
        return View(self.network_maps, cost_maps)

    def fresh(self, resource: str, now: int | None = None) -> bool:
        now = now_ms() if now is None else now
        if resource in self.cost_maps:
            return self.cost_maps[resource].fresh(now)
        v = self.network_maps.get(resource)
        return v is not None and now <= v.expires_at_ms

    def _pair(self, cost_map: str | None, now, allow_stale) -> CostPair:
        if cost_map is None:
            if len(self.cost_maps) != 1:
                raise KeyError(f"name the cost map: the view has {sorted(self.cost_maps)}")
            cost_map = next(iter(self.cost_maps))
        pair = self.cost_maps[cost_map]
        if not allow_stale and not pair.fresh(now):
            raise StaleError(f"{cost_map} expired at {pair.cost.expires_at_ms}")
        return pair

    def lookup(self, ip: str, network_map: str | None = None, now=None, allow_stale=False) -> str | None:
        """The PID of `ip` in the held network map (the only one, or the one named)."""
        if network_map is None:
            if len(self.network_maps) != 1:
                raise KeyError(f"name the network map: the view has {sorted(self.network_maps)}")
            network_map = next(iter(self.network_maps))
        if not allow_stale and not self.fresh(network_map, now):
            raise StaleError(f"{network_map} has expired")
        return self.network_maps[network_map].state.lookup(ip)

    def cost(self, src_ip: str, dst_ip: str, cost_map=None, now=None, allow_stale=False):
        pair = self._pair(cost_map, now, allow_stale)
        nm = pair.network.state
        s, d = nm.lookup(src_ip), nm.lookup(dst_ip)
        return None if s is None or d is None else pair.cost.state.cost(s, d)

    def rank(self, src_ip: str, peers, cost_map=None, now=None, allow_stale=False):
        """Peers ordered by cost from src's PID: [(peer, cost or None)].

        PIDs come from the network-map version the cost map depends on. Lower cost first;
        equal costs keep the caller's order (stable); peers without a cost (address in no
        PID, src in no PID, or no path) come last, in the caller's order.
        """
        pair = self._pair(cost_map, now, allow_stale)
        nm, cm = pair.network.state, pair.cost.state
        src = nm.lookup(src_ip)
        out = []
        for peer in peers:
            pid = nm.lookup(peer) if src is not None else None
            out.append((peer, None if pid is None else cm.cost(src, pid)))
        return sorted(out, key=lambda pc: (pc[1] is None, pc[1] or 0.0))
