"""Benchmark: IPAM allocations/s vs raw etcd CAS, and CNI ADD latency vs host-local.

Run from the repository root: ``.venv/bin/python -m bench.ipam [--allocations N]``.
Starts its own etcd.  Prints, all measured in this run:
  * allocations/s for 1 host, and for 8 hosts in 8 processes at once, with CAS retries;
  * raw CAS transactions/s on the bare client (1 writer, and 8 writers), the baseline;
  * median and p90 latency of one ADD through the felid-ipam CNI binary and through
    Debian's reference host-local IPAM plugin (both as separate processes, as runtimes call them).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pyetcd

from bench.common import local_datastore
from datastore.config import DatastoreConfig
from datastore.etcd import EtcdKV
from datastore.keys import IPAMKeys, KeyLayout
from datastore.kv import Put
from datastore.models import IPPool
from datastore.models.ipam import IPAMConfig, pod_handle
from ipam.allocator import BlockAllocator

HOSTS = 8
HOST_LOCAL = "/usr/lib/cni/host-local"


def allocate(url: str, node: str, count: int, start: mp.synchronize.Event, out: mp.Queue) -> None:  # type: ignore[type-arg]
    kv = EtcdKV(DatastoreConfig(etcd_endpoints=(url,)), timeout=30)
    allocator = BlockAllocator(kv, KeyLayout(), node)
    start.wait()
    began = time.perf_counter()
    try:
        for i in range(count):
            allocator.auto_assign(pod_handle(f"{node}-{i}"))
    except Exception as exc:
        out.put(exc)
        raise
    out.put((time.perf_counter() - began, allocator.cas_retries))


def raw_cas(url: str, key: str, count: int, start: mp.synchronize.Event, out: mp.Queue) -> None:  # type: ignore[type-arg]
    host, port = url.removeprefix("http://").split(":")
    client = pyetcd.client(host=host, port=int(port))
    client.put(key, "0")
    revision = client.get(key)[1].mod_revision
    tx = client.transactions
    start.wait()
    began = time.perf_counter()
    for i in range(count):
        ok, responses = client.transaction(
            compare=[tx.mod(key) == revision], success=[tx.put(key, str(i))], failure=[]
        )
        assert ok
        revision = responses[0].response_put.header.revision
    out.put((time.perf_counter() - began, 0))


def in_processes(
    target: Callable[..., None], args_per_process: list[tuple[object, ...]]
) -> tuple[float, int]:
    """Run ``target`` in one process per args tuple, released together; (ops/s wall, retries)."""
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, start, out)) for a in args_per_process]
    for p in procs:
        p.start()
    time.sleep(1.5)  # let every process import and connect before the clock starts
    began = time.perf_counter()
    start.set()
    results = [out.get(timeout=600) for _ in procs]
    failed = [r for r in results if isinstance(r, Exception)]
    if failed:
        raise RuntimeError(f"a benchmark process failed: {failed[0]}")
    wall = time.perf_counter() - began
    for p in procs:
        p.join()
    total = sum(int(a[2]) for a in args_per_process)  # type: ignore[call-overload]
    return total / wall, sum(r[1] for r in results)


def cni_latency(binary: str, netconf: Mapping[str, object], runs: int) -> list[float]:
    times = []
    for i in range(runs):
        environ = {
            **os.environ,
            "CNI_COMMAND": "ADD",
            "CNI_CONTAINERID": f"bench-{i}",
            "CNI_IFNAME": "eth0",
            "CNI_NETNS": "/dev/null",
            "CNI_PATH": "/usr/lib/cni",
        }
        began = time.perf_counter()
        done = subprocess.run(
            [binary], input=json.dumps(netconf), capture_output=True, text=True, env=environ, check=False
        )
        times.append(time.perf_counter() - began)
        assert done.returncode == 0, done.stdout + done.stderr
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--allocations", type=int, default=2000, help="per measurement (split over hosts)")
    parser.add_argument("--cni-runs", type=int, default=30)
    args = parser.parse_args()
    n = args.allocations
    with local_datastore() as (etcd, store, tmp):
        store.create(
            IPPool.model_validate({"metadata": {"name": "bench"}, "spec": {"cidr": "10.128.0.0/12"}})
        )
        # One host takes all N addresses: lift the 20-block default so it need not borrow.
        store.kv.commit([], [Put(IPAMKeys().config, IPAMConfig(max_blocks_per_host=0).to_json())])
        raw1, _ = in_processes(raw_cas, [(etcd.url, "/bench/raw-0", n)])
        one, retries1 = in_processes(allocate, [(etcd.url, "solo", n)])
        per = n // HOSTS
        raw8, _ = in_processes(raw_cas, [(etcd.url, f"/bench/raw-{h}", per) for h in range(HOSTS)])
        eight, retries8 = in_processes(allocate, [(etcd.url, f"host{h}", per) for h in range(HOSTS)])
        print(f"etcd {etcd.url}; {n} allocations per measurement, pool 10.128.0.0/12 with /26 blocks")
        print(f"{'':12}{'raw CAS':>12}{'felid IPAM':>13}{'ratio':>8}{'CAS retries':>13}")
        print(f"{'1 host':12}{raw1:>10.0f}/s{one:>11.0f}/s{one / raw1:>8.2f}{retries1:>13}")
        print(f"{'8 hosts':12}{raw8:>10.0f}/s{eight:>11.0f}/s{eight / raw8:>8.2f}{retries8:>13}")

        felid_ipam = str(Path(sys.executable).parent / "felid-ipam")
        netconf = {
            "cniVersion": "1.0.0",
            "name": "bench",
            "etcd_endpoints": etcd.url,
            "nodename": "cni",
            "ipam": {"type": "felid-ipam"},
        }
        ours = cni_latency(felid_ipam, netconf, args.cni_runs)
        local = {
            "cniVersion": "1.0.0",
            "name": "bench",
            "ipam": {"type": "host-local", "subnet": "10.250.0.0/16", "dataDir": f"{tmp}/host-local"},
        }
        theirs = cni_latency(HOST_LOCAL, local, args.cni_runs)
        for label, times in (("felid-ipam", ours), ("host-local", theirs)):
            median, p90 = statistics.median(times) * 1000, statistics.quantiles(times, n=10)[8] * 1000
            print(f"CNI ADD {label:11} median {median:6.1f} ms   p90 {p90:6.1f} ms")
        ratio = statistics.median(ours) / statistics.median(theirs)
        print(f"felid-ipam / host-local median latency: {ratio:.1f}x")


if __name__ == "__main__":
    main()
