"""felid's image (``deploy/build-image``: a Debian 12 base made with mmdebstrap, felid's wheel and
its pinned dependencies, no registry) runs felid-node as the DaemonSet would, on two lab hosts:
the host's network, privileged, the host paths it writes; the hosts register, peer over BGP, and
workloads on them reach each other."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from datastore.version import VERSION
from lab.cluster import Cluster
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
    cluster = Cluster(
        tmp_path_factory.mktemp("image-cluster"),
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
    finally:
        cluster.destroy()
        podman.run("rm", "--force", "--all", check=False)
