"""Desired dataplane state as frozen values; the dataplane layer makes the kernel match."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

RouteKind = Literal["local", "blackhole", "via"]

# Route protocol numbers that make a route recognisably felid's (DESIGN.md §4).
FELIX_PROTO = 80
BGP_PROTO = 186

DEFAULT_MTU = 1500  # Ethernet's, when nothing on the host says otherwise
WORKLOAD_GATEWAY = "169.254.1.1"
VXLAN_DEVICE = "vxlan.calico"
IPIP_DEVICE = "tunl0"


@dataclass(frozen=True, order=True, slots=True)
class Route:
    """``dst`` to a local workload interface, dropped (``blackhole``), or ``via`` a gateway."""

    dst: str
    kind: RouteKind
    ifname: str | None = None
    gateway: str | None = None
    onlink: bool = False


@dataclass(frozen=True)
class VXLANDevice:
    name: str
    vni: int
    port: int
    mtu: int
    mac: str
    address: str | None  # this node's VXLAN tunnel address (/32)
    parent: str | None  # the host NIC it is bound to
    local_ip: str | None  # this node's address: the outer source


@dataclass(frozen=True)
class IPIPDevice:
    name: str
    mtu: int
    address: str | None


@dataclass(frozen=True, order=True)
class VTEP:
    """A remote node's VXLAN endpoint: ARP ``tunnel_ip -> mac`` and FDB ``mac -> node_ip``."""

    node: str
    tunnel_ip: str
    mac: str
    node_ip: str


@dataclass(frozen=True)
class DesiredState:
    routes: frozenset[Route] = frozenset()
    workload_interfaces: frozenset[str] = frozenset()
    vxlan: VXLANDevice | None = None
    ipip: IPIPDevice | None = None
    vteps: frozenset[VTEP] = frozenset()
    nat_pools: tuple[str, ...] = ()  # CIDRs whose traffic to outside all pools is masqueraded
    all_pools: tuple[str, ...] = ()
    remote_hosts: int = 0
    local_endpoints: int = 0
    # The pods' MTU: the host's, less the largest tunnel overhead in use.
    workload_mtu: int = DEFAULT_MTU
    notes: tuple[str, ...] = field(default=())
