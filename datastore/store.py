"""Typed create / read / update / delete of v3 resources, each write one etcd transaction."""

from __future__ import annotations

import builtins
import enum
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from datastore.errors import (
    AlreadyExists,
    BatchItemFailed,
    Conflict,
    DatastoreError,
    NotFound,
    PartlyWritten,
    ValidationFailed,
)
from datastore.keys import KeyLayout
from datastore.kv import Absent, Delete, Guard, KeyValue, KVStore, PrefixUnchangedSince, Put, Unchanged
from datastore.models import IPPool, Resource, overlapping_pool, parse_resource

R = TypeVar("R", bound=Resource)

# Retries of a batch whose guards failed because something changed between our
# reads and our commit (each retry re-reads and re-validates everything).
_RETRIES = 5
# What one etcd transaction may carry by default (--max-txn-ops 128 compares and as many puts;
# --max-request-bytes 1.5 MiB): larger writes go in consecutive transactions.  One compare is
# kept for the pool-overlap guard.
TXN_RESOURCES = 127
TXN_BYTES = 1024 * 1024


class WriteMode(enum.Enum):
    CREATE = "create"  # must not exist
    REPLACE = "replace"  # must exist; a given resourceVersion must match
    APPLY = "apply"  # create or replace whatever is stored


def describe(kind: type[Resource], name: str, namespace: str | None = None) -> str:
    return f"{kind.KIND}({namespace}/{name})" if namespace else f"{kind.KIND}({name})"


def describe_resource(resource: Resource) -> str:
    return describe(type(resource), resource.name, resource.namespace)


def encode(resource: Resource) -> bytes:
    data = resource.to_dict()
    data["metadata"].pop("resourceVersion", None)
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def decode(kv: KeyValue) -> Resource:
    """A stored value as its resource, carrying the key's mod_revision as resourceVersion."""
    try:
        data = json.loads(kv.value)
    except ValueError:
        raise ValidationFailed(kv.key, "stored value is not JSON") from None
    return _at(parse_resource(data), kv.mod_revision)


@dataclass(frozen=True)
class _Staged:
    resource: Resource
    old: Resource | None
    guard: Guard


def _created(resource: Resource, key: str) -> _Staged:
    """``resource`` as a new object at ``key``: its uid and creation time, guarded absent."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    meta = {"uid": str(uuid.uuid4()), "creation_timestamp": now, "resource_version": None}
    return _Staged(_with_meta(resource, meta), None, Absent(key))


class ResourceStore:
    """The v3 resources of one cluster, over any KVStore."""

    def __init__(self, kv: KVStore, layout: KeyLayout) -> None:
        self.kv = kv
        self.layout = layout

    def get(self, kind: type[R], name: str, namespace: str | None = None) -> R:
        kv = self.kv.get(self.layout.resource(kind, name, namespace))
        if kv is None:
            raise NotFound(describe(kind, name, namespace))
        return _as(kind, decode(kv))

    def list(self, kind: type[R], namespace: str | None = None) -> list[R]:
        items, _ = self.kv.list(self.layout.kind_prefix(kind, namespace))
        return [_as(kind, decode(kv)) for kv in items]

    def create(self, resource: R) -> R:
        return _as(type(resource), self._write_one(resource, WriteMode.CREATE))

    def apply(self, resource: R) -> R:
        return _as(type(resource), self._write_one(resource, WriteMode.APPLY))

    def replace(self, resource: R) -> R:
        return _as(type(resource), self._write_one(resource, WriteMode.REPLACE))

    def update(self, resource: R) -> R:
        """Compare-and-swap on ``metadata.resourceVersion``, which must be set.

        Kinds without update rules are written in a single round trip.
        """
        version = resource.metadata.resource_version
        if version is None:
            raise ValidationFailed("metadata.resourceVersion", "required for an update")
        if type(resource).check_update is not Resource.check_update or resource.metadata.uid is None:
            return self.replace(resource)
        key = self.layout.key_of(resource)
        revision = self.kv.commit([Unchanged(key, _revision(version))], [Put(key, encode(resource))])
        if revision is None:
            what = describe_resource(resource)
            raise NotFound(what) if self.kv.get(key) is None else Conflict(what)
        return _at(resource, revision)

    def write(self, resources: Sequence[Resource], mode: WriteMode) -> builtins.list[Resource]:
        """Every resource, or none (BatchItemFailed names the culprit), in one transaction while
        they fit in one; a larger set is checked whole against the store first, then written in
        consecutive transactions, and PartlyWritten says how far it got if one of them fails."""
        seen: dict[str, int] = {}
        for i, resource in enumerate(resources):
            first = seen.setdefault(self.layout.key_of(resource), i)
            if first != i:
                raise BatchItemFailed(
                    i,
                    ValidationFailed(
                        "metadata.name", f"{describe_resource(resource)} is already document {first + 1}"
                    ),
                )
        batches = _batches(resources)
        if len(batches) == 1:
            return self._write_batch(resources, mode, 0)
        self._stage_all(resources, mode, 0)  # every refusal before the first write
        written: builtins.list[Resource] = []
        for start, batch in batches:
            try:
                written += self._write_batch(batch, mode, start)
            except DatastoreError as exc:
                if not written:
                    raise
                raise PartlyWritten(len(written), len(resources), exc) from None
        return written

    def _write_batch(
        self, resources: Sequence[Resource], mode: WriteMode, offset: int
    ) -> builtins.list[Resource]:
        """One transaction, staged afresh (read and checked against the store) for every attempt.

        A CREATE is tried blind first: each key guarded absent, none read, one round trip (a
        pod's endpoint is written so). When a guard fails, the staged path reads, then names the
        resource that exists, or writes if it was another guard."""
        if mode is WriteMode.CREATE:
            written = self._commit(*self._stage_all(resources, mode, offset, blind=True))
            if written is not None:
                return written
        for _ in range(_RETRIES):
            written = self._commit(*self._stage_all(resources, mode, offset))
            if written is not None:
                return written
        raise Conflict("the resources kept changing while being written; try again")

    def _commit(self, staged: Sequence[_Staged], guards: Sequence[Guard]) -> builtins.list[Resource] | None:
        """The staged resources as written, or None when a guard failed."""
        ops = [Put(self.layout.key_of(s.resource), encode(s.resource)) for s in staged]
        revision = self.kv.commit(guards, ops)
        return None if revision is None else [_at(s.resource, revision) for s in staged]

    def _stage_all(
        self, resources: Sequence[Resource], mode: WriteMode, offset: int, blind: bool = False
    ) -> tuple[builtins.list[_Staged], builtins.list[Guard]]:
        """Each resource staged against the store; ``blind``: as new, guarded absent, none read."""
        staged = [
            _created(r, self.layout.key_of(r)) if blind else self._stage(offset + i, r, mode)
            for i, r in enumerate(resources)
        ]
        guards = [s.guard for s in staged]
        guards.extend(self._pool_guards(staged, offset))
        return staged, guards

    def delete(
        self, kind: type[R], name: str, namespace: str | None = None, resource_version: str | None = None
    ) -> R:
        key = self.layout.resource(kind, name, namespace)
        what = describe(kind, name, namespace)
        current = self.kv.get(key)
        if current is None:
            raise NotFound(what)
        if resource_version is not None and _revision(resource_version) != current.mod_revision:
            raise Conflict(what)
        if self.kv.commit([Unchanged(key, current.mod_revision)], [Delete(key)]) is None:
            raise NotFound(what) if self.kv.get(key) is None else Conflict(what)
        return _as(kind, decode(current))

    def _write_one(self, resource: Resource, mode: WriteMode) -> Resource:
        try:
            return self.write([resource], mode)[0]
        except BatchItemFailed as exc:
            raise exc.cause from None

    def _stage(self, index: int, resource: Resource, mode: WriteMode) -> _Staged:
        try:
            return self._stage_one(resource, mode)
        except (ValidationFailed, AlreadyExists, NotFound, Conflict) as exc:
            raise BatchItemFailed(index, exc) from None

    def _stage_one(self, resource: Resource, mode: WriteMode) -> _Staged:
        key = self.layout.key_of(resource)
        what = describe_resource(resource)
        current = self.kv.get(key)
        if current is None:
            if mode is WriteMode.REPLACE:
                raise NotFound(what)
            return _created(resource, key)
        if mode is WriteMode.CREATE:
            raise AlreadyExists(what)
        wanted = resource.metadata.resource_version
        if mode is WriteMode.REPLACE and wanted is not None and _revision(wanted) != current.mod_revision:
            raise Conflict(what)
        old = decode(current)
        try:
            resource.check_update(old)
        except ValueError as exc:
            field, _, message = str(exc).partition(": ")
            raise ValidationFailed(field, message) from None
        # uid and creation time belong to the stored object, not to the caller's copy.
        meta = {"uid": old.metadata.uid, "creation_timestamp": old.metadata.creation_timestamp}
        return _Staged(_with_meta(resource, meta), old, Unchanged(key, current.mod_revision))

    def _pool_guards(self, staged: Sequence[_Staged], offset: int = 0) -> builtins.list[Guard]:
        """Refuse overlapping enabled pools; guard the check by the revision it was made at."""
        enabling = [
            (i, s.resource)
            for i, s in enumerate(staged)
            if isinstance(s.resource, IPPool)
            and not s.resource.spec.disabled
            and (s.old is None or (isinstance(s.old, IPPool) and s.old.spec.disabled))
        ]
        if not enabling:
            return []
        prefix = self.layout.kind_prefix(IPPool)
        items, revision = self.kv.list(prefix)
        in_batch = {s.resource.name for s in staged}
        stored = [p for p in (decode(kv) for kv in items) if isinstance(p, IPPool) and p.name not in in_batch]
        enabling_at = {i for i, _ in enabling}
        for index, pool in enabling:
            assert isinstance(pool, IPPool)
            # Blame the later of two clashing documents: compare with earlier ones only.
            others = stored + [
                s.resource
                for j, s in enumerate(staged)
                if isinstance(s.resource, IPPool) and j != index and (j < index or j not in enabling_at)
            ]
            clash = overlapping_pool(pool, others)
            if clash is not None:
                raise BatchItemFailed(
                    offset + index,
                    ValidationFailed(
                        "spec.cidr",
                        f"{pool.spec.cidr} overlaps enabled IPPool {clash.name} ({clash.spec.cidr})",
                    ),
                )
        # A pool created or changed after our list makes the check stale: the commit fails.
        return [PrefixUnchangedSince(prefix, revision)]


def _batches(resources: Sequence[Resource]) -> builtins.list[tuple[int, Sequence[Resource]]]:
    """``resources`` cut into runs that each fit one transaction: (index of the first, the run)."""
    out: builtins.list[tuple[int, Sequence[Resource]]] = []
    start, size = 0, 0
    for i, resource in enumerate(resources):
        length = len(encode(resource))
        if i > start and (i - start >= TXN_RESOURCES or size + length > TXN_BYTES):
            out.append((start, resources[start:i]))
            start, size = i, 0
        size += length
    out.append((start, resources[start:]))
    return out


def _revision(version: str) -> int:
    try:
        return int(version)
    except ValueError:
        raise ValidationFailed("metadata.resourceVersion", f"{version!r} is not a resource version") from None


def _with_meta(resource: R, changes: dict[str, str | None]) -> R:
    return resource.model_copy(update={"metadata": resource.metadata.model_copy(update=changes)})


def _at(resource: R, revision: int) -> R:
    return _with_meta(resource, {"resource_version": str(revision)})


def _as(kind: type[R], resource: Resource) -> R:
    if not isinstance(resource, kind):
        raise ValidationFailed("kind", f"stored {resource.KIND} where a {kind.KIND} was expected")
    return resource
