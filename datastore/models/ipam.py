"""The IPAM records beside the blocks: handle names and handles, host affinities, the IPAM config.

A handle names what holds addresses: a pod (``k8s-pod-network.<containerID>``, Calico's
name), a node's tunnel (``ipip-tunnel-addr-<node>``, ``vxlan-tunnel-addr-<node>``) or the
bridge gateway felid-node reserves for Docker (``felid-gateway.<node>``).  They are built
and recognised here only.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

POD_HANDLE_PREFIX = "k8s-pod-network."
GATEWAY_HANDLE_PREFIX = "felid-gateway."
TunnelKind = Literal["ipip", "vxlan"]


def pod_handle(container_id: str) -> str:
    return f"{POD_HANDLE_PREFIX}{container_id}"


def container_of(handle_id: str | None) -> str | None:
    """The container a pod's handle is for; None for every other handle."""
    if handle_id is None or not handle_id.startswith(POD_HANDLE_PREFIX):
        return None
    return handle_id[len(POD_HANDLE_PREFIX) :]


def tunnel_handle(kind: TunnelKind, node: str) -> str:
    """``ipip-tunnel-addr-<node>`` or ``vxlan-tunnel-addr-<node>``."""
    return f"{kind}-tunnel-addr-{node}"


def gateway_handle(node: str) -> str:
    """The address felid-node reserves in its first block for a Docker bridge (``--bip``)."""
    return f"{GATEWAY_HANDLE_PREFIX}{node}"


class AffinityState(enum.StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    PENDING_DELETION = "pendingDeletion"


def confirmed(
    affinities: Mapping[tuple[str, str], AffinityState], node: str | None = None
) -> list[tuple[str, str]]:
    """``(node, cidr)`` of every confirmed affinity, or only ``node``'s: the blocks hosts own."""
    return sorted(
        (owner, cidr)
        for (owner, cidr), state in affinities.items()
        if state is AffinityState.CONFIRMED and node in (None, owner)
    )


def affinity_json(state: AffinityState) -> bytes:
    return json.dumps({"state": state.value, "deleted": False}).encode()


def affinity_state(raw: bytes) -> AffinityState:
    return AffinityState(json.loads(raw)["state"])


@dataclass(frozen=True)
class Handle:
    """How many addresses a handle holds in each block; released by handle through it."""

    handle_id: str
    blocks: Mapping[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.blocks.values())

    def adjusted(self, cidr: str, delta: int) -> Handle:
        blocks = dict(self.blocks)
        blocks[cidr] = blocks.get(cidr, 0) + delta
        if blocks[cidr] <= 0:
            del blocks[cidr]
        return Handle(self.handle_id, blocks)

    def to_json(self) -> bytes:
        return json.dumps({"handleID": self.handle_id, "block": dict(self.blocks)}).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Handle:
        data = json.loads(raw)
        return cls(data["handleID"], {k: int(v) for k, v in data.get("block", {}).items()})


class IPAMConfig(BaseModel):
    """Cluster-wide IPAM settings (``felidctl ipam configure``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    strict_affinity: bool = Field(
        default=False, alias="strictAffinity", description="Never borrow addresses from another host's block."
    )
    auto_allocate_blocks: bool = Field(
        default=True,
        alias="autoAllocateBlocks",
        description="Claim new blocks when a host's blocks are full.",
    )
    max_blocks_per_host: int = Field(
        default=20, ge=0, alias="maxBlocksPerHost", description="Most blocks one host may claim; 0: no limit."
    )

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> IPAMConfig:
        return cls.model_validate_json(raw)
