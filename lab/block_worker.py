"""Claims and releases whole IPAM blocks on request (stdin), for BGP tests and benchmarks.

``claim NODE`` allocates a full block's worth of addresses for NODE (so the
node gets a new block, confirmed) and answers the block and the wall times
before the allocation (``t0``) and after its commit (``t``);
``assign NODE COUNT`` allocates COUNT addresses wherever IPAM finds them (borrowing too);
``release NODE HANDLE BLOCK`` frees them and drops the affinity.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import time
import uuid

from datastore.config import DatastoreConfig
from datastore.etcd import EtcdKV
from datastore.keys import KeyLayout
from ipam.allocator import BlockAllocator


def main() -> None:
    kv = EtcdKV(DatastoreConfig(etcd_endpoints=(os.environ["FELID_ETCD_ENDPOINTS"],)), timeout=30)
    block_size = int(os.environ["BLOCK_SIZE"])
    count = 2 ** (32 - block_size)
    allocators: dict[str, BlockAllocator] = {}
    for line in sys.stdin:
        words = line.split()
        try:
            allocator = allocators.setdefault(words[1], BlockAllocator(kv, KeyLayout(), words[1]))
            if words[0] == "claim":
                handle = f"lab-{uuid.uuid4().hex[:10]}"
                started = time.time()
                ips = allocator.auto_assign(handle, count=count)
                block = str(ipaddress.ip_network(f"{ips[0]}/{block_size}", strict=False))
                reply = {"block": block, "handle": handle, "ips": len(ips), "t0": started, "t": time.time()}
            elif words[0] == "assign":
                handle = f"lab-{uuid.uuid4().hex[:10]}"
                ips = allocator.auto_assign(handle, count=int(words[2]))
                reply = {"ips": ips, "handle": handle, "t": time.time()}
            elif words[0] == "release":
                allocator.release_handle(words[2])
                allocator.release_affinity(words[1], words[3])
                reply = {"t": time.time()}
            else:
                reply = {"error": f"unknown command {words[0]!r}"}
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
