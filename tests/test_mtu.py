"""One MTU for every interface: felix detects the host's once, sizes its tunnels from it and writes
the workloads' MTU to the file the CNI plugin reads; a packet of exactly the pods' MTU with DF set
crosses hosts, one byte more is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.cluster import Cluster, Mode, Workload
from lab.network import LabHost, ip
from lab.processes import wait_until
from lab.workloads import ping

ICMP_AND_IP_HEADERS = 28


def mtu_of(netns: str, device: str) -> int:
    shown = json.loads(ip("-n", netns, "-j", "link", "show", "dev", device).stdout)
    return int(shown[0]["mtu"])


def host_end(host: LabHost) -> list[str]:
    """The host ends of the workloads' veths on ``host``."""
    links = json.loads(ip("-n", host.netns, "-j", "link", "show").stdout)
    return [link["ifname"] for link in links if link["ifname"].startswith("cali")]


@pytest.mark.parametrize(
    ("mode", "nic_mtu", "pod_mtu", "tunnel"),
    [("vxlan", 1450, 1400, "vxlan.calico"), ("never", 9000, 9000, None)],
)
def test_pods_veths_and_tunnels_share_the_hosts_mtu(
    tmp_path: Path, mode: Mode, nic_mtu: int, pod_mtu: int, tunnel: str | None
) -> None:
    cluster = Cluster(tmp_path, 2, mode=mode, nic_mtu=nic_mtu, prefix="ft")
    try:
        cluster.build()
        for host in cluster.hosts:
            cluster.start_node(host)
        cluster.wait_ready(timeout=90)
        pods: list[Workload] = [cluster.add_workload(host) for host in cluster.hosts]
        for host, pod in zip(cluster.hosts, pods, strict=True):
            assert host.mtu_file.read_text() == f"{pod_mtu}\n"
            assert mtu_of(pod.netns, "eth0") == pod_mtu
            assert [mtu_of(host.netns, veth) for veth in host_end(host)] == [pod_mtu]
            if tunnel is not None:
                assert mtu_of(host.netns, tunnel) == pod_mtu
            # felid-node follows felix's MTU file into subnet.env within a second, not by readiness
            # (a host file it cannot write must not keep the node unready).
            subnet_env = Path(host.home) / "run" / "subnet.env"
            wait_until(
                lambda env=subnet_env: env.exists() and f"FELID_MTU={pod_mtu}\n" in env.read_text(),
                10,
                f"subnet.env with the MTU on {host.node}",
            )
        source, target = pods
        assert ping(source.netns, target.address).ok
        largest = pod_mtu - ICMP_AND_IP_HEADERS
        fits = ping(source.netns, target.address, size=largest, dont_fragment=True)
        assert fits.ok, f"{largest}-byte pings with DF set should cross: {fits}"
        too_big = ping(source.netns, target.address, count=1, size=largest + 1, dont_fragment=True)
        assert too_big.received == 0
    finally:
        cluster.destroy()
