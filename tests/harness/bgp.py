"""felid-bgp as a real process in a lab host, and a worker that claims and releases IPAM blocks."""

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

from felid.lab import BIN, Lab, LabHost, http_get
from tests.harness.hosts import Host


class BGPProcess:
    """One agent, in its own process group so that its ExaBGP and bridge go with it."""

    def __init__(self, host: LabHost, etcd_url: str, work: Path, *args: str, **env: str) -> None:
        self.host = host
        self.args = args
        self.log = work / f"bgp-{host.node}.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("FELID_", "FELIX_"))},
            "FELID_ETCD_ENDPOINTS": etcd_url,
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
        code, body = http_get(self.host.netns, 9092, "/status")
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
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def start_agents(lab: Lab, work: Path, hosts: list[LabHost] | None = None) -> list[BGPProcess]:
    agents = [BGPProcess(h, lab.etcd.url, work) for h in (hosts or lab.hosts)]
    for agent in agents:
        agent.start()
    return agents


def wait_until(check: Any, timeout: float, what: str, interval: float = 0.05) -> float:
    """Poll ``check()`` until true; the seconds it took (AssertionError naming ``what`` after timeout)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(interval)
    raise AssertionError(f"not within {timeout}s: {what}")


@contextlib.contextmanager
def route_deletions(hosts: list[LabHost]) -> Iterator[list[str]]:
    """Collects every route deletion the hosts' kernels report while the block runs."""
    monitors = [
        subprocess.Popen(["ip", "-n", h.netns, "monitor", "route"], stdout=subprocess.PIPE, text=True)
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
            deleted += [line for line in out.splitlines() if line.startswith("Deleted")]


class BlockWorker:
    """``python -m tests.harness.block_worker`` in a lab namespace, one JSON reply per command."""

    def __init__(self, netns: str, etcd_url: str, block_size: int) -> None:
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-m", "tests.harness.block_worker"],
            env={**os.environ, "FELID_ETCD_ENDPOINTS": etcd_url, "BLOCK_SIZE": str(block_size)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
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


def host_for(lab: Lab) -> Host:
    """felidctl against the lab's etcd, run in etcd's namespace."""
    return Host(lab.etcd.netns or "", lab.etcd.host, lab.etcd)
