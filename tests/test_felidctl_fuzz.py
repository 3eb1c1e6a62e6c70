"""1,000 seeded mutations of valid resource documents through felidctl apply, against a real etcd:
no traceback, exit code 0 or 1 only, no hang, and nothing written by a file that was refused."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import random
import time
from pathlib import Path
from typing import Any

import yaml

from datastore.kv import KVStore
from felid.ctl.main import main as felidctl_main
from lab.etcd import EtcdServer

SEED = 20261201
CASES = 1000
API = "projectcalico.org/v3"

CORPUS: list[dict[str, Any]] = [
    {
        "kind": "IPPool",
        "metadata": {"name": "pool"},
        "spec": {
            "cidr": "10.200.0.0/16",
            "blockSize": 26,
            "ipipMode": "CrossSubnet",
            "natOutgoing": True,
            "nodeSelector": "all()",
        },
    },
    {
        "kind": "Node",
        "metadata": {"name": "node-1", "labels": {"rack": "r1"}},
        "spec": {"bgp": {"ipv4Address": "198.51.100.1/24", "asNumber": 64512}},
    },
    {
        "kind": "BGPPeer",
        "metadata": {"name": "tor"},
        "spec": {
            "peerIP": "192.0.2.1:1790",
            "asNumber": "1.10",
            "nodeSelector": "rack == 'r1'",
            "keepaliveTime": "30s",
            "holdTime": "1m30s",
        },
    },
    {
        "kind": "BGPConfiguration",
        "metadata": {"name": "default"},
        "spec": {"nodeToNodeMeshEnabled": False, "asNumber": 64512, "listenPort": 179},
    },
    {
        "kind": "FelixConfiguration",
        "metadata": {"name": "default"},
        "spec": {"routeRefreshInterval": "90s", "prometheusMetricsEnabled": True, "vxlanVNI": 4096},
    },
    {
        "kind": "WorkloadEndpoint",
        "metadata": {"name": "node--1-k8s-web-eth0", "namespace": "shop"},
        "spec": {
            "node": "node-1",
            "pod": "web",
            "interfaceName": "cali0123456789a",
            "ipNetworks": ["10.200.0.5/32"],
            "mac": "ee:ee:ee:ee:ee:ee",
        },
    },
    {"kind": "ClusterInformation", "metadata": {"name": "default"}, "spec": {"datastoreReady": True}},
]


STRANGE: list[Any] = [
    None, True, -1, 0, 10**100, -(10**30), 1.5, float("inf"), "", " ", "a/b", "../x", "1.10.5", "0x20",
    "\u00e9\u4e2d\U0001f600", [], [1, [2, [3]]], {}, {"a": {"b": {"c": 1}}}, "10.0.0.0/33", "300.1.1.1",
    "\ud800", "\x00", "\u202e", "x" * 64, "x" * 254, "x" * 5000,
]  # fmt: skip


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a (shallow, unmutated-corpus) document a value can be put."""
    out = [prefix]
    children = (
        value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    )
    for key, child in children:
        out += _paths(child, (*prefix, key))
    return out


def _put(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    target = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return doc


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"n": [value]}
    return value


def _mutated_document(rng: random.Random) -> Any:
    doc: Any = {"apiVersion": API, **copy.deepcopy(rng.choice(CORPUS))}
    places = _paths(doc)  # taken before any change, so mutations never walk into what they made
    for _ in range(rng.randint(0, 3)):
        path = rng.choice(places)
        odds = rng.random()
        if odds < 0.75:
            value = rng.choice(STRANGE)
        elif odds < 0.9:
            value = _nested(rng.choice([5, 70, 500]))
        else:
            value = {rng.choice(["block_size", "extra", "Spec"]): rng.choice(STRANGE)}
        with contextlib.suppress(KeyError, IndexError, TypeError):  # an earlier mutation took its place
            doc = _put(doc, path, value)
    return doc


def mutated(rng: random.Random) -> bytes:
    """One file: one to three documents, most made wrong in one of many ways."""
    docs = [_mutated_document(rng) for _ in range(rng.randint(1, 3))]
    try:
        if rng.random() < 0.3:
            text = json.dumps(docs if len(docs) > 1 else docs[0])
        else:
            text = yaml.safe_dump_all(docs, allow_unicode=rng.random() < 0.5)
    except (ValueError, yaml.YAMLError, RecursionError):
        text = "{"
    data = text.encode("utf-8", "surrogatepass")
    tail = rng.random()
    if tail < 0.08:  # a duplicate key
        data = data.replace(b"kind:", b"kind: IPPool\nkind:", 1)
    elif tail < 0.16:  # binary bytes
        at = rng.randrange(len(data) + 1)
        data = data[:at] + rng.randbytes(rng.randint(1, 16)) + data[at:]
    elif tail < 0.24:  # cut short: invalid YAML or JSON
        data = data[: rng.randrange(len(data) + 1)]
    elif tail < 0.32:  # a valid document, then an invalid one
        data = yaml.safe_dump({"apiVersion": API, **CORPUS[0]}).encode() + b"---\n" + data + b"\n: : [\n"
    elif tail < 0.36:  # an alias chain
        data = b"a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n" + data
    return data


def run(path: Path, url: str) -> tuple[int, str]:
    """``felidctl apply -f path`` in this process, with a terminal's encodings."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")  # stdout is strict about encoding
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace")  # as stderr is
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = felidctl_main(["apply", "-f", str(path), "--etcd-endpoints", url])
    err.flush()
    return code, err.buffer.getvalue().decode()


def test_mutated_documents_through_felidctl_apply(etcd: EtcdServer, kv: KVStore, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    codes = {0: 0, 1: 0}
    slowest = 0.0
    for case in range(CASES):
        path = tmp_path / f"case-{case}.yaml"
        path.write_bytes(mutated(rng))
        _, before = kv.list("/")
        started = time.monotonic()
        code, stderr = run(path, etcd.url)
        slowest = max(slowest, time.monotonic() - started)
        assert code in (0, 1), (case, code, stderr)
        codes[code] += 1
        if code == 1:
            assert len(stderr.strip().splitlines()) == 1, (case, stderr)
            assert kv.list("/")[1] == before, f"case {case} was refused but wrote: {stderr}"
    print(f"{CASES} files: {codes[0]} applied, {codes[1]} refused; slowest {slowest:.2f}s")
    assert codes[0] > 20 and codes[1] > 500  # the mutations both pass and fail, as they should
    assert slowest < 5.0
