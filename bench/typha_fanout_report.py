"""bench.typha_fanout's printed report: the figures side by side with their baselines and goals."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from bench.typha_fanout_common import (
    GOALS,
    Figures,
    Phase,
    Window,
)

# -- the report ------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def row(*cells: str) -> None:
    print("| " + " | ".join(cells) + " |")


def secs(phase: Phase) -> str:
    if phase.sync_seconds is None:
        return f"{phase.synced}/{phase.clients} in sync"
    return f"{phase.sync_seconds:.2f} s"


def report_fanout(n: int, p: dict[str, Phase]) -> None:
    typha, bare, raw, direct = p["typha"], p["bare"], p["typha-raw"], p["direct"]
    in_time = typha.sync_seconds is not None and typha.sync_seconds < GOALS["sync"]
    row(
        f"1. start -> all {n} TyphaSyncer clients in sync",
        secs(typha),
        f"bare server {secs(bare)} (its clients decode nothing)",
        "",
        f"< {GOALS['sync']:g} s: {verdict(in_time)}",
    )
    fan = ratio(bare.sync_seconds, raw.sync_seconds)
    row(
        "1. typha's fan-out rate: the same, clients only reading its frames",
        secs(raw),
        f"bare server {secs(bare)}",
        f"bare/typha {fmt(fan)}",
        f">= {GOALS['fanout']}: {verdict(fan is not None and fan >= GOALS['fanout'])}",
    )
    row(
        f"same, {n} direct etcd Syncers instead",
        secs(typha),
        f"direct {secs(direct)}",
        f"direct/typha {fmt(ratio(direct.sync_seconds, typha.sync_seconds))}",
        "",
    )

    def cpu(server: str, phase: Phase) -> str:
        used = phase.sync_cpu.get("server", phase.sync_cpu.get("etcd"))
        clients = phase.client_cpu(phase.sync_cpu)
        each = 1000 * clients / max(phase.clients, 1)
        return f"{server} {fmt(used)} s, clients {clients:.2f} s ({each:.1f} ms each)"

    row("CPU until all in sync", cpu("typha", typha), cpu("bare server", bare), "", "")
    row("same, clients only reading / direct", cpu("typha", raw), cpu("etcd", direct), "", "")


def report_latency(n: int, p: dict[str, Phase]) -> None:
    typha, direct, one = p["typha"], p["direct"], p["direct-1"]
    tq, oq, dq = typha.quantiles_ms(), one.quantiles_ms(), direct.quantiles_ms()
    for label, i in (("p50", 0), ("p99", 1), ("max", 2)):
        goal = f"< {GOALS['p99_ms']:g} ms: {verdict(tq[1] < GOALS['p99_ms'])}" if i == 1 else ""
        row(
            f"2. etcd write -> every client, {label}",
            f"{tq[i]:.1f} ms",
            f"1 direct Syncer {oq[i]:.1f} ms",
            f"typha/direct {tq[i] / oq[i]:.1f}",
            goal,
        )
    row(
        f"same, {n} direct Syncers, p50 / p99",
        f"{tq[0]:.1f} / {tq[1]:.1f} ms",
        f"{dq[0]:.1f} / {dq[1]:.1f} ms",
        f"direct/typha p99 {dq[1] / tq[1]:.1f}",
        "",
    )
    pq = typha.quantiles_ms(probe=True)
    row(
        "same, 1 more TyphaSyncer alone in its process, p50 / p99 / max",
        f"{pq[0]:.1f} / {pq[1]:.1f} / {pq[2]:.1f} ms",
        f"{oq[0]:.1f} / {oq[1]:.1f} / {oq[2]:.1f} ms",
        f"typha/direct p99 {pq[1] / oq[1]:.1f}",
        f"{typha.probe_received} received",
    )
    row(
        "deliveries received / expected",
        f"{typha.received}/{typha.expected}",
        f"1 direct {one.received}/{one.expected}, {n} direct {direct.received}/{direct.expected}",
        "",
        "",
    )


def report_etcd(n: int, rate: float, p: dict[str, Phase]) -> None:
    tw, dw, ow = p["typha"].window, p["direct"].window, p["direct-1"].window
    if tw is None or dw is None or ow is None:
        row("3. etcd CPU over the write phase", "not measured: some clients never came in sync", "", "", "")
        return
    t_cpu, d_cpu, floor = tw.cpu["etcd"], dw.cpu["etcd"], ow.cpu["etcd"]
    row(
        "3. etcd CPU over the write phase",
        f"{t_cpu:.2f} s in {tw.seconds:.1f} s",
        f"{n} direct Syncers {d_cpu:.2f} s in {dw.seconds:.1f} s",
        f"direct/typha {fmt(ratio(d_cpu, t_cpu), 1)}",
        f"(at most {fmt(ratio(d_cpu, floor), 1)}: the writes cost the same)",
    )
    row(
        "same, 1 direct Syncer (the writes and one watcher)",
        f"{t_cpu:.2f} s",
        f"{floor:.2f} s in {ow.seconds:.1f} s",
        f"typha/1 direct {fmt(ratio(t_cpu, floor))}",
        "",
    )
    # What following etcd costs it beyond the writes and one watcher: typha's extra must be at most
    # a twentieth of the direct Syncers' (it is below zero when it is within the run's noise).
    t_extra, d_extra = t_cpu - floor, d_cpu - floor
    row(
        "3. etcd CPU above the writes and one watcher",
        f"{t_extra:.2f} s",
        f"{n} direct Syncers {d_extra:.2f} s",
        f"direct/typha {fmt(ratio(d_extra, t_extra), 1) if t_extra > 0 else 'typha: none measurable'}",
        f">= {GOALS['etcd_cpu']:g}x less: {verdict(d_extra > 0 and t_extra <= d_extra / GOALS['etcd_cpu'])}",
    )
    t_sent, d_sent = tw.watch.get("events_sent", -1.0), dw.watch.get("events_sent", -1.0)
    row(
        "etcd events sent to watchers over the phase",
        f"{t_sent:.0f}",
        f"{n} direct Syncers {d_sent:.0f}",
        f"direct/typha {fmt(ratio(d_sent, t_sent), 0)}",
        "",
    )

    def watch(w: Window, name: str) -> str:
        return f"{w.watch.get(name, -1):.0f}"

    row(
        "etcd watchers (watch streams), mid-phase",
        f"{watch(tw, 'watcher_total')} ({watch(tw, 'watch_stream_total')})",
        f"{watch(dw, 'watcher_total')} ({watch(dw, 'watch_stream_total')})",
        "",
        "",
    )
    row(
        "etcd slow watchers, after the phase",
        watch(tw, "slow_watcher_total_after"),
        watch(dw, "slow_watcher_total_after"),
        "",
        "",
    )
    t_clients, d_clients = p["typha"].client_cpu(tw.cpu), p["direct"].client_cpu(dw.cpu)
    row(
        "CPU of typha / of the client processes, same window",
        f"{tw.cpu['server']:.2f} / {t_clients:.2f} s",
        f"- / {d_clients:.2f} s",
        "",
        "",
    )
    row(
        f"writes achieved (target {rate:g}/s)",
        f"{tw.achieved_rate:.1f}/s",
        f"{dw.achieved_rate:.1f}/s, 1 direct {ow.achieved_rate:.1f}/s",
        "",
        "",
    )


def report_rss(args: argparse.Namespace, figures: Figures) -> None:
    n, rss = args.clients, figures.typha_rss_mb
    full = rss.get(f"{args.rss_keys} keys, {n} clients")
    idle = rss.get(f"{args.rss_keys} keys, no client")
    hwm = rss.get(f"{args.rss_keys} keys, {n} clients, peak (VmHWM)")
    per = (full - idle) * 1024 / n if full is not None and idle is not None else None
    row(
        f"4. typha RSS, {args.rss_keys} keys, {n} clients in sync",
        f"{fmt(full, 0)} MB (peak {fmt(hwm, 0)} MB)",
        f"no client {fmt(idle, 0)} MB",
        f"{fmt(ratio(full, idle))} ({fmt(per, 0)} kB a client)",
        "",
    )
    main_rss = rss.get(f"{args.keys} keys, {n} clients, max")
    row(
        f"typha RSS, {args.keys} keys, {n} TyphaSyncer clients, max seen",
        f"{fmt(main_rss, 0)} MB",
        "",
        "",
        "",
    )


def report_health(figures: Figures, work: Path) -> None:
    if figures.typha_cpu_latency_ms:
        p50, p99 = figures.typha_cpu_latency_ms
        print(
            "typha's own typha_client_latency_secs over the write phase (arrival at typha -> written to "
            f"a client): p50 <= {p50:g} ms, p99 <= {p99:g} ms (bucket bounds)"
        )
    print("clients: reconnects (resyncs), errors, warnings in their logs, maps complete at the end")
    for name, phase in figures.phases.items():
        views = f", maps complete {phase.views_ok}/{phase.views}" if phase.views else ""
        if phase.failed:
            print(f"  {name}: FAILED: {phase.failed}")
        print(
            f"  {name}: {phase.resyncs} resyncs, {phase.errors} errors, {phase.log_problems} warnings"
            f"{views}, client processes' peak RSS {phase.client_hwm_mb:.0f} MB"
        )
        for sample in phase.first_errors[:2] + phase.log_samples[:2]:
            print(f"    {sample}")
    drops = {k: v for k, v in figures.typha_drops.items() if v}
    print(f"typha connections dropped (typha_connections_dropped_total): {drops or 'none'}")
    for name, (count, samples) in figures.typha_logs.items():
        exit_code = figures.typha_exit.get(name)
        print(f"typha log {work / (name + '.log')}: exit {exit_code}, {count} warnings/errors")
        for sample in samples:
            print(f"    {sample}")


def source_state() -> str:
    """Which felid was measured: the commit, and whether the code under test had local changes."""
    root = Path(__file__).resolve().parent.parent

    def git(*argv: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *argv], capture_output=True, text=True, check=False)
        return done.stdout.strip()

    changed = git("status", "--porcelain", "--", "typha", "datastore", "lab").splitlines()
    local = f", with local changes to {len(changed)} files under typha/ datastore/ lab/" if changed else ""
    return f"felid {git('rev-parse', '--short', 'HEAD') or '?'}{local}"


def report(args: argparse.Namespace, figures: Figures, took: float, work: Path, source: str) -> None:
    n = args.clients
    print(f"{source} (at the start)")
    print(
        f"typha fan-out: {n} clients in {min(args.workers, n)} processes, {figures.keys} keys "
        f"({figures.record_bytes:.0f} bytes a value on average), {args.rate:g} writes/s for "
        f"{args.duration:g} s"
    )
    print(
        f"snapshot: {figures.snapshot_raw / 1e6:.2f} MB raw, {figures.snapshot_wire / 1e6:.2f} MB "
        f"compressed in {figures.snapshot_frames} frames; the direct Syncers share one EtcdKV per "
        "client process (one etcd watch per Syncer)"
    )
    print()
    row("figure", "typha", "baseline", "ratio", "goal")
    row("---", "---", "---", "---", "---")
    report_fanout(n, figures.phases)
    report_latency(n, figures.phases)
    report_etcd(n, args.rate, figures.phases)
    report_rss(args, figures)
    print()
    report_health(figures, work)
    print(f"took {took:.0f} s; logs in {work}")
