"""Dataplane: takes desired state, and on ``apply()`` makes the kernel match it.

Setting the desired state only records it; ``apply`` does the kernel work.  The
kernel's routes of our protocol are read in full on the first apply and after
``invalidate()`` (interface events, the refresh timer); in between, the view is
kept current from our own writes, so an apply after a small change is small, and
an apply of the state last applied in full (nothing waiting, no stray held back)
does nothing at all: a change elsewhere in the cluster costs no kernel call here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from felix.calc.model import FELIX_PROTO, DesiredState
from felix.dataplane import routes, sysctl
from felix.dataplane.hostfile import MTUFile
from felix.dataplane.iptables import NatTable
from felix.dataplane.netlink import KernelError, Netlink
from felix.dataplane.routetable import RouteTable

log = logging.getLogger(__name__)


@dataclass
class ApplyStats:
    applies: int = 0
    failures: int = 0
    full_reads: int = 0
    last_duration: float = 0.0
    routes: int = 0
    replaced: int = 0
    deleted: int = 0


@dataclass
class Dataplane:
    netlink: Netlink
    workload_prefix: str  # FelixSettings.interface_prefix
    mtu_file: MTUFile = field(default_factory=lambda: MTUFile(None))
    sysctl_root: Path = sysctl.PROC_SYS
    clock: Callable[[], float] = time.monotonic
    stats: ApplyStats = field(default_factory=ApplyStats)
    _desired: DesiredState | None = None
    table: RouteTable = field(init=False)
    _configured: set[tuple[str, int]] = field(default_factory=set)  # (ifname, ifindex) with sysctls set
    nat: NatTable = field(default_factory=NatTable)
    _nat_applied: tuple[tuple[str, ...], tuple[str, ...]] | None = None
    _devices_applied: tuple[object, ...] | None = None
    _settled: tuple[DesiredState, routes.RoutePlan] | None = None  # applied in full, and its plan

    def __post_init__(self) -> None:
        self.table = RouteTable(self.netlink, FELIX_PROTO, self.workload_prefix, self.clock)

    def set_desired(self, desired: DesiredState) -> None:
        self._desired = desired
        self.table.set_routes(desired.routes)

    def invalidate(self) -> None:
        """Forget the kernel view: the next apply reads it back in full."""
        self._settled = None
        self.table.invalidate()
        self.mtu_file.invalidate()
        self._nat_applied = None
        self._devices_applied = None

    async def apply(self) -> routes.RoutePlan:
        if self._desired is None:
            raise RuntimeError("apply() before any desired state")
        desired = self._desired
        if self._settled is not None and self._settled[0] == desired:
            return self._settled[1]
        started = self.clock()
        try:
            plan = await self._apply(desired)
        except KernelError:
            self.stats.failures += 1
            self.invalidate()
            raise
        self.stats.applies += 1
        self.stats.last_duration = self.clock() - started
        # Settled only when the kernel holds exactly what is wanted: a route waiting for its
        # interface, or a stray kept for the CNI grace period, needs a later pass.
        done = not plan.waiting and len(self.table) == len(desired.routes)
        self._settled = (desired, plan) if done else None
        return plan

    async def _apply(self, desired: DesiredState) -> routes.RoutePlan:
        # Devices first: routes through vxlan.calico or tunl0 need them to exist.
        sysctl.configure_host(self.sysctl_root)
        links = await self.netlink.links()
        devices = (desired.ipip, desired.vxlan, desired.vteps)
        if devices != self._devices_applied:
            if desired.ipip is not None:
                await self.netlink.ensure_ipip(desired.ipip)
            if desired.vxlan is not None:
                parent = links.get(desired.vxlan.parent) if desired.vxlan.parent else None
                vxlan_index = await self.netlink.ensure_vxlan(desired.vxlan, parent.index if parent else None)
                await self.netlink.sync_vteps(vxlan_index, desired.vteps)
            links = await self.netlink.links()
            self._devices_applied = devices
        table = self.table
        table.workload_prefix = self.workload_prefix
        reads = table.full_reads
        plan = await table.apply(links)
        self.stats.full_reads += table.full_reads - reads
        for name in desired.workload_interfaces:
            link = links.get(name)
            if link is not None and (name, link.index) not in self._configured:
                sysctl.configure_workload_interface(name, self.sysctl_root)
                self._configured.add((name, link.index))
        self._configured = {(n, i) for n, i in self._configured if n in links and links[n].index == i}
        self.mtu_file.apply(desired.workload_mtu)
        nat = (desired.nat_pools, desired.all_pools)
        if nat != self._nat_applied:  # after the routes: a NAT failure must not keep them away
            await self.nat.apply(*nat)
            self._nat_applied = nat
        self.stats.routes = len(table)
        self.stats.replaced += len(plan.replace)
        self.stats.deleted += len(plan.delete)
        if plan.replace or plan.delete:
            log.info("dataplane: %d route(s) replaced, %d removed", len(plan.replace), len(plan.delete))
        return plan
