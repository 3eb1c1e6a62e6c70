"""IPPool: a CIDR that workload addresses come from, cut into blocks."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from datastore.models.base import EncapMode, IPv4Network, Model, Resource, SelectorText

DEFAULT_BLOCK_SIZE = 26


class IPPoolSpec(Model):
    cidr: IPv4Network
    block_size: int = Field(default=DEFAULT_BLOCK_SIZE, ge=20, le=32)
    ipip_mode: EncapMode = Field(default="Never", alias="ipipMode")
    vxlan_mode: EncapMode = Field(default="Never", alias="vxlanMode")
    nat_outgoing: bool = False
    disabled: bool = False
    node_selector: SelectorText = "all()"
    disable_bgp_export: bool = Field(default=False, alias="disableBGPExport")

    @model_validator(mode="after")
    def _consistent(self) -> IPPoolSpec:
        if self.ipip_mode != "Never" and self.vxlan_mode != "Never":
            raise ValueError(
                f"vxlanMode: {self.vxlan_mode} cannot be combined with ipipMode {self.ipip_mode} "
                "(at most one encapsulation per pool)"
            )
        prefix = ipaddress.IPv4Network(self.cidr).prefixlen
        if self.block_size < prefix:
            raise ValueError(f"blockSize: /{self.block_size} blocks do not fit in the pool {self.cidr}")
        return self


class IPPool(Resource):
    KIND: ClassVar[str] = "IPPool"
    PLURAL: ClassVar[str] = "ippools"

    kind: Literal["IPPool"] = "IPPool"
    spec: IPPoolSpec

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.spec.cidr)

    def check_update(self, old: Resource) -> None:
        assert isinstance(old, IPPool)
        if old.spec.cidr != self.spec.cidr:
            raise ValueError(f"spec.cidr: is immutable (was {old.spec.cidr}); create a new pool instead")
        if old.spec.block_size != self.spec.block_size:
            raise ValueError(f"spec.blockSize: is immutable (was {old.spec.block_size})")


def pool_containing(pools: Iterable[IPPool], cidr: str) -> IPPool | None:
    """The pool that ``cidr`` (a block, an address/32) lies in, if any."""
    net = ipaddress.IPv4Network(cidr)
    return next((p for p in pools if net.subnet_of(p.network)), None)


def overlapping_pool(pool: IPPool, others: Iterable[IPPool]) -> IPPool | None:
    """The first enabled pool among ``others`` (other names) whose CIDR overlaps ``pool``."""
    if pool.spec.disabled:
        return None
    for other in others:
        if other.name != pool.name and not other.spec.disabled and other.network.overlaps(pool.network):
            return other
    return None
