"""The key-value contract the rest of the datastore layer is written against.

``datastore.etcd.EtcdKV`` is the implementation users run; anything honouring
this protocol (a test double for a pure unit) can stand in for it.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int


@dataclass(frozen=True)
class WatchEvent:
    """A put (``value`` set) or a delete (``value`` None) at ``mod_revision``."""

    key: str
    value: bytes | None
    mod_revision: int


@dataclass(frozen=True)
class Absent:
    """Transaction guard: the key does not exist."""

    key: str


@dataclass(frozen=True)
class Unchanged:
    """Transaction guard: the key exists and was last modified at ``mod_revision``."""

    key: str
    mod_revision: int


@dataclass(frozen=True)
class PrefixUnchangedSince:
    """Transaction guard: no key under ``prefix`` was created or modified after ``revision``.

    Deletions are not seen by this guard (etcd compares only existing keys).
    """

    prefix: str
    revision: int


@dataclass(frozen=True)
class Put:
    """Write ``value``; with ``lease``, the key goes when that lease expires or is revoked."""

    key: str
    value: bytes
    lease: int | None = None


@dataclass(frozen=True)
class Delete:
    key: str


@dataclass(frozen=True)
class Prefix:
    """A range to ``read``: every key under ``prefix``."""

    prefix: str


Guard = Absent | Unchanged | PrefixUnchangedSince
Operation = Put | Delete
# A watch delivers batches of events in revision order, or one exception
# (Compacted, Unavailable) after which the watch is dead.
WatchCallback = Callable[[Sequence[WatchEvent] | Exception], None]


class KVStore(Protocol):
    @property
    def endpoints(self) -> str: ...

    def get(self, key: str) -> KeyValue | None: ...

    def list(self, prefix: str, revision: int | None = None) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix`` at ``revision`` (default: now), and that revision."""
        ...

    def read(self, ranges: Sequence[str | Prefix]) -> builtins.list[builtins.list[KeyValue]]:
        """Keys (a ``str``: no item or one) and whole prefixes, each read as ``get`` and ``list``
        would, all at one revision and in one round trip; in the order asked."""
        ...

    def commit(self, guards: Sequence[Guard], operations: Sequence[Operation]) -> int | None:
        """Apply ``operations`` atomically if every guard holds; the new revision, or None."""
        ...

    def watch(self, prefix: str, start_revision: int, callback: WatchCallback) -> Callable[[], None]:
        """Deliver changes under ``prefix`` from ``start_revision`` on; returns a cancel function."""
        ...

    def compact(self, revision: int) -> None: ...

    def grant_lease(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds; its ID."""
        ...

    def refresh_lease(self, lease: int) -> bool:
        """Keep ``lease`` alive for its TTL again; False if it has already expired."""
        ...

    def revoke_lease(self, lease: int) -> None:
        """End ``lease`` now: the keys written with it are deleted."""
        ...

    def close(self) -> None: ...
