"""The bgp agent's Prometheus metrics, in their own registry (served on its metrics port)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class BGPMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.sessions = Gauge("felid_bgp_sessions", "BGP sessions by state.", ["state"], registry=r)
        self.received = Gauge(
            "felid_bgp_prefixes_received", "Prefixes a peer announces to us.", ["peer"], registry=r
        )
        self.advertised = Gauge(
            "felid_bgp_prefixes_advertised", "Prefixes we announce to a peer.", ["peer"], registry=r
        )
        self.program_time = Histogram(
            "felid_bgp_route_program_seconds",
            "From a BGP update received to the kernel routes programmed.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.kernel_routes = Gauge(
            "felid_bgp_kernel_routes", "Routes the agent has in the kernel (protocol 186).", registry=r
        )
        self.exabgp_restarts = Counter(
            "felid_bgp_exabgp_restarts", "ExaBGP processes started after the first.", registry=r
        )
