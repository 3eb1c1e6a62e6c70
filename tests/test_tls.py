"""Mutual TLS to etcd: the client certificate is what gets a client in."""

from __future__ import annotations

import pytest

from datastore.config import DatastoreConfig
from datastore.errors import Unavailable
from datastore.etcd import EtcdKV
from datastore.keys import KeyLayout
from datastore.models import Node
from datastore.store import ResourceStore
from lab.etcd import EtcdServer
from tests.harness.tls import PKI


def tls_store(etcd_tls: EtcdServer, pki: PKI, cert: bool = True, rogue: bool = False) -> ResourceStore:
    config = DatastoreConfig(
        etcd_endpoints=(etcd_tls.url,),
        etcd_ca_cert_file=str(pki.server.ca_cert),
        etcd_cert_file=str(pki.rogue_cert if rogue else pki.client_cert) if cert else None,
        etcd_key_file=str(pki.rogue_key if rogue else pki.client_key) if cert else None,
    )
    return ResourceStore(EtcdKV(config, timeout=3), KeyLayout())


def test_client_with_certificate_reads_and_writes(etcd_tls: EtcdServer, pki: PKI) -> None:
    store = tls_store(etcd_tls, pki)
    store.create(Node.model_validate({"metadata": {"name": "n1"}}))
    assert [n.name for n in store.list(Node)] == ["n1"]
    assert etcd_tls.url.startswith("https://")


def test_client_without_certificate_is_refused(etcd_tls: EtcdServer, pki: PKI) -> None:
    store = tls_store(etcd_tls, pki, cert=False)
    with pytest.raises(Unavailable) as info:
        store.list(Node)
    assert etcd_tls.url in str(info.value)


def test_client_with_untrusted_certificate_is_refused(etcd_tls: EtcdServer, pki: PKI) -> None:
    store = tls_store(etcd_tls, pki, rogue=True)
    with pytest.raises(Unavailable):
        store.list(Node)


def test_plain_http_client_cannot_talk_to_a_tls_etcd(etcd_tls: EtcdServer) -> None:
    url = etcd_tls.url.replace("https://", "http://")
    store = ResourceStore(EtcdKV(DatastoreConfig(etcd_endpoints=(url,)), timeout=3), KeyLayout())
    with pytest.raises(Unavailable):
        store.list(Node)
