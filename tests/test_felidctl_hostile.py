"""felidctl on hostile and oversized files: one line naming what and where, exit 1, nothing written;
no traceback, no hang; a file beyond etcd's transaction limit applies."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from datastore.errors import PartlyWritten, Refused
from datastore.etcd import EtcdKV
from datastore.keys import KeyLayout
from datastore.kv import Guard, KVStore, Operation, Put
from datastore.models import IPPool, parse_resource
from datastore.store import TXN_RESOURCES, ResourceStore, WriteMode
from lab.etcd import EtcdServer
from tests.test_felidctl import felidctl

POOL = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\n"


def alias_bomb() -> bytes:
    """Nine levels of ten aliases each: 10^9 strings once expanded, in a few hundred bytes."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    lines += ["apiVersion: projectcalico.org/v3", "kind: BGPPeer", "metadata: {name: *a8}"]
    lines += ["spec: {peerIP: 192.0.2.1, asNumber: *a8}"]
    return "\n".join(lines).encode()


PEER = POOL.replace("IPPool", "BGPPeer").encode()
SPEC = POOL.encode() + b"spec:\n  cidr: 10.0.0.0/16\n"
LONG = POOL.replace("{name: p}", "{name: " + "X" * 100_000 + "}").encode()
HOSTILE: list[tuple[str, bytes, str]] = [
    ("utf8.yaml", b"\xff\xfe", "not UTF-8 text: byte 0xff at offset 0"),
    ("deep.yaml", b"[" * 1000, "nested more than 64 levels deep"),
    ("deep.json", b"[" * 1000 + b"]" * 1000, "nested more than 64 levels deep"),
    ("deep-map.yaml", b"a:\n" + b"".join(b" " * i + b"b:\n" for i in range(1, 300)), "nested more than 64"),
    ("list.yaml", b"kind: List\nitems: 5\n", "document 1 (List): items: must be a list of resources"),
    ("inf.yaml", PEER + b"spec: {peerIP: 192.0.2.1, asNumber: .inf}\n", "spec.asNumber: inf is not an AS"),
    ("half.yaml", PEER + b"spec: {peerIP: 192.0.2.1, asNumber: 64512.5}\n", "64512.5 is not an AS number"),
    ("bomb.yaml", alias_bomb(), "expands to more than 100000 values"),
    (
        "snake.yaml",
        POOL.encode() + b"spec: {cidr: 10.0.0.0/16, block_size: 30}\n",
        "block_size: unknown field",
    ),
    (
        "dup.yaml",
        POOL.encode() + b"spec:\n  cidr: 10.0.0.0/16\n  cidr: 10.1.0.0/16\n",
        "line 6: duplicate key",
    ),
    ("dup.json", b'{"apiVersion": "projectcalico.org/v3", "apiVersion": "x"}', "duplicate key 'apiVersion'"),
    (
        "long-name.yaml",
        POOL.replace("{name: p}", "{name: " + "X" * 100_000 + "}").encode(),
        "(100000 characters)",
    ),
]


@pytest.mark.parametrize(("name", "content", "expected"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_file_gets_one_line_and_writes_nothing(
    etcd: EtcdServer, kv: KVStore, tmp_path: Path, name: str, content: bytes, *, expected: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    _, before = kv.list("/")
    started = time.monotonic()
    done = felidctl("apply", "-f", str(path), url=etcd.url)
    took = time.monotonic() - started
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"felidctl: {path}: ") and expected in lines[0], lines
    assert len(lines[0]) < 600 and took < 10  # the value quoted, cut short
    assert kv.list("/")[1] == before  # etcd's revision: nothing was written


def pools(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "IPPool",
            "metadata": {"name": f"pool-{i}"},
            "spec": {"cidr": f"10.{i // 256}.{i % 256}.0/24", "blockSize": 26},
        }
        for i in range(start, start + count)
    ]


def test_a_file_beyond_etcds_transaction_limit_applies(etcd: EtcdServer, tmp_path: Path) -> None:
    path = tmp_path / "many.yaml"
    path.write_text(yaml.safe_dump_all(pools(300)))
    done = felidctl("apply", "-f", str(path), url=etcd.url)
    assert done.returncode == 0 and "Successfully applied 300 resource(s)" in done.stdout, done.stderr
    shown = felidctl("get", "ippool", url=etcd.url).stdout
    assert len([line for line in shown.splitlines() if line.startswith("pool-")]) == 300
    # Checked whole before the first write: a clash in the last document writes nothing.
    clash = [*pools(299, start=300), {**pools(1)[0], "metadata": {"name": "again"}}]
    path.write_text(yaml.safe_dump_all(clash))
    done = felidctl("create", "-f", str(path), url=etcd.url)
    assert done.returncode == 1 and "document 300" in done.stderr and "overlaps" in done.stderr, done.stderr
    assert "nothing was written" in done.stderr
    assert "pool-300" not in felidctl("get", "ippool", url=etcd.url).stdout


def test_etcds_limit_is_a_refusal_not_an_outage(kv: EtcdKV) -> None:
    with pytest.raises(Refused, match="too many operations"):
        kv.commit([], [Put(f"/felid/test/{i}", b"x") for i in range(200)])


class _ConcurrentWriter:
    """A KVStore whose second commit finds someone else's pool created just before it."""

    def __init__(self, kv: KVStore, layout: KeyLayout) -> None:
        self.kv, self.layout, self.commits = kv, layout, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kv, name)

    def commit(self, guards: list[Guard], operations: list[Operation]) -> int | None:
        self.commits += 1
        if self.commits == 2:
            rival = parse_resource(pools(1, start=200)[0])
            ResourceStore(self.kv, self.layout).create(rival)
        return self.kv.commit(guards, operations)


def test_a_write_interrupted_between_transactions_says_how_far_it_got(kv: KVStore) -> None:
    layout = KeyLayout()
    store = ResourceStore(_ConcurrentWriter(kv, layout), layout)  # type: ignore[arg-type]
    resources = [parse_resource(p) for p in pools(300)]
    with pytest.raises(PartlyWritten) as caught:
        store.write(resources, WriteMode.CREATE)
    assert caught.value.written == TXN_RESOURCES and caught.value.total == 300
    assert "the first 127 of 300 resources were written" in str(caught.value)
    assert len(ResourceStore(kv, layout).list(IPPool)) == TXN_RESOURCES + 1  # ours, and the rival


def test_many_documents_from_stdin(etcd: EtcdServer) -> None:
    done = felidctl("apply", "-f", "-", url=etcd.url, stdin=yaml.safe_dump_all(pools(150)))
    assert done.returncode == 0 and "Successfully applied 150 resource(s)" in done.stdout, done.stderr
