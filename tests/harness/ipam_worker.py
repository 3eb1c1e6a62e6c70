"""One allocating host, as a separate process: ``python -m tests.harness.ipam_worker``.

Prints one JSON line per allocation (flushed), so a test can watch progress
and SIGKILL it mid-way.  With ``--endpoints`` it also writes a
WorkloadEndpoint per allocation, as the CNI plugin would.
"""

from __future__ import annotations

import argparse
import json
import sys

from datastore.config import DatastoreConfig
from datastore.etcd import EtcdKV
from datastore.keys import KeyLayout
from datastore.models import WorkloadEndpoint
from datastore.models.ipam import pod_handle
from datastore.store import ResourceStore
from ipam.allocator import BlockAllocator


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--etcd", required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--endpoints", action="store_true")
    parser.add_argument("--release", action="store_true", help="release every handle of this node instead")
    args = parser.parse_args()
    kv = EtcdKV(DatastoreConfig(etcd_endpoints=(args.etcd,)), timeout=30)
    layout = KeyLayout()
    allocator = BlockAllocator(kv, layout, args.node)
    store = ResourceStore(kv, layout)
    for i in range(args.count):
        container = f"{args.node}-c{i}"
        handle = pod_handle(container)
        if args.release:
            ips = allocator.release_handle(handle)
        else:
            ips = allocator.auto_assign(handle, attrs={"namespace": "default", "pod": container})
            if args.endpoints:
                store.create(
                    WorkloadEndpoint.model_validate(
                        {
                            "metadata": {"name": f"{args.node}-k8s-{container}-eth0", "namespace": "default"},
                            "spec": {
                                "node": args.node,
                                "pod": container,
                                "containerID": container,
                                "interfaceName": f"cali{i:011d}",
                                "ipNetworks": [f"{ip}/32" for ip in ips],
                            },
                        }
                    )
                )
        print(json.dumps({"handle": handle, "ips": ips}), flush=True)
    print(json.dumps({"done": True, "cas_retries": allocator.cas_retries}), flush=True)
    kv.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
