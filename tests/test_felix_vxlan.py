"""Two lab hosts on one bridge, a VXLAN pool: pods reach each other through vxlan.calico.

No BGP: the routes, ARP and FDB entries all come from the datastore.  The hosts' default
route leads nowhere, so only felix's routes through the tunnel carry pod traffic.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from datastore.models import Profile
from lab.agents import FelixProcess
from lab.network import Lab, ip, lab, namespaces
from lab.workloads import ping

ALLOCATE_TUNNEL_ADDRESS = """
import sys
from datastore.config import DatastoreConfig
from datastore.etcd import EtcdKV
from datastore.keys import KeyLayout
from ipam.allocator import BlockAllocator
from datastore.models.ipam import tunnel_handle
url, node = sys.argv[1:]
kv = EtcdKV(DatastoreConfig(etcd_endpoints=(url,)))
print(BlockAllocator(kv, KeyLayout(), node).auto_assign(tunnel_handle("vxlan", node))[0])
"""


@dataclass
class VXLANPair:
    lab: Lab
    pod_netns: dict[str, str]  # node -> the namespace of its pod
    pods: dict[str, str] = field(default_factory=dict)  # node -> its pod's address


@contextlib.contextmanager
def vxlan_pair(work: Path, cidr: str) -> Iterator[VXLANPair]:
    """Two hosts with a VXLAN pool, a Node with a VXLAN tunnel address each, a pod and felix on each."""
    with lab(work, 2) as cluster, namespaces("pod-1", "pod-2") as pod_ns:
        pair = VXLANPair(cluster, {h.node: pod_ns[f"pod-{i}"] for i, h in enumerate(cluster.hosts, 1)})
        felixes: list[FelixProcess] = []
        pool = {"metadata": {"name": "pods"}, "spec": {"cidr": cidr, "vxlanMode": "Always"}}
        cluster.apply(
            [
                {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", **pool},
                Profile.default_allow().to_dict(),
            ]
        )
        try:
            for host in cluster.hosts:
                tunnel = host.run(
                    sys.executable, "-c", ALLOCATE_TUNNEL_ADDRESS, host.etcd_url, host.node, check=True
                ).stdout.strip()
                spec = {"bgp": {"ipv4Address": host.interface}, "ipv4VXLANTunnelAddr": tunnel}
                node = {"metadata": {"name": host.node}, "spec": spec}
                host.apply([{"apiVersion": "projectcalico.org/v3", "kind": "Node", **node}])
                code, result = host.cni(
                    "ADD", host.netconf(), f"c-{host.node}", f"/run/netns/{pair.pod_netns[host.node]}"
                )
                assert code == 0 and result is not None, result
                pair.pods[host.node] = str(result["ips"][0]["address"]).split("/")[0]
                felix = FelixProcess(host, work / f"felix-{host.node}.log")
                felixes.append(felix)
                felix.start()
            for felix in felixes:
                felix.wait_ready(timeout=60)
            yield pair
        finally:
            for felix in felixes:
                felix.kill()


def test_pods_on_two_hosts_ping_through_vxlan(tmp_path: Path) -> None:
    with vxlan_pair(tmp_path, "10.110.0.0/16") as pair:
        a, b = pair.lab.hosts
        pod_a, pod_b = pair.pod_netns[a.node], pair.pod_netns[b.node]
        # felix on b started last: its first apply, made when it became ready, already has the
        # route to a's block through the device that same apply created.
        assert "onlink" in ip("-n", b.netns, "route", "show", "dev", "vxlan.calico").stdout
        deadline = time.monotonic() + 15
        while not ping(pod_a, pair.pods[b.node], count=1).ok and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ping(pod_a, pair.pods[b.node]).ok, ip("-n", a.netns, "route").stdout
        assert ping(pod_b, pair.pods[a.node]).ok
        shown = ip("-n", a.netns, "route", "show", "dev", "vxlan.calico").stdout
        assert "onlink" in shown and "10.110." in shown
        assert "PERMANENT" in ip("-n", a.netns, "neigh", "show", "dev", "vxlan.calico").stdout
        assert "mtu 1450" in ip("-n", a.netns, "link", "show", "vxlan.calico").stdout
        fdb = subprocess.run(
            ["bridge", "-n", a.netns, "fdb", "show", "dev", "vxlan.calico"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        assert f"dst {b.address}" in fdb
