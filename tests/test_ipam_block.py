"""The pure AllocationBlock: assignment order, release, attributes, JSON shape."""

from __future__ import annotations

import json

import pytest

from datastore.models.block import AllocationBlock, Attribute
from datastore.models.ipam import Handle


def test_assign_takes_the_free_list_in_order_and_shares_attributes() -> None:
    block = AllocationBlock.empty("10.0.0.0/29", "n1")
    assert (block.size, block.free, block.host) == (8, 8, "n1")
    a = Attribute.of("h1", {"pod": "web"})
    block, first = block.assign(2, a)
    block, second = block.assign(1, a)
    assert (first, second) == ([0, 1], [2])
    assert len(block.attributes) == 1 and block.handle_counts() == {"h1": 3}
    block, rest = block.assign(10, Attribute.of("h2"))
    assert rest == [3, 4, 5, 6, 7] and block.free == 0
    assert block.assign(1, a) == (block, [])


def test_release_reindexes_attributes_and_queues_freed_ordinals_last() -> None:
    block = AllocationBlock.empty("10.0.0.0/30", None)
    block, _ = block.assign(1, Attribute.of("h1"))
    block, _ = block.assign(2, Attribute.of("h2"))
    block = block.release([0, 0, 3])  # duplicates and free ordinals are ignored
    assert block.unallocated == (3, 0)
    assert block.attributes == (Attribute.of("h2"),)
    assert block.allocations == (None, 0, 0, None)
    assert block.ordinals_of("h2") == [1, 2] and block.ordinals_of("h1") == []
    assert block.address(2) == "10.0.0.2" and block.ordinal("10.0.0.2") == 2
    with pytest.raises(ValueError, match="not in block"):
        block.ordinal("10.0.1.1")


def test_json_round_trip_in_calicos_shape() -> None:
    block, _ = AllocationBlock.empty("10.0.0.0/30", "n1").assign(1, Attribute.of("h", {"node": "n1"}))
    data = json.loads(block.to_json())
    assert data == {
        "cidr": "10.0.0.0/30",
        "affinity": "host:n1",
        "allocations": [0, None, None, None],
        "unallocated": [1, 2, 3],
        "attributes": [{"handle_id": "h", "secondary": {"node": "n1"}}],
    }
    assert AllocationBlock.from_json(block.to_json()) == block
    data["allocations"] = [None]
    with pytest.raises(ValueError, match="allocation slots"):
        AllocationBlock.from_json(json.dumps(data).encode())


def test_handle_counts() -> None:
    handle = Handle("h").adjusted("10.0.0.0/26", 2).adjusted("10.0.1.0/26", 1)
    assert handle.total == 3
    handle = handle.adjusted("10.0.0.0/26", -2)
    assert dict(handle.blocks) == {"10.0.1.0/26": 1}
    assert Handle.from_json(handle.to_json()) == handle
