"""RouteTable: one route protocol's routes in the main table, kept equal to a desired set.

The kernel's routes of the protocol are read in full on the first apply and
after ``invalidate()``; in between, the view is kept current from our own
writes, so an apply after a small change is small.  felix owns protocol 80,
the bgp agent protocol 186: each table touches only its own protocol, so a
restart reconciles from the kernel alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from felix.calc.model import Route
from felix.dataplane import routes
from felix.dataplane.netlink import Link, Netlink


@dataclass
class RouteTable:
    netlink: Netlink
    proto: int
    workload_prefix: str | None = None  # routes on these interfaces get the CNI grace period
    clock: Callable[[], float] = time.monotonic
    full_reads: int = 0
    _desired: frozenset[Route] = frozenset()
    _kernel: dict[str, Route | None] | None = None
    _strays: routes.StrayClock = field(default_factory=routes.StrayClock)

    def set_routes(self, desired: frozenset[Route]) -> None:
        self._desired = desired

    def invalidate(self) -> None:
        """Forget the kernel view: the next apply reads it back in full."""
        self._kernel = None

    def __len__(self) -> int:
        return len(self._kernel or {})

    async def apply(
        self, links: Mapping[str, Link], *, may_delete: Callable[[str], bool] | None = None
    ) -> routes.RoutePlan:
        """Make the kernel match; routes we no longer want stay where ``may_delete(dst)`` is false."""
        if self._kernel is None:
            self._kernel = await self.netlink.routes(self.proto, links)
            self.full_reads += 1
        kernel = self._kernel
        wanted = {r.dst for r in self._desired}
        strays = [d for d in kernel if d not in wanted]
        up = [name for name, link in links.items() if link.up]  # a route over a down link waits for it
        plan = routes.plan(
            self._desired, kernel, up, self._strays.ages(strays, self.clock()), self.workload_prefix
        )
        if may_delete is not None:
            plan = routes.RoutePlan(plan.replace, tuple(filter(may_delete, plan.delete)), plan.waiting)
        if plan.replace:
            await self.netlink.replace_routes(
                plan.replace, self.proto, {name: link.index for name, link in links.items()}
            )
            kernel.update((r.dst, r) for r in plan.replace)
        if plan.delete:
            await self.netlink.delete_routes(plan.delete, self.proto)
            for dst in plan.delete:
                kernel.pop(dst, None)
        return plan
