"""felix's calculation layer and route planning: pure, no kernel, no etcd."""

from __future__ import annotations

import json
from typing import Any

from datastore.keys import IPAMKeys, KeyLayout
from datastore.models import IPPool, Node, WorkloadEndpoint
from datastore.models.node import derived_vtep_mac
from datastore.store import encode
from felix.calc.cluster import ClusterState, desired
from felix.calc.host import HostFacts, Interface, host_mtu
from felix.calc.model import VTEP, Route
from felix.config import FelixSettings
from felix.dataplane.routes import StrayClock, plan

LAYOUT = KeyLayout()
KEYS = IPAMKeys()


def put(state: ClusterState, resource: Any) -> None:
    state.apply(LAYOUT.key_of(resource), encode(resource))


def affinity(state: ClusterState, node: str, cidr: str, status: str = "confirmed") -> None:
    state.apply(KEYS.affinity(node, cidr), json.dumps({"state": status}).encode())


def pool(name: str, cidr: str, **spec: Any) -> IPPool:
    return IPPool.model_validate({"metadata": {"name": name}, "spec": {"cidr": cidr, **spec}})


def node(name: str, address: str, **spec: Any) -> Node:
    return Node.model_validate(
        {"metadata": {"name": name}, "spec": {"bgp": {"ipv4Address": address}, **spec}}
    )


def wep(name: str, on: str, iface: str, *ips: str) -> WorkloadEndpoint:
    return WorkloadEndpoint.model_validate(
        {
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"node": on, "interfaceName": iface, "ipNetworks": list(ips)},
        }
    )


def test_local_workloads_and_confirmed_blocks() -> None:
    state = ClusterState(LAYOUT)
    put(state, pool("p", "10.0.0.0/16", natOutgoing=True))
    put(state, wep("a", "me", "calia", "10.0.0.1/32"))
    put(state, wep("b", "other", "calib", "10.0.1.1/32"))
    affinity(state, "me", "10.0.0.0/26")
    affinity(state, "me", "10.0.0.64/26", "pending")
    affinity(state, "other", "10.0.1.0/26")
    out = desired(state, HostFacts("me"))
    assert out.routes == {Route("10.0.0.1/32", "local", ifname="calia"), Route("10.0.0.0/26", "blackhole")}
    assert out.workload_interfaces == {"calia"} and out.local_endpoints == 1
    assert out.vxlan is None and out.ipip is None
    assert out.nat_pools == ("10.0.0.0/16",)
    # Deletions are deletions: nothing is remembered.
    state.apply(LAYOUT.key_of(wep("a", "me", "calia", "10.0.0.1/32")), None)
    state.apply(KEYS.affinity("me", "10.0.0.0/26"), None)
    assert desired(state, HostFacts("me")).routes == frozenset()


def test_vxlan_routes_vteps_and_device() -> None:
    state = ClusterState(LAYOUT)
    put(state, pool("p", "10.0.0.0/16", vxlanMode="Always"))
    put(state, node("me", "198.51.100.1/24", ipv4VXLANTunnelAddr="10.0.0.0"))
    put(
        state,
        node(
            "peer", "198.51.100.2/24", ipv4VXLANTunnelAddr="10.0.1.0", vxlanTunnelMACAddr="66:00:00:00:00:02"
        ),
    )
    put(state, node("bare", "198.51.100.3/24"))  # no tunnel address yet: no VTEP, no routes
    affinity(state, "peer", "10.0.1.0/26")
    affinity(state, "bare", "10.0.2.0/26")
    out = desired(state, HostFacts("me", mtu=1500, nic="eth0"))
    assert out.vxlan is not None and (out.vxlan.mtu, out.vxlan.vni, out.vxlan.port) == (1450, 4096, 4789)
    assert (
        out.vxlan.mac == derived_vtep_mac("me")
        and out.vxlan.address == "10.0.0.0"
        and out.vxlan.parent == "eth0"
    )
    assert out.vteps == {VTEP("peer", "10.0.1.0", "66:00:00:00:00:02", "198.51.100.2")}
    assert Route("10.0.1.0/26", "via", ifname="vxlan.calico", gateway="10.0.1.0", onlink=True) in out.routes
    assert not any(r.dst == "10.0.2.0/26" for r in out.routes)


def test_ipip_device() -> None:
    state = ClusterState(LAYOUT)
    put(state, pool("p", "10.0.0.0/16", ipipMode="CrossSubnet"))
    put(
        state,
        node(
            "me", "198.51.100.1/24", bgp={"ipv4Address": "198.51.100.1/24", "ipv4IPIPTunnelAddr": "10.0.0.1"}
        ),
    )
    out = desired(state, HostFacts("me", mtu=9000))
    assert out.ipip is not None and (out.ipip.name, out.ipip.mtu, out.ipip.address) == (
        "tunl0",
        8980,
        "10.0.0.1",
    )


def test_invalid_stored_values_are_ignored_not_fatal() -> None:
    state = ClusterState(LAYOUT)
    state.apply(LAYOUT.key_of(pool("p", "10.0.0.0/16")), b"{broken")
    assert state.pools == {}


def kernel(*routes: Route) -> dict[str, Route | None]:
    return {r.dst: r for r in routes}


def test_plan_replaces_only_what_differs_and_waits_for_interfaces() -> None:
    same = Route("10.0.0.1/32", "local", ifname="calia")
    moved = Route("10.0.0.2/32", "local", ifname="calib")
    waiting = Route("10.0.0.3/32", "local", ifname="calic")
    hole = Route("10.0.0.0/26", "blackhole")
    p = plan(
        {same, moved, waiting, hole},
        kernel(same, Route("10.0.0.2/32", "local", ifname="calix")),
        ["calia", "calib"],
        {},
    )
    assert set(p.replace) == {moved, hole} and p.waiting == (waiting,) and p.delete == ()


def test_plan_deletes_strays_but_gives_cni_routes_a_grace_period() -> None:
    stray_hole = Route("10.9.0.0/24", "blackhole")
    cni_route = Route("10.0.0.9/32", "local", ifname="cali123")
    p = plan(set(), kernel(stray_hole, cni_route), ["cali123"], {"10.0.0.9/32": 1.0}, "cali")
    assert p.delete == ("10.9.0.0/24",)
    p = plan(set(), kernel(stray_hole, cni_route), ["cali123"], {"10.0.0.9/32": 30.0}, "cali")
    assert set(p.delete) == {"10.9.0.0/24", "10.0.0.9/32"}


def test_stray_clock() -> None:
    clock = StrayClock()
    assert clock.ages(["a"], 100.0) == {"a": 0.0}
    assert clock.ages(["a", "b"], 105.0) == {"a": 5.0, "b": 0.0}
    assert clock.ages(["b"], 107.0) == {"b": 2.0}


def test_host_mtu_is_the_smallest_matching_interface_never_one_of_ours() -> None:
    pattern = FelixSettings.default_of("mtu_iface_pattern")
    up = [
        Interface("lo", 65536, True),
        Interface("eth0", 9000, True),
        Interface("ens3", 1450, True),
        Interface("eth1", 1200, False),  # down: not carrying anything
        Interface("cali0123456789a", 1000, True),
        Interface("vxlan.calico", 1400, True),
    ]
    assert host_mtu(up, pattern, "cali", None) == 1450
    assert host_mtu(up, "^eth", "cali", None) == 9000
    assert host_mtu(up, ".*", "cali", None) == 1450  # lo is larger; ours (1000, 1400) never count
    uplink = Interface("uplink0", 1480, True)
    assert host_mtu([uplink], pattern, "cali", uplink) == 1480  # nothing matches: the default route's
    assert host_mtu([], pattern, "cali", None) == 1500


def test_workload_mtu_is_the_host_mtu_less_the_largest_tunnel_in_use() -> None:
    state = ClusterState(LAYOUT)
    put(state, pool("plain", "10.0.0.0/16"))
    assert desired(state, HostFacts("me", mtu=9000)).workload_mtu == 9000
    put(state, pool("ipip", "10.1.0.0/16", ipipMode="Always"))
    assert desired(state, HostFacts("me", mtu=9000)).workload_mtu == 8980
    put(state, pool("vxlan", "10.2.0.0/16", vxlanMode="CrossSubnet"))
    assert desired(state, HostFacts("me", mtu=9000)).workload_mtu == 8950
    put(state, pool("vxlan", "10.2.0.0/16", vxlanMode="CrossSubnet", disabled=True))
    assert desired(state, HostFacts("me", mtu=9000)).workload_mtu == 8980
