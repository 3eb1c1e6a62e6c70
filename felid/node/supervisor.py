"""felix and felid-bgp inside felid-node: each agent runs as a task of its own and is built afresh when
it fails, after a backoff (0.5 s, doubling to 30 s, back to 0.5 s once an agent has run a minute).

One process, not three: each Python agent is about 70 MiB of imports (etcd and gRPC, the models,
pyroute2, asyncio), nearly all of it the same in each, and separate processes bought no isolation
that matters here: an agent's failure is an exception, and it ends only that agent's TaskGroup,
whose clean-up closes its etcd client, netlink socket and servers (and, for bgp, kills ExaBGP).
What the other agent sees of it is nothing.  What one process does not survive (a crash of the
interpreter, a call that blocks the loop) ends felid-node, whose own supervisor (systemd,
Kubernetes) restarts it; neither agent removes anything from the kernel on the way out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("felid-node")

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0  # an agent that ran this long starts its backoff over


class Agent(Protocol):
    async def run(self) -> None: ...

    def ready(self) -> bool: ...


@dataclass
class AgentTask:
    """One agent kind (felix, bgp) as felid-node runs it.  ``build`` makes a new agent from its
    settings; a failure that is one of ``rebuild_at_once`` (felix's changed configuration) is
    answered by a new agent at once, any other after the backoff."""

    name: str
    build: Callable[[], Agent]
    rebuild_at_once: tuple[type[Exception], ...] = ()
    agent: Agent | None = None
    restarts: int = 0
    started_at: float = 0.0
    last_error: str | None = None

    @property
    def running(self) -> bool:
        return self.agent is not None

    def ready(self) -> bool:
        return self.agent is not None and self.agent.ready()

    async def supervise(self) -> None:
        backoff = BACKOFF_FIRST
        while True:
            self.started_at = time.monotonic()
            try:
                self.agent = self.build()
                await self.agent.run()
                raise RuntimeError("returned")  # an agent runs until it fails or is cancelled
            except Exception as exc:  # any failure of one agent is answered by a new one
                error = _leaf(exc)
            finally:
                self.agent = None
            self.last_error = f"{type(error).__name__}: {error}"
            self.restarts += 1
            if isinstance(error, self.rebuild_at_once):
                log.warning("%s: %s; starting it again", self.name, error)
                continue
            ran = time.monotonic() - self.started_at
            backoff = BACKOFF_FIRST if ran > STABLE_AFTER else min(backoff * 2, BACKOFF_MAX)
            log.error(
                "%s failed after %.1fs; starting it again in %.1fs",
                self.name,
                ran,
                backoff,
                exc_info=(type(error), error, error.__traceback__),
            )
            await asyncio.sleep(backoff)

    def status(self) -> dict[str, object]:
        return {
            "running": self.running,
            "ready": self.ready(),
            "restarts": self.restarts,
            "lastError": self.last_error,
        }


def _leaf(exc: BaseException) -> BaseException:
    """The first failure inside a TaskGroup's exception group: the one that ended the agent."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
