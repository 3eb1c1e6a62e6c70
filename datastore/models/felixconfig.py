"""FelixConfiguration: per-cluster (``default``) and per-node (``node.<name>``) felix settings."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from datastore.errors import quoted
from datastore.models.base import Duration, Model, Port, Resource
from datastore.models.policy import ProtoPort

# What felix does with a packet from a workload to its own host once the workload's egress policy
# let it out: Calico's defaultEndpointToHostAction (Drop, its default; Return to the host's own
# INPUT rules; Accept).
EndpointToHostAction = Literal["Drop", "Return", "Accept"]

_NAME = re.compile(r"^(default|node\..+)$")


class FelixConfigurationSpec(Model):
    route_refresh_interval: Duration | None = None
    log_severity_screen: Literal["Debug", "Info", "Warning", "Error", "Fatal"] | None = None
    prometheus_metrics_enabled: bool | None = None
    prometheus_metrics_host: str | None = None
    prometheus_metrics_port: Port | None = None
    health_enabled: bool | None = None
    health_host: str | None = None
    health_port: Port | None = None
    ipip_enabled: bool | None = Field(default=None, alias="ipipEnabled")
    ipip_mtu: int | None = Field(default=None, alias="ipipMTU", ge=576, le=9000)
    vxlan_enabled: bool | None = None
    vxlan_mtu: int | None = Field(default=None, alias="vxlanMTU", ge=576, le=9000)
    vxlan_vni: int | None = Field(default=None, alias="vxlanVNI", ge=1, le=16777215)
    vxlan_port: Port | None = None
    interface_prefix: str | None = None
    iptables_backend: Literal["Auto", "Legacy", "NFT"] | None = None
    chain_insert_mode: Literal["Insert", "Append"] | None = None
    mtu_iface_pattern: str | None = None
    default_endpoint_to_host_action: EndpointToHostAction | None = None
    failsafe_inbound_host_ports: list[ProtoPort] | None = None
    failsafe_outbound_host_ports: list[ProtoPort] | None = None


class FelixConfiguration(Resource):
    KIND: ClassVar[str] = "FelixConfiguration"
    PLURAL: ClassVar[str] = "felixconfigurations"

    kind: Literal["FelixConfiguration"] = "FelixConfiguration"
    spec: FelixConfigurationSpec = Field(default_factory=FelixConfigurationSpec)

    @model_validator(mode="after")
    def _scoped(self) -> FelixConfiguration:
        if not _NAME.match(self.name):
            raise ValueError(f"metadata.name: {quoted(self.name)} must be 'default' or 'node.<nodename>'")
        return self
