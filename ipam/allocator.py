"""BlockAllocator: addresses for handles, from this host's own blocks first.

Order of search (Calico's): this node's confirmed blocks; then a newly claimed
block (two-phase affinity) while ``autoAllocateBlocks`` and below
``maxBlocksPerHost``; then, unless ``strictAffinity``, a free address borrowed
from any other block.  Every write is one etcd transaction that changes the
block and the handle together, guarded by what the decision read, so a killed
allocator can never leave an address without its handle.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime

from datastore.errors import Unavailable
from datastore.keys import IPAMKeys, KeyLayout
from datastore.kv import Absent, Delete, Guard, KVStore, Operation, Put, Unchanged
from datastore.models import IPPool
from datastore.models.block import AllocationBlock, Attribute
from datastore.models.ipam import AffinityState, Handle, affinity_json, affinity_state
from datastore.models.ippool import Use
from ipam.errors import PoolExhausted, TooManyRetries
from ipam.view import IPAMView, Versioned, block_cidrs, load_view

log = logging.getLogger(__name__)

MAX_RETRIES = 100
RETRY_JITTER = 0.01  # seconds


class _Stale(Exception):
    """A guard on the view (config, pool, node) failed: reload it and start over."""


class BlockAllocator:
    """Allocates and releases addresses for one node. Not thread-safe: one per thread."""

    def __init__(
        self,
        kv: KVStore,
        layout: KeyLayout,
        node: str,
        *,
        max_retries: int = MAX_RETRIES,
        rng: random.Random | None = None,
    ) -> None:
        self.kv = kv
        self.layout = layout
        self.keys = IPAMKeys(layout.prefix)
        self.node = node
        self.max_retries = max_retries
        self.rng = rng or random.Random()
        self.cas_retries = 0  # every lost compare-and-swap, for metrics and benchmarks
        self._view: IPAMView | None = None

    # -- assignment -------------------------------------------------------------

    def auto_assign(
        self,
        handle_id: str,
        count: int = 1,
        attrs: Mapping[str, str] | None = None,
        pools: Sequence[str] | None = None,
        use: Use = "Workload",
    ) -> list[str]:
        """``count`` addresses for ``handle_id``, all or none (PoolExhausted names the pools), from
        pools that allow ``use``."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        attribute = Attribute.of(handle_id, {"node": self.node, "timestamp": now, **(attrs or {})})
        for attempt in range(self.max_retries):
            view = self._current_view(fresh=attempt > 0)
            got: list[str] = []
            try:
                self._assign_all(view, attribute, count, pools, got, use)
                return got
            except _Stale:
                self._view = None
                self._retried()
            except PoolExhausted:
                if got:
                    self.release_ips(got)
                raise
        raise TooManyRetries(f"assigning for {handle_id}", self.max_retries)

    def _assign_all(  # noqa: PLR0917 - auto_assign's own arguments, handed on
        self,
        view: IPAMView,
        attribute: Attribute,
        count: int,
        wanted: Sequence[str] | None,
        got: list[str],
        use: Use,
    ) -> None:
        usable = view.usable_pools(wanted, use)
        in_pools = {p.value.name for p in usable}

        def usable_block(cidr: str) -> bool:
            pool = view.pool_of(cidr)
            return pool is not None and pool.value.name in in_pools

        for refresh in (False, True):
            if refresh:
                # Our blocks looked full; someone may have released addresses in them since.
                self._refresh_blocks(view)
            for mine in list(view.affine):
                known = view.blocks.get(mine)
                if (known is not None and known.value.free == 0) or not usable_block(mine):
                    continue
                got += self._assign_in_block(view, mine, count - len(got), attribute, affine=True)
                if len(got) == count:
                    return
        config = view.config
        while config.auto_allocate_blocks and (
            config.max_blocks_per_host == 0 or len(view.affine) < config.max_blocks_per_host
        ):
            claimed = self._claim_free_block(view, usable)
            if claimed is None:
                break
            got += self._assign_in_block(view, claimed, count - len(got), attribute, affine=True)
            if len(got) == count:
                return
        if config.strict_affinity:
            raise PoolExhausted(sorted(in_pools), self.node, "strict affinity: no borrowing")
        for block in self._borrowable(view, usable_block):
            got += self._assign_in_block(view, block, count - len(got), attribute, affine=False)
            if len(got) == count:
                return
        raise PoolExhausted(sorted(in_pools), self.node)

    def _refresh_blocks(self, view: IPAMView) -> None:
        items, _ = self.kv.list(self.keys.blocks)
        for item in items:
            cidr = self.keys.cidr_of(item.key)
            if cidr in view.affine:
                view.blocks[cidr] = Versioned(AllocationBlock.from_json(item.value), item.mod_revision)

    def _borrowable(self, view: IPAMView, usable_block: Callable[[str], bool]) -> list[str]:
        items, _ = self.kv.list(self.keys.blocks)
        found = []
        for item in items:
            block = AllocationBlock.from_json(item.value)
            if block.free and block.host != self.node and usable_block(block.cidr):
                view.blocks[block.cidr] = Versioned(block, item.mod_revision)
                found.append(block.cidr)
        self.rng.shuffle(found)  # concurrent borrowers spread out instead of queueing on one block
        return found

    def _assign_in_block(
        self, view: IPAMView, cidr: str, count: int, attribute: Attribute, affine: bool
    ) -> list[str]:
        handle_id = attribute.handle_id
        assert handle_id is not None
        block_key, handle_key = self.keys.block(cidr), self.keys.handle(handle_id)
        for _ in range(self.max_retries):
            current = view.blocks.get(cidr) or self._read_block(cidr)
            if current is None or current.value.free == 0:
                return []
            if affine and current.value.host != self.node:
                return []  # the affinity was released meanwhile
            block, ordinals = current.value.assign(count, attribute, skip=_reserved_in(view, current.value))
            known = view.handles.get(handle_id)
            handle = (known.value if known else Handle(handle_id)).adjusted(cidr, len(ordinals))
            guards: list[Guard] = [
                Unchanged(block_key, current.revision),
                Unchanged(handle_key, known.revision) if known else Absent(handle_key),
                *view.guards(view.pool_of(cidr)),
            ]
            ops = [Put(block_key, block.to_json()), Put(handle_key, handle.to_json())]

            def landed(o: list[int] = ordinals) -> int | None:
                return self._landed(cidr, o, handle_id)

            revision = self._commit(guards, ops, landed)
            if revision is not None:
                view.blocks[cidr] = Versioned(block, revision)
                view.handles[handle_id] = Versioned(handle, revision)
                return [block.address(o) for o in ordinals]
            self._retried()
            # Find out which guard failed: our block or handle, or the view beneath them.
            fresh_block = self._read_block(cidr)
            fresh_handle = self._read_handle(handle_id)
            if (fresh_block and fresh_block.revision) == current.revision and (
                fresh_handle and fresh_handle.revision
            ) == (known and known.revision):
                raise _Stale
            view.blocks.pop(cidr, None)
            if fresh_block is not None:
                view.blocks[cidr] = fresh_block
            view.handles[handle_id] = fresh_handle
        raise TooManyRetries(f"block {cidr}", self.max_retries)

    def _landed(self, cidr: str, ordinals: list[int], handle_id: str) -> int | None:
        """After a commit whose outcome is unknown: the revision if it did land."""
        stored = self._read_block(cidr)
        if stored is None:
            return None
        mine = [stored.value.attribute_of(o) for o in ordinals]
        if all(a is not None and a.handle_id == handle_id for a in mine):
            return stored.revision
        return None

    # -- blocks and affinities ----------------------------------------------------

    def _claim_free_block(self, view: IPAMView, pools: Sequence[Versioned[IPPool]]) -> str | None:
        items, _ = self.kv.list(self.keys.blocks)
        existing = {self.keys.cidr_of(i.key) for i in items}
        for pool in pools:
            for cidr in block_cidrs(pool.value, self.node):
                if cidr not in existing and self._claim_block(view, cidr, pool):
                    view.affine.append(cidr)
                    return cidr
        return None

    def _claim_block(self, view: IPAMView, cidr: str, pool: Versioned[IPPool]) -> bool:
        """Two-phase affinity: pending, then the block (if still absent) with a confirmed affinity."""
        affinity_key, block_key = self.keys.affinity(self.node, cidr), self.keys.block(cidr)
        pending = self.kv.commit(
            [Absent(affinity_key)], [Put(affinity_key, affinity_json(AffinityState.PENDING))]
        )
        if pending is None:
            # Ours already: a pending one left by an allocator that died mid-claim.
            current = self.kv.get(affinity_key)
            if current is None or affinity_state(current.value) is not AffinityState.PENDING:
                return False
            pending = current.mod_revision
        block = AllocationBlock.empty(cidr, self.node)
        revision = self.kv.commit(
            [Absent(block_key), Unchanged(affinity_key, pending), *view.guards(pool)],
            [Put(block_key, block.to_json()), Put(affinity_key, affinity_json(AffinityState.CONFIRMED))],
        )
        if revision is not None:
            view.blocks[cidr] = Versioned(block, revision)
            return True
        # Lost the race (or the view is stale): take back the pending affinity.
        self._retried()
        self.kv.commit([Unchanged(affinity_key, pending)], [Delete(affinity_key)])
        if self.kv.get(block_key) is None:
            raise _Stale
        return False

    def release_affinity(self, node: str, cidr: str) -> None:
        """Drop ``node``'s claim on block ``cidr``: the block goes if empty, else it stays unaffine."""
        affinity_key, block_key = self.keys.affinity(node, cidr), self.keys.block(cidr)
        for _ in range(self.max_retries):
            affinity = self.kv.get(affinity_key)
            guards: list[Guard] = [Unchanged(affinity_key, affinity.mod_revision)] if affinity else []
            ops: list[Operation] = [Delete(affinity_key)] if affinity else []
            current = self._read_block(cidr)
            if current is not None and current.value.host == node:
                guards.append(Unchanged(block_key, current.revision))
                if current.value.is_empty:
                    ops.append(Delete(block_key))
                else:
                    ops.append(Put(block_key, current.value.with_affinity(None).to_json()))
            if not ops or self.kv.commit(guards, ops) is not None:
                if self._view is not None and cidr in self._view.affine:
                    self._view.affine.remove(cidr)
                    self._view.blocks.pop(cidr, None)
                return
            self._retried()
        raise TooManyRetries(f"releasing affinity {node} {cidr}", self.max_retries)

    def release_host_affinities(self, node: str) -> list[str]:
        items, _ = self.kv.list(self.keys.host_affinities(node))
        cidrs = [self.keys.cidr_of(i.key) for i in items]
        for cidr in cidrs:
            self.release_affinity(node, cidr)
        return cidrs

    # -- release ------------------------------------------------------------------

    def release_ips(self, addresses: Iterable[str], only_handle: str | None = None) -> list[str]:
        """Release addresses wherever they are; unknown or free ones are ignored.

        With ``only_handle``, an address is released only while that handle holds it,
        so a caller acting on an old reading cannot free an address reused since.
        """
        by_block: dict[str, set[int]] = {}
        for address in addresses:
            block = self._block_containing(address)
            if block is not None:
                by_block.setdefault(block.value.cidr, set()).add(block.value.ordinal(address))
        released: list[str] = []
        for cidr, ordinals in by_block.items():

            def chosen(block: AllocationBlock, o: list[int] = sorted(ordinals)) -> list[int]:  # noqa: B008
                if only_handle is None:
                    return o
                return [
                    n for n in o if (a := block.attribute_of(n)) is not None and a.handle_id == only_handle
                ]

            released += self._release_in_block(cidr, chosen)
        return released

    def release_handle(self, handle_id: str) -> list[str]:
        """Release everything ``handle_id`` holds; releasing an unknown handle does nothing."""
        handle = self._read_handle(handle_id)
        if handle is None:
            return []
        released: list[str] = []
        for cidr in handle.value.blocks:
            released += self._release_in_block(cidr, lambda b: b.ordinals_of(handle_id))
        return released

    def ips_of_handle(self, handle_id: str) -> list[str]:
        handle = self._read_handle(handle_id)
        if handle is None:
            return []
        found = []
        for cidr in handle.value.blocks:
            block = self._read_block(cidr)
            if block is not None:
                found += [block.value.address(o) for o in block.value.ordinals_of(handle_id)]
        return found

    def _release_in_block(self, cidr: str, select: Callable[[AllocationBlock], list[int]]) -> list[str]:
        block_key = self.keys.block(cidr)
        for _ in range(self.max_retries):
            current = self._read_block(cidr)
            if current is None:
                return []
            used = [o for o in select(current.value) if current.value.allocations[o] is not None]
            if not used:
                return []
            per_handle = Counter(a.handle_id for o in used if (a := current.value.attribute_of(o)))
            block = current.value.release(used)
            guards: list[Guard] = [Unchanged(block_key, current.revision)]
            ops: list[Operation] = [
                Delete(block_key)
                if block.is_empty and block.host is None
                else Put(block_key, block.to_json())
            ]
            for handle_id, n in per_handle.items():
                if handle_id is None:
                    continue
                handle = self._read_handle(handle_id)
                key = self.keys.handle(handle_id)
                if handle is None:
                    guards.append(Absent(key))
                    continue
                guards.append(Unchanged(key, handle.revision))
                left = handle.value.adjusted(cidr, -n)
                ops.append(Put(key, left.to_json()) if left.total else Delete(key))
            if self._commit(guards, ops, lambda: None) is not None:
                if self._view is not None:
                    self._view.blocks.pop(cidr, None)
                    for handle_id in per_handle:
                        self._view.handles.pop(handle_id or "", None)
                return [current.value.address(o) for o in used]
            self._retried()
        raise TooManyRetries(f"releasing in block {cidr}", self.max_retries)

    # -- plumbing -----------------------------------------------------------------

    def _current_view(self, fresh: bool) -> IPAMView:
        if self._view is None or fresh:
            self._view = load_view(self.kv, self.layout, self.node)
        return self._view

    def _block_containing(self, address: str) -> Versioned[AllocationBlock] | None:
        ip = ipaddress.IPv4Address(address)
        view = self._current_view(fresh=False)
        pool = next((p for p in view.pools if ip in p.value.network), None)
        if pool is not None:
            net = ipaddress.IPv4Network(f"{ip}/{pool.value.spec.block_size}", strict=False)
            found = self._read_block(str(net))
            if found is not None:
                return found
        # The pool may be gone or resized: look through the blocks themselves.
        items, _ = self.kv.list(self.keys.blocks)
        for item in items:
            cidr = self.keys.cidr_of(item.key)
            if ip in ipaddress.IPv4Network(cidr):
                return Versioned(AllocationBlock.from_json(item.value), item.mod_revision)
        return None

    def _read_block(self, cidr: str) -> Versioned[AllocationBlock] | None:
        item = self.kv.get(self.keys.block(cidr))
        return None if item is None else Versioned(AllocationBlock.from_json(item.value), item.mod_revision)

    def _read_handle(self, handle_id: str) -> Versioned[Handle] | None:
        item = self.kv.get(self.keys.handle(handle_id))
        return None if item is None else Versioned(Handle.from_json(item.value), item.mod_revision)

    def _commit(
        self, guards: Sequence[Guard], ops: Sequence[Operation], landed: Callable[[], int | None]
    ) -> int | None:
        """Commit; if etcd fails to answer, find out whether the write landed before retrying."""
        try:
            return self.kv.commit(guards, ops)
        except Unavailable:
            time.sleep(0.2)
            revision = landed()
            if revision is not None:
                return revision
            raise

    def _retried(self) -> None:
        self.cas_retries += 1
        # A short random pause: contenders fall out of step instead of colliding again.
        time.sleep(self.rng.uniform(0, RETRY_JITTER))


def _reserved_in(view: IPAMView, block: AllocationBlock) -> Callable[[int], bool] | None:
    """Which of ``block``'s ordinals an IPReservation keeps (None: there are no reservations)."""
    if not view.reservations:
        return None
    return lambda ordinal: view.reserved(block.address(ordinal))
