"""Workloads as a container runtime makes them: CNI plugins run for real, and pings between them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lab.processes import BIN, clean_environment


def cni(
    netns: str,
    netconf: Mapping[str, Any],
    command: str,
    container: str,
    netns_path: str = "",
    *,
    cni_args: str = "",
    plugin: str = "felid",
    environ: Mapping[str, str] | None = None,
) -> tuple[int, dict[str, Any] | None]:
    """Run a CNI plugin as a runtime would, inside host namespace ``netns``: (exit code, result JSON).
    ``environ`` adds to the plugin's environment (felid's own variables are not passed on otherwise)."""
    env = {k: v for k, v in clean_environment().items() if not k.startswith("CNI_")}
    env |= dict(environ or {})
    env |= {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container,
        "CNI_NETNS": netns_path,
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": cni_args,
        "CNI_PATH": f"/usr/lib/cni:{BIN}",
    }
    binary = str(BIN / plugin) if (BIN / plugin).exists() else f"/usr/lib/cni/{plugin}"
    done = subprocess.run(
        ["ip", "netns", "exec", netns, binary],
        input=json.dumps(netconf),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    if "Traceback" in done.stderr:
        raise RuntimeError(f"the {plugin} plugin crashed:\n{done.stderr[-3000:]}")
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else None


@dataclass(frozen=True)
class PingResult:
    source: str
    target: str
    sent: int
    received: int
    rtt_ms: float | None  # average

    @property
    def ok(self) -> bool:
        return self.received > 0 and self.received == self.sent


def ping(
    netns: str,
    target: str,
    count: int = 3,
    interval: float = 0.2,
    wait: float = 1.0,
    *,
    size: int | None = None,
    dont_fragment: bool = False,
) -> PingResult:
    """``count`` pings from ``netns``; ``size`` bytes of payload, ``dont_fragment`` sets DF (``-M do``)."""
    argv = ["ip", "netns", "exec", netns, "ping", "-n", "-c", str(count), "-i", str(interval)]
    argv += ["-W", str(wait)]
    if size is not None:
        argv += ["-s", str(size)]
    if dont_fragment:
        argv += ["-M", "do"]
    done = subprocess.run([*argv, target], capture_output=True, text=True, check=False)
    counts = re.search(r"(\d+) packets transmitted, (\d+) received", done.stdout)
    rtt = re.search(r"= [\d.]+/([\d.]+)/", done.stdout)
    sent, received = (int(counts.group(1)), int(counts.group(2))) if counts else (count, 0)
    return PingResult(netns, target, sent, received, float(rtt.group(1)) if rtt else None)


FPING_PERIOD_MS = 200  # between two pings to one target (ping's -i 0.2)
FPING_INTERVAL_MS = 1  # between any two pings this fping sends
_FPING_SUMMARY = re.compile(r"^(\S+)\s+:((?:\s+(?:[\d.]+|-))+)\s*$")


def ping_many(netns: str, targets: Sequence[str], count: int = 3, wait: float = 1.0) -> list[PingResult]:
    """``count`` pings from ``netns`` to each of ``targets``, all at once by one ``fping``: a
    result per target, in order, as ``ping`` gives it (``rtt_ms`` the average of the replies)."""
    fping = shutil.which("fping")
    if fping is None:
        raise RuntimeError("fping is not installed (apt-get install fping; ./run.sh setup does)")
    unique = list(dict.fromkeys(targets))
    if not unique:
        return []
    argv = ["ip", "netns", "exec", netns, fping, "-q", "-C", str(count)]
    argv += ["-p", str(FPING_PERIOD_MS), "-i", str(FPING_INTERVAL_MS), "-t", str(round(wait * 1000))]
    rounds = max(FPING_PERIOD_MS, FPING_INTERVAL_MS * len(unique)) / 1000
    done = subprocess.run(
        [*argv, *unique], capture_output=True, text=True, check=False, timeout=count * rounds + wait + 60
    )
    # -C: one summary line per target on stderr, "10.244.0.1 : 0.05 - 0.07" ("-": no reply).
    replies: dict[str, list[float | None]] = {}
    for line in done.stderr.splitlines():
        found = _FPING_SUMMARY.match(line)
        if found and found.group(1) in unique:
            replies[found.group(1)] = [None if t == "-" else float(t) for t in found.group(2).split()]
    results = {}
    for target in unique:
        times = replies.get(target)
        if times is None:  # fping did not get to it (an address it refused): nothing answered
            results[target] = PingResult(netns, target, count, 0, None)
            continue
        answered = [t for t in times if t is not None]
        average = sum(answered) / len(answered) if answered else None
        results[target] = PingResult(netns, target, len(times), len(answered), average)
    return [results[t] for t in targets]
