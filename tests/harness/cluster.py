"""Two test hosts on one link, each with a pod and felix, over one etcd: an overlay in miniature."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from felid.etcdserver import EtcdServer
from tests.harness.felix import FelixProcess
from tests.harness.hosts import Host
from tests.harness.netns import ip, namespaces

ADDRESSES = {"a": "198.51.100.1", "b": "198.51.100.2"}
NOWHERE = "198.51.100.254"

ALLOCATE_TUNNEL_ADDRESS = """
import sys
from datastore.config import DatastoreConfig
from datastore.etcd import EtcdKV
from datastore.keys import KeyLayout
from ipam.allocator import BlockAllocator, tunnel_handle
url, kind, node = sys.argv[1:]
kv = EtcdKV(DatastoreConfig(etcd_endpoints=(url,)))
print(BlockAllocator(kv, KeyLayout(), node).auto_assign(tunnel_handle(kind, node))[0])
"""


@dataclass
class TwoHosts:
    etcd: EtcdServer
    hosts: dict[str, Host]
    pod_netns: dict[str, str]
    pods: dict[str, str] = field(default_factory=dict)  # side -> pod address
    felixes: list[FelixProcess] = field(default_factory=list)


def _apply(host: Host, doc: dict[str, Any]) -> None:
    done = host.felidctl("apply", "-f", "-", stdin=json.dumps(doc))
    assert done.returncode == 0, done.stderr


@contextlib.contextmanager
def two_hosts(
    work: Path, encapsulation: Literal["vxlan", "ipip"], cidr: str, fast_election: bool = True
) -> Iterator[TwoHosts]:
    """Hosts a and b joined by a veth, etcd on a, a pool with ``encapsulation``, a pod and felix on each."""
    with namespaces("host-a", "host-b", "pod-a", "pod-b") as ns:
        ip("link", "add", "ftcl-a", "type", "veth", "peer", "name", "ftcl-b")
        for side in "ab":
            host_ns = ns[f"host-{side}"]
            ip("link", "set", f"ftcl-{side}", "netns", host_ns)
            ip("-n", host_ns, "link", "set", f"ftcl-{side}", "name", "uplink0")
            ip("-n", host_ns, "addr", "add", f"{ADDRESSES[side]}/24", "dev", "uplink0")
            ip("-n", host_ns, "link", "set", "uplink0", "up")
            # A default route to nowhere: proxy ARP for the pods' gateway needs one, but only
            # felix's or BGP's routes (through the tunnel) may carry pod traffic between hosts.
            ip("-n", host_ns, "route", "add", "default", "via", NOWHERE)
        etcd = EtcdServer(
            work / "etcd",
            host=ADDRESSES["a"],
            netns=ns["host-a"],
            log_file=work / "etcd.log",
            fast_election=fast_election,
        )
        etcd.start(timeout=60)
        cluster = TwoHosts(
            etcd,
            {s: Host(ns[f"host-{s}"], ADDRESSES[s], etcd) for s in "ab"},
            {s: ns[f"pod-{s}"] for s in "ab"},
        )
        try:
            mode = "vxlanMode" if encapsulation == "vxlan" else "ipipMode"
            _apply(
                cluster.hosts["a"],
                {
                    "apiVersion": "projectcalico.org/v3",
                    "kind": "IPPool",
                    "metadata": {"name": "pods"},
                    "spec": {"cidr": cidr, mode: "Always"},
                },
            )
            for side, host in cluster.hosts.items():
                node = f"node-{side}"
                tunnel = host.run(
                    sys.executable, "-c", ALLOCATE_TUNNEL_ADDRESS, etcd.url, encapsulation, node, check=True
                ).stdout.strip()
                spec: dict[str, Any] = {"bgp": {"ipv4Address": f"{host.address}/24"}}
                if encapsulation == "vxlan":
                    spec["ipv4VXLANTunnelAddr"] = tunnel
                else:
                    spec["bgp"]["ipv4IPIPTunnelAddr"] = tunnel
                _apply(
                    host,
                    {
                        "apiVersion": "projectcalico.org/v3",
                        "kind": "Node",
                        "metadata": {"name": node},
                        "spec": spec,
                    },
                )
                conf = {
                    "cniVersion": "1.0.0",
                    "name": "pods",
                    "type": "felid",
                    "etcd_endpoints": etcd.url,
                    "nodename": node,
                    "ipam": {"type": "felid-ipam"},
                }
                code, result = host.cni("ADD", conf, f"c-{side}", f"/run/netns/{cluster.pod_netns[side]}")
                assert code == 0 and result is not None, result
                cluster.pods[side] = str(result["ips"][0]["address"]).split("/")[0]
                felix = FelixProcess(host, work / f"felix-{node}.log", node=node)
                cluster.felixes.append(felix)
                felix.start()
            for felix in cluster.felixes:
                felix.wait_ready(timeout=60)
            yield cluster
        finally:
            for felix in cluster.felixes:
                felix.kill()
            etcd.stop()
