"""``felid demo``: the README's main job — a felid cluster on this machine, from nothing to pings.

etcd in its own network namespace, N hosts as namespaces on a bridge, felid-node
on each (felix, and felid-bgp unless the mode is vxlan), workloads made by the
felid CNI plugin, then what an operator would look at: the pools, the nodes,
``felidctl node status``, each host's routes, and a ping matrix of every
workload to every other.  It exits non-zero if any pair cannot reach the other.
While it waits (for the nodes to be ready, for every host to route to every
other host's blocks) a progress line counts the hosts; at the end it prints how
long each wait and the ping sample took.  ``--mode ipip`` and ``crosssubnet``
need the kernel's ipip module; where it is missing the whole cluster runs inside
User-Mode-Linux.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from lab.cluster import MODES, TYPHA_HOSTS, Cluster, Workload, destroy_saved
from lab.convergence import ClusterProgress
from lab.network import LabHost
from lab.processes import BIN
from lab.uml import IPTABLES_BACKEND, kernel_has, run_in_uml
from lab.workloads import PingResult

STATE_DIR = Path("/run/felid-demo")
STATE_FILE = STATE_DIR / "state.json"
LOCK_FILE = Path("/run/felid-demo.lock")  # held by the demo running now (beside STATE_DIR, which goes)
MATRIX_LIMIT = 12  # workloads: up to this many the ping matrix is printed, beyond it a summary
LISTED_LIMIT = 12  # workloads listed one a line as they are made; beyond it a progress line
ROUTES_SHOWN = 6  # hosts whose routes are printed; beyond it the first host's alone
FAILURES_SHOWN = 20  # failing pairs listed under the summary
LOGS_SHOWN = 6  # hosts whose felid-node log ends are printed when the demo fails
STATUS_EVERY = 5.0  # seconds between progress lines when the output is not a terminal


def default_timeout(hosts: int) -> float:
    """``--timeout`` unless given: 120 s, or 3 s a host for large clusters (start-up is CPU-bound,
    ~1.7 CPU-seconds a host on two cores)."""
    return float(max(120, 3 * hosts))


class DemoFailed(Exception):
    pass


class Progress:
    def __init__(self, total: int) -> None:
        self.total = total
        self.step = 0

    @contextmanager
    def __call__(self, title: str) -> Iterator[None]:
        self.step += 1
        print(f"\n\033[1m[{self.step}/{self.total}] {title}\033[0m", flush=True)
        start = time.monotonic()
        yield
        print(f"    done ({time.monotonic() - start:.1f}s)", flush=True)


class StatusLine:
    """One progress line: rewritten in place (``\\r``) on a terminal, else printed as a plain line
    every ``every`` seconds, and once more at the end with the final state."""

    def __init__(self, stream: TextIO | None = None, every: float = STATUS_EVERY) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.every = every
        self.text = ""
        self.printed = ""
        self.printed_at = float("-inf")

    def update(self, text: str) -> None:
        self.text = text
        if self.tty:
            self.stream.write(f"\r    {text}\033[K")
            self.stream.flush()
        elif time.monotonic() - self.printed_at >= self.every:
            self._print()

    def _print(self) -> None:
        self.stream.write(f"    {self.text}\n")
        self.stream.flush()
        self.printed, self.printed_at = self.text, time.monotonic()

    def close(self) -> None:
        if self.tty and self.text:
            self.stream.write("\n")
            self.stream.flush()
        elif self.text and self.text != self.printed:
            self._print()


@contextmanager
def status_line() -> Iterator[StatusLine]:
    line = StatusLine()
    try:
        yield line
    finally:
        line.close()


def progress_report(line: StatusLine) -> Callable[[ClusterProgress], None]:
    return lambda progress: line.update(progress.line())


@dataclass
class Timings:
    ready: float = 0.0  # starting every felid-node -> all ready
    converged: float = 0.0  # the last workload added -> every host routes to every other's blocks
    converged_from_start: float = 0.0  # starting the nodes -> converged (workloads added between)
    ping: float = 0.0  # the whole ping sample
    pairs: int = 0

    def lines(self, hosts: int, workloads: int) -> str:
        return (
            f"timing ({hosts} hosts, {workloads} workloads)\n"
            f"    every felid-node ready       {self.ready:7.1f}s after starting them\n"
            f"    routes converged             {self.converged:7.1f}s after the last workload was added"
            f" ({self.converged_from_start:.1f}s after starting the nodes)\n"
            f"    full ping sample             {self.ping:7.1f}s for {self.pairs} pairs\n"
        )


def show(title: str, text: str) -> None:
    print(f"$ {title}")
    sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")


def matrix(workloads: list[Workload], results: list[PingResult]) -> str:
    by_pair = {(r.source, r.target): r for r in results}
    names = [f"{w.node}/{w.name}" for w in workloads]
    width = max(len(n) for n in names) + 2
    cell = 12
    lines = [" " * width + "".join(n.split("/")[-1].rjust(cell) for n in names)]
    for w, name in zip(workloads, names, strict=True):
        row = name.ljust(width)
        for other in workloads:
            if other is w:
                row += "-".rjust(cell)
                continue
            r = by_pair[(w.netns, other.address)]
            shown = (
                f"{r.rtt_ms:.2f}ms"
                if r.ok and r.rtt_ms is not None
                else f"LOSS {100 - 100 * r.received // r.sent}%"
            )
            row += shown.rjust(cell)
        lines.append(row)
    return "\n".join(lines) + "\n"


def summary(workloads: list[Workload], results: list[PingResult]) -> str:
    """For more workloads than a matrix can show: the pairs that failed, at most FAILURES_SHOWN."""
    names = {w.netns: f"{w.node}/{w.name}" for w in workloads}
    targets = {w.address: f"{w.node}/{w.name}" for w in workloads}
    failed = [r for r in results if not r.ok]
    lines = [f"    {len(workloads)} workloads, every one to every other: {len(results)} pairs"]
    for r in failed[:FAILURES_SHOWN]:
        source, target = names.get(r.source, r.source), targets.get(r.target, r.target)
        lines.append(f"    FAILED {source} -> {target} ({r.target}): {r.received}/{r.sent} answered")
    if len(failed) > FAILURES_SHOWN:
        lines.append(f"    ... and {len(failed) - FAILURES_SHOWN} more failed pairs")
    return "\n".join(lines) + "\n"


@contextmanager
def only_demo() -> Iterator[bool]:
    """Whether this is the only demo running: every demo makes and removes its files in the one
    STATE_DIR, so a second one started beside it (a test, say) would delete the first one's."""
    with open(LOCK_FILE, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True  # released when the file closes, or this process ends


def up(args: argparse.Namespace) -> int:
    if STATE_FILE.exists():
        print(
            f"a demo is already running (state in {STATE_DIR}); run 'felid demo down' first", file=sys.stderr
        )
        return 1
    with only_demo() as alone:
        if not alone:
            print(
                f"another felid demo is running now (it holds {LOCK_FILE}); try again after it",
                file=sys.stderr,
            )
            return 1
        return _up(args)


def _up(args: argparse.Namespace) -> int:
    needs_ipip = args.mode in ("ipip", "crosssubnet")
    if needs_ipip and not args.inside_uml and not kernel_has("ipip"):
        return _in_uml(args)
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    cluster = Cluster(
        STATE_DIR,
        args.hosts,
        mode=args.mode,
        route_reflectors=args.route_reflectors,
        typhas=args.typha,
        fast_election=not args.inside_uml,  # an emulated kernel's timers are too coarse for them
        node_env={"FELIX_IPTABLESBACKEND": IPTABLES_BACKEND} if args.inside_uml else {},
    )
    kept = False
    try:
        failed = _steps(cluster, args)
        if args.keep:
            cluster.save(STATE_FILE)
            kept = True
            _print_keep_help(cluster)
        else:
            print("\nremoving the cluster (processes, namespaces, files)", flush=True)
        if failed:
            raise DemoFailed(f"{failed} pair(s) cannot reach each other")
        print("\ndemo complete: every workload reaches every other")
        return 0
    except (DemoFailed, RuntimeError, TimeoutError) as exc:
        print(f"\ndemo FAILED: {exc}", file=sys.stderr)
        if cluster.lab is not None and not isinstance(exc, DemoFailed):
            for host in _suspects(cluster):
                tail = "\n".join(cluster.node_log(host).splitlines()[-15:])
                print(f"--- the end of {host.node}'s felid-node log ---\n{tail}", file=sys.stderr)
        return 1
    finally:
        if not kept:
            cluster.destroy()
            shutil.rmtree(STATE_DIR, ignore_errors=True)


def _steps(cluster: Cluster, args: argparse.Namespace) -> int:
    """The demo proper; the number of workload pairs that could not reach each other."""
    progress = Progress(6)
    timings = Timings()
    typhas = f" and {args.typha} typha(s)" if args.typha else ""
    with progress(
        f"network: etcd{typhas} and {args.hosts} hosts as namespaces on a bridge (198.51.100.0/24)"
    ):
        lab = cluster.build()
        print(f"    etcd {lab.etcd.url} (pid {lab.etcd.pid}); hosts " + _names([h.node for h in lab.hosts]))
        for typha in cluster.typha_processes:
            print(
                f"    typha {typha.name} at {typha.address} (pid {typha.pid}): felix and felid-bgp follow it"
            )
        for raised in cluster.raised_limits:
            print(f"    the kernel's ARP table is shared by every namespace: {raised}")
    reflectors = f", {args.route_reflectors} route reflector(s), mesh off" if args.route_reflectors else ""
    with progress(f"felid-node on every host (mode {args.mode}{reflectors})"):
        for host in cluster.hosts:
            cluster.start_node(host)
        nodes_started = time.monotonic()
        with status_line() as line:
            timings.ready = cluster.wait_ready(timeout=args.timeout, report=progress_report(line))
        ready = f"all {args.hosts} ready after {timings.ready:.1f}s"
        synced = "felix synced" if args.mode == "vxlan" else "felix synced, BGP sessions established"
        print(f"    {ready} ({synced})")
    with progress(f"{args.workloads_per_host} workload(s) per host through the felid CNI plugin"):
        _add_workloads(cluster, args.workloads_per_host)
        print("    waiting until every host routes to every other host's blocks")
        with status_line() as line:
            timings.converged = cluster.wait_converged(timeout=args.timeout, report=progress_report(line))
        timings.converged_from_start = time.monotonic() - nodes_started
        print(f"    routes converged {timings.converged:.1f}s after the last workload was added")
    with progress("the cluster as felidctl sees it"):
        for ctl in (("get", "ippool", "-o", "wide"), ("get", "nodes", "-o", "wide")):
            show("felidctl " + " ".join(ctl), _checked(cluster.felidctl(*ctl)))
        first = cluster.hosts[0]
        status = cluster.felidctl("node", "status", host=first)
        show(f"felidctl node status   # on {first.node}", status.stdout + status.stderr)
    with progress("each host's routes"):
        for host in cluster.hosts[:ROUTES_SHOWN] if args.hosts <= ROUTES_SHOWN else cluster.hosts[:1]:
            show(f"ip route   # on {host.node}", _routes(host.netns))
        if args.hosts > ROUTES_SHOWN:
            others = f"the other {args.hosts - 1} hosts' routes are not shown"
            print(f"    ({others}: each has one to every other host's blocks, as step 3 found)")
    pings = "every workload to every other (3 pings each)"
    with progress(f"ping {'matrix' if len(cluster.workloads) <= MATRIX_LIMIT else 'sample'}: {pings}"):
        started = time.monotonic()
        results = cluster.ping_matrix()
        timings.ping, timings.pairs = time.monotonic() - started, len(results)
        if len(cluster.workloads) <= MATRIX_LIMIT:
            print(matrix(cluster.workloads, results), end="")
        else:
            print(summary(cluster.workloads, results), end="")
        failed = sum(1 for r in results if not r.ok)
        print(f"    {len(results) - failed}/{len(results)} pairs reach each other")
    print("\n" + timings.lines(args.hosts, len(cluster.workloads)), end="", flush=True)
    return failed


def _add_workloads(cluster: Cluster, per_host: int) -> None:
    """``per_host`` workloads on every host, listed one a line, or for many a progress line."""
    total = per_host * len(cluster.hosts)
    started = time.monotonic()
    with status_line() as line:
        for host in cluster.hosts:
            for i in range(1, per_host + 1):
                w = cluster.add_workload(host, f"{host.node.removeprefix('node-')}w{i}")
                if total <= LISTED_LIMIT:
                    print(f"    {host.node}: {w.name} {w.address} (netns {w.netns})")
                else:
                    made = len(cluster.workloads)
                    line.update(f"workloads {made}/{total}  ({time.monotonic() - started:.1f}s)")
    if total > LISTED_LIMIT:
        first, last = cluster.workloads[0], cluster.workloads[-1]
        print(f"    {first.node}: {first.name} {first.address} ... {last.node}: {last.name} {last.address}")


def _names(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= ROUTES_SHOWN else f"{names[0]} .. {names[-1]}"


def _suspects(cluster: Cluster) -> list[LabHost]:
    """The hosts whose felid-node log ends are worth printing: those not ready, else the first."""
    started = [h for h in cluster.hosts if h.node in cluster.nodes]
    ready = cluster.ready_among(started)
    return ([h for h in started if h not in ready] or cluster.hosts)[:LOGS_SHOWN]


def _checked(done: subprocess.CompletedProcess[str]) -> str:
    if done.returncode:
        raise DemoFailed(done.stderr.strip())
    return done.stdout


def _routes(netns: str) -> str:
    return subprocess.run(["ip", "-n", netns, "route"], capture_output=True, text=True, check=False).stdout


def _print_keep_help(cluster: Cluster) -> None:
    first = cluster.hosts[0]
    print(f"    state in {STATE_DIR}; logs in {STATE_DIR}/hosts/<node>/felid-node.log")
    print(f"    a host:      ip netns exec {first.netns} bash")
    if cluster.workloads:
        print(f"    a workload:  ip netns exec {cluster.workloads[0].netns} bash")
    print(f"    status:      ip netns exec {first.netns} {BIN / 'felidctl'} node status")
    print("    remove all:  felid demo down")


def _in_uml(args: argparse.Namespace) -> int:
    if args.keep:
        print(
            "felid demo: --keep is not possible when the cluster runs inside User-Mode-Linux", file=sys.stderr
        )
        return 1
    print(
        f"this kernel has no ipip module: running the {args.mode} cluster inside User-Mode-Linux", flush=True
    )
    argv = [str(BIN / "felid"), "demo", "--inside-uml", "--mode", args.mode, "--hosts", str(args.hosts)]
    argv += ["--workloads-per-host", str(args.workloads_per_host), "--timeout", str(args.timeout * 3)]
    argv += ["--route-reflectors", str(args.route_reflectors), "--typha", str(args.typha)]
    work = Path(f"/tmp/felid-demo-uml-{os.getpid()}")
    try:
        return run_in_uml(argv, work, Path.cwd(), timeout=args.timeout * 10)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def down() -> int:
    """Remove a kept demo: its processes by PID, its namespaces, its files."""
    with only_demo() as alone:
        if not alone:
            print(f"a felid demo is running now (it holds {LOCK_FILE}): it removes its own", file=sys.stderr)
            return 1
        if STATE_FILE.exists():
            destroy_saved(json.loads(STATE_FILE.read_text()))
        shutil.rmtree(STATE_DIR, ignore_errors=True)
    print("demo removed")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="felid demo", description=__doc__)
    parser.add_argument("action", nargs="?", choices=("up", "down"), default="up")
    parser.add_argument("--hosts", type=int, default=3, help="hosts (network namespaces), default 3")
    parser.add_argument("--workloads-per-host", type=int, default=2, help="workloads per host, default 2")
    parser.add_argument("--mode", choices=MODES, default="never", help="pool encapsulation (default never)")
    parser.add_argument(
        "--route-reflectors", type=int, default=0, help="reflectors among the hosts, mesh off"
    )
    parser.add_argument(
        "--typha",
        type=int,
        default=0,
        help="typhas (each in its own namespace) every host follows instead of etcd",
    )
    parser.add_argument("--keep", action="store_true", help="leave it running; 'felid demo down' removes it")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds to wait for the nodes to be ready, and again for the routes to converge "
        "(default 120, or 3 per host beyond 40 hosts)",
    )
    parser.add_argument("--inside-uml", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("felid demo: run as root (it creates network namespaces)", file=sys.stderr)
        return 1
    if args.action == "down":
        return down()
    if args.timeout is None:
        args.timeout = default_timeout(args.hosts)
    if (
        not 2 <= args.hosts < TYPHA_HOSTS
        or args.workloads_per_host < 1
        or not 0 <= args.route_reflectors < args.hosts
        or not 0 <= args.typha <= 9
    ):
        print(
            f"felid demo: need 2 <= --hosts < {TYPHA_HOSTS}, --workloads-per-host >= 1, "
            "0 <= --route-reflectors < --hosts, 0 <= --typha <= 9",
            file=sys.stderr,
        )
        return 2
    return up(args)
