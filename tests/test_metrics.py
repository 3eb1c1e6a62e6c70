"""Every metrics endpoint of a running cluster is valid Prometheus text (``promtool check metrics``),
and felid-node's IPAM metrics are its own node's."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bgp.config import BGPSettings
from felid.node.config import NodeSettings
from felix.config import FelixSettings
from lab.cluster import Cluster
from lab.network import http_get

ENDPOINTS = {
    "felix": FelixSettings.default_of("prometheus_metrics_port"),
    "felid-bgp": BGPSettings.default_of("metrics_port"),
    "felid-node": NodeSettings.default_of("metrics_port"),
}


def test_every_metrics_endpoint_passes_promtool(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 2, prefix="ft", node_env={"FELIX_PROMETHEUSMETRICSENABLED": "true"})
    try:
        cluster.build()
        for host in cluster.hosts:
            cluster.start_node(host)
        cluster.wait_ready(timeout=90)
        one, two = cluster.hosts
        for _ in range(2):
            cluster.add_workload(one)
        cluster.add_workload(two)
        for host in cluster.hosts:
            for name, port in ENDPOINTS.items():
                code, body = http_get(host.netns, port, "/metrics")
                assert code == 200 and body, f"{name} on {host.node}: {code}"
                checked = subprocess.run(
                    ["promtool", "check", "metrics"], input=body, capture_output=True, text=True, check=False
                )
                assert checked.returncode == 0, f"{name} on {host.node}: {checked.stdout}{checked.stderr}"
        _, ipam = http_get(one.netns, ENDPOINTS["felid-node"], "/metrics")
        in_use = [line for line in ipam.splitlines() if line.startswith("ipam_allocations_in_use{")]
        # Two workloads and the bridge gateway felid-node reserved (two addresses: the first is a
        # block's network address, which a bridge cannot take); no other node's series.
        assert in_use == ['ipam_allocations_in_use{ippool="default-ipv4-ippool",node="node-1"} 4.0'], ipam
        assert 'ipam_blocks{ippool="default-ipv4-ippool",node="node-1"} 1.0' in ipam
        assert 'node="node-2"' not in ipam and "ipam_ippool_size" in ipam
    finally:
        cluster.destroy()
