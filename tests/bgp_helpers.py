"""Shared by the BGP tests: documents, the routes a host learned, agents that are stopped on exit."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from felix.calc.model import BGP_PROTO
from lab.agents import BGP_PORT, BGPProcess, BlockWorker
from lab.network import Lab, LabHost, http_get

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


def peer_doc(name: str, address: str, asn: int, **spec: Any) -> dict[str, Any]:
    """A BGPPeer to ``address`` in AS ``asn`` (from every node, unless ``spec`` narrows it)."""
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "BGPPeer",
        "metadata": {"name": name},
        "spec": {"peerIP": address, "asNumber": asn, **spec},
    }


def apply(lab_: Lab, *docs: dict[str, Any]) -> None:
    lab_.apply(docs)


def learned(host: LabHost) -> dict[str, str]:
    """This host's BGP routes: destination (ip prints a /32 bare) -> next hop."""
    routes = host.routes(BGP_PROTO)
    return {r["dst"] if "/" in r["dst"] else f"{r['dst']}/32": r.get("gateway", "") for r in routes}


@contextlib.contextmanager
def running(agents: list[BGPProcess]) -> Iterator[list[BGPProcess]]:
    try:
        yield agents
    finally:
        for agent in agents:
            agent.kill()


def one_block_each(
    worker: BlockWorker, hosts: list[LabHost]
) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """A block claimed for each host, and what each should then learn: the others' blocks via them."""
    blocks = {h.node: worker.claim(h.node)["block"] for h in hosts}
    return blocks, {h.node: {blocks[o.node]: o.address for o in hosts if o is not h} for h in hosts}


def all_learned(hosts: list[LabHost], expected: dict[str, dict[str, str]]) -> bool:
    return all(learned(h) == expected[h.node] for h in hosts)


def metrics_of(host: LabHost) -> str:
    code, body = http_get(host.netns, BGP_PORT, "/metrics")
    assert code == 200
    return body


def all_established(agent: BGPProcess) -> bool:
    status = agent.status()
    return bool(status and status["peers"] and all(p["state"] == "up" for p in status["peers"]))


MESH_OFF = {
    "apiVersion": "projectcalico.org/v3",
    "kind": "BGPConfiguration",
    "metadata": {"name": "default"},
    "spec": {"nodeToNodeMeshEnabled": False},
}
TO_REFLECTORS = {
    "apiVersion": "projectcalico.org/v3",
    "kind": "BGPPeer",
    "metadata": {"name": "peer-with-route-reflectors"},
    "spec": {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"},
}
CLUSTER_ID = "244.0.0.1"


def node_status(host: LabHost) -> str:
    """``felidctl node status`` on ``host``, which must succeed."""
    done = host.felidctl("node", "status")
    assert done.returncode == 0, done.stderr
    return done.stdout
