"""Idle cost of one host's felid: ``python -m bench.idle``.

One host's felid is felid-node's process tree: felid-node (felix and the bgp agent run inside it),
ExaBGP and ExaBGP's API relay (socat; ``python -m bgp.bridge`` where socat is missing). The lab is
two felid hosts (node-1, the measured one, and node-2: one mesh session) and one BIRD 2 process in a
namespace of its own holding many addresses on the hosts' LAN; node-specific BGPPeers give node-1
one session to each of as many of BIRD's addresses as it takes to reach ``--sessions`` (2 and 40: 1
mesh + 1 BIRD, then 1 mesh + 39 BIRD), every one of them established. BIRD is passive, so ExaBGP's
side is as it is in a cluster: it connects, keeps the session up, sends keepalives.

For each session count, once every session is up and the datastore is left alone for
``--settle`` seconds, the CPU time (utime + stime, and cutime + cstime: what reaped short-lived
children cost) of every process in node-1's tree is read from ``/proc/<pid>/stat`` at the start
and the end of a ``--window`` (default 90 s: felix's route refresh interval, so each window holds
exactly one of its full kernel reads) and printed as % of one core, per process and in total.

Baseline, in the same window: a bare ExaBGP (same version; the environment felid gives its own,
``bgp.exabgp_config.environment``, plus the exabgp.* settings of ``--node-env``) in a namespace of
its own, with as many sessions, all established to BIRD, the neighbor options felid writes (hold
time 90, graceful restart, route refresh) and no API process.  It is what ExaBGP costs alone with
felid's settings; the rest is what felid adds.  BIRD's own CPU (all its sessions) is shown for
scale.

Keepalives: a raw-socket sniffer in node-1's namespace (and in the baseline's) timestamps every
BGP KEEPALIVE each one sends during the window; the largest gap between two on one session is
printed beside the negotiated keepalive interval (hold time / 3 = 30 s), so a setting that makes the
reactor sleep longer shows whether keepalives still go on time.

``--node-env KEY=VALUE`` (repeatable) is added to every felid-node's environment, and exabgp.* ones
to the baseline's too: ``--node-env FELID_BGP_EXABGP_REACTOR_SPEED=10`` measures another reactor
speed on both felid's ExaBGP and the baseline.

The machine's busy share over the window (``/proc/stat``) is printed too: other work on the
machine slows the loops measured here, and the figures are only comparable between quiet runs.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.cluster import descendants
from bgp.calc import BGPPlan
from bgp.config import BGPSettings
from bgp.exabgp_config import environment
from lab import network
from lab.cluster import Cluster
from lab.network import LabHost
from lab.processes import BIN, clean_environment, kill_group

ASN = 64512
HOLD = 90  # felid's hold time (bgp.exabgp_config.DEFAULT_HOLD); BIRD's default is longer, so this one holds
SPEED: float = BGPSettings.default_of("exabgp_reactor_speed")
BIRD_ADDRESS = f"{network.SUBNET}.100"  # BIRD's router ID and first address
BARE_ADDRESS = f"{network.SUBNET}.99"  # the baseline ExaBGP
MAX_SESSIONS = 49  # BIRD's addresses facing node-1 are .101-.149, those facing the baseline .151-.199
READY_TIMEOUT = 180.0
TICK = os.sysconf("SC_CLK_TCK")
# What each process of the tree is, by the program it runs.
ROLES = ("felid-node", "exabgp")  # and the API relay: socat, or bgp.bridge
EXABGP_MAIN = "bgp.exabgp_main"  # how felid starts ExaBGP: counted as exabgp
BASELINE, BIRD = "baseline", "bird"  # the other processes measured in the same window


def felid_peer(i: int) -> str:
    """BIRD's i-th address facing node-1."""
    return f"{network.SUBNET}.{101 + i}"


def bare_peer(i: int) -> str:
    """BIRD's i-th address facing the baseline ExaBGP."""
    return f"{network.SUBNET}.{151 + i}"


# -- processes ------------------------------------------------------------------------------------


@contextlib.contextmanager
def spawned(
    host: LabHost, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` in ``host``'s namespace as its own process group, SIGKILLed (by group) on the way out."""
    with open(log, "ab") as out:
        process = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        kill_group(process)


def wait_for(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    running: Sequence[tuple[subprocess.Popen[bytes], Path]] = (),
) -> None:
    """Poll ``check`` until true; a TimeoutError naming ``what`` after ``timeout`` seconds, or an error
    with its log as soon as one of the ``running`` processes has exited."""
    deadline = time.monotonic() + timeout
    while not check():
        for process, log in running:
            if process.poll() is not None:
                raise RuntimeError(f"{process.pid} exited {process.returncode}:\n{log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.2)


# -- BIRD -----------------------------------------------------------------------------------------

BIRD_CONF = """
router id {router_id};
log "{log}" all;
protocol device {{ }}
template bgp peer {{
    local as {asn};
    direct;
    passive on;
    ipv4 {{ import all; export none; }};
}}
{protocols}
"""


class ManyAddressBird:
    """One BIRD 2 holding ``felid`` passive sessions to node-1 and ``bare`` to the baseline ExaBGP,
    each from an address of its own (``local``), all of them on its NIC."""

    def __init__(self, host: LabHost, directory: Path, felid: str, felid_count: int, bare_count: int) -> None:
        self.host = host
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        # BIRD lets one protocol at a time talk to a (neighbor, port): each gets a port of its own,
        # which it never connects to (passive); connections come to port 179 of its ``local`` address.
        line = (
            "protocol bgp {name} from peer {{ local {local} as {asn}; "
            "neighbor {peer} port {port} as {asn}; }}"
        )
        protocols = [
            line.format(name=f"felid_{i}", local=felid_peer(i), peer=felid, port=10000 + i, asn=ASN)
            for i in range(felid_count)
        ] + [
            line.format(name=f"bare_{i}", local=bare_peer(i), peer=BARE_ADDRESS, port=10000 + i, asn=ASN)
            for i in range(bare_count)
        ]
        for address in [felid_peer(i) for i in range(felid_count)] + [
            bare_peer(i) for i in range(bare_count)
        ]:
            network.ip("-n", host.netns, "addr", "add", f"{address}/{network.PREFIX_LENGTH}", "dev", host.nic)
        (self.dir / "bird.conf").write_text(
            BIRD_CONF.format(
                router_id=host.address, log=self.dir / "bird.log", asn=ASN, protocols="\n".join(protocols)
            )
        )

    @property
    def argv(self) -> list[str]:
        return ["bird", "-f", "-c", str(self.dir / "bird.conf"), "-s", str(self.dir / "bird.ctl")]

    def protocols(self) -> list[str]:
        """``birdc show protocols``, a line per protocol; none while BIRD is not answering yet."""
        if not (self.dir / "bird.ctl").exists():
            return []
        done = subprocess.run(
            ["birdc", "-s", str(self.dir / "bird.ctl"), "show", "protocols"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        return done.stdout.splitlines() if done.returncode == 0 else []

    def passive(self) -> bool:
        """Every session waits for its connection (so a peer's first attempt is not refused, which
        would put ExaBGP's retries into backoff and the up times below in doubt)."""
        lines = self.protocols()
        return bool(lines) and all(
            "Passive" in line for line in lines if line.startswith(("felid_", "bare_"))
        )

    def established(self, prefix: str) -> int:
        """How many of its sessions named ``<prefix>_<i>`` are Established."""
        return sum(1 for line in self.protocols() if line.startswith(f"{prefix}_") and "Established" in line)


# -- the baseline ExaBGP --------------------------------------------------------------------------


def bare_config(count: int) -> str:
    """The neighbor options felid's bgp.exabgp_config writes, without its API process."""
    blocks = [
        f"neighbor {bare_peer(i)} {{\n"
        f"    router-id {BARE_ADDRESS};\n"
        f"    local-address {BARE_ADDRESS};\n"
        f"    local-as {ASN};\n"
        f"    peer-as {ASN};\n"
        f"    hold-time {HOLD};\n"
        "    family { ipv4 unicast; }\n"
        "    capability { graceful-restart 120; route-refresh; }\n"
        "}\n"
        for i in range(count)
    ]
    return "\n".join(blocks)


def bare_environment(log: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """felid's own ExaBGP environment (bgp.exabgp_config.environment, so the baseline follows it),
    with the baseline's address, and the exabgp.* settings of ``--node-env``."""
    plan = BGPPlan("bare", BARE_ADDRESS, ASN, 179, None, frozenset(), frozenset())
    speed = float(extra.get(BGPSettings.env_name("exabgp_reactor_speed"), SPEED))
    return {
        **clean_environment(),
        **environment(plan, "bare", str(log), speed),
        **{k: v for k, v in extra.items() if k.lower().startswith("exabgp")},
    }


# -- CPU time -------------------------------------------------------------------------------------


def program(pid: int) -> str:
    """What a process runs: the module of ``python -m``, the script a python runs, or the binary."""
    argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    if not argv:
        return "?"
    if "-m" in argv[:-1]:
        module = argv[argv.index("-m") + 1]
        return "exabgp" if module == EXABGP_MAIN else module
    if Path(argv[0]).name.startswith("python") and len(argv) > 1:
        return Path(argv[1]).name
    return Path(argv[0]).name


def cpu_ticks(pid: int) -> int:
    """utime + stime + cutime + cstime of ``pid`` in clock ticks: all its threads, its reaped children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15])


def machine_ticks() -> tuple[int, int]:
    """(busy, total) ticks of all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


@dataclass
class Window:
    """CPU ticks of some processes at the start of a window (``start``), then at its end (``stop``)."""

    pids: dict[int, str]  # pid -> program
    started: dict[int, int]
    machine: tuple[int, int]
    t0: float
    ended: dict[int, int] | None = None
    machine_end: tuple[int, int] = (0, 0)
    t1: float = 0.0

    @classmethod
    def start(cls, pids: Mapping[int, str]) -> Window:
        return cls(dict(pids), {p: cpu_ticks(p) for p in pids}, machine_ticks(), time.monotonic())

    def stop(self) -> None:
        self.ended = {p: cpu_ticks(p) for p in self.pids}  # an exited process fails this: the run is void
        self.machine_end = machine_ticks()
        self.t1 = time.monotonic()

    def percent(self, pids: Sequence[int]) -> float:
        """% of one core used by ``pids`` together over the window."""
        assert self.ended is not None
        ticks = sum(self.ended[p] - self.started[p] for p in pids)
        return 100.0 * ticks / TICK / (self.t1 - self.t0)

    def by_program(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name in dict.fromkeys(self.pids.values()):
            out[name] = self.percent([p for p, n in self.pids.items() if n == name])
        return out

    @property
    def machine_busy(self) -> float:
        """% of all the machine's cores busy over the window."""
        busy = self.machine_end[0] - self.machine[0]
        total = self.machine_end[1] - self.machine[1]
        return 100.0 * busy / total if total else 0.0


def tree(root: int) -> dict[int, str]:
    return {pid: program(pid) for pid in descendants(root)}


# -- keepalives -----------------------------------------------------------------------------------

# Prints "<time> <destination>" for each BGP KEEPALIVE this namespace's NIC sends (messages in a
# segment are walked by their length; at rest each segment is one message).
SNIFFER = r"""
import socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))  # ETH_P_ALL: what is sent too
s.bind((sys.argv[1], 3))
print("# up", flush=True)
while True:
    frame, where = s.recvfrom(65535)
    if where[2] != socket.PACKET_OUTGOING or frame[12:14] != b"\x08\x00":
        continue
    ip = frame[14:]
    if ip[9] != 6:
        continue
    tcp = ip[(ip[0] & 15) * 4:]
    if 179 not in struct.unpack("!HH", tcp[:4]):
        continue
    data, i = tcp[(tcp[12] >> 4) * 4:], 0
    while i + 19 <= len(data) and data[i:i + 16] == b"\xff" * 16:
        length, kind = struct.unpack("!HB", data[i + 16:i + 19])
        if kind == 4:
            print(f"{time.time():.3f} {socket.inet_ntoa(ip[16:20])}", flush=True)
        i += max(length, 19)
"""


def sniffing(log: Path) -> bool:
    return log.exists() and log.read_text().startswith("# up")


@dataclass(frozen=True)
class Keepalives:
    sent: int
    sessions: int  # sessions that sent at least two in the window, so have a gap
    largest_gap: float | None

    @classmethod
    def read(cls, path: Path) -> Keepalives:
        times: dict[str, list[float]] = {}
        for line in path.read_text().splitlines():
            if line.startswith("#"):
                continue
            stamp, peer = line.split()
            times.setdefault(peer, []).append(float(stamp))
        gaps = [b - a for stamps in times.values() for a, b in itertools.pairwise(stamps)]
        with_gap = sum(1 for stamps in times.values() if len(stamps) > 1)
        return cls(sum(len(s) for s in times.values()), with_gap, max(gaps) if gaps else None)

    def __str__(self) -> str:
        gap = f"largest gap on one session {self.largest_gap:.1f} s" if self.largest_gap else "no gap seen"
        return f"{self.sent} sent, {gap} ({self.sessions} sessions sent two or more)"


# -- the run --------------------------------------------------------------------------------------


def peer_documents(node: str, count: int) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "BGPPeer",
            "metadata": {"name": f"idle-bird-{i}"},
            "spec": {"node": node, "peerIP": felid_peer(i), "asNumber": ASN},
        }
        for i in range(count)
    ]


def report(
    sessions: int, window: Window, keepalives: Mapping[str, Keepalives], up: tuple[float, float, float]
) -> None:
    seconds = window.t1 - window.t0
    print(
        f"\nnode-1 with {sessions} BGP sessions (1 mesh + {sessions - 1} BIRD), {seconds:.0f} s window, "
        f"CPU in % of one core:"
    )
    programs = window.by_program()
    for name in (*ROLES, *sorted(set(programs) - {*ROLES, BASELINE, BIRD})):
        if name in programs:
            print(f"  {name:<14}{programs[name]:6.2f}")
    felid = [pid for pid, name in window.pids.items() if name not in (BASELINE, BIRD)]
    print(f"  {'all':<14}{window.percent(felid):6.2f}   (goal < 1.00)")
    print(
        f"  baseline: bare ExaBGP, {sessions} sessions, same ExaBGP settings, no API, no felid: "
        f"{programs[BASELINE]:.2f}"
    )
    print(f"  for scale: BIRD holding {2 * sessions - 1} sessions: {programs[BIRD]:.2f}")
    print(f"  keepalives (one due every {HOLD // 3} s, hold time {HOLD} s):")
    print(f"    node-1:   {keepalives['felid']}")
    print(f"    baseline: {keepalives['bare']}")
    print(
        f"  sessions up: BIRD's with node-1 {up[0]:.1f} s after felidctl apply of the BGPPeers began, "
        f"node-1 ready {up[1]:.1f} s after; the baseline's {up[2]:.1f} s after it started"
    )
    print(
        f"  machine: {window.machine_busy:.0f}% of its {os.cpu_count()} cores busy over the window",
        flush=True,
    )


@dataclass
class IdleLab:
    """node-1 (measured), node-2, BIRD and the baseline's namespace, with BIRD running."""

    cluster: Cluster
    bird: ManyAddressBird
    bird_process: subprocess.Popen[bytes]
    bare_host: LabHost
    args: argparse.Namespace
    work: Path

    @property
    def measured(self) -> LabHost:
        return self.cluster.hosts[0]

    def felid_sessions(self, count: int) -> tuple[float, float]:
        """node-1 given ``count`` sessions: seconds from ``felidctl apply`` of the BGPPeers (its own
        start-up included) until BIRD has all of its sessions up, and until felid-node says it is ready."""
        written = time.monotonic()  # felidctl's start: it writes, then exits; the sessions may be up by then
        self.cluster.apply(peer_documents(self.measured.node, count - 1))
        running = [(self.bird_process, self.bird.dir / "stdout.log")]

        def up() -> bool:
            return self.bird.established("felid") == count - 1

        wait_for(up, READY_TIMEOUT, f"node-1's {count - 1} sessions with BIRD up", running)
        bird_up = time.monotonic() - written
        wait_for(lambda: self.cluster.ready(self.measured), READY_TIMEOUT, "node-1 ready", running)
        return bird_up, time.monotonic() - written

    @contextlib.contextmanager
    def baseline(self, count: int) -> Iterator[tuple[subprocess.Popen[bytes], float]]:
        """The bare ExaBGP with ``count`` sessions, and the seconds it took until all were up."""
        home = Path(self.bare_host.home)
        config = home / f"exabgp-{count}.conf"
        config.write_text(bare_config(count))
        argv = ["setpriv", "--pdeathsig", "KILL", "--", str(BIN / "exabgp"), str(config)]
        env = bare_environment(home / "exabgp.log", self.args.node_env)
        started = time.monotonic()
        with spawned(self.bare_host, argv, home / "exabgp.out", env) as process:

            def up() -> bool:
                return self.bird.established("bare") == count

            running = [(self.bird_process, self.bird.dir / "stdout.log"), (process, home / "exabgp.out")]
            wait_for(up, READY_TIMEOUT, f"the baseline's {count} sessions up", running)
            yield process, time.monotonic() - started

    def window(self, count: int, bare: subprocess.Popen[bytes]) -> tuple[Window, dict[str, Keepalives]]:
        """CPU over one window, with keepalives sniffed on node-1 and the baseline."""
        felid = tree(self.cluster.nodes[self.measured.node])
        missing = set(ROLES) - set(felid.values())
        if missing:
            raise RuntimeError(f"node-1's tree has no {', '.join(sorted(missing))}: {felid}")
        logs = {name: self.work / f"keepalives-{name}-{count}.txt" for name in ("felid", "bare")}
        hosts = {"felid": self.measured, "bare": self.bare_host}
        with contextlib.ExitStack() as sniffers:
            for name, log in logs.items():
                sniffers.enter_context(
                    spawned(hosts[name], [sys.executable, "-c", SNIFFER, hosts[name].nic], log)
                )
            for log in logs.values():
                wait_for(functools.partial(sniffing, log), 60, f"a sniffer writing {log}")
            window = Window.start({**felid, bare.pid: BASELINE, self.bird_process.pid: BIRD})
            time.sleep(self.args.window)
            window.stop()
        if tree(self.cluster.nodes[self.measured.node]).keys() != felid.keys():
            print("  (node-1's process tree changed during the window)")
        return window, {name: Keepalives.read(log) for name, log in logs.items()}


def measure(cluster: Cluster, args: argparse.Namespace, work: Path) -> None:
    counts = sorted(int(s) for s in args.sessions.split(","))
    if counts[0] < 2 or counts[-1] > MAX_SESSIONS:
        raise SystemExit(f"--sessions: from 2 to {MAX_SESSIONS}")
    lab = cluster.build()
    for host in cluster.hosts:
        cluster.start_node(host)
    cluster.wait_ready(timeout=READY_TIMEOUT)
    bird_host = lab.add_host("bird", BIRD_ADDRESS, work)
    bare_host = lab.add_host("bare", BARE_ADDRESS, work)
    for host in (bird_host, bare_host):
        Path(host.home).mkdir(parents=True, exist_ok=True)
    bird = ManyAddressBird(
        bird_host, Path(bird_host.home), cluster.hosts[0].address, counts[-1] - 1, counts[-1]
    )
    with spawned(bird_host, bird.argv, bird.dir / "stdout.log") as bird_process:
        wait_for(bird.passive, 60, "BIRD listening", [(bird_process, bird.dir / "stdout.log")])
        idle = IdleLab(cluster, bird, bird_process, bare_host, args, work)
        for count in counts:
            bird_up, ready = idle.felid_sessions(count)
            with idle.baseline(count) as (bare, bare_up):
                time.sleep(args.settle)
                window, keepalives = idle.window(count, bare)
            report(count, window, keepalives, (bird_up, ready, bare_up))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", default="2,40", help="node-1's session counts, comma-separated")
    parser.add_argument("--window", type=float, default=90.0, help="seconds of CPU time measured")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds left alone before the window")
    parser.add_argument(
        "--node-env", action="append", default=[], metavar="KEY=VALUE", help="more felid-node environment"
    )
    parser.add_argument(
        "--work", type=Path, help="keep the logs in this directory (default: a temporary one)"
    )
    args = parser.parse_args()
    args.node_env = dict(item.split("=", 1) for item in args.node_env)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the lab is taken down on SIGTERM too
    with contextlib.ExitStack() as stack:
        if args.work is None:
            args.work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="felid-bench-idle-")))
        cluster = Cluster(args.work, 2, prefix="fi", node_env=dict(args.node_env))
        try:
            measure(cluster, args, args.work)
        finally:
            cluster.destroy()


if __name__ == "__main__":
    main()
