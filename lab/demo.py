"""``felid demo``: the README's main job — a felid cluster on this machine, from nothing to pings.

etcd in its own network namespace, N hosts as namespaces on a bridge, felid-node
on each (felix, and felid-bgp unless the mode is vxlan), workloads made by the
felid CNI plugin, then what an operator would look at: the pools, the nodes,
``felidctl node status``, each host's routes, and a ping matrix of every
workload to every other.  It exits non-zero if any pair cannot reach the other.
``--mode ipip`` and ``crosssubnet`` need the kernel's ipip module; where it is
missing the whole cluster runs inside User-Mode-Linux.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lab.cluster import MODES, TYPHA_HOSTS, Cluster, Workload, destroy_saved
from lab.processes import BIN
from lab.uml import IPTABLES_BACKEND, kernel_has, run_in_uml
from lab.workloads import PingResult

STATE_DIR = Path("/run/felid-demo")
STATE_FILE = STATE_DIR / "state.json"


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


def up(args: argparse.Namespace) -> int:
    if STATE_FILE.exists():
        print(
            f"a demo is already running (state in {STATE_DIR}); run 'felid demo down' first", file=sys.stderr
        )
        return 1
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
            for host in cluster.hosts:
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
    typhas = f" and {args.typha} typha(s)" if args.typha else ""
    with progress(
        f"network: etcd{typhas} and {args.hosts} hosts as namespaces on a bridge (198.51.100.0/24)"
    ):
        lab = cluster.build()
        print(f"    etcd {lab.etcd.url} (pid {lab.etcd.pid}); hosts " + ", ".join(h.node for h in lab.hosts))
        for typha in cluster.typha_processes:
            print(
                f"    typha {typha.name} at {typha.address} (pid {typha.pid}): felix and felid-bgp follow it"
            )
    reflectors = f", {args.route_reflectors} route reflector(s), mesh off" if args.route_reflectors else ""
    with progress(f"felid-node on every host (mode {args.mode}{reflectors})"):
        for host in cluster.hosts:
            cluster.start_node(host)
        took = cluster.wait_ready(timeout=args.timeout)
        print(f"    all {args.hosts} ready after {took:.1f}s (felix synced, BGP sessions established)")
    with progress(f"{args.workloads_per_host} workload(s) per host through the felid CNI plugin"):
        for host in cluster.hosts:
            for i in range(1, args.workloads_per_host + 1):
                w = cluster.add_workload(host, f"{host.node.removeprefix('node-')}w{i}")
                print(f"    {host.node}: {w.name} {w.address} (netns {w.netns})")
    with progress("the cluster as felidctl sees it"):
        for ctl in (("get", "ippool", "-o", "wide"), ("get", "nodes", "-o", "wide")):
            show("felidctl " + " ".join(ctl), _checked(cluster.felidctl(*ctl)))
        first = cluster.hosts[0]
        status = cluster.felidctl("node", "status", host=first)
        show(f"felidctl node status   # on {first.node}", status.stdout + status.stderr)
    with progress("each host's routes"):
        for host in cluster.hosts:
            show(f"ip route   # on {host.node}", _routes(host.netns))
    with progress("ping matrix: every workload to every other (3 pings each)"):
        time.sleep(0.5)  # the last workload's route reaches every host within this
        results = cluster.ping_matrix()
        print(matrix(cluster.workloads, results), end="")
        failed = sum(1 for r in results if not r.ok)
        print(f"    {len(results) - failed}/{len(results)} pairs reach each other")
    return failed


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
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the nodes")
    parser.add_argument("--inside-uml", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("felid demo: run as root (it creates network namespaces)", file=sys.stderr)
        return 1
    if args.action == "down":
        return down()
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
