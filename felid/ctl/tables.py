"""calicoctl-style tables: upper-case headers, columns padded with three spaces."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from datastore.models import (
    BGPConfiguration,
    BGPPeer,
    ClusterInformation,
    FelixConfiguration,
    IPPool,
    Node,
    NodeBGPSpec,
    Resource,
    WorkloadEndpoint,
)


@dataclass(frozen=True)
class Column:
    header: str
    value: Callable[[Resource], object]
    wide_only: bool = False


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _pool(r: Resource) -> IPPool:
    assert isinstance(r, IPPool)
    return r


def _node(r: Resource) -> Node:
    assert isinstance(r, Node)
    return r


def _node_bgp(r: Resource) -> NodeBGPSpec:
    return _node(r).spec.bgp or NodeBGPSpec()


def _peer(r: Resource) -> BGPPeer:
    assert isinstance(r, BGPPeer)
    return r


def _bgpconfig(r: Resource) -> BGPConfiguration:
    assert isinstance(r, BGPConfiguration)
    return r


def _wep(r: Resource) -> WorkloadEndpoint:
    assert isinstance(r, WorkloadEndpoint)
    return r


def _cluster(r: Resource) -> ClusterInformation:
    assert isinstance(r, ClusterInformation)
    return r


def _peer_node(r: Resource) -> str:
    spec = _peer(r).spec
    return spec.node or (f"{spec.node_selector}" if spec.node_selector else "(global)")


_NAME = Column("NAME", lambda r: r.name)

COLUMNS: dict[type[Resource], tuple[Column, ...]] = {
    IPPool: (
        _NAME,
        Column("CIDR", lambda r: _pool(r).spec.cidr),
        Column("NAT", lambda r: _pool(r).spec.nat_outgoing, wide_only=True),
        Column("IPIPMODE", lambda r: _pool(r).spec.ipip_mode, wide_only=True),
        Column("VXLANMODE", lambda r: _pool(r).spec.vxlan_mode, wide_only=True),
        Column("DISABLED", lambda r: _pool(r).spec.disabled, wide_only=True),
        Column("DISABLEBGPEXPORT", lambda r: _pool(r).spec.disable_bgp_export, wide_only=True),
        Column("SELECTOR", lambda r: _pool(r).spec.node_selector),
    ),
    Node: (
        _NAME,
        Column("ASN", lambda r: _bgp_asn(_node(r)), wide_only=True),
        Column("IPV4", lambda r: _node_bgp(r).ipv4_address, wide_only=True),
        Column("IPV4IPIP", lambda r: _node_bgp(r).ipv4_ipip_tunnel_addr, wide_only=True),
        Column("IPV4VXLAN", lambda r: _node(r).spec.ipv4_vxlan_tunnel_addr, wide_only=True),
    ),
    BGPPeer: (
        _NAME,
        Column("PEERIP", lambda r: _peer(r).spec.peer_ip or f"{_peer(r).spec.peer_selector}"),
        Column("NODE", _peer_node),
        Column("ASN", lambda r: _peer(r).spec.as_number if _peer(r).spec.as_number else "(node's)"),
    ),
    BGPConfiguration: (
        _NAME,
        Column("LOGSEVERITY", lambda r: _bgpconfig(r).spec.log_severity_screen),
        Column("MESHENABLED", lambda r: _mesh(_bgpconfig(r))),
        Column(
            "ASNUMBER", lambda r: _bgpconfig(r).spec.as_number or ("64512" if r.name == "default" else "")
        ),
    ),
    FelixConfiguration: (_NAME,),
    WorkloadEndpoint: (
        Column("WORKLOAD", lambda r: _wep(r).spec.pod or _wep(r).spec.workload or r.name),
        Column("NODE", lambda r: _wep(r).spec.node),
        Column("NETWORKS", lambda r: _wep(r).spec.ip_networks),
        Column("INTERFACE", lambda r: _wep(r).spec.interface_name),
        Column("PROFILES", lambda r: _wep(r).spec.profiles, wide_only=True),
    ),
    ClusterInformation: (
        _NAME,
        Column("GUID", lambda r: _cluster(r).spec.cluster_guid, wide_only=True),
        Column("VERSION", lambda r: _cluster(r).spec.calico_version, wide_only=True),
        Column("READY", lambda r: _cluster(r).spec.datastore_ready),
    ),
}


def _bgp_asn(node: Node) -> str:
    asn = node.spec.bgp.as_number if node.spec.bgp else None
    return str(asn) if asn else "(global)"


def _mesh(config: BGPConfiguration) -> str:
    if config.spec.node_to_node_mesh_enabled is None:
        return "true" if config.name == "default" else ""
    return _text(config.spec.node_to_node_mesh_enabled)


def render_table(kind: type[Resource], resources: Sequence[Resource], wide: bool, namespaces: bool) -> str:
    columns = [c for c in COLUMNS[kind] if wide or not c.wide_only]
    if namespaces and kind.NAMESPACED:
        columns.insert(0, Column("NAMESPACE", lambda r: r.namespace))
    rows = [[c.header for c in columns]]
    rows += [[_text(c.value(r)) for c in columns] for r in resources]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = ["   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines) + "\n"
