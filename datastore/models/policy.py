"""Calico's policy resources: NetworkPolicy, GlobalNetworkPolicy, Profile, HostEndpoint, and the
rules they share, validated as Calico validates them.

Facts about a policy live here: which directions it applies to when ``types`` is omitted
(``PolicySpec.directions``), where an unordered policy sorts (``PolicySpec.sort_key``), and
the failsafe ports a HostEndpoint never closes (``FAILSAFE_INBOUND`` / ``FAILSAFE_OUTBOUND``).
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Annotated, Any, ClassVar, Literal, TypeGuard

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from datastore.errors import quoted
from datastore.models.base import IPv4, Model, Name, Port, Resource, SelectorText, default_namespace

Action = Literal["Allow", "Deny", "Log", "Pass"]
Direction = Literal["Ingress", "Egress"]

# Calico's protocol names, as it spells them; a document may use any case, or a number 1-255.
PROTOCOL_NUMBERS = {"TCP": 6, "UDP": 17, "ICMP": 1, "ICMPv6": 58, "SCTP": 132, "UDPLite": 136}
_BY_LOWER = {name.lower(): name for name in PROTOCOL_NUMBERS}
PORTED = frozenset({"TCP", "UDP", "SCTP"})  # the protocols a rule may give ports for
_PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?$")  # IANA service name


def _protocol(value: Any) -> str | int:
    if isinstance(value, bool):
        raise ValueError(f"{quoted(value)} is not a protocol")
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        number = int(value)
        if not 1 <= number <= 255:
            raise ValueError(f"protocol {number} is outside 1..255")
        return number
    if isinstance(value, str) and value.lower() in _BY_LOWER:
        return _BY_LOWER[value.lower()]
    raise ValueError(f"{quoted(value)} is not a protocol: one of {', '.join(PROTOCOL_NUMBERS)}, or 1..255")


def _port(value: Any) -> int | str:
    """A port (0-65535), a range ``min:max``, or a named port of the endpoint's ``ports``."""
    if isinstance(value, bool):
        raise ValueError(f"{quoted(value)} is not a port")
    if isinstance(value, int):
        if not 0 <= value <= 65535:
            raise ValueError(f"port {value} is outside 0..65535")
        return value
    if not isinstance(value, str):
        raise ValueError(f"{quoted(value)} is not a port, a range or a port name")
    low, sep, high = value.partition(":")
    if sep:
        if not (low.isdigit() and high.isdigit() and len(low) <= 5 and len(high) <= 5):
            raise ValueError(f"{quoted(value)} is not a port range (min:max)")
        if not int(low) <= int(high) <= 65535:
            raise ValueError(f"{quoted(value)}: a range runs from its lower port to its higher, in 0..65535")
        return value
    if value.isdigit():
        return _port(int(value))
    if len(value) > 15 or not _PORT_NAME.match(value):
        raise ValueError(
            f"{quoted(value)} is not a port name: lower-case letters, digits and '-', "
            "at most 15, one letter at least"
        )
    return value


Protocol = Annotated[str | int, BeforeValidator(_protocol)]
PortSpec = Annotated[int | str, BeforeValidator(_port)]


def is_port_name(port: int | str) -> TypeGuard[str]:
    """A validated port entry that names a port (``http``), not a number or a ``min:max`` range."""
    return isinstance(port, str) and ":" not in port


def protocol_number(protocol: str | int) -> int:
    return protocol if isinstance(protocol, int) else PROTOCOL_NUMBERS[protocol]


def _cidr(value: str) -> str:
    """A network, host bits allowed as Calico allows them (``10.0.0.1/24`` is ``10.0.0.0/24``)."""
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{quoted(value)} is not a CIDR") from None
    if network.version != 4:
        raise ValueError(f"{quoted(value)}: only IPv4 is supported")
    return str(network)


Net = Annotated[str, AfterValidator(_cidr)]


class ICMPFields(Model):
    type: int | None = Field(default=None, ge=0, le=254)
    code: int | None = Field(default=None, ge=0, le=255)

    @model_validator(mode="after")
    def _code_needs_type(self) -> ICMPFields:
        if self.code is not None and self.type is None:
            raise ValueError("code: an ICMP code needs its type")
        return self


class EntityRule(Model):
    """One side of a rule: which addresses (nets, selected endpoints) and ports it matches."""

    nets: list[Net] = Field(default_factory=list)
    not_nets: list[Net] = Field(default_factory=list)
    selector: SelectorText | None = None
    not_selector: SelectorText | None = None
    namespace_selector: SelectorText | None = None
    ports: list[PortSpec] = Field(default_factory=list)
    not_ports: list[PortSpec] = Field(default_factory=list)

    @property
    def has_ports(self) -> bool:
        return bool(self.ports or self.not_ports)


class Rule(Model):
    action: Action
    protocol: Protocol | None = None
    not_protocol: Protocol | None = None
    icmp: ICMPFields | None = None
    not_icmp: ICMPFields | None = Field(default=None, alias="notICMP")
    ip_version: Literal[4, 6] | None = None
    source: EntityRule = Field(default_factory=EntityRule)
    destination: EntityRule = Field(default_factory=EntityRule)
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _calico_constraints(self) -> Rule:
        if self.ip_version == 6:
            raise ValueError("ipVersion: only IPv4 is supported")
        if (self.source.has_ports or self.destination.has_ports) and self.protocol not in PORTED:
            side = "source" if self.source.has_ports else "destination"
            got = quoted(self.protocol)
            raise ValueError(f"{side}.ports: ports need protocol TCP, UDP or SCTP (got {got})")
        if (self.icmp or self.not_icmp) and self.protocol not in ("ICMP", "ICMPv6", 1, 58):
            field = "icmp" if self.icmp else "notICMP"
            raise ValueError(f"{field}: ICMP fields need protocol ICMP (got {quoted(self.protocol)})")
        return self


def _order(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{quoted(value)} is not an order (a number)")
    try:
        order = float(value)
    except ValueError:
        raise ValueError(f"{quoted(value)} is not an order (a number)") from None
    if not math.isfinite(order):
        raise ValueError(f"{quoted(value)} is not a finite order")
    return order


Order = Annotated[float | None, BeforeValidator(_order)]


class PolicySpec(Model):
    """What NetworkPolicy and GlobalNetworkPolicy share."""

    order: Order = None
    selector: SelectorText = "all()"
    types: list[Direction] | None = None
    ingress: list[Rule] = Field(default_factory=list)
    egress: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _types_and_rules_agree(self) -> PolicySpec:
        if self.types is not None:
            if len(set(self.types)) != len(self.types):
                raise ValueError("types: each of Ingress and Egress at most once")
            if self.ingress and "Ingress" not in self.types:
                raise ValueError("ingress: rules given, but types does not include Ingress")
            if self.egress and "Egress" not in self.types:
                raise ValueError("egress: rules given, but types does not include Egress")
        return self

    @property
    def directions(self) -> frozenset[Direction]:
        """``types``, or Calico's default when it is omitted: Ingress, plus Egress if there are egress
        rules (and only Egress if there are egress rules and no ingress rules)."""
        if self.types is not None:
            return frozenset(self.types)
        if self.egress and not self.ingress:
            return frozenset({"Egress"})
        if self.egress:
            return frozenset({"Ingress", "Egress"})
        return frozenset({"Ingress"})

    def sort_key(self, name: str) -> tuple[bool, float, str]:
        """Policies apply in order; one without an order comes after every ordered one; ties by name."""
        return (self.order is None, self.order or 0.0, name)


class NetworkPolicy(Resource):
    """Applies to the endpoints of its own namespace that its selector matches."""

    KIND: ClassVar[str] = "NetworkPolicy"
    PLURAL: ClassVar[str] = "networkpolicies"
    NAMESPACED: ClassVar[bool] = True

    kind: Literal["NetworkPolicy"] = "NetworkPolicy"
    spec: PolicySpec = Field(default_factory=PolicySpec)

    _default_namespace = model_validator(mode="before")(default_namespace)


class GlobalNetworkPolicySpec(PolicySpec):
    namespace_selector: SelectorText | None = None
    apply_on_forward: bool = False
    pre_dnat: bool = Field(default=False, alias="preDNAT")
    do_not_track: bool = False

    @model_validator(mode="after")
    def _calico_constraints(self) -> GlobalNetworkPolicySpec:
        if self.pre_dnat and self.do_not_track:
            raise ValueError("preDNAT: cannot be combined with doNotTrack")
        if (self.pre_dnat or self.do_not_track) and not self.apply_on_forward:
            which = "preDNAT" if self.pre_dnat else "doNotTrack"
            raise ValueError(f"applyOnForward: must be true with {which}")
        if self.pre_dnat and (self.egress or (self.types is not None and "Egress" in self.types)):
            raise ValueError("egress: a preDNAT policy has ingress rules only")
        return self


class GlobalNetworkPolicy(Resource):
    KIND: ClassVar[str] = "GlobalNetworkPolicy"
    PLURAL: ClassVar[str] = "globalnetworkpolicies"

    kind: Literal["GlobalNetworkPolicy"] = "GlobalNetworkPolicy"
    spec: GlobalNetworkPolicySpec = Field(default_factory=GlobalNetworkPolicySpec)


class ProfileSpec(Model):
    ingress: list[Rule] = Field(default_factory=list)
    egress: list[Rule] = Field(default_factory=list)
    labels_to_apply: dict[str, str] = Field(default_factory=dict)


class Profile(Resource):
    """Rules and labels that endpoints name in their ``profiles``; they decide when no policy does."""

    KIND: ClassVar[str] = "Profile"
    PLURAL: ClassVar[str] = "profiles"
    DEFAULT_ALLOW: ClassVar[str] = "projectcalico-default-allow"

    kind: Literal["Profile"] = "Profile"
    spec: ProfileSpec = Field(default_factory=ProfileSpec)

    @classmethod
    def default_allow(cls) -> Profile:
        """What felid-node creates, as Calico does: every workload's profile unless told otherwise."""
        allow = [Rule(action="Allow")]
        return cls(metadata={"name": cls.DEFAULT_ALLOW}, spec=ProfileSpec(ingress=allow, egress=allow))


class EndpointPort(Model):
    """A named port of an endpoint, which rules may name instead of a number."""

    name: PortSpec
    protocol: Protocol
    port: int = Field(ge=1, le=65535)

    @model_validator(mode="after")
    def _named(self) -> EndpointPort:
        if not is_port_name(self.name):
            raise ValueError(f"name: {quoted(self.name)} is not a port name")
        if self.protocol not in PORTED:
            raise ValueError(f"protocol: a named port is TCP, UDP or SCTP (got {quoted(self.protocol)})")
        return self


class HostEndpointSpec(Model):
    node: Name
    interface_name: str | None = None  # "*": every interface of the host
    expected_i_ps: list[IPv4] = Field(default_factory=list, alias="expectedIPs")
    profiles: list[str] = Field(default_factory=list)
    ports: list[EndpointPort] = Field(default_factory=list)

    @model_validator(mode="after")
    def _identified(self) -> HostEndpointSpec:
        if self.interface_name is None and not self.expected_i_ps:
            raise ValueError("interfaceName: one of interfaceName or expectedIPs is required")
        name = self.interface_name
        if name is not None and name != "*" and (not 1 <= len(name) <= 15 or "/" in name or " " in name):
            raise ValueError(f"interfaceName: {quoted(name)} is not a Linux interface name (or '*')")
        return self


class HostEndpoint(Resource):
    KIND: ClassVar[str] = "HostEndpoint"
    PLURAL: ClassVar[str] = "hostendpoints"

    kind: Literal["HostEndpoint"] = "HostEndpoint"
    spec: HostEndpointSpec


class ProtoPort(Model):
    """One failsafe port (FelixConfiguration ``failsafeInboundHostPorts``): a protocol, a port and
    optionally the net it is open to; in the environment as Calico spells it, ``tcp:22`` or
    ``tcp:198.51.100.0/24:22``."""

    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    port: Port
    net: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        if isinstance(value, str):
            parts = value.strip().split(":")
            if len(parts) not in (2, 3) or not parts[-1].isdigit():
                raise ValueError(f"{quoted(value)} is not <protocol>:[<net>:]<port> (e.g. tcp:22)")
            value = {"protocol": parts[0], "port": int(parts[-1])} | (
                {"net": parts[1]} if len(parts) == 3 else {}
            )
        if isinstance(value, dict) and isinstance(value.get("protocol"), str):
            value = {**value, "protocol": value["protocol"].upper()}
        return value

    def __str__(self) -> str:
        """As the environment spells it."""
        net = f"{self.net}:" if self.net else ""
        return f"{self.protocol.lower()}:{net}{self.port}"

    @model_validator(mode="after")
    def _net(self) -> ProtoPort:
        if self.net is not None:
            try:
                ipaddress.IPv4Network(self.net, strict=False)
            except ValueError:
                raise ValueError(f"net: {quoted(self.net)} is not an IPv4 network") from None
        return self


# Calico's failsafe ports (FelixConfiguration failsafeInboundHostPorts / failsafeOutboundHostPorts
# defaults): a HostEndpoint's policy never closes them, so ssh, BGP, etcd, typha and the API stay up.
_CLUSTER_TCP = (179, 2379, 2380, 5473, 6443, 6666, 6667)  # BGP, etcd, typha, the API, etcd's old ports
FAILSAFE_INBOUND: tuple[ProtoPort, ...] = tuple(
    ProtoPort(protocol=proto, port=port)
    for proto, port in (("TCP", 22), ("UDP", 68), *(("TCP", p) for p in _CLUSTER_TCP))
)
FAILSAFE_OUTBOUND: tuple[ProtoPort, ...] = tuple(
    ProtoPort(protocol=proto, port=port)
    for proto, port in (
        ("UDP", 53),
        ("UDP", 67),
        ("TCP", 53),
        ("TCP", 443),
        *(("TCP", p) for p in _CLUSTER_TCP),
    )
)
