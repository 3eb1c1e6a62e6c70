"""The bgp agent for real: hosts in namespaces on a bridge, real etcd, real ExaBGP, kernel routes."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from felid.lab import Lab, LabHost, lab
from felix.calc.model import BGP_PROTO
from tests.harness.bgp import (
    BGPProcess,
    BlockWorker,
    host_for,
    route_deletions,
    start_agents,
    wait_until,
)

BLOCK_SIZE = 28
POOL = {
    "apiVersion": "projectcalico.org/v3",
    "kind": "IPPool",
    "metadata": {"name": "pods"},
    "spec": {"cidr": "10.100.0.0/16", "blockSize": BLOCK_SIZE},
}


def node_doc(host: LabHost, **bgp: Any) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Node",
        "metadata": {"name": host.node, "labels": bgp.pop("labels", {})},
        "spec": {"bgp": {"ipv4Address": host.interface, **bgp}},
    }


def apply(lab_: Lab, *docs: dict[str, Any]) -> None:
    done = host_for(lab_).felidctl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
    assert done.returncode == 0, done.stderr


def learned(host: LabHost) -> dict[str, str]:
    """This host's BGP routes: destination -> next hop."""
    return {r["dst"]: r.get("gateway", "") for r in host.routes(BGP_PROTO)}


@contextlib.contextmanager
def running(agents: list[BGPProcess]) -> Iterator[list[BGPProcess]]:
    try:
        yield agents
    finally:
        for agent in agents:
            agent.kill()


@pytest.fixture
def three(tmp_path: Path) -> Iterator[tuple[Lab, BlockWorker]]:
    with lab(tmp_path, 3) as cluster:
        apply(cluster, POOL, *(node_doc(h) for h in cluster.hosts))
        worker = BlockWorker(cluster.etcd.netns or "", cluster.etcd.url, BLOCK_SIZE)
        try:
            yield cluster, worker
        finally:
            worker.close()


def test_full_mesh_converges_and_follows_block_changes(
    tmp_path: Path, three: tuple[Lab, BlockWorker]
) -> None:
    cluster, worker = three
    blocks = {h.node: worker.claim(h.node)["block"] for h in cluster.hosts}
    started = time.monotonic()
    with running(start_agents(cluster, tmp_path)) as agents:

        def converged() -> bool:
            return all(
                learned(h) == {blocks[o.node]: o.address for o in cluster.hosts if o is not h}
                for h in cluster.hosts
            )

        wait_until(converged, 10, "every host has the other hosts' blocks")
        took = time.monotonic() - started
        print(f"full mesh of 3 converged {took:.2f}s after the agents started")
        assert took < 3.0, f"converged only after {took:.2f}s"

        # A new block on node-1 reaches the other kernels within a second of its commit.
        first = cluster.hosts[0]
        claim = worker.claim(first.node)
        new = claim["block"]
        wait_until(lambda: all(learned(h).get(new) == first.address for h in cluster.hosts[1:]), 5, new)
        delay = time.time() - claim["t"]
        print(f"new block in the other kernels {delay:.3f}s after its commit")
        assert delay < 1.0

        # Released: withdrawn everywhere; the rest stays.
        worker.release(first.node, claim["handle"], new)
        wait_until(lambda: all(new not in learned(h) for h in cluster.hosts), 5, f"{new} withdrawn")
        assert converged()
        for agent in agents:
            assert agent.alive(), agent.log.read_text()[-3000:]


def test_restarting_exabgp_or_the_agent_removes_no_route_anywhere(
    tmp_path: Path, three: tuple[Lab, BlockWorker]
) -> None:
    cluster, worker = three
    blocks = {h.node: worker.claim(h.node)["block"] for h in cluster.hosts}
    expected = {
        h.node: {blocks[o.node]: o.address for o in cluster.hosts if o is not h} for h in cluster.hosts
    }
    with running(start_agents(cluster, tmp_path)) as agents:
        wait_until(lambda: all(learned(h) == expected[h.node] for h in cluster.hosts), 10, "convergence")
        first = agents[0]
        with route_deletions(cluster.hosts) as deleted:
            old = first.exabgp_pid()
            assert old is not None
            os.kill(old, signal.SIGKILL)
            wait_until(lambda: first.exabgp_pid() not in (None, old), 10, "ExaBGP started again")
            wait_until(lambda: all_established(first), 15, "sessions up again")
            # The agent itself, SIGKILLed with its ExaBGP, then started again.
            first.kill()
            first.start()
            wait_until(lambda: all_established(first), 15, "sessions up after the agent's restart")
            time.sleep(1.0)  # time for end-of-RIBs and any (wrong) sweep to happen
        assert deleted == []
        assert all(learned(h) == expected[h.node] for h in cluster.hosts)


def all_established(agent: BGPProcess) -> bool:
    status = agent.status()
    return bool(status and status["peers"] and all(p["state"] == "up" for p in status["peers"]))
