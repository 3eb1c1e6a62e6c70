"""bgp's calculation layer: sessions and announcements from datastore state, no I/O."""

from __future__ import annotations

from typing import Any

import pytest

from bgp.calc import BGPPlan, PlanInputs, Session, Timers, plan_bgp, secret_refs
from datastore.keys import IPAMKeys, KeyLayout
from datastore.models import BGPConfiguration, BGPFilter, BGPPeer, IPPool, Node
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
        filters=kwargs.get("filters", []),
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


def test_of_two_felid_nodes_the_one_with_the_higher_address_waits_to_be_connected() -> None:
    nodes = [*NODES, node("rr", "198.51.100.9", {"rr": "true"}, routeReflectorClusterID="224.0.0.1")]
    peers = [peer("to-rr", peerSelector="has(rr)"), peer("tor", peerIP="192.0.2.1", asNumber=64999)]
    plans = {n.name: plan(n.name, nodes=nodes, peers=peers) for n in nodes}
    passive = {(me, s.peer_node or s.peer_ip) for me, p in plans.items() for s in p.sessions if s.passive}
    assert passive == {("n2", "n1"), ("n3", "n1"), ("n3", "n2"), ("rr", "n1"), ("rr", "n2"), ("rr", "n3")}
    # A router nobody here configures connects as it likes: felid connects to it too.
    assert all(not s.passive for p in plans.values() for s in p.sessions if s.peer_node is None)


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


def bgp_filter(name: str, **spec: Any) -> BGPFilter:
    return BGPFilter.model_validate({"metadata": {"name": name}, "spec": spec})


def test_peer_options_and_filters_reach_its_sessions() -> None:
    edge = bgp_filter(
        "edge",
        importV4=[
            {"cidr": "203.0.113.0/24", "matchOperator": "In", "prefixLength": {"min": 25}, "action": "Reject"}
        ],
        exportV4=[{"cidr": "10.0.0.0/16", "matchOperator": "NotIn", "action": "Reject"}],
    )
    tor = peer(
        "tor",
        peerIP="192.0.2.1",
        asNumber=65000,
        localASNumber=64600,
        keepOriginalNextHop=True,
        sourceAddress="None",
        numAllowedLocalASNumbers=2,
        ttlSecurity=1,
        filters=["edge"],
    )
    have = plan("n1", peers=[tor], filters=[edge])
    session = next(s for s in have.sessions if s.peer_ip == "192.0.2.1")
    assert (session.local_as, session.next_hop, session.use_node_ip) == (64600, "Keep", False)
    assert (session.allowed_local_as, session.ttl_security) == (2, 1)
    assert have.local_as_for(session) == 64600 and not have.ibgp(session)
    assert session.imports("203.0.113.0/24") and not session.imports("203.0.113.128/25")
    assert session.exports("10.0.1.0/26", remote=False) and not session.exports("198.18.0.0/15", remote=True)
    # Mesh sessions carry none of it.
    mesh = next(s for s in have.sessions if s.peer_ip == "198.51.100.2")
    assert (mesh.local_as, mesh.import_rules, mesh.next_hop) == (None, (), "Auto")
    # A filter that does not exist holds the session back; a filter change is not a session change.
    (waiting,) = plan("n1", peers=[tor]).waiting
    assert waiting.waiting == "BGPFilter 'edge' not found"
    assert have.sessions == plan("n1", peers=[tor], filters=[bgp_filter("edge")]).sessions


def test_filter_rules_as_calico_matches_them() -> None:
    def rule(**spec: Any) -> Any:
        return bgp_filter("f", exportV4=[{"action": "Accept", **spec}]).spec.export_v4[0]

    assert rule(cidr="10.0.0.0/16", matchOperator="Equal").matches("10.0.0.0/16", False)
    assert not rule(cidr="10.0.0.0/16", matchOperator="Equal").matches("10.0.1.0/24", False)
    assert rule(cidr="10.0.0.0/16", matchOperator="NotEqual").matches("10.0.1.0/24", False)
    assert rule(cidr="10.0.0.0/16", matchOperator="In").matches("10.0.1.0/24", False)
    assert not rule(cidr="10.0.0.0/16", matchOperator="In").matches("10.1.0.0/24", False)
    assert rule(cidr="10.0.0.0/16", matchOperator="NotIn").matches("10.1.0.0/24", False)
    sized = rule(cidr="10.0.0.0/8", matchOperator="In", prefixLength={"min": 24, "max": 26})
    assert sized.matches("10.1.2.0/24", False) and not sized.matches("10.1.0.0/16", False)
    assert not sized.matches("10.1.2.0/28", False)
    assert rule(source="RemotePeers").matches("10.0.0.0/8", True) and not rule(source="RemotePeers").matches(
        "10.0.0.0/8", False
    )
    for bad, message in (
        ({"cidr": "10.0.0.0/8"}, "cidr and matchOperator go together"),
        ({"cidr": "10.0.0.0/8", "matchOperator": "Equal", "prefixLength": {"min": 9}}, "only with a cidr"),
        ({"interface": "eth0"}, "interface: 'eth0' is not supported yet"),
        ({"cidr": "10.0.0.1/8", "matchOperator": "In"}, "host bits"),
    ):
        with pytest.raises(ValueError, match=message):
            rule(**bad)
    with pytest.raises(ValueError, match="exportV6: IPv6 is not supported yet"):
        bgp_filter("f", exportV6=[{"action": "Accept"}])


def test_service_cidrs_are_announced_by_every_node_with_their_communities() -> None:
    configs = [
        config(
            serviceClusterIPs=[{"cidr": "10.96.0.0/16"}],
            serviceExternalIPs=[{"cidr": "198.18.0.0/24"}],
            serviceLoadBalancerIPs=[{"cidr": "198.18.1.0/24"}],
            communities=[{"name": "svc", "value": "64512:300"}],
            prefixAdvertisements=[
                {"cidr": "10.96.0.0/16", "communities": ["svc", "64512:301"]},
                {"cidr": "10.0.0.0/8", "communities": ["64512:1:2"]},
            ],
        )
    ]
    for me in ("n1", "n2"):
        have = plan(me, configs=configs)
        assert {"10.96.0.0/16", "198.18.0.0/24", "198.18.1.0/24"} <= have.announce
        assert have.communities_for("10.96.0.0/16") == ("64512:300", "64512:301", "64512:1:2")
        assert have.communities_for("198.18.0.0/24") == ()
    with pytest.raises(ValueError, match="neither a community named"):
        config(prefixAdvertisements=[{"cidr": "10.0.0.0/8", "communities": ["nosuch"]}])
    with pytest.raises(ValueError, match="is not a community"):
        config(communities=[{"name": "big", "value": "65536:1"}])
    with pytest.raises(ValueError, match="serviceClusterIPs: may only be set in the 'default'"):
        config("node.n1", serviceClusterIPs=[{"cidr": "10.96.0.0/16"}])


def test_only_changes_that_touch_a_node_replan_it() -> None:
    """Every pod start writes a block and maybe an affinity somewhere: n1 replans only when one of
    its own affinities, a resource bgp follows, or the addresses it borrowed change."""
    ipam = IPAMKeys("/felid")
    inputs = PlanInputs("n1", ipam)
    theirs = AllocationBlock.empty("10.0.1.0/26", "n2")
    blocks = {theirs.cidr: theirs}
    block_key = ipam.block(theirs.cidr)
    assert not inputs.changed_by([block_key], blocks)
    blocks[theirs.cidr], _ = theirs.assign(1, Attribute.of("pod-on-n2", {"node": "n2"}))
    assert not inputs.changed_by([block_key, ipam.affinity("n2", "10.0.2.0/26")], blocks)
    borrowing, _ = blocks[theirs.cidr].assign(2, Attribute.of("pod-on-n1", {"node": "n1"}))
    blocks[theirs.cidr] = borrowing
    assert inputs.changed_by([block_key], blocks)
    assert not inputs.changed_by([block_key], blocks)  # the same borrowed address: nothing new
    blocks[theirs.cidr], _ = borrowing.assign(3, Attribute.of("another-on-n2", {"node": "n2"}))
    assert not inputs.changed_by([block_key], blocks)
    del blocks[theirs.cidr]
    assert inputs.changed_by([block_key], blocks)  # the borrowed address went with the block
    assert inputs.changed_by([ipam.affinity("n1", "10.0.3.0/26")], blocks)
    assert inputs.changed_by([KeyLayout("/felid").resource(BGPPeer, "rack1")], blocks)
    assert not inputs.changed_by([], blocks)
