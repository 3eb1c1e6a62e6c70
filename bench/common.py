"""What the benchmarks share: a throwaway etcd and a store on it."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from datastore.config import DatastoreConfig
from datastore.etcd import EtcdKV
from datastore.keys import KeyLayout
from datastore.store import ResourceStore
from lab.etcd import EtcdServer


@contextlib.contextmanager
def local_datastore() -> Iterator[tuple[EtcdServer, ResourceStore, Path]]:
    """A fresh etcd (Debian etcd-server) on loopback, a ResourceStore on it, and a scratch directory."""
    with tempfile.TemporaryDirectory() as tmp:
        etcd = EtcdServer(Path(tmp) / "etcd", log_file=Path(tmp) / "etcd.log")
        etcd.start()
        kv = EtcdKV(DatastoreConfig(etcd_endpoints=(etcd.url,)))
        try:
            yield etcd, ResourceStore(kv, KeyLayout()), Path(tmp)
        finally:
            kv.close()
            etcd.stop()
