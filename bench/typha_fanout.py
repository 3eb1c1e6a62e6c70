"""Benchmark: felid-typha fanning one etcd Syncer out to 1,000 clients: ``python -m bench.typha_fanout``.

Run from the repository root (``.venv/bin/python -m bench.typha_fanout``; root is not needed).  It
starts its own etcd (Debian etcd-server) and felid-typha on loopback, and client processes
(``--workers`` of them, ``--clients`` spread over them, asyncio inside each), and measures in
one run, each figure beside a baseline from the same run:

1. fan-out of a ``--keys`` snapshot (Node, WorkloadEndpoint and IPAM affinity documents as
   felid writes them, under felix's syncer prefixes, loaded in transactions of 100 puts): the
   time from the clients starting until every one is in sync, each a ``TyphaSyncer`` keeping the
   full key -> value map, against a bare asyncio server writing the same encoded snapshot
   (``SyncerCache.snapshot(compressed=True).frames``) to the same number of sockets read by the
   same client processes, which only read the bytes (goal: all in sync < 20 s, bare/typha
   >= 0.5).  Also shown: typha with clients that only read its frames (the server alone), and
   as many direct etcd Syncers;
2. ``--rate`` writes/s for ``--duration`` s while the clients are connected: the delay from the
   etcd write (its wall-clock time is in the value) to its receipt at every client, p50 / p99,
   against one direct etcd Syncer alone (goal: p99 < 100 ms).  Also shown: one more TyphaSyncer
   in a process of its own (what typha delivers to a client whose event loop is not shared);
3. etcd's CPU seconds (utime + stime of its process) over that write phase and its watcher
   count (``etcd_debugging_mvcc_watcher_total``), with typha serving the clients and with each
   client a direct ``Syncer`` (one ``EtcdKV`` per client process, shared by its Syncers: still
   one etcd watch per client), same writes (goal: >= 20x less CPU with typha);
4. typha's RSS (VmRSS; VmHWM as the peak) with ``--rss-keys`` keys and the clients connected,
   against the same typha before any client came.  These clients read typha's frames without
   decoding them: 1,000 full maps of 50,000 keys would not fit in this machine's memory, and
   typha's side of a connection is the same either way.

typha runs with ``TYPHA_PINGINTERVAL=60`` (``--typha-ping-interval``; typha's default is 10 s), its other
slow-client settings at their defaults.  The reason: 1,000 clients on 2 cores share each client
process's event loop 250 ways, so a client's pinger gets its turn far later than on a host of its
own; at 10 s typha finds clients still working through their snapshot silent for twice the
interval, drops them as dead, and they reconnect into the same queue (thousands of drops a run).
Every drop that still happens is reported (``typha_connections_dropped_total``, typha's log).

Scaled down for a smoke test: ``python -m bench.typha_fanout --clients 100 --keys 2000 --quick``.
Logs (etcd, typha, every client process) stay in the directory printed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import queue
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from datastore.config import DatastoreConfig
from datastore.etcd import EtcdKV
from datastore.keys import IPAMKeys, KeyLayout, SyncerType
from datastore.kv import Put
from datastore.models import Node, WorkloadEndpoint
from datastore.models.ipam import AffinityState, affinity_json
from datastore.models.node import derived_vtep_mac
from datastore.store import encode
from datastore.syncer import InSync, Syncer, Update, UpdateSource
from datastore.version import VERSION
from lab.etcd import EtcdServer
from lab.typha import TyphaProcess
from typha import protocol
from typha.cache import SyncerCache
from typha.client import TyphaSyncer
from typha.config import TyphaClientSettings
from typha.protocol import ClientHello, Kind
from typha.server import WRITE_HIGH_WATER

PREFIX = "/felid"
FELIX_PREFIXES = SyncerType.FELIX.prefixes(PREFIX)
SENT_LABEL = "felid.bench/sent"  # a write's "<phase tag>:<time.time()>", in a WorkloadEndpoint label
MARKER = f'"{SENT_LABEL}":"'.encode()
PLACEHOLDER = b"@sent@"
TXN_PUTS = 100
# Threads of each client process's executor for its Syncers' blocking etcd calls: more are no
# faster (the GIL) and only race the client's 5 s deadlines.
DIRECT_THREADS = 2
YIELD_EVERY = 100  # updates a client consumes between two turns of its process's event loop
PING_INTERVAL = 60.0  # TYPHA_PINGINTERVAL for the benchmark's typha (typha's default is 10 s): see below
GOALS = {"sync": 20.0, "fanout": 0.5, "p99_ms": 100.0, "etcd_cpu": 20.0}

Mode = Literal["typha", "raw", "bare", "direct"]


def progress(message: str) -> None:
    print(f"# {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def percentile(values: Sequence[float], fraction: float) -> float:
    """``values`` must be sorted."""
    return values[min(len(values) - 1, round(fraction * (len(values) - 1)))]


# -- the records -----------------------------------------------------------------------


@dataclass(frozen=True)
class Records:
    items: list[tuple[str, bytes]]  # (key, value), every key under felix's prefixes
    targets: list[tuple[str, bytes]]  # WorkloadEndpoints the write phase rewrites: (key, template)

    @property
    def raw_bytes(self) -> int:
        return sum(len(k) + len(v) for k, v in self.items)


def _node(n: int) -> Node:
    name = f"node-{n:04d}"
    return Node.model_validate(
        {
            "metadata": {
                "name": name,
                "uid": hashlib.md5(name.encode()).hexdigest(),
                "creationTimestamp": "2024-05-01T09:00:00Z",
                "labels": {
                    "kubernetes.io/arch": "amd64",
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "topology.kubernetes.io/zone": f"zone-{n % 3}",
                },
            },
            "spec": {
                "bgp": {
                    "ipv4Address": f"198.18.{n // 250}.{n % 250 + 1}/15",
                    "asNumber": 64512,
                    "ipv4IPIPTunnelAddr": f"10.244.{n // 4}.{(n % 4) * 64}",
                },
                "ipv4VXLANTunnelAddr": f"10.244.{n // 4}.{(n % 4) * 64 + 1}",
                "vxlanTunnelMACAddr": derived_vtep_mac(name),
            },
        }
    )


def _endpoint(i: int, node: str, sent: str | None = None) -> WorkloadEndpoint:
    namespace = f"ns-{i % 20}"
    app = f"app-{i % 50}"
    template = hashlib.sha256(f"{app}-{namespace}".encode()).hexdigest()[:10]
    pod = f"{app}-{template}-{i:05d}"
    container = hashlib.sha256(f"container-{i}".encode()).hexdigest()
    labels = {
        "app": app,
        "pod-template-hash": template,
        "projectcalico.org/namespace": namespace,
        "projectcalico.org/orchestrator": "k8s",
        "projectcalico.org/serviceaccount": "default",
    }
    if sent is not None:
        labels[SENT_LABEL] = sent
    return WorkloadEndpoint.model_validate(
        {
            "metadata": {"name": f"{node}-k8s-{pod}-eth0", "namespace": namespace, "labels": labels},
            "spec": {
                "orchestrator": "k8s",
                "workload": pod,
                "node": node,
                "containerID": container,
                "pod": pod,
                "endpoint": "eth0",
                "interfaceName": f"cali{container[:11]}",
                "ipNetworks": [f"10.{244 + i // 65536}.{i // 256 % 256}.{i % 256}/32"],
                "mac": derived_vtep_mac(container),
                "profiles": [f"kns.{namespace}", f"ksa.{namespace}.default"],
            },
        }
    )


def make_records(count: int) -> Records:
    """``count`` keys: a Node and its block affinity per 50, WorkloadEndpoints for the rest."""
    layout, ipam = KeyLayout(PREFIX), IPAMKeys(PREFIX)
    nodes = max(1, count // 50)
    items: list[tuple[str, bytes]] = []
    for n in range(nodes):
        node = _node(n)
        items.append((layout.key_of(node), encode(node)))
        cidr = f"10.244.{n // 4}.{(n % 4) * 64}/26"
        items.append((ipam.affinity(node.name, cidr), affinity_json(AffinityState.CONFIRMED)))
    targets = []
    for i in range(count - len(items)):
        endpoint = _endpoint(i, f"node-{i % nodes:04d}")
        key = layout.key_of(endpoint)
        items.append((key, encode(endpoint)))
        template = encode(_endpoint(i, endpoint.spec.node, PLACEHOLDER.decode()))
        targets.append((key, template))
    return Records(items, targets)


def load(kv: EtcdKV, items: Sequence[tuple[str, bytes]]) -> None:
    for start in range(0, len(items), TXN_PUTS):
        kv.commit([], [Put(key, value) for key, value in items[start : start + TXN_PUTS]])


def snapshot_frames(kv: EtcdKV) -> tuple[tuple[bytes, ...], int]:
    """What typha sends a joining felix client, from what is in etcd: the compressed SNAPSHOT
    frames, and their size uncompressed."""
    cache = SyncerCache(FELIX_PREFIXES)
    updates = [
        Update(item.key, item.value, item.mod_revision)
        for prefix in FELIX_PREFIXES
        for item in kv.list(prefix)[0]
    ]
    updates.sort(key=lambda u: (u.revision, u.key))
    cache.apply(updates, time.monotonic())
    snapshot = cache.snapshot(compressed=True)
    return snapshot.frames, snapshot.raw_bytes


def sent_at(value: bytes, tag: bytes) -> float | None:
    """The write time in a value this phase wrote (its tag), else None."""
    start = value.find(MARKER)
    if start < 0:
        return None
    start += len(MARKER)
    end = value.find(b'"', start)
    written, _, stamp = value[start:end].partition(b":")
    return float(stamp) if written == tag else None


# -- /proc and /metrics ----------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid``, in kB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(rest.split()[0])
    return out


def metric_lines(text: str, name: str) -> dict[str, float]:
    """Samples of ``name`` in Prometheus text: labels (``{...}`` or "") -> value."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            head, _, value = line.rpartition(" ")
            rest = head[len(name) :]
            if rest == "" or rest.startswith("{"):
                out[rest] = float(value)
    return out


def etcd_watch_metrics(etcd: EtcdServer) -> dict[str, float]:
    with urllib.request.urlopen(f"{etcd.url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    names = (
        "etcd_debugging_mvcc_watcher_total",
        "etcd_debugging_mvcc_watch_stream_total",
        "etcd_debugging_mvcc_slow_watcher_total",
    )
    return {n.removeprefix("etcd_debugging_mvcc_"): metric_lines(text, n).get("", -1.0) for n in names}


def histogram_quantiles(before: str, after: str, name: str, fractions: Sequence[float]) -> list[float]:
    """Upper bucket bounds holding each fraction of the observations made between two scrapes."""

    def buckets(text: str) -> dict[float, float]:
        found = metric_lines(text, f"{name}_bucket")
        return {float(k.split('le="')[1].split('"')[0]): v for k, v in found.items()}

    first, last = buckets(before), buckets(after)
    bounds = sorted(last)
    counts = [last[b] - first.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    out = []
    for fraction in fractions:
        bound = next((b for b, c in zip(bounds, counts, strict=True) if total and c >= fraction * total), 0.0)
        out.append(bound)
    return out


def log_problems(path: Path) -> tuple[int, list[str]]:
    """Warnings and errors in a log: how many, and the first few."""
    if not path.exists():
        return 0, []
    found = [
        line.strip()
        for line in path.read_text(errors="replace").splitlines()
        if " WARNING " in line or " ERROR " in line or "Traceback" in line
    ]
    return len(found), [line[:240] for line in found[:4]]


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
    received: int = 0
    latencies: list[float] = field(default_factory=list)
    view: dict[str, bytes] | None = None
    source: UpdateSource | None = None
    error: str | None = None


def _report(event: str, **data: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **data}) + "\n")
    sys.stdout.flush()


async def _follow(source: UpdateSource, job: Job, state: ClientState) -> None:
    """Keep the full map the Syncer interface gives; time the tagged writes after the first in-sync."""
    view = state.view = {}
    state.source = source
    tag = job.tag.encode()
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
        if tag and state.synced_at is not None:
            sent = sent_at(item.value, tag)
            if sent is not None:
                state.latencies.append(time.time() - sent)
                state.received += 1


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
            and all(s.received >= job.writes or s.error for s in states)
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
        latencies=[round(x, 6) for s in states for x in s.latencies],
        received=sum(s.received for s in states),
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


# -- the parent's side -----------------------------------------------------------------


class Child:
    """A child process of this module (a client process or the bare server), its reports on stdout."""

    def __init__(
        self, args: list[str], log: Path, reports: queue.Queue[tuple[int, dict[str, Any]]], index: int
    ) -> None:
        self.index = index
        self.log = log
        with open(log, "ab") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bench.typha_fanout", *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                cwd=Path(__file__).resolve().parent.parent,
            )
        self._reader = threading.Thread(target=self._read, args=(reports,), daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self, reports: queue.Queue[tuple[int, dict[str, Any]]]) -> None:
        out = self.process.stdout
        assert out is not None
        for line in out:
            with contextlib.suppress(ValueError):
                reports.put((self.index, json.loads(line)))
        reports.put((self.index, {"event": "eof"}))

    def send(self, command: str) -> None:
        stdin = self.process.stdin
        with contextlib.suppress(OSError, ValueError):
            if stdin is not None:
                stdin.write(command + "\n")
                stdin.flush()

    def close(self, timeout: float = 30.0) -> None:
        """End of input (a stop), then SIGKILL by PID if it has not exited in time."""
        with contextlib.suppress(OSError, ValueError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Children:
    """Every child started, so that each is ended whatever happens."""

    def __init__(self) -> None:
        self.all: list[Child] = []

    def start(
        self, args: list[str], log: Path, reports: queue.Queue[tuple[int, dict[str, Any]]], index: int
    ) -> Child:
        child = Child(args, log, reports, index)
        self.all.append(child)
        return child

    def close(self) -> None:
        for child in self.all:
            if child.process.poll() is None:
                child.close(timeout=5)


class ChildFailed(RuntimeError):
    pass


def expect(
    reports: queue.Queue[tuple[int, dict[str, Any]]],
    children: Sequence[Child],
    event: str,
    timeout: float,
    tick: Callable[[], None] | None = None,
) -> dict[int, dict[str, Any]]:
    """``event`` from every child (by index), or what came of it before the timeout."""
    got: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    by_index = {c.index: c for c in children}
    while len(got) < len(children) and time.monotonic() < deadline:
        if tick is not None:
            tick()
        try:
            index, report = reports.get(timeout=0.1)
        except queue.Empty:
            continue
        if report["event"] == event:
            got[index] = report
        elif report["event"] in ("error", "eof") and index not in got:
            problem = report.get("trace") or f"exited ({by_index[index].process.poll()})"
            raise ChildFailed(f"client process {index} failed: {problem} (see {by_index[index].log})")
    return got


@dataclass
class Window:
    """A write phase: the writes, and the CPU each watched process used over it."""

    writes: int = 0
    achieved_rate: float = 0.0
    seconds: float = 0.0  # from the first write until every client had every write (or the timeout)
    drained: bool = False
    cpu: dict[str, float] = field(default_factory=dict)
    watch: dict[str, float] = field(default_factory=dict)


@dataclass
class Phase:
    name: str
    clients: int
    sync_seconds: float | None = None
    synced: int = 0
    latencies: list[float] = field(default_factory=list)
    received: int = 0
    expected: int = 0
    resyncs: int = 0
    errors: int = 0
    first_errors: list[str] = field(default_factory=list)
    views_ok: int = 0
    views: int = 0
    client_hwm_mb: float = 0.0
    window: Window | None = None
    sync_cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds from the start to all in sync
    probe: list[float] = field(default_factory=list)  # the probe client's write -> receipt delays
    probe_received: int = 0
    failed: str | None = None
    log_problems: int = 0
    log_samples: list[str] = field(default_factory=list)

    def quantiles_ms(self, probe: bool = False) -> tuple[float, float, float]:
        """p50, p99 and max of the write -> receipt delays (the probe's), in ms."""
        ordered = sorted(self.probe if probe else self.latencies)
        if not ordered:
            return float("nan"), float("nan"), float("nan")
        return 1000 * percentile(ordered, 0.5), 1000 * percentile(ordered, 0.99), 1000 * ordered[-1]

    def client_cpu(self, cpu: dict[str, float]) -> float:
        return sum(v for k, v in cpu.items() if k.startswith("client"))


@dataclass(frozen=True)
class WritePlan:
    kv: EtcdKV
    targets: list[tuple[str, bytes]]
    rate: float
    count: int
    tag: str


def write(plan: WritePlan, midway: Callable[[], None]) -> float:
    """``plan.count`` single-put transactions at ``plan.rate``/s, each value carrying its wall-clock
    time; the rate achieved."""
    started = time.monotonic()
    for i in range(plan.count):
        delay = started + i / plan.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        key, template = plan.targets[i % len(plan.targets)]
        value = template.replace(PLACEHOLDER, f"{plan.tag}:{time.time():.6f}".encode())
        plan.kv.commit([], [Put(key, value)])
        if i == plan.count // 2:
            midway()
    return plan.count / max(time.monotonic() - started, 1e-9)


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    children: Children = field(default_factory=Children)

    def jobs(self, mode: Mode, clients: int, **common: Any) -> list[Job]:
        workers = max(1, min(self.args.workers, clients))
        shares = [clients // workers + (1 if i < clients % workers else 0) for i in range(workers)]
        return [Job(mode=mode, index=i, clients=n, **common) for i, n in enumerate(shares)]

    def run(
        self,
        name: str,
        jobs: list[Job],
        *,
        sync_timeout: float,
        writes: WritePlan | None = None,
        watched: dict[str, int] | None = None,
        etcd: EtcdServer | None = None,
        tick: Callable[[], None] | None = None,
        after_sync: Callable[[], None] | None = None,
    ) -> Phase:
        """Start the client processes, let them go at once, time them into sync, then write.  A
        probe job's client is reported apart (``Phase.probe``) and counts in no other figure.  A
        phase that fails is reported as failed, and the next one runs."""
        clients = sum(j.clients for j in jobs if not j.probe)
        phase = Phase(name, clients)
        try:
            self._run(phase, jobs, sync_timeout, writes, watched or {}, etcd, tick, after_sync)
        except (ChildFailed, OSError, RuntimeError, KeyError) as exc:
            progress(f"{name} failed: {exc}")
            phase.failed = str(exc)[:400]
        return phase

    def _run(  # noqa: PLR0917 - the options of run(), passed on
        self,
        phase: Phase,
        jobs: list[Job],
        sync_timeout: float,
        writes: WritePlan | None,
        watched: dict[str, int],
        etcd: EtcdServer | None,
        tick: Callable[[], None] | None,
        after_sync: Callable[[], None] | None,
    ) -> None:
        reports: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
        probes = {j.index for j in jobs if j.probe}
        name, clients = phase.name, phase.clients
        progress(f"{name}: starting {len(jobs)} client processes, {clients} clients")
        children = [
            self.children.start(
                ["--worker", json.dumps(asdict(job))],
                self.work / f"clients-{name}-{job.index}.log",
                reports,
                job.index,
            )
            for job in jobs
        ]
        try:
            ready = expect(reports, children, "ready", 120)
            if len(ready) < len(children):
                raise ChildFailed(f"{name}: only {len(ready)} of {len(children)} client processes started")
            pids = {**(watched or {}), **{f"client process {c.index}": c.pid for c in children}}
            before = {what: cpu_seconds(pid) for what, pid in pids.items()}
            started = time.time()
            for child in children:
                child.send("go")
            synced = expect(reports, children, "synced", sync_timeout, tick)
            phase.sync_cpu = {what: cpu_seconds(pid) - before[what] for what, pid in pids.items()}
            times = [
                t for index, report in synced.items() if index not in probes for t in report["times"] if t
            ]
            phase.synced = len(times)
            if len(synced) == len(children) and len(times) == clients:
                phase.sync_seconds = max(times) - started
                progress(f"{name}: {clients} clients in sync in {phase.sync_seconds:.2f}s")
            else:
                progress(f"{name}: only {len(times)} of {clients} clients in sync after {sync_timeout:.0f}s")
            if after_sync is not None:
                after_sync()
            if writes is not None and phase.synced:  # those not in sync yet catch up from the log
                phase.window = self._write_phase(
                    plan=writes,
                    reports=reports,
                    children=children,
                    watched=watched,
                    etcd=etcd,
                    tick=tick,
                )
                phase.expected = writes.count * clients
            for child in children:
                child.send("stop")
            results = expect(reports, children, "result", 120)
        finally:
            for child in children:
                child.close()
        for index, report in results.items():
            if index in probes:
                phase.probe = report["latencies"]
                phase.probe_received = report["received"]
                phase.resyncs += report["resyncs"]
                continue
            phase.latencies += report["latencies"]
            phase.received += report["received"]
            phase.resyncs += report["resyncs"]
            phase.errors += report["errors"]
            phase.first_errors += report["first_errors"]
            phase.views_ok += report["views_ok"]
            phase.views += report["views"]
            phase.client_hwm_mb += report["hwm_kb"] / 1024
        for child in children:
            count, samples = log_problems(child.log)
            phase.log_problems += count
            phase.log_samples += samples[: max(0, 4 - len(phase.log_samples))]

    def _write_phase(
        self,
        *,
        plan: WritePlan,
        reports: queue.Queue[tuple[int, dict[str, Any]]],
        children: list[Child],
        watched: dict[str, int],
        etcd: EtcdServer | None,
        tick: Callable[[], None] | None,
    ) -> Window:
        window = Window(writes=plan.count)
        pids = {**watched, **{f"client process {c.index}": c.pid for c in children}}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}

        def midway() -> None:
            if etcd is not None:
                window.watch = etcd_watch_metrics(etcd)

        progress(f"writing {plan.count} values at {plan.rate:g}/s")
        started = time.monotonic()
        window.achieved_rate = write(plan, midway)
        drained = expect(reports, children, "complete", self.args.drain_timeout, tick)
        window.seconds = time.monotonic() - started
        window.drained = len(drained) == len(children)
        window.cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
        if etcd is not None:
            slow = etcd_watch_metrics(etcd).get("slow_watcher_total", -1.0)
            window.watch["slow_watcher_total_after"] = slow
        return window


@dataclass
class Figures:
    keys: int = 0
    record_bytes: float = 0.0
    snapshot_raw: int = 0
    snapshot_wire: int = 0
    snapshot_frames: int = 0
    phases: dict[str, Phase] = field(default_factory=dict)
    typha_rss_mb: dict[str, float] = field(default_factory=dict)
    typha_cpu_latency_ms: list[float] = field(default_factory=list)
    typha_drops: dict[str, float] = field(default_factory=dict)
    typha_logs: dict[str, tuple[int, list[str]]] = field(default_factory=dict)
    typha_exit: dict[str, int | None] = field(default_factory=dict)


@contextlib.contextmanager
def etcd_with(work: Path, name: str, records: Records) -> Iterator[tuple[EtcdServer, EtcdKV]]:
    # etcd's own heartbeat and election timing (100 ms / 1 s), not the lab's fast ones.
    etcd = EtcdServer(work / f"{name}.data", log_file=work / f"{name}.log", fast_election=False)
    etcd.start()
    kv: EtcdKV | None = None
    try:
        kv = EtcdKV(DatastoreConfig(etcd_endpoints=(etcd.url,)))
        started = time.monotonic()
        load(kv, records.items)
        progress(
            f"{name}: {len(records.items)} keys loaded in {time.monotonic() - started:.1f}s at {etcd.url}"
        )
        yield etcd, kv
    finally:
        if kv is not None:
            kv.close()
        etcd.stop()
        shutil.rmtree(work / f"{name}.data", ignore_errors=True)


@contextlib.contextmanager
def typha_on(
    work: Path, name: str, etcd: EtcdServer, figures: Figures, ping_interval: float
) -> Iterator[TyphaProcess]:
    log = work / f"{name}.log"
    # The other slow-client settings (TYPHA_MAXFALLBEHINDSECS, TYPHA_NEWCLIENTFALLBEHINDGRACEPERIOD) at
    # their defaults.
    typha = TyphaProcess(name, etcd.url, log, env={"TYPHA_PINGINTERVAL": f"{ping_interval:g}"})
    try:
        typha.start()
        typha.wait_ready(60)
        yield typha
        dropped = metric_lines(typha.metrics(), "typha_connections_dropped_total")
        figures.typha_drops.update({f"{name}{k}": v for k, v in dropped.items()})
    finally:
        figures.typha_exit[name] = typha.stop(30)  # SIGTERM, then SIGKILL to its group after 30 s
        figures.typha_logs[name] = log_problems(log)


def measure(args: argparse.Namespace, work: Path) -> Figures:
    figures = Figures(keys=args.keys)
    bench = Bench(args, work)
    count = round(args.rate * args.duration)
    try:
        records = make_records(args.keys)
        figures.record_bytes = sum(len(v) for _, v in records.items) / len(records.items)
        with etcd_with(work, "etcd", records) as (etcd, kv):
            etcd_pid = etcd.pid
            assert etcd_pid is not None
            frames, raw = snapshot_frames(kv)
            figures.snapshot_raw, figures.snapshot_wire = raw, sum(map(len, frames))
            figures.snapshot_frames = len(frames)
            snapshot_file = work / "snapshot.bin"
            snapshot_file.write_bytes(b"".join(frames))

            def plan(tag: str) -> WritePlan:
                return WritePlan(kv, records.targets, args.rate, count, tag)

            common: dict[str, Any] = {"etcd_url": etcd.url, "keys": len(records.items)}
            # 2's baseline: one direct Syncer, nothing else following etcd.
            figures.phases["direct-1"] = bench.run(
                "direct-1",
                [Job(mode="direct", index=0, clients=1, tag="base", writes=count, **common)],
                sync_timeout=60,
                writes=plan("base"),
                watched={"etcd": etcd_pid},
                etcd=etcd,
            )
            # 1's baseline: the same bytes from a bare server.
            figures.phases["bare"] = bare_phase(bench, snapshot_file, figures.snapshot_wire)
            with typha_on(work, "typha", etcd, figures, args.typha_ping_interval) as typha:
                assert typha.pid is not None
                typha_pid = typha.pid
                address = typha.address
                figures.phases["typha-raw"] = bench.run(
                    "typha-raw",
                    bench.jobs("raw", args.clients, address=address),
                    sync_timeout=args.sync_timeout,
                    watched={"server": typha_pid},
                )
                scrapes: list[str] = []
                rss: list[int] = []

                def sample() -> None:
                    rss.append(memory_kb(typha_pid).get("VmRSS", 0))

                jobs = bench.jobs("typha", args.clients, address=address, tag="typha", writes=count, **common)
                # One more TyphaSyncer, alone in its process: what typha delivers to a client whose event
                # loop is not shared with hundreds of others.
                probe = Job(
                    mode="typha",
                    index=len(jobs),
                    clients=1,
                    probe=True,
                    address=address,
                    tag="typha",
                    writes=count,
                    **common,
                )
                figures.phases["typha"] = bench.run(
                    "typha",
                    [*jobs, probe],
                    sync_timeout=args.sync_timeout,
                    writes=plan("typha"),
                    watched={"etcd": etcd_pid, "server": typha_pid},
                    etcd=etcd,
                    tick=sample,
                    after_sync=lambda: scrapes.append(typha.metrics()),
                )
                scrapes.append(typha.metrics())
                if len(scrapes) == 2:
                    figures.typha_cpu_latency_ms = [
                        1000 * q
                        for q in histogram_quantiles(
                            scrapes[0], scrapes[1], "typha_client_latency_secs", (0.5, 0.99)
                        )
                    ]
                figures.typha_rss_mb[f"{args.keys} keys, {args.clients} clients, max"] = (
                    max(rss, default=0) / 1024
                )
            figures.phases["direct"] = bench.run(
                "direct",
                bench.jobs("direct", args.clients, tag="direct", writes=count, **common),
                sync_timeout=args.direct_sync_timeout,
                writes=plan("direct"),
                watched={"etcd": etcd_pid},
                etcd=etcd,
                # A Syncer is in sync before its watch exists: the writes wait for every watch.
                after_sync=lambda: wait_watchers(etcd, args.clients, 300),
            )
        rss_phase(bench, args, figures)
    finally:
        bench.children.close()
    return figures


def wait_watchers(etcd: EtcdServer, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (found := etcd_watch_metrics(etcd)["watcher_total"]) < count:
        if time.monotonic() > deadline:
            progress(f"only {found:.0f} of {count} etcd watchers after {timeout:.0f}s; writing anyway")
            return
        time.sleep(0.2)
    progress(f"{found:.0f} etcd watchers")


def bare_phase(bench: Bench, snapshot_file: Path, size: int) -> Phase:
    reports: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
    server = bench.children.start(
        ["--bare-server", str(snapshot_file)], bench.work / "bare-server.log", reports, -1
    )
    try:
        ready = expect(reports, [server], "ready", 60)
        if not ready:
            raise ChildFailed("the bare server did not start")
        address = f"127.0.0.1:{ready[-1]['port']}"
        return bench.run(
            "bare",
            bench.jobs("bare", bench.args.clients, address=address, expect_bytes=size),
            sync_timeout=bench.args.sync_timeout,
            watched={"server": server.pid},
        )
    finally:
        server.close()


def rss_phase(bench: Bench, args: argparse.Namespace, figures: Figures) -> None:
    progress(f"rss: {args.rss_keys} keys")
    records = make_records(args.rss_keys)
    with (
        etcd_with(bench.work, "etcd-rss", records) as (etcd, _kv),
        typha_on(bench.work, "typha-rss", etcd, figures, args.typha_ping_interval) as typha,
    ):
        pid = typha.pid
        assert pid is not None
        time.sleep(2)
        idle = memory_kb(pid)
        figures.typha_rss_mb[f"{args.rss_keys} keys, no client"] = idle["VmRSS"] / 1024
        peak: list[int] = [idle["VmRSS"]]

        def sample() -> None:
            peak.append(memory_kb(pid)["VmRSS"])

        def settled() -> None:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                sample()
                time.sleep(0.1)
            now = memory_kb(pid)
            figures.typha_rss_mb[f"{args.rss_keys} keys, {args.clients} clients"] = now["VmRSS"] / 1024
            figures.typha_rss_mb[f"{args.rss_keys} keys, {args.clients} clients, peak (VmHWM)"] = (
                now["VmHWM"] / 1024
            )

        figures.phases["typha-rss"] = bench.run(
            "typha-rss",
            bench.jobs("raw", args.clients, address=typha.address),
            sync_timeout=args.sync_timeout,
            tick=sample,
            after_sync=settled,
        )


# -- the report ------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def row(*cells: str) -> None:
    print("| " + " | ".join(cells) + " |")


def secs(phase: Phase) -> str:
    if phase.sync_seconds is None:
        return f"{phase.synced}/{phase.clients} in sync"
    return f"{phase.sync_seconds:.2f} s"


def report_fanout(n: int, p: dict[str, Phase]) -> None:
    typha, bare, raw, direct = p["typha"], p["bare"], p["typha-raw"], p["direct"]
    fan = ratio(bare.sync_seconds, typha.sync_seconds)
    in_time = typha.sync_seconds is not None and typha.sync_seconds < GOALS["sync"]
    row(
        f"1. start -> all {n} TyphaSyncer clients in sync",
        secs(typha),
        f"bare server {secs(bare)}",
        f"bare/typha {fmt(fan)}",
        f"< {GOALS['sync']:g} s: {verdict(in_time)}; "
        f">= {GOALS['fanout']}: {verdict(fan is not None and fan >= GOALS['fanout'])}",
    )
    row(
        "same, clients only reading typha's frames",
        secs(raw),
        f"bare server {secs(bare)}",
        f"bare/typha {fmt(ratio(bare.sync_seconds, raw.sync_seconds))}",
        "(typha's side alone)",
    )
    row(
        f"same, {n} direct etcd Syncers instead",
        secs(typha),
        f"direct {secs(direct)}",
        f"direct/typha {fmt(ratio(direct.sync_seconds, typha.sync_seconds))}",
        "",
    )

    def cpu(server: str, phase: Phase) -> str:
        used = phase.sync_cpu.get("server", phase.sync_cpu.get("etcd"))
        clients = phase.client_cpu(phase.sync_cpu)
        each = 1000 * clients / max(phase.clients, 1)
        return f"{server} {fmt(used)} s, clients {clients:.2f} s ({each:.1f} ms each)"

    row("CPU until all in sync", cpu("typha", typha), cpu("bare server", bare), "", "")
    row("same, clients only reading / direct", cpu("typha", raw), cpu("etcd", direct), "", "")


def report_latency(n: int, p: dict[str, Phase]) -> None:
    typha, direct, one = p["typha"], p["direct"], p["direct-1"]
    tq, oq, dq = typha.quantiles_ms(), one.quantiles_ms(), direct.quantiles_ms()
    for label, i in (("p50", 0), ("p99", 1), ("max", 2)):
        goal = f"< {GOALS['p99_ms']:g} ms: {verdict(tq[1] < GOALS['p99_ms'])}" if i == 1 else ""
        row(
            f"2. etcd write -> every client, {label}",
            f"{tq[i]:.1f} ms",
            f"1 direct Syncer {oq[i]:.1f} ms",
            f"typha/direct {tq[i] / oq[i]:.1f}",
            goal,
        )
    row(
        f"same, {n} direct Syncers, p50 / p99",
        f"{tq[0]:.1f} / {tq[1]:.1f} ms",
        f"{dq[0]:.1f} / {dq[1]:.1f} ms",
        f"direct/typha p99 {dq[1] / tq[1]:.1f}",
        "",
    )
    pq = typha.quantiles_ms(probe=True)
    row(
        "same, 1 more TyphaSyncer alone in its process, p50 / p99 / max",
        f"{pq[0]:.1f} / {pq[1]:.1f} / {pq[2]:.1f} ms",
        f"{oq[0]:.1f} / {oq[1]:.1f} / {oq[2]:.1f} ms",
        f"typha/direct p99 {pq[1] / oq[1]:.1f}",
        f"{typha.probe_received} received",
    )
    row(
        "deliveries received / expected",
        f"{typha.received}/{typha.expected}",
        f"1 direct {one.received}/{one.expected}, {n} direct {direct.received}/{direct.expected}",
        "",
        "",
    )


def report_etcd(n: int, rate: float, p: dict[str, Phase]) -> None:
    tw, dw, ow = p["typha"].window, p["direct"].window, p["direct-1"].window
    if tw is None or dw is None or ow is None:
        row("3. etcd CPU over the write phase", "not measured: some clients never came in sync", "", "", "")
        return
    t_cpu, d_cpu = tw.cpu["etcd"], dw.cpu["etcd"]
    enough = t_cpu > 0 and d_cpu / t_cpu >= GOALS["etcd_cpu"]
    row(
        "3. etcd CPU over the write phase",
        f"{t_cpu:.2f} s in {tw.seconds:.1f} s",
        f"{n} direct Syncers {d_cpu:.2f} s in {dw.seconds:.1f} s",
        f"direct/typha {fmt(ratio(d_cpu, t_cpu), 1)}",
        f">= {GOALS['etcd_cpu']:g}: {verdict(enough)}",
    )
    floor = ow.cpu["etcd"]
    row(
        "same, 1 direct Syncer (the writes alone)",
        f"{t_cpu:.2f} s",
        f"{floor:.2f} s in {ow.seconds:.1f} s",
        f"typha/1 direct {fmt(ratio(t_cpu, floor))}",
        "",
    )
    row(
        "etcd CPU above the writes alone",
        f"{t_cpu - floor:.2f} s",
        f"{n} direct Syncers {d_cpu - floor:.2f} s",
        "",
        "",
    )

    def watch(w: Window, name: str) -> str:
        return f"{w.watch.get(name, -1):.0f}"

    row(
        "etcd watchers (watch streams), mid-phase",
        f"{watch(tw, 'watcher_total')} ({watch(tw, 'watch_stream_total')})",
        f"{watch(dw, 'watcher_total')} ({watch(dw, 'watch_stream_total')})",
        "",
        "",
    )
    row(
        "etcd slow watchers, after the phase",
        watch(tw, "slow_watcher_total_after"),
        watch(dw, "slow_watcher_total_after"),
        "",
        "",
    )
    t_clients, d_clients = p["typha"].client_cpu(tw.cpu), p["direct"].client_cpu(dw.cpu)
    row(
        "CPU of typha / of the client processes, same window",
        f"{tw.cpu['server']:.2f} / {t_clients:.2f} s",
        f"- / {d_clients:.2f} s",
        "",
        "",
    )
    row(
        f"writes achieved (target {rate:g}/s)",
        f"{tw.achieved_rate:.1f}/s",
        f"{dw.achieved_rate:.1f}/s, 1 direct {ow.achieved_rate:.1f}/s",
        "",
        "",
    )


def report_rss(args: argparse.Namespace, figures: Figures) -> None:
    n, rss = args.clients, figures.typha_rss_mb
    full = rss.get(f"{args.rss_keys} keys, {n} clients")
    idle = rss.get(f"{args.rss_keys} keys, no client")
    hwm = rss.get(f"{args.rss_keys} keys, {n} clients, peak (VmHWM)")
    per = (full - idle) * 1024 / n if full is not None and idle is not None else None
    row(
        f"4. typha RSS, {args.rss_keys} keys, {n} clients in sync",
        f"{fmt(full, 0)} MB (peak {fmt(hwm, 0)} MB)",
        f"no client {fmt(idle, 0)} MB",
        f"{fmt(ratio(full, idle))} ({fmt(per, 0)} kB a client)",
        "",
    )
    main_rss = rss.get(f"{args.keys} keys, {n} clients, max")
    row(
        f"typha RSS, {args.keys} keys, {n} TyphaSyncer clients, max seen",
        f"{fmt(main_rss, 0)} MB",
        "",
        "",
        "",
    )


def report_health(figures: Figures, work: Path) -> None:
    if figures.typha_cpu_latency_ms:
        p50, p99 = figures.typha_cpu_latency_ms
        print(
            "typha's own typha_client_latency_secs over the write phase (arrival at typha -> written to "
            f"a client): p50 <= {p50:g} ms, p99 <= {p99:g} ms (bucket bounds)"
        )
    print("clients: reconnects (resyncs), errors, warnings in their logs, maps complete at the end")
    for name, phase in figures.phases.items():
        views = f", maps complete {phase.views_ok}/{phase.views}" if phase.views else ""
        if phase.failed:
            print(f"  {name}: FAILED: {phase.failed}")
        print(
            f"  {name}: {phase.resyncs} resyncs, {phase.errors} errors, {phase.log_problems} warnings"
            f"{views}, client processes' peak RSS {phase.client_hwm_mb:.0f} MB"
        )
        for sample in phase.first_errors[:2] + phase.log_samples[:2]:
            print(f"    {sample}")
    drops = {k: v for k, v in figures.typha_drops.items() if v}
    print(f"typha connections dropped (typha_connections_dropped_total): {drops or 'none'}")
    for name, (count, samples) in figures.typha_logs.items():
        exit_code = figures.typha_exit.get(name)
        print(f"typha log {work / (name + '.log')}: exit {exit_code}, {count} warnings/errors")
        for sample in samples:
            print(f"    {sample}")


def source_state() -> str:
    """Which felid was measured: the commit, and whether the code under test had local changes."""
    root = Path(__file__).resolve().parent.parent

    def git(*argv: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *argv], capture_output=True, text=True, check=False)
        return done.stdout.strip()

    changed = git("status", "--porcelain", "--", "typha", "datastore", "lab").splitlines()
    local = f", with local changes to {len(changed)} files under typha/ datastore/ lab/" if changed else ""
    return f"felid {git('rev-parse', '--short', 'HEAD') or '?'}{local}"


def report(args: argparse.Namespace, figures: Figures, took: float, work: Path, source: str) -> None:
    n = args.clients
    print(f"{source} (at the start)")
    print(
        f"typha fan-out: {n} clients in {min(args.workers, n)} processes, {figures.keys} keys "
        f"({figures.record_bytes:.0f} bytes a value on average), {args.rate:g} writes/s for "
        f"{args.duration:g} s"
    )
    print(
        f"snapshot: {figures.snapshot_raw / 1e6:.2f} MB raw, {figures.snapshot_wire / 1e6:.2f} MB "
        f"compressed in {figures.snapshot_frames} frames; the direct Syncers share one EtcdKV per "
        "client process (one etcd watch per Syncer)"
    )
    print()
    row("figure", "typha", "baseline", "ratio", "goal")
    row("---", "---", "---", "---", "---")
    report_fanout(n, figures.phases)
    report_latency(n, figures.phases)
    report_etcd(n, args.rate, figures.phases)
    report_rss(args, figures)
    print()
    report_health(figures, work)
    print(f"took {took:.0f} s; logs in {work}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4, help="client processes")
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument(
        "--rss-keys", type=int, default=None, help="keys for the RSS figure (50000; --quick 5x --keys)"
    )
    parser.add_argument("--rate", type=float, default=100.0, help="writes/s in the write phases")
    parser.add_argument("--duration", type=float, default=None, help="seconds of writes (10; --quick 3)")
    parser.add_argument("--sync-timeout", type=float, default=300.0)
    parser.add_argument("--direct-sync-timeout", type=float, default=900.0)
    parser.add_argument(
        "--drain-timeout", type=float, default=300.0, help="after the writes, for every delivery"
    )
    parser.add_argument(
        "--typha-ping-interval",
        type=float,
        default=PING_INTERVAL,
        help=f"TYPHA_PINGINTERVAL (default {PING_INTERVAL:g}; 10 is typha's own default)",
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke test")
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="for the logs (default: a new one in /tmp)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--bare-server", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker_main(args.worker)
        return
    if args.bare_server is not None:
        bare_server_main(args.bare_server)
        return
    if args.duration is None:
        args.duration = 3.0 if args.quick else 10.0
    if args.rss_keys is None:
        args.rss_keys = 5 * args.keys if args.quick else 50_000
    if args.clients < 1 or args.keys < 100:
        parser.error("at least 1 client and 100 keys")
    raise_fd_limit()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="felid-bench-typha-"))
    work.mkdir(parents=True, exist_ok=True)
    source = source_state()
    started = time.monotonic()
    figures = measure(args, work)
    report(args, figures, time.monotonic() - started, work, source)


if __name__ == "__main__":
    main()
