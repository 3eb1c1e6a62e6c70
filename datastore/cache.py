"""DatastoreCache: the datastore as typed values, fed key by key from a Syncer.

Resources are decoded into their models and kept by kind; IPAM's host
affinities are kept as ``(node, cidr) -> state`` and its blocks as raw JSON by
CIDR (their model lives in ``ipam``, above this layer).  felix and the bgp agent
each compute from one of these, keeping no history of their own.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import TypeVar

from datastore.errors import ValidationFailed
from datastore.keys import IPAMKeys, KeyLayout
from datastore.kv import KeyValue
from datastore.models import Node, Resource
from datastore.store import decode

log = logging.getLogger(__name__)
R = TypeVar("R", bound=Resource)


@dataclass
class DatastoreCache:
    layout: KeyLayout
    resources: dict[type[Resource], dict[str, Resource]] = field(default_factory=dict)  # kind -> key -> it
    affinities: dict[tuple[str, str], str] = field(default_factory=dict)  # (node, cidr) -> state
    blocks: dict[str, bytes] = field(default_factory=dict)  # cidr -> the block's stored JSON

    def apply(self, key: str, value: bytes | None) -> None:
        """One Syncer update: ``value`` None means deleted.  Invalid values are logged and dropped."""
        ipam = IPAMKeys(self.layout.prefix)
        if key.startswith(ipam.hosts):
            ident = (ipam.affinity_node(key), ipam.cidr_of(key))
            if value is None:
                self.affinities.pop(ident, None)
            else:
                try:
                    self.affinities[ident] = str(json.loads(value).get("state", ""))
                except (ValueError, AttributeError):
                    log.error("ignoring invalid affinity %s", key)
            return
        if key.startswith(ipam.blocks):
            if value is None:
                self.blocks.pop(ipam.cidr_of(key), None)
            else:
                self.blocks[ipam.cidr_of(key)] = value
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

    def of(self, kind: type[R]) -> dict[str, R]:
        """Every cached resource of ``kind``, by key."""
        return {k: v for k, v in self.resources.get(kind, {}).items() if isinstance(v, kind)}

    def named(self, kind: type[R], name: str) -> R | None:
        return next((r for r in self.of(kind).values() if r.name == name), None)

    def node_named(self, name: str) -> Node | None:
        return self.named(Node, name)
