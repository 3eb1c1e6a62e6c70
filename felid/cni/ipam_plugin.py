"""felid-ipam: the IPAM-only CNI plugin (like calico-ipam), for use under any main plugin.

Network config (the main plugin's, as CNI passes it to IPAM plugins)::

    {"cniVersion": "1.0.0", "name": "pods", "type": "bridge", "bridge": "cni0",
     "etcd_endpoints": "http://192.0.2.10:2379", "nodename": "node-1",
     "ipam": {"type": "felid-ipam", "ipv4_pools": ["default-ipv4-ippool"]}}
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from datastore.config import DatastoreConfig
from datastore.etcd import EtcdKV
from datastore.keys import KeyLayout
from datastore.kv import KVStore
from datastore.models.ipam import pod_handle
from felid.cni.protocol import (
    INVALID_CONFIG,
    IPAM_FAILURE,
    UNKNOWN_CONTAINER,
    CNIError,
    Invocation,
    Plugin,
    datastore_config,
    ipam_result,
    node_name,
    run,
)
from ipam.allocator import BlockAllocator
from ipam.errors import NoUsablePool

# How a plugin reaches etcd: a new client (its own process), or felid-node's warm one (the fast path).
KVSource = Callable[[DatastoreConfig], KVStore]


def allocator_for(invocation: Invocation, kv_for: KVSource = EtcdKV) -> BlockAllocator:
    config = datastore_config(invocation)
    return BlockAllocator(kv_for(config), KeyLayout(config.etcd_prefix), node_name(invocation))


def requested_pools(invocation: Invocation) -> list[str] | None:
    pools = invocation.ipam.get("ipv4_pools")
    if pools is None:
        return None
    if not isinstance(pools, list) or not all(isinstance(p, str) for p in pools):
        raise CNIError(INVALID_CONFIG, "ipam.ipv4_pools must be a list of pool names or CIDRs")
    return pools


def ipam_add(invocation: Invocation, kv_for: KVSource = EtcdKV) -> Mapping[str, Any]:
    allocator = allocator_for(invocation, kv_for)
    handle = pod_handle(invocation.container_id)
    pools = requested_pools(invocation)
    # A repeated ADD for the same container gets the addresses it already has.
    addresses = allocator.ips_of_handle(handle)
    if not addresses:
        attrs = {
            "namespace": invocation.args.get("K8S_POD_NAMESPACE", ""),
            "pod": invocation.args.get("K8S_POD_NAME", ""),
            "containerID": invocation.container_id,
        }
        try:
            addresses = allocator.auto_assign(
                handle, attrs={k: v for k, v in attrs.items() if v}, pools=pools
            )
        except NoUsablePool as exc:
            raise CNIError(INVALID_CONFIG, str(exc)) from None
    return ipam_result(invocation.version, addresses)


def ipam_del(invocation: Invocation, kv_for: KVSource = EtcdKV) -> None:
    allocator_for(invocation, kv_for).release_handle(pod_handle(invocation.container_id))


def ipam_check(invocation: Invocation, kv_for: KVSource = EtcdKV) -> None:
    held = set(allocator_for(invocation, kv_for).ips_of_handle(pod_handle(invocation.container_id)))
    if not held:
        raise CNIError(UNKNOWN_CONTAINER, f"no address is allocated for container {invocation.container_id}")
    prev = invocation.config.get("prevResult") or {}
    expected = {
        str(ip.get("address", "")).split("/")[0] for ip in prev.get("ips", []) if isinstance(ip, dict)
    }
    missing = expected - held
    if missing:
        raise CNIError(
            IPAM_FAILURE, f"container {invocation.container_id} no longer holds {', '.join(sorted(missing))}"
        )


def plugin(kv_for: KVSource = EtcdKV) -> Plugin:
    return Plugin(
        add=partial(ipam_add, kv_for=kv_for),
        delete=partial(ipam_del, kv_for=kv_for),
        check=partial(ipam_check, kv_for=kv_for),
    )


def main() -> int:
    return run(plugin())


if __name__ == "__main__":
    sys.exit(main())
