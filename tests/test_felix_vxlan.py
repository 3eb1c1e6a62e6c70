"""Two hosts on one link, a VXLAN pool: pods reach each other through vxlan.calico.

No BGP: the routes, ARP and FDB entries all come from the datastore.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

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
node = sys.argv[2]
kv = EtcdKV(DatastoreConfig(etcd_endpoints=(sys.argv[1],)))
print(BlockAllocator(kv, KeyLayout(), node).auto_assign(tunnel_handle("vxlan", node))[0])
"""


def test_pods_on_two_hosts_ping_through_vxlan(tmp_path: Path) -> None:
    with namespaces("host-a", "host-b", "pod-a", "pod-b") as ns:
        ip(
            "link",
            "add",
            "ftvx-a",
            "netns",
            ns["host-a"],
            "type",
            "veth",
            "peer",
            "name",
            "ftvx-b",
            "netns",
            ns["host-b"],
        )
        for side, mine, other in (
            ("a", "198.51.100.1", "198.51.100.2"),
            ("b", "198.51.100.2", "198.51.100.1"),
        ):
            host_ns = ns[f"host-{side}"]
            ip("-n", host_ns, "link", "set", f"ftvx-{side}", "name", "uplink0")
            ip("-n", host_ns, "addr", "add", f"{mine}/24", "dev", "uplink0")
            ip("-n", host_ns, "link", "set", "uplink0", "up")
            ip("-n", host_ns, "route", "add", "default", "via", other)
        etcd = EtcdServer(
            tmp_path / "etcd", host="198.51.100.1", netns=ns["host-a"], log_file=tmp_path / "etcd.log"
        )
        etcd.start()
        felixes: list[FelixProcess] = []
        try:
            a = Host(ns["host-a"], "198.51.100.1", etcd)
            b = Host(ns["host-b"], "198.51.100.2", etcd)
            pool = {
                "apiVersion": "projectcalico.org/v3",
                "kind": "IPPool",
                "metadata": {"name": "pods"},
                "spec": {"cidr": "10.110.0.0/16", "vxlanMode": "Always"},
            }
            assert a.felidctl("apply", "-f", "-", stdin=json.dumps(pool)).returncode == 0
            for host, node in ((a, "node-a"), (b, "node-b")):
                tunnel = host.run(sys.executable, "-c", ALLOCATE, etcd.url, node, check=True).stdout.strip()
                doc = {
                    "apiVersion": "projectcalico.org/v3",
                    "kind": "Node",
                    "metadata": {"name": node},
                    "spec": {"bgp": {"ipv4Address": f"{host.address}/24"}, "ipv4VXLANTunnelAddr": tunnel},
                }
                assert a.felidctl("apply", "-f", "-", stdin=json.dumps(doc)).returncode == 0
            pods = {}
            for host, node, pod in ((a, "node-a", "pod-a"), (b, "node-b", "pod-b")):
                conf = {
                    "cniVersion": "1.0.0",
                    "name": "pods",
                    "type": "felid",
                    "etcd_endpoints": etcd.url,
                    "nodename": node,
                    "ipam": {"type": "felid-ipam"},
                }
                code, result = host.cni("ADD", conf, f"c-{pod}", f"/run/netns/{ns[pod]}")
                assert code == 0, result
                assert result is not None
                pods[pod] = str(result["ips"][0]["address"]).split("/")[0]
                felix = FelixProcess(host, tmp_path / f"felix-{node}.log", node=node)
                felixes.append(felix)
                felix.start()
            for felix in felixes:
                felix.wait_ready()
            deadline = time.monotonic() + 15
            while not ping(ns["pod-a"], pods["pod-b"], count=1) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert ping(ns["pod-a"], pods["pod-b"]), ip("-n", ns["host-a"], "route").stdout
            assert ping(ns["pod-b"], pods["pod-a"])
            shown = ip("-n", ns["host-a"], "route", "show", "dev", "vxlan.calico").stdout
            assert "onlink" in shown and "10.110." in shown
            neigh = ip("-n", ns["host-a"], "neigh", "show", "dev", "vxlan.calico").stdout
            assert "PERMANENT" in neigh
            fdb = ip("-n", ns["host-a"], "link", "show", "vxlan.calico").stdout
            assert "mtu 1450" in fdb
            bridge_fdb = (
                __import__("subprocess")
                .run(
                    ["bridge", "-n", ns["host-a"], "fdb", "show", "dev", "vxlan.calico"],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                .stdout
            )
            assert "dst 198.51.100.2" in bridge_fdb
        finally:
            for felix in felixes:
                felix.kill()
            etcd.stop()
