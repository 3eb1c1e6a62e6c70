"""A test "host": a network namespace with an uplink, a default route and, optionally, etcd."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from felid import lab
from felid.etcdserver import EtcdServer
from felid.lab import BIN
from tests.harness.netns import ip, namespaces

POD_POOL = {
    "apiVersion": "projectcalico.org/v3",
    "kind": "IPPool",
    "metadata": {"name": "pods"},
    "spec": {"cidr": "10.100.0.0/22", "blockSize": 26},
}


@dataclass
class Host:
    netns: str
    address: str  # on its uplink; what pods ping to reach "the host"
    etcd: EtcdServer | None = None

    def run(
        self, *argv: str, env: dict[str, str] | None = None, stdin: str | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["ip", "netns", "exec", self.netns, *argv],
            input=stdin,
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            check=False,
            timeout=120,
        )
        if check and done.returncode:
            raise RuntimeError(
                f"{' '.join(argv)[:200]} failed in {self.netns}: {done.stderr.strip()[-2000:]}"
            )
        return done

    def netconf(self, node: str = "node-1", version: str = "1.0.0") -> dict[str, Any]:
        """A network config of the felid plugin against this host's etcd."""
        assert self.etcd is not None
        return {
            "cniVersion": version,
            "name": "pods",
            "type": "felid",
            "etcd_endpoints": self.etcd.url,
            "nodename": node,
            "ipam": {"type": "felid-ipam"},
        }

    def felidctl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        assert self.etcd is not None
        return self.run(
            str(BIN / "felidctl"), *args, env={"FELID_ETCD_ENDPOINTS": self.etcd.url}, stdin=stdin
        )

    def cni(  # noqa: PLR0917 - the CNI call's own parameters, in the spec's order
        self,
        command: str,
        netconf: dict[str, Any],
        container: str,
        netns_path: str = "",
        cni_args: str = "",
        plugin: str = "felid",
    ) -> tuple[int, dict[str, Any] | None]:
        code, result = lab.cni(
            self.netns, netconf, command, container, netns_path, cni_args=cni_args, plugin=plugin
        )
        return code, result


def make_uplink(netns: str, address: str) -> None:
    """A veth pair inside the namespace standing in for its NIC, with a default route."""
    ip("-n", netns, "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1")
    ip("-n", netns, "addr", "add", f"{address}/24", "dev", "uplink0")
    ip("-n", netns, "link", "set", "uplink0", "up")
    ip("-n", netns, "link", "set", "uplink1", "up")
    gateway = address.rsplit(".", 1)[0] + ".254"
    ip("-n", netns, "route", "add", "default", "via", gateway, "dev", "uplink0")


@contextlib.contextmanager
def host_with_etcd(tmp: Path, address: str = "203.0.113.1") -> Iterator[Host]:
    with namespaces("host") as ns:
        make_uplink(ns["host"], address)
        etcd = EtcdServer(tmp / "etcd", netns=ns["host"], log_file=tmp / "etcd.log")
        etcd.start()
        try:
            yield Host(ns["host"], address, etcd)
        finally:
            etcd.stop()


def ping(netns: str, target: str, count: int = 2) -> bool:
    done = ip("netns", "exec", netns, "ping", "-c", str(count), "-i", "0.2", "-W", "1", target, check=False)
    return done.returncode == 0
