"""Resource storage against a real etcd: CAS, typed errors, cross-resource rules."""

from __future__ import annotations

import threading

import pytest

from datastore.errors import AlreadyExists, BatchItemFailed, Conflict, NotFound, Unavailable, ValidationFailed
from datastore.etcd import EtcdKV
from datastore.keys import KeyLayout
from datastore.kv import KVStore, Prefix, Put
from datastore.models import BGPPeer, IPPool, Node, WorkloadEndpoint, parse_resource
from datastore.store import ResourceStore, WriteMode
from lab.etcd import EtcdServer


def pool(name: str, cidr: str, **spec: object) -> IPPool:
    r = parse_resource(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "IPPool",
            "metadata": {"name": name},
            "spec": {"cidr": cidr, **spec},
        }
    )
    assert isinstance(r, IPPool)
    return r


def node(name: str, address: str = "198.51.100.5/24") -> Node:
    r = parse_resource(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "Node",
            "metadata": {"name": name},
            "spec": {"bgp": {"ipv4Address": address}},
        }
    )
    assert isinstance(r, Node)
    return r


def test_create_get_list_delete(store: ResourceStore) -> None:
    created = store.create(pool("p1", "10.0.0.0/16"))
    assert created.metadata.resource_version is not None
    assert created.metadata.uid and created.metadata.creation_timestamp
    assert store.get(IPPool, "p1") == created
    assert [p.name for p in store.list(IPPool)] == ["p1"]
    with pytest.raises(AlreadyExists):
        store.create(pool("p1", "10.0.0.0/16"))
    assert store.delete(IPPool, "p1").name == "p1"
    with pytest.raises(NotFound):
        store.get(IPPool, "p1")
    with pytest.raises(NotFound):
        store.delete(IPPool, "p1")


def test_keys_follow_the_layout_and_prefix(kv: KVStore) -> None:
    store = ResourceStore(kv, KeyLayout("/custom"))
    store.create(node("n1"))
    wep = parse_resource(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "WorkloadEndpoint",
            "metadata": {"name": "n1-k8s-web-eth0", "namespace": "shop"},
            "spec": {"node": "n1", "interfaceName": "calia", "ipNetworks": ["10.0.0.5/32"]},
        }
    )
    store.create(wep)
    keys, _ = kv.list("/custom/")
    assert [k.key for k in keys] == [
        "/custom/resources/v3/projectcalico.org/nodes/n1",
        "/custom/resources/v3/projectcalico.org/workloadendpoints/shop/n1-k8s-web-eth0",
    ]
    assert kv.list("/felid/")[0] == []
    assert [w.name for w in store.list(WorkloadEndpoint, "shop")] == ["n1-k8s-web-eth0"]
    assert store.list(WorkloadEndpoint, "other") == []


def test_update_is_compare_and_swap(store: ResourceStore) -> None:
    first = store.create(node("n1"))
    second = store.update(first.model_copy(update={"spec": node("n1", "198.51.100.6/24").spec}))
    assert int(second.metadata.resource_version or 0) > int(first.metadata.resource_version or 0)
    assert second.metadata.uid == first.metadata.uid
    with pytest.raises(Conflict):
        store.update(first)  # stale resourceVersion
    assert store.get(Node, "n1") == second
    store.delete(Node, "n1")
    with pytest.raises(NotFound):
        store.update(second)


def test_two_writers_race_exactly_one_wins(store: ResourceStore) -> None:
    base = store.create(node("race"))
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def writer(address: str) -> None:
        mine = base.model_copy(update={"spec": node("race", address).spec})
        barrier.wait()
        try:
            store.update(mine)
            outcomes.append(f"won:{address}")
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=writer, args=(a,)) for a in ("198.51.100.7/24", "198.51.100.8/24")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(o.split(":")[0] for o in outcomes) == ["conflict", "won"]
    winner = next(o for o in outcomes if o.startswith("won")).split(":", 1)[1]
    stored = store.get(Node, "race")
    assert stored.spec.bgp is not None and stored.spec.bgp.ipv4_address == winner


def test_many_writers_race_and_no_update_is_lost(store: ResourceStore) -> None:
    """8 threads increment a label by read-modify-CAS; every increment lands once."""
    store.create(
        node("counter").model_copy(
            update={"metadata": node("counter").metadata.model_copy(update={"labels": {"n": "0"}})}
        )
    )
    conflicts = 0
    lock = threading.Lock()

    def bump(times: int) -> None:
        nonlocal conflicts
        for _ in range(times):
            while True:
                cur = store.get(Node, "counter")
                labels = {"n": str(int(cur.metadata.labels["n"]) + 1)}
                try:
                    store.update(
                        cur.model_copy(
                            update={"metadata": cur.metadata.model_copy(update={"labels": labels})}
                        )
                    )
                    break
                except Conflict:
                    with lock:
                        conflicts += 1

    threads = [threading.Thread(target=bump, args=(25,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get(Node, "counter").metadata.labels["n"] == "200"
    assert conflicts > 0  # the race really happened


def test_overlapping_enabled_pools_are_refused(store: ResourceStore) -> None:
    store.create(pool("a", "10.0.0.0/16"))
    with pytest.raises(ValidationFailed, match=r"overlaps enabled IPPool a \(10.0.0.0/16\)") as info:
        store.create(pool("b", "10.0.128.0/17"))
    assert info.value.field == "spec.cidr"
    store.create(pool("c", "10.0.128.0/17", disabled=True))  # a disabled pool may overlap
    with pytest.raises(ValidationFailed, match="overlaps"):
        store.apply(pool("c", "10.0.128.0/17"))  # ...until it is enabled
    store.create(pool("d", "10.1.0.0/16"))


def test_concurrent_overlapping_pool_creates_only_one_wins(store: ResourceStore) -> None:
    barrier = threading.Barrier(4)
    results: list[str] = []

    def create(i: int) -> None:
        barrier.wait()
        try:
            store.create(pool(f"p{i}", f"10.9.{i * 64}.0/18" if i else "10.9.0.0/16"))
            results.append("ok")
        except (ValidationFailed, Conflict) as exc:
            results.append(type(exc).__name__)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pools = store.list(IPPool)
    for a in pools:
        for b in pools:
            assert a.name == b.name or not a.network.overlaps(b.network), (a.spec.cidr, b.spec.cidr)
    assert results.count("ok") == len(pools) >= 1


def test_block_size_is_immutable(store: ResourceStore) -> None:
    store.create(pool("a", "10.0.0.0/16"))
    with pytest.raises(ValidationFailed) as info:
        store.apply(pool("a", "10.0.0.0/16", blockSize=24))
    assert info.value.field == "spec.blockSize"
    assert store.get(IPPool, "a").spec.block_size == 26


def test_batch_write_is_all_or_nothing(store: ResourceStore, kv: KVStore) -> None:
    store.create(pool("a", "10.0.0.0/16"))
    peer = parse_resource(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "BGPPeer",
            "metadata": {"name": "tor"},
            "spec": {"peerIP": "192.0.2.1", "asNumber": 64513},
        }
    )
    before, _ = kv.list("/felid/")
    with pytest.raises(BatchItemFailed) as info:
        store.write([peer, pool("b", "10.1.0.0/16"), pool("c", "10.0.0.0/24")], WriteMode.APPLY)
    assert info.value.index == 2
    with pytest.raises(BatchItemFailed) as info:
        store.write([peer, pool("a", "10.0.0.0/16")], WriteMode.CREATE)
    assert info.value.index == 1 and isinstance(info.value.cause, AlreadyExists)
    with pytest.raises(BatchItemFailed) as info:
        store.write([pool("x", "10.5.0.0/16"), pool("x", "10.6.0.0/16")], WriteMode.APPLY)
    assert info.value.index == 1
    assert kv.list("/felid/")[0] == before
    written = store.write([peer, pool("b", "10.1.0.0/16")], WriteMode.APPLY)
    assert {r.metadata.resource_version for r in written} == {written[0].metadata.resource_version}
    assert store.get(BGPPeer, "tor").spec.as_number == 64513


def test_replace_needs_an_existing_resource_and_honours_its_version(store: ResourceStore) -> None:
    with pytest.raises(NotFound):
        store.replace(pool("a", "10.0.0.0/16"))
    created = store.create(pool("a", "10.0.0.0/16"))
    store.replace(pool("a", "10.0.0.0/16", natOutgoing=True))
    with pytest.raises(Conflict):
        store.replace(created.model_copy(update={"spec": pool("a", "10.0.0.0/16", disabled=True).spec}))
    assert store.get(IPPool, "a").spec.nat_outgoing is True


def test_corrupt_stored_value_is_a_clear_error(store: ResourceStore, kv: KVStore) -> None:
    from datastore.kv import Put

    kv.commit([], [Put("/felid/resources/v3/projectcalico.org/ippools/bad", b"{not json")])
    with pytest.raises(ValidationFailed, match="not JSON"):
        store.get(IPPool, "bad")


def shun_every_endpoint(kv: EtcdKV) -> None:
    """As a call that failed while etcd was away leaves pyetcd: every endpoint marked failed."""
    for endpoint in kv._client.endpoints.values():
        endpoint.fail()
    kv._client._clear_old_stubs()


def test_a_call_is_tried_when_every_endpoint_was_just_marked_failed(etcd: EtcdServer, kv: EtcdKV) -> None:
    """Right after etcd comes back, pyetcd would refuse every call for RETRY_FAILED_ENDPOINT: the
    endpoint that failed while etcd was away is tried at once instead."""
    kv.commit([], [Put("/felid/x", b"1")])
    shun_every_endpoint(kv)
    found = kv.get("/felid/x")
    assert found is not None and found.value == b"1"
    etcd.stop()
    shun_every_endpoint(kv)
    with pytest.raises(Unavailable):
        kv.get("/felid/x")


def test_read_answers_keys_and_prefixes_from_one_snapshot(kv: KVStore) -> None:
    revision = kv.commit(
        [],
        [
            Put("/felid/test/read/a/1", b"1"),
            Put("/felid/test/read/a/2", b"2"),
            Put("/felid/test/read/b", b"b"),
        ],
    )
    kv.commit([], [Put("/felid/test/read/a/0", b"0")])
    single, missing, under_a, nothing = kv.read(
        [
            "/felid/test/read/b",
            "/felid/test/read/none",
            Prefix("/felid/test/read/a/"),
            Prefix("/felid/test/x/"),
        ]
    )
    assert [(i.key, i.value, i.mod_revision) for i in single] == [("/felid/test/read/b", b"b", revision)]
    assert missing == [] and nothing == []
    assert [i.key for i in under_a] == [f"/felid/test/read/a/{n}" for n in "012"]  # key order, as list gives
    assert under_a == kv.list("/felid/test/read/a/")[0]
