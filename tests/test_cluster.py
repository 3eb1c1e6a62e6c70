"""End to end: felid-node on every host of a lab cluster, workloads by the felid CNI plugin, real pings."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import network
from lab.agents import route_changes, route_deletions
from lab.cluster import NODE_HEALTH_PORT, Cluster, Mode, Workload
from lab.convergence import http_statuses, lacking, routed_blocks
from lab.processes import wait_until
from lab.workloads import PingResult, ping, ping_many
from tests.typha_helpers import metric


@contextlib.contextmanager
def running(
    work: Path, size: int, mode: Mode = "never", route_reflectors: int = 0, typhas: int = 0
) -> Iterator[Cluster]:
    cluster = Cluster(work, size, mode=mode, route_reflectors=route_reflectors, prefix="ft", typhas=typhas)
    try:
        cluster.build()
        for host in cluster.hosts:
            cluster.start_node(host)
        cluster.wait_ready(timeout=90)
        yield cluster
    finally:
        cluster.destroy()


def unreachable(results: list[PingResult]) -> list[PingResult]:
    return [r for r in results if not r.ok]


def test_one_fping_answers_for_every_target_of_a_source() -> None:
    with network.namespaces("a", "b") as ns:
        network.ip("-n", ns["a"], "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
        network.ip("-n", ns["a"], "link", "set", "eth1", "netns", ns["b"])
        for name, nic, address in ((ns["a"], "eth0", "192.0.2.1"), (ns["b"], "eth1", "192.0.2.2")):
            network.ip("-n", name, "addr", "add", f"{address}/24", "dev", nic)
            network.ip("-n", name, "link", "set", nic, "up")
        network.ip("-n", ns["a"], "route", "add", "198.51.100.0/24", "via", "192.0.2.2")
        targets = ["192.0.2.2", "192.0.2.9", "198.51.100.7", "192.0.2.1"]  # answers, no one, lost, itself
        results = ping_many(ns["a"], targets, count=2, wait=0.3)
        assert [(r.source, r.target, r.sent) for r in results] == [(ns["a"], t, 2) for t in targets]
        assert [r.received for r in results] == [2, 0, 0, 2]
        assert [r.ok for r in results] == [True, False, False, True]
        assert results[0].rtt_ms is not None and results[1].rtt_ms is None
        # Nothing listens on 9099 in either, and the third namespace is gone: no answer, no error.
        assert http_statuses([ns["a"], ns["b"], "ft-no-such-namespace"], 9099, "/readiness") == [0, 0, 0]
        assert routed_blocks(ns["a"]) == set()  # no BGP route here


def test_a_host_converges_when_it_routes_to_every_block_of_every_other_node() -> None:
    blocks = {"node-1": frozenset({"10.244.1.0/26"}), "node-2": frozenset({"10.244.2.0/26", "10.244.3.0/26"})}
    nodes = ["node-1", "node-2", "node-3"]
    assert lacking(blocks, "node-1", {"10.244.2.0/26"}, nodes) == ["10.244.3.0/26", "node-3: no block yet"]
    assert lacking(blocks, "node-3", {"10.244.1.0/26", "10.244.2.0/26", "10.244.3.0/26"}, nodes) == []


# felix and felid-bgp following etcd directly, and following a typha.
THROUGH = pytest.mark.parametrize("typhas", [0, 1], ids=["etcd", "typha"])


def typha_serves_every_agent(cluster: Cluster, agents_per_host: int = 2) -> None:
    if cluster.typha_processes:
        metrics = cluster.typha_processes[0].metrics()
        assert metric(metrics, "typha_connections_streaming") == agents_per_host * len(cluster.hosts)


@THROUGH
def test_three_hosts_full_mesh_every_workload_pings_every_other(tmp_path: Path, typhas: int) -> None:
    with running(tmp_path, 3, typhas=typhas) as cluster:
        typha_serves_every_agent(cluster)
        for host in cluster.hosts:
            cluster.add_workload(host)
            cluster.add_workload(host)
        assert unreachable(cluster.ping_matrix()) == []
        node_routes = {r["dst"] for r in cluster.hosts[0].routes(186)}
        assert len(node_routes) == 2  # the other two hosts' blocks, learned over BGP


@THROUGH
def test_a_moved_workload_is_reachable_at_its_new_place_within_two_seconds(
    tmp_path: Path, typhas: int
) -> None:
    with running(tmp_path, 3, typhas=typhas) as cluster:
        one, two, three = cluster.hosts
        watcher = cluster.add_workload(three, "watcher")
        moving = cluster.add_workload(one, "moving")
        assert ping(watcher.netns, moving.address).ok
        cluster.delete_workload(moving)
        moved = cluster.add_workload(two, "moving")  # the same pod, rescheduled on another host
        added = time.monotonic()
        took = wait_until(
            lambda: ping(watcher.netns, moved.address, count=1, wait=0.2).ok, 5, "moved workload"
        )
        print(f"reachable {time.monotonic() - added:.2f}s after CNI ADD returned on its new host")
        assert took < 2.0


def test_a_felid_node_killed_and_restarted_loses_no_ping_and_no_route(tmp_path: Path) -> None:
    with running(tmp_path, 3) as cluster:
        one, two, three = cluster.hosts
        workloads: dict[str, Workload] = {h.node: cluster.add_workload(h) for h in cluster.hosts}
        assert unreachable(cluster.ping_matrix()) == []
        a, b = workloads[two.node], workloads[three.node]
        with route_deletions(cluster.hosts) as deleted:
            pinger = subprocess.Popen(
                ["ip", "netns", "exec", a.netns, "ping", "-n", "-i", "0.05", "-w", "12", b.address],
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                time.sleep(1)
                cluster.kill_node(one)
                time.sleep(1)
                cluster.start_node(one)
                cluster.wait_ready([one], timeout=60)
                time.sleep(2)  # end-of-RIBs, refreshes: any wrong removal would happen here
            finally:
                out, _ = pinger.communicate(timeout=30)
        assert deleted == []
        summary = next(line for line in out.splitlines() if "packets transmitted" in line)
        assert " 0% packet loss" in summary, summary
        assert unreachable(cluster.ping_matrix()) == []


@THROUGH
def test_three_hosts_in_vxlan_mode(tmp_path: Path, typhas: int) -> None:
    with running(tmp_path, 3, mode="vxlan", typhas=typhas) as cluster:
        typha_serves_every_agent(cluster, agents_per_host=1)  # vxlan: felix alone
        for host in cluster.hosts:
            cluster.add_workload(host)
        assert unreachable(cluster.ping_matrix()) == []
        routes = cluster.hosts[0].routes()
        assert sum(r.get("dev") == "vxlan.calico" for r in routes) == 2
        assert cluster.hosts[0].routes(186) == []  # no BGP in this mode


def test_six_hosts_two_route_reflectors_mesh_off(tmp_path: Path) -> None:
    with running(tmp_path, 6, route_reflectors=2) as cluster:
        for host in cluster.hosts:
            cluster.add_workload(host)
        seen: list[str] = []
        cluster.wait_converged(timeout=60, report=lambda progress: seen.append(progress.line()))
        assert seen[-1].startswith("hosts ready 6/6, routes converged 6/6"), seen
        assert unreachable(cluster.ping_matrix(count=2)) == []
        status = cluster.felidctl("node", "status", host=cluster.hosts[0]).stdout
        assert status.count("| route reflector ") == 2 and "node-to-node mesh" not in status, status


def test_two_typhas_one_killed_its_clients_move_and_no_route_changes(tmp_path: Path) -> None:
    with running(tmp_path, 3, typhas=2) as cluster:
        workloads = [cluster.add_workload(h) for h in cluster.hosts]
        assert unreachable(cluster.ping_matrix(workloads)) == []
        first, second = cluster.typha_processes

        def streaming() -> dict[str, float]:
            return {t.name: metric(t.metrics(), "typha_connections_streaming") for t in (first, second)}

        # 6 clients (felix and bgp of 3 hosts); a typha over its fair share drops one, which then
        # reconnects to the other, so the count can be a moment short of 6 while they settle.
        wait_until(lambda: sum(streaming().values()) == 6, 30, "every client streaming")
        held = streaming()
        victim, survivor = (first, second) if held[first.name] else (second, first)
        with route_changes(cluster.hosts) as changes:
            victim.kill()  # SIGKILL: no goodbye; its clients find out from the closed connection
            wait_until(
                lambda: metric(survivor.metrics(), "typha_connections_streaming") == 6, 30, "all on one typha"
            )
            time.sleep(2)  # the fresh snapshots' differences (none) reach the dataplanes
        assert changes == []
        # The clients moved; felix and the bgp agent were not rebuilt for it.
        for host in cluster.hosts:
            _, body = network.http_get(host.netns, NODE_HEALTH_PORT, "/status")
            agents = json.loads(body)["agents"]
            assert [agents[a]["restarts"] for a in ("felix", "bgp")] == [0, 0], agents
        assert unreachable(cluster.ping_matrix(workloads)) == []
        cluster.add_workload(cluster.hosts[0], "after")  # and the survivor carries new state
        assert unreachable(cluster.ping_matrix()) == []
