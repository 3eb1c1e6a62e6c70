"""Workloads as a container runtime makes them: CNI plugins run for real, and pings between them."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping
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
