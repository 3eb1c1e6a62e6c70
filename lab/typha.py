"""felid-typha as a real process, on loopback or inside a lab host's namespace, stopped by PID."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from datastore.health import get_local
from lab.etcd import free_port
from lab.network import LabHost, http_get
from lab.processes import BIN, clean_environment, kill_group


class TyphaProcess:
    """``start()``, ``wait_ready()``, ``stop()`` (SIGTERM: it sheds its clients), ``kill()``.

    ``address`` is what clients connect to (host:port); inside a lab host it is the host's address.
    """

    def __init__(
        self,
        name: str,
        etcd_url: str,
        log: Path,
        *,
        host: LabHost | None = None,
        port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.host = host
        self.log = log
        self.port = port or free_port()
        self.health_port = free_port()
        self.metrics_port = free_port()
        bind = host.address if host is not None else "127.0.0.1"
        self.address = f"{bind}:{self.port}"
        self.env = {
            **clean_environment(),
            "FELID_ETCD_ENDPOINTS": etcd_url,
            "TYPHA_NAME": name,
            "TYPHA_SERVERHOST": bind,
            "TYPHA_SERVERPORT": str(self.port),
            "TYPHA_HEALTHPORT": str(self.health_port),
            "TYPHA_PROMETHEUSMETRICSENABLED": "true",
            "TYPHA_PROMETHEUSMETRICSPORT": str(self.metrics_port),
            "TYPHA_LOGSEVERITYSCREEN": "Info",
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        command = [str(BIN / "felid-typha")]
        if self.host is not None:
            command = ["ip", "netns", "exec", self.host.netns, *command]
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                command, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def get(self, port: int, path: str) -> tuple[int, str]:
        """(status, body); 0 when nothing answers."""
        if self.host is not None:
            return http_get(self.host.netns, port, path)
        answer = get_local(port, path)
        return (0, "") if answer is None else (answer[0], answer[1].decode())

    def ready(self) -> bool:
        return self.get(self.health_port, "/readiness")[0] == 200

    def metrics(self) -> str:
        return self.get(self.metrics_port, "/metrics")[1]

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise AssertionError(f"felid-typha {self.name} exited:\n{self.log.read_text()[-3000:]}")
            if self.ready():
                return
            time.sleep(0.1)
        raise AssertionError(
            f"felid-typha {self.name} not ready in {timeout}s:\n{self.log.read_text()[-3000:]}"
        )

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM and wait: its exit code."""
        proc, self.process = self.process, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout)
            except subprocess.TimeoutExpired:
                kill_group(proc)
        return proc.returncode

    def kill(self) -> None:
        proc, self.process = self.process, None
        if proc is not None:
            kill_group(proc)
            proc.wait()
