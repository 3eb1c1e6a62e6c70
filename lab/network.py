"""A lab network on one machine: hosts as network namespaces on a bridge, etcd in its own.

Used by ``felid demo``, the end-to-end tests and the benchmarks.  Everything it
makes carries a random tag; ``Lab.destroy`` removes it (etcd by PID, then the
namespaces with every device in them), and a ``Lab`` can be saved to a file so
that another process (``felid demo down``) can destroy it.  ``single_host`` is
the smallest lab: one host namespace with etcd inside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lab.etcd import EtcdServer
from lab.processes import BIN, kill_tree
from lab.workloads import cni

SUBNET = "198.51.100"  # TEST-NET-2: the hosts' LAN
ETCD_HOST = 250
NOWHERE = 254  # the hosts' default gateway, where nothing answers
PREFIX_LENGTH = 24
LAB_SOCKETS = Path("/run/felid-lab")  # the lab's felid-nodes' CNI sockets (LabHost.cni_socket)


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
            add_namespace(name)
        yield names
    finally:
        for name in names.values():
            ip("netns", "del", name, check=False)


def add_namespace(name: str) -> None:
    ip("netns", "add", name)
    ip("-n", name, "link", "set", "lo", "up")


@dataclass(frozen=True)
class LabHost:
    """A host: a network namespace with an uplink ``nic``, and the etcd its tools talk to."""

    node: str
    netns: str
    address: str  # on its uplink, without prefix
    etcd_url: str = ""
    nic: str = "eth0"
    home: str = ""  # its own directory: felid-node's and felix's state files, logs

    @property
    def var_dir(self) -> Path:
        """Where felix writes the MTU file and felid-node its state (FELID_VAR_DIR)."""
        return Path(self.home) / "var"

    @property
    def mtu_file(self) -> Path:
        return self.var_dir / "mtu"

    @property
    def cni_socket(self) -> Path:
        """felid-node's CNI fast path for this host (FELID_CNI_SOCKET): short, as a unix socket's
        path must be (at most 107 bytes), and named by the namespace, which is unique."""
        return LAB_SOCKETS / f"{self.netns}.sock"

    @property
    def interface(self) -> str:
        return f"{self.address}/{PREFIX_LENGTH}"

    def routes(self, proto: int | None = None) -> list[dict[str, Any]]:
        args = ["-n", self.netns, "-j", "route", "show"] + (["proto", str(proto)] if proto else [])
        return list(json.loads(ip(*args).stdout or "[]"))

    def run(
        self, *argv: str, env: Mapping[str, str] | None = None, stdin: str | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """``argv`` inside this host's namespace."""
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

    def felidctl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """felidctl against this host's etcd, from inside the host."""
        return self.run(
            str(BIN / "felidctl"), *args, env={"FELID_ETCD_ENDPOINTS": self.etcd_url}, stdin=stdin
        )

    def apply(self, documents: Sequence[Any]) -> None:
        done = self.felidctl("apply", "-f", "-", stdin=yaml.safe_dump_all(documents))
        if done.returncode:
            raise RuntimeError(f"felidctl apply: {done.stderr.strip()}")

    def netconf(self, version: str = "1.0.0", fast_path: bool = False) -> dict[str, Any]:
        """A network config of the felid CNI plugin for this host; ``fast_path``: through this host's
        felid-node (its ``cni_socket``), else the plugin does the work itself, as the lab's clusters
        and tests have it (a pod is reachable once felix has programmed it; the slower plugin used
        to give felix that time, the fast path does not: see issue 16's note)."""
        config = {
            "cniVersion": version,
            "name": "pods",
            "type": "felid",
            "etcd_endpoints": self.etcd_url,
            "nodename": self.node,
            "mtu_file": str(self.mtu_file),
            "cni_socket": str(self.cni_socket) if fast_path else str(self.cni_socket) + ".unserved",
            "ipam": {"type": "felid-ipam"},
        }
        return config

    def cni(  # noqa: PLR0917 - the CNI call's own parameters, in the spec's order
        self,
        command: str,
        netconf: Mapping[str, Any],
        container: str,
        netns_path: str = "",
        cni_args: str = "",
        plugin: str = "felid",
        environ: Mapping[str, str] | None = None,
    ) -> tuple[int, dict[str, Any] | None]:
        return cni(
            self.netns,
            netconf,
            command,
            container,
            netns_path,
            cni_args=cni_args,
            plugin=plugin,
            environ=environ,
        )


@dataclass
class Lab:
    etcd: EtcdServer
    lan: str  # the namespace holding the bridge
    hosts: list[LabHost]
    namespaces: list[str] = field(default_factory=list)  # every namespace it made, pods included

    def host(self, node: str) -> LabHost:
        return next(h for h in self.hosts if h.node == node)

    def felidctl(
        self, *args: str, stdin: str | None = None, host: LabHost | None = None
    ) -> subprocess.CompletedProcess[str]:
        """felidctl against the lab's etcd, in a host's namespace (the first one by default)."""
        return (host or self.hosts[0]).felidctl(*args, stdin=stdin)

    def apply(self, documents: Sequence[Any]) -> None:
        self.hosts[0].apply(documents)

    @property
    def etcd_host(self) -> LabHost:
        """etcd's own namespace as a host (felidctl and scripts run there, off every lab host)."""
        return LabHost("etcd", self.etcd.netns or "", self.etcd.host, self.etcd.url)

    def add_host(self, node: str, address: str, work: Path) -> LabHost:
        """One more namespace on the bridge (a typha, say): no felid-node, the lab's etcd."""
        netns = self.lan.replace("-lan-", f"-{node}-")
        add_namespace(netns)
        self.namespaces.append(netns)
        plug(self.lan, netns, address)
        return LabHost(node, netns, address, self.etcd.url, home=str(work / "hosts" / node))

    def destroy(self) -> None:
        self.etcd.stop()
        for name in self.namespaces:
            ip("netns", "del", name, check=False)
            (LAB_SOCKETS / f"{name}.sock").unlink(missing_ok=True)  # a felid-node killed leaves it

    def saved(self) -> dict[str, Any]:
        return {
            "etcd": {"pid": self.etcd.pid, "url": self.etcd.url, "netns": self.etcd.netns},
            "lan": self.lan,
            "hosts": [asdict(h) for h in self.hosts],
            "namespaces": self.namespaces,
        }


def destroy_saved(saved: Mapping[str, Any]) -> None:
    """Undo a lab from its ``saved()`` record, in a process other than the one that made it."""
    pid = saved.get("etcd", {}).get("pid")
    if pid:
        kill_tree(int(pid))
    for name in saved.get("namespaces", []):
        ip("netns", "del", name, check=False)
        (LAB_SOCKETS / f"{name}.sock").unlink(missing_ok=True)


def plug(lan: str, netns: str, address: str, nic: str = "eth0", mtu: int | None = None) -> None:
    """A veth from the bridge into ``netns``, named ``nic`` there, with ``address``/24 and up."""
    tag = uuid.uuid4().hex[:8]
    outside, inside = f"fl{tag}", f"fi{tag}"
    ip("-n", lan, "link", "add", outside, "type", "veth", "peer", "name", inside)
    if mtu is not None:
        for end in (outside, inside):
            ip("-n", lan, "link", "set", end, "mtu", str(mtu))
    ip("-n", lan, "link", "set", inside, "netns", netns)
    ip("-n", netns, "link", "set", inside, "name", nic)
    ip("-n", netns, "addr", "add", f"{address}/{PREFIX_LENGTH}", "dev", nic)
    ip("-n", netns, "link", "set", nic, "up")
    ip("-n", lan, "link", "set", outside, "master", "br0", "up")


def build(
    work: Path, hosts: int, *, prefix: str = "ft", fast_election: bool = True, mtu: int | None = None
) -> Lab:
    """``hosts`` host namespaces (node-1.. at 198.51.100.1..) and etcd at .250, on one bridge.

    The hosts' default route leads to .254, where nothing answers: pods' proxy ARP needs a
    route, but only felid's routes may carry traffic between hosts.  ``mtu`` is the MTU of
    the hosts' NICs (and the bridge's ports), by default the kernel's 1500.
    """
    tag = uuid.uuid4().hex[:6]
    lan, etcd_ns = f"{prefix}-lan-{tag}", f"{prefix}-etcd-{tag}"
    etcd = EtcdServer(
        work / "etcd",
        host=f"{SUBNET}.{ETCD_HOST}",
        netns=etcd_ns,
        log_file=work / "etcd.log",
        fast_election=fast_election,
    )
    members = [
        LabHost(
            f"node-{i}",
            f"{prefix}-h{i}-{tag}",
            f"{SUBNET}.{i}",
            etcd.url,
            home=str(work / "hosts" / f"node-{i}"),
        )
        for i in range(1, hosts + 1)
    ]
    made: list[str] = []
    lab_ = Lab(etcd, lan, members, made)
    try:
        for name in (lan, etcd_ns, *(h.netns for h in members)):
            add_namespace(name)
            made.append(name)
        ip("-n", lan, "link", "add", "br0", "type", "bridge")
        ip("-n", lan, "link", "set", "br0", "up")
        plug(lan, etcd_ns, f"{SUBNET}.{ETCD_HOST}", mtu=mtu)
        for host in members:
            plug(lan, host.netns, host.address, mtu=mtu)
            ip("-n", host.netns, "route", "add", "default", "via", f"{SUBNET}.{NOWHERE}")
        etcd.start(timeout=60)
    except BaseException:
        lab_.destroy()
        raise
    return lab_


@contextlib.contextmanager
def lab(
    work: Path, hosts: int, *, prefix: str = "ft", fast_election: bool = True, mtu: int | None = None
) -> Iterator[Lab]:
    made = build(work, hosts, prefix=prefix, fast_election=fast_election, mtu=mtu)
    try:
        yield made
    finally:
        made.destroy()


@contextlib.contextmanager
def single_host(work: Path, address: str = "203.0.113.1", node: str = "node-1") -> Iterator[Lab]:
    """The smallest lab: one host namespace with etcd inside it on loopback, and a veth pair
    standing in for its NIC (its default route points there, so proxy ARP for the pods'
    gateway works while nothing leaves the namespace)."""
    with namespaces("host") as ns:
        netns = ns["host"]
        ip("-n", netns, "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1")
        ip("-n", netns, "addr", "add", f"{address}/{PREFIX_LENGTH}", "dev", "uplink0")
        ip("-n", netns, "link", "set", "uplink0", "up")
        ip("-n", netns, "link", "set", "uplink1", "up")
        gateway = f"{address.rsplit('.', 1)[0]}.{NOWHERE}"
        ip("-n", netns, "route", "add", "default", "via", gateway, "dev", "uplink0")
        etcd = EtcdServer(work / "etcd", netns=netns, log_file=work / "etcd.log")
        etcd.start()
        try:
            home = str(work / "hosts" / node)
            yield Lab(etcd, netns, [LabHost(node, netns, address, etcd.url, nic="uplink0", home=home)])
        finally:
            etcd.stop()


HTTP_PROBE = """
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as reply:
        print(reply.status)
        sys.stdout.write(reply.read().decode())
except urllib.error.HTTPError as exc:
    print(exc.code)
except Exception:
    print(0)
"""


def http_get(netns: str, port: int, path: str) -> tuple[int, str]:
    """GET http://127.0.0.1:``port````path`` inside ``netns``: (status, body); 0 when nothing answers."""
    url = f"http://127.0.0.1:{port}{path}"
    done = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", HTTP_PROBE, url],
        capture_output=True,
        text=True,
        check=False,
    )
    status, _, body = done.stdout.partition("\n")
    return (int(status) if status.strip().isdigit() else 0), body
