"""bgp's calculation layer: sessions and announcements from datastore state, no I/O."""

from __future__ import annotations

from typing import Any

import pytest

from bgp.calc import BGPPlan, Session, Timers, plan_bgp, secret_refs
from datastore.models import BGPConfiguration, BGPPeer, IPPool, Node
from datastore.models.block import AllocationBlock, Attribute
from datastore.models.ipam import AffinityState


def node(name: str, ip: str, labels: dict[str, str] | None = None, **bgp: Any) -> Node:
    return Node.model_validate(
        {
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"bgp": {"ipv4Address": f"{ip}/24", **bgp}},
        }
    )


def config(name: str = "default", **spec: Any) -> BGPConfiguration:
    return BGPConfiguration.model_validate({"metadata": {"name": name}, "spec": spec})


def peer(name: str, **spec: Any) -> BGPPeer:
    return BGPPeer.model_validate({"metadata": {"name": name}, "spec": spec})


def pool(name: str, cidr: str, **spec: Any) -> IPPool:
    return IPPool.model_validate({"metadata": {"name": name}, "spec": {"cidr": cidr, **spec}})


NODES = [node("n1", "198.51.100.1"), node("n2", "198.51.100.2"), node("n3", "198.51.100.3", asNumber=65003)]


def plan(
    me: str,
    nodes: list[Node] = NODES,
    configs: list[BGPConfiguration] | None = None,
    peers: list[BGPPeer] | None = None,
    **kwargs: Any,
) -> BGPPlan:
    result = plan_bgp(
        me,
        nodes=nodes,
        configs=configs or [],
        peers=peers or [],
        pools=kwargs.get("pools", []),
        affinities=kwargs.get("affinities", {}),
        blocks=kwargs.get("blocks", []),
        secrets=kwargs.get("secrets"),
    )
    assert result is not None
    return result


def test_full_mesh_by_default() -> None:
    p = plan("n1")
    assert (p.router_id, p.local_as, p.listen_port, p.cluster_id) == ("198.51.100.1", 64512, 179, None)
    assert p.sessions == {
        Session("198.51.100.2", 64512, "node-to-node mesh", peer_node="n2"),
        Session("198.51.100.3", 65003, "node-to-node mesh", peer_node="n3"),
    }
    assert plan("n3").local_as == 65003


def test_as_and_mesh_settings_from_bgp_configuration() -> None:
    p = plan(
        "n1",
        configs=[
            config(asNumber=65000, nodeMeshPassword="s3", nodeMeshMaxRestartTime="5m"),
            config("node.n2", asNumber=65002),
        ],
    )
    assert p.local_as == 65000
    mesh = {s.peer_node: s for s in p.sessions}
    assert mesh["n2"].peer_as == 65002 and mesh["n2"].password == "s3"
    assert mesh["n2"].timers == Timers(restart_time=300)


def test_no_node_or_address_means_no_plan() -> None:
    assert plan_bgp("ghost", nodes=NODES, configs=[], peers=[], pools=[], affinities={}, blocks=[]) is None
    bare = Node.model_validate({"metadata": {"name": "bare"}})
    assert plan_bgp("bare", nodes=[bare], configs=[], peers=[], pools=[], affinities={}, blocks=[]) is None


def test_explicit_peers_global_and_node_specific() -> None:
    peers = [
        peer("tor", peerIP="192.0.2.1", asNumber=64999, keepaliveTime="10s", holdTime="30s", password="pw"),
        peer("only-n2", node="n2", peerIP="192.0.2.2:1179", asNumber=64998),
        peer("rack-a", nodeSelector="rack == 'a'", peerIP="192.0.2.3", asNumber=64997),
    ]
    nodes = [node("n1", "198.51.100.1", {"rack": "a"}), node("n2", "198.51.100.2")]
    p1 = plan("n1", nodes=nodes, configs=[config(nodeToNodeMeshEnabled=False)], peers=peers)
    assert p1.sessions == {
        Session("192.0.2.1", 64999, "global", password="pw", timers=Timers(keepalive=10.0, hold=30.0)),
        Session("192.0.2.3", 64997, "node specific"),
    }
    p2 = plan("n2", nodes=nodes, configs=[config(nodeToNodeMeshEnabled=False)], peers=peers)
    assert {(s.peer_ip, s.peer_port, s.kind) for s in p2.sessions} == {
        ("192.0.2.1", 179, "global"),
        ("192.0.2.2", 1179, "node specific"),
    }


def test_route_reflectors() -> None:
    nodes = [
        node("rr1", "198.51.100.10", {"rr": "true"}, routeReflectorClusterID="224.0.0.1"),
        node("rr2", "198.51.100.11", {"rr": "true"}, routeReflectorClusterID="224.0.0.1"),
        node("c1", "198.51.100.1"),
        node("c2", "198.51.100.2"),
    ]
    peers = [
        peer("to-rrs", peerSelector="has(rr)"),
        peer("rrs-to-all", nodeSelector="has(rr)", peerSelector="all()"),
    ]
    configs = [config(nodeToNodeMeshEnabled=False)]
    client = plan("c1", nodes=nodes, configs=configs, peers=peers)
    assert {(s.peer_node, s.kind, s.rr_client) for s in client.sessions} == {
        ("rr1", "route reflector", False),
        ("rr2", "route reflector", False),
    }
    reflector = plan("rr1", nodes=nodes, configs=configs, peers=peers)
    assert reflector.cluster_id == "224.0.0.1"
    # Calico's one-BGPPeer set-up: every node peers with the reflectors, and they peer back.
    only_to_rrs = plan("rr1", nodes=nodes, configs=configs, peers=peers[:1])
    assert only_to_rrs.sessions == reflector.sessions
    assert plan("c1", nodes=nodes, configs=configs, peers=peers[:1]).sessions == client.sessions
    assert {(s.peer_node, s.kind, s.rr_client) for s in reflector.sessions} == {
        ("rr2", "route reflector", False),
        ("c1", "route reflector client", True),
        ("c2", "route reflector client", True),
    }


def test_announcements() -> None:
    pools = [
        pool("pods", "10.0.0.0/16"),
        pool("quiet", "10.1.0.0/16", disableBGPExport=True),
        pool("off", "10.2.0.0/16", disabled=True),
    ]
    affinities = {
        ("n1", "10.0.0.0/26"): AffinityState.CONFIRMED,
        ("n1", "10.0.0.64/26"): AffinityState.PENDING,
        ("n1", "10.1.0.0/26"): AffinityState.CONFIRMED,
        ("n1", "10.2.0.0/26"): AffinityState.CONFIRMED,
        ("n2", "10.0.1.0/26"): AffinityState.CONFIRMED,
    }
    theirs, _ = AllocationBlock.empty("10.0.1.0/26", "n2").assign(1, Attribute.of("h", {"node": "n2"}))
    theirs, _ = theirs.assign(2, Attribute.of("borrowed", {"node": "n1"}))
    p = plan("n1", pools=pools, affinities=affinities, blocks=[theirs])
    assert p.announce == {"10.0.0.0/26", "10.0.1.1/32", "10.0.1.2/32"}
    assert plan("n2", pools=pools, affinities=affinities, blocks=[theirs]).announce == {"10.0.1.0/26"}


def test_passwords_from_secrets_and_sessions_that_wait_for_theirs() -> None:
    ref = {"secretKeyRef": {"name": "bgp-passwords", "key": "mesh"}}
    tor = {"secretKeyRef": {"name": "bgp-passwords", "key": "tor"}}
    configs = [config(nodeMeshPassword=ref)]
    peers = [peer("tor", peerIP="192.0.2.1", asNumber=64999, password=tor)]
    assert secret_refs(configs, peers) == {("bgp-passwords", "mesh"), ("bgp-passwords", "tor")}
    have = plan("n1", configs=configs, peers=peers, secrets={("bgp-passwords", "mesh"): "m3sh"})
    assert {s.peer_ip: s.password for s in have.sessions} == {"198.51.100.2": "m3sh", "198.51.100.3": "m3sh"}
    (waiting,) = have.waiting  # never peer without the password asked for
    assert waiting.peer_ip == "192.0.2.1" and waiting.waiting == "password secret bgp-passwords/tor not found"
    too_long = plan("n1", configs=configs, peers=[], secrets={("bgp-passwords", "mesh"): "x" * 81})
    assert not too_long.sessions and all("at most 80 bytes" in (s.waiting or "") for s in too_long.waiting)
    with pytest.raises(ValueError, match="not a Kubernetes Secret name"):
        BGPPeer.model_validate(
            {
                "metadata": {"name": "p"},
                "spec": {
                    "peerIP": "192.0.2.1",
                    "asNumber": 1,
                    "password": {"secretKeyRef": {"name": "Bad_Name", "key": "k"}},
                },
            }
        )
