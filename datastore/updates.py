"""What a Syncer yields (``Update``, ``InSync``) and what its consumer has been told (``KnownKeys``):
pure, shared by the etcd Syncer and typha (its cache and its client)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Update:
    """``key`` now holds ``value`` (None: deleted) as of ``revision``."""

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
        """``snapshot`` (key -> (mod_revision, value)) at ``revision``, as updates to what is known."""
        out = [Update(key, None, revision) for key in sorted(self._known.keys() - snapshot.keys())]
        for update in out:
            del self._known[update.key]
        changed = [(key, held) for key, held in snapshot.items() if self._known.get(key) != held]
        for key, held in sorted(changed, key=lambda item: (item[1][0], item[0])):
            self._known[key] = held
            out.append(Update(key, held[1], held[0]))
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
