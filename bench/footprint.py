"""One host's felid in memory: ``python -m bench.footprint [--settle 15]``.

Issue 16: one host's felid at most 150 MiB RSS and 100 MiB PSS.  A 3-host lab cluster (default
mode, one workload per host, the ping matrix run once so the agents have done real work, then
``--settle`` seconds at rest).  node-1 runs felid-node; its whole process tree is measured, whatever
runs in it (felix and felid-bgp as children or inside it, ExaBGP, its API relay).  The baseline, in
the same cluster: node-3 runs felix and felid-bgp as their own programs (``lab.agents``), without
felid-node, and their trees are measured the same way.  Per process, from ``/proc/PID/smaps_rollup``:
RSS, PSS and USS (Private_Clean + Private_Dirty); then the totals side by side, new / baseline, and
the goal.  PSS shares pages among every process mapping them on the machine (the other hosts'
agents too), so only figures taken at the same moment, as these are, compare.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench.cluster import descendants, smaps_rollup
from bgp.config import BGPSettings
from felix.config import FelixSettings
from lab.agents import BGPProcess, FelixProcess
from lab.cluster import Cluster

MIB = 1024  # KiB
GOALS = {"RSS": 150, "PSS": 100}  # MiB
Row = tuple[int, str, dict[str, int]]  # pid, command, KiB by figure


def command(pid: int) -> str:
    """The command line with each argument's directories dropped, shortened."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    return " ".join(Path(arg).name or arg for arg in argv if arg)[:48]


def rows(roots: list[int]) -> list[Row]:
    found = []
    for pid in (member for root in roots for member in descendants(root)):
        try:
            name, rollup = command(pid), smaps_rollup(pid)
        except OSError:
            continue  # gone meanwhile
        if rollup:
            uss = rollup["Private_Clean"] + rollup["Private_Dirty"]
            found.append((pid, name, {"RSS": rollup["Rss"], "PSS": rollup["Pss"], "USS": uss}))
    return found


def table(title: str, found: list[Row]) -> dict[str, int]:
    totals = {k: sum(r[2][k] for r in found) for k in ("RSS", "PSS", "USS")}
    print(f"\n{title}\n  {'pid':>8} {'RSS MiB':>8} {'PSS MiB':>8} {'USS MiB':>8}  process")
    for pid, name, kib in [*found, (0, f"total ({len(found)} processes)", totals)]:
        figures = " ".join(f"{kib[k] / MIB:8.1f}" for k in ("RSS", "PSS", "USS"))
        print(f"  {pid or '':>8} {figures}  {name}")
    return totals


def measure(work: Path, settle: float) -> None:
    cluster = Cluster(work, 3, prefix="fp")
    felix: FelixProcess | None = None
    bgp: BGPProcess | None = None
    try:
        cluster.build()
        new, *rest, split = cluster.hosts
        for host in (new, *rest):
            cluster.start_node(host)
        cluster.wait_ready([new, *rest], timeout=120)
        # node-3 as before felid-node ran its agents: the Node written for it, felix and felid-bgp
        # started on their own, at the log levels felid-node's children have.
        node = {"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": split.node}}
        split.apply([{**node, "spec": {"bgp": {"ipv4Address": split.interface}}}])
        split.var_dir.mkdir(parents=True, exist_ok=True)
        felix = FelixProcess(
            split,
            Path(split.home) / "felix.log",
            FELIX_LOGSEVERITYSCREEN=FelixSettings.default_of("log_severity_screen"),
        )
        bgp = BGPProcess(
            split, Path(split.home), FELID_BGP_LOG_SEVERITY=BGPSettings.default_of("log_severity")
        )
        felix.start()
        bgp.start()
        felix.wait_ready(timeout=60)
        for host in cluster.hosts:
            cluster.add_workload(host)
        deadline = time.monotonic() + 60
        while not all(r.ok for r in cluster.ping_matrix(count=1)):
            if time.monotonic() > deadline:
                raise TimeoutError("the workloads do not all reach each other after 60 s")
            time.sleep(0.5)
        print(f"3 hosts, one workload each, every pair answers; settling {settle:.0f} s", flush=True)
        time.sleep(settle)
        assert felix.process is not None and bgp.process is not None
        now = table(f"{new.node}: felid-node and its tree", rows([cluster.nodes[new.node]]))
        before = table(
            f"{split.node}: felix and felid-bgp as their own programs (baseline)",
            rows([felix.process.pid, bgp.process.pid]),
        )
        print(f"\n  {'MiB':4} {'felid':>8} {'baseline':>9} {'ratio':>6}  goal")
        for k in ("RSS", "PSS", "USS"):
            goal = GOALS.get(k)
            verdict = f"<= {goal} MiB: {'met' if now[k] <= goal * MIB else 'NOT met'}" if goal else ""
            line = f"  {k:4} {now[k] / MIB:8.1f} {before[k] / MIB:9.1f} {now[k] / before[k]:6.2f}  {verdict}"
            print(line.rstrip())
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        for agent in (felix, bgp):
            if agent is not None:
                agent.kill()
        cluster.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--settle", type=float, default=15.0, help="seconds at rest before measuring")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the lab is taken down on SIGTERM too
    try:
        with tempfile.TemporaryDirectory(prefix="felid-bench-footprint-") as tmp:
            measure(Path(tmp), args.settle)
    except KeyboardInterrupt:
        sys.exit(130)  # the lab is gone already


if __name__ == "__main__":
    main()
