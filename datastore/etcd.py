"""etcd v3 through etcd-sdk-python (``pyetcd``): the only module that imports it.

The client is synchronous and thread based; asyncio callers run it with
``asyncio.to_thread``.  Its pitfalls (DESIGN.md §2) are handled here once:
an endpoint that failed is retried after ``RETRY_FAILED_ENDPOINT`` seconds
instead of pyetcd's 300 (and at once when every endpoint is marked failed), watch
callbacks arrive on pyetcd's thread, range reads are paginated, and every gRPC
failure becomes a typed datastore error.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import grpc
import pyetcd
from pyetcd import exceptions as etcd_exc

from datastore.config import DatastoreConfig
from datastore.errors import Compacted, DatastoreError, Refused, Unavailable
from datastore.kv import (
    Absent,
    Guard,
    KeyValue,
    Operation,
    Prefix,
    PrefixUnchangedSince,
    Put,
    Unchanged,
    WatchCallback,
    WatchEvent,
)

log = logging.getLogger(__name__)

RETRY_FAILED_ENDPOINT = 0.5
PAGE_SIZE = 2000
_GRPC_OPTIONS = [
    # A 10k-key prefix page is far above gRPC's 4 MiB default.
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    # Notice a silently dead etcd (no RST) on a long-lived watch stream; etcd's
    # default enforcement allows pings every 5 s.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    # gRPC backs off reconnecting up to 120 s by default: after an etcd restart a
    # daemon would sit disconnected that long. Retry within a couple of seconds.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    # Only while a call (a watch stream) is open: etcd answers idle pings with GOAWAY.
    ("grpc.keepalive_permit_without_calls", 0),
]
_UNAVAILABLE = (
    etcd_exc.ConnectionFailedError,
    etcd_exc.ConnectionTimeoutError,
    etcd_exc.NoServerAvailableError,
    etcd_exc.InternalServerError,
    etcd_exc.WatchTimedOut,
)


class _Shunned(Exception):
    """pyetcd refused to try: every endpoint is marked failed."""


def _prefix_end(prefix: str) -> bytes:
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return b"\0"
    raw[-1] += 1
    return bytes(raw)


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


class EtcdKV:
    """A KVStore over one etcd cluster (one or more endpoints, optional mutual TLS)."""

    def __init__(self, config: DatastoreConfig, timeout: float = 5.0) -> None:
        self._config = config
        endpoints = []
        ca, key, cert = (
            _read(config.etcd_ca_cert_file),
            _read(config.etcd_key_file),
            _read(config.etcd_cert_file),
        )
        for url in config.etcd_endpoints:
            parts = urlsplit(url)
            secure = parts.scheme == "https"
            creds = grpc.ssl_channel_credentials(ca, key, cert) if secure else None
            endpoints.append(
                pyetcd.Endpoint(
                    parts.hostname or "127.0.0.1",
                    parts.port or 2379,
                    secure=secure,
                    creds=creds,
                    time_retry=RETRY_FAILED_ENDPOINT,
                    opts=_GRPC_OPTIONS,
                )
            )
        self._client = pyetcd.MultiEndpointEtcd3Client(endpoints=endpoints, timeout=timeout, failover=True)

    @property
    def endpoints(self) -> str:
        return ",".join(self._config.etcd_endpoints)

    def _call(self, fn: Callable[[], Any]) -> Any:
        try:
            return self._translated(fn)
        except _Shunned:
            # Every endpoint failed within RETRY_FAILED_ENDPOINT, and pyetcd would not even try one:
            # right after etcd came back, a call would fail unseen. Try the one shunned longest.
            oldest = min(self._client.endpoints.values(), key=lambda e: float(e.last_failed))
            oldest.last_failed = 0
            try:
                return self._translated(fn)
            except _Shunned as exc:
                raise Unavailable(self.endpoints, str(exc.__cause__ or exc)) from None

    def _translated(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (etcd_exc.NoServerAvailableError, ValueError) as exc:  # ValueError: "a failed node"
            raise _Shunned() from exc
        except _UNAVAILABLE as exc:
            raise Unavailable(self.endpoints, _reason(exc)) from None
        except grpc.RpcError as exc:
            raise self._rpc_error(exc) from None

    def _rpc_error(self, exc: grpc.RpcError) -> DatastoreError:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        if code == grpc.StatusCode.OUT_OF_RANGE and "compacted" in (details or ""):
            return Compacted(0)
        if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
            # "too many operations in txn request", "request is too large": etcd is there, and said no.
            return Refused(str(details).removeprefix("etcdserver: "))
        return Unavailable(self.endpoints, f"{code.name if code else 'error'}: {details}")

    def get(self, key: str) -> KeyValue | None:
        resp = self._call(lambda: self._client.get_response(key))
        if not resp.kvs:
            return None
        return _kv(resp.kvs[0])

    def list(self, prefix: str, revision: int | None = None) -> tuple[list[KeyValue], int]:
        end = _prefix_end(prefix)
        start: bytes = prefix.encode()
        items: list[KeyValue] = []
        while True:

            def page(s: bytes = start, r: int | None = revision) -> Any:
                return self._client.get_range_response(
                    s, end, sort_order="ascend", sort_target="key", limit=PAGE_SIZE, revision=r
                )

            resp = self._call(page)
            # Later pages must be read at the first page's revision to be one snapshot.
            revision = revision or resp.header.revision
            items.extend(_kv(kv) for kv in resp.kvs)
            if not resp.more or not resp.kvs:
                return items, revision
            start = resp.kvs[-1].key + b"\0"

    def read(self, ranges: Sequence[str | Prefix]) -> builtins.list[builtins.list[KeyValue]]:
        tx = self._client.transactions
        gets = [
            tx.get(r.prefix, range_end=_prefix_end(r.prefix)) if isinstance(r, Prefix) else tx.get(r)
            for r in ranges
        ]  # a transaction of reads only: one snapshot, unpaged (each range is small: a node's view)
        _, responses = self._call(lambda: self._client.transaction(compare=[], success=gets, failure=[]))
        return [[_kv_of(value, meta) for value, meta in found] for found in responses]

    def commit(self, guards: Sequence[Guard], operations: Sequence[Operation]) -> int | None:
        tx = self._client.transactions
        compare: list[Any] = []
        for guard in guards:
            if isinstance(guard, Absent):
                compare.append(tx.version(guard.key) == 0)
            elif isinstance(guard, Unchanged):
                compare.append(tx.mod(guard.key) == guard.mod_revision)
            elif isinstance(guard, PrefixUnchangedSince):
                rng = tx.mod(guard.prefix, range_end=_prefix_end(guard.prefix))
                compare.append(rng < guard.revision + 1)
        success = [
            tx.put(op.key, op.value, lease=op.lease) if isinstance(op, Put) else tx.delete(op.key)
            for op in operations
        ]
        ok, responses = self._call(
            lambda: self._client.transaction(compare=compare, success=success, failure=[])
        )
        if not ok:
            return None
        # pyetcd drops the transaction header; each inner response carries it.
        return max((getattr(r, r.WhichOneof("response")).header.revision for r in responses), default=0)

    def watch(self, prefix: str, start_revision: int, callback: WatchCallback) -> Callable[[], None]:
        def deliver(response: Any) -> None:
            if isinstance(response, etcd_exc.RevisionCompactedError):
                callback(Compacted(response.compacted_revision))
            elif isinstance(response, Exception):
                callback(Unavailable(self.endpoints, _reason(response)))
            else:
                events = [
                    WatchEvent(
                        ev.key.decode(),
                        ev.value if isinstance(ev, pyetcd.events.PutEvent) else None,
                        ev.mod_revision,
                    )
                    for ev in response.events
                ]
                if events:
                    callback(events)

        try:
            watch_id = self._call(
                lambda: self._client.add_watch_prefix_callback(prefix, deliver, start_revision=start_revision)
            )
        except etcd_exc.RevisionCompactedError as exc:
            raise Compacted(exc.compacted_revision) from None
        return lambda: self._cancel(watch_id)

    def _cancel(self, watch_id: int) -> None:
        try:
            self._client.cancel_watch(watch_id)
        except Exception:  # the stream may already be gone; nothing is left to cancel
            log.debug("cancelling watch %s failed", watch_id, exc_info=True)

    def compact(self, revision: int) -> None:
        self._call(lambda: self._client.compact(revision, physical=True))

    def grant_lease(self, ttl: int) -> int:
        lease: Any = self._call(lambda: self._client.lease(ttl))
        return int(lease.id)

    def refresh_lease(self, lease: int) -> bool:
        replies: list[Any] = self._call(lambda: list(self._client.refresh_lease(lease)))
        return bool(replies) and replies[-1].TTL > 0

    def revoke_lease(self, lease: int) -> None:
        self._call(lambda: self._client.revoke_lease(lease))

    def close(self) -> None:
        self._client.close()


def _kv_of(value: bytes, meta: Any) -> KeyValue:
    """A KeyValue from pyetcd's (value, metadata) pair, as its transactions answer reads."""
    return KeyValue(meta.key.decode(), bytes(value), meta.mod_revision, meta.create_revision)


def _kv(kv: Any) -> KeyValue:
    return KeyValue(kv.key.decode(), bytes(kv.value), kv.mod_revision, kv.create_revision)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, grpc.Call):
        return f"{exc.code().name}: {exc.details()}"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]
