"""The bgp agent's settings, declared once (documented in docs/configuration.md from here)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from datastore.models.base import IPv4, IPv4Interface
from datastore.settings import Settings


class BGPSettings(Settings):
    ENV_PREFIX: ClassVar[str] = "FELID_BGP_"

    run_dir: Path = Field(
        default=Path("/var/run/felid/bgp"),
        description="Where ExaBGP's configuration, API socket and logs live (one directory per agent).",
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="Address of the /metrics, /status and health server."
    )
    metrics_port: int = Field(
        default=9092, ge=0, le=65535, description="Port of that server (0: do not serve)."
    )
    route_reflector: bool = Field(
        default=False,
        description="Run as a route reflector: this Node gets the cluster ID and label route-reflector=true.",
    )
    cluster_id: IPv4 | None = Field(
        default=None, description="Route reflector cluster ID (an IPv4 address form); with route_reflector."
    )
    address: IPv4Interface | None = Field(
        default=None,
        description="With route_reflector: this node's BGP address (192.0.2.10/24) if its Node has none.",
    )
    secrets_dir: Path = Field(
        default=Path("/etc/felid/secrets"),
        description="Where BGP password Secrets are: <dir>/<Secret name>/<key>, as a mounted Secret.",
    )
    exabgp: str | None = Field(
        default=None,
        description=(
            "The ExaBGP executable. Unset: the ExaBGP installed beside felid, run through "
            "bgp.exabgp_main, which repairs its reactor's stall on closed sockets."
        ),
    )
    exabgp_reactor_speed: float = Field(
        default=100.0,
        gt=0,
        le=1000,
        description=(
            "ExaBGP's exabgp.reactor.speed: its reactor sleeps up to a hundredth of this (in seconds) "
            "when it sees nothing to do. 100 (a 1 s sleep) keeps an idle host under 1 % of a core with "
            "40 sessions; ExaBGP's own default, 1, wakes it 100 times a second."
        ),
    )
    log_severity: Literal["Debug", "Info", "Warning", "Error"] = Field(
        default="Info", description="Lowest severity logged to stderr."
    )
