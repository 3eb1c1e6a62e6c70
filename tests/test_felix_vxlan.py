"""Two hosts on one link, a VXLAN pool: pods reach each other through vxlan.calico.

No BGP: the routes, ARP and FDB entries all come from the datastore.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.harness.cluster import two_hosts
from tests.harness.hosts import ping
from tests.harness.netns import ip


def test_pods_on_two_hosts_ping_through_vxlan(tmp_path: Path) -> None:
    with two_hosts(tmp_path, "vxlan", "10.110.0.0/16") as cluster:
        host_a, pod_a, pod_b = cluster.hosts["a"].netns, cluster.pod_netns["a"], cluster.pod_netns["b"]
        # felix on b started last: its first apply, made when it became ready, already has the
        # route to a's block through the device that same apply created.
        assert "onlink" in ip("-n", cluster.hosts["b"].netns, "route", "show", "dev", "vxlan.calico").stdout
        deadline = time.monotonic() + 15
        while not ping(pod_a, cluster.pods["b"], count=1) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ping(pod_a, cluster.pods["b"]), ip("-n", host_a, "route").stdout
        assert ping(pod_b, cluster.pods["a"])
        shown = ip("-n", host_a, "route", "show", "dev", "vxlan.calico").stdout
        assert "onlink" in shown and "10.110." in shown
        assert "PERMANENT" in ip("-n", host_a, "neigh", "show", "dev", "vxlan.calico").stdout
        assert "mtu 1450" in ip("-n", host_a, "link", "show", "vxlan.calico").stdout
        fdb = subprocess.run(
            ["bridge", "-n", host_a, "fdb", "show", "dev", "vxlan.calico"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        assert "dst 198.51.100.2" in fdb
