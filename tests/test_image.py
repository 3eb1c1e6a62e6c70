"""felid's image (``deploy/build-image``: a Debian 12 base made with mmdebstrap, felid's wheel and
its pinned dependencies, no registry) runs felid-node as the DaemonSet would, on two lab hosts:
the host's network, privileged, the host paths it writes; the hosts register, peer over BGP, and
workloads on them reach each other."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from datastore.version import VERSION
from lab import network
from lab.cluster import Cluster, Workload
from lab.podman import Podman, node_container
from lab.workloads import ping


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Podman, str]]:
    podman = Podman.make(tmp_path_factory.mktemp("image") / "podman")
    try:
        yield podman, podman.build_felid_image()
    finally:
        podman.destroy()


def test_the_image_is_tagged_with_the_version_and_serves_each_role(built: tuple[Podman, str]) -> None:
    podman, image = built
    assert image == f"localhost/felid:{VERSION}"
    etcd = ["--env", "FELID_ETCD_ENDPOINTS=http://192.0.2.10:2379"]
    node = [*etcd, "--env", "FELID_NODENAME=node-1"]
    for entrypoint, env in (("felid-node", node), ("felid-typha", etcd), ("felid-install-cni", node)):
        done = podman.run(
            "run", "--rm", "--network", "none", *env, "--entrypoint", entrypoint, image, "--check-config",
            check=False,
        )  # fmt: skip
        assert done.returncode == 0 and "configuration is valid" in done.stdout, (entrypoint, done.stderr)
    tools = podman.run("run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c",
                       "ip -V && iptables -V && command -v ipset && exabgp version").stdout  # fmt: skip
    assert (
        "iproute2" in tools and "nf_tables" in tools and "/usr/sbin/ipset" in tools and "ExaBGP : 5" in tools
    )


def test_felid_node_from_the_image_on_two_hosts_peers_and_routes_workloads(
    built: tuple[Podman, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    podman, image = built
    work = tmp_path_factory.mktemp("image-cluster")
    cluster = Cluster(
        work / "cluster",
        2,
        prefix="im",
        node_runner=lambda host, env: node_container(podman, image, host, env),
    )
    try:
        cluster.build()
        for host in cluster.hosts:
            cluster.start_node(host)
        cluster.wait_ready(timeout=150)
        nodes = json.loads(cluster.felidctl("get", "nodes", "-o", "json").stdout)["items"]
        assert sorted(n["metadata"]["name"] for n in nodes) == [h.node for h in cluster.hosts]
        for host in cluster.hosts:
            status = cluster.felidctl("node", "status", host=host).stdout
            assert "Established" in status, status
            running = podman.run("ps", "--format", "{{.Names}} {{.Image}}", netns=host.netns).stdout
            assert f"felid-node-{host.node} {image}" in running
        one = cluster.add_workload(cluster.hosts[0], "a")
        two = cluster.add_workload(cluster.hosts[1], "b")
        assert ping(one.netns, two.address).ok and ping(two.netns, one.address).ok
        bundled_plugins_make_a_reachable_workload(cluster, podman, image, work, two)
    finally:
        cluster.destroy()
        podman.run("rm", "--force", "--all", check=False)


def bundled_plugins_make_a_reachable_workload(
    cluster: Cluster, podman: Podman, image: str, work: Path, other: Workload
) -> None:
    """The plugins as the DaemonSet's init container installs them (felid-install-cni from the image,
    CNI_BUNDLE: the image's own Python with them) run on the host, whose felid is not the image's:
    a runtime's ADD makes a workload a pod on the other host reaches, its DEL takes it away."""
    host = cluster.hosts[0]
    bin_dir, net_dir = work / "opt-cni-bin", work / "etc-cni-net.d"
    bin_dir.mkdir()
    net_dir.mkdir()
    settings = {
        "CNI_BUNDLE": "true",
        "CNI_BIN_DIR": "/host/opt/cni/bin",
        "CNI_NET_DIR": "/host/etc/cni/net.d",
        "CNI_MTU_FILE": str(host.var_dir / "mtu"),
        "FELID_ETCD_ENDPOINTS": host.etcd_url,
        "FELID_NODENAME": host.node,
    }
    env = [arg for k, v in settings.items() for arg in ("--env", f"{k}={v}")]
    volumes = ["--volume", f"{bin_dir}:/host/opt/cni/bin", "--volume", f"{net_dir}:/host/etc/cni/net.d"]
    podman.run("run", "--rm", "--network", "none", *volumes, *env, "--entrypoint", "felid-install-cni", image)
    conflist = json.loads((net_dir / "10-felid.conflist").read_text())
    netconf = {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **conflist["plugins"][0]}
    pod = f"{cluster.prefix}-p-bundled"
    network.add_namespace(pod)
    assert cluster.lab is not None
    cluster.lab.namespaces.append(pod)

    def runtime(command: str) -> subprocess.CompletedProcess[str]:
        environ = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",  # nothing of felid's: the bundle brings its own
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": "bundled0",
            "CNI_NETNS": f"/run/netns/{pod}",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": f"{bin_dir}:/usr/lib/cni",
        }
        return subprocess.run(
            ["ip", "netns", "exec", host.netns, str(bin_dir / "felid")],
            input=json.dumps(netconf), env=environ, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    added = runtime("ADD")
    assert added.returncode == 0, added.stdout + added.stderr
    address = json.loads(added.stdout)["ips"][0]["address"].split("/")[0]
    assert ping(other.netns, address).ok
    removed = runtime("DEL")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert not ping(other.netns, address, count=1, wait=1).ok
