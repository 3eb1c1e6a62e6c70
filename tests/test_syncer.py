"""The Syncer against a real etcd: snapshot, watch, and resync across breaks."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from datastore.config import DatastoreConfig
from datastore.etcd import EtcdKV
from datastore.keys import IPAMKeys, KeyLayout, SyncerType
from datastore.kv import Delete, KVStore, Put
from datastore.models import BGPPeer, FelixConfiguration, IPPool, WorkloadEndpoint
from datastore.syncer import ChangedKeys, Changes, Syncer, Update, follow
from lab.etcd import EtcdServer
from tests.harness.proxy import CuttableProxy
from tests.syncer_helpers import Consumer, etcd_view, running, until

A, B = "/felid/a/", "/felid/b/"


def put(kv: KVStore, key: str, value: str) -> int:
    revision = kv.commit([], [Put(key, value.encode())])
    assert revision
    return revision


def check_stream(consumer: Consumer) -> None:
    """Per key, revisions strictly increase: no update is delivered twice."""
    keys = {i.key for i in consumer.items if isinstance(i, Update)}
    for key in keys:
        revs = consumer.revisions(key)
        assert revs == sorted(set(revs)), f"{key}: revisions {revs} repeat or go back"


async def test_snapshot_then_ordered_updates(kv: EtcdKV) -> None:
    put(kv, A + "1", "one")
    put(kv, B + "1", "b-one")
    put(kv, "/felid/other/x", "not watched")
    async with running(Syncer(kv, [A, B])) as consumer:
        await until(lambda: consumer.in_syncs() == 1)
        assert consumer.view == {A + "1": b"one", B + "1": b"b-one"}
        r1 = put(kv, A + "2", "two")
        r2 = kv.commit([], [Put(A + "1", b"uno"), Delete(B + "1")])
        assert r2 is not None
        put(kv, "/felid/other/y", "still not watched")
        r3 = put(kv, B + "2", "b-two")
        await until(lambda: len(consumer.items) == 7)
        tail = consumer.items[3:]
        assert tail == [
            Update(A + "2", b"two", r1),
            Update(A + "1", b"uno", r2),
            Update(B + "1", None, r2),
            Update(B + "2", b"b-two", r3),
        ]
        assert consumer.view == etcd_view(kv, (A, B))


async def test_resync_across_etcd_restart(etcd: EtcdServer, kv: EtcdKV) -> None:
    for i in range(20):
        put(kv, f"{A}{i:02}", f"v{i}")
    syncer = Syncer(kv, [A, B], retry_delay=0.05, max_retry_delay=0.5)
    async with running(syncer) as consumer:
        await until(lambda: consumer.in_syncs() == 1)
        put(kv, A + "live", "before restart")
        await until(lambda: A + "live" in consumer.view)

        await asyncio.to_thread(etcd.stop)
        await until(lambda: syncer.resyncs >= 1)
        await asyncio.to_thread(etcd.start)
        # Changes made right after the restart, racing the Syncer's reconnection.
        for i in range(5):
            await asyncio.to_thread(kv.commit, [], [Delete(f"{A}{i:02}")])
        for i in range(10, 15):
            await asyncio.to_thread(put, kv, f"{A}{i:02}", f"changed{i}")
        for i in range(5):
            await asyncio.to_thread(put, kv, f"{B}{i}", f"new{i}")
        await until(lambda: consumer.view == etcd_view(kv, (A, B)))
        assert consumer.in_syncs() >= 2
        # Afterwards the watch is live again.
        put(kv, B + "after", "x")
        await until(lambda: consumer.view.get(B + "after") == b"x")
    check_stream(consumer)
    # Keys nobody touched were delivered once, in the first snapshot, never again.
    for i in range(15, 20):
        assert len(consumer.revisions(f"{A}{i:02}")) == 1
    for i in range(5):
        assert consumer.revisions(f"{A}{i:02}")[-1] > consumer.revisions(f"{A}{i:02}")[0]


async def test_resync_across_lost_connection_and_compaction(etcd: EtcdServer, kv: EtcdKV) -> None:
    proxy = CuttableProxy(etcd.client_port)
    proxy.start()
    remote = EtcdKV(DatastoreConfig(etcd_endpoints=(proxy.url,)))
    try:
        for i in range(10):
            put(kv, f"{A}{i}", "v0")
        syncer = Syncer(remote, [A, B], retry_delay=0.05, max_retry_delay=0.3)
        async with running(syncer) as consumer:
            await until(lambda: consumer.in_syncs() == 1)
            await asyncio.to_thread(proxy.cut)
            await until(lambda: syncer.resyncs >= 1)
            # While the Syncer is away: many versions of some keys, deletions, new
            # keys, then compaction, so that history the watch would need is gone.
            for version in range(1, 6):
                for i in range(3):
                    put(kv, f"{A}{i}", f"v{version}")
            kv.commit([], [Delete(f"{A}8"), Delete(f"{A}9")])
            last = put(kv, B + "new", "fresh")
            kv.compact(last)
            await asyncio.to_thread(proxy.restore)
            await until(lambda: consumer.view == etcd_view(kv, (A, B)))
            put(kv, A + "0", "after")
            await until(lambda: consumer.view[A + "0"] == b"after")
        check_stream(consumer)
        # Only the final version of each key changed offline is delivered, once.
        assert [i.value for i in consumer.items if isinstance(i, Update) and i.key == A + "1"] == [
            b"v0",
            b"v5",
        ]
        assert len(consumer.revisions(A + "5")) == 1
        assert consumer.revisions(A + "8")[-1] > consumer.revisions(A + "8")[0]
        assert A + "8" not in consumer.view
    finally:
        remote.close()
        proxy.cut()


async def test_watch_from_a_compacted_revision_is_reported(kv: EtcdKV) -> None:
    from datastore.errors import Compacted

    first = put(kv, A + "x", "1")
    last = put(kv, A + "x", "2")
    kv.compact(last)
    received: list[object] = []
    try:
        cancel = kv.watch(A, first, received.append)
    except Compacted:
        return  # reported at once: as good as through the callback
    await until(lambda: bool(received))
    cancel()
    assert isinstance(received[0], Compacted)
    assert received[0].revision == last


async def test_a_consumer_wakes_once_per_batch_with_its_keys(kv: EtcdKV) -> None:
    """follow notes every key; the consumer wakes once for a whole watch response (one etcd
    transaction here), not once per key, and once at each InSync."""
    put(kv, A + "before", "x")
    applied: dict[str, bytes | None] = {}
    changes, in_sync = ChangedKeys(), asyncio.Event()
    task = asyncio.create_task(follow(Syncer(kv, [A]), applied.__setitem__, in_sync, changes))
    try:
        await asyncio.wait_for(in_sync.wait(), 15)
        assert await asyncio.wait_for(changes.wait(), 5) == Changes(frozenset({A + "before"}), kicked=True)
        kv.commit([], [Put(f"{A}{i:03}", b"v") for i in range(50)])
        batch = await asyncio.wait_for(changes.wait(), 15)
        assert batch == Changes(frozenset(f"{A}{i:03}" for i in range(50)), kicked=False)
        assert all(applied[key] == b"v" for key in batch.keys)
        with pytest.raises(TimeoutError):  # nothing else came: no second wake
            await asyncio.wait_for(changes.wait(), 0.5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_each_follower_gets_only_the_kinds_it_computes_from(kv: EtcdKV) -> None:
    layout, ipam = KeyLayout("/felid"), IPAMKeys("/felid")
    keys = {
        "wep": layout.resource(WorkloadEndpoint, "node--1-k8s-pod-eth0", "default"),
        "felixconfig": layout.resource(FelixConfiguration, "default"),
        "bgppeer": layout.resource(BGPPeer, "rack1"),
        "pool": layout.resource(IPPool, "default-ipv4-ippool"),
        "affinity": ipam.affinity("node-1", "10.244.0.0/26"),
        "block": ipam.block("10.244.0.0/26"),
        "handle": ipam.handle("k8s-pod-network.abc"),
    }
    kv.commit([], [Put(key, b"{}") for key in keys.values()])
    seen = {}
    for follower in SyncerType:
        async with running(Syncer(kv, follower.prefixes("/felid"))) as consumer:
            await until(lambda c=consumer: c.in_syncs() == 1)  # type: ignore[misc]
            seen[follower] = {name for name, key in keys.items() if key in consumer.view}
    assert seen[SyncerType.FELIX] == {"wep", "felixconfig", "pool", "affinity"}
    assert seen[SyncerType.BGP] == {"bgppeer", "pool", "affinity", "block"}
