"""Faults under churn, on a running 3-host cluster: SIGKILLs spread over ExaBGP and felid-node (felix and
the bgp agent with it), and felix rebuilt inside felid-node by its node's changed FelixConfiguration,
while workloads come and go; etcd gone for a minute.  What must hold: every workload
reaches every other, no address is held twice, IPAM is consistent, and no route that should have
stayed is ever removed."""

from __future__ import annotations

import ipaddress
import json
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

from lab.agents import BGP_PORT, route_changes, route_deletions
from lab.cluster import Cluster, Workload
from lab.network import LabHost, http_get
from lab.processes import wait_until
from lab.workloads import ping

SEED = 1201
KILLS = 50
TARGETS = ("felix", "exabgp", "felid-node")


def _status(host: LabHost, port: int) -> dict[str, Any]:
    code, body = http_get(host.netns, port, "/status")
    return dict(json.loads(body)) if code == 200 else {}


def _pid(cluster: Cluster, host: LabHost, target: str) -> int | None:
    """The PID of ``target`` on ``host`` now (ExaBGP's from the bgp agent's /status)."""
    if target == "felid-node":
        return cluster.nodes.get(host.node)
    pid = _status(host, BGP_PORT).get("exabgpPID")
    return int(pid) if pid else None


def _rebuild_felix(cluster: Cluster, host: LabHost, kills: int) -> None:
    """A changed FelixConfiguration for ``host``: felid-node builds its felix anew, as Calico's
    Felix restarts (the in-process counterpart of SIGKILLing a felix process)."""
    config = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "FelixConfiguration",
        "metadata": {"name": f"node.{host.node}"},
        "spec": {"routeRefreshInterval": f"{60 + kills}s"},
    }
    cluster.apply([config])


def _all_reach(cluster: Cluster) -> bool:
    return all(r.ok for r in cluster.ping_matrix(count=1))


def test_sigkills_and_workload_churn_leave_a_consistent_reachable_cluster(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    cluster = Cluster(tmp_path, 3, prefix="ft")
    try:
        cluster.build()
        for host in cluster.hosts:
            cluster.start_node(host)
        cluster.wait_ready(timeout=90)
        for host in cluster.hosts:
            cluster.add_workload(host)
        gone: list[Workload] = []  # deleted workloads: their routes may go
        kills = {target: 0 for target in TARGETS}
        with route_deletions(cluster.hosts) as deleted:
            while sum(kills.values()) < KILLS:
                host, target = rng.choice(cluster.hosts), rng.choice(TARGETS)
                if target == "felix":
                    _rebuild_felix(cluster, host, sum(kills.values()))
                    kills[target] += 1
                elif (pid := _pid(cluster, host, target)) is not None:
                    if target == "felid-node":
                        cluster.kill_node(host)
                        cluster.start_node(host)  # as systemd would
                    else:
                        os.kill(pid, signal.SIGKILL)
                    kills[target] += 1
                churn = rng.random()
                if churn < 0.45:
                    cluster.add_workload(rng.choice(cluster.hosts))
                elif churn < 0.7 and len(cluster.workloads) > 3:
                    victim = rng.choice(cluster.workloads)
                    cluster.delete_workload(victim)
                    gone.append(victim)
                time.sleep(rng.uniform(0.2, 1.5))
            cluster.wait_ready(timeout=120)
            took = wait_until(lambda: _all_reach(cluster), 60, "every workload reaches every other", 1.0)
        print(
            f"{kills} faults, {len(cluster.workloads)} workloads left, {len(gone)} deleted; "
            f"every pair reached {took:.1f}s after the last node was ready"
        )
        addresses = [w.address for w in cluster.workloads]
        assert len(set(addresses)) == len(addresses), "an address is held by two workloads"
        check = cluster.felidctl("ipam", "check")
        assert check.returncode == 0, check.stdout + check.stderr
        for workload in cluster.workloads:
            shown = cluster.felidctl("ipam", "show", "--ip", workload.address).stdout
            assert f"k8s-pod-network.{workload.name}" in shown, shown
        allowed = {f"Deleted {w.address} dev cali" for w in gone}
        wrong = [line for line in deleted if not any(line.startswith(a) for a in allowed)]
        assert wrong == [], f"routes removed that should have stayed: {wrong}"
    finally:
        cluster.destroy()


def _sessions(host: LabHost) -> dict[str, tuple[str, float]]:
    return {p["address"]: (p["state"], p["since"]) for p in _status(host, BGP_PORT).get("peers", [])}


def test_etcd_gone_for_a_minute_changes_nothing_and_the_cluster_catches_up(tmp_path: Path) -> None:
    # /30 blocks: felid-node's bridge gateway takes two addresses, two workloads fill a block, and
    # the workload made after the outage needs a new one, which must reach the other hosts by BGP.
    cluster = Cluster(tmp_path, 3, prefix="ft", node_env={"FELID_IPV4POOL_BLOCK_SIZE": "30"})
    try:
        lab = cluster.build()
        for host in cluster.hosts:
            cluster.start_node(host)
        cluster.wait_ready(timeout=90)
        for host in cluster.hosts:
            cluster.add_workload(host)
            cluster.add_workload(host)
        assert _all_reach(cluster)
        sessions = {h.node: _sessions(h) for h in cluster.hosts}
        assert all(state == "up" for s in sessions.values() for state, _ in s.values())
        with route_changes(cluster.hosts) as changes:
            lab.etcd.stop()
            outage = time.monotonic()
            while time.monotonic() - outage < 60:
                assert all(
                    pid is not None and os.path.exists(f"/proc/{pid}") for pid in cluster.nodes.values()
                )
                time.sleep(5)
            assert {h.node: _sessions(h) for h in cluster.hosts} == sessions  # up, and never reset
            assert all(cluster.ready(h) for h in cluster.hosts)
        assert changes == [], f"the kernel changed while etcd was away: {changes}"
        lab.etcd.start(timeout=30)
        back = time.monotonic()
        one, two = cluster.hosts[:2]
        new = cluster.add_workload(one)
        blocks = {
            ipaddress.ip_network(f"{w.address}/30", strict=False)
            for w in cluster.workloads
            if w.node == one.node
        }
        assert len(blocks) == 2, "the new workload should have needed a new block"
        watcher = next(w for w in cluster.workloads if w.node == two.node)
        took = wait_until(lambda: ping(watcher.netns, new.address, count=1, wait=0.2).ok, 10, "new workload")
        since_back = time.monotonic() - back
        print(f"new block: answered {since_back:.2f}s after etcd came back, {took:.2f}s after ADD")
        assert since_back < 5.0
        assert _all_reach(cluster)
    finally:
        cluster.destroy()
