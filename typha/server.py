"""typha's client server: the handshake, snapshots, the update stream, pings, slow and dead
clients, shedding over the fair share and a gradual shutdown.

Every client costs two tasks (one reading, one writing) and socket writes of frames that
already exist (``typha.cache``).  Once a client has caught up with the log, its writer hands
it to the fan-out: one pass per stretch of new log writes it to every caught-up client,
instead of a thousand writers each waking for every update.  A client whose socket stops
taking more is handed back to its own writer, so it only ever blocks itself; the watchdog
ends it once it is too far behind, in time or in bytes, and a new one is given a grace
period while its snapshot goes out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from datastore.keys import KeyLayout, SyncerType
from typha import protocol, tls
from typha.cache import FellBehind, SyncerCache
from typha.config import TyphaSettings
from typha.feed import DatastoreFeed
from typha.metrics import TyphaMetrics
from typha.protocol import ClientHello, Kind, ProtocolError, Reason, ServerHello
from typha.registry import Registration, fair_share, registrations, room_elsewhere
from typha.streams import read_frame

log = logging.getLogger("typha")

HANDSHAKE_TIMEOUT = 10.0
WRITE_HIGH_WATER = 256 * 1024  # the transport's buffer above which a writer waits for the socket
WATCHDOG_INTERVAL = 0.5
LOG_SLACK = 1.25  # the log holds at most this times the fall-behind bound in bytes
LOG_LIMIT = 64 * 1024 * 1024
FAN_OUT_REST = 2.0  # after a fan-out pass, rest twice the CPU it took: passes use at most 1/3 of a core


@dataclass(eq=False)
class Connection:
    peer: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    joined: float
    hello: ClientHello | None = None
    cache: SyncerCache | None = None
    cursor: int = 0
    streaming_since: float | None = None
    stalled_since: float | None = None  # waiting for the socket to take more
    last_heard: float = 0.0
    last_ping: float = 0.0
    ended: str | None = None
    probe_only: bool = False
    digested: bool = False  # heard from after its snapshot was sent
    handler: asyncio.Task[None] | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    handed_back: asyncio.Event = field(default_factory=asyncio.Event)  # by the fan-out, to its writer

    def __str__(self) -> str:
        who = (
            f"{self.hello.hostname} ({self.hello.syncer}, {self.hello.version})" if self.hello else "a client"
        )
        return f"{who} at {self.peer}"

    def send(self, data: bytes) -> None:
        if self.ended is None:
            self.writer.write(data)


class TyphaServer:
    def __init__(
        self,
        settings: TyphaSettings,
        layout: KeyLayout,
        name: str,
        version: str,
        *,
        metrics: TyphaMetrics | None = None,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.layout = layout
        self.name = name
        self.version = version
        self.metrics = metrics or TyphaMetrics()
        self.ssl_context = ssl_context
        self.clock = clock
        self.feed = DatastoreFeed(layout, self.metrics, clock)
        self.connections: set[Connection] = set()
        self.live: dict[SyncerType, set[Connection]] = {t: set() for t in SyncerType}  # caught up
        self.closing = False
        self.share = settings.max_connections
        self.listener: socket.socket | None = None
        self.accept_failing = False
        self.accepting = False
        self._handlers: set[asyncio.Task[None]] = set()
        self.failure: BaseException | None = None
        self.own_certificate: bytes | None = None  # DER: a peer showing it may only probe

    # -- serving -----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen, and accept in a loop of our own: the TLS handshake then happens where its failure
        can be logged (asyncio's own server drops it silently) and a failing accept() shows in
        readiness."""
        listener = socket.create_server(
            (self.settings.server_host, self.settings.server_port), backlog=1024, reuse_port=False
        )
        listener.setblocking(False)
        self.listener = listener

    @property
    def port(self) -> int:
        assert self.listener is not None
        return int(self.listener.getsockname()[1])

    def ready(self) -> bool:
        """In sync with etcd, accepting and below the hard maximum: a client would be served."""
        return (
            self.feed.in_sync.is_set()
            and not self.closing
            and self.accepting
            and not self.accept_failing
            and len(self.connections) < self.settings.max_connections
        )

    async def accept(self) -> None:
        """The accept loop (a task of its own, after ``start()``)."""
        assert self.listener is not None
        listener, loop = self.listener, asyncio.get_running_loop()
        self.accepting = True
        while not self.closing:
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError as exc:  # out of file descriptors, say: not ready until it passes
                if self.closing:
                    return
                if not self.accept_failing:
                    log.error("cannot accept connections: %s", exc)
                self.accept_failing = True
                await asyncio.sleep(0.1)
                continue
            self.accept_failing = False
            handler = asyncio.create_task(self._connected(sock))
            self._handlers.add(handler)
            handler.add_done_callback(self._handler_done)

    def _handler_done(self, handler: asyncio.Task[None]) -> None:
        """A handler that failed unexpectedly is a bug: the watchdog ends the process with it."""
        self._handlers.discard(handler)
        if not handler.cancelled() and handler.exception() is not None and self.failure is None:
            self.failure = handler.exception()

    async def _connected(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            peer = "{}:{}".format(*sock.getpeername()[:2])
        except OSError:
            sock.close()
            return
        # asyncio sets TCP_NODELAY only on sockets it made: without it a small update waits for
        # the client's delayed ACK (tens of milliseconds).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = asyncio.StreamReader(limit=1 << 20)
        stream = asyncio.StreamReaderProtocol(reader)
        try:
            if self.ssl_context is None:
                transport, _ = await loop.connect_accepted_socket(lambda: stream, sock)
            else:
                transport, _ = await loop.connect_accepted_socket(
                    lambda: stream, sock, ssl=self.ssl_context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT
                )
        except (ssl.SSLError, ConnectionError, TimeoutError, OSError) as exc:
            log.warning("refused a client at %s: TLS handshake failed: %s", peer, _ssl_reason(exc))
            self.metrics.connections_dropped.labels("tls").inc()
            sock.close()
            return
        writer = asyncio.StreamWriter(transport, stream, reader, loop)
        await self._handle(peer, reader, writer)

    async def _handle(self, peer: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        now = self.clock()
        conn = Connection(peer, reader, writer, now, last_heard=now, last_ping=now)
        writer.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        conn.handler = asyncio.current_task()
        try:
            await self._serve(conn)
        except asyncio.CancelledError:
            pass  # dropped (or the loop is ending): nobody awaits a handler, so end it quietly
        except (
            ConnectionError,
            asyncio.IncompleteReadError,
            ProtocolError,
            ssl.SSLError,
            TimeoutError,
            OSError,
        ) as exc:
            if conn.ended is None and conn in self.connections:
                log.info("connection from %s ended: %s", conn, exc or type(exc).__name__)
        except FellBehind:
            self.drop(conn, Reason.TOO_SLOW, "fell behind what the log still holds")
        finally:
            for task in conn.tasks:
                task.cancel()
            if conn in self.connections:
                self.connections.discard(conn)
                self._count()
            if conn.ended is None:
                conn.ended = "closed"
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                async with asyncio.timeout(1):
                    await writer.wait_closed()

    async def _serve(self, conn: Connection) -> None:
        if self.ssl_context is not None and not self._identified(conn):
            return
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            kind, body = await read_frame(conn.reader)
        if kind == Kind.PING:  # a probe (the readiness check): answer and go
            conn.writer.write(protocol.pong(body))
            await conn.writer.drain()
            return
        if conn.probe_only:
            return self._refuse(conn, Reason.IDENTITY, "typha's own certificate may only probe")
        if kind != Kind.HELLO:
            return self._refuse(conn, Reason.BAD_HELLO, f"expected a hello, got message kind {kind}")
        try:
            hello = conn.hello = ClientHello.parse(body)
        except ProtocolError as exc:
            return self._refuse(conn, Reason.BAD_HELLO, f"unreadable hello: {exc}")
        chosen = hello.common_protocol()
        if chosen is None:
            return self._refuse(
                conn,
                Reason.PROTOCOL,
                f"client version {hello.version} speaks typha protocol {list(hello.protocols)}; typha "
                f"{self.version} speaks {list(protocol.PROTOCOL_VERSIONS)}: upgrade the older side",
            )
        if hello.syncer not in set(SyncerType):
            return self._refuse(conn, Reason.BAD_HELLO, f"unknown syncer type {hello.syncer!r}")
        syncer = SyncerType(hello.syncer)
        if self.closing:
            return self._refuse(conn, Reason.SHUTDOWN, "this typha is shutting down")
        if len(self.connections) >= self.settings.max_connections:
            return self._refuse(
                conn, Reason.FULL, f"at its maximum of {self.settings.max_connections} connections"
            )
        self.connections.add(conn)
        self.metrics.connections_accepted.inc()
        self._count()
        await self.feed.in_sync.wait()
        cache = conn.cache = self.feed.caches[syncer]
        compression = hello.common_compression()
        conn.send(
            ServerHello(self.name, self.version, chosen, self.settings.ping_interval, compression).frame()
        )
        conn.tasks.append(asyncio.create_task(self._read(conn)))
        await self._send_snapshot(conn, cache, syncer, compression)
        await self._stream(conn, cache, syncer)

    def _identified(self, conn: Connection) -> bool:
        """After the handshake: the client certificate names an allowed client (or is typha's own,
        which may only probe)."""
        why = tls.refusal(
            conn.writer.get_extra_info("peercert"), self.settings.client_cn, self.settings.client_uri_san
        )
        ssl_object = conn.writer.get_extra_info("ssl_object")
        if why is not None and ssl_object is not None and self.own_certificate is not None:
            conn.probe_only = ssl_object.getpeercert(binary_form=True) == self.own_certificate
            if conn.probe_only:
                return True
        if why is not None:
            self._refuse(conn, Reason.IDENTITY, f"client {why}")
            return False
        return True

    def _refuse(self, conn: Connection, reason: Reason, message: str) -> None:
        """Say goodbye to a client before serving it (the handler then returns)."""
        log.warning("refused %s: %s", conn, message)
        self._goodbye(conn, reason, message, graceful=True)

    async def _send_snapshot(
        self, conn: Connection, cache: SyncerCache, syncer: SyncerType, compression: str | None
    ) -> None:
        generated = cache.generated
        snapshot = cache.snapshot(compression)
        if cache.generated > generated:
            self.metrics.snapshots_generated.labels(syncer).inc()
            self.metrics.snapshot_raw_bytes.labels(syncer).set(snapshot.raw_bytes)
            if compression is not None:
                self.metrics.snapshot_compressed_bytes.labels(syncer).set(snapshot.wire_bytes)
        else:
            self.metrics.snapshots_reused.labels(syncer).inc()
        conn.cursor = snapshot.seq
        for chunk in snapshot.frames:
            conn.send(chunk)
            await self._drain(conn)
        conn.send(protocol.in_sync(snapshot.revision))
        await self._drain(conn)
        conn.streaming_since = self.clock()
        self._count()

    async def _stream(self, conn: Connection, cache: SyncerCache, syncer: SyncerType) -> None:
        """The client's own writer: it catches the client up with the log, waiting for its socket as
        it must, then hands it to the fan-out until the fan-out hands it back."""
        live = self.live[syncer]
        while conn.ended is None:
            await self._drain(conn)
            frames = cache.log.since(conn.cursor)
            if frames:
                self._write(conn, cache, frames, len(frames))
                continue
            conn.handed_back.clear()
            live.add(conn)
            try:
                await conn.handed_back.wait()
            finally:
                live.discard(conn)

    async def fan_out(self, syncer: SyncerType) -> None:
        """Each new stretch of ``syncer``'s log, written to every caught-up client in one pass (a
        task for each syncer type).  Updates that come while a pass runs go out together in the
        next: the clients' wake-ups per update fall as the load grows, and nobody falls behind."""
        cache = self.feed.caches[syncer]
        written = cache.log.head
        while True:
            if cache.log.head == written:  # else it grew during the rest: its event is gone
                await self.feed.grown(syncer)
            started, written = time.thread_time(), cache.log.head
            self.write_to_live(syncer, cache)
            # A pass is a socket write per client (8 us each, on loopback here): at a thousand
            # clients and a hundred updates a second, passes back to back took most of a core.
            # Resting twice the CPU a pass took bounds their share of it; what comes meanwhile
            # goes out in one write per client.  With few clients the rest is microseconds; with
            # many it batches just enough (bench/typha_fanout.py: resting 2x, p99 93-98 ms; 3x,
            # 112-132 ms, the clients woken more often; 8x, 248 ms, the rest itself).
            await asyncio.sleep((time.thread_time() - started) * FAN_OUT_REST)

    def write_to_live(self, syncer: SyncerType, cache: SyncerCache) -> None:
        live = self.live[syncer]
        head = cache.log.head
        # By cursor: the stretch from there as one frame (made once for every client at it) and
        # how many log entries it stands for.
        stretches: dict[int, tuple[bytes, int]] = {}
        for conn in list(live):
            stretch = stretches.get(conn.cursor)
            if stretch is None:
                stretch = stretches[conn.cursor] = cache.log.stretch(conn.cursor)
            frame, entries = stretch
            if entries and conn.ended is None:
                self._write(conn, cache, [frame], entries)
            if conn.cursor != head or conn.writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
                live.discard(conn)  # its socket is behind (or the stretch was long): its own writer
                conn.handed_back.set()

    def _write(self, conn: Connection, cache: SyncerCache, data: list[bytes], frames: int) -> None:
        """``data`` (the next ``frames`` frames of the log, in one or more pieces) to the client."""
        entry = cache.log.entry(conn.cursor)
        if entry is not None:
            self.metrics.client_latency.observe(self.clock() - entry.appended)
        conn.writer.writelines(data)
        conn.cursor += frames

    async def _drain(self, conn: Connection) -> None:
        if conn.writer.transport.get_write_buffer_size() <= WRITE_HIGH_WATER:
            return
        started = conn.stalled_since = self.clock()
        try:
            await conn.writer.drain()
        finally:
            conn.stalled_since = None
        self.metrics.client_write_latency.observe(self.clock() - started)

    async def _read(self, conn: Connection) -> None:
        """What a streaming client sends: pings (answered), pongs (timed)."""
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ProtocolError, OSError):
            while True:
                kind, body = await read_frame(conn.reader)
                conn.last_heard = self.clock()
                conn.digested = conn.digested or conn.streaming_since is not None
                if kind == Kind.PING:
                    conn.send(protocol.pong(body))
                elif kind == Kind.PONG:
                    stamp = body.get("stamp")
                    if isinstance(stamp, float):
                        self.metrics.ping_latency.observe(max(0.0, self.clock() - stamp))
        self._end(conn, "client closed")  # its writer may be waiting for updates: end it now

    def drop(self, conn: Connection, reason: Reason, message: str, *, graceful: bool = False) -> None:
        if conn.ended is not None:
            return
        log.log(logging.INFO if graceful else logging.WARNING, "dropping %s: %s", conn, message)
        self._goodbye(conn, reason, message, graceful=graceful)

    def _goodbye(self, conn: Connection, reason: Reason, message: str, *, graceful: bool) -> None:
        conn.send(protocol.goodbye(reason, message))
        self.metrics.connections_dropped.labels(str(reason)).inc()
        self._end(conn, str(reason), graceful=graceful)

    def _end(self, conn: Connection, why: str, *, graceful: bool = False) -> None:
        """Close it (after what is buffered, if ``graceful``) and stop its tasks."""
        if conn.ended is not None:
            return
        conn.ended = why
        if graceful:
            conn.writer.close()
        else:
            conn.writer.transport.abort()
        current = asyncio.current_task()
        for task in [*conn.tasks, conn.handler]:
            if task is not None and task is not current:
                task.cancel()

    def _count(self) -> None:
        self.metrics.connections_active.set(len(self.connections))
        self.metrics.connections_streaming.set(
            sum(1 for c in self.connections if c.streaming_since is not None)
        )

    # -- keeping clients honest --------------------------------------------------------

    async def watchdog(self) -> None:
        """Pings, dead and slow clients, and trimming the logs: twice a second."""
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL)
            if self.failure is not None:
                raise RuntimeError("a client handler failed") from self.failure
            self.check_clients()
            self.trim_logs()

    def check_clients(self) -> None:
        now, s = self.clock(), self.settings
        for conn in list(self.connections):
            if conn.ended is not None or conn.cache is None:
                continue
            # Silence counts once the client said it has taken its snapshot in (its first message
            # after the snapshot): until then the grace period rules, however long it digests.
            silent = now - (conn.last_heard if conn.digested else conn.joined)
            bound = 2 * s.ping_interval + (0 if conn.digested else s.new_client_fall_behind_grace_period)
            if silent > bound:
                self.drop(conn, Reason.DEAD, f"nothing heard for {silent:.1f}s (bound {bound:g}s): dead")
                continue
            if now - conn.last_ping >= s.ping_interval:
                conn.last_ping = now
                conn.send(protocol.ping(now))
            why = self._behind(conn, conn.cache, now)
            if why is not None:
                self.drop(conn, Reason.TOO_SLOW, why)

    def _behind(self, conn: Connection, cache: SyncerCache, now: float) -> str | None:
        s = self.settings
        if conn.streaming_since is None:
            # Its snapshot is going out: only a snapshot slower than the grace period ends it.
            if now - conn.joined > s.new_client_fall_behind_grace_period + s.max_fall_behind_secs:
                return f"its snapshot took over {now - conn.joined:.0f}s"
            return None
        lag = 0.0
        entry = cache.log.entry(conn.cursor)
        if entry is not None:
            lag = now - max(entry.appended, conn.streaming_since)
        if conn.stalled_since is not None:
            lag = max(lag, now - conn.stalled_since)
        if lag > s.max_fall_behind_secs:
            return f"{lag:.1f}s behind (the bound is {s.max_fall_behind_secs:g}s)"
        behind = cache.log.bytes_since(conn.cursor) + conn.writer.transport.get_write_buffer_size()
        if behind > s.max_fall_behind_bytes:
            return f"{behind} bytes behind (the bound is {s.max_fall_behind_bytes})"
        return None

    def trim_logs(self) -> None:
        limit = min(LOG_LIMIT, int(self.settings.max_fall_behind_bytes * LOG_SLACK))
        entries = 0
        for cache in self.feed.caches.values():
            cursors = [c.cursor for c in self.connections if c.cache is cache]
            cache.log.trim(min([*cursors, cache.oldest_needed(), cache.log.head]))
            while cache.log.bytes > limit and cache.log.base < cache.log.head:
                cache.log.trim(cache.log.base + 1)  # a client still needing it is too far behind
            entries += cache.log.head - cache.log.base
        self.metrics.log_entries.set(entries)

    # -- load spreading ------------------------------------------------------------------

    def registration(self, address: str) -> Registration:
        return Registration(self.name, address, self.port, len(self.connections), self.share)

    def others(self) -> list[Registration]:
        return [r for r in registrations(self.feed.peers, self.layout) if r.name != self.name]

    def rebalance(self) -> Connection | None:
        """Shed one connection if over the fair share and another typha has room; never more."""
        others = self.others()
        self.share = fair_share(len(self.feed.nodes), len(others) + 1, self.settings.max_connections)
        if self.closing or len(self.connections) <= self.share or not room_elsewhere(others):
            return None
        streaming = [c for c in self.connections if c.streaming_since is not None and c.ended is None]
        if not streaming:
            return None
        victim = random.choice(streaming)
        self.drop(
            victim,
            Reason.REBALANCE,
            f"{len(self.connections)} connections, over this typha's share of {self.share}",
            graceful=True,
        )
        return victim

    async def shutdown(self) -> None:
        """Stop accepting, then shed every client over the grace period (at most 1 s apart)."""
        self.closing = True
        self.accepting = False
        if self.listener is not None:
            self.listener.close()  # the accept loop ends with it
        clients = [c for c in self.connections if c.ended is None]
        if not clients:
            return
        gap = min(1.0, self.settings.shutdown_grace / len(clients))
        log.info("shutting down: shedding %d clients %.2fs apart", len(clients), gap)
        for i, conn in enumerate(clients):
            if i:
                await asyncio.sleep(gap)
            self.drop(conn, Reason.SHUTDOWN, "this typha is shutting down", graceful=True)
        handlers = [c.handler for c in clients if c.handler is not None]
        await asyncio.wait(handlers, timeout=2.0)


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"{exc.reason}: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return str(exc) or type(exc).__name__
