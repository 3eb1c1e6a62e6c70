"""TCP and UDP probes between workloads: what policy tests send, and the listeners that answer.

``python -m lab.probes serve PORT...`` (run inside a workload's namespace) answers on each port,
TCP (accepts, writes ``ok``, closes) and UDP (echoes).  ``python -m lab.probes check TIMEOUT
PROTO:ADDRESS:PORT...`` tries each target from the namespace it runs in and prints one JSON
list of booleans: answered or not.  One process per source checks all its targets, so a truth
table costs a process per workload, not per probe.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from lab.processes import BIN

PYTHON = str(BIN / "python")


@dataclass(frozen=True)
class Probe:
    protocol: str  # tcp (a listener of ours answers), syn (anything accepts the connection) or udp
    address: str
    port: int

    def __str__(self) -> str:
        return f"{self.protocol}:{self.address}:{self.port}"


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.transport.sendto(data, addr)


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"ok")
    await writer.drain()
    writer.close()


async def serve(ports: Sequence[int]) -> None:
    loop = asyncio.get_running_loop()
    servers = [await asyncio.start_server(_answer, "0.0.0.0", p) for p in ports]
    for port in ports:
        await loop.create_datagram_endpoint(_Echo, local_addr=("0.0.0.0", port))
    print("serving", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


def _tcp(probe: Probe, timeout: float) -> bool:
    try:
        with socket.create_connection((probe.address, probe.port), timeout=timeout) as conn:
            return probe.protocol == "syn" or conn.recv(2) == b"ok"
    except OSError:
        return False


def _udp(probe: Probe, timeout: float) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(b"probe", (probe.address, probe.port))
            return sock.recv(16) == b"probe"
        except OSError:
            return False


def check_here(probes: Sequence[Probe], timeout: float) -> list[bool]:
    from concurrent.futures import ThreadPoolExecutor

    def one(probe: Probe) -> bool:
        return _udp(probe, timeout) if probe.protocol == "udp" else _tcp(probe, timeout)

    with ThreadPoolExecutor(max_workers=max(1, len(probes))) as pool:
        return list(pool.map(one, probes))


def check(netns: str, probes: Sequence[Probe], timeout: float = 1.0) -> list[bool]:
    """From inside ``netns``: which of ``probes`` were answered."""
    if not probes:
        return []
    done = subprocess.run(
        ["ip", "netns", "exec", netns, PYTHON, "-m", "lab.probes", "check", str(timeout), *map(str, probes)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    answered = json.loads(done.stdout)
    assert isinstance(answered, list)
    return [bool(a) for a in answered]


def listen(netns: str, ports: Sequence[int]) -> subprocess.Popen[str]:
    """Start the listeners in ``netns``; the caller kills the process (by PID) when done."""
    process = subprocess.Popen(
        ["ip", "netns", "exec", netns, PYTHON, "-m", "lab.probes", "serve", *map(str, ports)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "serving"
    return process


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["serve"]:
        asyncio.run(serve([int(p) for p in argv[1:]]))
        return 0
    if argv[:1] == ["check"]:
        probes = []
        for text in argv[2:]:
            protocol, address, port = text.split(":")
            probes.append(Probe(protocol, address, int(port)))
        print(json.dumps(check_here(probes, float(argv[1]))))
        return 0
    print("usage: python -m lab.probes serve PORT... | check TIMEOUT PROTO:ADDRESS:PORT...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
