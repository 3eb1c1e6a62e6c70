"""ExaBGP's API process: ``python -m bgp.bridge SOCKET``.

ExaBGP runs this and talks to it over stdin/stdout; it relays both ways to the
bgp agent listening on the unix socket ``SOCKET``.  It always drains stdin,
because ExaBGP blocks (and misses keepalives) when its API pipe fills.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from typing import NoReturn

CONNECT_TIMEOUT = 30.0


def _connect(path: str) -> socket.socket:
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main() -> NoReturn:
    sock = _connect(sys.argv[1])
    done = threading.Event()

    def events_to_agent() -> None:
        try:
            for line in sys.stdin.buffer:
                with contextlib.suppress(OSError):  # the agent is gone: keep draining regardless
                    sock.sendall(line)
        finally:
            done.set()

    def commands_to_exabgp() -> None:
        try:
            for line in sock.makefile("rb"):
                sys.stdout.buffer.write(line)
                sys.stdout.buffer.flush()
        finally:
            done.set()

    for relay in (events_to_agent, commands_to_exabgp):
        threading.Thread(target=relay, daemon=True).start()
    done.wait()
    # Leave without finalising the interpreter: the other relay, still blocked reading stdin, made
    # that abort (SIGABRT, "_enter_buffered_busy") whenever the agent closed its end first.
    os._exit(0)


if __name__ == "__main__":
    main()
