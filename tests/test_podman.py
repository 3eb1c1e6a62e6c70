"""A container runtime nobody here wrote drives felid's CNI plugin: Podman (Debian 12, its CNI
network backend) on two felid-node hosts, with the network config felid-install-cni wrote;
containers started with ``--network felid`` get felid addresses and reach each other across the
hosts, and removing them gives their addresses back."""

from __future__ import annotations

import json
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.cluster import Cluster
from lab.network import LabHost
from lab.podman import Podman
from lab.processes import BIN

IMAGE = "localhost/felid-test-busybox:1"
BUSYBOX_COMMANDS = ("sh", "ip", "ping", "sleep", "cat")


def busybox_rootfs(path: Path) -> Path:
    """A one-binary root filesystem (Debian's busybox-static) as a tarball: an image without any
    registry (``podman import``)."""
    tarball = path / "busybox.tar"
    with tarfile.open(tarball, "w") as out:
        out.add("/bin/busybox", arcname="bin/busybox")
        for command in BUSYBOX_COMMANDS:
            link = tarfile.TarInfo(f"bin/{command}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            out.addfile(link)
    return tarball


@dataclass
class PodmanHost:
    """Podman in one lab host's network namespace, with storage and a network config of its own."""

    host: LabHost
    podman: Podman

    @property
    def home(self) -> Path:
        return self.podman.home

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.podman.run(*args, netns=self.host.netns, check=check)

    def install_cni(self) -> str:
        """felid-install-cni as the init container runs it, into this host's directories."""
        environ = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "CNI_NET_DIR": str(self.home / "net.d"),
            "CNI_BIN_DIR": str(self.home / "bin"),
            "CNI_MTU_FILE": str(self.host.var_dir / "mtu"),
            "FELID_ETCD_ENDPOINTS": self.host.etcd_url,
            "FELID_NODENAME": self.host.node,
        }
        done = subprocess.run(
            [str(BIN / "felid-install-cni")], capture_output=True, text=True, env=environ, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, list[PodmanHost]]]:
    work = tmp_path_factory.mktemp("podman")
    cluster = Cluster(work / "cluster", 2, prefix="pm")
    runtimes: list[PodmanHost] = []
    try:
        cluster.build()
        for host in cluster.hosts:
            cluster.start_node(host)
        cluster.wait_ready(timeout=90)
        image = busybox_rootfs(work)
        for host in cluster.hosts:
            home = work / f"podman-{host.node}"
            podman = Podman.make(
                home, plugin_dirs=(home / "bin", Path("/usr/lib/cni")), network_dir=home / "net.d"
            )
            runtimes.append(PodmanHost(host, podman))
            podman.run("import", str(image), IMAGE)
        yield cluster, runtimes
    finally:
        for runtime in runtimes:
            runtime.podman.destroy(runtime.host.netns)  # each container's CNI DEL: addresses released
        cluster.destroy()


def test_install_cni_writes_the_plugins_and_the_network_config_once(
    hosts: tuple[Cluster, list[PodmanHost]],
) -> None:
    _, runtimes = hosts
    runtime = runtimes[0]
    first = runtime.install_cni()
    assert "wrote" in first, first
    config = json.loads((runtime.home / "net.d" / "10-felid.conflist").read_text())
    assert [p["type"] for p in config["plugins"]] == ["felid", "portmap"]
    assert config["plugins"][0]["nodename"] == runtime.host.node
    assert config["plugins"][0]["etcd_endpoints"] == runtime.host.etcd_url
    assert (runtime.home / "bin" / "felid").stat().st_mode & 0o111
    assert "already in place" in runtime.install_cni()  # a restarted init container changes nothing


def test_podman_containers_on_the_felid_network_reach_each_other_across_hosts(
    hosts: tuple[Cluster, list[PodmanHost]],
) -> None:
    cluster, runtimes = hosts
    addresses = []
    for i, runtime in enumerate(runtimes):
        runtime.install_cni()
        runtime.run("run", "--detach", "--name", f"c{i}", "--network", "felid", IMAGE, "sleep", "600")
        shown = runtime.run("inspect", "--format", "{{json .NetworkSettings.Networks}}", f"c{i}").stdout
        addresses.append(json.loads(shown)["felid"]["IPAddress"])
    assert all(a.startswith("10.") for a in addresses), addresses  # from the lab's pool
    weps = json.loads(cluster.felidctl("get", "wep", "--all-namespaces", "-o", "json").stdout)["items"]
    assert {w["spec"]["node"] for w in weps} >= {h.node for h in cluster.hosts}
    for i, runtime in enumerate(runtimes):
        other = addresses[1 - i]
        done = runtime.run("exec", f"c{i}", "ping", "-c", "3", "-W", "2", other, check=False)
        assert done.returncode == 0, f"c{i} -> {other}: {done.stdout}{done.stderr}"
    # Removed: the CNI DEL gives the address back and takes the WorkloadEndpoint away.
    removed = runtimes[0].run("rm", "--force", "c0")
    assert "level=error" not in removed.stderr, removed.stderr
    weps = json.loads(cluster.felidctl("get", "wep", "--all-namespaces", "-o", "json").stdout)["items"]
    assert all(w["spec"]["node"] != runtimes[0].host.node for w in weps)
    check = cluster.felidctl("ipam", "check")
    assert check.returncode == 0, check.stdout + check.stderr
