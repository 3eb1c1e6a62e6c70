"""felid-node's settings, declared once, with calico-node's meanings (``CALICO_*`` -> ``FELID_*``)."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from datastore.models.base import EncapMode, IPv4, IPv4Network
from datastore.settings import Settings
from felid.cni.fastpath import DEFAULT_SOCKET
from felix.config import FelixSettings


class NodeSettings(Settings):
    ENV_PREFIX: ClassVar[str] = "FELID_"

    nodename: str | None = Field(default=None, description="This node's name (default: the hostname).")
    ip: str = Field(
        default="autodetect",
        description="This node's IPv4 address with prefix (192.0.2.10/24), or autodetect.",
    )
    ip_autodetection_method: str = Field(
        default="first-found",
        description="With ip=autodetect: first-found, interface=REGEX, or can-reach=DESTINATION.",
    )
    as_number: int | None = Field(
        default=None, ge=1, le=4294967295, description="This node's AS (default: the cluster's)."
    )
    networking_backend: Literal["bgp", "vxlan", "none"] = Field(
        default="bgp", description="bgp runs felid-bgp beside felix; vxlan and none run felix alone."
    )
    ipv4pool_cidr: IPv4Network = Field(
        default="192.168.0.0/16", description="The default IPPool, created when the cluster has no pool."
    )
    ipv4pool_block_size: int = Field(
        default=26, ge=20, le=32, description="Block size of the default IPPool."
    )
    ipv4pool_ipip: EncapMode = Field(default="Always", description="ipipMode of the default IPPool.")
    ipv4pool_vxlan: EncapMode = Field(default="Never", description="vxlanMode of the default IPPool.")
    ipv4pool_nat_outgoing: bool = Field(default=True, description="natOutgoing of the default IPPool.")
    route_reflector_cluster_id: IPv4 | None = Field(
        default=None,
        description="Make this node a route reflector with this cluster ID (label route-reflector=true).",
    )
    health_host: str = Field(default="127.0.0.1", description="Address of /liveness, /readiness and /status.")
    health_port: int = Field(
        default=FelixSettings.default_of("health_port"),
        ge=1,
        le=65535,
        description="Port of /liveness, /readiness and /status (felix's own port, taken over for the host).",
    )
    metrics_host: str = Field(default="127.0.0.1", description="Address of felid-node's /metrics.")
    metrics_port: int = Field(
        default=9094,
        ge=0,
        le=65535,
        description="Port of /metrics: this node's IPAM metrics under Calico's names, on the port "
        "calico-kube-controllers serves them on (0: do not serve).",
    )
    felix_health_port: int = Field(
        default=9097,
        ge=1,
        le=65535,
        description="Port felix's own health server is given (FELIX_HEALTHPORT).",
    )
    var_dir: Path = Field(
        default=FelixSettings.default_of("mtu_file").parent,
        description="This node's state: felix writes the workloads' MTU to mtu here (FELIX_MTUFILE).",
    )
    run_dir: Path = Field(
        default=Path("/run/felid"),
        description="Where felid-node writes subnet.env; bgp's state lives below it.",
    )
    cni_socket: Path | None = Field(
        default=Path(DEFAULT_SOCKET),
        description=(
            "The CNI fast path: felid-node runs the felid and felid-ipam plugins' ADD, DEL and CHECK "
            "for them on this unix socket, warm (a network config's cni_socket names another). "
            "Empty: not served; the plugins then do the work themselves."
        ),
    )

    @field_validator("cni_socket", mode="before")
    @classmethod
    def _unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("ip")
    @classmethod
    def _address(cls, value: str) -> str:
        if value != "autodetect":
            ipaddress.IPv4Interface(value)
        return value

    @field_validator("ip_autodetection_method")
    @classmethod
    def _method(cls, value: str) -> str:
        kind, _, argument = value.partition("=")
        if kind == "first-found" and not argument:
            return value
        if kind == "interface" and argument:
            re.compile(argument)
            return value
        if kind == "can-reach" and argument:
            ipaddress.IPv4Address(argument)
            return value
        raise ValueError("expected first-found, interface=REGEX or can-reach=IPV4ADDRESS")
