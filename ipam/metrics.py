"""IPAM metrics under Calico's names, computed from the datastore at scrape time.

Register ``IPAMCollector`` in a prometheus_client registry; every scrape reads the
IPAM state once.  felid-node serves it for its own node (``node=``): the series of
all nodes together partition the cluster's, so sums across nodes are right.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ipam.inventory import Inventory


class IPAMCollector(Collector):
    def __init__(
        self,
        inventory: Callable[[], Inventory],
        *,
        node: str | None = None,
        reclaimed: Callable[[], int] | None = None,
    ) -> None:
        """``node``: only its allocations and blocks; ``reclaimed``: a garbage collector's count."""
        self._inventory = inventory
        self._node = node
        self._reclaimed = reclaimed

    def collect(self) -> Iterator[Metric]:
        inv = self._inventory()
        in_use: Counter[tuple[str, str]] = Counter()
        borrowed: Counter[tuple[str, str]] = Counter()
        blocks: Counter[tuple[str, str]] = Counter()
        mine = self._node
        for cidr, block in inv.blocks.items():
            pool = inv.pool_of(cidr)
            pool_name = pool.name if pool else ""
            if mine in (None, block.host):
                blocks[(pool_name, block.host or "")] += 1
            for _, attr in block.used():
                node = attr.attrs.get("node", "")
                if mine not in (None, node):
                    continue
                in_use[(pool_name, node)] += 1
                if node != block.host:
                    borrowed[(pool_name, node)] += 1
        labels = ["ippool", "node"]
        for name, doc, counts in (
            ("ipam_allocations_in_use", "Addresses allocated, by pool and node.", in_use),
            ("ipam_allocations_borrowed", "Addresses a node uses from another node's block.", borrowed),
            ("ipam_blocks", "Blocks, by pool and the node they are affine to.", blocks),
        ):
            family = GaugeMetricFamily(name, doc, labels=labels)
            for key, value in sorted(counts.items()):
                family.add_metric(list(key), value)
            yield family
        size = GaugeMetricFamily("ipam_ippool_size", "Addresses in the pool.", labels=["ippool"])
        for pool in inv.pools:
            size.add_metric([pool.name], pool.network.num_addresses)
        yield size
        if self._reclaimed is not None:
            yield CounterMetricFamily(
                "ipam_allocations_gc_reclamations",
                "Leaked addresses released by the garbage collector.",
                value=self._reclaimed(),
            )
