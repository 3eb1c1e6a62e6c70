"""Benchmark: felix's dataplane layer programming /32 routes, against ``ip -batch``.

Run as root from the repository root: ``.venv/bin/python -m bench.felix_routes``.
It makes a throwaway network namespace and measures inside it, in one run:
  * N = 1,000 / 10,000 / 100,000 workload routes added to an empty table, by
    felix's Dataplane.apply() and by ``ip -batch`` (the baseline), and the ratio;
  * a full resync of 100,000 routes of which 1% changed (kernel read back in
    full, diffed, the 1,000 changed routes replaced), and the same change applied
    from felix's kept view without the full read;
  * with felix running (and its own etcd), the time from a workload interface
    coming up, its endpoint already known, to its route being in the kernel.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from datastore.config import DatastoreConfig
from datastore.etcd import EtcdKV
from datastore.keys import KeyLayout
from datastore.models import WorkloadEndpoint
from datastore.store import ResourceStore
from felix.calc.model import DesiredState, Route
from felix.config import FelixSettings
from felix.dataplane.driver import Dataplane
from felix.dataplane.netlink import Netlink
from felix.dataplane.rtnl import Rtnl
from lab.etcd import EtcdServer, free_port

SIZES = (1_000, 10_000, 100_000)
PREFIX: str = FelixSettings.default_of("interface_prefix")


def addresses(n: int, second_octet: int) -> list[str]:
    return [f"10.{second_octet + i // 65536}.{(i // 256) % 256}.{i % 256}/32" for i in range(n)]


def flush() -> None:
    subprocess.run(["ip", "route", "flush", "proto", "80"], check=True)


def ip_batch(n: int, tmp: Path) -> float:
    script = tmp / "routes.batch"
    script.write_text("".join(f"route add {a} dev bench0 proto 80 scope link\n" for a in addresses(n, 100)))
    start = time.perf_counter()
    subprocess.run(["ip", "-batch", str(script)], check=True)
    return time.perf_counter() - start


async def felix_add(n: int) -> float:
    dataplane = Dataplane(Netlink(), PREFIX, sysctl_root=Path("/proc/sys"))
    dataplane.set_desired(
        DesiredState(routes=frozenset(Route(a, "local", ifname="bench0") for a in addresses(n, 10)))
    )
    start = time.perf_counter()
    await dataplane.apply()
    took = time.perf_counter() - start
    dataplane.netlink.close()
    return took


async def felix_resync(n: int) -> tuple[float, float, int]:
    dataplane = Dataplane(Netlink(), PREFIX)
    routes = [Route(a, "local", ifname="bench0") for a in addresses(n, 10)]
    dataplane.set_desired(DesiredState(routes=frozenset(routes)))
    await dataplane.apply()
    moved = {r.dst for r in routes[::100]}  # 1%: these now leave by the other interface
    changed = frozenset(
        Route(r.dst, "local", ifname="bench1" if r.dst in moved else "bench0") for r in routes
    )
    dataplane.set_desired(DesiredState(routes=changed))
    dataplane.invalidate()
    start = time.perf_counter()
    plan = await dataplane.apply()
    full = time.perf_counter() - start
    back = frozenset(routes)
    dataplane.set_desired(DesiredState(routes=back))
    start = time.perf_counter()
    await dataplane.apply()
    kept = time.perf_counter() - start
    dataplane.netlink.close()
    return full, kept, len(plan.replace)


def interface_latency(count: int, tmp: Path) -> list[float]:
    """Seconds from a workload interface appearing (endpoint already known) to its route."""
    etcd = EtcdServer(tmp / "etcd", log_file=tmp / "etcd.log")
    etcd.start()
    felix: subprocess.Popen[bytes] | None = None
    try:
        kv = EtcdKV(DatastoreConfig(etcd_endpoints=(etcd.url,)))
        store = ResourceStore(kv, KeyLayout())
        for i in range(count):
            store.create(
                WorkloadEndpoint.model_validate(
                    {
                        "metadata": {"name": f"bench-{i}", "namespace": "default"},
                        "spec": {
                            "node": "bench",
                            "interfaceName": f"calibench{i:05d}",
                            "ipNetworks": [f"10.200.0.{i}/32"],
                        },
                    }
                )
            )
        port = free_port()
        env = {
            **os.environ,
            "FELID_ETCD_ENDPOINTS": etcd.url,
            "FELID_NODENAME": "bench",
            "FELIX_HEALTHPORT": str(port),
        }
        with open(tmp / "felix.log", "wb") as log:
            felix = subprocess.Popen(
                [str(Path(sys.executable).parent / "felid-felix")],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readiness", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(0.05)
        bulk = Rtnl()
        took = []
        for i in range(count):
            name = f"calibench{i:05d}"
            subprocess.run(
                ["ip", "link", "add", name, "type", "veth", "peer", "name", f"bpeer{i}"], check=True
            )
            subprocess.run(["ip", "link", "set", name, "up"], check=True)
            start = time.perf_counter()  # the link exists from here on
            while not any(r.dst == f"10.200.0.{i}" for r in bulk.dump_routes(80)):
                if time.perf_counter() - start > 5:
                    raise RuntimeError(f"no route for {name} after 5 s")
            took.append(time.perf_counter() - start)
        bulk.close()
        kv.close()
        return took
    finally:
        if felix is not None:
            felix.kill()
            felix.wait()
        etcd.stop()


def worker() -> None:
    subprocess.run(["ip", "link", "add", "bench0", "type", "veth", "peer", "name", "bench1"], check=True)
    for name in ("bench0", "bench1", "lo"):
        subprocess.run(["ip", "link", "set", name, "up"], check=True)
    print(f"{'routes':>8} {'ip -batch':>11} {'felix':>9} {'ratio':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in SIZES:
            baseline = ip_batch(n, Path(tmp))
            flush()
            ours = asyncio.run(felix_add(n))
            flush()
            print(f"{n:>8} {baseline:>10.3f}s {ours:>8.3f}s {ours / baseline:>7.2f}")
    full, kept, replaced = asyncio.run(felix_resync(SIZES[-1]))
    print(
        f"resync of {SIZES[-1]} routes, {replaced} changed: {full:.3f}s with a full kernel read-back, "
        f"{kept:.3f}s from felix's kept view"
    )
    flush()
    with tempfile.TemporaryDirectory() as tmp:
        took = sorted(interface_latency(50, Path(tmp)))
    print(
        "workload interface up -> its route (felix running, 50 interfaces): "
        f"median {statistics.median(took) * 1000:.1f} ms, max {took[-1] * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    if parser.parse_args().worker:
        worker()
        return
    netns = f"felid-bench-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(
            ["ip", "netns", "exec", netns, sys.executable, "-m", "bench.felix_routes", "--worker"], check=True
        )
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)


if __name__ == "__main__":
    main()
