"""The IPIP scenario, run as init inside a User-Mode-Linux kernel (this host has no ipip).

``python -m tests.harness.uml_ipip RESULTS_DIR``: two host namespaces joined by a
veth, etcd on the first, an IPIP pool, a pod and felix on each host, the remote
block routes BGP will learn in a later issue installed by hand (protocol 186),
then pings.  Writes ``result.json`` into RESULTS_DIR.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from felid.etcdserver import EtcdServer
from tests.harness.felix import FelixProcess
from tests.harness.hosts import Host, ping
from tests.harness.netns import ip, namespaces

ALLOCATE = """
import sys
from datastore.config import DatastoreConfig
from datastore.etcd import EtcdKV
from datastore.keys import KeyLayout
from ipam.allocator import BlockAllocator, tunnel_handle
kv = EtcdKV(DatastoreConfig(etcd_endpoints=(sys.argv[1],)))
print(BlockAllocator(kv, KeyLayout(), sys.argv[2]).auto_assign(tunnel_handle("ipip", sys.argv[2]))[0])
"""


def scenario(work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with namespaces("host-a", "host-b", "pod-a", "pod-b") as ns:
        ip("link", "add", "ftip-a", "type", "veth", "peer", "name", "ftip-b")
        ip("link", "set", "ftip-a", "netns", ns["host-a"])
        ip("link", "set", "ftip-b", "netns", ns["host-b"])
        addresses = {"a": "198.51.100.1", "b": "198.51.100.2"}
        for side, other in (("a", "b"), ("b", "a")):
            host_ns = ns[f"host-{side}"]
            ip("-n", host_ns, "link", "set", f"ftip-{side}", "name", "uplink0")
            ip("-n", host_ns, "addr", "add", f"{addresses[side]}/24", "dev", "uplink0")
            ip("-n", host_ns, "link", "set", "uplink0", "up")
            ip("-n", host_ns, "route", "add", "default", "via", addresses[other])
        etcd = EtcdServer(
            work / "etcd",
            host=addresses["a"],
            netns=ns["host-a"],
            log_file=work / "etcd.log",
            fast_election=False,
        )
        etcd.start(timeout=60)
        felixes: list[FelixProcess] = []
        try:
            hosts = {s: Host(ns[f"host-{s}"], addresses[s], etcd) for s in "ab"}
            pool = {
                "apiVersion": "projectcalico.org/v3",
                "kind": "IPPool",
                "metadata": {"name": "pods"},
                "spec": {"cidr": "10.120.0.0/16", "ipipMode": "Always"},
            }
            applied = hosts["a"].felidctl("apply", "-f", "-", stdin=json.dumps(pool))
            assert applied.returncode == 0, applied.stderr
            pods = {}
            for side, host in hosts.items():
                node = f"node-{side}"
                tunnel = host.run(sys.executable, "-c", ALLOCATE, etcd.url, node, check=True).stdout.strip()
                doc = {
                    "apiVersion": "projectcalico.org/v3",
                    "kind": "Node",
                    "metadata": {"name": node},
                    "spec": {"bgp": {"ipv4Address": f"{host.address}/24", "ipv4IPIPTunnelAddr": tunnel}},
                }
                assert hosts["a"].felidctl("apply", "-f", "-", stdin=json.dumps(doc)).returncode == 0
                conf = {
                    "cniVersion": "1.0.0",
                    "name": "pods",
                    "type": "felid",
                    "etcd_endpoints": etcd.url,
                    "nodename": node,
                    "ipam": {"type": "felid-ipam"},
                }
                code, result = host.cni("ADD", conf, f"c-{side}", f"/run/netns/{ns[f'pod-{side}']}")
                assert code == 0, result
                assert result is not None
                pods[side] = str(result["ips"][0]["address"]).split("/")[0]
                felix = FelixProcess(host, work / f"felix-{node}.log", node=node)
                felixes.append(felix)
                felix.start()
            for felix in felixes:
                felix.wait_ready(timeout=60)
            blocks = json.loads(
                hosts["a"]
                .run(
                    sys.executable,
                    "-c",
                    "import json,sys\n"
                    "from datastore.config import DatastoreConfig\nfrom datastore.etcd import EtcdKV\n"
                    "from datastore.keys import KeyLayout\nfrom ipam.inventory import load_inventory\n"
                    "kv = EtcdKV(DatastoreConfig(etcd_endpoints=(sys.argv[1],)))\n"
                    "inv = load_inventory(kv, KeyLayout())\n"
                    "print(json.dumps({c: b.host for c, b in inv.blocks.items()}))",
                    etcd.url,
                    check=True,
                )
                .stdout
            )
            # What the BGP agent will do: remote blocks via the remote node, through tunl0.
            for side, other in (("a", "b"), ("b", "a")):
                for cidr, owner in blocks.items():
                    if owner == f"node-{other}":
                        ip(
                            "-n",
                            ns[f"host-{side}"],
                            "route",
                            "replace",
                            cidr,
                            "via",
                            addresses[other],
                            "dev",
                            "tunl0",
                            "onlink",
                            "proto",
                            "186",
                        )
            out["tunl0"] = ip("-n", ns["host-a"], "-d", "addr", "show", "tunl0").stdout
            deadline = time.monotonic() + 20
            while not ping(ns["pod-a"], pods["b"], count=1) and time.monotonic() < deadline:
                time.sleep(0.3)
            out["a_to_b"] = ping(ns["pod-a"], pods["b"], count=3)
            out["b_to_a"] = ping(ns["pod-b"], pods["a"], count=3)
            out["routes_a"] = ip("-n", ns["host-a"], "route").stdout
        finally:
            for felix in felixes:
                felix.kill()
            etcd.stop()
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
