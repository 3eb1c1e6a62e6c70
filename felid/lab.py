"""A lab network on one machine: hosts as network namespaces on a bridge, etcd in its own.

Used by ``felid demo``, the end-to-end tests and the cluster benchmarks.
Everything it makes carries a random tag and is removed on exit, even after
a failure: namespaces (with their devices) and the etcd process, by PID.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from felid.etcdserver import EtcdServer

SUBNET = "198.51.100"  # TEST-NET-2: the hosts' LAN
ETCD_HOST = 250
PREFIX_LENGTH = 24


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


@contextlib.contextmanager
def namespaces(*roles: str, prefix: str = "ft") -> Iterator[dict[str, str]]:
    """``with namespaces("host", "pod") as ns: ns["host"]`` -> a fresh namespace name, lo up."""
    tag = uuid.uuid4().hex[:6]
    names = {role: f"{prefix}-{role}-{tag}" for role in roles}
    try:
        for name in names.values():
            ip("netns", "add", name)
            ip("-n", name, "link", "set", "lo", "up")
        yield names
    finally:
        for name in names.values():
            ip("netns", "del", name, check=False)


@dataclass(frozen=True)
class LabHost:
    node: str
    netns: str
    address: str  # on its uplink, without prefix
    nic: str = "eth0"

    @property
    def interface(self) -> str:
        return f"{self.address}/{PREFIX_LENGTH}"

    def routes(self, proto: int | None = None) -> list[dict[str, Any]]:
        args = ["-n", self.netns, "-j", "route", "show"] + (["proto", str(proto)] if proto else [])
        return list(json.loads(ip(*args).stdout or "[]"))


@dataclass
class Lab:
    etcd: EtcdServer
    lan: str  # the namespace holding the bridge
    hosts: list[LabHost]

    def host(self, node: str) -> LabHost:
        return next(h for h in self.hosts if h.node == node)


def plug(lan: str, netns: str, address: str, nic: str = "eth0") -> None:
    """A veth from the bridge into ``netns``, named ``nic`` there, with ``address``/24 and up."""
    tag = uuid.uuid4().hex[:8]
    outside, inside = f"fl{tag}", f"fi{tag}"
    ip("-n", lan, "link", "add", outside, "type", "veth", "peer", "name", inside)
    ip("-n", lan, "link", "set", inside, "netns", netns)
    ip("-n", netns, "link", "set", inside, "name", nic)
    ip("-n", netns, "addr", "add", f"{address}/{PREFIX_LENGTH}", "dev", nic)
    ip("-n", netns, "link", "set", nic, "up")
    ip("-n", lan, "link", "set", outside, "master", "br0", "up")


@contextlib.contextmanager
def lab(work: Path, hosts: int, *, prefix: str = "ft", fast_election: bool = True) -> Iterator[Lab]:
    """``hosts`` host namespaces (node-1.. at 198.51.100.1..) and etcd at .250, on one bridge."""
    roles = ["lan", "etcd", *(f"h{i}" for i in range(1, hosts + 1))]
    with namespaces(*roles, prefix=prefix) as ns:
        ip("-n", ns["lan"], "link", "add", "br0", "type", "bridge")
        ip("-n", ns["lan"], "link", "set", "br0", "up")
        plug(ns["lan"], ns["etcd"], f"{SUBNET}.{ETCD_HOST}")
        members = []
        for i in range(1, hosts + 1):
            address = f"{SUBNET}.{i}"
            plug(ns["lan"], ns[f"h{i}"], address)
            members.append(LabHost(f"node-{i}", ns[f"h{i}"], address))
        etcd = EtcdServer(
            work / "etcd",
            host=f"{SUBNET}.{ETCD_HOST}",
            netns=ns["etcd"],
            log_file=work / "etcd.log",
            fast_election=fast_election,
        )
        etcd.start(timeout=60)
        try:
            yield Lab(etcd, ns["lan"], members)
        finally:
            etcd.stop()
