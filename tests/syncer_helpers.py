"""Following a Syncer (or typha's client) in a test: the stream it gave and the view it implies."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

from datastore.kv import KVStore
from datastore.syncer import InSync, Update, UpdateSource


class Consumer:
    """Collects a Syncer's stream and keeps the view it implies."""

    def __init__(self) -> None:
        self.items: list[Update | InSync] = []
        self.view: dict[str, bytes] = {}

    def feed(self, item: Update | InSync) -> None:
        self.items.append(item)
        if isinstance(item, Update):
            if item.value is None:
                assert item.key in self.view, f"delete of {item.key} that was never delivered"
                del self.view[item.key]
            else:
                self.view[item.key] = item.value

    def revisions(self, key: str) -> list[int]:
        return [i.revision for i in self.items if isinstance(i, Update) and i.key == key]

    def in_syncs(self) -> int:
        return sum(isinstance(i, InSync) for i in self.items)


@contextlib.asynccontextmanager
async def running(syncer: UpdateSource) -> AsyncIterator[Consumer]:
    consumer = Consumer()

    async def consume() -> None:
        async for item in syncer.updates():
            consumer.feed(item)

    task = asyncio.create_task(consume())
    try:
        yield consumer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(condition: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> float:
    """Seconds it took; AssertionError naming ``what`` after ``timeout``."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not condition():
        if loop.time() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        await asyncio.sleep(0.02)
    return loop.time() - started


def etcd_view(kv: KVStore, prefixes: Sequence[str]) -> dict[str, bytes]:
    """What etcd holds under ``prefixes``: what a follower's view must come to."""
    return {item.key: item.value for prefix in prefixes for item in kv.list(prefix)[0]}
