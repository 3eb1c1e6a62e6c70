"""What felid-node does once at start, as calico-node's startup does (synchronous, on the datastore).

Every step is idempotent, so a restart repeats them harmlessly, and safe when
several nodes start at once: the default IPPool has one name, so exactly one
create succeeds; ClusterInformation and Node writes are compare-and-swap.
"""

from __future__ import annotations

import ipaddress
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datastore.errors import AlreadyExists, Conflict, NotFound
from datastore.kv import KVStore
from datastore.models import (
    ClusterInformation,
    Encapsulation,
    IPPool,
    Node,
    Profile,
    enabled_pools,
    pool_containing,
)
from datastore.models.ipam import TunnelKind, gateway_handle, tunnel_handle
from datastore.models.node import derived_vtep_mac, mark_reflector
from datastore.store import ResourceStore
from felid.node.config import NodeSettings
from felix.dataplane.hostfile import write_atomically
from ipam.allocator import BlockAllocator

log = logging.getLogger("felid-node")

DEFAULT_POOL = "default-ipv4-ippool"
CAS_ATTEMPTS = 10


def ensure_default_pool(store: ResourceStore, settings: NodeSettings) -> None:
    if store.list(IPPool):
        return
    pool = IPPool.model_validate(
        {
            "metadata": {"name": DEFAULT_POOL},
            "spec": {
                "cidr": settings.ipv4pool_cidr,
                "blockSize": settings.ipv4pool_block_size,
                "ipipMode": settings.ipv4pool_ipip,
                "vxlanMode": settings.ipv4pool_vxlan,
                "natOutgoing": settings.ipv4pool_nat_outgoing,
                "nodeSelector": "all()",
            },
        }
    )
    try:
        store.create(pool)
        log.info("created the default IPPool %s (%s)", DEFAULT_POOL, settings.ipv4pool_cidr)
    except AlreadyExists:
        pass  # another node was first


def ensure_default_profile(store: ResourceStore) -> None:
    """Calico's ``projectcalico-default-allow``: the profile the CNI plugin gives workloads unless
    its network config names others, so a cluster without policy lets everything through."""
    try:
        store.create(Profile.default_allow())
        log.info("created the Profile %s", Profile.DEFAULT_ALLOW)
    except AlreadyExists:
        pass  # there already (an operator may have changed it: it is theirs now)


def mark_datastore_ready(store: ResourceStore) -> None:
    for _ in range(CAS_ATTEMPTS):
        try:
            current: ClusterInformation | None = store.get(ClusterInformation, "default")
        except NotFound:
            current = None
        spec: dict[str, Any] = current.spec.model_dump(by_alias=True, exclude_none=True) if current else {}
        if spec.get("datastoreReady") is True and spec.get("clusterGUID"):
            return
        spec.setdefault("clusterGUID", uuid.uuid4().hex)
        spec.setdefault("clusterType", "felid")
        spec["datastoreReady"] = True
        metadata: dict[str, Any] = {"name": "default"}
        if current is not None:
            metadata["resourceVersion"] = current.metadata.resource_version
        info = ClusterInformation.model_validate({"metadata": metadata, "spec": spec})
        try:
            store.update(info) if current is not None else store.create(info)
            return
        except (Conflict, AlreadyExists):
            continue
    raise Conflict("ClusterInformation default")


def register_node(store: ResourceStore, kv: KVStore, name: str, address: str, settings: NodeSettings) -> Node:
    """This node's Node: address, AS, reflector role, then the tunnel addresses its pools need."""
    node = _write_node(store, name, lambda data: _identity(data, address, settings))
    pools = enabled_pools(store.list(IPPool))
    allocator = BlockAllocator(kv, store.layout, name)
    tunnel_pools = [p for p in pools if "Tunnel" in p.spec.allowed_uses]  # as Calico: only those
    ipip = [p.name for p in tunnel_pools if p.encapsulation is Encapsulation.IPIP]
    vxlan = [p.name for p in tunnel_pools if p.encapsulation is Encapsulation.VXLAN]
    ipip_addr = _tunnel_address(allocator, "ipip", name, ipip)
    vxlan_addr = _tunnel_address(allocator, "vxlan", name, vxlan)

    def tunnels(data: dict[str, Any]) -> None:
        bgp = data["spec"].setdefault("bgp", {})
        _set(bgp, "ipv4IPIPTunnelAddr", ipip_addr)
        _set(data["spec"], "ipv4VXLANTunnelAddr", vxlan_addr)
        _set(data["spec"], "vxlanTunnelMACAddr", derived_vtep_mac(name) if vxlan_addr else None)

    if (ipip_addr, vxlan_addr) != (node.ipip_tunnel_address, node.vxlan_tunnel_address) or (
        vxlan_addr is not None and node.spec.vxlan_tunnel_mac_addr is None
    ):
        node = _write_node(store, name, tunnels)
    return node


def _set(table: dict[str, Any], key: str, value: str | None) -> None:
    if value is None:
        table.pop(key, None)
    else:
        table[key] = value


def _identity(data: dict[str, Any], address: str, settings: NodeSettings) -> None:
    bgp = data["spec"].setdefault("bgp", {})
    bgp["ipv4Address"] = address
    if settings.as_number is not None:
        bgp["asNumber"] = settings.as_number
    if settings.route_reflector_cluster_id is not None:
        mark_reflector(data, settings.route_reflector_cluster_id)


def _write_node(store: ResourceStore, name: str, change: Any) -> Node:
    for _ in range(CAS_ATTEMPTS):
        try:
            current: Node | None = store.get(Node, name)
        except NotFound:
            current = None
        data = (
            current.model_dump(by_alias=True, exclude_none=True) if current else {"metadata": {"name": name}}
        )
        data.setdefault("spec", {})
        change(data)
        node = Node.model_validate(data)
        if (
            current is not None
            and node.spec == current.spec
            and node.metadata.labels == current.metadata.labels
        ):
            return current
        try:
            return store.update(node) if current is not None else store.create(node)
        except (Conflict, AlreadyExists):
            continue
    raise Conflict(f"Node {name}")


def _tunnel_address(allocator: BlockAllocator, kind: TunnelKind, node: str, pools: list[str]) -> str | None:
    """The node's tunnel address from one of ``pools`` (kept across restarts); released if none needs it."""
    handle = tunnel_handle(kind, node)
    have = allocator.ips_of_handle(handle)
    if not pools:
        if have:
            allocator.release_handle(handle)
        return None
    if have:
        return have[0]
    attrs = {"type": f"{kind}TunnelAddress"}
    return allocator.auto_assign(handle, attrs=attrs, pools=pools, use="Tunnel")[0]


@dataclass(frozen=True)
class HostFiles:
    """Flannel-style facts for Docker (``--bip``, ``--mtu``) in /run/felid/subnet.env."""

    network: str
    subnet: str  # the reserved gateway address with its block's prefix, as flannel's FLANNEL_SUBNET
    ipmasq: bool

    def subnet_env(self, mtu: int) -> str:
        return (
            f"FELID_NETWORK={self.network}\nFELID_SUBNET={self.subnet}\n"
            f"FELID_MTU={mtu}\nFELID_IPMASQ={'true' if self.ipmasq else 'false'}\n"
        )

    def write(self, run_dir: Path, mtu: int) -> None:
        """``mtu``: the workloads' MTU, as felix wrote it to its MTU file."""
        write_atomically(run_dir / "subnet.env", self.subnet_env(mtu))


def host_files(store: ResourceStore, kv: KVStore, name: str) -> HostFiles | None:
    """The node's pool and an address reserved in its first block as the bridge gateway."""
    pools = enabled_pools(store.list(IPPool))
    if not pools:
        return None
    allocator = BlockAllocator(kv, store.layout, name)
    handle = gateway_handle(name)
    reserved = allocator.ips_of_handle(handle) or allocator.auto_assign(
        handle, attrs={"type": "bridgeGateway"}
    )
    pool = pool_containing(pools, reserved[0])
    assert pool is not None  # IPAM allocates from these pools only
    block = ipaddress.IPv4Network(f"{reserved[0]}/{pool.spec.block_size}", strict=False)
    if len(reserved) == 1 and ipaddress.IPv4Address(reserved[0]) == block.network_address:
        # A bridge cannot take its network's own address: keep that one reserved, take the next.
        reserved = reserved + allocator.auto_assign(handle, attrs={"type": "bridgeGateway"})
    address = max(ipaddress.IPv4Address(a) for a in reserved)
    return HostFiles(
        network=pool.spec.cidr,
        subnet=f"{address}/{pool.spec.block_size}",
        ipmasq=pool.spec.nat_outgoing,
    )
