"""Many allocating processes on one etcd: CAS alone keeps every address unique."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from datastore.kv import KVStore
from datastore.store import ResourceStore
from lab.etcd import EtcdServer
from tests.ipam_helpers import (
    KEYS,
    allocated,
    assert_consistent,
    blocks,
    handles,
    in_pool,
    make_node,
    make_pool,
)

ROOT = Path(__file__).resolve().parent.parent
FELIDCTL = str(Path(sys.executable).parent / "felidctl")


def spawn(etcd: EtcdServer, node: str, count: int, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.harness.ipam_worker",
            "--etcd",
            etcd.url,
            "--node",
            node,
            "--count",
            str(count),
            *flags,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(procs: list[subprocess.Popen[str]]) -> list[list[dict[str, object]]]:
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        outputs.append([json.loads(line) for line in out.splitlines()])
    return outputs


def borrowed(kv: KVStore) -> int:
    return sum(1 for b in blocks(kv).values() for _, attr in b.used() if attr.attrs.get("node") != b.host)


def test_eight_hosts_250_each(etcd: EtcdServer, kv: KVStore, store: ResourceStore) -> None:
    # 2,000 addresses need at least a /21 (a /22 holds 1,024).
    make_pool(store, "p", "10.40.0.0/21", block_size=26)
    nodes = [f"host{i}" for i in range(8)]
    outputs = finish([spawn(etcd, n, 250) for n in nodes])
    ips = [ip for out in outputs for line in out if "ips" in line for ip in line["ips"]]  # type: ignore[attr-defined]
    assert len(ips) == 2000 and len(set(ips)) == 2000
    assert all(in_pool(ip, "10.40.0.0/21") for ip in ips)
    assert set(allocated(kv)) == set(ips)
    assert_consistent(kv)
    assert {b.host for b in blocks(kv).values()} <= set(nodes)
    finish([spawn(etcd, n, 250, "--release") for n in nodes])
    assert allocated(kv) == {}
    assert handles(kv) == {}
    assert all(b.host is not None for b in blocks(kv).values())
    assert_consistent(kv)


def test_blocks_run_out_and_hosts_borrow(etcd: EtcdServer, kv: KVStore, store: ResourceStore) -> None:
    # 16 blocks; four hosts need four each, four more hosts one each: someone must borrow.
    make_pool(store, "p", "10.40.0.0/22", block_size=26)
    procs = [spawn(etcd, f"big{i}", 250) for i in range(4)] + [spawn(etcd, f"small{i}", 5) for i in range(4)]
    finish(procs)
    ips = allocated(kv)
    assert len(ips) == 1020
    assert all(in_pool(ip, "10.40.0.0/22") for ip in ips)
    assert borrowed(kv) > 0
    assert len(blocks(kv)) == 16
    assert_consistent(kv)


def test_sigkill_mid_allocation_orphans_nothing(etcd: EtcdServer, kv: KVStore, store: ResourceStore) -> None:
    make_pool(store, "p", "10.40.0.0/21", block_size=26)
    for name in ("host0", "host1", "host2", "victim"):
        make_node(store, name)
    survivors = [spawn(etcd, f"host{i}", 100, "--endpoints") for i in range(3)]
    victim = spawn(etcd, "victim", 1000)
    assert victim.stdout is not None
    for _ in range(40):  # let it get well into its allocations
        assert victim.stdout.readline()
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    finish(survivors)
    assert_consistent(kv)
    # Every address the victim holds is reachable through one of its handles.
    left = {h for h in handles(kv) if h.startswith("k8s-pod-network.victim-")}
    assert len(left) >= 40
    victim_ips = {ip for ip, h in allocated(kv).items() if h in left}
    assert len(victim_ips) == len(left)
    # What the victim left, read straight from etcd: its addresses (it wrote no endpoints)
    # and any pending affinity of a block claim it did not finish.
    pending = {
        KEYS.cidr_of(i.key)
        for i in kv.list(KEYS.host_affinities("victim"))[0]
        if KEYS.cidr_of(i.key) not in blocks(kv)
    }
    result = subprocess.run(
        [FELIDCTL, "ipam", "check", "--etcd-endpoints", etcd.url], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2, result.stdout + result.stderr
    leaked = {line.split()[2] for line in result.stdout.splitlines() if line.startswith("leaked:")}
    stray = {line.split()[5] for line in result.stdout.splitlines() if line.startswith("stray affinity:")}
    assert leaked == victim_ips
    assert stray == pending
    assert "inconsistent" not in result.stdout
    assert f"Found {len(victim_ips) + len(pending)} problem(s)" in result.stdout
