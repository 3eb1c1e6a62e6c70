"""Node: one host of the cluster, as BGP and the tunnels see it."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from datastore.models.base import MAC, ASNumber, IPv4, IPv4Interface, Model, Resource


class NodeBGPSpec(Model):
    ipv4_address: IPv4Interface | None = Field(default=None, alias="ipv4Address")
    as_number: ASNumber | None = None
    ipv4_ipip_tunnel_addr: IPv4 | None = Field(default=None, alias="ipv4IPIPTunnelAddr")
    route_reflector_cluster_id: IPv4 | None = Field(default=None, alias="routeReflectorClusterID")


class NodeSpec(Model):
    bgp: NodeBGPSpec | None = None
    ipv4_vxlan_tunnel_addr: IPv4 | None = Field(default=None, alias="ipv4VXLANTunnelAddr")
    vxlan_tunnel_mac_addr: MAC | None = Field(default=None, alias="vxlanTunnelMACAddr")


class Node(Resource):
    KIND: ClassVar[str] = "Node"
    PLURAL: ClassVar[str] = "nodes"

    kind: Literal["Node"] = "Node"
    spec: NodeSpec = Field(default_factory=NodeSpec)
