"""Benchmark: CAS updates/s through felid's datastore layer vs the bare etcd client.

Run from the repository root: ``.venv/bin/python -m bench.datastore [--updates N] [--rounds R]``
(as a module: run as a file, its name would shadow the ``datastore`` package).
Starts its own etcd (Debian etcd-server) on loopback.  Both sides do the same
work per update: one etcd transaction comparing the key's mod_revision and
putting the same bytes.  The layer adds model validation, JSON encoding and
error mapping.  Reported: best-of-R updates per second, sequential and with
4 concurrent writers (one resource each), and layer/bare ratios (goal >= 0.8).
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable

import pyetcd

from bench.common import local_datastore
from datastore.keys import KeyLayout
from datastore.models import Node
from datastore.store import ResourceStore, encode

WRITERS = 4


def node(name: str, i: int) -> Node:
    return Node.model_validate(
        {
            "metadata": {"name": name, "labels": {"i": str(i)}},
            "spec": {"bgp": {"ipv4Address": "198.51.100.5/24"}},
        }
    )


def layer_writer(store: ResourceStore, name: str, count: int) -> Callable[[], None]:
    current = store.apply(node(name, 0))

    def run() -> None:
        nonlocal current
        for i in range(count):
            meta = current.metadata.model_copy(update={"labels": {"i": str(i)}})
            current = store.update(current.model_copy(update={"metadata": meta}))

    return run


def bare_writer(client: pyetcd.Etcd3Client, key: str, count: int) -> Callable[[], None]:
    payload = encode(node(key.rsplit("/", 1)[-1], 0))
    client.put(key, payload)
    _, meta = client.get(key)
    revision = meta.mod_revision
    tx = client.transactions

    def run() -> None:
        nonlocal revision
        for _ in range(count):
            ok, responses = client.transaction(
                compare=[tx.mod(key) == revision], success=[tx.put(key, payload)], failure=[]
            )
            assert ok
            revision = responses[0].response_put.header.revision

    return run


def timed(writers: list[Callable[[], None]], total: int) -> float:
    threads = [threading.Thread(target=w) for w in writers]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return total / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--updates", type=int, default=2000, help="updates per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = args.updates
    with local_datastore() as (etcd, store, _tmp):
        bare = pyetcd.client(host="127.0.0.1", port=etcd.client_port)
        prefix = KeyLayout().kind_prefix(Node)
        results: dict[str, list[float]] = {k: [] for k in ("layer-1", "bare-1", "layer-4", "bare-4")}
        for _ in range(args.rounds):
            results["bare-1"].append(timed([bare_writer(bare, prefix + "bare-seq", n)], n))
            results["layer-1"].append(timed([layer_writer(store, "layer-seq", n)], n))
            per = n // WRITERS
            results["bare-4"].append(
                timed([bare_writer(bare, f"{prefix}bare-{w}", per) for w in range(WRITERS)], per * WRITERS)
            )
            results["layer-4"].append(
                timed([layer_writer(store, f"layer-{w}", per) for w in range(WRITERS)], per * WRITERS)
            )
        best = {k: max(v) for k, v in results.items()}
        print(f"etcd {etcd.url}, {n} CAS updates per measurement, best of {args.rounds} rounds")
        print(f"{'':14}{'bare client':>14}{'felid layer':>14}{'ratio':>8}")
        for label, suffix in (("sequential", "1"), (f"{WRITERS} writers", "4")):
            b, la = best[f"bare-{suffix}"], best[f"layer-{suffix}"]
            print(f"{label:14}{b:>11.0f}/s {la:>11.0f}/s {la / b:>7.2f}")
        bare.close()


if __name__ == "__main__":
    main()
