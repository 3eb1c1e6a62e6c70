"""ClusterState: the typed picture of the datastore that felix computes from.

Fed key by key from a Syncer's updates (``apply``); ``desired`` then computes
this host's dataplane from the current picture alone, keeping no history.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from datastore.cache import DatastoreCache
from datastore.models import (
    Encapsulation,
    FelixConfiguration,
    GlobalNetworkPolicy,
    HostEndpoint,
    IPPool,
    NetworkPolicy,
    Node,
    Profile,
    WorkloadEndpoint,
    enabled_pools,
    encapsulation_overhead,
    encapsulations,
)
from datastore.models.node import derived_vtep_mac
from felix.calc.calculator import PolicyCalculator
from felix.calc.chains import Ruleset
from felix.calc.dispatch import PolicyOptions
from felix.calc.host import HostFacts
from felix.calc.model import (
    IPIP_DEVICE,
    VTEP,
    VXLAN_DEVICE,
    DesiredState,
    IPIPDevice,
    Route,
    VXLANDevice,
)
from felix.calc.policy import Policy

VXLAN_PORT = 4789


@dataclass
class ClusterState(DatastoreCache):
    """The datastore as felix reads it: pools, nodes, endpoints, FelixConfigurations, affinities."""

    @property
    def pools(self) -> Mapping[str, IPPool]:
        return self.of(IPPool)

    @property
    def nodes(self) -> Mapping[str, Node]:
        return self.of(Node)

    @property
    def endpoints(self) -> Mapping[str, WorkloadEndpoint]:
        return self.of(WorkloadEndpoint)

    @property
    def felix_configs(self) -> Mapping[str, FelixConfiguration]:
        return self.of(FelixConfiguration)

    @property
    def profiles(self) -> dict[str, Profile]:
        """By name (a Profile is cluster-wide)."""
        return {p.name: p for p in self.of(Profile).values()}


def desired_policy(
    state: ClusterState,
    calculator: PolicyCalculator,
    options: PolicyOptions,
    host_addresses: Mapping[str, str] | None = None,
) -> Ruleset:
    """The calculator's host's policy as chains and sets; ``options`` carries felix's settings, the
    cluster's tunnels are filled in here; ``host_addresses`` place host endpoints that name only
    their ``expectedIPs``."""
    tunnels = encapsulations(enabled_pools(state.pools.values()))
    options = replace(
        options,
        cluster_hosts=frozenset(n.ip for n in state.nodes.values() if n.ip is not None),
        ipip=Encapsulation.IPIP in tunnels,
        vxlan_port=VXLAN_PORT if Encapsulation.VXLAN in tunnels else None,
    )
    policies: list[Policy] = [*state.of(NetworkPolicy).values(), *state.of(GlobalNetworkPolicy).values()]
    return calculator.update(
        list(state.endpoints.values()),
        list(state.of(HostEndpoint).values()),
        policies,
        state.profiles,
        options,
        host_addresses=host_addresses,
    )


def needs_host_addresses(state: ClusterState, node: str) -> bool:
    """Whether a host endpoint of ``node`` names only its addresses (felix then looks them up)."""
    return any(h.spec.node == node and h.spec.interface_name is None for h in state.of(HostEndpoint).values())


def desired(state: ClusterState, host: HostFacts) -> DesiredState:
    routes: set[Route] = set()
    interfaces: set[str] = set()
    local = [w for w in state.endpoints.values() if w.spec.node == host.node]
    for wep in local:
        interfaces.add(wep.spec.interface_name)
        for net in wep.spec.ip_networks:
            routes.add(Route(net, "local", ifname=wep.spec.interface_name))
    for _, cidr in state.confirmed_blocks(host.node):
        routes.add(Route(cidr, "blackhole"))
    enabled = enabled_pools(state.pools.values())
    tunnels = encapsulations(enabled)
    me = state.node_named(host.node)
    vxlan = ipip = None
    vteps: dict[str, VTEP] = {}
    if Encapsulation.VXLAN in tunnels:
        vxlan = VXLANDevice(
            VXLAN_DEVICE,
            vni=4096,
            port=VXLAN_PORT,
            mtu=host.mtu - Encapsulation.VXLAN.overhead,
            mac=me.vtep_mac if me else derived_vtep_mac(host.node),
            address=me.vxlan_tunnel_address if me else None,
            parent=host.nic,
            local_ip=me.ip if me else None,
        )
        vteps = {n.name: v for n in state.nodes.values() if n.name != host.node and (v := _vtep(n))}
        for owner, cidr in state.confirmed_blocks():
            pool = state.pool_of(cidr)
            vtep = vteps.get(owner)
            if vtep is not None and pool is not None and pool.encapsulation is Encapsulation.VXLAN:
                routes.add(Route(cidr, "via", ifname=VXLAN_DEVICE, gateway=vtep.tunnel_ip, onlink=True))
    if Encapsulation.IPIP in tunnels:
        ipip = IPIPDevice(
            IPIP_DEVICE,
            mtu=host.mtu - Encapsulation.IPIP.overhead,
            address=me.ipip_tunnel_address if me else None,
        )
    return DesiredState(
        routes=frozenset(routes),
        workload_interfaces=frozenset(interfaces),
        vxlan=vxlan,
        ipip=ipip,
        vteps=frozenset(vteps.values()),
        nat_pools=tuple(sorted(p.spec.cidr for p in enabled if p.spec.nat_outgoing)),
        all_pools=tuple(sorted(p.spec.cidr for p in state.pools.values())),
        remote_hosts=sum(1 for n in state.nodes.values() if n.name != host.node),
        local_endpoints=len(local),
        workload_mtu=host.mtu - encapsulation_overhead(enabled),
    )


def _vtep(node: Node) -> VTEP | None:
    """A remote node's VXLAN endpoint, once it has a tunnel address and a node address."""
    if node.vxlan_tunnel_address is None or node.ip is None:
        return None
    return VTEP(node.name, node.vxlan_tunnel_address, node.vtep_mac, node.ip)
