"""TCP throughput between two pods with 100 policies applied, against none: ``python -m
bench.policy_throughput`` (as root).

A two-host lab cluster (etcd, felid-node with felix and felid-bgp on each host, pods from the CNI
plugin): an iperf3 server pod on one host, a client pod on the other.  Runs alternate between no
policy (the default-allow profile decides) and 100 NetworkPolicies that all select the server,
each allowing a source that is not the client except the last (so a new flow walks all 100
policy chains before it is allowed).  Each run waits until felix on the server's host has the
chains in its kernel.  Goal: the median with policy >= 0.9 of the median without.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from lab.cluster import Cluster, Workload
from lab.network import LabHost

NAMESPACE = "bench"
PORT = 5201


def policies(count: int) -> list[dict[str, Any]]:
    out = []
    for i in range(count):
        source = "role == 'client'" if i == count - 1 else f"role == 'nobody-{i}'"
        out.append(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "NetworkPolicy",
                "metadata": {"name": f"tput-{i:03d}", "namespace": NAMESPACE},
                "spec": {
                    "order": i,
                    "selector": "role == 'server'",
                    "ingress": [
                        {
                            "action": "Allow",
                            "protocol": "TCP",
                            "source": {"selector": source},
                            "destination": {"ports": [PORT]},
                        }
                    ],
                },
            }
        )
    return out


def policy_jumps(host: LabHost) -> int:
    saved = subprocess.run(
        ["ip", "netns", "exec", host.netns, "iptables-save", "-t", "filter"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(1 for line in saved.splitlines() if line.startswith("-A felid-tw-") and "-j felid-pi-" in line)


def wait_for(host: LabHost, jumps: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while policy_jumps(host) != jumps:
        if time.monotonic() > deadline:
            raise SystemExit(f"felix on {host.node} did not program {jumps} policy jumps in {timeout:.0f} s")
        time.sleep(0.2)


def felidctl(cluster: Cluster, verb: str, documents: list[dict[str, Any]]) -> None:
    done = cluster.felidctl(verb, "-f", "-", stdin=yaml.safe_dump_all(documents))
    if done.returncode:
        raise SystemExit(f"felidctl {verb}: {done.stderr.strip()}")


def throughput(client: Workload, server: Workload, seconds: int) -> float:
    """Bits per second the server received over one iperf3 run."""
    command = ["iperf3", "-J", "-c", server.address, "-p", str(PORT), "-t", str(seconds)]
    done = subprocess.run(
        ["ip", "netns", "exec", client.netns, *command],
        capture_output=True,
        text=True,
        check=False,
    )
    result = json.loads(done.stdout or "{}")
    if done.returncode or "error" in result:
        raise SystemExit(f"iperf3: {result.get('error', done.stderr.strip())}")
    return float(result["end"]["sum_received"]["bits_per_second"])


def measure(work: Path, runs: int, seconds: int, count: int) -> tuple[list[float], list[float]]:
    cluster = Cluster(work, 2, prefix="bt")
    server_process: subprocess.Popen[bytes] | None = None
    try:
        cluster.build()
        for host in cluster.hosts:
            cluster.start_node(host)
        cluster.wait_ready(timeout=120)
        one, two = cluster.hosts
        server = cluster.add_workload(one, "server", labels={"role": "server"}, namespace=NAMESPACE)
        client = cluster.add_workload(two, "client", labels={"role": "client"}, namespace=NAMESPACE)
        server_process = subprocess.Popen(
            ["ip", "netns", "exec", server.netns, "iperf3", "-s", "-p", str(PORT)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        throughput(client, server, 1)  # warm-up: ARP, routes, the first flow's conntrack entry
        bare: list[float] = []
        with_policy: list[float] = []
        documents = policies(count)
        for _ in range(runs):
            bare.append(throughput(client, server, seconds))
            felidctl(cluster, "apply", documents)
            wait_for(one, count)
            with_policy.append(throughput(client, server, seconds))
            felidctl(cluster, "delete", documents)
            wait_for(one, 0)
        return bare, with_policy
    finally:
        if server_process is not None:
            server_process.kill()
            server_process.wait()
        cluster.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="each iperf3 run's length")
    parser.add_argument("--policies", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="felid-bench-tput-") as work:
        bare, with_policy = measure(Path(work), args.runs, args.seconds, args.policies)
    none, some = statistics.median(bare), statistics.median(with_policy)
    print(f"TCP throughput between two pods on two hosts (iperf3, {args.runs} runs of {args.seconds} s each)")
    print(f"  no policy:        {none / 1e9:.2f} Gbit/s  (runs: {', '.join(f'{b / 1e9:.2f}' for b in bare)})")
    print(
        f"  {args.policies} policies:     {some / 1e9:.2f} Gbit/s  "
        f"(runs: {', '.join(f'{b / 1e9:.2f}' for b in with_policy)})"
    )
    print(f"  ratio {some / none:.2f} (goal >= 0.9)")


if __name__ == "__main__":
    main()
