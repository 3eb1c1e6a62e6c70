"""Benchmark: felid-typha fanning one etcd Syncer out to 1,000 clients: ``python -m bench.typha_fanout``.

Run from the repository root (``.venv/bin/python -m bench.typha_fanout``; root is not needed).  It
starts its own etcd (Debian etcd-server) and felid-typha on loopback, and client processes
(``--workers`` of them, ``--clients`` spread over them, asyncio inside each), and measures in
one run, each figure beside a baseline from the same run:

1. fan-out of a ``--keys`` snapshot (Node, WorkloadEndpoint and IPAM affinity documents as
   felid writes them, under felix's syncer prefixes, loaded in transactions of 100 puts): the
   time from the clients starting until every one is in sync, each a ``TyphaSyncer`` keeping the
   full key -> value map, against a bare asyncio server writing the same encoded snapshot
   (``SyncerCache.snapshot("zstd").frames``) to the same number of sockets read by the
   same client processes, which only read the bytes (goal: all in sync < 20 s); and typha's
   fan-out rate, its clients only reading its frames (typha's own side), against that bare
   server (goal: bare/typha >= 0.5).  Also shown: as many direct etcd Syncers;
2. ``--rate`` writes/s for ``--duration`` s while the clients are connected: the delay from the
   etcd write (its wall-clock time is in the value) to its receipt at every client, p50 / p99,
   against one direct etcd Syncer alone (goal: p99 < 100 ms).  Also shown: one more TyphaSyncer
   in a process of its own (what typha delivers to a client whose event loop is not shared);
3. etcd's CPU seconds (utime + stime of its process) over that write phase and its watcher
   count (``etcd_debugging_mvcc_watcher_total``), with typha serving the clients and with each
   client a direct ``Syncer`` (one ``EtcdKV`` per client process, shared by its Syncers: still
   one etcd watch per client), same writes, and the events etcd sent its watchers
   (``etcd_debugging_mvcc_events_total``).  The writes cost etcd the same in every run, so the
   ratio of the totals can be no more than direct / (the writes alone); the goal (>= 20x less
   CPU with typha) is checked on what following etcd costs above the writes and one watcher
   (the run with one direct Syncer);
4. typha's RSS (VmRSS; VmHWM as the peak) with ``--rss-keys`` keys and the clients connected,
   against the same typha before any client came.  These clients read typha's frames without
   decoding them: 1,000 full maps of 50,000 keys would not fit in this machine's memory, and
   typha's side of a connection is the same either way.

The clients run in one process per core (``--workers``): each of them holds hundreds of full
maps, gigabytes, and more processes than cores only adds switches between them (on this
2-core machine, 1,000 clients were in sync in 15-17 s in 2 processes, 21.6 s in 3, 20.7 s in 4).

typha runs with its own slow-client settings (``--typha-ping-interval`` changes its ping
interval, 10 s).  1,000 clients on 2 cores share each client process's event loop 500 ways, so a
client's turn comes far later than on a host of its own; typha counts a client's silence only
once it has said it took its snapshot in, so a client still digesting one is not dropped as
dead.  Every drop that happens is reported (``typha_connections_dropped_total``, typha's log).

Scaled down for a smoke test: ``python -m bench.typha_fanout --clients 100 --keys 2000 --quick``.
Logs (etcd, typha, every client process) stay in the directory printed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.typha_fanout_children import (
    Job,
    bare_server_main,
    worker_main,
)
from bench.typha_fanout_common import (
    PING_INTERVAL,
    PLACEHOLDER,
    Figures,
    Mode,
    Phase,
    Records,
    Window,
    cpu_seconds,
    etcd_watch_metrics,
    histogram_quantiles,
    load,
    log_problems,
    make_records,
    memory_kb,
    metric_lines,
    progress,
    raise_fd_limit,
    snapshot_frames,
)
from bench.typha_fanout_report import (
    report as print_report,
)
from bench.typha_fanout_report import (
    source_state,
)
from datastore.config import DatastoreConfig
from datastore.etcd import EtcdKV
from datastore.kv import Put
from lab.etcd import EtcdServer
from lab.typha import TyphaProcess

# -- the parent's side -----------------------------------------------------------------


class Child:
    """A child process of this module (a client process or the bare server), its reports on stdout."""

    def __init__(
        self, args: list[str], log: Path, reports: queue.Queue[tuple[int, dict[str, Any]]], index: int
    ) -> None:
        self.index = index
        self.log = log
        with open(log, "ab") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bench.typha_fanout", *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                cwd=Path(__file__).resolve().parent.parent,
            )
        self._reader = threading.Thread(target=self._read, args=(reports,), daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self, reports: queue.Queue[tuple[int, dict[str, Any]]]) -> None:
        out = self.process.stdout
        assert out is not None
        for line in out:
            with contextlib.suppress(ValueError):
                reports.put((self.index, json.loads(line)))
        reports.put((self.index, {"event": "eof"}))

    def send(self, command: str) -> None:
        stdin = self.process.stdin
        with contextlib.suppress(OSError, ValueError):
            if stdin is not None:
                stdin.write(command + "\n")
                stdin.flush()

    def close(self, timeout: float = 30.0) -> None:
        """End of input (a stop), then SIGKILL by PID if it has not exited in time."""
        with contextlib.suppress(OSError, ValueError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Children:
    """Every child started, so that each is ended whatever happens."""

    def __init__(self) -> None:
        self.all: list[Child] = []

    def start(
        self, args: list[str], log: Path, reports: queue.Queue[tuple[int, dict[str, Any]]], index: int
    ) -> Child:
        child = Child(args, log, reports, index)
        self.all.append(child)
        return child

    def close(self) -> None:
        for child in self.all:
            if child.process.poll() is None:
                child.close(timeout=5)


class ChildFailed(RuntimeError):
    pass


def expect(
    reports: queue.Queue[tuple[int, dict[str, Any]]],
    children: Sequence[Child],
    event: str,
    timeout: float,
    tick: Callable[[], None] | None = None,
) -> dict[int, dict[str, Any]]:
    """``event`` from every child (by index), or what came of it before the timeout."""
    got: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    by_index = {c.index: c for c in children}
    while len(got) < len(children) and time.monotonic() < deadline:
        if tick is not None:
            tick()
        try:
            index, report = reports.get(timeout=0.1)
        except queue.Empty:
            continue
        if report["event"] == event:
            got[index] = report
        elif report["event"] in ("error", "eof") and index not in got:
            problem = report.get("trace") or f"exited ({by_index[index].process.poll()})"
            raise ChildFailed(f"client process {index} failed: {problem} (see {by_index[index].log})")
    return got


@dataclass(frozen=True)
class WritePlan:
    kv: EtcdKV
    targets: list[tuple[str, bytes]]
    rate: float
    count: int
    tag: str


def write(plan: WritePlan, midway: Callable[[], None]) -> float:
    """``plan.count`` single-put transactions at ``plan.rate``/s, each value carrying its wall-clock
    time; the rate achieved."""
    started = time.monotonic()
    for i in range(plan.count):
        delay = started + i / plan.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        key, template = plan.targets[i % len(plan.targets)]
        value = template.replace(PLACEHOLDER, f"{plan.tag}:{time.time():.6f}".encode())
        plan.kv.commit([], [Put(key, value)])
        if i == plan.count // 2:
            midway()
    return plan.count / max(time.monotonic() - started, 1e-9)


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    children: Children = field(default_factory=Children)

    def jobs(self, mode: Mode, clients: int, **common: Any) -> list[Job]:
        workers = max(1, min(self.args.workers, clients))
        shares = [clients // workers + (1 if i < clients % workers else 0) for i in range(workers)]
        return [Job(mode=mode, index=i, clients=n, **common) for i, n in enumerate(shares)]

    def run(
        self,
        name: str,
        jobs: list[Job],
        *,
        sync_timeout: float,
        writes: WritePlan | None = None,
        watched: dict[str, int] | None = None,
        etcd: EtcdServer | None = None,
        tick: Callable[[], None] | None = None,
        after_sync: Callable[[], None] | None = None,
    ) -> Phase:
        """Start the client processes, let them go at once, time them into sync, then write.  A
        probe job's client is reported apart (``Phase.probe``) and counts in no other figure.  A
        phase that fails is reported as failed, and the next one runs."""
        clients = sum(j.clients for j in jobs if not j.probe)
        phase = Phase(name, clients)
        try:
            self._run(phase, jobs, sync_timeout, writes, watched or {}, etcd, tick, after_sync)
        except (ChildFailed, OSError, RuntimeError, KeyError) as exc:
            progress(f"{name} failed: {exc}")
            phase.failed = str(exc)[:400]
        return phase

    def _run(  # noqa: PLR0917 - the options of run(), passed on
        self,
        phase: Phase,
        jobs: list[Job],
        sync_timeout: float,
        writes: WritePlan | None,
        watched: dict[str, int],
        etcd: EtcdServer | None,
        tick: Callable[[], None] | None,
        after_sync: Callable[[], None] | None,
    ) -> None:
        reports: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
        probes = {j.index for j in jobs if j.probe}
        name, clients = phase.name, phase.clients
        progress(f"{name}: starting {len(jobs)} client processes, {clients} clients")
        children = [
            self.children.start(
                ["--worker", json.dumps(asdict(job))],
                self.work / f"clients-{name}-{job.index}.log",
                reports,
                job.index,
            )
            for job in jobs
        ]
        try:
            ready = expect(reports, children, "ready", 120)
            if len(ready) < len(children):
                raise ChildFailed(f"{name}: only {len(ready)} of {len(children)} client processes started")
            pids = {**(watched or {}), **{f"client process {c.index}": c.pid for c in children}}
            before = {what: cpu_seconds(pid) for what, pid in pids.items()}
            started = time.time()
            for child in children:
                child.send("go")
            synced = expect(reports, children, "synced", sync_timeout, tick)
            phase.sync_cpu = {what: cpu_seconds(pid) - before[what] for what, pid in pids.items()}
            times = [
                t for index, report in synced.items() if index not in probes for t in report["times"] if t
            ]
            phase.synced = len(times)
            if len(synced) == len(children) and len(times) == clients:
                phase.sync_seconds = max(times) - started
                progress(f"{name}: {clients} clients in sync in {phase.sync_seconds:.2f}s")
            else:
                progress(f"{name}: only {len(times)} of {clients} clients in sync after {sync_timeout:.0f}s")
            if after_sync is not None:
                after_sync()
            if writes is not None and phase.synced:  # those not in sync yet catch up from the log
                phase.window = self._write_phase(
                    plan=writes,
                    reports=reports,
                    children=children,
                    watched=watched,
                    etcd=etcd,
                    tick=tick,
                )
                phase.expected = writes.count * clients
            for child in children:
                child.send("stop")
            results = expect(reports, children, "result", 120)
        finally:
            for child in children:
                child.close()
        for index, report in results.items():
            if index in probes:
                phase.probe = report["latencies"]
                phase.probe_received = report["received"]
                phase.resyncs += report["resyncs"]
                continue
            phase.latencies += report["latencies"]
            phase.received += report["received"]
            phase.resyncs += report["resyncs"]
            phase.errors += report["errors"]
            phase.first_errors += report["first_errors"]
            phase.views_ok += report["views_ok"]
            phase.views += report["views"]
            phase.client_hwm_mb += report["hwm_kb"] / 1024
        for child in children:
            count, samples = log_problems(child.log)
            phase.log_problems += count
            phase.log_samples += samples[: max(0, 4 - len(phase.log_samples))]

    def _write_phase(
        self,
        *,
        plan: WritePlan,
        reports: queue.Queue[tuple[int, dict[str, Any]]],
        children: list[Child],
        watched: dict[str, int],
        etcd: EtcdServer | None,
        tick: Callable[[], None] | None,
    ) -> Window:
        window = Window(writes=plan.count)
        pids = {**watched, **{f"client process {c.index}": c.pid for c in children}}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}

        def midway() -> None:
            if etcd is not None:
                window.watch = etcd_watch_metrics(etcd)

        sent_before = etcd_watch_metrics(etcd)["events_total"] if etcd is not None else 0.0
        progress(f"writing {plan.count} values at {plan.rate:g}/s")
        started = time.monotonic()
        window.achieved_rate = write(plan, midway)
        drained = expect(reports, children, "complete", self.args.drain_timeout, tick)
        window.seconds = time.monotonic() - started
        window.drained = len(drained) == len(children)
        window.cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
        if etcd is not None:
            after = etcd_watch_metrics(etcd)
            window.watch["slow_watcher_total_after"] = after["slow_watcher_total"]
            window.watch["events_sent"] = after["events_total"] - sent_before
        return window


@contextlib.contextmanager
def etcd_with(work: Path, name: str, records: Records) -> Iterator[tuple[EtcdServer, EtcdKV]]:
    # etcd's own heartbeat and election timing (100 ms / 1 s), not the lab's fast ones.
    etcd = EtcdServer(work / f"{name}.data", log_file=work / f"{name}.log", fast_election=False)
    etcd.start()
    kv: EtcdKV | None = None
    try:
        kv = EtcdKV(DatastoreConfig(etcd_endpoints=(etcd.url,)))
        started = time.monotonic()
        load(kv, records.items)
        progress(
            f"{name}: {len(records.items)} keys loaded in {time.monotonic() - started:.1f}s at {etcd.url}"
        )
        yield etcd, kv
    finally:
        if kv is not None:
            kv.close()
        etcd.stop()
        shutil.rmtree(work / f"{name}.data", ignore_errors=True)


@contextlib.contextmanager
def typha_on(
    work: Path, name: str, etcd: EtcdServer, figures: Figures, ping_interval: float
) -> Iterator[TyphaProcess]:
    log = work / f"{name}.log"
    # The other slow-client settings (TYPHA_MAXFALLBEHINDSECS, TYPHA_NEWCLIENTFALLBEHINDGRACEPERIOD) at
    # their defaults.
    typha = TyphaProcess(name, etcd.url, log, env={"TYPHA_PINGINTERVAL": f"{ping_interval:g}"})
    try:
        typha.start()
        typha.wait_ready(60)
        yield typha
        dropped = metric_lines(typha.metrics(), "typha_connections_dropped_total")
        figures.typha_drops.update({f"{name}{k}": v for k, v in dropped.items()})
    finally:
        figures.typha_exit[name] = typha.stop(30)  # SIGTERM, then SIGKILL to its group after 30 s
        figures.typha_logs[name] = log_problems(log)


def measure(args: argparse.Namespace, work: Path) -> Figures:
    figures = Figures(keys=args.keys)
    bench = Bench(args, work)
    count = round(args.rate * args.duration)
    try:
        records = make_records(args.keys)
        figures.record_bytes = sum(len(v) for _, v in records.items) / len(records.items)
        with etcd_with(work, "etcd", records) as (etcd, kv):
            etcd_pid = etcd.pid
            assert etcd_pid is not None
            frames, raw = snapshot_frames(kv)
            figures.snapshot_raw, figures.snapshot_wire = raw, sum(map(len, frames))
            figures.snapshot_frames = len(frames)
            snapshot_file = work / "snapshot.bin"
            snapshot_file.write_bytes(b"".join(frames))

            def plan(tag: str) -> WritePlan:
                return WritePlan(kv, records.targets, args.rate, count, tag)

            common: dict[str, Any] = {"etcd_url": etcd.url, "keys": len(records.items)}
            # 2's baseline: one direct Syncer, nothing else following etcd.
            figures.phases["direct-1"] = bench.run(
                "direct-1",
                [Job(mode="direct", index=0, clients=1, tag="base", writes=count, **common)],
                sync_timeout=60,
                writes=plan("base"),
                watched={"etcd": etcd_pid},
                etcd=etcd,
            )
            # 1's baseline: the same bytes from a bare server.
            figures.phases["bare"] = bare_phase(bench, snapshot_file, figures.snapshot_wire)
            with typha_on(work, "typha", etcd, figures, args.typha_ping_interval) as typha:
                assert typha.pid is not None
                typha_pid = typha.pid
                address = typha.address
                figures.phases["typha-raw"] = bench.run(
                    "typha-raw",
                    bench.jobs("raw", args.clients, address=address),
                    sync_timeout=args.sync_timeout,
                    watched={"server": typha_pid},
                )
                scrapes: list[str] = []
                rss: list[int] = []

                def sample() -> None:
                    rss.append(memory_kb(typha_pid).get("VmRSS", 0))

                jobs = bench.jobs("typha", args.clients, address=address, tag="typha", writes=count, **common)
                # One more TyphaSyncer, alone in its process: what typha delivers to a client whose event
                # loop is not shared with hundreds of others.
                probe = Job(
                    mode="typha",
                    index=len(jobs),
                    clients=1,
                    probe=True,
                    address=address,
                    tag="typha",
                    writes=count,
                    **common,
                )
                figures.phases["typha"] = bench.run(
                    "typha",
                    [*jobs, probe],
                    sync_timeout=args.sync_timeout,
                    writes=plan("typha"),
                    watched={"etcd": etcd_pid, "server": typha_pid},
                    etcd=etcd,
                    tick=sample,
                    after_sync=lambda: scrapes.append(typha.metrics()),
                )
                scrapes.append(typha.metrics())
                if len(scrapes) == 2:
                    figures.typha_cpu_latency_ms = [
                        1000 * q
                        for q in histogram_quantiles(
                            scrapes[0], scrapes[1], "typha_client_latency_secs", (0.5, 0.99)
                        )
                    ]
                figures.typha_rss_mb[f"{args.keys} keys, {args.clients} clients, max"] = (
                    max(rss, default=0) / 1024
                )
            figures.phases["direct"] = bench.run(
                "direct",
                bench.jobs("direct", args.clients, tag="direct", writes=count, **common),
                sync_timeout=args.direct_sync_timeout,
                writes=plan("direct"),
                watched={"etcd": etcd_pid},
                etcd=etcd,
                # A Syncer is in sync before its watch exists: the writes wait for every watch.
                after_sync=lambda: wait_watchers(etcd, args.clients, 300),
            )
        rss_phase(bench, args, figures)
    finally:
        bench.children.close()
    return figures


def wait_watchers(etcd: EtcdServer, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (found := etcd_watch_metrics(etcd)["watcher_total"]) < count:
        if time.monotonic() > deadline:
            progress(f"only {found:.0f} of {count} etcd watchers after {timeout:.0f}s; writing anyway")
            return
        time.sleep(0.2)
    progress(f"{found:.0f} etcd watchers")


def bare_phase(bench: Bench, snapshot_file: Path, size: int) -> Phase:
    reports: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
    server = bench.children.start(
        ["--bare-server", str(snapshot_file)], bench.work / "bare-server.log", reports, -1
    )
    try:
        ready = expect(reports, [server], "ready", 60)
        if not ready:
            raise ChildFailed("the bare server did not start")
        address = f"127.0.0.1:{ready[-1]['port']}"
        return bench.run(
            "bare",
            bench.jobs("bare", bench.args.clients, address=address, expect_bytes=size),
            sync_timeout=bench.args.sync_timeout,
            watched={"server": server.pid},
        )
    finally:
        server.close()


def rss_phase(bench: Bench, args: argparse.Namespace, figures: Figures) -> None:
    progress(f"rss: {args.rss_keys} keys")
    records = make_records(args.rss_keys)
    with (
        etcd_with(bench.work, "etcd-rss", records) as (etcd, _kv),
        typha_on(bench.work, "typha-rss", etcd, figures, args.typha_ping_interval) as typha,
    ):
        pid = typha.pid
        assert pid is not None
        time.sleep(2)
        idle = memory_kb(pid)
        figures.typha_rss_mb[f"{args.rss_keys} keys, no client"] = idle["VmRSS"] / 1024
        peak: list[int] = [idle["VmRSS"]]

        def sample() -> None:
            peak.append(memory_kb(pid)["VmRSS"])

        def settled() -> None:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                sample()
                time.sleep(0.1)
            now = memory_kb(pid)
            figures.typha_rss_mb[f"{args.rss_keys} keys, {args.clients} clients"] = now["VmRSS"] / 1024
            figures.typha_rss_mb[f"{args.rss_keys} keys, {args.clients} clients, peak (VmHWM)"] = (
                now["VmHWM"] / 1024
            )

        figures.phases["typha-rss"] = bench.run(
            "typha-rss",
            bench.jobs("raw", args.clients, address=typha.address),
            sync_timeout=args.sync_timeout,
            tick=sample,
            after_sync=settled,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 2,
        help="client processes (default: one per core)",
    )
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument(
        "--rss-keys", type=int, default=None, help="keys for the RSS figure (50000; --quick 5x --keys)"
    )
    parser.add_argument("--rate", type=float, default=100.0, help="writes/s in the write phases")
    parser.add_argument("--duration", type=float, default=None, help="seconds of writes (10; --quick 3)")
    parser.add_argument("--sync-timeout", type=float, default=300.0)
    parser.add_argument("--direct-sync-timeout", type=float, default=900.0)
    parser.add_argument(
        "--drain-timeout", type=float, default=300.0, help="after the writes, for every delivery"
    )
    parser.add_argument(
        "--typha-ping-interval",
        type=float,
        default=PING_INTERVAL,
        help=f"TYPHA_PINGINTERVAL (default {PING_INTERVAL:g}; 10 is typha's own default)",
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke test")
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="for the logs (default: a new one in /tmp)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--bare-server", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker_main(args.worker)
        return
    if args.bare_server is not None:
        bare_server_main(args.bare_server)
        return
    if args.duration is None:
        args.duration = 3.0 if args.quick else 10.0
    if args.rss_keys is None:
        args.rss_keys = 5 * args.keys if args.quick else 50_000
    if args.clients < 1 or args.keys < 100:
        parser.error("at least 1 client and 100 keys")
    raise_fd_limit()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="felid-bench-typha-"))
    work.mkdir(parents=True, exist_ok=True)
    source = source_state()
    started = time.monotonic()
    figures = measure(args, work)
    print_report(args, figures, time.monotonic() - started, work, source)


if __name__ == "__main__":
    main()
