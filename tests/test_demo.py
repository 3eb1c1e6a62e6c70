"""The README's main command, end to end: the demo cluster, --keep and down, and IPIP inside UML."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.cluster import Workload
from lab.demo import FAILURES_SHOWN, STATE_DIR, StatusLine, default_timeout, only_demo, summary
from lab.workloads import PingResult

FELID = str(Path(sys.executable).parent / "felid")


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FELID, *args], capture_output=True, text=True, timeout=timeout, check=False)


def leftovers(settle: float = 10.0) -> tuple[list[str], list[str]]:
    """Namespaces and processes a demo left behind (after ``settle`` s for the exiting to be reaped)."""
    deadline = time.monotonic() + settle
    while True:
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
        namespaces = [n for n in listed.split() if n.startswith("fd-")]
        pattern = f"felid-node|felid-felix|felid-bgp|felid-typha|exabgp|{STATE_DIR}"
        found = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True, check=False).stdout
        processes = [p for p in found.splitlines() if "pgrep" not in p]
        if (not namespaces and not processes) or time.monotonic() > deadline:
            return namespaces, processes
        time.sleep(0.2)


def test_demo_runs_the_cluster_and_leaves_nothing_behind() -> None:
    result = run("demo")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "default-ipv4-ippool   10.244.0.0/16   true" in out
    assert out.count("| node-to-node mesh | up") == 2  # node status of node-1
    assert "30/30 pairs reach each other" in out
    assert "proto bgp" in out and "blackhole" in out
    assert out.rstrip().endswith("demo complete: every workload reaches every other")
    assert not STATE_DIR.exists()
    assert leftovers() == ([], [])


def test_demo_with_a_typha_keep_then_down() -> None:
    try:
        result = run("demo", "--keep", "--hosts", "2", "--workloads-per-host", "1", "--typha", "1")
        assert result.returncode == 0, result.stdout + result.stderr  # every pair pinged
        assert (
            "typha-1 at 198.51.100.241:5473" in result.stdout
            and "2/2 pairs reach each other" in result.stdout
        )
        assert "felid demo down" in result.stdout and "ip netns exec fd-h1-" in result.stdout
        namespaces, processes = leftovers(settle=0)
        assert len(namespaces) == 2 + 1 + 2 + 2  # lan, etcd, typha, 2 hosts, 2 workloads
        assert any("felid-node" in p for p in processes) and any("felid-typha" in p for p in processes)
        again = run("demo")
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        assert run("demo", "down").returncode == 0
    assert not STATE_DIR.exists()
    assert leftovers() == ([], [])


def test_a_second_demo_beside_a_running_one_touches_nothing() -> None:
    """Every demo keeps its files in the one STATE_DIR: a second one started beside the first
    (a test beside a user's demo) must not remove them."""
    with only_demo() as alone:  # as a running demo holds it
        assert alone
        result = run("demo", "--hosts", "2")
        assert result.returncode == 1 and "another felid demo is running" in result.stderr
        result = run("demo", "down")
        assert result.returncode == 1 and "a felid demo is running now" in result.stderr


def test_demo_refuses_bad_options() -> None:
    result = run("demo", "--hosts", "1")
    assert result.returncode == 2 and "2 <= --hosts" in result.stderr
    result = run("demo", "--typha", "10")
    assert result.returncode == 2 and "--typha <= 9" in result.stderr


@pytest.mark.timeout(900)  # the demo's own bound: Python under UML's emulated kernel is slow, and varies
def test_ipip_demo_inside_user_mode_linux() -> None:
    """This kernel has no ipip: two hosts run in UML, and their workloads ping through tunl0."""
    result = run("demo", "--mode", "ipip", "--hosts", "2", "--workloads-per-host", "1", timeout=900)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    assert "running the ipip cluster inside User-Mode-Linux" in result.stdout
    assert "dev tunl0 proto bgp onlink" in result.stdout
    assert "2/2 pairs reach each other" in result.stdout
    assert leftovers() == ([], [])


def test_the_progress_line_is_printed_every_few_seconds_and_at_the_end_when_not_a_terminal() -> None:
    out = io.StringIO()
    line = StatusLine(out, every=3600)
    line.update("hosts ready 0/4, routes converged 0/4  (0.0s)")  # the first at once
    line.update("hosts ready 2/4, routes converged 1/4  (1.0s)")  # too soon: not printed
    line.update("hosts ready 4/4, routes converged 4/4  (2.0s)")
    line.close()  # the final state, once
    assert out.getvalue().splitlines() == [
        "    hosts ready 0/4, routes converged 0/4  (0.0s)",
        "    hosts ready 4/4, routes converged 4/4  (2.0s)",
    ]


def test_a_large_ping_sample_is_summed_up_with_the_failing_pairs_listed_up_to_a_limit() -> None:
    workloads = [Workload(f"{i}w1", f"node-{i}", f"ns-{i}", f"10.244.{i}.1") for i in range(1, 31)]
    results = [
        PingResult(a.netns, b.address, 3, 0 if a.node == "node-2" else 3, 0.05)
        for a in workloads
        for b in workloads
        if a is not b
    ]
    text = summary(workloads, results)
    assert "30 workloads, every one to every other: 870 pairs" in text
    assert "FAILED node-2/2w1 -> node-1/1w1 (10.244.1.1): 0/3 answered" in text
    assert text.count("FAILED") == FAILURES_SHOWN and "... and 9 more failed pairs" in text


def test_the_timeout_grows_with_the_cluster() -> None:
    assert default_timeout(3) == 120 and default_timeout(100) == 300
