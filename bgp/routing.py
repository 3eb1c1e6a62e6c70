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


def kernel_routes(
    best: Mapping[str, str],
    *,
    pools: Iterable[IPPool],
    subnet: ipaddress.IPv4Network,
    nic: str,
    own: Iterable[str] = (),
) -> frozenset[Route]:
    """``best``: prefix -> next hop; ``subnet``: this node's (``Node.network``)."""
    pool_list = enabled_pools(pools)
    mine = set(own)
    out = set()
    for prefix, next_hop in best.items():
        if prefix in mine:
            continue
        pool = pool_containing(pool_list, prefix)
        if pool is not None and pool.encapsulation is Encapsulation.VXLAN:
            continue
        across = ipaddress.IPv4Address(next_hop) not in subnet
        if pool is not None and pool.encapsulation is Encapsulation.IPIP and pool.encapsulates(across):
            out.add(Route(prefix, "via", ifname=IPIP_DEVICE, gateway=next_hop, onlink=True))
        else:
            out.add(Route(prefix, "via", ifname=nic, gateway=next_hop))
    return frozenset(out)
