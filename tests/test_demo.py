"""The README's main command, end to end, and its clean-up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from felid.demo import STATE_DIR

FELID = str(Path(sys.executable).parent / "felid")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FELID, *args], capture_output=True, text=True, timeout=120, check=False)


def etcd_pids() -> set[int]:
    out = subprocess.run(["pgrep", "-f", str(STATE_DIR)], capture_output=True, text=True, check=False).stdout
    return {int(p) for p in out.split()}


def test_demo_runs_and_leaves_nothing_behind() -> None:
    result = run("demo")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "default-ipv4-ippool   10.244.0.0/16   true" in result.stdout
    assert "overlaps enabled IPPool default-ipv4-ippool" in result.stdout
    assert result.stdout.rstrip().endswith("demo complete")
    assert not STATE_DIR.exists()
    assert etcd_pids() == set()


def test_demo_keep_then_down() -> None:
    try:
        result = run("demo", "--keep")
        assert result.returncode == 0, result.stdout + result.stderr
        url = (STATE_DIR / "endpoints").read_text().strip()
        assert f"export FELID_ETCD_ENDPOINTS={url}" in result.stdout
        pid = int((STATE_DIR / "etcd.pid").read_text())
        os.kill(pid, 0)  # still running after felid exited
        again = run("demo")
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        assert run("demo", "down").returncode == 0
    assert not STATE_DIR.exists()
    assert etcd_pids() == set()
