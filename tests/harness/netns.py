"""Throwaway network namespaces, removed (with their devices) even when a test fails."""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Iterator


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


@contextlib.contextmanager
def namespaces(*roles: str) -> Iterator[dict[str, str]]:
    """``with namespaces("host", "pod") as ns: ns["host"]`` -> a fresh namespace name, lo up."""
    tag = uuid.uuid4().hex[:6]
    names = {role: f"ft-{role}-{tag}" for role in roles}
    try:
        for name in names.values():
            ip("netns", "add", name)
            ip("-n", name, "link", "set", "lo", "up")
        yield names
    finally:
        for name in names.values():
            ip("netns", "del", name, check=False)
