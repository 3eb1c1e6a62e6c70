"""DatastoreCache: the datastore as typed values, fed key by key from a Syncer.

Resources are decoded into their models and kept by kind; IPAM's host
affinities are kept as ``(node, cidr) -> AffinityState`` and its blocks as
``AllocationBlock`` by CIDR, each decoded once, when its key changes.  felix and
the bgp agent each compute from one of these, keeping no history of their own.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar, cast

from datastore.errors import ValidationFailed
from datastore.keys import IPAMKeys, KeyLayout
from datastore.kv import KeyValue
from datastore.models import IPPool, Node, Resource, pool_containing
from datastore.models.block import AllocationBlock
from datastore.models.ipam import AffinityState, affinity_state, confirmed
from datastore.store import decode

log = logging.getLogger(__name__)
R = TypeVar("R", bound=Resource)
_NONE: Mapping[str, Resource] = MappingProxyType({})


@dataclass
class DatastoreCache:
    layout: KeyLayout
    resources: dict[type[Resource], dict[str, Resource]] = field(default_factory=dict)  # kind -> key -> it
    affinities: dict[tuple[str, str], AffinityState] = field(default_factory=dict)  # (node, cidr) -> state
    blocks: dict[str, AllocationBlock] = field(default_factory=dict)  # cidr -> the block

    def apply(self, key: str, value: bytes | None) -> None:
        """One Syncer update: ``value`` None means deleted.  Invalid values are logged and dropped."""
        ipam = IPAMKeys(self.layout.prefix)
        if key.startswith(ipam.hosts):
            ident = (ipam.affinity_node(key), ipam.cidr_of(key))
            self.affinities.pop(ident, None)
            if value is not None:
                try:
                    self.affinities[ident] = affinity_state(value)
                except (ValueError, KeyError, TypeError):
                    log.error("ignoring invalid affinity %s", key)
            return
        if key.startswith(ipam.blocks):
            cidr = ipam.cidr_of(key)
            self.blocks.pop(cidr, None)
            if value is not None:
                try:
                    self.blocks[cidr] = AllocationBlock.from_json(value)
                except (ValueError, KeyError, TypeError) as exc:
                    log.error("ignoring an unreadable IPAM block %s: %s", key, exc)
            return
        parsed = self.layout.parse(key)
        if parsed is None:
            return
        table = self.resources.setdefault(parsed.kind, {})
        table.pop(key, None)
        if value is None:
            return
        try:
            resource = decode(KeyValue(key, value, 0, 0))
        except (ValidationFailed, ValueError) as exc:
            log.error("ignoring invalid %s: %s", key, exc)
            return
        if isinstance(resource, parsed.kind):
            table[key] = resource

    def of(self, kind: type[R]) -> Mapping[str, R]:
        """Every cached resource of ``kind``, by key: the cache's own table, not a copy (agents ask
        for several kinds on every pass; ``apply`` keeps only a ``kind`` in ``kind``'s table)."""
        return cast(Mapping[str, R], self.resources.get(kind, _NONE))

    def named(self, kind: type[R], name: str) -> R | None:
        return next((r for r in self.of(kind).values() if r.name == name), None)

    def node_named(self, name: str) -> Node | None:
        return self.named(Node, name)

    def pool_of(self, cidr: str) -> IPPool | None:
        return pool_containing(self.of(IPPool).values(), cidr)

    def confirmed_blocks(self, node: str | None = None) -> list[tuple[str, str]]:
        """``(node, cidr)`` of every confirmed affinity, or only ``node``'s."""
        return confirmed(self.affinities, node)
