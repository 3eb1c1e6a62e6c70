"""The small IPAM records beside the blocks: handles, host affinities, IPAM config."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field


class AffinityState(enum.StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    PENDING_DELETION = "pendingDeletion"


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
