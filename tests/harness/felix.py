"""felix as a real process inside a test host namespace, stopped by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from felid.etcdserver import free_port
from felid.lab import BIN, http_get
from tests.harness.hosts import Host


class FelixProcess:
    def __init__(self, host: Host, log: Path, node: str = "node-1", **env: str) -> None:
        assert host.etcd is not None
        self.host = host
        self.log = log
        self.health_port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("FELID_", "FELIX_"))},
            "FELID_ETCD_ENDPOINTS": host.etcd.url,
            "FELID_NODENAME": node,
            "FELIX_HEALTHPORT": str(self.health_port),
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
