"""felid-typha against a real etcd, as a real process, with clients in this event loop: the same
view for everyone, restarts, slow and dead clients, version skew, TLS, shedding and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import statistics
import subprocess
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from pathlib import Path
from typing import cast

import pytest

from datastore.etcd import EtcdKV
from datastore.keys import KeyLayout
from datastore.kv import Delete, Put
from datastore.syncer import InSync, SyncItem, Update
from lab.etcd import EtcdServer, free_port
from lab.typha import TyphaProcess
from tests.harness.proxy import CuttableProxy
from tests.harness.tls import PKI
from tests.syncer_helpers import etcd_view, until
from tests.typha_helpers import (
    ENDPOINTS,
    FELIX,
    NODES,
    client,
    following,
    load,
    metric,
    raw_hello,
    record,
)
from typha import protocol
from typha.client import TyphaSyncer, client_ssl
from typha.config import TyphaClientSettings
from typha.registry import registered
from typha.streams import read_frame

PREFIXES = FELIX.prefixes("/felid")
Start = Callable[..., TyphaProcess]


@pytest.fixture
def typhas(etcd: EtcdServer, tmp_path: Path) -> Iterator[Start]:
    started: list[TyphaProcess] = []

    def start(
        name: str = "typha-1", *, wait: bool = True, port: int | None = None, **env: str
    ) -> TyphaProcess:
        typha = TyphaProcess(name, etcd.url, tmp_path / f"{name}.log", port=port, env=env)
        typha.start()
        started.append(typha)
        if wait:
            typha.wait_ready()
        return typha

    try:
        yield start
    finally:
        for typha in started:
            typha.kill()


def write_a_thousand(kv: EtcdKV) -> list[Update]:
    """Changes, deletions and new keys, many keys more than once; the stream each client must see."""
    present = {f"{ENDPOINTS}wep-{i}" for i in range(20_000)}
    expected: list[Update] = []
    for i in range(1_000):
        key = f"{ENDPOINTS}wep-{20_000 + i}" if i % 10 == 3 else f"{ENDPOINTS}wep-{(i * 37) % 700}"
        if i % 10 == 9 and key in present:
            revision = kv.commit([], [Delete(key)])
            present.discard(key)
            expected.append(Update(key, None, revision or 0))
        else:
            value = record(i, generation=i)
            revision = kv.commit([], [Put(key, value)])
            present.add(key)
            expected.append(Update(key, value, revision or 0))
    assert sum(u.value is None for u in expected) > 50
    return expected


@pytest.fixture
def no_gc_pauses() -> Iterator[None]:
    """200 hosts' clients in one process hold 200 copies of the view: the collector's full passes
    over them would stall this event loop for seconds (a host holds one copy)."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("no_gc_pauses")
async def test_200_clients_get_etcds_view_then_every_update_in_order(kv: EtcdKV, typhas: Start) -> None:
    load(kv, ((f"{ENDPOINTS}wep-{i}", record(i)) for i in range(20_000)))
    # Pings every 30 s: this one loop digests 200 snapshots at once, seconds between its turns,
    # which no host's single client sees (dead connections have their own test).
    typha = typhas(TYPHA_PINGINTERVAL="30")
    async with following([client([typha.address], f"node-{i}") for i in range(200)]) as followers:
        took = await until(
            lambda: all(f.in_syncs and len(f.view) == 20_000 for f in followers), 120, "200 clients in sync"
        )
        logging.info("200 clients in sync with 20,000 keys in %.1fs", took)
        assert all(f.view == followers[0].view for f in followers)
        assert followers[0].view == etcd_view(kv, PREFIXES)
        # Writes from a thread: this event loop runs the 200 clients, and a blocked loop answers no ping.
        expected = await asyncio.to_thread(write_a_thousand, kv)
        final = etcd_view(kv, PREFIXES)
        await until(lambda: all(f.view == final for f in followers), 60, "every client at etcd's final view")
    for f in followers:
        assert f.after == expected, f"{f.client.hostname} got a different stream"
        assert f.in_syncs == 1 and not f.removed_while_present


async def test_a_restarted_typha_brings_every_client_back_to_etcds_state(kv: EtcdKV, typhas: Start) -> None:
    load(kv, ((f"{ENDPOINTS}wep-{i}", record(i)) for i in range(2_000)))
    port = free_port()
    typha = typhas("typha-1", port=port)
    async with following([client([typha.address], f"node-{i}") for i in range(20)]) as followers:
        await until(lambda: all(f.in_syncs for f in followers), 30, "clients in sync")
        for i in range(600):
            if i == 200:
                typha.kill()  # SIGKILL mid-stream: no goodbye, no flush
            if i == 300:
                typha = typhas("typha-1b", port=port, wait=False)
            key = f"{ENDPOINTS}wep-{i % 2_500}"
            if i % 7 == 6:
                kv.commit([], [Delete(key)])
            else:
                kv.commit([], [Put(key, record(i, generation=i))])
            await asyncio.sleep(0.005)
        final = etcd_view(kv, PREFIXES)
        await until(lambda: all(f.view == final for f in followers), 60, "every client at etcd's state")
    for f in followers:
        assert f.in_syncs >= 2 and not f.removed_while_present
        revisions: dict[str, list[int]] = {}
        for update in f.after:
            revisions.setdefault(update.key, []).append(update.revision)
        assert all(r == sorted(set(r)) for r in revisions.values()), "an update repeated or went back"
        # Keys etcd kept throughout are never removed from a client's view by the reconnect.
        touched = {u.key for u in f.after}
        untouched_gone = [k for k in final if k not in touched and k not in f.view]
        assert not untouched_gone


async def test_a_client_that_stops_reading_is_dropped_and_slows_nobody(kv: EtcdKV, typhas: Start) -> None:
    typha = typhas(
        TYPHA_PINGINTERVAL="1", TYPHA_MAXFALLBEHINDSECS="3", TYPHA_NEWCLIENTFALLBEHINDGRACEPERIOD="2"
    )
    filler = b";" + b"x" * 50_000

    async def latencies(followers_count: int, writes: int) -> float:
        del followers_count
        for f in followers:
            f.latencies.clear()
        for i in range(writes):
            kv.commit([], [Put(f"{NODES}probe-{i % 5}", f"t={time.time()}".encode() + filler)])
            await asyncio.sleep(0.02)
        await until(lambda: all(len(f.latencies) == writes for f in followers), 30, "every write received")
        return statistics.median(x for f in followers for x in f.latencies)

    async with following([client([typha.address], f"node-{i}") for i in range(20)]) as followers:
        await until(lambda: all(f.in_syncs for f in followers), 30, "clients in sync")
        alone = await latencies(20, 60)
        _, writer, kind, _ = await raw_hello(typha.address)
        assert kind == protocol.Kind.SERVER_HELLO
        # It never reads again: its socket buffers fill, it answers no ping.
        with_slow = await latencies(20, 60)
        await until(
            lambda: metric(typha.metrics(), "typha_connections_dropped_total") >= 1, 15, "slow one dropped"
        )
        dropped = typha.metrics()
        writer.close()
    logging.info(
        "median latency %.1f ms alone, %.1f ms beside a stalled client", alone * 1e3, with_slow * 1e3
    )
    assert with_slow <= 2 * max(alone, 0.005), (alone, with_slow)
    assert 'reason="too-slow"' in dropped or 'reason="dead"' in dropped
    assert metric(dropped, "typha_connections_active") == 20


async def test_a_slow_snapshot_is_not_a_slow_client(kv: EtcdKV, typhas: Start) -> None:
    """A client taking its snapshot far longer than the fall-behind bound keeps its connection."""
    load(kv, ((f"{ENDPOINTS}wep-{i}", record(i, padding="p" * 300)) for i in range(10_000)))
    typha = typhas(TYPHA_MAXFALLBEHINDSECS="1", TYPHA_NEWCLIENTFALLBEHINDGRACEPERIOD="60")
    host, _, port = typha.address.rpartition(":")
    # A small read buffer: while it sleeps, its socket fills and typha's writes stall.
    reader, writer = await asyncio.open_connection(host, int(port), limit=64 * 1024)
    writer.write(protocol.ClientHello("slow-reader", "felix", "0.1.0", compressions=()).frame())
    started, frames = time.monotonic(), 0
    while True:
        kind, _ = await read_frame(reader)
        if kind == protocol.Kind.IN_SYNC:
            break
        frames += kind == protocol.Kind.SNAPSHOT
        await asyncio.sleep(0.7)
    took = time.monotonic() - started
    writer.close()
    assert took > 2, f"the snapshot took only {took:.1f}s: not slow enough to test anything"
    assert frames == 5
    assert metric(typha.metrics(), "typha_connections_dropped_total") == 0


async def test_a_consumer_busy_for_longer_than_the_silence_bound_keeps_its_connection(
    kv: EtcdKV, typhas: Start
) -> None:
    """Silence is counted only while the client waits for typha: felix busy programming a big change
    for seconds is not a dead typha (the frames wait in the socket), so nothing resyncs."""
    # Written before typha starts (it is ready once in sync): in its snapshot, not an update racing it.
    kv.commit([], [Put(f"{NODES}a", b"1")])
    typha = typhas(TYPHA_PINGINTERVAL="0.5")
    busy = client([typha.address], "node-busy")
    updates = cast(AsyncGenerator[SyncItem, None], busy.updates())  # a generator: closed below
    try:
        while not isinstance(await anext(updates), InSync):
            pass
        kv.commit([], [Put(f"{NODES}b", b"2")])
        await asyncio.sleep(3 * 2 * 0.5)  # busy elsewhere: three times the bound
        item = await asyncio.wait_for(anext(updates), 5)
        assert item == Update(f"{NODES}b", b"2", item.revision) and busy.resyncs == 0
        assert busy.connected_to == typha.address
    finally:
        await updates.aclose()


async def test_a_connection_dead_without_fin_is_left_within_twice_the_ping_interval(
    kv: EtcdKV, typhas: Start
) -> None:
    typha = typhas(TYPHA_PINGINTERVAL="1")
    port = int(typha.address.rpartition(":")[2])
    proxy = CuttableProxy(port)
    proxy.start()
    try:
        kv.commit([], [Put(f"{NODES}a", b"1")])
        proxied = f"127.0.0.1:{proxy.port}"
        through_proxy = client([proxied], "node-1")
        async with following([through_proxy]) as (follower,):
            await until(lambda: through_proxy.connected_to == proxied, 20, "connected through the proxy")
            through_proxy.settings = TyphaClientSettings(typha_addrs=(proxied, typha.address))
            proxy.freeze()
            frozen = time.monotonic()
            await until(lambda: through_proxy.connected_to is None, 10, "the client notices")
            noticed = time.monotonic() - frozen
            await until(lambda: through_proxy.connected_to == typha.address, 10, "the client moves")
            # Connected is not yet resynced: the other typha's snapshot follows its hello.
            await until(lambda: follower.view == {f"{NODES}a": b"1"}, 10, "the view from the other typha")
            assert not follower.removed_while_present
        assert noticed <= 2 * 1.0 + 0.5, noticed
    finally:
        proxy.cut()
    # The other side: a client that took its snapshot in, said so, and then fell silent (it
    # reads, but answers no ping) is dropped as dead.
    reader, writer, kind, _ = await raw_hello(typha.address)
    assert kind == protocol.Kind.SERVER_HELLO
    while (await read_frame(reader))[0] != protocol.Kind.IN_SYNC:
        pass
    writer.write(protocol.ping(0.0))
    silent = time.monotonic()

    async def keep_reading() -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                await read_frame(reader)

    reading = asyncio.create_task(keep_reading())
    await until(lambda: 'reason="dead"' in typha.metrics(), 2 * 1.0 + 1.5, "typha drops the silent one")
    assert time.monotonic() - silent >= 2 * 1.0
    reading.cancel()
    writer.close()


async def test_version_skew_works_or_is_refused_with_the_reason_on_both_sides(
    kv: EtcdKV, typhas: Start, caplog: pytest.LogCaptureFixture
) -> None:
    typha = typhas()
    # A newer client that also speaks this protocol: served on the one in common.
    _, writer, kind, body = await raw_hello(typha.address, protocols=(1, 7))
    assert kind == protocol.Kind.SERVER_HELLO and body["protocol"] == 1
    writer.close()
    # A client speaking only a protocol this typha does not: a goodbye that says so.
    _, writer, kind, body = await raw_hello(typha.address, protocols=(7,))
    writer.close()
    assert kind == protocol.Kind.GOODBYE and body["reason"] == "protocol"
    assert "speaks typha protocol [7]" in body["message"] and "upgrade the older side" in body["message"]
    # The same from the client's side, in its log, and typha's log names the client.
    caplog.set_level(logging.INFO, "typha.client")
    newer = client([typha.address], "node-new", protocols=(7,), version="9.0.0")
    async with following([newer]):
        await until(lambda: "speaks typha protocol [7]" in caplog.text, 10, "the client logs why")
    refusals = [line for line in typha.log.read_text().splitlines() if "refused node-new" in line]
    assert refusals and "speaks typha protocol [7]" in refusals[0] and "9.0.0" in refusals[0]


async def test_mutual_tls_refuses_the_wrong_client_and_the_wrong_server(
    kv: EtcdKV, typhas: Start, pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    kv.commit([], [Put(f"{NODES}a", b"1")])
    typha = typhas(
        TYPHA_CAFILE=str(pki.server.ca_cert),
        TYPHA_SERVERCERTFILE=str(pki.server.server_cert),
        TYPHA_SERVERKEYFILE=str(pki.server.server_key),
        TYPHA_CLIENTCN="client",
    )

    def tls_client(cert: Path, key: Path, name: str, cn: str = "server") -> TyphaSyncer:
        settings = TyphaClientSettings(
            typha_addrs=(typha.address,),
            typha_ca_file=pki.server.ca_cert,
            typha_cert_file=cert,
            typha_key_file=key,
            typha_cn=cn,
        )
        return TyphaSyncer(settings, FELIX, name, ssl_context=client_ssl(settings))

    caplog.set_level(logging.INFO, "typha.client")
    good = tls_client(pki.client_cert, pki.client_key, "node-good")
    rogue = tls_client(pki.rogue_cert, pki.rogue_key, "node-rogue")
    stranger = tls_client(pki.stranger_cert, pki.stranger_key, "node-stranger")
    suspicious = tls_client(pki.client_cert, pki.client_key, "node-suspicious", cn="typha")
    async with following([good, rogue, stranger, suspicious]) as (ok, *others):
        await until(lambda: ok.in_syncs == 1, 20, "the client with the right certificate")
        await until(lambda: "CN 'stranger'" in typha.log.read_text(), 10, "typha refuses the stranger")
        await until(lambda: "TLS handshake failed" in typha.log.read_text(), 10, "typha refuses the rogue")
        await until(lambda: "refusing it" in caplog.text, 10, "the client refuses the server")
        assert all(not f.in_syncs for f in others)
    lines = typha.log.read_text().splitlines()
    assert any("TLS handshake failed" in line and "CERTIFICATE_VERIFY_FAILED" in line for line in lines)
    assert any("refused a client" in line and "CN 'stranger'" in line for line in lines)
    refusing = [line for line in caplog.text.splitlines() if "refusing it" in line]
    assert (
        refusing and "its certificate has CN 'server'" in refusing[0] and "wanted CN 'typha'" in refusing[0]
    )
    assert "identity: client certificate has CN 'stranger'" in caplog.text


async def test_an_overloaded_typha_sheds_one_connection_at_a_time_while_another_has_room(
    kv: EtcdKV, typhas: Start
) -> None:
    load(kv, ((f"{NODES}node-{i}", record(i)) for i in range(3)))  # 3 nodes: 6 clients, 4 a typha of 2
    env = {"TYPHA_SHEDINTERVAL": "1", "TYPHA_REGISTRATIONTTL": "3"}
    first = typhas("typha-a", **env)
    clients = [client([first.address], f"node-{i}") for i in range(6)]
    async with following(clients) as followers:
        await until(lambda: all(f.in_syncs for f in followers), 20, "clients in sync")
        time.sleep(2.5)  # alone, it keeps them all: nobody else has room
        assert metric(first.metrics(), 'typha_connections_dropped_total{reason="rebalance"}') == 0
        second = typhas("typha-b", **env)
        for c in clients:  # let them find the newcomer (they were given only the first)
            c.settings = TyphaClientSettings(typha_addrs=(first.address, second.address))
        await until(lambda: metric(second.metrics(), "typha_connections_active") == 2, 20, "two moved")
        await asyncio.sleep(4)  # and no more: both are at or under their share of 4
        assert metric(first.metrics(), "typha_connections_active") == 4
        assert metric(first.metrics(), 'typha_connections_dropped_total{reason="rebalance"}') == 2
        view = etcd_view(kv, PREFIXES)
        assert all(f.view == view and not f.removed_while_present for f in followers)
    sheds = [
        line.split(" ", 2)[1] for line in first.log.read_text().splitlines() if "over this typha" in line
    ]
    assert len(sheds) == 2


async def test_sigterm_moves_every_client_to_another_typha_gradually(kv: EtcdKV, typhas: Start) -> None:
    kv.commit([], [Put(f"{NODES}a", b"1")])
    env = {"TYPHA_SHUTDOWNGRACE": "2", "TYPHA_REGISTRATIONTTL": "30"}
    leaving, staying = typhas("typha-a", **env), typhas("typha-b", **env)
    clients = [client([leaving.address], f"node-{i}") for i in range(5)]
    async with following(clients) as followers:
        await until(lambda: all(f.in_syncs for f in followers), 20, "clients in sync")
        for c in clients:
            c.settings = TyphaClientSettings(typha_addrs=(leaving.address, staying.address))
        await until(lambda: len(registered(kv, KeyLayout())) == 2, 10, "both registered")
        started = time.monotonic()
        assert leaving.stop() == 0
        took = time.monotonic() - started
        await until(lambda: metric(staying.metrics(), "typha_connections_active") == 5, 10, "all moved")
        assert all(f.view == {f"{NODES}a": b"1"} and not f.removed_while_present for f in followers)
    assert 1.0 <= took <= 6.0, took  # five clients over a 2 s grace, not all at once
    assert [r.name for r in registered(kv, KeyLayout())] == ["typha-b"]


async def test_ready_only_when_in_sync_and_a_connection_would_be_served(
    etcd: EtcdServer, kv: EtcdKV, typhas: Start
) -> None:
    kv.commit([], [Put(f"{NODES}a", b"1")])
    etcd.stop()
    typha = typhas(wait=False, TYPHA_MAXCONNECTIONS="2")
    await asyncio.sleep(2)
    assert typha.get(typha.health_port, "/liveness")[0] == 200
    assert not typha.ready()  # not in sync with etcd
    etcd.start()
    typha.wait_ready(20)
    async with following([client([typha.address], f"node-{i}") for i in range(3)]) as followers:
        await until(lambda: sum(f.in_syncs for f in followers) == 2, 20, "two served")
        status, body = typha.get(typha.health_port, "/readiness")
        assert status == 503 and "full" in body
        await asyncio.sleep(1)
        assert sum(1 for f in followers if f.in_syncs) == 2
    assert 'reason="full"' in typha.metrics()


async def test_clients_find_typhas_from_their_registrations(
    etcd: EtcdServer, kv: EtcdKV, typhas: Start
) -> None:
    kv.commit([], [Put(f"{NODES}a", b"1")])
    typha = typhas()
    await until(lambda: bool(registered(kv, KeyLayout())), 10, "registered")
    assert registered(kv, KeyLayout())[0].endpoint == typha.address
    from typha.client import update_source

    settings = TyphaClientSettings(typha_discovery=True)
    source = update_source(settings, kv, KeyLayout(), FELIX, "node-1")
    assert isinstance(source, TyphaSyncer)
    async with following([source]) as (follower,):
        await until(lambda: follower.in_syncs == 1, 20, "in sync through a discovered typha")
        assert follower.view == {f"{NODES}a": b"1"}


async def test_typhas_metrics_pass_promtool(kv: EtcdKV, typhas: Start) -> None:
    kv.commit([], [Put(f"{NODES}a", b"1")])
    typha = typhas()
    async with following([client([typha.address], f"node-{i}") for i in range(3)]) as followers:
        await until(lambda: all(f.in_syncs for f in followers), 20, "in sync")
        kv.commit([], [Put(f"{NODES}b", b"2")])
        await until(lambda: all(len(f.view) == 2 for f in followers), 20, "the update")
        text = typha.metrics()
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for name in (
        "typha_connections_accepted_total 3.0",
        "typha_connections_active 3.0",
        "typha_connections_streaming 3.0",
        'typha_snapshots_generated_total{syncer="felix"} 1.0',
        'typha_snapshots_reused_total{syncer="felix"} 2.0',
        'typha_cache_size{syncer="felix"} 2.0',
    ):
        assert name in text, name
    assert metric(text, "typha_client_latency_secs_count") == 3
