"""Benchmark: CNI ADD latency of the felid plugin, through felid-node's fast path and without it,
against the reference bridge + host-local plugins, in the same run.

Run as root from the repository root: ``.venv/bin/python -m bench.cni [--runs N]``.
Builds a one-host lab (etcd, felid-node), then times whole plugin processes as a runtime starts
them (``nsenter --net`` into the host, the network config on stdin), one ADD into a fresh pod
namespace each, felid and bridge in turn (A B A B ...) so a drifting machine moves both. Prints
median and p99 of each, and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lab.cluster import Cluster
from lab.network import LabHost, namespaces
from lab.processes import BIN, clean_environment

REFERENCE = "/usr/lib/cni"


def add(host: LabHost, binary: str, netconf: Mapping[str, Any], container: str, netns: str) -> float:
    environ = {
        **clean_environment(),
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": container,
        "CNI_NETNS": f"/run/netns/{netns}",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "",
        "CNI_PATH": f"{REFERENCE}:{BIN}",
    }
    argv = ["nsenter", f"--net=/run/netns/{host.netns}", binary]
    began = time.perf_counter()
    done = subprocess.run(
        argv, input=json.dumps(netconf), capture_output=True, text=True, env=environ, check=False
    )
    took = time.perf_counter() - began
    if done.returncode:
        raise RuntimeError(f"{binary} ADD failed: {done.stdout.strip()} {done.stderr.strip()[-500:]}")
    return took


def summary(label: str, times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return f"{label:34} median {statistics.median(ms):6.1f} ms   p99 {p99:6.1f} ms   (n={len(ms)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=60, help="ADDs of each kind through the fast path")
    parser.add_argument("--direct-runs", type=int, default=15, help="ADDs without felid-node's socket")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp), 1, prefix="bc")
        try:
            cluster.build()
            host = cluster.hosts[0]
            cluster.start_node(host)
            cluster.wait_ready(timeout=90)
            felid = host.netconf(fast_path=True)
            direct = {**felid, "cni_socket": str(host.cni_socket) + ".off"}
            bridge = {
                "cniVersion": "1.0.0",
                "name": "reference",
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipam": {"type": "host-local", "subnet": "10.250.0.0/16", "dataDir": f"{tmp}/host-local"},
            }
            pods = [f"p{i}" for i in range(2 * args.runs + args.direct_runs)]
            with namespaces(*pods, prefix="bc") as ns:
                fast, reference, slow = [], [], []
                for i in range(args.runs):
                    fast.append(add(host, str(BIN / "felid"), felid, f"fast-{i}", ns[f"p{2 * i}"]))
                    reference.append(
                        add(host, f"{REFERENCE}/bridge", bridge, f"ref-{i}", ns[f"p{2 * i + 1}"])
                    )
                for i in range(args.direct_runs):
                    slow.append(
                        add(host, str(BIN / "felid"), direct, f"slow-{i}", ns[f"p{2 * args.runs + i}"])
                    )
                print(f"CNI ADD on one host, {os.cpu_count()} cores; each a whole plugin process")
                print(summary("felid, through felid-node", fast))
                print(summary("felid, without felid-node", slow))
                print(summary("bridge + host-local (reference)", reference))
                ratio = statistics.median(fast) / statistics.median(reference)
                direct_ratio = statistics.median(slow) / statistics.median(reference)
                print(
                    f"ratio of medians: fast path {ratio:.1f}x, direct {direct_ratio:.1f}x "
                    "the reference (goal <= 8x)"
                )
        finally:
            cluster.destroy()


if __name__ == "__main__":
    main()
