"""IPPool: a CIDR that workload addresses come from, cut into blocks, and how it is encapsulated."""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from datastore.models.base import EncapMode, IPv4Network, Model, Resource, SelectorText

DEFAULT_BLOCK_SIZE = 26


class Encapsulation(enum.StrEnum):
    """How traffic between hosts to a pool's addresses travels, and what it costs of the MTU."""

    NONE = "none"
    IPIP = "ipip"
    VXLAN = "vxlan"

    @property
    def overhead(self) -> int:
        """Bytes of outer headers: IPv4 (20) for IPIP; IPv4, UDP, VXLAN and Ethernet (50) for VXLAN."""
        return {"none": 0, "ipip": 20, "vxlan": 50}[self.value]


Use = Literal["Workload", "Tunnel", "LoadBalancer"]
AssignmentMode = Literal["Automatic", "Manual"]
DEFAULT_USES: tuple[Use, ...] = ("Workload", "Tunnel")


class IPPoolSpec(Model):
    cidr: IPv4Network
    block_size: int = Field(default=DEFAULT_BLOCK_SIZE, ge=20, le=32)
    ipip_mode: EncapMode = Field(default="Never", alias="ipipMode")
    vxlan_mode: EncapMode = Field(default="Never", alias="vxlanMode")
    nat_outgoing: bool = False
    disabled: bool = False
    node_selector: SelectorText = "all()"
    disable_bgp_export: bool = Field(default=False, alias="disableBGPExport")
    # What IPAM may take its addresses for, and whether unasked: a Manual pool serves only a
    # request that names it (a CNI config's ipv4_pools), never an automatic one.
    allowed_uses: list[Use] = Field(default_factory=lambda: list(DEFAULT_USES))
    assignment_mode: AssignmentMode = "Automatic"

    @model_validator(mode="after")
    def _consistent(self) -> IPPoolSpec:
        if self.ipip_mode != "Never" and self.vxlan_mode != "Never":
            raise ValueError(
                f"vxlanMode: {self.vxlan_mode} cannot be combined with ipipMode {self.ipip_mode} "
                "(at most one encapsulation per pool)"
            )
        if not self.allowed_uses or len(set(self.allowed_uses)) != len(self.allowed_uses):
            raise ValueError("allowedUses: one or more of Workload, Tunnel, LoadBalancer, each once")
        if "LoadBalancer" in self.allowed_uses:
            raise ValueError(
                "allowedUses: LoadBalancer is not supported yet (felid has no IPAM for service addresses)"
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

    @property
    def enabled(self) -> bool:
        return not self.spec.disabled

    @property
    def encapsulation(self) -> Encapsulation:
        """The pool's tunnel (``Always`` or ``CrossSubnet``); at most one, by validation."""
        if self.spec.vxlan_mode != "Never":
            return Encapsulation.VXLAN
        if self.spec.ipip_mode != "Never":
            return Encapsulation.IPIP
        return Encapsulation.NONE

    @property
    def encap_mode(self) -> EncapMode:
        """``Never``, ``Always`` or ``CrossSubnet``: when its encapsulation is used."""
        return self.spec.vxlan_mode if self.spec.vxlan_mode != "Never" else self.spec.ipip_mode

    def encapsulates(self, across_subnets: bool) -> bool:
        """Whether traffic to a host (in another subnet, or in ours) goes through the tunnel."""
        return self.encap_mode == "Always" or (self.encap_mode == "CrossSubnet" and across_subnets)

    def check_update(self, old: Resource) -> None:
        assert isinstance(old, IPPool)
        if old.spec.cidr != self.spec.cidr:
            raise ValueError(f"spec.cidr: is immutable (was {old.spec.cidr}); create a new pool instead")
        if old.spec.block_size != self.spec.block_size:
            raise ValueError(f"spec.blockSize: is immutable (was {old.spec.block_size})")


def enabled_pools(pools: Iterable[IPPool]) -> list[IPPool]:
    return [p for p in pools if p.enabled]


def encapsulation_overhead(pools: Iterable[IPPool]) -> int:
    """Bytes the enabled pools' tunnels take from the MTU: the most any of them needs."""
    return max((p.encapsulation.overhead for p in enabled_pools(pools)), default=0)


def encapsulations(pools: Iterable[IPPool]) -> frozenset[Encapsulation]:
    """The tunnels the enabled pools need."""
    return frozenset(p.encapsulation for p in enabled_pools(pools)) - {Encapsulation.NONE}


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
