"""What a Syncer yields (``Update``, ``InSync``) and what its consumer has been told (``KnownKeys``):
pure, shared by the etcd Syncer and typha (its cache and its client)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple


class Update(NamedTuple):
    """``key`` now holds ``value`` (None: deleted) as of ``revision``.  A named tuple, not a
    dataclass: a snapshot is tens of thousands of these, and one is made in 0.36 µs instead of
    0.85 (measured here)."""

    key: str
    value: bytes | None
    revision: int


@dataclass(frozen=True)
class InSync:
    """Everything up to ``revision`` has been delivered."""

    revision: int


SyncItem = Update | InSync


class KnownKeys:
    """What a consumer has been told, key -> (mod_revision, value): a fresh snapshot becomes only
    its difference from this (so a key still present is never removed), and an event already
    delivered is not delivered again.  The etcd Syncer and the typha client both keep one."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[int, bytes]] = {}

    def __len__(self) -> int:
        return len(self._known)

    def diff(self, snapshot: Mapping[str, tuple[int, bytes]], revision: int) -> list[Update]:
        """``snapshot`` (key -> (mod_revision, value)) at ``revision``, as updates to what is known:
        deletions first, then what changed, in revision order."""
        known = self._known
        gone = sorted(known.keys() - snapshot.keys())
        out = [Update(key, None, revision) for key in gone]
        for key in gone:
            del known[key]
        # (revision, key, value) tuples sort natively: revision order, ties by key.
        changed = [(held[0], key, held[1]) for key, held in snapshot.items() if known.get(key) != held]
        changed.sort()
        for mod_revision, key, value in changed:
            known[key] = (mod_revision, value)
            out.append(Update(key, value, mod_revision))
        return out

    def apply(self, key: str, value: bytes | None, mod_revision: int) -> Update | None:
        """One change; None when it tells the consumer nothing new."""
        known = self._known.get(key)
        if known is not None and mod_revision <= known[0]:
            return None  # already delivered (by the snapshot)
        if value is None:
            if known is None:
                return None
            del self._known[key]
        else:
            self._known[key] = (mod_revision, value)
        return Update(key, value, mod_revision)
