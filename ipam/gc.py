"""Leak garbage collection: release what nothing owns, after a grace period.

A leak (see ``inventory.leak_reason``) is released only when it is older than
the grace period, still a leak when re-checked just before its release, and
still held by the same handle at the moment of release (a guarded write).
Tunnel addresses of Nodes that exist are never leaks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from datastore.keys import KeyLayout
from datastore.kv import KVStore
from datastore.models import Node, WorkloadEndpoint
from datastore.models.ipam import container_of
from datastore.store import decode
from ipam.allocator import BlockAllocator
from ipam.inventory import Leak, check, load_inventory


def _age(timestamp: str | None, now: datetime) -> float | None:
    if timestamp is None:
        return None
    try:
        then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return (now - then).total_seconds()


@dataclass
class GarbageCollector:
    kv: KVStore
    layout: KeyLayout
    grace_seconds: float
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    reclaimed: int = 0  # addresses released over this collector's life (ipam_allocations_gc_reclamations)

    def candidates(self) -> tuple[list[Leak], list[Leak]]:
        """Leaks old enough to release, and those still inside the grace period (or of unknown age)."""
        now = self.clock()
        ripe: list[Leak] = []
        waiting: list[Leak] = []
        for leak in check(load_inventory(self.kv, self.layout)).leaks:
            age = _age(leak.timestamp, now)
            (ripe if age is not None and age >= self.grace_seconds else waiting).append(leak)
        return ripe, waiting

    def still_leaked(self, leak: Leak) -> bool:
        """Re-read what owns the allocation, just before releasing it."""
        if leak.node is not None and self.kv.get(self.layout.resource(Node, leak.node)) is None:
            return True
        container = container_of(leak.handle_id)
        if container is None:
            return False
        endpoints = (decode(i) for i in self.kv.list(self.layout.kind_prefix(WorkloadEndpoint))[0])
        return not any(
            isinstance(w, WorkloadEndpoint) and w.spec.container_id == container for w in endpoints
        )

    def collect(self) -> list[Leak]:
        """Release every ripe leak that is still a leak; the ones released."""
        ripe, _ = self.candidates()
        allocator = BlockAllocator(self.kv, self.layout, node="felid-ipam-gc")
        released = []
        for leak in ripe:
            if leak.handle_id is None or not self.still_leaked(leak):
                continue
            if allocator.release_ips([leak.address], only_handle=leak.handle_id):
                released.append(leak)
                self.reclaimed += 1
        return released
