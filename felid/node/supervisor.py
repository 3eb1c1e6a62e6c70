"""Children of felid-node (felix, bgp): started, restarted with backoff when they exit, stopped on demand.

A child dies with felid-node (parent-death signal), so a SIGKILLed felid-node
leaves no orphan to collide with its successor; the dataplane stays as it is,
because neither felix nor bgp removes anything on the way out.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bgp.speaker import dying_with_parent

log = logging.getLogger("felid-node")

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0  # a child that ran this long starts its backoff over
STOP_GRACE = 10.0


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    log_file: Path | None = None  # None: share felid-node's stdout/stderr
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0
    last_exit: int | None = None
    _stopping: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.returncode is None else None

    async def supervise(self) -> None:
        backoff = BACKOFF_FIRST
        while not self._stopping:
            await self._start()
            assert self.process is not None
            code = await self.process.wait()
            self.last_exit = code
            if self._stopping:
                return
            ran = time.monotonic() - self.started_at
            backoff = BACKOFF_FIRST if ran > STABLE_AFTER else min(backoff * 2, BACKOFF_MAX)
            log.error(
                "%s exited with %s after %.1fs; starting it again in %.1fs", self.name, code, ran, backoff
            )
            self.restarts += 1
            await asyncio.sleep(backoff)

    async def _start(self) -> None:
        out = open(self.log_file, "ab") if self.log_file else None  # noqa: SIM115 - the child keeps it
        try:
            self.process = await asyncio.create_subprocess_exec(
                *dying_with_parent(list(self.argv)),
                env=dict(self.env),
                stdout=out,
                stderr=out,
                stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            if out is not None:
                out.close()
        self.started_at = time.monotonic()
        log.info("%s started (pid %d)", self.name, self.process.pid)

    async def stop(self) -> None:
        self._stopping = True
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE)
        except TimeoutError:
            process.kill()
            await process.wait()
