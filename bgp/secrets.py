"""BGP passwords from a directory laid out as Kubernetes mounts a Secret: ``<dir>/<name>/<key>``
holds the key's value (one Secret per subdirectory, or the dir itself a projected volume of
several).  Read again on every check, so a rotated Secret reaches ExaBGP without a restart."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def read_secrets(directory: Path, refs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The value of each (name, key) there is (a trailing newline, which no password may hold,
    dropped); the missing and the unreadable are left out, for the plan to say so."""
    found: dict[tuple[str, str], str] = {}
    for name, key in refs:
        try:
            found[(name, key)] = (directory / name / key).read_text(encoding="utf-8").removesuffix("\n")
        except (OSError, UnicodeDecodeError):
            continue
    return found
