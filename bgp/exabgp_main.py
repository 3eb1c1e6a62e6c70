"""ExaBGP's own main (``python -m bgp.exabgp_main CONFIG``, as the ``exabgp`` script takes it),
with two repairs to its reactor: the poller forgets a socket once the kernel says it is closed, and
the reactor does not sleep while API commands are still being worked through.

Why.  ExaBGP 5.0's reactor (``exabgp/reactor/loop.py``) registers a peer's socket with its
``select.poll`` object whenever the peer waits for data, and never unregisters it.  Once such a
connection is closed (the loser of a connection collision, a reset session, a peer gone) and its
number not reused, every ``poll`` returns at once with POLLNVAL for it.  The reactor takes that
for a spinning loop: after ``exabgp.reactor.speed`` such turns in a second it sleeps blindly for a
hundredth of the speed (1 s at felid's 100), reading neither the API nor any peer.  An announced
route then waited up to a second on each ExaBGP it crossed (1.4 s measured through reflectors at
25 hosts), and the turns cost idle CPU (0.22 % of a core against 0.03 % with one session).
Dropping the closed descriptor is all the repair is; a number the kernel hands out again is
registered afresh the next time its peer waits.

API commands are worked through in steps, at most 50 a turn of the reactor's loop (``ASYNC.LIMIT``).
The loop does not look at what is left before it sleeps, so at felid's idle sleep of 1 s an
announcement of many routes went out at about 58 a second (strace: one UPDATE, then a 1 s poll;
552 a second at ExaBGP's default speed, which sleeps 10 ms).  ``_wait_for_io`` now polls without a
timeout while commands are left.

Two changes to its reconnect backoff (``Delay``): a random 0-2 s is added to each wait, so two
speakers that both connect do not collide again and again in step; and the wait grows to
``RETRY_CAP`` seconds, not ExaBGP's 60.  felid makes only one side of a session between two of
its nodes connect (the other is passive), so a peer that was not listening yet while a cluster
started was retried only by the connecting side's growing backoff: seconds to minutes of a
missing session for nothing, where a retry every few seconds costs one SYN.

ExaBGP runs in this process, so the repairs hold for its whole life.  They touch private
attributes (``Reactor._poller``, ``Reactor._wait_for_io``, ``Reactor.asynchronous``): the checks
below stop ExaBGP at once if a new release changes them.
"""

from __future__ import annotations

import contextlib
import random
import select
import sys
from typing import Any

from exabgp.reactor import delay, loop


class ClosedFdDroppingPoll:
    """``select.poll`` whose ``poll`` unregisters, instead of reporting, descriptors that are closed."""

    def __init__(self) -> None:
        self._poll = select.poll()

    def register(self, fd: int, eventmask: int = select.POLLIN | select.POLLPRI | select.POLLOUT) -> None:
        self._poll.register(fd, eventmask)

    def modify(self, fd: int, eventmask: int) -> None:
        self._poll.modify(fd, eventmask)

    def unregister(self, fd: int) -> None:
        with contextlib.suppress(KeyError):  # dropped here already, after its POLLNVAL
            self._poll.unregister(fd)

    def poll(self, timeout: float | None = None) -> list[tuple[int, int]]:
        live = []
        for fd, event in self._poll.poll(timeout):
            if event & select.POLLNVAL:
                self._poll.unregister(fd)
            else:
                live.append((fd, event))
        return live


RETRY_CAP = 5  # seconds: the longest wait between two attempts to connect to a peer

_reactor_init = loop.Reactor.__init__
_wait_for_io = loop.Reactor._wait_for_io
_delay_increase = delay.Delay.increase
_delay_reset = delay.Delay.reset


def _init_with_repaired_poller(reactor: Any, *args: Any, **kwargs: Any) -> None:
    _reactor_init(reactor, *args, **kwargs)
    if type(reactor._poller) is not type(select.poll()):
        raise RuntimeError(
            "ExaBGP's reactor no longer keeps a select.poll in _poller: review bgp.exabgp_main"
        )
    reactor._poller = ClosedFdDroppingPoll()
    if not callable(getattr(reactor.asynchronous, "ready", None)):
        raise RuntimeError("ExaBGP's reactor no longer has asynchronous.ready(): review bgp.exabgp_main")


def _wait_unless_commands_are_left(reactor: Any, sleeptime: int) -> Any:
    """``Reactor._wait_for_io`` (a generator of readable descriptors), not sleeping while API
    commands wait for their next turn."""
    return _wait_for_io(reactor, sleeptime if reactor.asynchronous.ready() else 0)


def _increase_with_jitter(backoff: Any) -> None:
    _delay_increase(backoff)
    backoff._next = min(backoff._next, RETRY_CAP)
    backoff._time += random.uniform(0.0, 2.0)


def _reset_with_jitter(backoff: Any) -> None:
    _delay_reset(backoff)
    backoff._time += random.uniform(0.0, 2.0)


def main() -> int:
    loop.Reactor.__init__ = _init_with_repaired_poller
    loop.Reactor._wait_for_io = _wait_unless_commands_are_left
    delay.Delay.increase = _increase_with_jitter
    delay.Delay.reset = _reset_with_jitter
    from exabgp.application.main import main as exabgp_main

    sys.argv[0] = "exabgp"  # its usage and log name
    result: int | None = exabgp_main()
    return result or 0


if __name__ == "__main__":
    sys.exit(main())
