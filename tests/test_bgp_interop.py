"""felid's BGP against routers nobody here wrote: GoBGP (no graceful restart, no end-of-RIB) as an
eBGP peer, FRR as the route reflector of felid nodes (it reflects a client's own routes back to it),
and session collisions.  BIRD's tests are in test_bgp_mesh.py."""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

from lab.agents import BlockWorker, start_agents
from lab.cluster import Cluster
from lab.network import LabHost, lab
from lab.processes import wait_until
from lab.routers import FRR, GoBGP
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

FELID_AS = 64512
GOBGP_AS = 64600
OUTSIDE = "203.0.113.0/24"


def test_gobgp_as_an_ebgp_peer_without_graceful_restart(tmp_path: Path) -> None:
    with lab(tmp_path, 3) as cluster:
        felids, router = cluster.hosts[:2], cluster.hosts[2]
        apply(cluster, POOL, peer_doc("gobgp", router.address, GOBGP_AS), *(node_doc(h) for h in felids))
        worker = BlockWorker(cluster.etcd.netns or "", cluster.etcd.url, BLOCK_SIZE)
        gobgp = GoBGP(router, tmp_path, GOBGP_AS, [(h.address, FELID_AS) for h in felids])
        try:
            blocks = {h.node: worker.claim(h.node)["block"] for h in felids}
            gobgp.start()
            with running(start_agents(cluster, tmp_path, felids)):
                # felid -> GoBGP: from each node every pool route it knows, with itself as the next
                # hop (as Calico's nodes give an eBGP peer the blocks they learned over the mesh).
                for h in felids:
                    wait_until(lambda h=h: gobgp.established(h.address), 30, f"GoBGP and {h.node} up")
                    wait_until(
                        lambda h=h: gobgp.received(h.address) == {b: h.address for b in blocks.values()},
                        10,
                        f"GoBGP learns every block from {h.node}",
                    )
                # GoBGP -> felid: its route via GoBGP, beside the other node's block from the mesh.
                gobgp.announce(OUTSIDE)
                for host, other in ((felids[0], felids[1]), (felids[1], felids[0])):
                    want = {OUTSIDE: router.address, blocks[other.node]: other.address}
                    wait_until(lambda h=host, w=want: learned(h) == w, 10, f"{host.node} learns {want}")
                row = next(line for line in node_status(felids[0]).splitlines() if router.address in line)
                assert "| global" in row and "| up" in row and "Established" in row, row
                # Its withdraw takes effect at once: GoBGP sends no end-of-RIB to wait for.
                gobgp.withdraw(OUTSIDE)
                took = wait_until(lambda: all(OUTSIDE not in learned(h) for h in felids), 1.0, "withdrawn")
                print(f"GoBGP's withdraw left every kernel {took:.3f}s after the command")
                # A session without graceful restart that drops takes its routes with it, at once.
                gobgp.announce(OUTSIDE)
                wait_until(lambda: all(OUTSIDE in learned(h) for h in felids), 10, "announced again")
                gobgp.kill()
                took = wait_until(lambda: all(OUTSIDE not in learned(h) for h in felids), 2.0, "dropped")
                print(f"GoBGP's routes left every kernel {took:.3f}s after it was killed")
                for host, other in ((felids[0], felids[1]), (felids[1], felids[0])):
                    assert learned(host) == {blocks[other.node]: other.address}
        finally:
            gobgp.kill()
            worker.close()


def test_frr_as_the_route_reflector_of_three_felid_nodes(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 4, prefix="ft")
    try:
        cluster.build()
        felids, reflector = cluster.hosts[:3], cluster.hosts[3]
        cluster.apply([MESH_OFF, peer_doc("frr", reflector.address, FELID_AS)])
        frr = FRR(
            reflector, tmp_path, [h.address for h in felids], asn=FELID_AS, cluster_id=reflector.address
        )
        try:
            frr.start()
            for host in felids:
                cluster.start_node(host)
            cluster.wait_ready(felids, timeout=90)
            assert frr.established() == {h.address for h in felids}
            pods = [cluster.add_workload(h) for h in felids]
            blocks = {p.node: str(ipaddress.ip_network(f"{p.address}/26", strict=False)) for p in pods}
            for host in felids:
                # Exactly one session, to FRR; the others' blocks via their owners (next hops kept).
                rows = [line for line in node_status(host).splitlines() if line.startswith("| 198.51.100.")]
                assert len(rows) == 1 and reflector.address in rows[0] and "Established" in rows[0], rows
                want = {blocks[o.node]: o.address for o in felids if o is not host}
                wait_until(lambda h=host, w=want: learned(h) == w, 10, f"{host.node} learns {want}")
            for host in felids:
                # FRR sends each client its own block back; no host routes its own block via anyone.
                assert blocks[host.node] in frr.advertised_to(host.address)
                assert blocks[host.node] not in learned(host)
            results = cluster.ping_matrix(pods)
            assert all(r.ok for r in results), [r for r in results if not r.ok]
        finally:
            frr.kill()
    finally:
        cluster.destroy()


def bgp_connections(host: LabHost, peer: LabHost) -> list[str]:
    """The established TCP connections between the two on port 179, either way, as ``ss`` shows them."""
    where = f"( dport = :179 or sport = :179 ) and dst {peer.address}"
    shown = host.run("ss", "-Htn", "state", "established", where)
    return [line for line in shown.stdout.splitlines() if line.strip()]


def dialled(host: LabHost, peer: LabHost) -> bool:
    """Whether ``host``'s own connection to ``peer`` has completed (from its side)."""
    where = f"dst {peer.address} and dport = :179"
    return bool(host.run("ss", "-Htn", "state", "established", where).stdout.strip())


HOLD_BACK = ["INPUT", "-p", "tcp", "--dport", "179", "!", "--syn", "-j", "DROP"]


def test_a_session_collision_with_frr_settles_to_one_established_session(tmp_path: Path) -> None:
    """Both sides connect at once: each completes its own connection while the other's is held back
    (the handshake's last ACK dropped), then both are let through, so each side has two."""
    with lab(tmp_path, 2) as cluster:
        felid, peer = cluster.hosts
        apply(cluster, POOL, node_doc(felid), MESH_OFF, peer_doc("frr", peer.address, FELID_AS))
        frr = FRR(peer, tmp_path, [felid.address], asn=FELID_AS, cluster_id=peer.address)
        for host in (felid, peer):
            host.run("iptables", "-A", *HOLD_BACK, check=True)
        try:
            frr.start()
            with running(start_agents(cluster, tmp_path, [felid])) as agents:
                wait_until(lambda: dialled(felid, peer) and dialled(peer, felid), 30, "both dialled out")
                for host in (felid, peer):
                    host.run("iptables", "-D", *HOLD_BACK, check=True)

                def settled() -> bool:
                    return all(all_established(a) for a in agents) and frr.established() == {felid.address}

                wait_until(settled, 30, "one session up on both sides")
                time.sleep(5)  # and it stays up, on one connection
                assert settled()
                assert len(bgp_connections(felid, peer)) == 1, bgp_connections(felid, peer)
        finally:
            frr.kill()


def test_of_two_felid_nodes_only_the_lower_address_connects(tmp_path: Path) -> None:
    """No collision to settle between two felid nodes: the one with the higher address is passive
    (two ExaBGPs that both connect can drop each other's connection in step, again and again)."""
    with lab(tmp_path, 2) as cluster:
        low, high = sorted(cluster.hosts, key=lambda h: ipaddress.IPv4Address(h.address))
        apply(cluster, POOL, node_doc(low), node_doc(high))  # the node-to-node mesh
        with running(start_agents(cluster, tmp_path, [high, low])) as agents:
            wait_until(lambda: all(all_established(a) for a in agents), 30, "the session up on both sides")
            assert dialled(low, high) and not dialled(high, low)
            assert len(bgp_connections(low, high)) == 1, bgp_connections(low, high)
