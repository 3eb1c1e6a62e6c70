"""BGPConfiguration and BGPPeer: who speaks BGP with whom."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, model_validator

from datastore.errors import quoted
from datastore.models.base import (
    ASNumber,
    Duration,
    IPv4Network,
    Model,
    Name,
    Port,
    Resource,
    SelectorText,
)

_PER_NODE = re.compile(r"^node\.(.+)$")


def _peer_ip(value: str) -> str:
    """``ip`` or ``ip:port``; the port, when given, must be a valid TCP port."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = value, ""
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError(f"{quoted(value)} is not an IPv4 address or address:port") from None
    if sep and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"{quoted(value)}: port {quoted(port)} is not in 1..65535")
    return value


PeerIP = Annotated[str, AfterValidator(_peer_ip)]
_SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")  # a Kubernetes Secret's name
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")  # and one of its keys
PASSWORD_LIMIT = 80  # TCP-MD5 keys: at most 80 bytes


class SecretKeyRef(Model):
    name: str
    key: str

    @model_validator(mode="after")
    def _valid(self) -> SecretKeyRef:
        if not _SECRET_NAME.match(self.name):
            raise ValueError(f"secretKeyRef.name: {quoted(self.name)} is not a Kubernetes Secret name")
        if not _SECRET_KEY.match(self.key) or self.key in (".", ".."):
            raise ValueError(f"secretKeyRef.key: {quoted(self.key)} is not a Secret key")
        return self

    def __str__(self) -> str:
        return f"{self.name}/{self.key}"


class SecretPassword(Model):
    """Calico's form: the password is one key of a Secret, never in the datastore itself."""

    secret_key_ref: SecretKeyRef = Field(alias="secretKeyRef")


def password_problem(password: str) -> str | None:
    """Why ``password`` cannot be a TCP-MD5 key, or None."""
    if len(password.encode()) > PASSWORD_LIMIT or "\n" in password:
        return f"at most {PASSWORD_LIMIT} bytes, no newlines (TCP-MD5 key)"
    return None


Password = str | SecretPassword  # a plain string is felid's older form; Calico's is the secretKeyRef


def _community(value: str) -> str:
    """A standard community ``aa:nn`` (16 bits each) or a large one ``aa:nn:mm`` (32 bits each)."""
    parts = value.split(":")
    limit = {2: 0xFFFF, 3: 0xFFFFFFFF}.get(len(parts))
    if limit is None or not all(p.isdigit() and len(p) <= 10 and int(p) <= limit for p in parts):
        raise ValueError(
            f"{quoted(value)} is not a community: aa:nn (each 0..65535) or a large one aa:nn:mm "
            "(each 0..4294967295)"
        )
    return value


CommunityValue = Annotated[str, AfterValidator(_community)]


class Community(Model):
    name: Name
    value: CommunityValue


class PrefixAdvertisement(Model):
    """Communities attached to ``cidr`` and every prefix inside it, as announced."""

    cidr: IPv4Network
    communities: list[str] = Field(min_length=1)


class ServiceCIDR(Model):
    cidr: IPv4Network


class BGPConfigurationSpec(Model):
    log_severity_screen: Literal["Debug", "Info", "Warning", "Error", "Fatal"] = "Info"
    node_to_node_mesh_enabled: bool | None = None
    as_number: ASNumber | None = None
    listen_port: Port | None = None
    node_mesh_password: Password | None = None
    node_mesh_max_restart_time: Duration | None = None
    # Announced by every node, as Calico does when it has no Kubernetes services to look at.
    service_cluster_ips: list[ServiceCIDR] = Field(default_factory=list, alias="serviceClusterIPs")
    service_external_ips: list[ServiceCIDR] = Field(default_factory=list, alias="serviceExternalIPs")
    service_load_balancer_ips: list[ServiceCIDR] = Field(default_factory=list, alias="serviceLoadBalancerIPs")
    communities: list[Community] = Field(default_factory=list)
    prefix_advertisements: list[PrefixAdvertisement] = Field(default_factory=list)

    @model_validator(mode="after")
    def _communities_known(self) -> BGPConfigurationSpec:
        names = [c.name for c in self.communities]
        if len(set(names)) != len(names):
            raise ValueError("communities: each name once")
        for i, advert in enumerate(self.prefix_advertisements):
            for text in advert.communities:
                if text not in names:
                    try:
                        _community(text)
                    except ValueError:
                        raise ValueError(
                            f"prefixAdvertisements.{i}.communities: {quoted(text)} is neither a community "
                            "named in communities nor a community value (aa:nn or aa:nn:mm)"
                        ) from None
        return self

    def community_values(self, advert: PrefixAdvertisement) -> tuple[str, ...]:
        """The values ``advert`` names: by a ``communities`` name, or given as themselves."""
        named = {c.name: c.value for c in self.communities}
        return tuple(named.get(text, text) for text in advert.communities)

    @property
    def service_cidrs(self) -> list[str]:
        blocks = self.service_cluster_ips + self.service_external_ips + self.service_load_balancer_ips
        return [b.cidr for b in blocks]


# Cluster-wide by nature: only the "default" configuration may set them.
_DEFAULT_ONLY = (
    "service_cluster_ips",
    "service_external_ips",
    "service_load_balancer_ips",
    "communities",
    "prefix_advertisements",
)


class BGPConfiguration(Resource):
    """Named ``default`` (cluster-wide) or ``node.<nodename>`` (one node's overrides)."""

    KIND: ClassVar[str] = "BGPConfiguration"
    PLURAL: ClassVar[str] = "bgpconfigurations"

    kind: Literal["BGPConfiguration"] = "BGPConfiguration"
    spec: BGPConfigurationSpec = Field(default_factory=BGPConfigurationSpec)

    @model_validator(mode="after")
    def _scoped(self) -> BGPConfiguration:
        per_node = _PER_NODE.match(self.name)
        if self.name != "default" and per_node is None:
            raise ValueError(f"metadata.name: {quoted(self.name)} must be 'default' or 'node.<nodename>'")
        if per_node is not None and self.spec.node_to_node_mesh_enabled is not None:
            raise ValueError("spec.nodeToNodeMeshEnabled: may only be set in the 'default' configuration")
        if per_node is not None:
            for name in _DEFAULT_ONLY:
                if getattr(self.spec, name):
                    alias = BGPConfigurationSpec.model_fields[name].alias or name
                    raise ValueError(f"spec.{alias}: may only be set in the 'default' configuration")
        return self


class BGPPeerSpec(Model):
    node: Name | None = None
    node_selector: SelectorText | None = None
    peer_ip: PeerIP | None = Field(default=None, alias="peerIP")
    peer_selector: SelectorText | None = None
    as_number: ASNumber | None = None
    password: Password | None = None
    keepalive_time: Duration | None = None
    hold_time: Duration | None = None
    max_restart_time: Duration | None = None
    local_as_number: ASNumber | None = Field(default=None, alias="localASNumber")
    # Next hop of routes this node passes on from other peers: Auto (itself to eBGP peers, kept to
    # iBGP ones), Self, or Keep; keepOriginalNextHop: true is Calico's older spelling of Keep.
    keep_original_next_hop: bool = False
    next_hop_mode: Literal["Auto", "Self", "Keep"] | None = None
    source_address: Literal["UseNodeIP", "None"] = "UseNodeIP"
    num_allowed_local_as_numbers: int | None = Field(
        default=None, ge=0, le=10, alias="numAllowedLocalASNumbers"
    )
    # GTSM: the peer is at most this many hops away.
    ttl_security: int | None = Field(default=None, ge=0, le=255)
    filters: list[Name] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> BGPPeerSpec:
        if self.node is not None and self.node_selector is not None:
            raise ValueError("nodeSelector: cannot be combined with node")
        if self.peer_ip is not None and self.peer_selector is not None:
            raise ValueError("peerSelector: cannot be combined with peerIP")
        if self.peer_ip is None and self.peer_selector is None:
            raise ValueError("peerIP: one of peerIP or peerSelector is required")
        if self.peer_ip is not None and self.as_number is None:
            raise ValueError("asNumber: required with peerIP")
        if self.keep_original_next_hop and self.next_hop_mode not in (None, "Keep"):
            raise ValueError(f"nextHopMode: {self.next_hop_mode} contradicts keepOriginalNextHop: true")
        if len(set(self.filters)) != len(self.filters):
            raise ValueError("filters: each BGPFilter once")
        problem = password_problem(self.password) if isinstance(self.password, str) else None
        if problem is not None:
            raise ValueError(f"password: {problem}")
        return self

    @property
    def next_hop(self) -> Literal["Auto", "Self", "Keep"]:
        return "Keep" if self.keep_original_next_hop else self.next_hop_mode or "Auto"

    @property
    def peer_address(self) -> str | None:
        return None if self.peer_ip is None else self.peer_ip.rpartition(":")[0] or self.peer_ip

    @property
    def peer_port(self) -> int:
        if self.peer_ip is None or ":" not in self.peer_ip:
            return 179
        return int(self.peer_ip.rpartition(":")[2])


class BGPPeer(Resource):
    KIND: ClassVar[str] = "BGPPeer"
    PLURAL: ClassVar[str] = "bgppeers"

    kind: Literal["BGPPeer"] = "BGPPeer"
    spec: BGPPeerSpec
