"""BlockAllocator against a real etcd: affinity, borrowing, limits, release."""

from __future__ import annotations

import pytest

from datastore.kv import KVStore
from datastore.models import IPPool, IPReservation
from datastore.models.ipam import AffinityState, affinity_state
from datastore.store import ResourceStore
from ipam.errors import NoUsablePool, PoolExhausted
from tests.ipam_helpers import (
    KEYS,
    allocated,
    allocator,
    assert_consistent,
    blocks,
    handles,
    in_pool,
    make_node,
    make_pool,
    set_config,
)


def test_own_block_first_then_a_new_block(kv: KVStore, store: ResourceStore) -> None:
    make_pool(store, "p", "10.10.0.0/24", block_size=29)
    a = allocator(kv, "n1")
    first = a.auto_assign("h1", attrs={"pod": "web"})
    assert len(first) == 1 and in_pool(first[0], "10.10.0.0/24")
    (cidr,) = blocks(kv)
    assert blocks(kv)[cidr].host == "n1"
    aff = kv.get(KEYS.affinity("n1", cidr))
    assert aff is not None and affinity_state(aff.value) is AffinityState.CONFIRMED
    more = a.auto_assign("h2", count=10)
    assert len(set(first + more)) == 11
    assert len(blocks(kv)) == 2 and all(b.host == "n1" for b in blocks(kv).values())
    assert sorted(a.ips_of_handle("h2")) == sorted(more)
    attrs = blocks(kv)[cidr].attribute_of(blocks(kv)[cidr].ordinal(first[0]))
    assert attrs is not None and attrs.attrs["pod"] == "web" and attrs.attrs["node"] == "n1"
    assert_consistent(kv)


def test_release_by_handle_and_address_are_idempotent(kv: KVStore, store: ResourceStore) -> None:
    make_pool(store, "p", "10.10.0.0/24", block_size=28)
    a = allocator(kv, "n1")
    ips = a.auto_assign("h1", count=3)
    other = a.auto_assign("h2")
    assert sorted(a.release_handle("h1")) == sorted(ips)
    assert a.release_handle("h1") == []
    assert "h1" not in handles(kv)
    assert a.release_ips(other) == other
    assert a.release_ips(other) == []
    assert a.release_ips(["192.0.2.1"]) == []  # in no pool and no block
    assert allocated(kv) == {}
    assert len(blocks(kv)) == 1  # the empty block keeps its affinity
    assert_consistent(kv)


def test_released_addresses_are_not_reused_at_once(kv: KVStore, store: ResourceStore) -> None:
    make_pool(store, "p", "10.10.0.0/24", block_size=28)
    a = allocator(kv, "n1")
    (first,) = a.auto_assign("h1")
    a.release_handle("h1")
    (second,) = a.auto_assign("h2")
    assert second != first


def test_borrowing_when_no_block_is_free(kv: KVStore, store: ResourceStore) -> None:
    make_pool(store, "p", "10.10.0.0/28", block_size=29)  # two blocks of 8
    allocator(kv, "n1").auto_assign("a", count=3)
    allocator(kv, "n2").auto_assign("b", count=3)
    (borrowed,) = allocator(kv, "n3").auto_assign("c")
    owner = next(b for b in blocks(kv).values() if borrowed in [b.address(o) for o, _ in b.used()])
    assert owner.host in ("n1", "n2")
    attr = owner.attribute_of(owner.ordinal(borrowed))
    assert attr is not None and attr.attrs["node"] == "n3"
    assert_consistent(kv)


def test_strict_affinity_prevents_borrowing(kv: KVStore, store: ResourceStore) -> None:
    make_pool(store, "p", "10.10.0.0/28", block_size=29)
    allocator(kv, "n1").auto_assign("a")
    allocator(kv, "n2").auto_assign("b")
    set_config(kv, strict_affinity=True)
    with pytest.raises(
        PoolExhausted, match=r"pool exhausted: no free address for node n3 in IPPool p \(strict"
    ):
        allocator(kv, "n3").auto_assign("c")
    assert "c" not in handles(kv)


def test_full_pool_names_the_pool(kv: KVStore, store: ResourceStore) -> None:
    make_pool(store, "tiny", "10.10.0.0/29", block_size=29)
    a = allocator(kv, "n1")
    assert len(a.auto_assign("h", count=8)) == 8
    with pytest.raises(PoolExhausted, match="IPPool tiny"):
        a.auto_assign("h2")
    with pytest.raises(PoolExhausted):
        allocator(kv, "n2").auto_assign("h3")
    assert_consistent(kv)


def test_a_multi_address_request_is_all_or_nothing(kv: KVStore, store: ResourceStore) -> None:
    make_pool(store, "tiny", "10.10.0.0/29", block_size=29)
    a = allocator(kv, "n1")
    a.auto_assign("h", count=5)
    with pytest.raises(PoolExhausted):
        a.auto_assign("big", count=4)
    assert "big" not in handles(kv)
    assert len(allocated(kv)) == 5


def test_disabled_pool_is_never_used(kv: KVStore, store: ResourceStore) -> None:
    make_pool(store, "off", "10.20.0.0/24", block_size=29, disabled=True)
    with pytest.raises(NoUsablePool, match="disabled"):
        allocator(kv, "n1").auto_assign("h")
    make_pool(store, "on", "10.30.0.0/24", block_size=29)
    a = allocator(kv, "n1")
    ips = [a.auto_assign(f"h{i}")[0] for i in range(40)]
    assert all(in_pool(ip, "10.30.0.0/24") for ip in ips)


def test_pool_disabled_after_caching_is_not_used(kv: KVStore, store: ResourceStore) -> None:
    make_pool(store, "a", "10.20.0.0/24", block_size=29)
    a = allocator(kv, "n1")
    a.auto_assign("h0")  # the allocator now caches pool "a" as enabled
    make_pool(store, "b", "10.30.0.0/24", block_size=29)
    pool = store.get(IPPool, "a")
    store.update(pool.model_copy(update={"spec": pool.spec.model_copy(update={"disabled": True})}))
    assert in_pool(a.auto_assign("h1")[0], "10.30.0.0/24")
    assert a.cas_retries >= 1


def test_node_selector_and_requested_pools(kv: KVStore, store: ResourceStore) -> None:
    make_pool(store, "zone-a", "10.20.0.0/24", block_size=29, nodeSelector="zone == 'a'")
    make_pool(store, "any", "10.30.0.0/24", block_size=29)
    make_node(store, "n1", {"zone": "b"})
    make_node(store, "n2", {"zone": "a"})
    assert in_pool(allocator(kv, "n1").auto_assign("h1")[0], "10.30.0.0/24")
    assert in_pool(allocator(kv, "n2").auto_assign("h2", pools=["zone-a"])[0], "10.20.0.0/24")
    assert in_pool(allocator(kv, "n2").auto_assign("h3", pools=["10.30.0.0/24"])[0], "10.30.0.0/24")
    with pytest.raises(NoUsablePool, match="excludes this node"):
        allocator(kv, "n1").auto_assign("h4", pools=["zone-a"])
    with pytest.raises(NoUsablePool, match="IPPool nope does not exist"):
        allocator(kv, "n1").auto_assign("h5", pools=["nope"])


def test_max_blocks_per_host(kv: KVStore, store: ResourceStore) -> None:
    make_pool(store, "p", "10.10.0.0/24", block_size=29)
    set_config(kv, max_blocks_per_host=1)
    a = allocator(kv, "n1")
    a.auto_assign("h", count=8)
    allocator(kv, "n2").auto_assign("other")
    (extra,) = a.auto_assign("h2")  # no second block: borrowed from n2's
    assert [b.host for b in blocks(kv).values() if extra in [b.address(o) for o, _ in b.used()]] == ["n2"]
    assert sum(b.host == "n1" for b in blocks(kv).values()) == 1
    set_config(kv, max_blocks_per_host=1, auto_allocate_blocks=False, strict_affinity=True)
    with pytest.raises(PoolExhausted):
        allocator(kv, "n3").auto_assign("h3")


def test_release_affinity(kv: KVStore, store: ResourceStore) -> None:
    make_pool(store, "p", "10.10.0.0/24", block_size=29)
    a = allocator(kv, "n1")
    (kept,) = a.auto_assign("h1")
    a.auto_assign("h2", count=8)  # fills the first block, claims a second
    assert len(blocks(kv)) == 2
    a.release_handle("h2")
    released = a.release_host_affinities("n1")
    assert len(released) == 2
    assert kv.list(KEYS.host_affinities("n1"))[0] == []
    (left,) = blocks(kv).values()  # the empty block went; the used one stays, unaffine
    assert left.host is None and [left.address(o) for o, _ in left.used()] == [kept]
    a.release_ips([kept])
    assert blocks(kv) == {}  # empty and without affinity: deleted
    assert_consistent(kv)


def test_a_pending_affinity_left_by_a_crash_is_taken_over(kv: KVStore, store: ResourceStore) -> None:
    from datastore.kv import Put
    from datastore.models.ipam import affinity_json

    make_pool(store, "p", "10.10.0.0/29", block_size=29)
    kv.commit([], [Put(KEYS.affinity("n1", "10.10.0.0/29"), affinity_json(AffinityState.PENDING))])
    assert allocator(kv, "n1").auto_assign("h")
    aff = kv.get(KEYS.affinity("n1", "10.10.0.0/29"))
    assert aff is not None and affinity_state(aff.value) is AffinityState.CONFIRMED


def test_reserved_addresses_and_cidrs_are_never_handed_out(kv: KVStore, store: ResourceStore) -> None:
    make_pool(store, "tiny", "10.10.0.0/28", block_size=29)
    store.apply(
        IPReservation.model_validate(
            {"metadata": {"name": "gateways"}, "spec": {"reservedCIDRs": ["10.10.0.0/30", "10.10.0.9"]}}
        )
    )
    a = allocator(kv, "n1")
    got = a.auto_assign("h", count=10)  # 16 in the pool, 5 reserved: 11 to hand out
    assert not {"10.10.0.0", "10.10.0.1", "10.10.0.2", "10.10.0.3", "10.10.0.9"} & set(got)
    assert len(set(got)) == 10
    assert len(a.auto_assign("h2")) == 1
    with pytest.raises(PoolExhausted, match="IPPool tiny"):
        allocator(kv, "n1").auto_assign("h3")  # what is left is reserved
    assert_consistent(kv)
    with pytest.raises(ValueError, match="host bits"):
        IPReservation.model_validate(
            {"metadata": {"name": "bad"}, "spec": {"reservedCIDRs": ["10.10.0.1/30"]}}
        )


def test_a_manual_pool_serves_only_who_names_it_and_a_tunnel_pool_only_tunnels(
    kv: KVStore, store: ResourceStore
) -> None:
    make_pool(store, "auto", "10.10.0.0/29", block_size=29)
    make_pool(store, "manual", "10.20.0.0/28", block_size=29, assignmentMode="Manual")
    make_pool(store, "tunnels", "10.30.0.0/28", block_size=29, allowedUses=["Tunnel"])
    a = allocator(kv, "n1")
    unasked = a.auto_assign("w", count=8)  # all of auto; never manual's, never the tunnel pool's
    assert all(in_pool(x, "10.10.0.0/29") for x in unasked)
    with pytest.raises(PoolExhausted, match="IPPool auto"):
        a.auto_assign("w2")
    assert in_pool(a.auto_assign("w3", pools=["manual"])[0], "10.20.0.0/28")
    with pytest.raises(NoUsablePool, match="IPPool tunnels does not allow Workload"):
        a.auto_assign("w4", pools=["tunnels"])
    tunnel = a.auto_assign("t", pools=["tunnels"], use="Tunnel")
    assert in_pool(tunnel[0], "10.30.0.0/28")
    with pytest.raises(ValueError, match="LoadBalancer is not supported yet"):
        make_pool(store, "lb", "10.40.0.0/28", allowedUses=["LoadBalancer"])
    assert_consistent(kv)
