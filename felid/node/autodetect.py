"""This node's IPv4 address and prefix, as calico-node's IP_AUTODETECTION_METHOD finds it.

``choose`` is pure: given the host's addresses (and, for can-reach, the source
address the kernel picks), it applies the method.  Interfaces that are never a
node's own (loopback, container and tunnel devices) are skipped by first-found.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from felix.dataplane.netlink import Netlink

SKIPPED = re.compile(
    r"^(lo|docker.*|cbr.*|dummy.*|virbr.*|lxcbr.*|veth.*|cali.*|tunl.*|flannel.*|kube-ipvs.*|cni.*"
    r"|vxlan\.calico.*|nodelocaldns.*)$"
)


class NoAddress(Exception):
    pass


def choose(method: str, addresses: Sequence[tuple[str, str]], reach_source: str | None = None) -> str:
    """``addresses``: (interface, "a.b.c.d/len") in kernel order; the chosen "a.b.c.d/len"."""
    kind, _, argument = method.partition("=")
    if kind == "first-found":
        for name, address in addresses:
            if not SKIPPED.match(name):
                return address
        raise NoAddress("first-found: no IPv4 address on any interface but loopback and container devices")
    if kind == "interface":
        pattern = re.compile(argument)
        for name, address in addresses:
            if pattern.fullmatch(name):
                return address
        raise NoAddress(f"interface={argument}: no interface matching it has an IPv4 address")
    if kind == "can-reach":
        for _, address in addresses:
            if reach_source is not None and str(ipaddress.IPv4Interface(address).ip) == reach_source:
                return address
        raise NoAddress(f"can-reach={argument}: no local address routes to {argument}")
    raise NoAddress(f"unknown autodetection method {method!r}")


async def detect(method: str, netlink: Netlink) -> str:
    addresses = await netlink.addresses()
    source = None
    if method.startswith("can-reach="):
        source = await netlink.source_towards(method.partition("=")[2])
    return choose(method, addresses, source)


async def with_prefix(address: str, netlink: Netlink) -> str:
    """An explicit FELID_IP: kept if it has a prefix, else completed from the interface holding it."""
    if "/" in address:
        return address
    for _, held in await netlink.addresses():
        if str(ipaddress.IPv4Interface(held).ip) == address:
            return held
    return f"{address}/32"
