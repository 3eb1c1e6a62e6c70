"""calicoctl-style tables: upper-case headers, columns padded with three spaces."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from datastore.models import (
    BGPConfiguration,
    BGPFilter,
    BGPPeer,
    ClusterInformation,
    FelixConfiguration,
    GlobalNetworkPolicy,
    HostEndpoint,
    IPPool,
    IPReservation,
    NetworkPolicy,
    Node,
    NodeBGPSpec,
    Profile,
    Resource,
    WorkloadEndpoint,
)

R = TypeVar("R", bound=Resource)


@dataclass(frozen=True)
class Column(Generic[R]):
    header: str
    value: Callable[[R], object]
    wide_only: bool = False


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _node_bgp(node: Node) -> NodeBGPSpec:
    return node.spec.bgp or NodeBGPSpec()


def _peer_node(peer: BGPPeer) -> str:
    return peer.spec.node or peer.spec.node_selector or "(global)"


def _labels(labels: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in labels.items()]


def _order(policy: NetworkPolicy | GlobalNetworkPolicy) -> str:
    return "" if policy.spec.order is None else f"{policy.spec.order:g}"


def _mesh(config: BGPConfiguration) -> str:
    if config.spec.node_to_node_mesh_enabled is None:
        return "true" if config.name == "default" else ""
    return _text(config.spec.node_to_node_mesh_enabled)


_NAME: Column[Any] = Column("NAME", lambda r: r.name)
_POLICY_COLUMNS: tuple[Column[Any], ...] = (  # NetworkPolicy and GlobalNetworkPolicy alike
    _NAME,
    Column[Any]("ORDER", _order, wide_only=True),
    Column[Any]("SELECTOR", lambda p: p.spec.selector, wide_only=True),
)

# Each kind's columns take that kind; render_table only hands them their own kind.
COLUMNS: dict[type[Resource], tuple[Column[Any], ...]] = {
    IPPool: (
        _NAME,
        Column[IPPool]("CIDR", lambda p: p.spec.cidr),
        Column[IPPool]("NAT", lambda p: p.spec.nat_outgoing, wide_only=True),
        Column[IPPool]("IPIPMODE", lambda p: p.spec.ipip_mode, wide_only=True),
        Column[IPPool]("VXLANMODE", lambda p: p.spec.vxlan_mode, wide_only=True),
        Column[IPPool]("DISABLED", lambda p: p.spec.disabled, wide_only=True),
        Column[IPPool]("DISABLEBGPEXPORT", lambda p: p.spec.disable_bgp_export, wide_only=True),
        Column[IPPool]("SELECTOR", lambda p: p.spec.node_selector),
    ),
    Node: (
        _NAME,
        Column[Node]("ASN", lambda n: _node_bgp(n).as_number or "(global)", wide_only=True),
        Column[Node]("IPV4", lambda n: _node_bgp(n).ipv4_address, wide_only=True),
        Column[Node]("IPV4IPIP", lambda n: _node_bgp(n).ipv4_ipip_tunnel_addr, wide_only=True),
        Column[Node]("IPV4VXLAN", lambda n: n.spec.ipv4_vxlan_tunnel_addr, wide_only=True),
    ),
    BGPPeer: (
        _NAME,
        Column[BGPPeer]("PEERIP", lambda p: p.spec.peer_ip or p.spec.peer_selector),
        Column[BGPPeer]("NODE", _peer_node),
        Column[BGPPeer]("ASN", lambda p: p.spec.as_number or "(node's)"),
    ),
    BGPConfiguration: (
        _NAME,
        Column[BGPConfiguration]("LOGSEVERITY", lambda c: c.spec.log_severity_screen),
        Column[BGPConfiguration]("MESHENABLED", _mesh),
        Column[BGPConfiguration](
            "ASNUMBER", lambda c: c.spec.as_number or ("64512" if c.name == "default" else "")
        ),
    ),
    BGPFilter: (
        _NAME,
        Column[BGPFilter]("IMPORT", lambda f: len(f.spec.import_v4)),
        Column[BGPFilter]("EXPORT", lambda f: len(f.spec.export_v4)),
    ),
    FelixConfiguration: (_NAME,),
    WorkloadEndpoint: (
        Column[WorkloadEndpoint]("WORKLOAD", lambda w: w.spec.pod or w.spec.workload or w.name),
        Column[WorkloadEndpoint]("NODE", lambda w: w.spec.node),
        Column[WorkloadEndpoint]("NETWORKS", lambda w: w.spec.ip_networks),
        Column[WorkloadEndpoint]("INTERFACE", lambda w: w.spec.interface_name),
        Column[WorkloadEndpoint]("PROFILES", lambda w: w.spec.profiles, wide_only=True),
    ),
    NetworkPolicy: _POLICY_COLUMNS,
    GlobalNetworkPolicy: _POLICY_COLUMNS,
    Profile: (
        _NAME,
        Column[Profile]("LABELS", lambda p: _labels(p.spec.labels_to_apply), wide_only=True),
    ),
    HostEndpoint: (
        _NAME,
        Column[HostEndpoint]("NODE", lambda h: h.spec.node),
        Column[HostEndpoint]("INTERFACE", lambda h: h.spec.interface_name, wide_only=True),
        Column[HostEndpoint]("IPS", lambda h: h.spec.expected_i_ps, wide_only=True),
        Column[HostEndpoint]("PROFILES", lambda h: h.spec.profiles, wide_only=True),
    ),
    IPReservation: (
        _NAME,
        Column[IPReservation]("CIDRS", lambda r: r.spec.reserved_cidrs),
    ),
    ClusterInformation: (
        _NAME,
        Column[ClusterInformation]("GUID", lambda c: c.spec.cluster_guid, wide_only=True),
        Column[ClusterInformation]("VERSION", lambda c: c.spec.calico_version, wide_only=True),
        Column[ClusterInformation]("READY", lambda c: c.spec.datastore_ready),
    ),
}


def render_table(kind: type[Resource], resources: Sequence[Resource], wide: bool, namespaces: bool) -> str:
    if any(not isinstance(r, kind) for r in resources):
        raise TypeError(f"render_table({kind.KIND}) given another kind")
    columns = [c for c in COLUMNS[kind] if wide or not c.wide_only]
    if namespaces and kind.NAMESPACED:
        columns.insert(0, Column[Resource]("NAMESPACE", lambda r: r.namespace))
    rows = [[c.header for c in columns]]
    rows += [[_text(c.value(r)) for c in columns] for r in resources]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = ["   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines) + "\n"
