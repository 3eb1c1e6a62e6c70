"""BIRD 2 as a real BGP peer in a lab namespace: iBGP neighbour or route reflector, stopped by PID."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

from lab.network import LabHost

TEMPLATE = """
router id {router_id};
log "{log}" all;
protocol device {{ }}
protocol kernel {{ ipv4 {{ import none; export all; }}; }}
protocol static {{ ipv4; {statics} }}
template bgp felid {{
    local {router_id} as {asn};
    direct;  # the peers share its LAN: next hops need no recursive lookup
    ipv4 {{ import all; export all; }};
    graceful restart on;
{reflector}}}
{neighbors}
"""


class Bird:
    def __init__(
        self,
        host: LabHost,
        work: Path,
        peers: Iterable[LabHost],
        *,
        asn: int = 64512,
        statics: Iterable[str] = (),
        cluster_id: str | None = None,
    ) -> None:
        self.host = host
        self.dir = work / f"bird-{host.node}"
        self.dir.mkdir(parents=True, exist_ok=True)
        reflector = f"    rr client;\n    rr cluster id {cluster_id};\n" if cluster_id else ""
        neighbors = "\n".join(
            f"protocol bgp felid_{i} from felid {{ neighbor {p.address} as {asn}; }}"
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
            )
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.dir / "bird.out", "ab") as out:
            self.process = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.host.netns,
                    "bird",
                    "-f",
                    "-c",
                    str(self.dir / "bird.conf"),
                    "-s",
                    str(self.dir / "bird.ctl"),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def protocols(self) -> str:
        done = subprocess.run(
            ["birdc", "-s", str(self.dir / "bird.ctl"), "show", "protocols"],
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
