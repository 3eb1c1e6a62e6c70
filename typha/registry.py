"""Typhas find each other, and clients find them, through registrations in etcd under a lease.

Each registration says where the typha listens and how many connections it holds; a typha
that dies without a word vanishes with its lease.  From them and the number of Nodes each
typha works out its fair share of the connections (``fair_share``) and whether another one has
room to take a connection it sheds.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from datastore.keys import KeyLayout, SyncerType
from datastore.kv import KVStore, Put

log = logging.getLogger(__name__)

SLACK = 0.1  # a typha is over its share only when 10% above the even split: no shedding on noise


@dataclass(frozen=True)
class Registration:
    name: str
    address: str
    port: int
    connections: int
    limit: int  # its fair share when it last wrote this

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.port}"

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, value: bytes) -> Registration | None:
        try:
            data = json.loads(value)
            return cls(
                str(data["name"]),
                str(data["address"]),
                int(data["port"]),
                int(data["connections"]),
                int(data["limit"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


def fair_share(nodes: int, typhas: int, max_connections: int) -> int:
    """Connections one typha should hold: every Node's clients (one per syncer type) split evenly
    over the typhas, plus the slack; never above the hard maximum, never below one."""
    clients = max(nodes, 1) * len(SyncerType)
    share = math.ceil(clients / max(typhas, 1) * (1 + SLACK))
    return max(1, min(share, max_connections))


def registrations(values: Mapping[str, bytes], layout: KeyLayout) -> list[Registration]:
    """The registrations among ``values`` (key -> value), by name."""
    found = (Registration.decode(v) for k, v in values.items() if k.startswith(layout.typhas))
    return sorted((r for r in found if r is not None), key=lambda r: r.name)


def registered(kv: KVStore, layout: KeyLayout) -> list[Registration]:
    """Every typha registered now (clients' discovery)."""
    items, _ = kv.list(layout.typhas)
    return registrations({item.key: item.value for item in items}, layout)


def room_elsewhere(others: Iterable[Registration]) -> bool:
    """Whether some other typha holds fewer connections than its share: shedding would move a
    client, not just bounce it back."""
    return any(r.connections < r.limit for r in others)


class Registrar:
    """This typha's registration: written under a lease, rewritten when its counts change."""

    def __init__(self, kv: KVStore, layout: KeyLayout, ttl: int) -> None:
        self._kv = kv
        self._layout = layout
        self._ttl = ttl
        self._lease: int | None = None
        self._written: Registration | None = None

    def write(self, registration: Registration) -> None:
        """Blocking (run it in a thread): grant a lease the first time or after it expired."""
        if self._lease is None:
            self._lease = self._kv.grant_lease(self._ttl)
            self._written = None
        if registration != self._written:
            key = self._layout.typha(registration.name)
            self._kv.commit([], [Put(key, registration.encode(), lease=self._lease)])
            self._written = registration

    def keep_alive(self) -> None:
        if self._lease is not None and not self._kv.refresh_lease(self._lease):
            log.warning("the registration's lease expired; registering again")
            self._lease = None

    def withdraw(self) -> None:
        if self._lease is not None:
            self._kv.revoke_lease(self._lease)
            self._lease = None
