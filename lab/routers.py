"""BGP routers nobody here wrote, as real peers in lab namespaces: BIRD 2, GoBGP and FRR's bgpd.

Each keeps its sockets, logs and state in a directory of its own, so several run at once, and is
stopped by PID.  BIRD exports what it learns to its host's kernel (a baseline for felid's own
programming); GoBGP (no zebra section) and bgpd (``-Z``) touch no kernel.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lab.network import LabHost
from lab.processes import kill_group

ESTABLISHED = 6  # GoBGP's session_state number for Established


def _client(argv: list[str]) -> str:
    """A router's command-line client (from the root namespace: they talk over unix sockets)."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


class _Daemon:
    """A router process in a host's namespace, in its own process group."""

    def __init__(self, host: LabHost, directory: Path) -> None:
        self.host = host
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None

    def _spawn(self, argv: list[str]) -> None:
        with open(self.dir / "stdout.log", "ab") as out:
            self.process = subprocess.Popen(
                ["ip", "netns", "exec", self.host.netns, *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL, as a crash: the peers see their sessions drop."""
        proc, self.process = self.process, None
        kill_group(proc)


TEMPLATE = """
router id {router_id};
log "{log}" all;
protocol device {{ }}
protocol kernel {{ ipv4 {{ import none; export all; }}; }}
protocol static {{ ipv4; {statics} }}
template bgp felid {{
    local {router_id} as {asn};
    direct;  # the peers share its LAN: next hops need no recursive lookup
    ipv4 {{ import all; export {export}; }};
    graceful restart on;
{reflector}}}
{neighbors}
"""


class Bird(_Daemon):
    """BIRD 2, exporting what it learns to its host's kernel (``proto bird``)."""

    def __init__(
        self,
        host: LabHost,
        work: Path,
        peers: Iterable[LabHost],
        *,
        asn: int = 64512,
        peer_as: int | None = None,
        statics: Iterable[str] = (),
        cluster_id: str | None = None,
        password: str | None = None,
        options: str = "",
        export: str = "all",
    ) -> None:
        """iBGP with ``peers`` unless ``peer_as`` (their AS) makes it eBGP; ``password``: TCP-MD5;
        ``options``: more of each session's statements; ``export``: its export ``all`` or a filter."""
        super().__init__(host, work / f"bird-{host.node}")
        self.peers = [p.address for p in peers]
        reflector = f"    rr client;\n    rr cluster id {cluster_id};\n" if cluster_id else ""
        md5 = f' password "{password}";' if password else ""
        neighbors = "\n".join(
            f"protocol bgp felid_{i} from felid {{ neighbor {p.address} as {peer_as or asn};{md5} {options}}}"
            for i, p in enumerate(peers)
        )
        (self.dir / "bird.conf").write_text(
            TEMPLATE.format(
                router_id=host.address,
                log=self.dir / "bird.log",
                statics=" ".join(f"route {s} blackhole;" for s in statics),
                asn=asn,
                reflector=reflector,
                neighbors=neighbors,
                export=export,
            )
        )

    def start(self) -> None:
        self._spawn(["bird", "-f", "-c", str(self.dir / "bird.conf"), "-s", str(self.dir / "bird.ctl")])

    def birdc(self, *command: str) -> str:
        """A birdc command's output; empty while BIRD's control socket is not there yet."""
        if not (self.dir / "bird.ctl").exists():
            return ""
        return _client(["birdc", "-s", str(self.dir / "bird.ctl"), *command])

    def routes(self) -> dict[str, list[dict[str, Any]]]:
        """Every BGP route BIRD holds: prefix -> one entry per peer that gave it (``from``,
        ``next_hop``, ``communities`` as aa:nn and aa:nn:mm, ``as_path``)."""
        shown = self.birdc("show", "route", "all")
        out: dict[str, list[dict[str, Any]]] = {}
        prefix = ""
        route: dict[str, Any] | None = None
        for line in shown.splitlines():
            head = re.match(r"^(\S+/\d+)?\s+unicast \[([^\]]*)\]", line)
            if head:
                prefix = head.group(1) or prefix
                # BIRD names the session (felid_<i>, the i-th peer); a static route has none.
                session = re.match(r"felid_(\d+) ", head.group(2))
                peer = self.peers[int(session.group(1))] if session else None
                route = {"from": peer, "communities": [], "as_path": []} if peer else None
                if route is not None:
                    out.setdefault(prefix, []).append(route)
            elif route is not None and (attr := re.match(r"^\s+BGP\.(\w+): ?(.*)$", line)):
                name, value = attr.groups()
                if name == "next_hop":
                    route["next_hop"] = value.split()[0]
                elif name == "as_path":
                    route["as_path"] = [int(a) for a in value.split()]
                elif name in ("community", "large_community"):
                    route["communities"] += [
                        ":".join(p.split()) for p in re.findall(r"\(([^)]*)\)", value.replace(",", " "))
                    ]
        return out

    def established(self) -> int:
        """How many of its BGP sessions are Established."""
        shown = self.birdc("show", "protocols")
        return sum(1 for line in shown.splitlines() if line.startswith("felid_") and "Established" in line)


class GoBGP(_Daemon):
    """gobgpd (Debian's gobgpd) with the gobgp CLI on a unix socket; no graceful restart unless asked."""

    def __init__(
        self,
        host: LabHost,
        work: Path,
        asn: int,
        neighbors: Iterable[tuple[str, int]],
        *,
        graceful_restart: bool = False,
    ) -> None:
        super().__init__(host, work / f"gobgp-{host.node}")
        self.socket = self.dir / "api.sock"
        lines = [
            "[global.config]",
            f"  as = {asn}",
            f'  router-id = "{host.address}"',
            f'  local-address-list = ["{host.address}"]',
        ]
        for address, peer_as in neighbors:
            lines += [
                "[[neighbors]]",
                "  [neighbors.config]",
                f'    neighbor-address = "{address}"',
                f"    peer-as = {peer_as}",
                "  [neighbors.timers.config]",
                "    connect-retry = 5",  # its default is 120 s between attempts
            ]
            if graceful_restart:
                lines += ["  [neighbors.graceful-restart.config]", "    enabled = true"]
            lines += [
                "  [[neighbors.afi-safis]]",
                "    [neighbors.afi-safis.config]",
                '      afi-safi-name = "ipv4-unicast"',
            ]
            if graceful_restart:
                lines += ["    [neighbors.afi-safis.mp-graceful-restart.config]", "      enabled = true"]
        (self.dir / "gobgpd.toml").write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        self.socket.unlink(missing_ok=True)  # a SIGKILLed gobgpd leaves it, and a new one would not start
        self._spawn(
            [
                "gobgpd",
                "-f",
                str(self.dir / "gobgpd.toml"),
                "-p",
                "--pprof-disable",
                f"--api-hosts=unix://{self.socket}",
            ]
        )

    def cli(self, *args: str) -> str:
        return _client(["gobgp", "--target", f"unix://{self.socket}", *args])

    def announce(self, prefix: str) -> None:
        self.cli("global", "rib", "add", prefix, "-a", "ipv4")

    def withdraw(self, prefix: str) -> None:
        self.cli("global", "rib", "del", prefix, "-a", "ipv4")

    def established(self, address: str) -> bool:
        try:
            peers: list[dict[str, Any]] = json.loads(self.cli("neighbor", "-j"))
        except RuntimeError:
            return False  # not answering yet
        return any(
            p["conf"]["neighbor_address"] == address and p["state"].get("session_state") == ESTABLISHED
            for p in peers
        )

    def received(self, address: str) -> dict[str, str]:
        """What ``address`` announced to us and we accepted: prefix -> next hop."""
        table: dict[str, list[dict[str, Any]]] = json.loads(self.cli("neighbor", address, "adj-in", "-j"))
        out = {}
        for prefix, paths in table.items():
            for path in paths:
                hops = [a.get("nexthop") for a in path.get("attrs", []) if a.get("nexthop")]
                if hops:
                    out[prefix] = str(hops[0])
        return out


class FRR(_Daemon):
    """FRR's bgpd alone (no zebra, so nothing reaches a kernel), as a route reflector of ``clients``."""

    def __init__(
        self, host: LabHost, work: Path, clients: Iterable[str], *, asn: int, cluster_id: str
    ) -> None:
        super().__init__(host, work / f"frr-{host.node}")
        lines = [
            f"hostname {host.node}",
            f"log file {self.dir / 'bgpd.log'}",
            f"router bgp {asn}",
            f" bgp router-id {host.address}",
            f" bgp cluster-id {cluster_id}",
            " bgp log-neighbor-changes",
            " no bgp ebgp-requires-policy",
            " neighbor clients peer-group",
            f" neighbor clients remote-as {asn}",
            " neighbor clients timers connect 5",  # its default is 120 s between attempts
        ]
        lines += [f" neighbor {client} peer-group clients" for client in clients]
        lines += [
            " address-family ipv4 unicast",
            "  neighbor clients route-reflector-client",
            " exit-address-family",
        ]
        (self.dir / "bgpd.conf").write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        self._spawn(
            [
                "/usr/lib/frr/bgpd",
                "-Z",  # no zebra: nothing in any kernel
                "-S",  # stay root (root is not in FRR's vty group)
                "-P",
                "0",
                "-f",
                str(self.dir / "bgpd.conf"),
                "-i",
                str(self.dir / "bgpd.pid"),
                "--vty_socket",
                str(self.dir),
            ]
        )

    def vtysh(self, command: str) -> Any:
        shown = _client(["vtysh", "--vty_socket", str(self.dir), "-c", command])
        return json.loads(shown) if command.endswith(" json") else shown

    def established(self) -> set[str]:
        try:
            summary = self.vtysh("show bgp summary json")
        except (RuntimeError, json.JSONDecodeError):
            return set()
        peers = (summary.get("ipv4Unicast") or {}).get("peers") or {}
        return {address for address, p in peers.items() if p.get("state") == "Established"}

    def advertised_to(self, client: str) -> set[str]:
        shown = self.vtysh(f"show bgp ipv4 unicast neighbors {client} advertised-routes json")
        return set((shown.get("advertisedRoutes") or {}).keys())
