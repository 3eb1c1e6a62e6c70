"""Processes the lab starts: stopped by PID (and process group), waited for, polled."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

BIN = Path(sys.executable).parent  # felid's console scripts, beside the interpreter running the lab
OWN_SETTINGS = ("FELID_", "FELIX_", "TYPHA_")


def clean_environment() -> dict[str, str]:
    """This process's environment without felid's own settings, which would leak into what the lab
    starts (each gets exactly the settings its caller gives it)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(OWN_SETTINGS)}


def kill_tree(pid: int, grace: float = 0.0) -> None:
    kill_trees([pid], grace)


def kill_trees(pids: Iterable[int], grace: float = 0.0) -> None:
    """Stop processes: SIGTERM to all and up to ``grace`` seconds to exit (stopping their own
    children), then SIGKILL to the whole group of each one left; reaped if they are our children."""
    left = list(pids)
    if grace > 0:
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        left = [pid for pid in left if not wait_gone(pid, max(0.0, deadline - time.monotonic()))]
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
    for pid in left:
        wait_gone(pid, 5.0)


def wait_gone(pid: int, timeout: float) -> bool:
    """Whether ``pid`` has exited within ``timeout`` seconds (0: just look); reaped if ours."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def kill_group(process: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL a process we started as a group leader, and everything in its group; reap it."""
    if process is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_until(check: Callable[..., object], timeout: float, what: str, interval: float = 0.05) -> float:
    """Poll ``check()`` until true; the seconds it took (AssertionError naming ``what`` after timeout)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(interval)
    raise AssertionError(f"not within {timeout}s: {what}")
