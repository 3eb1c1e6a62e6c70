"""Work proportional to change: ``python -m bench.churn [--sizes 25,50] [--workloads 1000]``.

For each cluster size: a lab cluster with 2 route reflectors, every felid-node ready and settled;
then the CPU time (utime + stime) of every agent over an idle window, and over the same
``--workloads`` workload starts and stops, spread round-robin over the hosts that are not
reflectors, at most ``--live`` alive at once.  A start does to the datastore what CNI ADD does (an
IPAM assignment through ``BlockAllocator``, then the WorkloadEndpoint); a stop what DEL does (the
endpoint deleted, the handle released).  No veth is made: felix programs the endpoint's policy
chains and holds its route until an interface appears, and the cost measured is the agents'
reaction to the datastore, which is what grows with a cluster.  The default, 500 workloads, is
the issue's 1,000 starts and stops.

Printed per size: seconds of CPU per agent kind (felid-node, with felix and the bgp agent inside it;
felix and felid-bgp too when they run as programs of their own; ExaBGP for information) during the
churn, less what the same agents burn idle in as long (the baseline,
measured in the same run), and that net cost per datastore change per agent.  Last, the ratio of
the per-change cost of the larger cluster to the smaller one's (issue 16: at most 1.2).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.cluster import descendants
from bench.typha_fanout_common import cpu_seconds
from datastore.config import DatastoreConfig
from datastore.etcd import EtcdKV
from datastore.keys import KeyLayout
from datastore.models import WorkloadEndpoint
from datastore.models.ipam import pod_handle
from datastore.store import ResourceStore
from ipam.allocator import BlockAllocator
from lab.cluster import Cluster
from lab.processes import BIN

KINDS = {
    "felid-felix": "felix",
    "felid-bgp": "felid-bgp",
    "felid-node": "felid-node",
    "exabgp": "exabgp",
    "bgp.exabgp_main": "exabgp",  # python -m bgp.exabgp_main: how felid starts ExaBGP
}
AGENTS = ("felix", "felid-bgp", "felid-node")


def kind_of(pid: int) -> str | None:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    for arg in argv[:3]:
        name = Path(arg.decode(errors="replace")).name
        if name in KINDS:
            return KINDS[name]
    return None


@dataclass(frozen=True)
class Agents:
    """Every agent process of the cluster, by kind."""

    pids: dict[str, list[int]]

    @classmethod
    def of(cls, cluster: Cluster) -> Agents:
        found: dict[str, list[int]] = defaultdict(list)
        for root in cluster.nodes.values():
            for pid in descendants(root):
                kind = kind_of(pid)
                if kind is not None:
                    found[kind].append(pid)
        return cls(dict(found))

    def cpu(self) -> dict[str, float]:
        return {kind: sum(cpu_seconds(p) for p in pids) for kind, pids in self.pids.items()}

    def count(self, kind: str) -> int:
        return len(self.pids.get(kind, []))


def window(agents: Agents, seconds: float) -> dict[str, float]:
    before = agents.cpu()
    time.sleep(seconds)
    after = agents.cpu()
    return {k: after[k] - before.get(k, 0.0) for k in after}


def drive(etcd: str, nodes: Sequence[str], workloads: int, live: int) -> None:
    """Inside a lab host (``--drive``): the starts and stops, as CNI ADD and DEL write them."""
    kv = EtcdKV(DatastoreConfig(etcd_endpoints=(etcd,)), timeout=30)
    store = ResourceStore(kv, KeyLayout())
    allocators = {n: BlockAllocator(kv, KeyLayout(), n) for n in nodes}
    alive: list[tuple[str, str, str]] = []  # (node, endpoint name, handle)

    def stop(node: str, name: str, handle: str) -> None:
        store.delete(WorkloadEndpoint, name, "default")
        allocators[node].release_handle(handle)

    for i in range(workloads):
        node = nodes[i % len(nodes)]
        container = f"churn{i:05d}"
        handle = pod_handle(container)
        address = allocators[node].auto_assign(handle, attrs={"namespace": "default", "pod": container})[0]
        name = "-".join(part.replace("-", "--") for part in (node, "k8s", container, "eth0"))
        store.apply(
            WorkloadEndpoint.model_validate(
                {
                    "metadata": {"name": name, "namespace": "default", "labels": {"app": "churn"}},
                    "spec": {
                        "node": node,
                        "pod": container,
                        "containerID": container,
                        "interfaceName": f"cali{i:011d}",
                        "ipNetworks": [f"{address}/32"],
                        "profiles": ["projectcalico-default-allow"],
                    },
                }
            )
        )
        alive.append((node, name, handle))
        if len(alive) > live:
            stop(*alive.pop(0))
    while alive:
        stop(*alive.pop(0))
    kv.close()


def settle(agents: Agents, idle: dict[str, float], idle_seconds: float, limit: float = 120.0) -> float:
    """Wait until the agents are back to their idle rate (within 50 %) for two seconds in a row."""
    started = time.monotonic()
    rate = sum(idle[k] for k in AGENTS if k in idle) / idle_seconds
    calm = 0
    while time.monotonic() - started < limit and calm < 2:
        spent = window(agents, 1.0)
        calm = calm + 1 if sum(spent.get(k, 0.0) for k in AGENTS) <= 1.5 * rate + 0.01 else 0
    return time.monotonic() - started


def measure(size: int, workloads: int, live: int, reflectors: int, idle_seconds: float) -> float:
    with tempfile.TemporaryDirectory(prefix="felid-bench-churn-") as tmp:
        cluster = Cluster(Path(tmp), size, route_reflectors=reflectors, prefix="fc")
        try:
            cluster.build()
            for host in cluster.hosts:
                cluster.start_node(host)
            ready = cluster.wait_ready(timeout=900)
            time.sleep(10)  # start-up's last writes (Node updates, BGP sessions) die down
            agents = Agents.of(cluster)
            idle = window(agents, idle_seconds)
            workers = [h.node for h in cluster.hosts if not cluster.reflector(h)]
            driver = cluster.hosts[-1]
            before, started = agents.cpu(), time.monotonic()
            assert cluster.lab is not None
            done = subprocess.run(
                [
                    "ip", "netns", "exec", driver.netns, str(BIN / "python"), "-m", "bench.churn",
                    "--drive", cluster.lab.etcd.url, ",".join(workers),
                    "--workloads", str(workloads), "--live", str(live),
                ],
                capture_output=True,
                text=True,
                check=False,
                timeout=1800,
                env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
            )  # fmt: skip
            if done.returncode:
                raise RuntimeError(f"the churn driver failed: {done.stderr[-2000:]}")
            driven = time.monotonic() - started
            settle(agents, idle, idle_seconds)
            elapsed = time.monotonic() - started
            after = agents.cpu()
            changes = 2 * workloads  # each workload's start and stop
            print(
                f"{size} hosts ({reflectors} reflectors): ready in {ready:.0f} s; {workloads} starts and "
                f"stops written in {driven:.1f} s, agents quiet {elapsed:.1f} s after the first"
            )
            per_change = 0.0
            for kind in (*AGENTS, "exabgp"):
                count = agents.count(kind)
                if not count:
                    continue
                spent = after.get(kind, 0.0) - before.get(kind, 0.0)
                baseline = idle.get(kind, 0.0) * elapsed / idle_seconds
                net = spent - baseline
                cost = net / changes / count * 1e3
                if kind in AGENTS:
                    per_change += cost
                print(
                    f"  {kind:10} x{count:3}: {spent:7.2f} CPU-s during the churn, idle baseline "
                    f"{baseline:6.2f} CPU-s; net {cost:6.3f} ms per change per process"
                )
            print(f"  agents (felid-node with felix and bgp): {per_change:.3f} ms per change per host")
            return per_change
        finally:
            cluster.destroy()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="25,50")
    parser.add_argument("--workloads", type=int, default=500, help="each started and stopped: 2 changes")
    parser.add_argument("--live", type=int, default=20, help="workloads alive at once at most")
    parser.add_argument("--reflectors", type=int, default=2)
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of the idle baseline")
    parser.add_argument("--drive", nargs=2, metavar=("ETCD", "NODES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.drive:
        drive(args.drive[0], args.drive[1].split(","), args.workloads, args.live)
        return
    costs = [
        measure(int(size), args.workloads, args.live, args.reflectors, args.idle)
        for size in args.sizes.split(",")
    ]
    if len(costs) > 1 and costs[0] > 0:
        print(
            f"per-change cost per host, {args.sizes.split(',')[-1]} hosts / {args.sizes.split(',')[0]}: "
            f"{costs[-1] / costs[0]:.2f} (goal <= 1.2)"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
