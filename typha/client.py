"""typha's client: the Syncer's interface (``updates()`` yields ``Update`` and ``InSync``) over a
connection to one typha, so felix and felid-bgp run unchanged on either.

It picks a typha at random and moves to another when that one goes, refuses it, or falls
silent for twice the ping interval (a connection dead without a FIN).  After every reconnect
the new snapshot is compared with what the consumer already has (``KnownKeys``): only the
differences are delivered, so a key that is still there is never removed and the dataplane
does not change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from datastore.keys import KeyLayout, SyncerType
from datastore.kv import KVStore
from datastore.syncer import InSync, KeyState, KnownKeys, Syncer, SyncItem, UpdateSource
from datastore.version import VERSION
from typha import protocol, tls
from typha.config import TyphaClientSettings
from typha.protocol import PROTOCOL_VERSIONS, ClientHello, Kind, ProtocolError, Refused, ServerHello
from typha.registry import registered
from typha.streams import read_frame

log = logging.getLogger("typha.client")

RETRY_MIN = 0.1
RETRY_MAX = 5.0
# Updates of a snapshot's difference between two turns of the event loop: a big snapshot in one
# go would hold back everything else in the process (its pings, the consumer's other tasks).
YIELD_EVERY = 1000
UPDATES = int(Kind.UPDATES)  # a plain int: compared for every frame

Discover = Callable[[], Awaitable[Sequence[str]]]


class Dead(Exception):
    """Nothing came from typha for twice its ping interval."""


@dataclass
class _Liveness:
    """Since when a session's reader has waited for typha; its watcher cuts a connection silent
    for too long.  One watcher a session, not a timeout around every read: a thousand clients'
    timers were a measurable share of their cost per update.  Only waiting counts: a consumer
    busy for a while (felix programming a big change) is not a silent typha."""

    silence: float  # the bound: twice typha's ping interval
    waiting_since: float | None = None
    dead: bool = False

    def late(self, now: float) -> bool:
        return self.waiting_since is not None and now - self.waiting_since > self.silence

    def deadline(self, now: float) -> float:
        return now + self.silence if self.waiting_since is None else self.waiting_since + self.silence


class Untrusted(Exception):
    """typha's certificate does not name the typha this client was told to trust."""


class TyphaSyncer:
    def __init__(
        self,
        settings: TyphaClientSettings,
        syncer: SyncerType,
        hostname: str,
        *,
        discover: Discover | None = None,
        ssl_context: ssl.SSLContext | None = None,
        protocols: Sequence[int] = PROTOCOL_VERSIONS,
        version: str = VERSION,
    ) -> None:
        self.settings = settings
        self.syncer = syncer
        self.hostname = hostname
        self._discover = discover
        self._ssl = ssl_context
        self._protocols = tuple(protocols)
        self._version = version
        self._known = KnownKeys()
        self.resyncs = 0
        self.connected_to: str | None = None
        self.ping_latency: float | None = None

    async def _addresses(self) -> list[str]:
        found = list(self.settings.typha_addrs)
        if self._discover is not None:
            try:
                found += [a for a in await self._discover() if a not in found]
            except Exception as exc:  # discovery is best effort beside the configured addresses
                log.warning("cannot read the typha registrations: %s", exc)
        return found

    async def updates(self) -> AsyncIterator[SyncItem]:
        avoid: str | None = None
        delay = RETRY_MIN
        while True:
            addresses = await self._addresses()
            choices = [a for a in addresses if a != avoid] or addresses
            if not choices:
                log.warning("no typha to connect to (no address configured or registered); retrying")
                await asyncio.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, RETRY_MAX)
                continue
            address = random.choice(choices)
            moved = False
            try:
                # Items travel in batches up to here: one generator hop each, not three.
                async for batch in self._session(address):
                    for item in batch:
                        if isinstance(item, InSync):
                            delay = RETRY_MIN
                        yield item
            except Refused as exc:
                moved = exc.reason in protocol.MOVE_ON
                log.log(
                    logging.INFO if moved else logging.WARNING,
                    "typha %s ended the session: %s; trying another",
                    address,
                    exc,
                )
            except (
                OSError,
                asyncio.IncompleteReadError,
                ProtocolError,
                Dead,
                Untrusted,
                TimeoutError,
            ) as exc:
                log.warning("typha %s: %s; reconnecting", address, _reason(exc))
            avoid = address
            self.connected_to = None
            self.resyncs += 1
            # A typha that asked its clients to move sheds them over seconds: go at once, spread a
            # little.  After a failure, back off with jitter so a restart of every typha is not a storm.
            await asyncio.sleep(random.uniform(0, 0.2) if moved else random.uniform(delay / 2, delay))
            if not moved:
                delay = min(delay * 2, RETRY_MAX)

    async def _session(self, address: str) -> AsyncIterator[list[SyncItem]]:
        host, _, port = address.rpartition(":")
        timeout = self.settings.typha_connect_timeout
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that races its
        # timeout, and a client that ignored its cancellation would keep felix from stopping.
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, int(port), ssl=self._ssl, limit=1 << 22)
        pinger: asyncio.Task[None] | None = None
        try:
            if self._ssl is not None:
                why = tls.refusal(
                    writer.get_extra_info("peercert"), self.settings.typha_cn, self.settings.typha_uri_san
                )
                if why is not None:
                    raise Untrusted(f"refusing it: its {why}")
            hello = ClientHello(self.hostname, str(self.syncer), self._version, self._protocols)
            writer.write(hello.frame())
            try:
                async with asyncio.timeout(timeout):
                    kind, body = await read_frame(reader)
            except asyncio.IncompleteReadError:
                hint = (
                    " (with TLS: it refused this client's certificate, its log says why)" if self._ssl else ""
                )
                raise ProtocolError(f"typha closed the connection before its hello{hint}") from None
            if kind == Kind.GOODBYE:
                raise protocol.parse_goodbye(body)
            if kind != Kind.SERVER_HELLO:
                raise ProtocolError(f"expected the server's hello, got message kind {kind}")
            server = ServerHello.parse(body)
            log.info(
                "connected to typha %s at %s (version %s, protocol %d)",
                server.name,
                address,
                server.version,
                server.protocol,
            )
            self.connected_to = address
            liveness = _Liveness(2 * server.ping_interval)
            pinger = asyncio.create_task(self._watch(writer, server.ping_interval, liveness))
            try:
                async for batch in self._stream(reader, writer, liveness):
                    yield batch
            except (asyncio.IncompleteReadError, ConnectionError):
                if liveness.dead:
                    silence = liveness.silence
                    raise Dead(f"nothing from typha for {silence:g}s: the connection is dead") from None
                raise
        finally:
            if pinger is not None:
                pinger.cancel()
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await writer.wait_closed()

    async def _stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, liveness: _Liveness
    ) -> AsyncIterator[list[SyncItem]]:
        snapshot: dict[str, KeyState] = {}  # the states as decoded, compared as they are
        while True:
            liveness.waiting_since = time.monotonic()
            kind, body = await read_frame(reader)
            liveness.waiting_since = None
            if kind == UPDATES:  # the common case first
                apply = self._known.apply
                updates: list[SyncItem] = [
                    u for k, v, r in protocol.wire_kvs(body) if (u := apply(k, v, r)) is not None
                ]
                if updates:
                    yield updates
            elif kind == Kind.SNAPSHOT:
                snapshot.update((kv[0], kv) for kv in protocol.wire_kvs(body) if kv[1] is not None)
                await asyncio.sleep(0)  # frames already buffered would otherwise hold the loop
            elif kind == Kind.IN_SYNC:
                revision = protocol.revision_of(body)
                changes: list[SyncItem] = list(self._known.diff(snapshot, revision))
                snapshot = {}
                for start in range(0, len(changes), YIELD_EVERY):
                    yield changes[start : start + YIELD_EVERY]
                    await asyncio.sleep(0)
                writer.write(protocol.ping(time.monotonic()))  # tells typha the snapshot is taken in
                yield [InSync(revision)]
            elif kind == Kind.PING:
                writer.write(protocol.pong(body))
            elif kind == Kind.PONG:
                stamp = body.get("stamp")
                if isinstance(stamp, float):
                    self.ping_latency = time.monotonic() - stamp
            elif kind == Kind.GOODBYE:
                raise protocol.parse_goodbye(body)
            # any other kind: one a later minor version added, which this client skips

    async def _watch(self, writer: asyncio.StreamWriter, interval: float, liveness: _Liveness) -> None:
        """Ping every ``interval``; cut the connection once nothing has come for ``liveness.silence``
        (its reader then ends with ``Dead``)."""
        next_ping = time.monotonic() + interval
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                now = time.monotonic()
                if liveness.late(now):
                    liveness.dead = True
                    writer.transport.abort()
                    return
                if now >= next_ping:
                    writer.write(protocol.ping(now))
                    next_ping = now + interval
                await asyncio.sleep(min(next_ping, liveness.deadline(now)) - now + 0.001)


def client_ssl(settings: TyphaClientSettings) -> ssl.SSLContext | None:
    if not settings.tls:
        return None
    assert settings.typha_ca_file and settings.typha_cert_file and settings.typha_key_file
    return tls.client_context(settings.typha_ca_file, settings.typha_cert_file, settings.typha_key_file)


def update_source(
    settings: TyphaClientSettings, kv: KVStore, layout: KeyLayout, syncer: SyncerType, hostname: str
) -> UpdateSource:
    """What felix and felid-bgp follow: typha when it is configured, else etcd directly."""
    if not settings.enabled:
        return Syncer(kv, syncer.prefixes(layout.prefix))
    discover: Discover | None = None
    if settings.typha_discovery:

        async def discover() -> Sequence[str]:
            return [r.endpoint for r in await asyncio.to_thread(registered, kv, layout)]

    return TyphaSyncer(settings, syncer, hostname, discover=discover, ssl_context=client_ssl(settings))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncio.IncompleteReadError):
        return "the connection closed"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    return str(exc) or type(exc).__name__
