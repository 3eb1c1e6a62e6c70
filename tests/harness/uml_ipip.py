"""The IPIP scenario, run as init inside a User-Mode-Linux kernel (this host has no ipip).

``python -m tests.harness.uml_ipip RESULTS_DIR``: two hosts with an IPIP pool, a
pod, felix and the bgp agent on each (which learn each other's blocks over BGP
and route them through tunl0), then pings.  Writes ``result.json`` into RESULTS_DIR.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from felid.lab import LabHost
from tests.harness.bgp import BGPProcess
from tests.harness.cluster import ADDRESSES, two_hosts
from tests.harness.hosts import ping
from tests.harness.netns import ip


def scenario(work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # etcd's fast-election flags are too tight for an emulated kernel's timers.
    with two_hosts(work, "ipip", "10.120.0.0/16", fast_election=False) as cluster:
        agents = [
            BGPProcess(LabHost(f"node-{side}", host.netns, ADDRESSES[side]), cluster.etcd.url, work)
            for side, host in cluster.hosts.items()
        ]
        try:
            for agent in agents:
                agent.start()
            # Only what BGP teaches (the other's block via the other node, through tunl0) can
            # carry the pods' traffic: the hosts' default route leads nowhere.
            out["tunl0"] = ip("-n", cluster.hosts["a"].netns, "-d", "addr", "show", "tunl0").stdout
            started = time.monotonic()
            while time.monotonic() - started < 120 and not all(
                "dev tunl0 proto bgp onlink" in ip("-n", h.netns, "route").stdout
                for h in cluster.hosts.values()
            ):
                time.sleep(0.5)
            out["learned_after"] = time.monotonic() - started
            out["a_to_b"] = ping(cluster.pod_netns["a"], cluster.pods["b"], count=3)
            out["b_to_a"] = ping(cluster.pod_netns["b"], cluster.pods["a"], count=3)
            out["routes_a"] = ip("-n", cluster.hosts["a"].netns, "route").stdout
        finally:
            for agent in agents:
                agent.kill()
    return out


def main() -> None:
    work = Path(sys.argv[1])
    try:
        result = scenario(work)
    except BaseException:
        result = {"error": traceback.format_exc()}
    (work / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
