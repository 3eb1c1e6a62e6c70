"""typha's side facing etcd: its one Syncer feeds a cache per syncer type, and the clients' writers
wait here for the log to grow.  It also keeps what typha needs for itself: the Nodes (for its
fair share) and the other typhas' registrations."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from datastore.keys import KeyLayout, SyncerType
from datastore.models import Node
from datastore.syncer import InSync, Update, UpdateSource
from typha.cache import SyncerCache
from typha.metrics import TyphaMetrics

log = logging.getLogger("typha")


class DatastoreFeed:
    def __init__(self, layout: KeyLayout, metrics: TyphaMetrics, clock: Callable[[], float]) -> None:
        self.layout = layout
        self.metrics = metrics
        self.clock = clock
        self.caches = {t: SyncerCache(t.prefixes(layout.prefix)) for t in SyncerType}
        self.in_sync = asyncio.Event()
        self.nodes: set[str] = set()
        self.peers: dict[str, bytes] = {}  # registration key -> value, this typha's included
        self._grown = {t: asyncio.Event() for t in SyncerType}
        self._pending: list[Update] = []

    def prefixes(self) -> list[str]:
        """What typha's own Syncer follows: everything its clients need, and the registrations."""
        wanted = {p for cache in self.caches.values() for p in cache.prefixes} | {self.layout.typhas}
        return sorted(wanted)

    async def pump(self, source: UpdateSource) -> None:
        """Feed the caches for ever: the updates of one datastore batch are logged together, once
        the Syncer has yielded them all (they come without a turn of the loop in between)."""
        loop = asyncio.get_running_loop()
        async for item in source.updates():
            if isinstance(item, InSync):
                self._flush()
                for cache in self.caches.values():
                    cache.synced_at(item.revision)
                if not self.in_sync.is_set():
                    log.info("in sync with the datastore at revision %d", item.revision)
                self.in_sync.set()
                continue
            self._note(item)
            if not self._pending:
                loop.call_soon(self._flush)
            self._pending.append(item)
        raise RuntimeError("the Syncer stopped")

    async def grown(self, syncer: SyncerType) -> None:
        """Until the next frame is logged for ``syncer``."""
        await self._grown[syncer].wait()

    def _note(self, update: Update) -> None:
        if update.key.startswith(self.layout.typhas):
            if update.value is None:
                self.peers.pop(update.key, None)
            else:
                self.peers[update.key] = update.value
        elif update.key.startswith(self.layout.kind_prefix(Node)):
            if update.value is None:
                self.nodes.discard(update.key)
            else:
                self.nodes.add(update.key)

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        now, synced = self.clock(), self.in_sync.is_set()
        self.metrics.updates_total.inc(len(batch))
        used = False
        for syncer, cache in self.caches.items():
            entries = cache.apply(batch, now, logged=synced)
            self.metrics.cache_size.labels(syncer).set(len(cache.values))
            for entry in entries:
                used = True
                self.metrics.kvs_per_msg.observe(entry.kvs)
            if entries:
                self._grown[syncer].set()
                self._grown[syncer] = asyncio.Event()
        if synced and not used:
            self.metrics.updates_skipped.inc(len(batch))
