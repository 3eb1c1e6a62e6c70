"""felix's struct-decoded netlink (``felix.dataplane.rtnl``) against pyroute2's reading of the same
kernel objects, in a namespace made for the test."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from felix.calc.model import FELIX_PROTO, Route
from felix.dataplane import rtnl
from felix.dataplane.netlink import KernelError, Link, Netlink, entered, plumb_workload, replace_route
from lab.network import ip, namespaces


def test_the_link_dump_reads_what_pyroute2_reads() -> None:
    with namespaces("links", prefix="rt") as ns:
        name = ns["links"]
        ip("-n", name, "link", "add", "cali0123456789", "mtu", "1410", "type", "veth", "peer", "name", "p0")
        ip("-n", name, "link", "set", "cali0123456789", "up")
        ip("-n", name, "link", "add", "vxlan.calico", "type", "vxlan", "id", "4096", "dstport", "4789")
        ip("-n", name, "link", "add", "br0", "mtu", "1400", "type", "bridge")
        for i in range(40):  # a host with many pods
            ip("-n", name, "link", "add", f"calx{i}", "type", "veth", "peer", "name", f"px{i}")

        with entered(f"/run/netns/{name}"):
            bulk = rtnl.Rtnl()  # its socket stays in the namespace
        try:
            fast = {link.name: link for link in bulk.dump_links()}
        finally:
            bulk.close()

        async def pyroute2_reading() -> dict[str, Link]:
            reader = Netlink(f"/run/netns/{name}")  # a named namespace: pyroute2 decodes
            try:
                return await reader.links()
            finally:
                reader.close()

        slow = asyncio.run(pyroute2_reading())

    assert fast == slow
    assert len(fast) == 1 + 2 + 1 + 1 + 80
    assert fast["cali0123456789"].mtu == 1410 and fast["cali0123456789"].kind == "veth"
    assert fast["vxlan.calico"].kind == "vxlan" and not fast["vxlan.calico"].up
    assert fast["br0"] == Link(fast["br0"].index, "br0", 1400, False, "bridge", fast["br0"].mac)
    assert fast["cali0123456789"].mac and len(fast["cali0123456789"].mac or "") == 17
    assert fast["lo"].kind is None and fast["lo"].up


def test_a_route_through_a_missing_interface_is_a_kernel_error_naming_it() -> None:
    with pytest.raises(KernelError, match=r"replace route 10\.9\.9\.9/32 via no-such-link"):
        replace_route(Route("10.9.9.9/32", "local", ifname="no-such-link"), FELIX_PROTO)


def test_link_events_name_the_links_that_come_and_go() -> None:
    with namespaces("events", prefix="rt") as ns:
        name = ns["events"]

        async def watch() -> list[str]:
            events = Netlink().link_events()
            seen: list[str] = []
            first = asyncio.ensure_future(anext(events))  # the socket is bound before the change
            await asyncio.sleep(0.1)
            await asyncio.to_thread(
                ip, "-n", name, "link", "add", "caliev0", "type", "veth", "peer", "name", "pev0"
            )
            await asyncio.to_thread(ip, "-n", name, "link", "del", "caliev0")
            seen.append(await asyncio.wait_for(first, 5))
            while seen.count("caliev0") < 2:  # its creation and its removal
                seen.append(await asyncio.wait_for(anext(events), 5))
            return seen

        def in_namespace() -> list[str]:
            with entered(f"/run/netns/{name}"):
                return asyncio.run(watch())

        with ThreadPoolExecutor(1) as thread:  # a thread of its own: setns moves it alone
            seen = thread.submit(in_namespace).result()
    assert "pev0" in seen and seen.count("caliev0") >= 2, seen


def test_plumb_workload_makes_and_configures_a_pods_veth_and_refuses_a_taken_name() -> None:
    with namespaces("host", "pod", prefix="rt") as ns:
        pod = f"/run/netns/{ns['pod']}"

        def plumb(host_name: str) -> str:
            with entered(f"/run/netns/{ns['host']}"):  # the host end is made in this thread's namespace
                return plumb_workload(
                    host_name=host_name,
                    host_mac="ee:ee:ee:ee:ee:ee",
                    mtu=1410,
                    netns_path=pod,
                    ifname="eth0",
                    address="10.9.0.7",
                    gateway="169.254.1.1",
                )

        with ThreadPoolExecutor(1) as thread:
            mac = thread.submit(plumb, "cali00000000001").result()
            with pytest.raises(
                KernelError, match=r"veth cali00000000002: File exists \(its pod end eth0 in "
            ):
                thread.submit(plumb, "cali00000000002").result()
        host_end = ip("-n", ns["host"], "-o", "link", "show", "cali00000000001").stdout
        pod_end = ip("-n", ns["pod"], "-o", "link", "show", "eth0").stdout
        addresses = ip("-n", ns["pod"], "-o", "-4", "addr", "show", "eth0").stdout
        routes = ip("-n", ns["pod"], "route").stdout
        lo = ip("-n", ns["pod"], "-o", "link", "show", "lo").stdout
    assert "mtu 1410" in host_end and "ee:ee:ee:ee:ee:ee" in host_end and ",UP" in host_end
    assert "mtu 1410" in pod_end and mac in pod_end and ",UP" in pod_end
    assert "10.9.0.7/32" in addresses
    assert "default via 169.254.1.1 dev eth0" in routes and "169.254.1.1 dev eth0 scope link" in routes
    assert ",UP" in lo
