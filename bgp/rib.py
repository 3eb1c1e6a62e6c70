"""What BGP taught us: per-peer routes from ExaBGP's JSON events, with graceful restart.

Pure and synchronous: ``apply`` takes one parsed event and the time, ``best``
gives one next hop per prefix.  When the session of a peer that announced the
graceful-restart capability in its OPEN drops, its routes stay as stale for its
restart time; when it comes back, what it re-announces is fresh again and its
end-of-RIB sweeps the stale rest.  A peer without the capability sends no
end-of-RIB and keeps nothing through a drop: its routes go with its session
(RFC 4724 applies only when both sides announce it).  ExaBGP applies no loop
checks to what it passes on (DESIGN.md §5), so routes carrying our own AS on
an eBGP path, our router id as originator or our cluster id in the cluster list
are dropped here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Identity:
    router_id: str
    local_as: int
    cluster_id: str | None = None


@dataclass(frozen=True, order=True)
class Path:
    """A route as one peer gave it: the next hop and what route reflection needs to pass it on."""

    next_hop: str
    originator_id: str | None = None
    cluster_list: tuple[str, ...] = ()
    communities: tuple[str, ...] = ()  # standard (aa:nn) and large (aa:nn:mm), as the peer gave them


def _communities(attributes: Mapping[str, Any]) -> tuple[str, ...]:
    values = list(attributes.get("community") or []) + list(attributes.get("large-community") or [])
    return tuple(":".join(str(part) for part in value) for value in values if isinstance(value, list))


GRACEFUL_RESTART = "64"  # the capability's code, as ExaBGP keys an OPEN's capabilities


@dataclass
class PeerRoutes:
    routes: dict[str, Path] = field(default_factory=dict)  # prefix -> path
    stale: dict[str, Path] = field(default_factory=dict)  # kept through a restart, until EOR or deadline
    stale_until: float | None = None
    eor: bool = False  # its end-of-RIB arrived since the session last came up
    graceful_restart: bool | None = None  # whether its last OPEN announced the capability (None: no OPEN yet)
    up_since: float | None = None  # when the session last came up (None: down)


@dataclass
class RIB:
    me: Identity
    restart_times: Mapping[str, float] = field(default_factory=dict)  # peer ip -> graceful-restart seconds
    peers: dict[str, PeerRoutes] = field(default_factory=dict)
    local_as_of: Mapping[str, int] = field(default_factory=dict)  # peer ip -> our AS to it (localASNumber)
    allowed_local_as: Mapping[str, int] = field(default_factory=dict)  # numAllowedLocalASNumbers

    def apply(self, event: Mapping[str, Any], now: float) -> None:
        neighbor = event.get("neighbor") or {}
        peer = (neighbor.get("address") or {}).get("peer")
        if not peer:
            return
        table = self.peers.setdefault(peer, PeerRoutes())
        if event.get("type") == "state":
            self._state(peer, table, str(neighbor.get("state")), now)
        elif event.get("type") == "open" and neighbor.get("direction") == "receive":
            capabilities = (neighbor.get("open") or {}).get("capabilities") or {}
            table.graceful_restart = GRACEFUL_RESTART in capabilities
        elif event.get("type") == "update":
            message = neighbor.get("message") or {}
            if "eor" in message:
                table.stale.clear()
                table.stale_until = None
                table.eor = True
            update = message.get("update") or {}
            attributes = update.get("attribute") or {}
            if self._looped(attributes, neighbor, peer):
                return
            originator = attributes.get("originator-id")
            clusters = tuple(str(c) for c in attributes.get("cluster-list") or ())
            communities = _communities(attributes)
            for next_hop, nlris in ((update.get("announce") or {}).get("ipv4 unicast") or {}).items():
                path = Path(next_hop, originator, clusters, communities)
                for nlri in nlris:
                    prefix = nlri["nlri"] if isinstance(nlri, dict) else str(nlri)
                    table.routes[prefix] = path
                    table.stale.pop(prefix, None)
            for nlri in (update.get("withdraw") or {}).get("ipv4 unicast") or []:
                prefix = nlri["nlri"] if isinstance(nlri, dict) else str(nlri)
                table.routes.pop(prefix, None)
                table.stale.pop(prefix, None)

    def _state(self, peer: str, table: PeerRoutes, state: str, now: float) -> None:
        if state == "down":
            table.eor = False
            table.up_since = None
            if table.graceful_restart is False:
                # Nothing survives the session of a peer without graceful restart.
                table.routes.clear()
                table.stale.clear()
                table.stale_until = None
                return
            # Keep what it told us for its restart time; an unclean drop produces no withdraws.
            if table.routes or table.stale_until is None:  # a second "down" does not extend the wait
                table.stale_until = now + self.restart_times.get(peer, 0.0)
            table.stale.update(table.routes)
            table.routes.clear()
        elif state == "up":
            table.eor = False
            table.up_since = now

    def in_sync(self, peer: str, now: float, settle: float) -> bool:
        """Whether ``peer`` has given us its whole table since its session came up: its end-of-RIB,
        or, from a peer without graceful restart (which sends none), ``settle`` seconds of session."""
        table = self.peers.get(peer)
        if table is None or table.up_since is None:
            return False
        return table.eor or (table.graceful_restart is False and now - table.up_since >= settle)

    def forget(self, peer: str) -> None:
        """A session we no longer have: its routes go at once."""
        self.peers.pop(peer, None)

    def _looped(self, attributes: Mapping[str, Any], neighbor: Mapping[str, Any], peer: str) -> bool:
        if attributes.get("originator-id") == self.me.router_id:
            return True
        if self.me.cluster_id and self.me.cluster_id in (attributes.get("cluster-list") or []):
            return True
        local_as = self.local_as_of.get(peer, self.me.local_as)
        peer_as = (neighbor.get("asn") or {}).get("peer")
        ebgp = peer_as is not None and peer_as != local_as
        path = _flat(attributes.get("as-path") or [])
        return ebgp and path.count(local_as) > self.allowed_local_as.get(peer, 0)

    def all_down(self, now: float) -> None:
        """Our ExaBGP died: every session dropped at once, with no events to say so."""
        for peer, table in self.peers.items():
            self._state(peer, table, "down", now)

    def expire(self, now: float) -> bool:
        """Drop stale routes whose graceful-restart time is over; whether any went."""
        dropped = False
        for table in self.peers.values():
            if table.stale_until is not None and now >= table.stale_until:
                dropped = dropped or bool(table.stale)
                table.stale.clear()
                table.stale_until = None
        return dropped

    def has_stale(self) -> bool:
        return any(table.stale for table in self.peers.values())

    def best_paths(self, imports: Callable[[str, str], bool] | None = None) -> dict[str, tuple[str, Path]]:
        """One (peer, path) per prefix: fresh over stale, then shortest cluster list, then by peer.
        ``imports(peer, prefix)``: the peer's import filters; what they reject is kept here (a
        changed filter needs no route refresh) but never chosen."""
        chosen: dict[str, tuple[int, int, str, Path]] = {}
        for peer, table in self.peers.items():
            for rank, source in ((0, table.routes), (1, table.stale)):
                for prefix, path in source.items():
                    if imports is not None and not imports(peer, prefix):
                        continue
                    candidate = (rank, len(path.cluster_list), peer, path)
                    if prefix not in chosen or candidate < chosen[prefix]:
                        chosen[prefix] = candidate
        return {prefix: (peer, path) for prefix, (_, _, peer, path) in chosen.items()}

    def best(self, imports: Callable[[str, str], bool] | None = None) -> dict[str, str]:
        """One next hop per prefix (see ``best_paths``)."""
        return next_hops(self.best_paths(imports))

    def received(self, peer: str) -> int:
        table = self.peers.get(peer)
        return len(table.routes) if table else 0


def next_hops(best: Mapping[str, tuple[str, Path]]) -> dict[str, str]:
    """``RIB.best_paths``'s answer as prefix -> next hop."""
    return {prefix: path.next_hop for prefix, (_, path) in best.items()}


def _flat(path: Any) -> list[Any]:
    """An AS path's numbers. ExaBGP 5 gives its segments by position
    (``{"0": {"element": "as-sequence", "value": [...]}}``), ExaBGP 4 a list (an AS_SET nested)."""
    if isinstance(path, dict):
        segments = [path[k] for k in sorted(path, key=lambda k: int(k) if str(k).isdigit() else 0)]
        return [asn for seg in segments if isinstance(seg, dict) for asn in seg.get("value") or []]
    out: list[Any] = []
    for hop in path if isinstance(path, list) else []:
        out.extend(hop if isinstance(hop, list) else [hop])
    return out
