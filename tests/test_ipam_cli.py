"""felidctl ipam end to end, the garbage collector, and the IPAM metrics."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry

from datastore.kv import KVStore
from datastore.models import Node, WorkloadEndpoint
from datastore.models.ipam import pod_handle, tunnel_handle
from datastore.store import ResourceStore
from ipam.gc import GarbageCollector
from ipam.inventory import load_inventory
from ipam.metrics import IPAMCollector
from lab.etcd import EtcdServer
from tests.ipam_helpers import LAYOUT, allocated, allocator, assert_consistent, make_node, make_pool

FELIDCTL = str(Path(sys.executable).parent / "felidctl")


def ctl(etcd: EtcdServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FELIDCTL, "ipam", *args, "--etcd-endpoints", etcd.url], capture_output=True, text=True, check=False
    )


def endpoint(store: ResourceStore, node: str, container: str, address: str) -> None:
    store.create(
        WorkloadEndpoint.model_validate(
            {
                "metadata": {"name": f"{node}-k8s-{container}-eth0", "namespace": "default"},
                "spec": {
                    "node": node,
                    "containerID": container,
                    "interfaceName": "cali0",
                    "ipNetworks": [f"{address}/32"],
                },
            }
        )
    )


def test_show_usage_blocks_and_address(etcd: EtcdServer, kv: KVStore, store: ResourceStore) -> None:
    make_pool(store, "pods", "10.90.0.0/24", block_size=28)
    a = allocator(kv, "node-1")
    ips = a.auto_assign(pod_handle("c1"), count=3, attrs={"pod": "web", "namespace": "shop"})
    usage = ctl(etcd, "show")
    assert usage.returncode == 0
    row = next(line for line in usage.stdout.splitlines() if "IP Pool" in line)
    assert [c.strip() for c in row.strip("|").split("|")] == [
        "IP Pool",
        "10.90.0.0/24",
        "",
        "256",
        "3 (1%)",
        "253 (99%)",
    ]
    blocks = ctl(etcd, "show", "--show-blocks").stdout
    block_row = next(line for line in blocks.splitlines() if "Block" in line)
    assert [c.strip() for c in block_row.strip("|").split("|")][2:5] == ["node-1", "16", "3 (19%)"]
    who = ctl(etcd, "show", "--ip", ips[0]).stdout
    assert f"IP {ips[0]} is in use" in who and "pod: web" in who and "namespace: shop" in who
    assert "handle: k8s-pod-network.c1" in who
    assert "is not assigned" in ctl(etcd, "show", "--ip", "10.90.0.200").stdout


def test_release_by_ip_and_handle(etcd: EtcdServer, kv: KVStore, store: ResourceStore) -> None:
    make_pool(store, "pods", "10.90.0.0/24", block_size=28)
    a = allocator(kv, "node-1")
    first = a.auto_assign("h1", count=2)
    second = a.auto_assign("h2")
    out = ctl(etcd, "release", "--ip", first[0])
    assert out.returncode == 0 and out.stdout.strip() == f"Released {first[0]}"
    assert ctl(etcd, "release", "--ip", first[0]).stdout.strip() == "Nothing to release (already free)."
    out = ctl(etcd, "release", "--handle", "h2")
    assert out.stdout.strip() == f"Released {second[0]}"
    assert set(allocated(kv)) == {first[1]}
    bad = ctl(etcd, "release")
    assert bad.returncode == 1 and "exactly one of --ip or --handle" in bad.stderr
    assert_consistent(kv)


def test_configure_and_show_configuration(etcd: EtcdServer, kv: KVStore, store: ResourceStore) -> None:
    assert "| strictAffinity     | false" in ctl(etcd, "show", "--show-configuration").stdout
    out = ctl(etcd, "configure", "--strictaffinity", "true", "--maxblocksperhost", "4")
    assert out.returncode == 0, out.stderr
    shown = ctl(etcd, "show", "--show-configuration").stdout
    assert "| strictAffinity     | true" in shown and "| maxBlocksPerHost   | 4" in shown
    assert "| autoAllocateBlocks | true" in shown
    bad = ctl(etcd, "configure", "--maxblocksperhost", "-3")
    assert bad.returncode == 1 and bad.stderr.strip() == (
        "felidctl: invalid setting: --maxblocksperhost: Input should be greater than or equal to 0 (got -3)"
    )
    assert ctl(etcd, "configure", "--strictaffinity", "maybe").returncode == 2  # argparse usage error


def test_check_is_clean_when_everything_is_owned(etcd: EtcdServer, kv: KVStore, store: ResourceStore) -> None:
    make_pool(store, "pods", "10.90.0.0/24", block_size=28)
    make_node(store, "node-1")
    a = allocator(kv, "node-1")
    (address,) = a.auto_assign(pod_handle("c1"))
    endpoint(store, "node-1", "c1", address)
    a.auto_assign(tunnel_handle("ipip", "node-1"))
    out = ctl(etcd, "check")
    assert out.returncode == 0, out.stdout
    assert "No problems found." in out.stdout
    store.delete(Node, "node-1")
    out = ctl(etcd, "check")
    assert out.returncode == 2
    assert out.stdout.count("node node-1 does not exist") == 2


def test_gc_respects_grace_and_never_takes_tunnel_addresses_of_live_nodes(
    etcd: EtcdServer, kv: KVStore, store: ResourceStore
) -> None:
    make_pool(store, "pods", "10.90.0.0/24", block_size=28)
    make_node(store, "node-1")
    a = allocator(kv, "node-1")
    (owned,) = a.auto_assign(pod_handle("owned"))
    endpoint(store, "node-1", "owned", owned)
    (leaked,) = a.auto_assign(pod_handle("gone"))
    (tunnel,) = a.auto_assign(tunnel_handle("ipip", "node-1"))
    young = ctl(etcd, "gc", "--grace", "1h")
    assert young.returncode == 0 and "Released 0 leaked address(es)." in young.stdout
    dry = ctl(etcd, "gc", "--grace", "0s", "--dry-run")
    assert f"would release IP {leaked} handle k8s-pod-network.gone" in dry.stdout
    assert leaked in allocated(kv)
    done = ctl(etcd, "gc", "--grace", "0s")
    assert f"Released IP {leaked} handle k8s-pod-network.gone" in done.stdout
    assert set(allocated(kv)) == {owned, tunnel}
    assert ctl(etcd, "gc", "--grace", "ten").returncode == 1
    store.delete(Node, "node-1")
    gone = ctl(etcd, "gc", "--grace", "0s")
    assert "Released 2 leaked address(es)." in gone.stdout
    assert allocated(kv) == {}
    assert_consistent(kv)


def test_gc_rechecks_before_release(kv: KVStore, store: ResourceStore) -> None:
    make_pool(store, "pods", "10.90.0.0/24", block_size=28)
    make_node(store, "node-1")
    a = allocator(kv, "node-1")
    (address,) = a.auto_assign(pod_handle("late"))
    gc = GarbageCollector(kv, LAYOUT, grace_seconds=0)
    ripe, _ = gc.candidates()
    assert [leak.address for leak in ripe] == [address]
    endpoint(store, "node-1", "late", address)  # the CNI plugin finished its ADD after all
    assert not gc.still_leaked(ripe[0])
    # And an address released and handed to someone else meanwhile is not freed.
    a.release_handle(pod_handle("late"))
    reused = a.auto_assign(pod_handle("new"), count=16)
    assert address in reused
    assert a.release_ips([address], only_handle=pod_handle("late")) == []
    assert allocated(kv)[address] == pod_handle("new")


def test_metrics(kv: KVStore, store: ResourceStore) -> None:
    make_pool(store, "pods", "10.90.0.0/28", block_size=29)
    allocator(kv, "n1").auto_assign("a", count=3)
    allocator(kv, "n2").auto_assign("b", count=8)
    allocator(kv, "n3").auto_assign("c", count=2)  # borrowed from n1's block
    registry = CollectorRegistry()
    registry.register(IPAMCollector(lambda: load_inventory(kv, LAYOUT), reclaimed=lambda: 7))

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("ipam_allocations_in_use", ippool="pods", node="n1") == 3
    assert value("ipam_allocations_in_use", ippool="pods", node="n3") == 2
    assert value("ipam_allocations_borrowed", ippool="pods", node="n3") == 2
    assert value("ipam_allocations_borrowed", ippool="pods", node="n1") is None
    assert value("ipam_blocks", ippool="pods", node="n1") == 1
    assert value("ipam_ippool_size", ippool="pods") == 16
    assert value("ipam_allocations_gc_reclamations_total") == 7


def test_bad_addresses_are_usage_errors(etcd: EtcdServer) -> None:
    for args in (("show", "--ip", "nope"), ("release", "--ip", "10.0.0")):
        done = ctl(etcd, *args)
        assert done.returncode == 2 and "is not an IPv4 address" in done.stderr
        assert "Traceback" not in done.stderr
