"""A withdraw from a router without graceful restart, to the kernel: ``python -m bench.bgp_withdraw``.

GoBGP (Debian's gobgpd, no graceful restart, so no end-of-RIB) announces 203.0.113.0/24 over eBGP
to a felid-bgp host and, as the baseline in the same run, to BIRD 2, which programs its own
kernel.  Each cycle announces the prefix, waits for it in both kernels, then withdraws it: the
figure is from just before ``gobgp global rib del`` to the deletion in each kernel (``ip -ts
monitor route``).  Last, gobgpd is SIGKILLed with the prefix announced: the time until each
kernel lets it go with the dropped session.  The issue's target: within 1 s.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bench.bgp_convergence import RouteWatch, percentile
from lab.agents import BGPProcess
from lab.network import LabHost, lab
from lab.routers import Bird, GoBGP

FELID_AS, GOBGP_AS = 64512, 64600
PREFIX = "203.0.113.0/24"


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.01)


def _has(host: LabHost) -> bool:
    return any(r["dst"] == PREFIX for r in host.routes())


def _gone(watches: Mapping[str, RouteWatch], since: float, timeout: float) -> dict[str, float]:
    """Seconds from ``since`` (wall clock) until each watched kernel deleted the prefix."""
    out = {}
    for name, watch in watches.items():

        def deleted(w: RouteWatch = watch) -> bool:
            return w.deleted_after(PREFIX, since) is not None

        _wait(deleted, timeout, f"{name}: not deleted")
        out[name] = (watch.deleted_after(PREFIX, since) or since) - since
    return out


def _documents(felid: LabHost, router: LabHost) -> list[dict[str, Any]]:
    node = {
        "kind": "Node",
        "metadata": {"name": felid.node},
        "spec": {"bgp": {"ipv4Address": felid.interface}},
    }
    peer_spec = {"peerIP": router.address, "asNumber": GOBGP_AS}
    peer = {"kind": "BGPPeer", "metadata": {"name": "gobgp"}, "spec": peer_spec}
    return [{"apiVersion": "projectcalico.org/v3", **doc} for doc in (node, peer)]


def measure(cycles: int) -> tuple[list[dict[str, float]], dict[str, float]]:
    """Per cycle, each kernel's withdraw time; then each kernel's time after gobgpd was killed."""
    with tempfile.TemporaryDirectory(prefix="felid-bench-withdraw-") as tmp:
        work = Path(tmp)
        with lab(work, 3, prefix="fb") as cluster:
            felid, router, bird_host = cluster.hosts
            cluster.apply(_documents(felid, router))
            gobgp = GoBGP(router, work, GOBGP_AS, [(felid.address, FELID_AS), (bird_host.address, FELID_AS)])
            bird = Bird(bird_host, work, [router], asn=FELID_AS, peer_as=GOBGP_AS)
            agent = BGPProcess(felid, work)
            agent.env["FELID_BGP_LOG_SEVERITY"] = "Info"
            watches = {"felid": RouteWatch(felid), "bird": RouteWatch(bird_host)}

            def announced() -> None:
                gobgp.announce(PREFIX)
                _wait(lambda: _has(felid) and _has(bird_host), 10, "not announced in both kernels")

            try:
                gobgp.start()
                bird.start()
                agent.start()
                _wait(lambda: all(gobgp.established(h.address) for h in (felid, bird_host)), 60, "sessions")
                withdrawn = []
                for _ in range(cycles):
                    announced()
                    started = time.time()
                    gobgp.withdraw(PREFIX)
                    withdrawn.append(_gone(watches, started, 10))
                announced()
                started = time.time()
                gobgp.kill()
                return withdrawn, _gone(watches, started, 30)
            finally:
                agent.kill()
                bird.kill()
                gobgp.kill()
                for watch in watches.values():
                    watch.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=30)
    args = parser.parse_args()
    withdrawn, dropped = measure(args.cycles)
    print(f"withdraw from GoBGP -> route gone from the kernel, {args.cycles} cycles, ms")
    print("| receiver | median | p99 | max |")
    print("|---|---|---|---|")
    medians = {}
    for name in ("bird", "felid"):
        values = [1000 * cycle[name] for cycle in withdrawn]
        medians[name] = statistics.median(values)
        row = (medians[name], percentile(values, 0.99), max(values))
        print(f"| {name} | " + " | ".join(f"{v:.0f}" for v in row) + " |")
    print(f"felid / BIRD, median: {medians['felid'] / medians['bird']:.2f}")
    bird_ms, felid_ms = 1000 * dropped["bird"], 1000 * dropped["felid"]
    print(f"gobgpd SIGKILLed -> route gone: BIRD {bird_ms:.0f} ms, felid {felid_ms:.0f} ms")


if __name__ == "__main__":
    main()
