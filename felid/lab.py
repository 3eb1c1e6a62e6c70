"""A lab network on one machine: hosts as network namespaces on a bridge, etcd in its own.

Used by ``felid demo``, the end-to-end tests and the cluster benchmarks.
Everything it makes carries a random tag; ``Lab.destroy`` removes it (etcd by
PID, then the namespaces with every device in them), and a ``Lab`` can be saved
to a file so that another process (``felid demo down``) can destroy it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from felid.etcdserver import EtcdServer

SUBNET = "198.51.100"  # TEST-NET-2: the hosts' LAN
ETCD_HOST = 250
PREFIX_LENGTH = 24
BIN = Path(sys.executable).parent


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
    namespaces: list[str] = field(default_factory=list)  # every namespace it made, pods included

    def host(self, node: str) -> LabHost:
        return next(h for h in self.hosts if h.node == node)

    def felidctl(
        self, *args: str, stdin: str | None = None, host: LabHost | None = None
    ) -> subprocess.CompletedProcess[str]:
        """felidctl against the lab's etcd, in a host's namespace (the first one by default)."""
        where = host or self.hosts[0]
        return subprocess.run(
            ["ip", "netns", "exec", where.netns, str(BIN / "felidctl"), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env={**os.environ, "FELID_ETCD_ENDPOINTS": self.etcd.url},
            check=False,
        )

    def apply(self, documents: Sequence[Any]) -> None:
        done = self.felidctl("apply", "-f", "-", stdin=yaml.safe_dump_all(documents))
        if done.returncode:
            raise RuntimeError(f"felidctl apply: {done.stderr.strip()}")

    def destroy(self) -> None:
        self.etcd.stop()
        for name in self.namespaces:
            ip("netns", "del", name, check=False)

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


def kill_tree(pid: int, grace: float = 0.0) -> None:
    kill_trees([pid], grace)


def kill_trees(pids: Iterable[int], grace: float = 0.0) -> None:
    """Stop processes: SIGTERM to all and up to ``grace`` seconds to exit (stopping their own
    children), then SIGKILL to the whole group of each one left; reaped if they are our children."""
    left = list(pids)
    if grace > 0:
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        left = [pid for pid in left if not wait_gone(pid, max(0.0, deadline - time.monotonic()))]
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
    for pid in left:
        wait_gone(pid, 5.0)


def wait_gone(pid: int, timeout: float) -> bool:
    """Whether ``pid`` has exited within ``timeout`` seconds (0: just look); reaped if ours."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


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


def build(work: Path, hosts: int, *, prefix: str = "ft", fast_election: bool = True) -> Lab:
    """``hosts`` host namespaces (node-1.. at 198.51.100.1..) and etcd at .250, on one bridge.

    The hosts' default route leads to .254, where nothing answers: pods' proxy ARP needs a
    route, but only felid's routes may carry traffic between hosts.
    """
    tag = uuid.uuid4().hex[:6]
    lan, etcd_ns = f"{prefix}-lan-{tag}", f"{prefix}-etcd-{tag}"
    members = [LabHost(f"node-{i}", f"{prefix}-h{i}-{tag}", f"{SUBNET}.{i}") for i in range(1, hosts + 1)]
    made: list[str] = []
    etcd = EtcdServer(
        work / "etcd",
        host=f"{SUBNET}.{ETCD_HOST}",
        netns=etcd_ns,
        log_file=work / "etcd.log",
        fast_election=fast_election,
    )
    lab_ = Lab(etcd, lan, members, made)
    try:
        for name in (lan, etcd_ns, *(h.netns for h in members)):
            add_namespace(name)
            made.append(name)
        ip("-n", lan, "link", "add", "br0", "type", "bridge")
        ip("-n", lan, "link", "set", "br0", "up")
        plug(lan, etcd_ns, f"{SUBNET}.{ETCD_HOST}")
        for host in members:
            plug(lan, host.netns, host.address)
            ip("-n", host.netns, "route", "add", "default", "via", f"{SUBNET}.254")
        etcd.start(timeout=60)
    except BaseException:
        lab_.destroy()
        raise
    return lab_


@contextlib.contextmanager
def lab(work: Path, hosts: int, *, prefix: str = "ft", fast_election: bool = True) -> Iterator[Lab]:
    made = build(work, hosts, prefix=prefix, fast_election=fast_election)
    try:
        yield made
    finally:
        made.destroy()


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


# -- workloads ----------------------------------------------------------------------------------------


def cni(
    netns: str,
    netconf: Mapping[str, Any],
    command: str,
    container: str,
    netns_path: str = "",
    *,
    cni_args: str = "",
    plugin: str = "felid",
) -> tuple[int, dict[str, Any] | None]:
    """Run a CNI plugin as a runtime would, inside host namespace ``netns``: (exit code, result JSON)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FELID_", "CNI_", "FELIX_"))}
    env |= {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container,
        "CNI_NETNS": netns_path,
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": cni_args,
        "CNI_PATH": f"/usr/lib/cni:{BIN}",
    }
    binary = str(BIN / plugin) if (BIN / plugin).exists() else f"/usr/lib/cni/{plugin}"
    done = subprocess.run(
        ["ip", "netns", "exec", netns, binary],
        input=json.dumps(netconf),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    if "Traceback" in done.stderr:
        raise RuntimeError(f"the {plugin} plugin crashed:\n{done.stderr[-3000:]}")
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else None


@dataclass(frozen=True)
class PingResult:
    source: str
    target: str
    sent: int
    received: int
    rtt_ms: float | None  # average

    @property
    def ok(self) -> bool:
        return self.received > 0 and self.received == self.sent


def ping(netns: str, target: str, count: int = 3, interval: float = 0.2, wait: float = 1.0) -> PingResult:
    done = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            netns,
            "ping",
            "-n",
            "-c",
            str(count),
            "-i",
            str(interval),
            "-W",
            str(wait),
            target,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    counts = re.search(r"(\d+) packets transmitted, (\d+) received", done.stdout)
    rtt = re.search(r"= [\d.]+/([\d.]+)/", done.stdout)
    sent, received = (int(counts.group(1)), int(counts.group(2))) if counts else (count, 0)
    return PingResult(netns, target, sent, received, float(rtt.group(1)) if rtt else None)
