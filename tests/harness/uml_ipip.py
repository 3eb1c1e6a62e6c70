"""The IPIP scenario, run as init inside a User-Mode-Linux kernel (this host has no ipip).

``python -m tests.harness.uml_ipip RESULTS_DIR``: two hosts with an IPIP pool, a
pod and felix on each, the remote block routes BGP will learn in a later issue
installed by hand (protocol 186), then pings.  Writes ``result.json`` into RESULTS_DIR.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from tests.harness.cluster import ADDRESSES, two_hosts
from tests.harness.hosts import ping
from tests.harness.netns import ip

BLOCK_OWNERS = """
import json, sys
from datastore.config import DatastoreConfig
from datastore.etcd import EtcdKV
from datastore.keys import KeyLayout
from ipam.inventory import load_inventory
inventory = load_inventory(EtcdKV(DatastoreConfig(etcd_endpoints=(sys.argv[1],))), KeyLayout())
print(json.dumps({cidr: block.host for cidr, block in inventory.blocks.items()}))
"""


def scenario(work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # etcd's fast-election flags are too tight for an emulated kernel's timers.
    with two_hosts(work, "ipip", "10.120.0.0/16", fast_election=False) as cluster:
        owners = json.loads(
            cluster.hosts["a"].run(sys.executable, "-c", BLOCK_OWNERS, cluster.etcd.url, check=True).stdout
        )
        # What the BGP agent will do: remote blocks via the remote node, through tunl0.
        for side, other in (("a", "b"), ("b", "a")):
            for cidr, owner in owners.items():
                if owner == f"node-{other}":
                    ip(
                        "-n",
                        cluster.hosts[side].netns,
                        "route",
                        "replace",
                        cidr,
                        "via",
                        ADDRESSES[other],
                        "dev",
                        "tunl0",
                        "onlink",
                        "proto",
                        "186",
                    )
        out["tunl0"] = ip("-n", cluster.hosts["a"].netns, "-d", "addr", "show", "tunl0").stdout
        deadline = time.monotonic() + 20
        while not ping(cluster.pod_netns["a"], cluster.pods["b"], count=1) and time.monotonic() < deadline:
            time.sleep(0.3)
        out["a_to_b"] = ping(cluster.pod_netns["a"], cluster.pods["b"], count=3)
        out["b_to_a"] = ping(cluster.pod_netns["b"], cluster.pods["a"], count=3)
        out["routes_a"] = ip("-n", cluster.hosts["a"].netns, "route").stdout
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
