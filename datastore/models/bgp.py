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


class BGPConfigurationSpec(Model):
    log_severity_screen: Literal["Debug", "Info", "Warning", "Error", "Fatal"] = "Info"
    node_to_node_mesh_enabled: bool | None = None
    as_number: ASNumber | None = None
    listen_port: Port | None = None
    node_mesh_password: Password | None = None
    node_mesh_max_restart_time: Duration | None = None


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
        problem = password_problem(self.password) if isinstance(self.password, str) else None
        if problem is not None:
            raise ValueError(f"password: {problem}")
        return self

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
