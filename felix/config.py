"""felix's settings: declared once, with Calico's environment names.

Precedence, highest first: environment (``FELIX_*``), the config file,
FelixConfiguration ``node.<nodename>``, FelixConfiguration ``default``, the
built-in default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator
from pydantic.alias_generators import to_camel

from datastore.models import FelixConfiguration, parse_duration
from datastore.models.felixconfig import EndpointToHostAction
from datastore.models.policy import FAILSAFE_INBOUND, FAILSAFE_OUTBOUND, ProtoPort
from datastore.settings import Settings, resolve

DEFAULT_CONFIG_FILE = "/etc/felid/felix.cfg"


class FelixSettings(Settings):
    ENV_PREFIX: ClassVar[str] = "FELIX_"

    @classmethod
    def env_name(cls, field: str) -> str:
        # Calico's spelling: FELIX_PROMETHEUSMETRICSENABLED, no word breaks.
        return cls.ENV_PREFIX + field.replace("_", "").upper()

    log_severity_screen: Literal["Debug", "Info", "Warning", "Error", "Fatal"] = Field(
        default="Info", description="Lowest severity logged to stderr."
    )
    prometheus_metrics_enabled: bool = Field(default=False, description="Serve Prometheus metrics.")
    prometheus_metrics_host: str = Field(default="127.0.0.1", description="Address the metrics server binds.")
    prometheus_metrics_port: int = Field(
        default=9091, ge=1, le=65535, description="Port of the metrics server."
    )
    health_enabled: bool = Field(default=True, description="Serve /liveness and /readiness.")
    health_host: str = Field(default="127.0.0.1", description="Address the health server binds.")
    health_port: int = Field(default=9099, ge=1, le=65535, description="Port of the health server.")
    route_refresh_interval: float = Field(
        default=90.0, ge=0, description="Seconds between full reads of the kernel's routes (0: never)."
    )
    interface_prefix: str = Field(default="cali", description="Name prefix of workload interfaces.")
    iptables_backend: Literal["Auto", "Legacy", "NFT"] = Field(
        default="Auto", description="Which iptables: Auto (the system's alternative), Legacy or NFT."
    )
    chain_insert_mode: Literal["Insert", "Append"] = Field(
        default="Insert",
        description=(
            "Where felid's jumps go in the built-in iptables chains: first (Insert: felid's policy "
            "decides before the host's own rules) or last (Append: after them)."
        ),
    )
    mtu_iface_pattern: str = Field(
        default=r"^((en|wl|ww|sl|ib)[Pcopsvx].*|(eth|wlan|wwan).*)",
        description=(
            "Host interfaces the MTU is detected from (the smallest of those up); when none matches, "
            "the interface of the default route. Workloads, tunl0 and vxlan.calico are sized from it."
        ),
    )
    mtu_file: Path = Field(
        default=Path("/var/lib/felid/mtu"),
        description="Where felix writes the MTU workloads get, for the CNI plugin (as Calico's mtu file).",
    )

    # Calico's felix defaults to Drop, but both of Calico's installs (its manifest and its
    # operator) set Accept, and felid has always let workloads reach their host: Accept.
    default_endpoint_to_host_action: EndpointToHostAction = Field(
        default="Accept",
        description=(
            "What happens to traffic from a workload to its own host after the workload's egress "
            "policy allowed it: Drop, Return (to the host's own INPUT rules) or Accept."
        ),
    )
    failsafe_inbound_host_ports: tuple[ProtoPort, ...] = Field(
        default=FAILSAFE_INBOUND,
        description=(
            "Ports a HostEndpoint's policy never closes to incoming traffic, as protocol:port or "
            "protocol:net:port (none: no failsafe)."
        ),
    )
    failsafe_outbound_host_ports: tuple[ProtoPort, ...] = Field(
        default=FAILSAFE_OUTBOUND,
        description="Ports a HostEndpoint's policy never closes to outgoing traffic, as the inbound ones.",
    )

    @field_validator("failsafe_inbound_host_ports", "failsafe_outbound_host_ports", mode="before")
    @classmethod
    def _none(cls, value: Any) -> Any:
        # Calico's spelling of an empty list in the environment.
        return [] if value in ("none", ["none"]) else value

    @field_validator("mtu_iface_pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"{value!r} is not a regular expression: {exc}") from None
        return value


def datastore_values(configs: Mapping[str, FelixConfiguration], node: str) -> dict[str, Any]:
    """Settings from FelixConfiguration ``default`` overlaid by ``node.<node>``."""
    merged: dict[str, Any] = {}
    for name in ("default", f"node.{node}"):
        config = next((c for c in configs.values() if c.name == name), None)
        if config is None:
            continue
        for field, value in config.spec.model_dump(exclude_none=True).items():
            if field in FelixSettings.model_fields:
                merged[field] = parse_duration(value) if field == "route_refresh_interval" else value
    return merged


def effective(
    environ: Mapping[str, str], file_values: Mapping[str, Any], datastore: Mapping[str, Any]
) -> FelixSettings:
    """Datastore values sit below the file: feed them in as the lowest source."""
    file_keys = {to_camel(k): v for k, v in datastore.items()} | dict(file_values)
    return resolve(FelixSettings, environ=environ, file_values=file_keys)


@dataclass(frozen=True)
class SettingsSources:
    """Where felix's settings come from: the environment and the config file, read once at start,
    and the datastore's FelixConfigurations, known once the first sync is in."""

    environ: Mapping[str, str]
    file_values: Mapping[str, Any]

    def local(self) -> FelixSettings:
        """Without the datastore (before the first sync): what felix starts with."""
        return effective(self.environ, self.file_values, {})

    def with_datastore(self, configs: Mapping[str, FelixConfiguration], node: str) -> FelixSettings:
        return effective(self.environ, self.file_values, datastore_values(configs, node))
