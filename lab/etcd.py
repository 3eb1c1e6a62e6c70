"""A local etcd server process: for the demo cluster and the test harness.

Runs Debian's ``etcd`` (package etcd-server) on free loopback ports with its own
data directory, optionally with mutual TLS, and stops it by PID.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TLSFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, chosen below the kernel's ephemeral range: a free port
    from that range (what binding port 0 gives) can be taken by any outgoing connection before
    the server binds it, which is how an etcd once failed to start under CI load."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
        ephemeral_low = int(ranges.read().split()[0])
    for _ in range(1000):
        port = random.randrange(10000, ephemeral_low)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on {host} between 10000 and {ephemeral_low}")


class EtcdServer:
    """``start()``, ``stop()``, ``restart()``; ``url`` is the client URL."""

    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        client_port: int | None = None,
        tls: TLSFiles | None = None,
        log_file: Path | None = None,
        netns: str | None = None,
        binary: str = "etcd",
        fast_election: bool = True,
    ) -> None:
        self.data_dir = data_dir
        self.host = host
        self.client_port = client_port or free_port()
        self.peer_port = free_port()
        self.tls = tls
        self.log_file = log_file or data_dir.with_suffix(".log")
        self.netns = netns
        self.binary = shutil.which(binary) or binary
        self.fast_election = fast_election
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.client_port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def command(self) -> list[str]:
        peer = f"http://{self.host}:{self.peer_port}"
        cmd = [
            self.binary,
            "--name=felid-etcd",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.url}",
            f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=felid-etcd={peer}",
            "--logger=zap",
            "--log-outputs=stderr",
        ]
        if self.fast_election:
            # Elect itself leader in ~0.1 s instead of ~1 s; too tight for a slow (emulated) kernel.
            cmd += ["--heartbeat-interval=10", "--election-timeout=50"]
        if self.tls:
            cmd += [
                f"--cert-file={self.tls.server_cert}",
                f"--key-file={self.tls.server_key}",
                f"--trusted-ca-file={self.tls.ca_cert}",
                "--client-cert-auth",
            ]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        return cmd

    def start(self, timeout: float = 20.0, health_check: tuple[Path, Path] | None = None) -> None:
        """Start and wait until it serves; ``health_check`` is a client (cert, key) for TLS."""
        if self.process is not None:
            raise RuntimeError("etcd is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"etcd exited at start: {self._last_log_line()} (see {self.log_file})")
            if self._healthy(health_check):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"etcd did not become ready in {timeout:.0f}s; see {self.log_file}")

    def _last_log_line(self) -> str:
        lines = self.log_file.read_text(errors="replace").strip().splitlines()
        return lines[-1][-300:] if lines else "no output"

    def _healthy(self, client: tuple[Path, Path] | None) -> bool:
        if self.netns:
            # Only reachable from inside its namespace: ask from there.
            probe = (
                "import sys, urllib.request as u; "
                f"sys.exit(b'\"true\"' not in u.urlopen('{self.url}/health', timeout=1).read())"
            )
            done = subprocess.run(
                ["ip", "netns", "exec", self.netns, sys.executable, "-c", probe],
                capture_output=True,
                check=False,
            )
            return done.returncode == 0
        context = None
        if self.tls:
            context = ssl.create_default_context(cafile=str(self.tls.ca_cert))
            if client:
                context.load_cert_chain(str(client[0]), str(client[1]))
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1, context=context) as resp:
                return b'"true"' in resp.read()
        except (OSError, ssl.SSLError):
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM by PID, SIGKILL if it does not exit in time."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()

    def kill(self) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def restart(self, health_check: tuple[Path, Path] | None = None) -> None:
        self.stop()
        self.start(health_check=health_check)
