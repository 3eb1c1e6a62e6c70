"""bench.typha_fanout's shared parts: the records it writes, constants, /proc and /metrics readers."""

from __future__ import annotations

import hashlib
import os
import resource
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from datastore.etcd import EtcdKV
from datastore.keys import IPAMKeys, KeyLayout, SyncerType
from datastore.kv import Put
from datastore.models import Node, WorkloadEndpoint
from datastore.models.ipam import AffinityState, affinity_json
from datastore.models.node import derived_vtep_mac
from datastore.store import encode
from datastore.syncer import Update
from lab.etcd import EtcdServer
from typha.cache import SyncerCache

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
PING_INTERVAL = 10.0  # TYPHA_PINGINTERVAL for the benchmark's typha: typha's own default
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
    snapshot = cache.snapshot("zstd")
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
        "etcd_debugging_mvcc_events_total",  # events etcd sent to its watchers
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
