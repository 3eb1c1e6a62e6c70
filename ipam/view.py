"""What an allocation decision rests on, read once and guarded at commit.

An ``IPAMView`` caches the IPAM config, the pools and this node's labels with
the revisions they were read at.  Every allocation transaction carries guards
on exactly the records its decision used, so a stale cache can cost a retry but
never a wrong allocation (a pool disabled meanwhile, strict affinity switched on).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from datastore.keys import IPAMKeys, KeyLayout
from datastore.kv import Absent, Guard, KVStore, Prefix, Unchanged
from datastore.models import IPPool, IPReservation, Node
from datastore.models.block import AllocationBlock
from datastore.models.ipam import AffinityState, Handle, IPAMConfig, affinity_state
from datastore.models.ippool import Use
from datastore.models.ipreservation import reserved
from datastore.selector import Selector
from datastore.store import decode
from ipam.errors import NoUsablePool

T = TypeVar("T")


@dataclass(frozen=True)
class Versioned(Generic[T]):
    value: T
    revision: int


def _guard(key: str, revision: int) -> Guard:
    return Unchanged(key, revision) if revision else Absent(key)


@dataclass
class IPAMView:
    node: str
    config: IPAMConfig
    config_revision: int
    pools: list[Versioned[IPPool]]
    node_labels: dict[str, str]
    node_revision: int
    layout: KeyLayout
    # This node's confirmed blocks, and blocks/handles as last read or written.
    affine: list[str] = field(default_factory=list)
    reservations: list[IPReservation] = field(default_factory=list)  # addresses never handed out
    blocks: dict[str, Versioned[AllocationBlock]] = field(default_factory=dict)
    handles: dict[str, Versioned[Handle] | None] = field(default_factory=dict)
    _pool_of: dict[str, Versioned[IPPool] | None] = field(default_factory=dict)

    def reserved(self, address: str) -> bool:
        """An IPReservation keeps ``address`` from being handed out."""
        return reserved(self.reservations, address)

    def usable_pools(
        self, wanted: Sequence[str] | None = None, use: Use = "Workload"
    ) -> list[Versioned[IPPool]]:
        """Enabled pools whose nodeSelector matches this node and that allow ``use``: those named
        in ``wanted``, or else every Automatic one (a Manual pool serves only who names it)."""
        pools = self.pools
        if wanted:
            known = {p.value.name for p in pools} | {p.value.spec.cidr for p in pools}
            unknown = [w for w in wanted if w not in known]
            if unknown:
                raise NoUsablePool(self.node, f"IPPool {', '.join(unknown)} does not exist")
            pools = [p for p in pools if p.value.name in wanted or p.value.spec.cidr in wanted]
            refusing = [p.value.name for p in pools if use not in p.value.spec.allowed_uses]
            if refusing and len(refusing) == len(pools):
                raise NoUsablePool(self.node, f"IPPool {', '.join(refusing)} does not allow {use} addresses")
        else:
            pools = [p for p in pools if p.value.spec.assignment_mode == "Automatic"]
        usable = [
            p
            for p in pools
            if p.value.enabled
            and use in p.value.spec.allowed_uses
            and Selector.parse(p.value.spec.node_selector).matches(self.node_labels)
        ]
        if not usable:
            names = ", ".join(p.value.name for p in pools) or "none exist"
            raise NoUsablePool(
                self.node, f"every candidate pool is disabled, excludes this node or not for {use} ({names})"
            )
        return usable

    def pool_of(self, cidr: str) -> Versioned[IPPool] | None:
        if cidr not in self._pool_of:
            net = ipaddress.IPv4Network(cidr)
            self._pool_of[cidr] = next((p for p in self.pools if net.subnet_of(p.value.network)), None)
        return self._pool_of[cidr]

    def guards(self, pool: Versioned[IPPool] | None) -> list[Guard]:
        """Guards on the config, this node and ``pool``: what an allocation decision used."""
        keys = IPAMKeys(self.layout.prefix)
        out = [
            _guard(keys.config, self.config_revision),
            _guard(self.layout.resource(Node, self.node), self.node_revision),
        ]
        if pool is not None:
            out.append(Unchanged(self.layout.key_of(pool.value), pool.revision))
        return out


def load_view(kv: KVStore, layout: KeyLayout, node: str) -> IPAMView:
    keys = IPAMKeys(layout.prefix)
    config_kvs, pool_items, node_kvs, reservation_items, affinity_items = kv.read(
        [
            keys.config,
            Prefix(layout.kind_prefix(IPPool)),
            layout.resource(Node, node),
            Prefix(layout.kind_prefix(IPReservation)),
            Prefix(keys.host_affinities(node)),
        ]
    )  # one snapshot, one round trip: a CNI ADD starts here
    config_kv = next(iter(config_kvs), None)
    config = IPAMConfig.from_json(config_kv.value) if config_kv else IPAMConfig()
    pools = []
    for item in pool_items:
        pool = decode(item)
        if isinstance(pool, IPPool):
            pools.append(Versioned(pool, item.mod_revision))
    node_kv = next(iter(node_kvs), None)
    labels = decode(node_kv).metadata.labels if node_kv else {}
    reservations = [r for r in map(decode, reservation_items) if isinstance(r, IPReservation)]
    affine = [
        keys.cidr_of(a.key) for a in affinity_items if affinity_state(a.value) is AffinityState.CONFIRMED
    ]
    return IPAMView(
        node=node,
        config=config,
        config_revision=config_kv.mod_revision if config_kv else 0,
        pools=pools,
        node_labels=dict(labels),
        node_revision=node_kv.mod_revision if node_kv else 0,
        layout=layout,
        affine=affine,
        reservations=reservations,
    )


def block_cidrs(pool: IPPool, start_from: str) -> Iterator[str]:
    """Every block of ``pool``, starting at a place derived from ``start_from``.

    Hosts start their search for a free block at different places, so that
    concurrent claims rarely race for the same block.
    """
    net = pool.network
    size = 2 ** (32 - pool.spec.block_size)
    count = net.num_addresses // size
    first = int.from_bytes(hashlib.sha256(start_from.encode()).digest()[:8], "big") % count
    base = int(net.network_address)
    for i in range(count):
        index = (first + i) % count
        yield f"{ipaddress.IPv4Address(base + index * size)}/{pool.spec.block_size}"
