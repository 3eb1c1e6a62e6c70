"""Shared by the IPAM tests: pools, allocators and a full consistency audit of etcd."""

from __future__ import annotations

import ipaddress
from collections import Counter
from typing import Any

from datastore.keys import IPAMKeys, KeyLayout
from datastore.kv import KVStore, Put
from datastore.models import IPPool, Node
from datastore.models.block import AllocationBlock
from datastore.models.ipam import Handle, IPAMConfig
from datastore.store import ResourceStore
from ipam.allocator import BlockAllocator

LAYOUT = KeyLayout("/felid")
KEYS = IPAMKeys("/felid")
POD_POOL: dict[str, Any] = {
    "apiVersion": "projectcalico.org/v3",
    "kind": "IPPool",
    "metadata": {"name": "pods"},
    "spec": {"cidr": "10.100.0.0/22", "blockSize": 26},
}


def make_pool(store: ResourceStore, name: str, cidr: str, block_size: int = 26, **spec: Any) -> IPPool:
    return store.create(
        IPPool.model_validate(
            {"metadata": {"name": name}, "spec": {"cidr": cidr, "blockSize": block_size, **spec}}
        )
    )


def make_node(store: ResourceStore, name: str, labels: dict[str, str] | None = None) -> Node:
    return store.create(Node.model_validate({"metadata": {"name": name, "labels": labels or {}}}))


def set_config(kv: KVStore, **settings: Any) -> None:
    kv.commit([], [Put(KEYS.config, IPAMConfig(**settings).to_json())])


def allocator(kv: KVStore, node: str) -> BlockAllocator:
    return BlockAllocator(kv, LAYOUT, node)


def blocks(kv: KVStore) -> dict[str, AllocationBlock]:
    return {b.cidr: b for b in (AllocationBlock.from_json(i.value) for i in kv.list(KEYS.blocks)[0])}


def handles(kv: KVStore) -> dict[str, Handle]:
    return {h.handle_id: h for h in (Handle.from_json(i.value) for i in kv.list(KEYS.handles)[0])}


def allocated(kv: KVStore) -> dict[str, str]:
    """address -> handle id, over every block."""
    out: dict[str, str] = {}
    for block in blocks(kv).values():
        for ordinal, attr in block.used():
            assert attr.handle_id is not None, f"{block.address(ordinal)} has no handle"
            out[block.address(ordinal)] = attr.handle_id
    return out


def assert_consistent(kv: KVStore) -> None:
    """Every allocated address is reachable through its handle, and every handle count is real."""
    all_blocks, all_handles = blocks(kv), handles(kv)
    from_blocks: Counter[tuple[str, str]] = Counter()
    for cidr, block in all_blocks.items():
        assert len(block.unallocated) + block.in_use == block.size
        assert sorted(block.unallocated) == [o for o, i in enumerate(block.allocations) if i is None]
        for _, attr in block.used():
            assert attr.handle_id in all_handles, f"{cidr}: allocation for unknown handle {attr.handle_id}"
            from_blocks[(attr.handle_id, cidr)] += 1
        if block.is_empty:
            assert block.host is not None, f"empty block {cidr} without affinity was not deleted"
    from_handles = Counter(
        {(h.handle_id, cidr): n for h in all_handles.values() for cidr, n in h.blocks.items()}
    )
    assert from_blocks == from_handles


def in_pool(address: str, cidr: str) -> bool:
    return ipaddress.IPv4Address(address) in ipaddress.IPv4Network(cidr)
