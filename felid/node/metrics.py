"""felid-node's /metrics: this node's IPAM metrics, as calico-kube-controllers serves Calico's."""

from __future__ import annotations

import asyncio

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from datastore.errors import DatastoreError
from datastore.etcd import EtcdKV
from datastore.health import TEXT, Response, serve_http
from datastore.keys import KeyLayout
from ipam.inventory import load_inventory
from ipam.metrics import IPAMCollector


class MetricsServer:
    """/metrics: this node's IPAM metrics, read from the datastore at each scrape (off the event loop)."""

    def __init__(self, kv: EtcdKV, layout: KeyLayout, node: str) -> None:
        self.kv = kv
        self.registry = CollectorRegistry()
        self.registry.register(IPAMCollector(lambda: load_inventory(kv, layout), node=node))
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self.server = await serve_http(host, port, {"/metrics": self.scrape})

    async def scrape(self) -> Response:
        try:
            return 200, CONTENT_TYPE_LATEST, await asyncio.to_thread(generate_latest, self.registry)
        except DatastoreError as exc:
            return 503, TEXT, f"{exc}\n".encode()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        self.kv.close()
