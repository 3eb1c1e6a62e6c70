"""Syncer: a snapshot of some prefixes, then every change after it, in order.

The consumer sees ``Update`` items and an ``InSync`` marker after each
snapshot.  On any break (compacted revision, lost connection, etcd restarted)
the Syncer takes a fresh snapshot and emits only the difference from what the
consumer already has, deletions included, so the consumer's view is never
missing an update nor given one twice.  A key's updates always carry strictly
increasing revisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn, Protocol

from datastore.errors import Compacted, DatastoreError, Unavailable
from datastore.kv import KVStore, WatchEvent
from datastore.updates import InSync, KeyState, KnownKeys, SyncItem, Update

log = logging.getLogger(__name__)


_Batch = Sequence[WatchEvent] | Exception
__all__ = [
    "ChangedKeys",
    "Changes",
    "InSync",
    "KeyState",
    "KnownKeys",
    "SyncItem",
    "Syncer",
    "Update",
    "UpdateSource",
    "follow",
]


class Syncer:
    def __init__(
        self,
        kv: KVStore,
        prefixes: Sequence[str],
        *,
        retry_delay: float = 0.2,
        max_retry_delay: float = 1.0,
    ) -> None:
        """Retries after a break back off from ``retry_delay`` to ``max_retry_delay``: kept short, so an
        agent is back in sync within about a second of etcd's return after any outage (one failed
        connection a second costs a down etcd nothing)."""
        if not prefixes:
            raise ValueError("a Syncer needs at least one prefix")
        self._kv = kv
        self._prefixes = tuple(prefixes)
        # One watch on the common root keeps every change in one revision-ordered
        # stream; events outside the wanted prefixes are filtered out.
        self._watch_root = os.path.commonprefix(list(self._prefixes))  # noqa: RUF071 - key strings, not paths
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        self._known = KnownKeys()
        self.resyncs = 0

    def _wanted(self, key: str) -> bool:
        return key.startswith(self._prefixes)

    async def updates(self) -> AsyncIterator[SyncItem]:
        delay = self._retry_delay
        while True:
            queue: asyncio.Queue[_Batch] = asyncio.Queue()
            cancel: Callable[[], None] | None = None
            try:
                revision, snapshot = await asyncio.to_thread(self._snapshot)
                for item in self._known.diff(snapshot, revision):
                    yield item
                yield InSync(revision)
                cancel = await asyncio.to_thread(
                    self._kv.watch, self._watch_root, revision + 1, _feeder(queue)
                )
                delay = self._retry_delay
                while True:
                    batch = await queue.get()
                    if isinstance(batch, Exception):
                        raise batch
                    for event in batch:
                        if not self._wanted(event.key):
                            continue
                        update = self._known.apply(event.key, event.value, event.mod_revision)
                        if update is not None:
                            yield update
            except (Compacted, Unavailable) as exc:
                log.warning("datastore watch broken (%s); resyncing from a fresh snapshot", exc)
            except DatastoreError as exc:
                log.error("datastore error (%s); resyncing from a fresh snapshot", exc)
            finally:
                if cancel is not None:
                    await asyncio.to_thread(cancel)
            self.resyncs += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_retry_delay)

    def _snapshot(self) -> tuple[int, dict[str, KeyState]]:
        while True:
            revision: int | None = None
            found: dict[str, KeyState] = {}
            try:
                for prefix in self._prefixes:
                    items, revision = self._kv.list(prefix, revision)
                    found.update((kv.key, (kv.key, kv.value, kv.mod_revision)) for kv in items)
            except Compacted:
                continue  # compacted between two prefixes: read them all again
            assert revision is not None
            return revision, found


class UpdateSource(Protocol):
    """What felix and the bgp agent follow: the etcd ``Syncer`` or typha's client."""

    resyncs: int

    def updates(self) -> AsyncIterator[SyncItem]: ...


def _feeder(queue: asyncio.Queue[_Batch]) -> Callable[[Sequence[WatchEvent] | Exception], None]:
    """A watch callback (pyetcd's thread) that hands batches to the event loop."""
    loop = asyncio.get_running_loop()

    def feed(batch: Sequence[WatchEvent] | Exception) -> None:
        # RuntimeError: the loop has closed, nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, batch)

    return feed


@dataclass(frozen=True)
class Changes:
    """What woke a consumer: the keys applied since it last looked, and whether something else
    (an InSync, a timer, a kernel or BGP event) asked it to look again."""

    keys: frozenset[str]
    kicked: bool


class ChangedKeys:
    """What a consumer has yet to react to.  However many keys come in the meantime, ``wait``
    returns once: a consumer recomputes once per batch (an etcd watch response, a typha frame, or
    all that came while it was busy), never once per key."""

    def __init__(self) -> None:
        self._keys: set[str] = set()
        self._kicked = False
        self._woken = asyncio.Event()

    def note(self, key: str) -> None:
        self._keys.add(key)
        self._woken.set()

    def kick(self) -> None:
        self._kicked = True
        self._woken.set()

    async def wait(self) -> Changes:
        await self._woken.wait()
        self._woken.clear()
        changes = Changes(frozenset(self._keys), self._kicked)
        self._keys.clear()
        self._kicked = False
        return changes


async def follow(
    syncer: UpdateSource,
    apply: Callable[[str, bytes | None], None],
    in_sync: asyncio.Event,
    changes: ChangedKeys,
) -> NoReturn:
    """Feed the Syncer's updates to ``apply`` for ever (felix's and bgp's caches), noting each key
    in ``changes``; ``in_sync`` is set at the first InSync, and every InSync wakes the consumer
    (a resync may change nothing).  The Syncer ending is a failure."""
    async for item in syncer.updates():
        if isinstance(item, InSync):
            in_sync.set()
            changes.kick()
        else:
            apply(item.key, item.value)
            changes.note(item.key)
    raise RuntimeError("the Syncer stopped")
