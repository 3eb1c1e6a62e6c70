"""A point-in-time picture of all IPAM state, and the pure reports drawn from it.

``load_inventory`` reads everything once; ``check``, ``pool_usage`` and
``find_address`` only compute, so they are tested without etcd as easily as with.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from datastore.keys import IPAMKeys, KeyLayout
from datastore.kv import KVStore
from datastore.models import IPPool, Node, WorkloadEndpoint, pool_containing
from datastore.models.block import AllocationBlock, Attribute
from datastore.models.ipam import AffinityState, Handle, affinity_state, container_of
from datastore.store import decode


@dataclass(frozen=True)
class Inventory:
    blocks: Mapping[str, AllocationBlock]
    handles: Mapping[str, Handle]
    affinities: Mapping[tuple[str, str], AffinityState]  # (node, cidr) -> state
    pools: tuple[IPPool, ...]
    nodes: frozenset[str]
    container_ids: frozenset[str]  # of every WorkloadEndpoint

    def pool_of(self, cidr: str) -> IPPool | None:
        return pool_containing(self.pools, cidr)


def load_inventory(kv: KVStore, layout: KeyLayout) -> Inventory:
    keys = IPAMKeys(layout.prefix)
    blocks = {b.cidr: b for b in (AllocationBlock.from_json(i.value) for i in kv.list(keys.blocks)[0])}
    handles = {h.handle_id: h for h in (Handle.from_json(i.value) for i in kv.list(keys.handles)[0])}
    affinities = {
        (keys.affinity_node(i.key), keys.cidr_of(i.key)): affinity_state(i.value)
        for i in kv.list(keys.hosts)[0]
    }
    resources = [
        decode(i)
        for prefix in (IPPool, Node, WorkloadEndpoint)
        for i in kv.list(layout.kind_prefix(prefix))[0]
    ]
    return Inventory(
        blocks=blocks,
        handles=handles,
        affinities=affinities,
        pools=tuple(r for r in resources if isinstance(r, IPPool)),
        nodes=frozenset(r.name for r in resources if isinstance(r, Node)),
        container_ids=frozenset(
            r.spec.container_id for r in resources if isinstance(r, WorkloadEndpoint) and r.spec.container_id
        ),
    )


@dataclass(frozen=True)
class Leak:
    address: str
    handle_id: str | None
    node: str | None
    timestamp: str | None
    reason: str


@dataclass(frozen=True)
class CheckReport:
    leaks: tuple[Leak, ...]
    stray_affinities: tuple[tuple[str, str, str], ...]  # node, cidr, why
    inconsistencies: tuple[str, ...]

    @property
    def problems(self) -> int:
        return len(self.leaks) + len(self.stray_affinities) + len(self.inconsistencies)


def leak_reason(attr: Attribute, inventory: Inventory) -> str | None:
    """Why an allocation is leaked, or None if something still owns it."""
    node = attr.attrs.get("node")
    if node is not None and node not in inventory.nodes:
        return f"node {node} does not exist"
    container = container_of(attr.handle_id)
    if container is not None and container not in inventory.container_ids:
        return "no WorkloadEndpoint has this container"
    if attr.handle_id is None:
        return "no handle"
    return None


def check(inventory: Inventory) -> CheckReport:
    leaks = []
    from_blocks: Counter[tuple[str, str]] = Counter()
    for cidr, block in sorted(inventory.blocks.items()):
        for ordinal, attr in block.used():
            reason = leak_reason(attr, inventory)
            if reason is not None:
                leaks.append(
                    Leak(
                        block.address(ordinal),
                        attr.handle_id,
                        attr.attrs.get("node"),
                        attr.attrs.get("timestamp"),
                        reason,
                    )
                )
            if attr.handle_id is not None:
                from_blocks[(attr.handle_id, cidr)] += 1
    stray = []
    for (node, cidr), state in sorted(inventory.affinities.items()):
        claimed = inventory.blocks.get(cidr)
        if claimed is None:
            stray.append((node, cidr, f"{state.value} affinity without a block"))
        elif claimed.host != node:
            stray.append(
                (node, cidr, f"{state.value} affinity, but the block belongs to {claimed.host or 'no host'}")
            )
    problems = []
    from_handles = Counter(
        {(h.handle_id, c): n for h in inventory.handles.values() for c, n in h.blocks.items()}
    )
    for (handle_id, cidr), n in sorted((from_handles - from_blocks).items()):
        problems.append(f"handle {handle_id} counts {n} more address(es) in {cidr} than the block holds")
    for (handle_id, cidr), n in sorted((from_blocks - from_handles).items()):
        problems.append(
            f"block {cidr} holds {n} address(es) for handle {handle_id} that the handle does not count"
        )
    return CheckReport(tuple(leaks), tuple(stray), tuple(problems))


@dataclass(frozen=True)
class Usage:
    cidr: str
    size: int
    in_use: int
    host: str | None = None  # blocks only

    @property
    def free(self) -> int:
        return self.size - self.in_use


def pool_usage(inventory: Inventory) -> list[tuple[IPPool, Usage, list[Usage]]]:
    """Per pool: its totals, and each of its blocks."""
    out = []
    for pool in sorted(inventory.pools, key=lambda p: p.name):
        blocks = [b for cidr, b in sorted(inventory.blocks.items()) if inventory.pool_of(cidr) is pool]
        used = sum(b.in_use for b in blocks)
        per_block = [Usage(b.cidr, b.size, b.in_use, b.host) for b in blocks]
        out.append((pool, Usage(pool.spec.cidr, pool.network.num_addresses, used), per_block))
    return out


def find_address(inventory: Inventory, address: str) -> tuple[AllocationBlock, Attribute | None] | None:
    """The block holding ``address`` and who uses it (None: free), or None if in no block."""
    ip = ipaddress.IPv4Address(address)
    for block in inventory.blocks.values():
        if ip in block.network:
            return block, block.attribute_of(block.ordinal(address))
    return None
