"""Calico's BGP options against BIRD 2: filters, service addresses with communities, and a
BGPPeer's localASNumber, ttlSecurity, numAllowedLocalASNumbers and keepOriginalNextHop."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lab.agents import BGPProcess, BlockWorker, start_agents
from lab.network import lab
from lab.processes import wait_until
from lab.routers import Bird
from tests.bgp_helpers import (
    BLOCK_SIZE,
    MESH_OFF,
    POOL,
    all_established,
    apply,
    learned,
    node_doc,
    node_status,
    peer_doc,
    running,
)

SMALL, LARGE = "203.0.113.0/25", "203.0.113.128/25"  # the outside world, as BIRD announces it


def bgp_filter(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "BGPFilter",
        "metadata": {"name": name},
        "spec": spec,
    }


def next_hops(bird: Bird) -> dict[str, set[str]]:
    return {prefix: {r["next_hop"] for r in routes} for prefix, routes in bird.routes().items()}


def test_bgp_filters_reject_an_imported_prefix_and_keep_a_block_from_being_exported(tmp_path: Path) -> None:
    with lab(tmp_path, 2) as cluster:
        felid, router = cluster.hosts
        apply(cluster, POOL)
        worker = BlockWorker(cluster.etcd.netns or "", cluster.etcd.url, BLOCK_SIZE)
        bird = Bird(router, tmp_path, [felid], statics=[SMALL, LARGE])
        try:
            kept, held = worker.claim(felid.node)["block"], worker.claim(felid.node)["block"]
            rules = {
                "importV4": [{"cidr": LARGE, "matchOperator": "Equal", "action": "Reject"}],
                "exportV4": [{"cidr": held, "matchOperator": "Equal", "action": "Reject"}],
            }
            peer = peer_doc("bird", router.address, 64512, filters=["edge"])
            apply(cluster, MESH_OFF, node_doc(felid), peer)
            bird.start()
            with running(start_agents(cluster, tmp_path, [felid])) as agents:
                # A BGPPeer naming a filter that does not exist waits: it never peers unfiltered.
                def waiting() -> bool:
                    status = agents[0].status()
                    return bool(status and status["peers"] and status["peers"][0]["state"] == "waiting")

                wait_until(waiting, 15, "the session waiting for its filter")
                row = next(line for line in node_status(felid).splitlines() if router.address in line)
                assert "BGPFilter 'edge' not found" in row, row
                assert bird.established() == 0
                apply(cluster, bgp_filter("edge", **rules))
                wait_until(lambda: all_established(agents[0]), 20, "the session with BIRD up")
                wait_until(lambda: learned(felid) == {SMALL: router.address}, 10, f"only {SMALL} imported")
                wait_until(lambda: next_hops(bird) == {kept: {felid.address}}, 10, f"only {kept} exported")
                time.sleep(2)
                assert LARGE not in learned(felid) and held not in bird.routes()
                # A changed filter takes effect without a session reset (BIRD's routes are kept).
                apply(cluster, bgp_filter("edge", exportV4=rules["exportV4"]))
                wait_until(
                    lambda: learned(felid) == {SMALL: router.address, LARGE: router.address}, 10, "both"
                )
                apply(
                    cluster,
                    bgp_filter(
                        "edge",
                        exportV4=[
                            {
                                "cidr": "10.100.0.0/16",
                                "matchOperator": "In",
                                "prefixLength": {"min": BLOCK_SIZE},
                                "action": "Accept",
                            }
                        ],
                    ),
                )
                wait_until(lambda: set(next_hops(bird)) == {kept, held}, 10, "both blocks exported")
                assert bird.established() == 1
        finally:
            bird.kill()
            worker.close()


def test_service_cidrs_reach_bird_from_every_node_with_their_communities(tmp_path: Path) -> None:
    with lab(tmp_path, 3) as cluster:
        felids, router = cluster.hosts[:2], cluster.hosts[2]
        config = {
            "apiVersion": "projectcalico.org/v3",
            "kind": "BGPConfiguration",
            "metadata": {"name": "default"},
            "spec": {
                "serviceClusterIPs": [{"cidr": "10.96.0.0/16"}],
                "serviceExternalIPs": [{"cidr": "198.18.0.0/24"}],
                "serviceLoadBalancerIPs": [{"cidr": "198.18.1.0/24"}],
                "communities": [{"name": "services", "value": "64512:300"}],
                "prefixAdvertisements": [
                    {"cidr": "10.96.0.0/16", "communities": ["services", "64512:301"]},
                    {"cidr": "10.100.0.0/16", "communities": ["64512:100:200"]},
                ],
            },
        }
        apply(cluster, POOL)
        worker = BlockWorker(cluster.etcd.netns or "", cluster.etcd.url, BLOCK_SIZE)
        bird = Bird(router, tmp_path, felids)
        try:
            blocks = {h.node: worker.claim(h.node)["block"] for h in felids}
            apply(
                cluster, POOL, config, peer_doc("bird", router.address, 64512), *(node_doc(h) for h in felids)
            )
            bird.start()
            with running(start_agents(cluster, tmp_path, felids)):
                addresses = {h.address for h in felids}
                services = ("10.96.0.0/16", "198.18.0.0/24", "198.18.1.0/24")

                def every_node_announces() -> bool:
                    held = bird.routes()
                    return all({r["from"] for r in held.get(cidr, [])} == addresses for cidr in services)

                wait_until(every_node_announces, 20, "each service CIDR from both nodes")
                held = bird.routes()
                for route in held["10.96.0.0/16"]:
                    assert route["communities"] == ["64512:300", "64512:301"], route
                    assert route["next_hop"] == route["from"], route
                assert all(r["communities"] == [] for r in held["198.18.0.0/24"]), held["198.18.0.0/24"]
                for host in felids:
                    (route,) = held[blocks[host.node]]
                    assert route["from"] == host.address and route["communities"] == ["64512:100:200"], route
                # Each node's own service CIDRs are not routed to the others: none is in a kernel.
                for host in felids:
                    assert not set(services) & set(learned(host)), learned(host)
        finally:
            bird.kill()
            worker.close()


def test_peer_options_local_as_ttl_security_allowed_local_as_and_original_next_hop(tmp_path: Path) -> None:
    """node-1 peers with BIRD (AS 64513) as AS 64600, with GTSM, taking paths that hold 64600 once;
    it passes node-2's block on with node-2 as the next hop."""
    with lab(tmp_path, 3) as cluster:
        one, two, router = cluster.hosts
        peer = peer_doc(
            "bird",
            router.address,
            64513,
            node=one.node,
            localASNumber=64600,
            ttlSecurity=1,
            numAllowedLocalASNumbers=1,
            keepOriginalNextHop=True,
        )
        # BIRD's export puts 64600 into the paths: once in SMALL's (allowed), twice in LARGE's.
        export = (
            "filter { if net = " + SMALL + " then bgp_path.prepend(64600); "
            "if net = " + LARGE + " then { bgp_path.prepend(64600); bgp_path.prepend(64600); } accept; }"
        )
        apply(cluster, POOL)
        worker = BlockWorker(cluster.etcd.netns or "", cluster.etcd.url, BLOCK_SIZE)
        without_gtsm = Bird(
            router, tmp_path / "plain", [one], asn=64513, peer_as=64600, statics=[SMALL, LARGE], export=export
        )
        bird = Bird(
            router,
            tmp_path,
            [one],
            asn=64513,
            peer_as=64600,
            statics=[SMALL, LARGE],
            export=export,
            options="ttl security on;",
        )
        try:
            blocks = {h.node: worker.claim(h.node)["block"] for h in (one, two)}
            apply(cluster, peer, node_doc(one), node_doc(two))
            without_gtsm.start()
            with running(start_agents(cluster, tmp_path, [one, two])) as agents:
                # BIRD sends with TTL 1 unless told to use GTSM: felid's minimum TTL of 255 refuses it.
                wait_until(lambda: all_established(agents[1]), 20, "the mesh up")
                time.sleep(8)
                assert without_gtsm.established() == 0
                without_gtsm.kill()
                bird.start()
                wait_until(lambda: bird.established() == 1, 30, "the GTSM session with BIRD up")
                want = {blocks[one.node]: {one.address}, blocks[two.node]: {two.address}}
                wait_until(lambda: next_hops(bird) == want, 10, f"BIRD has {want}")
                paths = {p: [r["as_path"] for r in rs] for p, rs in bird.routes().items()}
                assert paths[blocks[two.node]] == [[64600]], paths  # 64512 not shown: the local AS is 64600
                wait_until(lambda: learned(one).get(SMALL) == router.address, 10, f"{SMALL} learned")
                time.sleep(1)
                assert LARGE not in learned(one), learned(one)
        finally:
            without_gtsm.kill()
            bird.kill()
            worker.close()


def test_source_address_none_lets_the_kernel_choose(tmp_path: Path) -> None:
    """sourceAddress: None leaves the connection's source to the kernel; the session still comes up."""
    with lab(tmp_path, 2) as cluster:
        felid, router = cluster.hosts
        apply(
            cluster,
            POOL,
            MESH_OFF,
            node_doc(felid),
            peer_doc("bird", router.address, 64512, sourceAddress="None"),
        )
        bird = Bird(router, tmp_path, [felid])
        agent = BGPProcess(felid, tmp_path)
        try:
            bird.start()
            agent.start()
            with running([agent]):
                wait_until(lambda: all_established(agent), 20, "the session with BIRD up")
                config = (tmp_path / f"bgp-{felid.node}" / "exabgp.conf").read_text()
                assert "local-address auto;" in config, config
        finally:
            bird.kill()
