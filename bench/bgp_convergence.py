"""BGP convergence and announce throughput through the bgp agent: ``python -m bench.bgp_convergence``.

Convergence: lab clusters (hosts = namespaces on a bridge, real etcd, a
felid-bgp with its ExaBGP per host) in full mesh and with 2 route reflectors.
Each change claims a new block for one host in etcd; its latency is from just
before the claim to the moment the last other host's kernel has the route
(``ip -ts monitor route`` timestamps).  Median and p99 over ``--changes``.
Each is measured with ExaBGP as felid runs it (``bgp.exabgp_main``, its
reactor repaired) and, as the baseline in the same run, with ExaBGP's own
``exabgp`` program; both once all hosts are up and once ``--gone`` hosts have
gone (their agents killed, as a host that fails: their sessions close).

Throughput: 10,000 confirmed blocks of one node, announced by the agent (from
its process start: Python start-up, datastore sync, plan, ExaBGP start) and,
as the baseline in the same run, by a bare ExaBGP as it ships (``exabgp``) fed
the same prefixes with ExaBGP's bulk ``announce attributes ... nlri`` lines
(from its process start); both measured at a receiving ExaBGP (felid's) until
the last prefix has arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bgp.calc import BGPPlan, Session, waits_for
from bgp.speaker import ExaBGPSpeaker
from lab.agents import BGPProcess, BlockWorker
from lab.network import Lab, LabHost, lab

BLOCK_SIZE = 28
CLUSTER_ID = "244.0.0.1"


def docs(
    cluster: Lab, reflectors: int, pool: str = "10.100.0.0/16", block_size: int = BLOCK_SIZE
) -> list[Any]:
    out: list[Any] = [
        {"kind": "IPPool", "metadata": {"name": "pods"}, "spec": {"cidr": pool, "blockSize": block_size}}
    ]
    if reflectors:
        out.append(
            {
                "kind": "BGPConfiguration",
                "metadata": {"name": "default"},
                "spec": {"nodeToNodeMeshEnabled": False},
            }
        )
        out.append(
            {
                "kind": "BGPPeer",
                "metadata": {"name": "to-reflectors"},
                "spec": {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"},
            }
        )
    for i, host in enumerate(cluster.hosts):
        bgp: dict[str, Any] = {"ipv4Address": host.interface}
        labels = {}
        if i >= len(cluster.hosts) - reflectors:
            bgp["routeReflectorClusterID"] = CLUSTER_ID
            labels["route-reflector"] = "true"
        out.append({"kind": "Node", "metadata": {"name": host.node, "labels": labels}, "spec": {"bgp": bgp}})
    return [{"apiVersion": "projectcalico.org/v3", **d} for d in out]


def apply(cluster: Lab, documents: list[Any]) -> None:
    cluster.apply(documents)
    # 50 changes on one host need more than the default 20 blocks.
    done = cluster.felidctl("ipam", "configure", "--maxblocksperhost", "0")
    if done.returncode:
        raise RuntimeError(done.stderr)


class RouteWatch:
    """When each destination first appeared in one host's kernel (``ip -ts monitor route``), and
    every deletion it saw."""

    def __init__(self, host: LabHost) -> None:
        self.seen: dict[str, float] = {}
        self.deleted: list[tuple[float, str]] = []
        self.process = subprocess.Popen(
            ["ip", "-ts", "-n", host.netns, "monitor", "route"], stdout=subprocess.PIPE, text=True
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if not line.startswith("["):
                continue
            stamp, _, rest = line[1:].partition("] ")
            when = datetime.fromisoformat(stamp).timestamp()
            if rest.startswith("Deleted "):
                self.deleted.append((when, rest.split(" ", 2)[1]))
                continue
            dst = rest.split(" ", 1)[0]
            if dst not in self.seen:
                self.seen[dst] = when

    def deleted_after(self, dst: str, since: float) -> float | None:
        """When ``dst`` was first deleted after ``since`` (wall clock), if it was."""
        return next((t for t, d in self.deleted if d == dst and t >= since), None)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


PLAIN_EXABGP = str(Path(sys.executable).parent / "exabgp")  # the baseline: ExaBGP as it ships


def convergence(hosts: int, reflectors: int, changes: int, gone: int, exabgp: str | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="felid-bench-bgp-") as tmp:
        work = Path(tmp)
        with lab(work, hosts, prefix="fb") as cluster:
            apply(cluster, docs(cluster, reflectors))
            watches = {h.node: RouteWatch(h) for h in cluster.hosts}
            agents = [BGPProcess(h, work) for h in cluster.hosts]
            for agent in agents:
                agent.env["FELID_BGP_LOG_SEVERITY"] = "Info"
                if exabgp is not None:
                    agent.env["FELID_BGP_EXABGP"] = exabgp
            worker = BlockWorker(cluster.etcd.netns or "", cluster.etcd.url, BLOCK_SIZE)
            clients = cluster.hosts[: hosts - reflectors]
            try:
                started = time.time()
                for agent in agents:
                    agent.start()
                # Ready: one block per client known everywhere.
                first = [worker.claim(h.node)["block"] for h in clients]
                _wait_everywhere(watches, cluster.hosts, dict(zip(first, clients, strict=True)), timeout=300)
                ready = time.time() - started
                for agent in agents[len(clients) - gone : len(clients)]:
                    agent.kill()  # its ExaBGP dies with it: every peer's session to it closes
                up = cluster.hosts[: len(clients) - gone] + cluster.hosts[len(clients) :]
                clients = clients[: len(clients) - gone]
                time.sleep(3 if gone else 0)
                latencies = []
                for i in range(changes):
                    owner = clients[i % len(clients)]
                    claim = worker.claim(owner.node)
                    arrived = _wait_everywhere(watches, up, {claim["block"]: owner}, timeout=30)
                    latencies.append(arrived - claim["t0"])
                return {
                    "ready": ready,
                    "median": statistics.median(latencies),
                    "p99": percentile(latencies, 0.99),
                    "max": max(latencies),
                }
            finally:
                worker.close()
                for agent in agents:
                    agent.kill()
                for watch in watches.values():
                    watch.close()


def _wait_everywhere(
    watches: dict[str, RouteWatch], hosts: list[LabHost], blocks: dict[str, LabHost], timeout: float
) -> float:
    """The wall time the last other of ``hosts`` got the last of ``blocks`` in its kernel."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        times = [
            watches[h.node].seen.get(block)
            for block, owner in blocks.items()
            for h in hosts
            if h is not owner
        ]
        if all(t is not None for t in times):
            return max(t for t in times if t is not None)
        time.sleep(0.005)
    raise TimeoutError(f"{sorted(blocks)} did not reach every host in {timeout}s")


# -- throughput -----------------------------------------------------------------------------------

WRITE_AFFINITIES = """
import json, sys
from datastore.config import DatastoreConfig
from datastore.etcd import EtcdKV
from datastore.keys import IPAMKeys
from datastore.kv import Put
from datastore.models.ipam import AffinityState, affinity_json
url, node, cidrs = sys.argv[1], sys.argv[2], json.loads(sys.stdin.read())
kv, keys = EtcdKV(DatastoreConfig(etcd_endpoints=(url,))), IPAMKeys()
value = affinity_json(AffinityState.CONFIRMED)
for start in range(0, len(cidrs), 100):
    kv.commit([], [Put(keys.affinity(node, c), value) for c in cidrs[start:start + 100]])
"""


def plan_for(me: LabHost, peer: LabHost) -> BGPPlan:
    """One mesh session, the higher address passive as ``bgp.calc`` plans two felid nodes."""
    passive = waits_for(me.address, peer.address)
    session = Session(peer.address, 64512, "node-to-node mesh", peer_node=peer.node, passive=passive)
    return BGPPlan(
        node=me.node,
        router_id=me.address,
        local_as=64512,
        listen_port=179,
        cluster_id=None,
        sessions=frozenset({session}),
        announce=frozenset(),
    )


async def _receive(receiver: ExaBGPSpeaker, count: int, timeout: float) -> float:
    """Wall time at which ``count`` distinct prefixes have arrived."""
    got: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(got) < count:
        event = await asyncio.wait_for(receiver.events.get(), deadline - time.monotonic())
        update = (event.get("neighbor") or {}).get("message", {}).get("update", {})
        for nlris in (update.get("announce") or {}).get("ipv4 unicast", {}).values():
            got.update(n["nlri"] for n in nlris)
    return time.time()


async def throughput(routes: int) -> dict[str, float]:
    prefixes = [f"10.{16 + i // 1024}.{(i % 1024) // 4}.{(i % 4) * 64}/26" for i in range(routes)]
    with tempfile.TemporaryDirectory(prefix="felid-bench-bgp-") as tmp:
        work = Path(tmp)
        with lab(work, 2, prefix="fb") as cluster:
            sender, sink = cluster.hosts
            apply(cluster, docs(cluster, 0, pool="10.16.0.0/12", block_size=26))
            cluster.etcd_host.run(
                sys.executable,
                "-c",
                WRITE_AFFINITIES,
                cluster.etcd.url,
                sender.node,
                stdin=json.dumps(prefixes),
                check=True,
            )
            results = {}
            for how in ("exabgp bulk", "agent"):
                receiver = ExaBGPSpeaker(work / f"sink-{how[:3]}", "sink", netns=sink.netns)
                await receiver.start(plan_for(sink, sender))
                started = time.time()
                if how == "agent":
                    agent = BGPProcess(sender, work)
                    agent.env["FELID_BGP_LOG_SEVERITY"] = "Info"
                    agent.start()
                    try:
                        done = await _receive(receiver, routes, timeout=300)
                    finally:
                        agent.kill()
                else:
                    bare = ExaBGPSpeaker(work / "bare", "bare", netns=sender.netns, exabgp=PLAIN_EXABGP)
                    for start in range(0, routes, 500):
                        nlri = " ".join(prefixes[start : start + 500])
                        await bare.send(f"announce attributes next-hop self nlri {nlri}")
                    await bare.start(plan_for(sender, sink))
                    try:
                        done = await _receive(receiver, routes, timeout=300)
                    finally:
                        await bare.stop()
                results[how] = done - started
                await receiver.stop()
                await asyncio.sleep(1)
            return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="3,10,25", help="cluster sizes (hosts)")
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--gone", type=int, default=1, help="client hosts that fail before the changes")
    parser.add_argument(
        "--reflectors", default="0,2", help="route reflectors of each topology (0: full mesh)"
    )
    parser.add_argument("--routes", type=int, default=10_000)
    args = parser.parse_args()
    print("BGP convergence: block claimed in etcd -> route in every other host's kernel")
    print(
        f"{'hosts':>6} {'topology':<19} {'gone':>4} {'ExaBGP':<22} {'ready s':>8} "
        f"{'median ms':>10} {'p99 ms':>8}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        for reflectors in (int(r) for r in args.reflectors.split(",")):
            name = f"{reflectors} route reflectors" if reflectors else "full mesh"
            for gone in sorted({0, args.gone}):
                p99s = []
                for exabgp, label in ((None, "bgp.exabgp_main"), (PLAIN_EXABGP, "exabgp (baseline)")):
                    r = convergence(size, reflectors, args.changes, gone, exabgp)
                    p99s.append(r["p99"])
                    print(
                        f"{size:>6} {name:<19} {gone:>4} {label:<22} {r['ready']:>8.1f} "
                        f"{r['median'] * 1000:>10.1f} {r['p99'] * 1000:>8.1f}",
                        flush=True,
                    )
                print(
                    f"{'':>6} p99 ratio, felid's ExaBGP / the baseline: {p99s[0] / p99s[1]:.2f}", flush=True
                )
    t = asyncio.run(throughput(args.routes))
    base, agent = t["exabgp bulk"], t["agent"]
    print(f"\nannounce {args.routes} routes, process start -> last prefix at the receiving peer")
    print(f"  exabgp, bulk API (baseline) {base:6.2f} s  {args.routes / base:8.0f} routes/s")
    print(f"  felid-bgp agent             {agent:6.2f} s  {args.routes / agent:8.0f} routes/s")
    print(f"  agent / baseline throughput ratio: {base / agent:.2f}")


if __name__ == "__main__":
    main()
