"""felix's Prometheus metrics, named as Calico's, in a registry of their own."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class FelixMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.route_table_num_routes = Gauge(
            "felix_route_table_num_routes", "Routes felix owns in the kernel.", registry=r
        )
        self.apply_time = Histogram(
            "felix_int_dataplane_apply_time_seconds", "Time to apply a dataplane update.", registry=r
        )
        self.failures = Counter("felix_int_dataplane_failures", "Failed dataplane applies.", registry=r)
        self.resyncs = Counter("felix_resyncs_started", "Full reads of the kernel's state.", registry=r)
        self.cluster_num_hosts = Gauge("felix_cluster_num_hosts", "Nodes in the cluster.", registry=r)
        self.active_local_endpoints = Gauge(
            "felix_active_local_endpoints", "Workload endpoints on this host.", registry=r
        )
        self.policy_rules = Gauge(
            "felix_policy_rules", "iptables rules felix has programmed for policy.", registry=r
        )
        self.policy_sets = Gauge("felix_policy_ipsets", "ipsets felix has programmed for policy.", registry=r)
        self.policy_members = Gauge(
            "felix_policy_ipset_members", "Members of the ipsets felix has programmed.", registry=r
        )
        self.policy_apply_time = Histogram(
            "felix_policy_apply_time_seconds",
            "Time to bring the kernel's policy chains and sets up to date (read back and write).",
            registry=r,
        )
