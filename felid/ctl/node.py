"""``felidctl node status``: is felid running on this host, and its BGP sessions, as calicoctl shows them.

It asks the local processes themselves (run it on the host, or with ``ip netns
exec`` in a host namespace): felix's health endpoint and the bgp agent's
``/status``, which reports ExaBGP's live session states.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

from bgp.config import BGPSettings
from datastore.health import get_local
from felid.node.config import NodeSettings


def boxed(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """calicoctl's table: +---+ rules, centred headers."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    head = "|" + "|".join(f" {h.center(w)} " for h, w in zip(headers, widths, strict=True)) + "|"
    body = [
        "|" + "|".join(f" {str(c).ljust(w)} " for c, w in zip(r, widths, strict=True)) + "|" for r in rows
    ]
    return "\n".join([rule, head, rule, *body, rule]) + "\n"


def _since(stamp: float) -> str:
    if not stamp:
        return ""
    fmt = "%H:%M:%S" if time.time() - stamp < 86400 else "%Y-%m-%d"
    return time.strftime(fmt, time.localtime(stamp))


def _agent(name: str, agent: dict[str, Any] | None) -> str:
    if not agent or not agent.get("running"):
        error = agent.get("lastError") if agent else None
        return f"{name}: not running" + (f" (last failure: {error})" if error else "")
    text = f"{name}: running" + (", ready" if agent.get("ready") else ", not ready")
    return text + (f", restarted {agent['restarts']} time(s)" if agent.get("restarts") else "")


def render_status(
    felix: tuple[int, bytes] | None, bgp: dict[str, Any] | None, node: dict[str, Any] | None = None
) -> tuple[str, int]:
    """``node``: felid-node's /status when felid-node runs here; else felix's health answers alone."""
    running = felix is not None or bgp is not None or node is not None
    lines = ["felid process is running." if running else "felid process is not running."]
    if node is not None:
        agents = node.get("agents", {})
        lines.append(
            f"felid-node: {'ready' if node.get('ready') else 'not ready'} (pid {node.get('pid')}), "
            f"address {node.get('address')}"
        )
        lines.append(_agent("felix", agents.get("felix")))
        if "bgp" not in agents:
            lines.append("bgp: not used (networking backend without BGP)")
            return "\n".join(lines) + "\n", 0
    elif felix is None:
        lines.append("felix: not running")
    else:
        lines.append("felix: running" + (", ready" if felix[0] == 200 else ", not ready"))
    if bgp is None:
        lines.append(_agent("bgp", node.get("agents", {}).get("bgp") if node else None))
        return "\n".join(lines) + "\n", 0 if running else 1
    lines.append(
        f"bgp: running (ExaBGP pid {bgp.get('exabgpPID')}), AS {bgp.get('asNumber')}, "
        f"router id {bgp.get('routerID')}"
        + (f", route reflector cluster {bgp['clusterID']}" if bgp.get("clusterID") else "")
    )
    rows = [
        [p["address"], p["type"], p["state"], _since(float(p.get("since") or 0)), p["info"]]
        for p in bgp.get("peers", [])
    ]
    text = "\n".join(lines) + "\n\nIPv4 BGP status\n"
    if rows:
        text += boxed(["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"], rows)
    else:
        text += "No IPv4 peers found.\n"
    return text, 0


def _json(reply: tuple[int, bytes] | None) -> dict[str, Any] | None:
    if reply is None or reply[0] != 200:
        return None
    try:
        data = json.loads(reply[1])
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def cmd_node_status(args: argparse.Namespace) -> int:
    node = _json(get_local(args.felix_port, "/status"))  # felid-node answers here; a bare felix does not
    felix = get_local(args.felix_port, "/liveness")
    bgp = _json(get_local(args.bgp_port, "/status"))
    if felix is not None and node is None:
        felix = get_local(args.felix_port, "/readiness") or felix
    text, code = render_status(felix, bgp, node)
    print(text, end="")
    return code


def add_node_parser(sub: Any) -> None:
    node = sub.add_parser(
        "node", help="This host's felid processes.", description="This host's felid processes."
    )
    verbs = node.add_subparsers(dest="node_command", required=True, metavar="COMMAND")
    status = verbs.add_parser(
        "status", help="Whether felix and bgp run, and the BGP sessions.", description=__doc__
    )
    status.add_argument(
        "--felix-port",
        type=int,
        default=NodeSettings.default_of("health_port"),
        help="felid-node's (or a bare felix's) health port",
    )
    status.add_argument(
        "--bgp-port",
        type=int,
        default=BGPSettings.default_of("metrics_port"),
        help="the bgp agent's port (FELID_BGP_METRICS_PORT)",
    )
    status.set_defaults(handler=cmd_node_status)
