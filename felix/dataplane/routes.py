"""RouteTable: desired routes against what the kernel has, changed by the smallest step.

``plan`` is pure: given the desired routes, the kernel's routes of our protocol
and the interfaces present, it says which routes to ``replace`` and which to
delete.  A route to a workload interface that does not exist yet is left for
the link event that brings it; a stray route on a workload interface (``cali*``) is kept
for a grace period, because the CNI plugin installs the route before it writes
the endpoint felix learns from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from felix.calc.model import Route

CNI_GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class RoutePlan:
    replace: tuple[Route, ...]
    delete: tuple[str, ...]
    waiting: tuple[Route, ...]  # their interface is not there yet


def plan(
    desired: Iterable[Route],
    kernel: Mapping[str, Route | None],
    interfaces: Iterable[str],
    stray_age: Mapping[str, float],
    workload_prefix: str | None = None,
) -> RoutePlan:
    present = set(interfaces)
    wanted = {r.dst: r for r in desired}
    replace, waiting = [], []
    for dst, route in wanted.items():
        if route.kind != "blackhole" and route.ifname not in present:
            waiting.append(route)
        elif kernel.get(dst) != route:
            replace.append(route)
    delete = []
    for dst, current in kernel.items():
        if dst in wanted:
            continue
        on_workload = (
            workload_prefix is not None
            and current is not None
            and (current.ifname or "").startswith(workload_prefix)
        )
        if on_workload and stray_age.get(dst, 0.0) < CNI_GRACE_SECONDS:
            continue
        delete.append(dst)
    return RoutePlan(tuple(replace), tuple(delete), tuple(waiting))


@dataclass
class StrayClock:
    """How long each stray workload route has been seen stray."""

    first_seen: dict[str, float] = field(default_factory=dict)

    def ages(self, strays: Iterable[str], now: float) -> dict[str, float]:
        current = set(strays)
        self.first_seen = {d: t for d, t in self.first_seen.items() if d in current}
        for dst in current:
            self.first_seen.setdefault(dst, now)
        return {d: now - t for d, t in self.first_seen.items()}
