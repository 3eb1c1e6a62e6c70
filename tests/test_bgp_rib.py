"""The RIB (graceful restart, loop checks) and the learned routes' kernel form: pure."""

from __future__ import annotations

import ipaddress
from typing import Any

from bgp.rib import RIB, Identity
from bgp.routing import KernelRouter
from datastore.models import IPPool
from felix.calc.model import Route

ME = Identity(router_id="198.51.100.1", local_as=64512, cluster_id="224.0.0.1")


def update(
    peer: str,
    announce: dict[str, list[str]] | None = None,
    withdraw: list[str] | None = None,
    peer_as: int = 64512,
    attributes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    upd: dict[str, Any] = {"attribute": attributes or {}}
    if announce:
        upd["announce"] = {"ipv4 unicast": {nh: [{"nlri": p} for p in ps] for nh, ps in announce.items()}}
    if withdraw:
        upd["withdraw"] = {"ipv4 unicast": [{"nlri": p} for p in withdraw]}
    return {
        "type": "update",
        "neighbor": {"address": {"peer": peer}, "asn": {"peer": peer_as}, "message": {"update": upd}},
    }


def state(peer: str, value: str) -> dict[str, Any]:
    return {"type": "state", "neighbor": {"address": {"peer": peer}, "state": value}}


def eor(peer: str) -> dict[str, Any]:
    return {"type": "update", "neighbor": {"address": {"peer": peer}, "message": {"eor": {"afi": "ipv4"}}}}


def test_announce_and_withdraw() -> None:
    rib = RIB(ME)
    rib.apply(update("198.51.100.2", {"198.51.100.2": ["10.0.1.0/26", "10.0.2.0/26"]}), 0)
    rib.apply(update("198.51.100.2", withdraw=["10.0.2.0/26"]), 1)
    assert rib.best() == {"10.0.1.0/26": "198.51.100.2"}


def test_graceful_restart_keeps_routes_until_eor_or_deadline() -> None:
    rib = RIB(ME, restart_times={"198.51.100.2": 120})
    rib.apply(update("198.51.100.2", {"198.51.100.2": ["10.0.1.0/26", "10.0.2.0/26"]}), 0)
    rib.apply(state("198.51.100.2", "down"), 10)
    assert set(rib.best()) == {"10.0.1.0/26", "10.0.2.0/26"}  # stale, still routed
    rib.expire(100)
    assert set(rib.best()) == {"10.0.1.0/26", "10.0.2.0/26"}
    rib.apply(state("198.51.100.2", "up"), 20)
    rib.apply(update("198.51.100.2", {"198.51.100.2": ["10.0.1.0/26"]}), 21)
    rib.apply(eor("198.51.100.2"), 22)  # 10.0.2.0/26 was not re-announced: swept
    assert rib.best() == {"10.0.1.0/26": "198.51.100.2"}
    rib.apply(state("198.51.100.2", "down"), 30)
    rib.expire(30 + 120)
    assert rib.best() == {}


def test_no_restart_time_means_no_stale_routes() -> None:
    rib = RIB(ME)
    rib.apply(update("198.51.100.2", {"198.51.100.2": ["10.0.1.0/26"]}), 0)
    rib.apply(state("198.51.100.2", "down"), 5)
    rib.expire(5)
    assert rib.best() == {}


def test_fresh_beats_stale_and_choice_is_stable() -> None:
    rib = RIB(ME, restart_times={"198.51.100.2": 60})
    rib.apply(update("198.51.100.2", {"198.51.100.2": ["10.0.1.0/26"]}), 0)
    rib.apply(state("198.51.100.2", "down"), 1)
    rib.apply(update("198.51.100.3", {"198.51.100.9": ["10.0.1.0/26"]}), 2)
    assert rib.best() == {"10.0.1.0/26": "198.51.100.9"}


def test_loops_are_dropped() -> None:
    rib = RIB(ME)
    rib.apply(
        update(
            "198.51.100.2", {"198.51.100.1": ["10.0.0.0/26"]}, attributes={"originator-id": "198.51.100.1"}
        ),
        0,
    )
    rib.apply(
        update("198.51.100.2", {"198.51.100.5": ["10.0.5.0/26"]}, attributes={"cluster-list": ["224.0.0.1"]}),
        0,
    )
    rib.apply(
        update(
            "192.0.2.1",
            {"192.0.2.1": ["203.0.113.0/24"]},
            peer_as=65000,
            attributes={"as-path": [65000, 64512]},
        ),
        0,
    )
    rib.apply(
        update("192.0.2.1", {"192.0.2.1": ["198.18.0.0/15"]}, peer_as=65000, attributes={"as-path": [65000]}),
        0,
    )
    assert rib.best() == {"198.18.0.0/15": "192.0.2.1"}


def pool(cidr: str, **spec: Any) -> IPPool:
    return IPPool.model_validate(
        {"metadata": {"name": cidr.replace("/", "-").replace(".", "-")}, "spec": {"cidr": cidr, **spec}}
    )


def test_kernel_routes_by_encapsulation() -> None:
    pools = [
        pool("10.1.0.0/16", ipipMode="Always"),
        pool("10.2.0.0/16", ipipMode="CrossSubnet"),
        pool("10.3.0.0/16"),
        pool("10.4.0.0/16", vxlanMode="Always"),
    ]
    best = {
        "10.1.0.0/26": "198.51.100.2",  # IPIP always
        "10.2.0.0/26": "198.51.100.3",  # cross-subnet, same subnet: direct
        "10.2.1.0/26": "203.0.113.7",  # cross-subnet, other subnet: tunnel
        "10.3.0.0/26": "198.51.100.4",  # no encapsulation
        "10.4.0.0/26": "198.51.100.5",  # VXLAN: felix's business
        "192.0.2.128/25": "198.51.100.254",  # external, outside every pool
        "10.3.9.0/26": "198.51.100.6",  # our own block, echoed back
    }
    subnet = ipaddress.IPv4Network("198.51.100.0/24")
    router = KernelRouter(pools, subnet, "eth0")
    routes = router.routes(best, own={"10.3.9.0/26"})
    assert routes == {
        Route("10.1.0.0/26", "via", ifname="tunl0", gateway="198.51.100.2", onlink=True),
        Route("10.2.0.0/26", "via", ifname="eth0", gateway="198.51.100.3"),
        Route("10.2.1.0/26", "via", ifname="tunl0", gateway="203.0.113.7", onlink=True),
        Route("10.3.0.0/26", "via", ifname="eth0", gateway="198.51.100.4"),
        Route("192.0.2.128/25", "via", ifname="eth0", gateway="198.51.100.254"),
    }
    # What it remembers follows the table: a new next hop is routed afresh, a gone prefix goes.
    moved = {"10.2.1.0/26": "198.51.100.9", "10.1.0.0/26": "198.51.100.2"}
    assert router.routes(moved) == {
        Route("10.2.1.0/26", "via", ifname="eth0", gateway="198.51.100.9"),
        Route("10.1.0.0/26", "via", ifname="tunl0", gateway="198.51.100.2", onlink=True),
    }
    assert router.serves(pools, subnet, "eth0")
    assert not router.serves(pools[:3], subnet, "eth0") and not router.serves(pools, subnet, "eth1")


def opened(peer: str, *capabilities: str) -> dict[str, Any]:
    """The peer's OPEN as ExaBGP reports it (``receive { open; }``): capabilities keyed by code."""
    caps = {code: {"name": "graceful restart" if code == "64" else "other"} for code in capabilities}
    open_ = {"version": 4, "asn": 64600, "hold_time": 90, "router_id": peer, "capabilities": caps}
    return {"type": "open", "neighbor": {"address": {"peer": peer}, "direction": "receive", "open": open_}}


def test_a_peer_without_graceful_restart_keeps_nothing_through_a_drop() -> None:
    rib = RIB(ME, restart_times={"198.51.100.2": 120, "198.51.100.3": 120})
    rib.apply(opened("198.51.100.2", "1", "2", "65"), 0)  # GoBGP's default OPEN: no capability 64
    rib.apply(opened("198.51.100.3", "1", "64"), 0)
    for peer, prefix in (("198.51.100.2", "203.0.113.0/24"), ("198.51.100.3", "10.0.3.0/26")):
        rib.apply(state(peer, "up"), 1)
        rib.apply(update(peer, {peer: [prefix]}), 2)
    rib.apply(state("198.51.100.2", "down"), 3)
    rib.apply(state("198.51.100.3", "down"), 3)
    assert rib.best() == {"10.0.3.0/26": "198.51.100.3"}  # only the graceful one is kept, stale
    rib.all_down(4)
    assert rib.best() == {"10.0.3.0/26": "198.51.100.3"}


def test_in_sync_is_end_of_rib_or_a_settled_session_without_graceful_restart() -> None:
    rib = RIB(ME)
    rib.apply(opened("198.51.100.2", "1"), 0)
    rib.apply(opened("198.51.100.3", "64"), 0)
    assert not rib.in_sync("198.51.100.2", 10, settle=3) and not rib.in_sync("198.51.100.9", 10, settle=3)
    rib.apply(state("198.51.100.2", "up"), 10)
    rib.apply(state("198.51.100.3", "up"), 10)
    assert not rib.in_sync("198.51.100.2", 12, settle=3) and rib.in_sync("198.51.100.2", 13, settle=3)
    assert not rib.in_sync("198.51.100.3", 60, settle=3)  # a graceful peer: only its end-of-RIB
    rib.apply(eor("198.51.100.3"), 61)
    assert rib.in_sync("198.51.100.3", 61, settle=3)
    rib.apply(state("198.51.100.2", "down"), 70)
    assert not rib.in_sync("198.51.100.2", 80, settle=3)


def test_allowed_local_as_import_filters_and_communities_from_exabgp_5() -> None:
    rib = RIB(
        Identity("198.51.100.1", 64512), local_as_of={"192.0.2.1": 64600}, allowed_local_as={"192.0.2.1": 1}
    )

    def path(*asns: int) -> dict[str, Any]:  # ExaBGP 5's shape of an AS path
        return {"as-path": {"0": {"element": "as-sequence", "value": list(asns)}}}

    rib.apply(
        update("192.0.2.1", {"192.0.2.1": ["203.0.113.0/25"]}, peer_as=65000, attributes=path(65000, 64600)),
        0,
    )
    rib.apply(
        update(
            "192.0.2.1",
            {"192.0.2.1": ["203.0.113.128/25"]},
            peer_as=65000,
            attributes=path(65000, 64600, 64600),
        ),
        0,
    )
    # The plan's AS (64512) is not this session's: a path through 64512 is no loop here.
    rib.apply(
        update("192.0.2.1", {"192.0.2.1": ["198.18.0.0/24"]}, peer_as=65000, attributes=path(65000, 64512)), 0
    )
    assert rib.best() == {"203.0.113.0/25": "192.0.2.1", "198.18.0.0/24": "192.0.2.1"}
    plain = RIB(Identity("198.51.100.1", 64512))
    plain.apply(
        update("192.0.2.1", {"192.0.2.1": ["198.18.0.0/24"]}, peer_as=65000, attributes=path(65000, 64512)), 0
    )
    assert plain.best() == {}  # our own AS in an eBGP path: a loop (ExaBGP 5's form read)
    # Import filters: kept in the table, never chosen.
    assert rib.best(lambda peer, prefix: prefix != "198.18.0.0/24") == {"203.0.113.0/25": "192.0.2.1"}
    assert rib.received("192.0.2.1") == 2
    communities = {"community": [[64512, 300]], "large-community": [[64512, 1, 2]]}
    rib.apply(update("192.0.2.1", {"192.0.2.1": ["198.19.0.0/24"]}, peer_as=65000, attributes=communities), 0)
    assert rib.best_paths()["198.19.0.0/24"][1].communities == ("64512:300", "64512:1:2")
