"""Small files on the host that other programs read (the MTU for the CNI plugin, subnet.env for Docker).

Written whole or not at all: a unique temporary file in the same directory,
then a rename over the old one, so a reader never sees half a file and two
writers (an old process and its successor) never trip over each other's
temporary file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def write_atomically(path: Path, content: str | bytes, mode: int = 0o644) -> None:
    """``path`` replaced whole by ``content`` (a reader sees the old file or the new, never half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)
        os.chmod(staging, mode)
        os.replace(staging, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)
        raise


def read_int(path: Path) -> int | None:
    """The integer a file holds, or None if it is missing or holds something else."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


class MTUFile:
    """The MTU workloads get, where the CNI plugin reads it; written when it changes.

    What was written is remembered, so an apply does no file I/O unless the MTU
    changed or ``invalidate`` (the periodic resync) asks for the file to be read back.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path  # None: nobody reads it (a benchmark's dataplane)
        self._written: int | None = None

    def invalidate(self) -> None:
        self._written = None

    def apply(self, mtu: int) -> None:
        """Write ``mtu`` if the file says otherwise; a failure is logged and retried at the next apply."""
        if self.path is None or mtu == self._written:
            return
        if read_int(self.path) != mtu:
            try:
                write_atomically(self.path, f"{mtu}\n")
                log.info("workload MTU %d written to %s", mtu, self.path)
            except OSError as exc:
                log.error(
                    "cannot write the workload MTU to %s (retrying at the next apply): %s", self.path, exc
                )
                return
        self._written = mtu
