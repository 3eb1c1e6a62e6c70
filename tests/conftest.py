"""Fixtures: real etcd servers (plain and mutual TLS), clients and stores on them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from datastore.config import DatastoreConfig
from datastore.etcd import EtcdKV
from datastore.keys import KeyLayout
from datastore.models import Profile
from datastore.store import ResourceStore
from lab.etcd import EtcdServer
from lab.network import Lab, LabHost, single_host
from tests.harness.tls import PKI, make_pki
from tests.ipam_helpers import POD_POOL


def pytest_sessionstart(session: pytest.Session) -> None:
    # The suite runs real etcd, namespaces and devices: refuse to pretend otherwise.
    if os.geteuid() != 0:
        raise pytest.UsageError("the felid tests run as root (they create namespaces and devices)")
    if shutil.which("etcd") is None:
        raise pytest.UsageError("etcd is not installed: run the README's test command, which installs it")


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    server = EtcdServer(tmp_path / "etcd", log_file=tmp_path / "etcd.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def etcd_config(etcd: EtcdServer) -> DatastoreConfig:
    return DatastoreConfig(etcd_endpoints=(etcd.url,))


@pytest.fixture
def kv(etcd_config: DatastoreConfig) -> Iterator[EtcdKV]:
    client = EtcdKV(etcd_config)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def store(kv: EtcdKV) -> ResourceStore:
    return ResourceStore(kv, KeyLayout("/felid"))


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def etcd_tls(tmp_path: Path, pki: PKI) -> Iterator[EtcdServer]:
    server = EtcdServer(tmp_path / "etcd-tls", tls=pki.server, log_file=tmp_path / "etcd-tls.log")
    server.start(health_check=(pki.client_cert, pki.client_key))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def host_lab(tmp_path: Path) -> Iterator[Lab]:
    """A host namespace (uplink, default route) with etcd inside and the pod pool applied."""
    with single_host(tmp_path) as made:
        # The default-allow profile felid-node creates at start, for tests that run felix alone.
        made.hosts[0].apply([POD_POOL, Profile.default_allow().to_dict()])
        yield made


@pytest.fixture
def host(host_lab: Lab) -> LabHost:
    return host_lab.hosts[0]
