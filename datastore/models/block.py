"""AllocationBlock: one IPAM block of a pool, which of its addresses are used and by whom.

Pure and immutable: ``assign`` and ``release`` return a new block.  The JSON
shape follows Calico's: ``allocations[ordinal]`` indexes ``attributes`` (or is
null when free), ``unallocated`` is the free list in hand-out order (released
ordinals go to its end, so an address is not reused at once).
"""

from __future__ import annotations

import ipaddress
import itertools
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

AFFINITY_PREFIX = "host:"


@dataclass(frozen=True)
class Attribute:
    handle_id: str | None
    secondary: tuple[tuple[str, str], ...] = ()

    @property
    def attrs(self) -> dict[str, str]:
        return dict(self.secondary)

    @classmethod
    def of(cls, handle_id: str | None, attrs: Mapping[str, str] | None = None) -> Attribute:
        return cls(handle_id, tuple(sorted((attrs or {}).items())))


@dataclass(frozen=True)
class AllocationBlock:
    cidr: str
    affinity: str | None
    allocations: tuple[int | None, ...]
    unallocated: tuple[int, ...]
    attributes: tuple[Attribute, ...] = field(default=())

    @classmethod
    def empty(cls, cidr: str, node: str | None) -> AllocationBlock:
        size = ipaddress.IPv4Network(cidr).num_addresses
        return cls(cidr, f"{AFFINITY_PREFIX}{node}" if node else None, (None,) * size, tuple(range(size)))

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.cidr)

    @property
    def host(self) -> str | None:
        """The node this block is affine to, if any."""
        if self.affinity and self.affinity.startswith(AFFINITY_PREFIX):
            return self.affinity[len(AFFINITY_PREFIX) :]
        return None

    @property
    def size(self) -> int:
        return len(self.allocations)

    @property
    def free(self) -> int:
        return len(self.unallocated)

    @property
    def in_use(self) -> int:
        return self.size - self.free

    @property
    def is_empty(self) -> bool:
        return self.free == self.size

    def address(self, ordinal: int) -> str:
        return str(self.network.network_address + ordinal)

    def ordinal(self, address: str) -> int:
        ip = ipaddress.IPv4Address(address)
        if ip not in self.network:
            raise ValueError(f"{address} is not in block {self.cidr}")
        return int(ip) - int(self.network.network_address)

    def attribute_of(self, ordinal: int) -> Attribute | None:
        index = self.allocations[ordinal]
        return None if index is None else self.attributes[index]

    def used(self) -> Iterable[tuple[int, Attribute]]:
        for ordinal, index in enumerate(self.allocations):
            if index is not None:
                yield ordinal, self.attributes[index]

    def ordinals_of(self, handle_id: str) -> list[int]:
        return [o for o, attr in self.used() if attr.handle_id == handle_id]

    def handle_counts(self) -> Counter[str]:
        return Counter(attr.handle_id for _, attr in self.used() if attr.handle_id is not None)

    def assign(
        self, count: int, attribute: Attribute, skip: Callable[[int], bool] | None = None
    ) -> tuple[AllocationBlock, list[int]]:
        """Up to ``count`` free ordinals for ``attribute``, first from the free list, none that
        ``skip`` refuses (those stay free, in their place)."""
        taken = list(itertools.islice((o for o in self.unallocated if skip is None or not skip(o)), count))
        if not taken:
            return self, []
        attributes = list(self.attributes)
        if attribute in attributes:
            index = attributes.index(attribute)
        else:
            index = len(attributes)
            attributes.append(attribute)
        chosen = set(taken)
        allocations = list(self.allocations)
        for ordinal in taken:
            allocations[ordinal] = index
        block = replace(
            self,
            allocations=tuple(allocations),
            unallocated=tuple(o for o in self.unallocated if o not in chosen),
            attributes=tuple(attributes),
        )
        return block, taken

    def release(self, ordinals: Iterable[int]) -> AllocationBlock:
        """Free ``ordinals`` (already-free ones are ignored) and drop unused attributes."""
        allocations = list(self.allocations)
        freed = [o for o in dict.fromkeys(ordinals) if allocations[o] is not None]
        for ordinal in freed:
            allocations[ordinal] = None
        # Re-index the attributes still referenced, keeping their order.
        still_used = sorted({i for i in allocations if i is not None})
        remap = {old: new for new, old in enumerate(still_used)}
        return replace(
            self,
            allocations=tuple(None if i is None else remap[i] for i in allocations),
            unallocated=self.unallocated + tuple(freed),
            attributes=tuple(self.attributes[i] for i in still_used),
        )

    def with_affinity(self, node: str | None) -> AllocationBlock:
        return replace(self, affinity=f"{AFFINITY_PREFIX}{node}" if node else None)

    def to_json(self) -> bytes:
        data = {
            "cidr": self.cidr,
            "affinity": self.affinity,
            "allocations": list(self.allocations),
            "unallocated": list(self.unallocated),
            "attributes": [{"handle_id": a.handle_id, "secondary": a.attrs} for a in self.attributes],
        }
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> AllocationBlock:
        data: dict[str, Any] = json.loads(raw)
        block = cls(
            cidr=data["cidr"],
            affinity=data.get("affinity"),
            allocations=tuple(data["allocations"]),
            unallocated=tuple(data["unallocated"]),
            attributes=tuple(
                Attribute.of(a.get("handle_id"), a.get("secondary")) for a in data["attributes"]
            ),
        )
        if len(block.allocations) != block.network.num_addresses:
            raise ValueError(f"block {block.cidr}: {len(block.allocations)} allocation slots")
        return block
