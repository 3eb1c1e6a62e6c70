"""BGPFilter: which routes a BGPPeer's session takes in and gives out, as Calico orders it.

A session's filters (its BGPPeer's ``filters``, in that order) are read rule by rule; the first
rule that matches a route decides (Accept or Reject). A route no rule matches takes the normal
path: felid's own routes are announced, learned ones are taken.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from datastore.errors import quoted
from datastore.models.base import IPv4Network, Model, Resource

MatchOperator = Literal["Equal", "NotEqual", "In", "NotIn"]


class PrefixLength(Model):
    min: int | None = Field(default=None, ge=0, le=32)
    max: int | None = Field(default=None, ge=0, le=32)


class BGPFilterRule(Model):
    cidr: IPv4Network | None = None
    prefix_length: PrefixLength | None = None
    source: Literal["RemotePeers"] | None = None
    interface: str | None = None
    match_operator: MatchOperator | None = None
    action: Literal["Accept", "Reject"]

    @model_validator(mode="after")
    def _consistent(self) -> BGPFilterRule:
        if (self.cidr is None) != (self.match_operator is None):
            raise ValueError("matchOperator: cidr and matchOperator go together")
        if self.prefix_length is not None and self.match_operator not in ("In", "NotIn"):
            raise ValueError("prefixLength: only with a cidr and matchOperator In or NotIn")
        length = self.prefix_length
        if (
            length is not None
            and length.min is not None
            and length.max is not None
            and length.min > length.max
        ):
            raise ValueError(f"prefixLength: min {length.min} is above max {length.max}")
        if self.interface is not None:
            raise ValueError(
                f"interface: {quoted(self.interface)} is not supported yet: felid-bgp announces IPAM "
                "blocks and addresses, never an interface's routes"
            )
        return self

    def matches(self, prefix: str, remote: bool) -> bool:
        """Whether this rule speaks for ``prefix``; ``remote``: it was learned from a BGP peer."""
        if self.source == "RemotePeers" and not remote:
            return False
        if self.cidr is None:
            return True
        net, cidr = ipaddress.IPv4Network(prefix), ipaddress.IPv4Network(self.cidr)
        if self.match_operator in ("Equal", "NotEqual"):
            return (net == cidr) == (self.match_operator == "Equal")
        inside = net.subnet_of(cidr) and self._length_fits(net.prefixlen, cidr.prefixlen)
        return inside == (self.match_operator == "In")

    def _length_fits(self, length: int, cidr_length: int) -> bool:
        bounds = self.prefix_length
        low = bounds.min if bounds and bounds.min is not None else cidr_length
        high = bounds.max if bounds and bounds.max is not None else 32
        return low <= length <= high


class BGPFilterSpec(Model):
    export_v4: list[BGPFilterRule] = Field(default_factory=list, alias="exportV4")
    import_v4: list[BGPFilterRule] = Field(default_factory=list, alias="importV4")
    export_v6: list[dict[str, object]] = Field(default_factory=list, alias="exportV6")
    import_v6: list[dict[str, object]] = Field(default_factory=list, alias="importV6")

    @model_validator(mode="after")
    def _v4_only(self) -> BGPFilterSpec:
        for name, rules in (("exportV6", self.export_v6), ("importV6", self.import_v6)):
            if rules:
                raise ValueError(f"{name}: IPv6 is not supported yet")
        return self


class BGPFilter(Resource):
    KIND: ClassVar[str] = "BGPFilter"
    PLURAL: ClassVar[str] = "bgpfilters"

    kind: Literal["BGPFilter"] = "BGPFilter"
    spec: BGPFilterSpec = Field(default_factory=BGPFilterSpec)


def decide(rules: Sequence[BGPFilterRule], prefix: str, remote: bool) -> bool | None:
    """True (Accept), False (Reject), or None when no rule speaks for ``prefix``."""
    for rule in rules:
        if rule.matches(prefix, remote):
            return rule.action == "Accept"
    return None
