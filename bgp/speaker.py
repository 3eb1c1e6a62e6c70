"""ExaBGPSpeaker: ExaBGP as a child process, reached through its API relay (socat, or ``bgp.bridge``).

The speaker writes the configuration for a BGPPlan, starts ExaBGP (optionally
inside a network namespace), serves the unix socket the bridge connects to,
queues commands until the bridge is there, and hands every JSON event ExaBGP
reports to ``events``.  Peer changes are applied by rewriting the file and
SIGUSR1, ExaBGP's reload, which leaves unchanged sessions up.

``stop`` kills ExaBGP without a NOTIFICATION, and ExaBGP dies with the agent
(parent-death signal): to every peer that is a restart, during which graceful
restart keeps our routes.  A node that leaves the cluster is a deleted Node,
whose sessions the other nodes then remove.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from bgp.calc import BGPPlan
from bgp.config import BGPSettings
from bgp.exabgp_config import environment, render

log = logging.getLogger(__name__)

# ExaBGP writes one JSON line per UPDATE.  Between two ExaBGPs an UPDATE may be an extended message
# (RFC 8654, up to 64 KiB) of some 13,000 prefixes, a line of several hundred KiB; asyncio's
# default limit of 64 KiB made such a line end the relay, and ExaBGP then stopped the session.
EVENT_LINE_LIMIT = 16 << 20


def dying_with_parent(argv: list[str]) -> list[str]:
    """``argv``, SIGKILLed when the process that started it goes (the parent-death signal survives
    ``exec``, ``ip netns exec`` included).  Set by setpriv, not in a ``preexec_fn``: a parent with
    gRPC threads (every agent has an etcd client) must not run Python in a forked child, where
    gRPC's fork handlers can abort it; without one, the child is spawned by vfork and exec alone."""
    return ["setpriv", "--pdeathsig", "KILL", "--", *argv]


def relay_command(socket_path: Path) -> str:
    """ExaBGP's API process, relaying its pipes to the agent's unix socket: socat where there is one
    (4 MiB, against 10 for a Python relay), else ``bgp.bridge``.  The socket is listening before
    ExaBGP starts, so socat needs none of the bridge's connect retries."""
    socat = shutil.which("socat")
    if socat is not None:
        return f"{socat} STDIO UNIX-CONNECT:{socket_path}"
    return f"{sys.executable} -m bgp.bridge {socket_path}"


class ExaBGPSpeaker:
    def __init__(
        self,
        workdir: Path,
        name: str,
        netns: str | None = None,
        exabgp: str | None = None,
        reactor_speed: float = BGPSettings.default_of("exabgp_reactor_speed"),
    ) -> None:
        self.reactor_speed = reactor_speed
        # The ExaBGP installed beside felid through bgp.exabgp_main, its reactor repaired (closed
        # sockets stalled it for a second at a time); or the executable the operator named.
        self.command = [exabgp] if exabgp else [sys.executable, "-m", "bgp.exabgp_main"]
        self.workdir = workdir
        self.name = name
        self.netns = netns
        self.socket_path = workdir / "api.sock"
        self.config_path = workdir / "exabgp.conf"
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.process: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: list[str] = []
        self._server: asyncio.Server | None = None
        self.connected = asyncio.Event()
        self.bridge_lost = False  # the API bridge was there and went: this ExaBGP is no use any more
        self._reload_due = False  # a reload waiting for the relay to connect

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.returncode is None else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None and not self.bridge_lost

    async def start(self, plan: BGPPlan) -> None:
        """Start ExaBGP for ``plan``; commands sent before its bridge connects are queued."""
        if self.process is not None or self._server is not None:
            await self.stop()  # a restart: what was queued for the old process is void
        self.bridge_lost = False
        self._reload_due = False  # the new process reads the configuration as it is
        while not self.events.empty():
            self.events.get_nowait()  # the previous process's news
        self.workdir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._server = await asyncio.start_unix_server(
            self._bridge, path=str(self.socket_path), limit=EVENT_LINE_LIMIT
        )
        self._write_config(plan)
        log_file = str(self.workdir / "exabgp.log")
        env = {**os.environ, **environment(plan, f"felid-{self.name}", log_file, self.reactor_speed)}
        argv = [*self.command, str(self.config_path)]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        argv = dying_with_parent(argv)
        out = open(self.workdir / "exabgp.out", "ab")  # noqa: SIM115 - the child keeps it open
        self.process = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdout=out,
            stderr=out,
            stdin=asyncio.subprocess.DEVNULL,
        )
        out.close()

    def _write_config(self, plan: BGPPlan) -> None:
        self.config_path.write_text(render(plan, relay_command(self.socket_path)))

    async def reconfigure(self, plan: BGPPlan) -> None:
        """New sessions or settings: ExaBGP reloads, keeping the sessions that did not change.
        Until its API relay has connected, ExaBGP may not have its SIGUSR1 handler yet (a
        just-started one is still importing), and the signal's default action would kill it: the
        reload waits for the relay, which ExaBGP starts only after installing its handlers."""
        self._write_config(plan)
        self._reload_due = True
        self._send_due_reload()

    def _send_due_reload(self) -> None:
        if not self._reload_due or not self.connected.is_set():
            return
        self._reload_due = False
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGUSR1)

    async def _bridge(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A (re)spawned bridge: whatever was queued goes out first.
        self._writer = writer
        for queued in self._pending:
            writer.write(queued.encode())
        self._pending.clear()
        await writer.drain()
        self.connected.set()
        self._send_due_reload()
        try:
            while raw := await reader.readline():
                try:
                    event = json.loads(raw)
                except json.JSONDecodeError:
                    log.debug("exabgp said: %s", raw.decode(errors="replace").strip())
                    continue
                if isinstance(event, dict):
                    self.events.put_nowait(event)
        finally:
            self.connected.clear()
            if self._writer is writer:
                self._writer = None
                self.bridge_lost = True

    async def send(self, command: str) -> None:
        """One API command (``announce route ...``); queued while the bridge is away."""
        if "\n" in command:
            raise ValueError("one command, one line")
        line = command + "\n"
        if self._writer is None:
            self._pending.append(line)
            return
        self._writer.write(line.encode())
        await self._writer.drain()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._pending.clear()
        self.connected.clear()
