"""Demo clusters of 25, 50 and 100 hosts: ``python -m bench.cluster [--sizes 25,50,100]``.

Each size is built as ``felid demo --hosts N --route-reflectors 2 --workloads-per-host 1`` builds
it (``--typha K`` to have every host follow typhas).  Printed for each: from nothing (no
namespaces, no etcd) to every felid-node ready, to every host's kernel routing to every other
host's blocks, and to the first full ping sample (each host's workload answering every other
host's, one ping each); the memory of one host's felid (felid-node's process tree: RSS and PSS);
and the convergence of new workloads: from CNI ADD returning on one host to the workload answering
pings from a workload on another host (``ping -D`` timestamps; median and p99 over
``--workloads``).  ``--block-size 30`` makes nearly every new workload claim a new block, so that
its route must travel by BGP through the reflectors before it answers (with the default /26 the
block is already routed everywhere and convergence is the home host's programming).  The
baseline is the first size: each later one is printed as a ratio of its per-host time to it.
``--node-env KEY=VALUE`` sets a felid-node setting for the run (``FELID_BGP_EXABGP_REACTOR_SPEED=1``).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Figures:
    ready: float
    converged: float
    sample: float


def measure(size: int, args: argparse.Namespace) -> Figures:
    node_env = {"FELID_IPV4POOL_BLOCK_SIZE": str(args.block_size), **args.node_env}
    with tempfile.TemporaryDirectory(prefix="felid-bench-cluster-") as tmp:
        cluster = Cluster(
            Path(tmp), size, prefix="fb", route_reflectors=args.route_reflectors, typhas=args.typha,
            node_env=node_env,
        )  # fmt: skip
        started = time.monotonic()
        try:
            cluster.build()
            for host in cluster.hosts:
                cluster.start_node(host)
            cluster.wait_ready(timeout=900)
            ready = time.monotonic() - started
            cluster.wait_converged(timeout=900)
            converged = time.monotonic() - started
            for host in cluster.hosts:
                cluster.add_workload(host)
            tries = 0
            while any(not r.ok for r in cluster.ping_matrix(count=1)):
                tries += 1
                if tries > 60:
                    raise TimeoutError("no full ping sample after 60 tries")
                time.sleep(0.2)
            sample = time.monotonic() - started
            processes, rss, pss = memory_kib(cluster.nodes[cluster.hosts[0].node])
            print(
                f"{size} hosts ({args.route_reflectors} reflectors, {args.typha} typhas): from nothing, "
                f"all ready {ready:.1f} s, routes converged {converged:.1f} s, first full ping sample "
                f"({size * (size - 1)} pairs, {tries + 1} tries) {sample:.1f} s"
            )
            mib = f"RSS {rss / 1024:.0f} MiB, PSS {pss / 1024:.0f} MiB"
            print(f"  one host's felid ({processes} processes): {mib}")
            watchers = {h.node: w for h, w in zip(cluster.hosts, cluster.workloads, strict=True)}
            delays = []
            for i in range(args.workloads):
                home: LabHost = cluster.hosts[i % size]
                other = cluster.hosts[(i + 1) % size]
                workload = cluster.add_workload(home, f"n{i}", programmed=False)
                delays.append(
                    first_reply_after(watchers[other.node].netns, workload.address, workload.added_at)
                )
            print(
                f"  CNI ADD returned -> answering a ping from another host, {args.workloads} workloads "
                f"(/{args.block_size} blocks): median {statistics.median(delays) * 1000:.0f} ms, "
                f"p99 {percentile(delays, 0.99) * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms",
                flush=True,
            )
            return Figures(ready, converged, sample)
        finally:
            cluster.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="25,50,100")
    parser.add_argument("--workloads", type=int, default=50)
    parser.add_argument("--route-reflectors", type=int, default=2)
    parser.add_argument("--typha", type=int, default=0)
    parser.add_argument("--block-size", type=int, default=26)
    parser.add_argument(
        "--node-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="added to every felid-node's environment",
    )
    args = parser.parse_args()
    args.node_env = dict(item.split("=", 1) for item in args.node_env)
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {size: measure(size, args) for size in sizes}
    base = sizes[0]
    for size in sizes[1:]:
        ratio = [
            getattr(results[size], f) / size / (getattr(results[base], f) / base) for f in ("ready", "sample")
        ]
        print(
            f"{size} hosts against {base}: per host, ready x{ratio[0]:.2f}, full ping sample x{ratio[1]:.2f}"
        )


if __name__ == "__main__":
    main()
