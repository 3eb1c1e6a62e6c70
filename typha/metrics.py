"""typha's Prometheus metrics, under Calico's names where the meaning matches, in their own registry."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class TyphaMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.connections_accepted = Counter(
            "typha_connections_accepted", "Client connections accepted.", registry=r
        )
        self.connections_active = Gauge("typha_connections_active", "Open client connections.", registry=r)
        self.connections_dropped = Counter(
            "typha_connections_dropped",
            "Client connections ended by typha, by reason.",
            ["reason"],
            registry=r,
        )
        self.connections_streaming = Gauge(
            "typha_connections_streaming", "Clients past their snapshot, receiving updates.", registry=r
        )
        self.updates_total = Counter(
            "typha_updates_total", "Datastore updates received from etcd.", registry=r
        )
        self.updates_skipped = Counter(
            "typha_updates_skipped", "Datastore updates that changed nothing a client sees.", registry=r
        )
        self.cache_size = Gauge(
            "typha_cache_size", "Keys in the cache, by syncer type.", ["syncer"], registry=r
        )
        self.snapshots_generated = Counter(
            "typha_snapshots_generated", "Snapshots encoded.", ["syncer"], registry=r
        )
        self.snapshots_reused = Counter(
            "typha_snapshots_reused", "Joins served an already encoded snapshot.", ["syncer"], registry=r
        )
        self.snapshot_raw_bytes = Gauge(
            "typha_snapshot_raw_bytes",
            "Size of the last snapshot before compression.",
            ["syncer"],
            registry=r,
        )
        self.snapshot_compressed_bytes = Gauge(
            "typha_snapshot_compressed_bytes", "Size of the last compressed snapshot.", ["syncer"], registry=r
        )
        self.client_latency = Histogram(
            "typha_client_latency_secs",
            "Time from an update's arrival at typha to its write to a client.",
            buckets=_LATENCY,
            registry=r,
        )
        self.client_write_latency = Histogram(
            "typha_client_write_latency_secs",
            "Time a write to a client took to drain.",
            buckets=_LATENCY,
            registry=r,
        )
        self.ping_latency = Histogram(
            "typha_ping_latency", "Round trip of typha's pings to its clients.", buckets=_LATENCY, registry=r
        )
        self.kvs_per_msg = Summary("typha_kvs_per_msg", "Keys per UPDATES message.", registry=r)
        self.log_entries = Gauge(
            "typha_log_entries", "Update messages held for clients to catch up.", registry=r
        )
