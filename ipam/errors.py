"""IPAM's errors; each says what and where in one line."""

from __future__ import annotations

from collections.abc import Sequence

from datastore.errors import DatastoreError


class IPAMError(DatastoreError):
    pass


class PoolExhausted(IPAMError):
    def __init__(self, pools: Sequence[str], node: str, reason: str = "") -> None:
        names = ", ".join(pools)
        suffix = f" ({reason})" if reason else ""
        super().__init__(f"pool exhausted: no free address for node {node} in IPPool {names}{suffix}")
        self.pools = tuple(pools)


class NoUsablePool(IPAMError):
    def __init__(self, node: str, detail: str) -> None:
        super().__init__(f"no usable IPPool for node {node}: {detail}")


class TooManyRetries(IPAMError):
    def __init__(self, what: str, attempts: int) -> None:
        super().__init__(f"{what}: gave up after {attempts} compare-and-swap conflicts")
