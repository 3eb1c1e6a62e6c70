"""Node: one host of the cluster, as BGP and the tunnels see it, and the facts derived from it."""

from __future__ import annotations

import hashlib
import ipaddress
from functools import cached_property
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field

from datastore.errors import quoted
from datastore.models.base import MAC, ASNumber, IPv4, IPv4Interface, Model, Resource

# The label BGPPeers select route reflectors by, as in Calico's examples.
REFLECTOR_LABEL = "route-reflector"


def derived_vtep_mac(node: str) -> str:
    """A stable, locally administered unicast MAC for a node whose Node sets none."""
    digest = hashlib.sha256(node.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x66, *digest[:5]))


def mark_reflector(document: dict[str, Any], cluster_id: str) -> None:
    """Make a Node document (by alias) a route reflector: its cluster ID and its label."""
    document.setdefault("spec", {}).setdefault("bgp", {})["routeReflectorClusterID"] = cluster_id
    document.setdefault("metadata", {}).setdefault("labels", {})[REFLECTOR_LABEL] = "true"


def _no_ipv6(value: str | None) -> str | None:
    if value is not None:
        raise ValueError(f"{quoted(value)}: IPv6 is not supported yet")
    return value


NoIPv6 = Annotated[str | None, AfterValidator(_no_ipv6)]  # Calico's IPv6 fields: refused, not ignored


class NodeBGPSpec(Model):
    ipv4_address: IPv4Interface | None = Field(default=None, alias="ipv4Address")
    ipv6_address: NoIPv6 = Field(default=None, alias="ipv6Address")
    as_number: ASNumber | None = None
    ipv4_ipip_tunnel_addr: IPv4 | None = Field(default=None, alias="ipv4IPIPTunnelAddr")
    route_reflector_cluster_id: IPv4 | None = Field(default=None, alias="routeReflectorClusterID")


class OrchRef(Model):
    """Which orchestrator knows this node, and by what name (Calico's ``orchRefs``)."""

    orchestrator: str
    node_name: str | None = None


def _node_address(value: str) -> str:
    try:
        address = ipaddress.ip_interface(value)
    except ValueError:
        raise ValueError(f"{quoted(value)} is not an IP address") from None
    if address.version != 4:
        raise ValueError(f"{quoted(value)}: IPv6 is not supported yet")
    return value


class NodeAddress(Model):
    """One of the node's addresses as Calico lists them (``spec.addresses``)."""

    address: Annotated[str, AfterValidator(_node_address)]
    type: Literal["CalicoNodeIP", "InternalIP", "ExternalIP"] | None = None


class NodeSpec(Model):
    bgp: NodeBGPSpec | None = None
    ipv4_vxlan_tunnel_addr: IPv4 | None = Field(default=None, alias="ipv4VXLANTunnelAddr")
    vxlan_tunnel_mac_addr: MAC | None = Field(default=None, alias="vxlanTunnelMACAddr")
    ipv6_vxlan_tunnel_addr: NoIPv6 = Field(default=None, alias="ipv6VXLANTunnelAddr")
    vxlan_tunnel_mac_addr_v6: NoIPv6 = Field(default=None, alias="vxlanTunnelMACAddrV6")
    orch_refs: list[OrchRef] = Field(default_factory=list)
    addresses: list[NodeAddress] = Field(default_factory=list)


class Node(Resource):
    KIND: ClassVar[str] = "Node"
    PLURAL: ClassVar[str] = "nodes"

    kind: Literal["Node"] = "Node"
    spec: NodeSpec = Field(default_factory=NodeSpec)

    # Computed once per Node (a Node never changes; a new version is a new object): every agent asks
    # these of every Node on every pass, and parsing the address each time made the pass grow
    # with the cluster (bench/churn.py).
    @cached_property
    def address(self) -> ipaddress.IPv4Interface | None:
        """The node's IPv4 address with its subnet prefix (``spec.bgp.ipv4Address``)."""
        bgp = self.spec.bgp
        return None if bgp is None or bgp.ipv4_address is None else ipaddress.IPv4Interface(bgp.ipv4_address)

    @cached_property
    def ip(self) -> str | None:
        """The node's IPv4 address alone: its BGP router ID, next hop and VXLAN outer source."""
        address = self.address
        return None if address is None else str(address.ip)

    @property
    def network(self) -> ipaddress.IPv4Network | None:
        """The node's subnet: what CrossSubnet compares a peer's address with."""
        address = self.address
        return None if address is None else address.network

    @property
    def as_number(self) -> int | None:
        """The node's own AS, if it sets one (else the cluster's applies)."""
        return self.spec.bgp.as_number if self.spec.bgp else None

    @property
    def ipip_tunnel_address(self) -> str | None:
        return self.spec.bgp.ipv4_ipip_tunnel_addr if self.spec.bgp else None

    @property
    def vxlan_tunnel_address(self) -> str | None:
        return self.spec.ipv4_vxlan_tunnel_addr

    @property
    def vtep_mac(self) -> str:
        """The MAC of the node's vxlan.calico: the one its Node sets, else derived from its name."""
        return self.spec.vxlan_tunnel_mac_addr or derived_vtep_mac(self.name)

    @property
    def route_reflector_cluster_id(self) -> str | None:
        """Set on a route reflector: the cluster ID it reflects with."""
        return self.spec.bgp.route_reflector_cluster_id if self.spec.bgp else None
