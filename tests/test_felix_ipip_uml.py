"""IPIP for real, routes learned over BGP: the scenario runs inside a User-Mode-Linux kernel with ipip.

This machine's kernel has no ipip module (DESIGN.md §4); Debian's user-mode-linux
boots with the host filesystem as its root and loads ipip from its own modules.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

INIT = """#!/bin/bash
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /run
mkdir -p /run/netns
# The host's /lib/modules is not UML's: load its modules by path (kmod's insmod).
M=/usr/lib/uml/modules/$(uname -r)/kernel
for module in drivers/net/veth net/ipv4/tunnel4 net/ipv4/ip_tunnel net/ipv4/ipip; do
    insmod $M/$module.ko >> {work}/init.log 2>&1
done
ip link set lo up
cd {root}
{python} -m tests.harness.uml_ipip {work} > {work}/scenario.log 2>&1
echo o > /proc/sysrq-trigger
sleep 30
"""


def test_pods_on_two_hosts_ping_through_tunl0(tmp_path: Path) -> None:
    uml = shutil.which("linux.uml")
    assert uml is not None, "user-mode-linux is not installed: run the README's test command"
    work = tmp_path / "uml"
    work.mkdir()
    init = work / "init.sh"
    init.write_text(INIT.format(root=ROOT, python=sys.executable, work=work))
    init.chmod(0o755)
    boot = subprocess.run(
        [
            uml,
            "mem=1G",
            "root=/dev/root",
            "rootfstype=hostfs",
            "rootflags=/",
            "rw",
            f"init={init}",
            "con=null",
            "con0=fd:0,fd:1",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    result_file = work / "result.json"
    log = work / "scenario.log"
    assert result_file.exists(), (
        f"UML wrote no result:\n{boot.stdout[-3000:]}\n{log.read_text() if log.exists() else ''}"
    )
    result = json.loads(result_file.read_text())
    assert "error" not in result, result.get("error")
    assert "mtu 1480" in result["tunl0"] and "UP" in result["tunl0"] and "ipip" in result["tunl0"]
    assert result["a_to_b"] and result["b_to_a"], result["routes_a"]
    assert "dev tunl0 proto bgp onlink" in result["routes_a"]  # iproute2 names protocol 186 "bgp"
