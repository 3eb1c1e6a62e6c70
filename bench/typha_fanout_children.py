"""bench.typha_fanout's child processes: the client processes (typha, raw, bare and direct clients) and
the bare server that is the fan-out's baseline."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.typha_fanout_common import (
    DIRECT_THREADS,
    FELIX_PREFIXES,
    MARKER,
    YIELD_EVERY,
    Mode,
    memory_kb,
    raise_fd_limit,
    sent_at,
)
from datastore.config import DatastoreConfig
from datastore.etcd import EtcdKV
from datastore.keys import SyncerType
from datastore.syncer import InSync, Syncer, UpdateSource
from datastore.version import VERSION
from typha import protocol
from typha.client import TyphaSyncer
from typha.config import TyphaClientSettings
from typha.protocol import ClientHello, Kind
from typha.server import WRITE_HIGH_WATER

# -- the client processes --------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    mode: Mode
    index: int
    clients: int
    address: str = ""  # host:port of typha or the bare server
    etcd_url: str = ""
    tag: str = ""  # the write phase's tag ("" if none)
    writes: int = 0  # tagged writes each client should receive
    keys: int = 0  # keys each client's map should hold at the end
    expect_bytes: int = 0  # what the bare server sends each client
    probe: bool = False  # a client in a process of its own, reported apart


@dataclass
class ClientState:
    synced_at: float | None = None
    arrivals: list[tuple[float, bytes]] = field(default_factory=list)  # (time.time(), value)
    view: dict[str, bytes] | None = None
    source: UpdateSource | None = None
    error: str | None = None

    def latencies(self, tag: bytes) -> list[float]:
        """Seconds from each tagged write to its arrival here."""
        return [
            received - sent for received, value in self.arrivals if (sent := sent_at(value, tag)) is not None
        ]


def _report(event: str, **data: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **data}) + "\n")
    sys.stdout.flush()


async def _follow(source: UpdateSource, job: Job, state: ClientState) -> None:
    """Keep the full map the Syncer interface gives; time the tagged writes after the first in-sync."""
    view = state.view = {}
    state.source = source
    # The write time is read out of each value after the run: the clock is read here, and
    # parsing it in the loop would be a fifth of these clients' cost per update.
    marker = MARKER + job.tag.encode() + b":" if job.tag else None
    arrivals = state.arrivals
    consumed = 0
    async for item in source.updates():
        consumed += 1
        if consumed % YIELD_EVERY == 0:
            # As if each client had its own process: a backlog of buffered frames is not worked
            # through in one step while the other clients (and this one's pinger) wait.
            await asyncio.sleep(0)
        if isinstance(item, InSync):
            if state.synced_at is None:
                state.synced_at = time.time()
            continue
        if item.value is None:
            view.pop(item.key, None)
            continue
        view[item.key] = item.value
        if marker is not None and state.synced_at is not None and marker in item.value:
            arrivals.append((time.time(), item.value))


async def _raw_typha(job: Job, name: str, state: ClientState) -> None:
    """typha's protocol with nothing decoded but pings: a client costing typha what any does."""
    host, _, port = job.address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 22)
    try:
        writer.write(ClientHello(name, str(SyncerType.FELIX), VERSION).frame())
        while True:
            length, kind, flags = protocol.HEADER.unpack(await reader.readexactly(protocol.HEADER.size))
            body = await reader.readexactly(length)
            if kind == Kind.IN_SYNC and state.synced_at is None:
                state.synced_at = time.time()
            elif kind == Kind.PING:
                writer.write(protocol.pong(protocol.decode(flags, body)))
            elif kind == Kind.GOODBYE:
                raise protocol.parse_goodbye(protocol.decode(flags, body))
    finally:
        writer.close()


async def _bare(job: Job, state: ClientState) -> None:
    host, _, port = job.address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 22)
    got = 0
    try:
        while got < job.expect_bytes:
            chunk = await reader.read(1 << 20)
            if not chunk:
                raise ConnectionError(f"the bare server closed after {got} of {job.expect_bytes} bytes")
            got += len(chunk)
        state.synced_at = time.time()
    finally:
        writer.close()


async def _client(job: Job, n: int, state: ClientState, kv: EtcdKV | None) -> None:
    name = f"bench-{job.index}-{n}"
    try:
        if job.mode == "typha":
            settings = TyphaClientSettings(typha_addrs=(job.address,))
            await _follow(TyphaSyncer(settings, SyncerType.FELIX, name), job, state)
        elif job.mode == "direct":
            assert kv is not None
            await _follow(Syncer(kv, FELIX_PREFIXES), job, state)
        elif job.mode == "raw":
            await _raw_typha(job, name, state)
        else:
            await _bare(job, state)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        state.error = f"{type(exc).__name__}: {exc}"


def _commands(loop: asyncio.AbstractEventLoop, go: asyncio.Event, stop: asyncio.Event) -> None:
    """The parent's commands on stdin ("go", "stop"; end of input is a stop), on a thread."""
    for line in sys.stdin:
        if line.strip() == "go":
            loop.call_soon_threadsafe(go.set)
        elif line.strip() == "stop":
            break
    loop.call_soon_threadsafe(stop.set)


async def _worker(job: Job) -> None:
    loop = asyncio.get_running_loop()
    go, stop = asyncio.Event(), asyncio.Event()
    threading.Thread(target=_commands, args=(loop, go, stop), daemon=True).start()
    kv = None
    if job.mode == "direct":
        loop.set_default_executor(ThreadPoolExecutor(max_workers=DIRECT_THREADS))
        kv = EtcdKV(DatastoreConfig(etcd_endpoints=(job.etcd_url,)))
    states = [ClientState() for _ in range(job.clients)]
    _report("ready", pid=os.getpid())
    await go.wait()
    tasks = [asyncio.create_task(_client(job, n, states[n], kv)) for n in range(job.clients)]
    synced = complete = False
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)
        if not synced and all(s.synced_at is not None or s.error for s in states):
            synced = True
            _report("synced", times=[s.synced_at for s in states])
        if (
            job.writes
            and synced
            and not complete
            and all(len(s.arrivals) >= job.writes or s.error for s in states)
        ):
            complete = True
            _report("complete")
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=30)
    errors = [s.error for s in states if s.error]
    views = [len(s.view) for s in states if s.view is not None]
    resyncs = sum(s.source.resyncs for s in states if s.source is not None)
    times = os.times()
    _report(
        "result",
        synced=[s.synced_at for s in states],
        latencies=[round(x, 6) for s in states for x in s.latencies(job.tag.encode())],
        received=sum(len(s.arrivals) for s in states),
        resyncs=resyncs,
        errors=len(errors),
        first_errors=sorted(set(errors))[:3],
        views_ok=sum(1 for v in views if v == job.keys),
        views=len(views),
        cpu=times.user + times.system,
        hwm_kb=memory_kb(os.getpid()).get("VmHWM", 0),
    )
    if kv is not None:
        kv.close()


def worker_main(spec: str) -> None:
    """A client process: its stdout carries reports to the parent, its stderr is its log."""
    raise_fd_limit()
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    job = Job(**json.loads(spec))
    # Hundreds of hosts' clients in one process hold hundreds of copies of the view: the cyclic
    # collector's full passes over them cost more CPU than the clients' own work and stall the
    # shared event loop for seconds. A host holds one copy; its collector is no such cost.
    gc.disable()
    try:
        asyncio.run(_worker(job))
    except BaseException:
        _report("error", trace=traceback.format_exc())
        raise


# -- the bare server -------------------------------------------------------------------


def split_frames(data: bytes) -> list[bytes]:
    frames, at = [], 0
    while at < len(data):
        length = protocol.HEADER.unpack_from(data, at)[0]
        end = at + protocol.HEADER.size + length
        frames.append(data[at:end])
        at = end
    return frames


async def _bare_server(frames: list[bytes]) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # As typha writes a snapshot: frame by frame, waiting for the socket above the same mark.
        writer.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        try:
            for chunk in frames:
                writer.write(chunk)
                if writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
                    await writer.drain()
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    _report("ready", port=server.sockets[0].getsockname()[1], pid=os.getpid())
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes it
    server.close()


def bare_server_main(path: str) -> None:
    raise_fd_limit()
    asyncio.run(_bare_server(split_frames(Path(path).read_bytes())))
