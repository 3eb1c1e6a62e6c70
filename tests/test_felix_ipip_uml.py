"""IPIP for real, routes learned over BGP: the scenario runs inside a User-Mode-Linux kernel with ipip.

This machine's kernel has no ipip module (DESIGN.md §4); Debian's user-mode-linux
boots with the host filesystem as its root and loads ipip from its own modules.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from felid.uml import run_in_uml

ROOT = Path(__file__).resolve().parent.parent


def test_pods_on_two_hosts_ping_through_tunl0(tmp_path: Path) -> None:
    work = tmp_path / "uml"
    log = work / "scenario.log"
    code = run_in_uml([sys.executable, "-m", "tests.harness.uml_ipip", str(work)], work, ROOT, log=log)
    result_file = work / "result.json"
    assert code == 0 and result_file.exists(), log.read_text() if log.exists() else "no log"
    result = json.loads(result_file.read_text())
    assert "error" not in result, result.get("error")
    assert "mtu 1480" in result["tunl0"] and "UP" in result["tunl0"] and "ipip" in result["tunl0"]
    assert result["a_to_b"] and result["b_to_a"], result["routes_a"]
    assert "dev tunl0 proto bgp onlink" in result["routes_a"]  # iproute2 names protocol 186 "bgp"
