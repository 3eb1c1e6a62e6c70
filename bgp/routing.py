"""Learned routes as kernel routes: how each prefix is reached (pure).

IPIP pools with ``Always`` go through tunl0 onlink to the next hop;
``CrossSubnet`` through tunl0 only when the next hop is outside this node's
subnet; otherwise, and for routes learned from external peers outside every
pool, straight via the next hop.  VXLAN pools are felix's (from the datastore),
and this node's own prefixes are never routed back to another node.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from datastore.models import Encapsulation, IPPool, enabled_pools, pool_containing
from felix.calc.model import IPIP_DEVICE, Route


class KernelRouter:
    """How this node routes learned prefixes, for one set of pools, subnet (``Node.network``) and
    NIC, remembering each (prefix, next hop)'s route.  A reconcile then costs a dictionary lookup
    per prefix where it cost two address parses and a pool search: at 100 hosts that search was
    most of what a client's agent did on each event."""

    def __init__(self, pools: Iterable[IPPool], subnet: ipaddress.IPv4Network, nic: str) -> None:
        self.pools = enabled_pools(pools)
        self.subnet = subnet
        self.nic = nic
        self._known: dict[tuple[str, str], Route | None] = {}  # None: not ours to route (VXLAN)

    def serves(self, pools: Iterable[IPPool], subnet: ipaddress.IPv4Network, nic: str) -> bool:
        """Whether it routes as one made for these would."""
        return self.pools == enabled_pools(pools) and self.subnet == subnet and self.nic == nic

    def routes(self, best: Mapping[str, str], own: Iterable[str] = ()) -> frozenset[Route]:
        """``best``: prefix -> next hop; ``own``: this node's prefixes, never routed away."""
        mine = set(own)
        known = self._known
        now: dict[tuple[str, str], Route | None] = {}
        for key in best.items():
            if key[0] in mine:
                continue
            now[key] = known[key] if key in known else self._route(*key)
        self._known = now  # what left the table is forgotten with it
        return frozenset(route for route in now.values() if route is not None)

    def _route(self, prefix: str, next_hop: str) -> Route | None:
        pool = pool_containing(self.pools, prefix)
        if pool is not None and pool.encapsulation is Encapsulation.VXLAN:
            return None
        across = ipaddress.IPv4Address(next_hop) not in self.subnet
        if pool is not None and pool.encapsulation is Encapsulation.IPIP and pool.encapsulates(across):
            return Route(prefix, "via", ifname=IPIP_DEVICE, gateway=next_hop, onlink=True)
        return Route(prefix, "via", ifname=self.nic, gateway=next_hop)
