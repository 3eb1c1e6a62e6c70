"""IPReservation: addresses and CIDRs inside the pools that IPAM never hands out (a gateway, a
range another system manages), as Calico's."""

from __future__ import annotations

import ipaddress
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from datastore.errors import quoted
from datastore.models.base import Model, Resource


class IPReservationSpec(Model):
    reserved_cidrs: list[str] = Field(default_factory=list, alias="reservedCIDRs")

    @field_validator("reserved_cidrs")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        """An address stands for its /32; a CIDR must not have host bits set."""
        out = []
        for value in values:
            try:
                network = ipaddress.ip_network(value, strict=True)
            except ValueError as exc:
                raise ValueError(
                    f"{quoted(value)} is not an IP address or a CIDR without host bits ({exc})"
                ) from None
            if network.version != 4:
                raise ValueError(f"{quoted(value)}: IPv6 is not supported yet")
            out.append(str(network))
        return out


class IPReservation(Resource):
    KIND: ClassVar[str] = "IPReservation"
    PLURAL: ClassVar[str] = "ipreservations"

    kind: Literal["IPReservation"] = "IPReservation"
    spec: IPReservationSpec = Field(default_factory=IPReservationSpec)

    def networks(self) -> list[ipaddress.IPv4Network]:
        return [ipaddress.IPv4Network(c) for c in self.spec.reserved_cidrs]


def reserved(reservations: list[IPReservation], address: str) -> bool:
    """Whether any of ``reservations`` keeps ``address`` from being handed out."""
    ip = ipaddress.IPv4Address(address)
    return any(ip in network for r in reservations for network in r.networks())
