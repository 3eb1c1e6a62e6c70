"""What typha serves, per syncer type: the current key -> value map, the encoded log of recent
updates and the encoded snapshot that clients join at.  Synchronous and without I/O.

Every update is encoded once, as UPDATES frames per datastore batch, and appended to the
log with the next sequence number; a client is a cursor into that log, so serving it is a
socket write of frames that already exist.  A snapshot is the whole map encoded (and
compressed) once at a log position: every client that joins while it is fresh gets the same
bytes and then the log from that position, so it misses nothing and gets nothing twice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from datastore.updates import Update
from typha import protocol
from typha.protocol import Kind, WireKV

SNAPSHOT_CHUNK = 2000  # keys per SNAPSHOT frame: a frame stays small enough to write between others
UPDATE_CHUNK = 1000  # keys per UPDATES frame: a resync's difference can be the whole datastore
REUSE_FRACTION = 0.25  # a snapshot is reused while the log since it is under this share of its size


class FellBehind(Exception):
    """A cursor points before the oldest entry the log still holds."""


@dataclass(frozen=True)
class Entry:
    seq: int
    revision: int
    frame: bytes
    appended: float  # monotonic time
    changes: tuple[WireKV, ...]  # what the frame carries (its values are the map's own bytes)
    offset: int  # bytes appended to the log before this entry

    @property
    def kvs(self) -> int:
        return len(self.changes)


class UpdateLog:
    """Encoded UPDATES frames in order; ``head`` is the sequence number the next one gets."""

    def __init__(self) -> None:
        self._entries: deque[Entry] = deque()
        self.base = 0  # sequence number of the oldest entry held
        self.head = 0
        self.bytes = 0  # bytes held
        self.appended = 0  # bytes ever appended

    def append(self, revision: int, frame: bytes, now: float, changes: Sequence[WireKV]) -> Entry:
        entry = Entry(self.head, revision, frame, now, tuple(changes), self.appended)
        self._entries.append(entry)
        self.head += 1
        self.bytes += len(frame)
        self.appended += len(frame)
        return entry

    def since(self, seq: int, max_bytes: int = 1 << 20) -> list[bytes]:
        """Frames from ``seq`` on, up to about ``max_bytes`` (at least one)."""
        if seq < self.base:
            raise FellBehind(f"entry {seq} is gone (the log starts at {self.base})")
        out: list[bytes] = []
        size = 0
        for i in range(seq - self.base, len(self._entries)):
            frame = self._entries[i].frame
            out.append(frame)
            size += len(frame)
            if size >= max_bytes:
                break
        return out

    def stretch(self, seq: int, max_bytes: int = 1 << 20) -> tuple[bytes, int]:
        """The entries from ``seq`` on (up to about ``max_bytes``) as one UPDATES frame, and how many
        entries it stands for: a client reading one frame for a stretch pays its per-frame cost
        once (the fan-out encodes it once for every client at ``seq``)."""
        frames = self.since(seq, max_bytes)
        if len(frames) <= 1:
            return (frames[0] if frames else b""), len(frames)
        first = seq - self.base
        changes = [kv for i in range(first, first + len(frames)) for kv in self._entries[i].changes]
        return protocol.kvs_frame(Kind.UPDATES, changes)[0], len(frames)

    def entry(self, seq: int) -> Entry | None:
        if self.base <= seq < self.head:
            return self._entries[seq - self.base]
        return None

    def bytes_since(self, seq: int) -> int:
        entry = self.entry(max(seq, self.base))
        return 0 if entry is None else self.appended - entry.offset

    def trim(self, keep_from: int) -> None:
        """Forget the entries before ``keep_from``."""
        while self._entries and self.base < keep_from:
            self.bytes -= len(self._entries.popleft().frame)
            self.base += 1


@dataclass(frozen=True)
class Snapshot:
    revision: int
    seq: int  # the log position it was taken at: its clients continue from here
    frames: tuple[bytes, ...]
    compression: str | None  # the codec, or None
    raw_bytes: int
    wire_bytes: int
    keys: int


@dataclass
class SyncerCache:
    """One syncer type's view: fed datastore updates, it keeps the map, the log and snapshots."""

    prefixes: tuple[str, ...]
    values: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # key -> (mod_revision, value)
    log: UpdateLog = field(default_factory=UpdateLog)
    revision: int = 0
    snapshots: dict[str | None, Snapshot] = field(default_factory=dict)  # by codec
    generated: int = 0
    reused: int = 0

    def wants(self, key: str) -> bool:
        return key.startswith(self.prefixes)

    def apply(self, updates: Sequence[Update], now: float, *, logged: bool = True) -> list[Entry]:
        """One datastore batch: the map changes and the changes that concern this syncer type are
        logged, as UPDATES frames of at most ``UPDATE_CHUNK`` keys (none when ``logged`` is False:
        before the first sync, when no client can be waiting for them)."""
        kvs: list[WireKV] = []
        for update in updates:
            self.revision = max(self.revision, update.revision)
            if not self.wants(update.key):
                continue
            if update.value is None:
                if self.values.pop(update.key, None) is None:
                    continue
            else:
                self.values[update.key] = (update.revision, update.value)
            kvs.append((update.key, update.value, update.revision))
        if not logged:
            return []
        return [
            self.log.append(chunk[-1][2], protocol.kvs_frame(Kind.UPDATES, chunk)[0], now, chunk)
            for chunk in protocol.chunks(kvs, UPDATE_CHUNK)
        ]

    def synced_at(self, revision: int) -> None:
        self.revision = max(self.revision, revision)

    def snapshot(self, compression: str | None) -> Snapshot:
        """The snapshot to send a joining client (its frames compressed with ``compression``, a
        codec name, or not at all): the last one if the log still holds what came after it and
        that is small beside it, else a new one of the map as it is now."""
        last = self.snapshots.get(compression)
        if (
            last is not None
            and last.seq >= self.log.base
            and self.log.bytes_since(last.seq) <= REUSE_FRACTION * last.raw_bytes
        ):
            self.reused += 1
            return last
        self.generated += 1
        frames: list[bytes] = []
        raw = 0
        items = ((key, value, rev) for key, (rev, value) in self.values.items())
        for chunk in protocol.chunks(items, SNAPSHOT_CHUNK):
            encoded, size = protocol.kvs_frame(Kind.SNAPSHOT, chunk, compress=compression)
            frames.append(encoded)
            raw += size
        made = Snapshot(
            self.revision,
            self.log.head,
            tuple(frames),
            compression,
            raw,
            sum(map(len, frames)),
            len(self.values),
        )
        self.snapshots[compression] = made
        return made

    def oldest_needed(self) -> int:
        """The log position the current snapshots still need."""
        return min((s.seq for s in self.snapshots.values()), default=self.log.head)
