"""Demo clusters of 10 and 25 hosts: ``python -m bench.cluster``.

For each size: the time from nothing (no namespaces, no etcd) to the first
complete ping matrix (one workload per host, every workload answering every
other); the memory of one host's felid (felid-node with felix, felid-bgp,
ExaBGP and its API bridge: RSS and PSS summed over the process tree); and the
time from CNI ADD returning on one host to the new workload answering pings
from a workload on another host (``ping -D`` timestamps; median and p99 over
``--workloads`` new workloads).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from lab.cluster import Cluster
from lab.network import LabHost


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def smaps_rollup(pid: int) -> dict[str, int]:
    """The KiB fields of ``/proc/PID/smaps_rollup`` (Rss, Pss, Private_Dirty, ...); {} for a zombie."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:  # under the [rollup] line
        name, _, value = line.partition(":")
        fields[name] = int(value.split()[0])
    return fields


def memory_kib(pid: int) -> tuple[int, int, int]:
    """(processes, RSS KiB, PSS KiB) of ``pid`` and everything below it."""
    rss = pss = count = 0
    for member in descendants(pid):
        try:
            rollup = smaps_rollup(member)
        except OSError:
            continue
        count += 1
        rss += rollup.get("Rss", 0)
        pss += rollup.get("Pss", 0)
    return count, rss, pss


def first_reply_after(source_netns: str, target: str, started: float, timeout: float = 10) -> float:
    """Seconds from ``started`` (wall clock) to the first echo reply from ``target``."""
    done = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            source_netns,
            "ping",
            "-D",
            "-n",
            "-i",
            "0.01",
            "-c",
            "1",
            "-w",
            str(timeout),
            "-W",
            "0.05",
            target,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    stamp = re.search(r"^\[(\d+\.\d+)\] \d+ bytes from", done.stdout, re.M)
    if stamp is None:
        raise TimeoutError(f"{target} never answered")
    return float(stamp.group(1)) - started


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure(size: int, workloads: int) -> None:
    with tempfile.TemporaryDirectory(prefix="felid-bench-cluster-") as tmp:
        cluster = Cluster(Path(tmp), size, prefix="fb")
        started = time.monotonic()
        try:
            cluster.build()
            for host in cluster.hosts:
                cluster.start_node(host)
            cluster.wait_ready(timeout=600)
            ready = time.monotonic() - started
            for host in cluster.hosts:
                cluster.add_workload(host)
            while any(not r.ok for r in cluster.ping_matrix(count=1)):
                time.sleep(0.2)
            matrix = time.monotonic() - started
            processes, rss, pss = memory_kib(cluster.nodes[cluster.hosts[0].node])
            print(
                f"{size} hosts: all felid-nodes ready {ready:.1f} s; first complete ping matrix "
                f"({size * (size - 1)} pairs) {matrix:.1f} s from nothing"
            )
            mib = f"RSS {rss / 1024:.0f} MiB, PSS {pss / 1024:.0f} MiB"
            print(f"  one host's felid ({processes} processes): {mib}")
            watchers = {h.node: w for h, w in zip(cluster.hosts, cluster.workloads, strict=True)}
            delays = []
            for i in range(workloads):
                home: LabHost = cluster.hosts[i % size]
                other = cluster.hosts[(i + 1) % size]
                workload = cluster.add_workload(home, f"n{i}")
                added = time.time()
                delays.append(first_reply_after(watchers[other.node].netns, workload.address, added))
            print(
                f"  CNI ADD returned -> answering a ping from another host, {workloads} workloads: "
                f"median {statistics.median(delays) * 1000:.0f} ms, "
                f"p99 {percentile(delays, 0.99) * 1000:.0f} ms, "
                f"max {max(delays) * 1000:.0f} ms",
                flush=True,
            )
        finally:
            cluster.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10,25")
    parser.add_argument("--workloads", type=int, default=50)
    args = parser.parse_args()
    for size in (int(s) for s in args.sizes.split(",")):
        measure(size, args.workloads)


if __name__ == "__main__":
    main()
