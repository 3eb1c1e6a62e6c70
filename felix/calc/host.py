"""What felix learns from its own host rather than the datastore, and the MTU it derives from it.

The host MTU is found once, when felix starts: the smallest MTU of the up
interfaces whose names match ``mtuIfacePattern`` (Calico's rule), else that of
the interface the default route leaves by, else 1500.  Every workload
interface and every tunnel device is sized from it (``desired``), and the
MTU workloads get is written where the CNI plugin reads it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from felix.calc.model import DEFAULT_MTU, IPIP_DEVICE, VXLAN_DEVICE


@dataclass(frozen=True)
class HostFacts:
    node: str
    mtu: int = DEFAULT_MTU  # the host's: what the underlay carries
    nic: str | None = None  # the interface of the default route (VXLAN binds to it)


@dataclass(frozen=True)
class Interface:
    name: str
    mtu: int
    up: bool


def host_mtu(
    interfaces: Iterable[Interface], pattern: str, workload_prefix: str, default_route: Interface | None
) -> int:
    """The underlay MTU: the smallest of the matching interfaces, never one of felid's own."""
    matcher = re.compile(pattern)
    ours = (IPIP_DEVICE, VXLAN_DEVICE)
    candidates = [
        i.mtu
        for i in interfaces
        if i.up
        and i.mtu > 0
        and matcher.match(i.name)
        and i.name not in ours
        and not i.name.startswith(workload_prefix)
    ]
    if candidates:
        return min(candidates)
    if default_route is not None and default_route.mtu > 0:
        return default_route.mtu
    return DEFAULT_MTU
