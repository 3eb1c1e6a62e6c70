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

from datastore.models import IPPool, pool_containing
from felix.calc.model import IPIP_DEVICE, Route


def kernel_routes(
    best: Mapping[str, str],
    *,
    pools: Iterable[IPPool],
    node_address: str,
    nic: str,
    own: Iterable[str] = (),
) -> frozenset[Route]:
    """``best``: prefix -> next hop; ``node_address``: this node's address with its prefix."""
    subnet = ipaddress.IPv4Interface(node_address).network
    pool_list = [p for p in pools if not p.spec.disabled]
    mine = set(own)
    out = set()
    for prefix, next_hop in best.items():
        if prefix in mine:
            continue
        pool = pool_containing(pool_list, prefix)
        if pool is not None and pool.spec.vxlan_mode != "Never":
            continue
        ipip = pool is not None and (
            pool.spec.ipip_mode == "Always"
            or (pool.spec.ipip_mode == "CrossSubnet" and ipaddress.IPv4Address(next_hop) not in subnet)
        )
        if ipip:
            out.add(Route(prefix, "via", ifname=IPIP_DEVICE, gateway=next_hop, onlink=True))
        else:
            out.add(Route(prefix, "via", ifname=nic, gateway=next_hop))
    return frozenset(out)
