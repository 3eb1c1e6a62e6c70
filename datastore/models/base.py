"""Shared pieces of every projectcalico.org/v3 resource: metadata and field types."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

from datastore.errors import InvalidName, quoted
from datastore.selector import Selector, SelectorError

API_VERSION: Final = "projectcalico.org/v3"

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
MAX_ASN = 2**32 - 1


class Model(BaseModel):
    """Frozen, strict-about-unknown-fields, camelCase on the wire."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        validate_default=True,
    )


def _subdomain(value: str) -> str:
    if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        raise ValueError(
            f"{quoted(value)} is not a valid name: use lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit (RFC 1123), at most 253 characters"
        )
    return value


def _label(value: str) -> str:
    if len(value) > 63 or not _DNS_LABEL.match(value):
        raise ValueError(
            f"{quoted(value)} is not a valid namespace: use lower-case letters, digits and '-', "
            "at most 63 characters (RFC 1123 label)"
        )
    return value


def _container_id(value: str) -> str:
    if not _CONTAINER_ID.match(value):
        raise ValueError(
            f"{quoted(value)} is not a container ID: a letter or digit, then letters, digits, "
            "'_', '.' or '-' (the CNI spec's rule)"
        )
    return value


def valid_name(value: str, what: str) -> str:
    """An RFC 1123 subdomain, as a node, pod or resource name must be; else InvalidName naming ``what``."""
    return _checked(_subdomain, value, what)


def valid_namespace(value: str, what: str) -> str:
    return _checked(_label, value, what)


def valid_container_id(value: str, what: str) -> str:
    return _checked(_container_id, value, what)


def _checked(check: Callable[[str], str], value: str, what: str) -> str:
    try:
        return check(value)
    except ValueError as exc:
        raise InvalidName(what, str(exc)) from None


_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


def label_problem(key: str, value: str) -> str | None:
    """Why ``key: value`` is not a label as Kubernetes (and Calico) allow them, or None."""
    prefix, slash, name = key.rpartition("/")
    if (slash and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix))) or not _LABEL_NAME.match(name):
        return (
            f"invalid label key {quoted(key)}: [prefix/]name, the name at most 63 letters, digits, "
            "'-', '_' or '.' starting and ending with a letter or digit, the prefix a DNS subdomain"
        )
    if value and not _LABEL_NAME.match(value):
        return (
            f"invalid label value {quoted(value)}: at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit (or empty)"
        )
    return None


def _ipv4(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError(f"{quoted(value)} is not an IPv4 address") from None


def _ipv4_interface(value: str) -> str:
    """An address with its subnet prefix, as Node.spec.bgp.ipv4Address wants."""
    try:
        return str(ipaddress.IPv4Interface(value))
    except ValueError:
        raise ValueError(
            f"{quoted(value)} is not an IPv4 address in CIDR form (e.g. 198.51.100.5/24)"
        ) from None


def _ipv4_network(value: str) -> str:
    """A strictly masked network: host bits set is an error, not silently cleared."""
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError:
        raise ValueError(f"{quoted(value)} is not a CIDR") from None
    if "/" not in value:
        raise ValueError(f"{quoted(value)} has no prefix length (e.g. {value[:20]}/24)")
    if iface.version != 4:
        raise ValueError(f"{quoted(value)}: only IPv4 is supported")
    if iface.ip != iface.network.network_address:
        raise ValueError(f"{quoted(value)} has host bits set; did you mean {iface.network}?")
    return str(iface.network)


def _mac(value: str) -> str:
    if not _MAC.match(value):
        raise ValueError(f"{quoted(value)} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    return value.lower()


def _selector(value: str) -> str:
    try:
        Selector.parse(value)
    except SelectorError as exc:
        raise ValueError(f"invalid selector {quoted(value)}: {exc}") from None
    return value


def _asn(value: Any) -> int:
    """An AS number, plain (64512) or asdot (1.10)."""
    if isinstance(value, bool):
        raise ValueError("AS number must be a number")
    if isinstance(value, str) and "." in value:
        high, _, low = value.partition(".")
        # Digits checked (and bounded) before int(): a huge digit string would be slow to convert.
        if not all(part.isdigit() and len(part) <= 5 and int(part) <= 65535 for part in (high, low)):
            raise ValueError(f"{quoted(value)} is not an AS number")
        return int(high) * 65536 + int(low)
    if isinstance(value, float) and not value.is_integer():  # inf and nan too
        raise ValueError(f"{quoted(value)} is not an AS number")
    if isinstance(value, str) and not (value.isdigit() and len(value) <= 10):
        raise ValueError(f"{quoted(value)} is not an AS number")
    if not isinstance(value, int | float | str):
        raise ValueError(f"{quoted(value)} is not an AS number")
    asn = int(value)
    if not 1 <= asn <= MAX_ASN:
        raise ValueError(f"AS number {quoted(asn)} is outside 1..{MAX_ASN}")
    return asn


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration: ``90s``, ``1m30s``, ``2h``, ``500ms``."""
    if not text or _DURATION.sub("", text) != "":
        raise ValueError(f"{quoted(text)} is not a duration (e.g. 90s, 1m30s, 500ms)")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION.findall(text))


def _duration(value: str) -> str:
    parse_duration(value)
    return value


Name = Annotated[str, AfterValidator(_subdomain)]
NamespaceName = Annotated[str, AfterValidator(_label)]
IPv4 = Annotated[str, AfterValidator(_ipv4)]
IPv4Interface = Annotated[str, AfterValidator(_ipv4_interface)]
IPv4Network = Annotated[str, AfterValidator(_ipv4_network)]
MAC = Annotated[str, AfterValidator(_mac)]
SelectorText = Annotated[str, AfterValidator(_selector)]
ASNumber = Annotated[int, BeforeValidator(_asn)]
Duration = Annotated[str, AfterValidator(_duration)]
Port = Annotated[int, Field(ge=1, le=65535)]
EncapMode = Literal["Never", "Always", "CrossSubnet"]


class ObjectMeta(Model):
    name: Name
    namespace: NamespaceName | None = None
    resource_version: str | None = None
    uid: str | None = None
    creation_timestamp: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


def default_namespace(cls: type[Resource], data: Any) -> Any:
    """calicoctl's rule for a namespaced kind (a ``mode="before"`` model validator): a document
    without a namespace is in "default"."""
    meta = data.get("metadata") if isinstance(data, dict) else None
    if isinstance(meta, dict) and meta.get("namespace") is None:
        return {**data, "metadata": {**meta, "namespace": "default"}}
    return data


class Resource(Model):
    """Base of every kind. Subclasses set ``kind`` and ``spec``."""

    KIND: ClassVar[str]
    PLURAL: ClassVar[str]
    NAMESPACED: ClassVar[bool] = False

    api_version: Literal["projectcalico.org/v3"] = Field(default=API_VERSION, alias="apiVersion")
    metadata: ObjectMeta

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str | None:
        return self.metadata.namespace

    def check_update(self, old: Resource) -> None:
        """Raise ValueError naming the field if ``old`` may not become ``self``."""

    def to_dict(self) -> dict[str, Any]:
        """The v3 document, in the order operators read it: apiVersion, kind, metadata, spec."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        meta = {k: v for k, v in data.pop("metadata").items() if v != {}}
        return {"apiVersion": data.pop("apiVersion"), "kind": data.pop("kind"), "metadata": meta, **data}
