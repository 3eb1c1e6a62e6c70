"""Following felid-typha from a test: many clients in one event loop, each keeping its view."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from datastore.keys import SyncerType
from datastore.kv import KVStore, Put
from datastore.syncer import InSync, Update
from typha import protocol
from typha.client import TyphaSyncer
from typha.config import TyphaClientSettings
from typha.streams import read_frame

NODES = "/felid/resources/v3/projectcalico.org/nodes/"
ENDPOINTS = "/felid/resources/v3/projectcalico.org/workloadendpoints/default/"
FELIX = SyncerType.FELIX


def record(i: int, **extra: Any) -> bytes:
    """A WorkloadEndpoint-sized value (about 200 bytes)."""
    return json.dumps(
        {
            "kind": "WorkloadEndpoint",
            "metadata": {"name": f"node--{i % 97}-k8s-pod--{i}-eth0", "namespace": "default"},
            "spec": {"node": f"node-{i % 97}", "ipNetworks": [f"10.244.{i // 256 % 256}.{i % 256}/32"]},
            **extra,
        }
    ).encode()


def load(kv: KVStore, items: Iterable[tuple[str, bytes]]) -> int:
    """Write ``items`` in transactions of 100; the last revision."""
    batch: list[Put] = []
    revision = 0
    for key, value in items:
        batch.append(Put(key, value))
        if len(batch) == 100:
            revision = kv.commit([], batch) or revision
            batch = []
    if batch:
        revision = kv.commit([], batch) or revision
    return revision


@dataclass
class Follower:
    """One client's view; the updates after its first in-sync are kept in order."""

    client: TyphaSyncer
    view: dict[str, bytes] = field(default_factory=dict)
    in_syncs: int = 0
    after: list[Update] = field(default_factory=list)
    removed_while_present: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def feed(self, item: Update | InSync) -> None:
        if isinstance(item, InSync):
            self.in_syncs += 1
            return
        if self.in_syncs:
            self.after.append(item)
        if item.value is None:
            if item.key not in self.view:
                self.removed_while_present.append(f"deletion of {item.key}, which was never delivered")
            self.view.pop(item.key, None)
            return
        self.view[item.key] = item.value
        if item.value.startswith(b"t="):
            self.latencies.append(time.time() - float(item.value[2:].split(b";")[0]))


def client(addresses: Sequence[str], name: str, syncer: SyncerType = FELIX, **kwargs: Any) -> TyphaSyncer:
    return TyphaSyncer(TyphaClientSettings(typha_addrs=tuple(addresses)), syncer, name, **kwargs)


@contextlib.asynccontextmanager
async def following(clients: Sequence[TyphaSyncer]) -> AsyncIterator[list[Follower]]:
    followers = [Follower(c) for c in clients]

    async def consume(follower: Follower) -> None:
        async for item in follower.client.updates():
            follower.feed(item)

    tasks = [asyncio.create_task(consume(f)) for f in followers]
    try:
        yield followers
    finally:
        for task in tasks:
            task.cancel()
        _, pending = await asyncio.wait(tasks, timeout=10)
        assert not pending, f"{len(pending)} client(s) ignored their cancellation"
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                raise AssertionError(f"a client failed: {task.exception()!r}")


async def raw_hello(
    address: str, *, protocols: Sequence[int] = protocol.PROTOCOL_VERSIONS, syncer: str = "felix"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int, dict[str, Any]]:
    """A hand-made client: connect, say hello, read the first answer."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(protocol.ClientHello("raw-client", syncer, "0.0.1", tuple(protocols)).frame())
    kind, body = await asyncio.wait_for(read_frame(reader), 10)
    return reader, writer, kind, body


def metric(text: str, name: str) -> float:
    """The sum of a metric's samples in Prometheus text (0 if absent)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total
