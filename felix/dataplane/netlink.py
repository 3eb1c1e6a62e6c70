"""The kernel through pyroute2's AsyncIPRoute: the only module that imports pyroute2.

Everything here is a thin translation between felid's values (``Route``,
``KernelRoute``, devices) and netlink messages; decisions live elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import socket
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2 import config as pyroute2_config
from pyroute2.netlink.exceptions import NetlinkError

from felix.calc.model import VTEP, IPIPDevice, Route, VXLANDevice
from felix.dataplane import rtnl

# Entering a pod's namespace forks a helper that hands back a socket. Under an emulated kernel
# (the UML demo) its start took longer than pyroute2's 2 s a try (10 s in all) and a CNI ADD
# failed; a slow start is not a failure, so it gets the time.
pyroute2_config.default_communicate_timeout = 10
pyroute2_config.default_create_socket_timeout = 60

CLONE_NEWNET = 0x40000000
NETLINK_ROUTE = 0
_LIBC = ctypes.CDLL(None, use_errno=True)

RT_TABLE_MAIN = 254
NTF_SELF = 2  # an FDB entry of the VXLAN device itself, not of a bridge


class KernelError(Exception):
    pass


Link = rtnl.Link  # an interface as felid reads it (decoded in rtnl, the fast path)


class Netlink:
    """One rtnetlink socket in the current (or a named) network namespace."""

    def __init__(self, netns: str | None = None) -> None:
        self._netns = netns
        self._ipr: AsyncIPRoute | None = None
        self._bulk: rtnl.Rtnl | None = None

    async def _sock(self) -> AsyncIPRoute:
        if self._ipr is None:
            self._ipr = AsyncIPRoute(netns=self._netns) if self._netns else AsyncIPRoute()
        return self._ipr

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
        if self._bulk is not None:
            self._bulk.close()
            self._bulk = None

    async def links(self) -> dict[str, Link]:
        if self._netns is None:
            return {link.name: link for link in await asyncio.to_thread(self._rtnl().dump_links)}
        ipr = await self._sock()
        out = {}
        async for msg in await ipr.link("dump"):
            info = msg.get("linkinfo")
            kind = info.get("kind") if info else None
            name = msg.get("ifname")
            up = msg.get("operstate") != "DOWN"
            out[name] = Link(msg["index"], name, msg.get("mtu") or 0, up, kind, msg.get("address"))
        return out

    async def routes(self, proto: int, links: Mapping[str, Link] | None = None) -> dict[str, Route | None]:
        """IPv4 routes of the main table with protocol ``proto``, by destination (bulk read).

        None stands for a route of a shape felix never programs (multipath, unreachable...).
        """
        names = {link.index: link.name for link in (links or await self.links()).values()}
        raws = await asyncio.to_thread(self._rtnl().dump_routes, proto)
        out: dict[str, Route | None] = {}
        for raw in raws:
            dst = f"{raw.dst}/{raw.prefixlen}"
            out[dst] = _from_raw(dst, raw, names)
        return out

    async def replace_routes(self, routes: Sequence[Route], proto: int, indexes: Mapping[str, int]) -> None:
        """Bulk ``replace`` (never delete + add) of many routes."""
        raws = [_to_raw(r, indexes.get(r.ifname) if r.ifname else None) for r in routes]
        try:
            await asyncio.to_thread(self._rtnl().replace_routes, raws, proto)
        except rtnl.RtnlError as exc:
            raise KernelError(f"replace routes: {exc}") from None

    async def delete_routes(self, dsts: Sequence[str], proto: int) -> None:
        raws = [rtnl.RawRoute(*rtnl.raw(d), kind=0) for d in dsts]
        try:
            await asyncio.to_thread(self._rtnl().delete_routes, raws, proto)
        except rtnl.RtnlError as exc:
            raise KernelError(f"delete routes: {exc}") from None

    def _rtnl(self) -> rtnl.Rtnl:
        if self._netns is not None:
            raise KernelError("bulk route operations work in this process's own namespace only")
        if self._bulk is None:
            self._bulk = rtnl.Rtnl()
        return self._bulk

    async def link_events(self) -> AsyncIterator[str]:
        """Names of links as they are created, change or go (a separate socket); an empty name
        when the kernel dropped events (the socket's buffer overflowed): any link may have
        changed."""
        if self._netns is not None:
            raise KernelError("link events are watched in this process's own namespace only")
        sock = rtnl.link_event_socket()  # decoded with struct: a pod's start is several events
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    data = await loop.sock_recv(sock, 1 << 16)
                except OSError as exc:
                    if exc.errno != errno.ENOBUFS:
                        raise
                    yield ""
                    continue
                for name in rtnl.changed_links(data):
                    yield name
        finally:
            sock.close()

    async def default_route_link(self) -> Link | None:
        """The link the IPv4 default route leaves by: the host NIC."""
        ipr = await self._sock()
        links = {link.index: link for link in (await self.links()).values()}
        async for msg in await ipr.route("dump", family=socket.AF_INET):
            if msg["dst_len"] == 0 and msg.get("table") == RT_TABLE_MAIN and msg.get("oif") in links:
                return links[msg.get("oif")]
        return None

    async def address_link(self, address: str) -> Link | None:
        """The link that holds IPv4 ``address``: the NIC the node's BGP address is on."""
        ipr = await self._sock()
        links = {link.index: link for link in (await self.links()).values()}
        async for msg in await ipr.addr("dump", family=socket.AF_INET):
            if msg.get("address") == address and msg["index"] in links:
                return links[msg["index"]]
        return None

    async def addresses(self) -> list[tuple[str, str]]:
        """Every global IPv4 address with its prefix, as (interface, "a.b.c.d/len"), in kernel order."""
        ipr = await self._sock()
        names = {link.index: link.name for link in (await self.links()).values()}
        out = []
        async for msg in await ipr.addr("dump", family=socket.AF_INET):
            if msg.get("scope") == 0 and msg["index"] in names:
                out.append((names[msg["index"]], f"{msg.get('address')}/{msg['prefixlen']}"))
        return out

    async def source_towards(self, destination: str) -> str | None:
        """The source address the kernel would use to reach ``destination``."""
        ipr = await self._sock()
        try:
            async for msg in await ipr.route("get", dst=destination):
                return str(msg.get("prefsrc")) if msg.get("prefsrc") else None
        except NetlinkError:
            return None
        return None

    # -- VXLAN ---------------------------------------------------------------------

    async def ensure_vxlan(self, device: VXLANDevice, parent_index: int | None) -> int:
        """Make ``device`` exist, up, with its MTU, MAC and tunnel address; its index."""
        ipr = await self._sock()
        found = await ipr.link_lookup(ifname=device.name)
        try:
            if not found:
                spec: dict[str, Any] = {
                    "ifname": device.name,
                    "kind": "vxlan",
                    "vxlan_id": device.vni,
                    "vxlan_port": device.port,
                    "vxlan_learning": 0,
                    "address": device.mac,
                    "mtu": device.mtu,
                }
                if parent_index is not None:
                    spec["vxlan_link"] = parent_index
                if device.local_ip:
                    spec["vxlan_local"] = device.local_ip
                await ipr.link("add", **spec)
                found = await ipr.link_lookup(ifname=device.name)
            index: int = found[0]
            await ipr.link("set", index=index, state="up", mtu=device.mtu, address=device.mac)
            if device.address:
                await ipr.addr("replace", index=index, address=device.address, prefixlen=32)
            return index
        except NetlinkError as exc:
            raise KernelError(f"vxlan device {device.name}: {exc}") from None

    async def sync_vteps(self, index: int, vteps: Iterable[VTEP]) -> None:
        """Exactly these permanent ARP and FDB entries on the VXLAN device."""
        ipr = await self._sock()
        wanted = {v.tunnel_ip: v for v in vteps}
        try:
            for vtep in wanted.values():
                await ipr.neigh(
                    "replace", dst=vtep.tunnel_ip, lladdr=vtep.mac, ifindex=index, state="permanent"
                )
                await ipr.fdb(
                    "replace",
                    ifindex=index,
                    lladdr=vtep.mac,
                    dst=vtep.node_ip,
                    state="permanent",
                    flags=NTF_SELF,
                )
            macs = {v.mac for v in wanted.values()}
            async for msg in await ipr.neigh("dump", ifindex=index, family=socket.AF_INET):
                if msg.get("dst") not in wanted:
                    await ipr.neigh("del", dst=msg.get("dst"), ifindex=index)
            async for msg in await ipr.fdb("dump", ifindex=index):
                mac = msg.get("lladdr")
                if msg.get("ifindex") == index and mac not in macs and mac != "00:00:00:00:00:00":
                    await ipr.fdb("del", ifindex=index, lladdr=mac, dst=msg.get("dst"), flags=NTF_SELF)
        except NetlinkError as exc:
            raise KernelError(f"vxlan neighbours: {exc}") from None

    # -- IPIP ----------------------------------------------------------------------

    async def ensure_ipip(self, device: IPIPDevice) -> int:
        """tunl0 up with its MTU and the node's tunnel address (the ipip module makes tunl0)."""
        ipr = await self._sock()
        try:
            found = await ipr.link_lookup(ifname=device.name)
            if not found:
                # Adding any ipip link loads the module, which brings tunl0 with it.
                with contextlib.suppress(NetlinkError):
                    await ipr.link("add", ifname=device.name, kind="ipip")
                found = await ipr.link_lookup(ifname=device.name)
            if not found:
                raise KernelError(f"{device.name}: this kernel has no ipip support")
            index: int = found[0]
            await ipr.link("set", index=index, state="up", mtu=device.mtu)
            if device.address:
                await ipr.addr("replace", index=index, address=device.address, prefixlen=32)
            return index
        except NetlinkError as exc:
            raise KernelError(f"ipip device {device.name}: {exc}") from None

    # -- workload plumbing (the CNI plugin) -----------------------------------------

    async def workload_address(self, netns_path: str, ifname: str) -> list[str]:
        async with in_namespace(netns_path) as pod:
            found = await pod.link_lookup(ifname=ifname)
            if not found:
                return []
            return [
                f"{msg.get('address')}/{msg['prefixlen']}"
                async for msg in await pod.addr("dump", index=found[0], family=socket.AF_INET)
            ]

    async def delete_link(self, name: str) -> bool:
        ipr = await self._sock()
        found = await ipr.link_lookup(ifname=name)
        if not found:
            return False
        with contextlib.suppress(NetlinkError):  # gone meanwhile (its namespace was deleted)
            await ipr.link("del", index=found[0])
        return True


def _setns(fd: int, what: str) -> None:
    if _LIBC.setns(fd, CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise KernelError(f"setns {what}: {os.strerror(error)}")


@contextlib.contextmanager
def entered(netns_path: str) -> Iterator[None]:
    """This thread inside the network namespace at ``netns_path`` for the block; a socket made
    there stays in that namespace after the thread has stepped back.  pyroute2 would fork a
    helper to make one; a process with gRPC threads and asyncio's signal wakeup socket (felid-node
    serving the CNI fast path) must not fork: the helper's signals reached felid-node's own loop.
    setns moves only the calling thread."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = _open_netns(netns_path)
        try:
            _setns(target, netns_path)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own, "back to this thread's namespace")  # failing here leaves the thread astray
    finally:
        os.close(own)


def _open_netns(netns_path: str) -> int:
    try:
        return os.open(netns_path, os.O_RDONLY)
    except OSError as exc:
        raise KernelError(f"open {netns_path}: {exc.strerror}") from None


def plumb_workload(
    *, host_name: str, host_mac: str, mtu: int, netns_path: str, ifname: str, address: str, gateway: str
) -> str:
    """A pod's interface, blocking (a CNI ADD's thread): a veth whose host end is up here and
    whose other end is made in ``netns_path`` as ``ifname``, then inside the pod the /32, lo and
    the interface up, a link route to ``gateway`` and the default route; the pod end's MAC.

    Two netlink exchanges in all, encoded by ``rtnl``: made here, moved and renamed, the veth
    took four requests and a socket inside the pod (the kernel's move between namespaces is
    slow), and pyroute2 encodes a request in about a millisecond."""
    fd = _open_netns(netns_path)
    try:
        host = rtnl.Rtnl()
        try:
            host.create_veth(host_name, host_mac, mtu, fd, ifname)
        finally:
            host.close()
    except rtnl.RtnlError as exc:
        # EEXIST names no side: either the host end or the pod's ifname is taken.
        raise KernelError(f"create {exc} (its pod end {ifname} in {netns_path})") from None
    finally:
        os.close(fd)
    with entered(netns_path):
        pod = rtnl.Rtnl()  # its socket stays in the pod's namespace
    try:
        links = {link.name: link for link in pod.dump_links()}
        if ifname not in links or "lo" not in links:
            raise KernelError(f"configure {ifname} in {netns_path}: no such interface")
        pod.configure_workload(links[ifname].index, links["lo"].index, address, gateway)
        return links[ifname].mac or ""
    except rtnl.RtnlError as exc:
        raise KernelError(f"configure {ifname} in {netns_path}: {exc}") from None
    finally:
        pod.close()


def replace_route(route: Route, proto: int) -> None:
    """One route through an interface of this namespace, blocking (a CNI ADD's thread)."""
    bulk = rtnl.Rtnl()
    try:
        index = socket.if_nametoindex(route.ifname) if route.ifname else None
        bulk.replace_routes([_to_raw(route, index)], proto)
    except (OSError, rtnl.RtnlError) as exc:
        raise KernelError(f"replace route {route.dst} via {route.ifname}: {exc}") from None
    finally:
        bulk.close()


def _netlink_socket_in(netns_path: str) -> socket.socket:
    with entered(netns_path):
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)


def in_namespace(netns_path: str) -> AsyncIPRoute:
    """An AsyncIPRoute (an async context manager) on a socket inside ``netns_path``."""
    return AsyncIPRoute(fileno=_netlink_socket_in(netns_path).detach())


def _to_raw(route: Route, index: int | None) -> rtnl.RawRoute:
    dst, prefixlen = rtnl.raw(route.dst)
    if route.kind == "blackhole":
        return rtnl.RawRoute(dst, prefixlen, rtnl.RTN_BLACKHOLE)
    if index is None:
        raise KernelError(f"route {route.dst}: no interface {route.ifname}")
    if route.kind == "local":
        return rtnl.RawRoute(dst, prefixlen, rtnl.RTN_UNICAST, oif=index, scope=rtnl.RT_SCOPE_LINK)
    return rtnl.RawRoute(
        dst, prefixlen, rtnl.RTN_UNICAST, oif=index, gateway=route.gateway, onlink=route.onlink
    )


def _from_raw(dst: str, raw: rtnl.RawRoute, names: Mapping[int, str]) -> Route | None:
    if raw.kind == rtnl.RTN_BLACKHOLE:
        return Route(dst, "blackhole")
    if raw.kind != rtnl.RTN_UNICAST or raw.multipath:
        return None
    ifname = names.get(raw.oif) if raw.oif is not None else None
    if raw.gateway is None and raw.scope == rtnl.RT_SCOPE_LINK:
        return Route(dst, "local", ifname=ifname)
    if raw.gateway is not None:
        return Route(dst, "via", ifname=ifname, gateway=raw.gateway, onlink=raw.onlink)
    return None
