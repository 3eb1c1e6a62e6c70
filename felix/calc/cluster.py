"""ClusterState: the typed picture of the datastore that felix computes from.

Fed key by key from a Syncer's updates (``apply``); ``desired`` then computes
this host's dataplane from the current picture alone, keeping no history.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from datastore.cache import DatastoreCache
from datastore.models import FelixConfiguration, IPPool, Node, WorkloadEndpoint, pool_containing
from felix.calc.model import (
    IPIP_DEVICE,
    VTEP,
    VXLAN_DEVICE,
    DesiredState,
    IPIPDevice,
    Route,
    VXLANDevice,
)

IPIP_OVERHEAD = 20
VXLAN_OVERHEAD = 50


def encapsulation_overhead(pools: Iterable[IPPool]) -> int:
    """Bytes the enabled pools' tunnels take from the MTU: the most any of them needs."""
    enabled = [p for p in pools if not p.spec.disabled]
    return max(
        [VXLAN_OVERHEAD for p in enabled if p.spec.vxlan_mode != "Never"]
        + [IPIP_OVERHEAD for p in enabled if p.spec.ipip_mode != "Never"]
        + [0]
    )


def vxlan_mac(node: str) -> str:
    """A stable, locally administered unicast MAC for a node without one set."""
    digest = hashlib.sha256(node.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x66, *digest[:5]))


@dataclass
class HostFacts:
    """What felix learns from its own host rather than the datastore."""

    node: str
    mtu: int = 1500
    nic: str | None = None


@dataclass
class ClusterState(DatastoreCache):
    """The datastore as felix reads it: pools, nodes, endpoints, FelixConfigurations, affinities."""

    @property
    def pools(self) -> dict[str, IPPool]:
        return self.of(IPPool)

    @property
    def nodes(self) -> dict[str, Node]:
        return self.of(Node)

    @property
    def endpoints(self) -> dict[str, WorkloadEndpoint]:
        return self.of(WorkloadEndpoint)

    @property
    def felix_configs(self) -> dict[str, FelixConfiguration]:
        return self.of(FelixConfiguration)

    def pool_of(self, cidr: str) -> IPPool | None:
        return pool_containing(self.pools.values(), cidr)


def desired(state: ClusterState, host: HostFacts) -> DesiredState:
    routes: set[Route] = set()
    interfaces: set[str] = set()
    local = [w for w in state.endpoints.values() if w.spec.node == host.node]
    for wep in local:
        interfaces.add(wep.spec.interface_name)
        for net in wep.spec.ip_networks:
            routes.add(Route(net, "local", ifname=wep.spec.interface_name))
    for (node, cidr), status in state.affinities.items():
        if node == host.node and status == "confirmed":
            routes.add(Route(cidr, "blackhole"))
    enabled = [p for p in state.pools.values() if not p.spec.disabled]
    me = state.node_named(host.node)
    vxlan = ipip = None
    vteps: set[VTEP] = set()
    if any(p.spec.vxlan_mode != "Never" for p in enabled):
        vxlan = VXLANDevice(
            VXLAN_DEVICE,
            vni=4096,
            port=4789,
            mtu=host.mtu - VXLAN_OVERHEAD,
            mac=(me.spec.vxlan_tunnel_mac_addr if me else None) or vxlan_mac(host.node),
            address=me.spec.ipv4_vxlan_tunnel_addr if me else None,
            parent=host.nic,
            local_ip=_node_ip(me) if me else None,
        )
        for remote in state.nodes.values():
            vtep = _vtep(remote)
            if remote.name == host.node or vtep is None:
                continue
            vteps.add(vtep)
            for (owner, cidr), status in state.affinities.items():
                pool = state.pool_of(cidr)
                if (
                    owner == remote.name
                    and status == "confirmed"
                    and pool
                    and pool.spec.vxlan_mode != "Never"
                ):
                    routes.add(Route(cidr, "via", ifname=VXLAN_DEVICE, gateway=vtep.tunnel_ip, onlink=True))
    if any(p.spec.ipip_mode != "Never" for p in enabled):
        bgp = me.spec.bgp if me else None
        ipip = IPIPDevice(
            IPIP_DEVICE, mtu=host.mtu - IPIP_OVERHEAD, address=bgp.ipv4_ipip_tunnel_addr if bgp else None
        )
    return DesiredState(
        routes=frozenset(routes),
        workload_interfaces=frozenset(interfaces),
        vxlan=vxlan,
        ipip=ipip,
        vteps=frozenset(vteps),
        nat_pools=tuple(sorted(p.spec.cidr for p in enabled if p.spec.nat_outgoing)),
        all_pools=tuple(sorted(p.spec.cidr for p in state.pools.values())),
        remote_hosts=sum(1 for n in state.nodes.values() if n.name != host.node),
        local_endpoints=len(local),
    )


def _vtep(node: Node) -> VTEP | None:
    bgp = node.spec.bgp
    if node.spec.ipv4_vxlan_tunnel_addr is None or bgp is None or bgp.ipv4_address is None:
        return None
    mac = node.spec.vxlan_tunnel_mac_addr or vxlan_mac(node.name)
    return VTEP(node.name, node.spec.ipv4_vxlan_tunnel_addr, mac, str(_node_ip(node)))


def _node_ip(node: Node) -> str | None:
    bgp = node.spec.bgp
    if bgp is None or bgp.ipv4_address is None:
        return None
    return str(ipaddress.IPv4Interface(bgp.ipv4_address).ip)
