"""felid's agents as real processes inside lab hosts, stopped by PID; and helpers that watch them.

``FelixProcess`` and ``BGPProcess`` run one felix or felid-bgp outside felid-node (the tests of
each agent, the benchmarks); ``BlockWorker`` claims and releases whole IPAM blocks on request;
``route_deletions`` records every route a set of kernels deletes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bgp.config import BGPSettings
from lab.etcd import free_port
from lab.network import Lab, LabHost, http_get
from lab.processes import BIN, clean_environment, kill_group

BGP_PORT: int = BGPSettings.default_of("metrics_port")


class FelixProcess:
    def __init__(self, host: LabHost, log: Path, **env: str) -> None:
        self.host = host
        self.log = log
        self.health_port = free_port()
        self.env = {
            **clean_environment(),
            "FELID_ETCD_ENDPOINTS": host.etcd_url,
            "FELID_NODENAME": host.node,
            "FELIX_HEALTHPORT": str(self.health_port),
            "FELIX_MTUFILE": str(host.mtu_file),
            "FELIX_LOGSEVERITYSCREEN": "Debug",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                ["ip", "netns", "exec", self.host.netns, str(BIN / "felid-felix")],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def ready(self) -> bool:
        return http_get(self.host.netns, self.health_port, "/readiness")[0] == 200

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.log.read_text()[-3000:]
            if self.ready():
                return
            time.sleep(0.1)
        raise AssertionError(f"felix not ready in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class BGPProcess:
    """One agent, in its own process group so that its ExaBGP and bridge go with it."""

    def __init__(self, host: LabHost, work: Path, *args: str, **env: str) -> None:
        self.host = host
        self.args = args
        self.log = work / f"bgp-{host.node}.log"
        self.env = {
            **clean_environment(),
            "FELID_ETCD_ENDPOINTS": host.etcd_url,
            "FELID_NODENAME": host.node,
            "FELID_BGP_RUN_DIR": str(work / f"bgp-{host.node}"),
            "FELID_BGP_LOG_SEVERITY": "Debug",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                ["ip", "netns", "exec", self.host.netns, str(BIN / "felid-bgp"), *self.args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def status(self) -> dict[str, Any] | None:
        code, body = http_get(self.host.netns, BGP_PORT, "/status")
        result = json.loads(body) if code == 200 else None
        return result if isinstance(result, dict) else None

    def exabgp_pid(self) -> int | None:
        status = self.status()
        pid = status.get("exabgpPID") if status else None
        return int(pid) if pid else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the agent and everything it started (its process group)."""
        proc, self.process = self.process, None
        kill_group(proc)


def start_agents(lab: Lab, work: Path, hosts: list[LabHost] | None = None) -> list[BGPProcess]:
    agents = [BGPProcess(h, work) for h in (hosts or lab.hosts)]
    for agent in agents:
        agent.start()
    return agents


@contextlib.contextmanager
def route_deletions(hosts: list[LabHost]) -> Iterator[list[str]]:
    """Collects every route deletion the hosts' kernels report while the block runs."""
    with route_changes(hosts, deletions=True) as deleted:
        yield deleted


@contextlib.contextmanager
def route_changes(hosts: list[LabHost], *, deletions: bool = False) -> Iterator[list[str]]:
    """Collects every IPv4 route change (or only deletions) the hosts' kernels report while the block
    runs (felid routes IPv4 only; the kernel's own IPv6 link-local routes come and go by themselves)."""
    monitors = [
        subprocess.Popen(["ip", "-4", "-n", h.netns, "monitor", "route"], stdout=subprocess.PIPE, text=True)
        for h in hosts
    ]
    deleted: list[str] = []
    try:
        time.sleep(0.2)  # ip monitor subscribes asynchronously
        yield deleted
        time.sleep(0.2)
    finally:
        for monitor in monitors:
            monitor.terminate()
            out, _ = monitor.communicate(timeout=10)
            deleted += [line for line in out.splitlines() if line.startswith("Deleted") or not deletions]


class BlockWorker:
    """``python -m lab.block_worker`` in a lab namespace, one JSON reply per command."""

    def __init__(self, netns: str, etcd_url: str, block_size: int) -> None:
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-m", "lab.block_worker"],
            env={**os.environ, "FELID_ETCD_ENDPOINTS": etcd_url, "BLOCK_SIZE": str(block_size)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, *words: str) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(" ".join(words) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, "the block worker died"
        reply: dict[str, Any] = json.loads(line)
        assert "error" not in reply, reply["error"]
        return reply

    def claim(self, node: str) -> dict[str, Any]:
        """A whole new block for ``node``: {"block": cidr, "handle": id, "t": wall time of the commit}."""
        return self.ask("claim", node)

    def release(self, node: str, handle: str, block: str) -> dict[str, Any]:
        return self.ask("release", node, handle, block)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
