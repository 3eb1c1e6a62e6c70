"""Two real ExaBGP speakers in two namespaces, driven through felid's speaker and its API relay (socat, or
bgp.bridge where socat is missing)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bgp.calc import BGPPlan, Session, waits_for
from bgp.speaker import ExaBGPSpeaker, relay_command
from lab.network import ip, namespaces

ADDRESSES = {"a": "198.51.100.1", "b": "198.51.100.2"}


def plan(me: str, other: str) -> BGPPlan:
    return BGPPlan(
        node=f"node-{me}",
        router_id=ADDRESSES[me],
        local_as=64512,
        listen_port=179,
        cluster_id=None,
        sessions=frozenset(
            {
                Session(
                    ADDRESSES[other],
                    64512,
                    "node-to-node mesh",
                    peer_node=f"node-{other}",
                    passive=waits_for(ADDRESSES[me], ADDRESSES[other]),  # as bgp.calc plans two felid nodes
                )
            }
        ),
        announce=frozenset(),
    )


async def wait_for(speaker: ExaBGPSpeaker, wanted: Any, timeout: float = 20.0) -> dict[str, Any]:
    async def scan() -> dict[str, Any]:
        while True:
            event = await speaker.events.get()
            if wanted(event):
                return event

    return await asyncio.wait_for(scan(), timeout)


def is_up(event: dict[str, Any]) -> bool:
    return event.get("type") == "state" and event["neighbor"].get("state") == "up"


def announces(prefix: str) -> Any:
    def check(event: dict[str, Any]) -> bool:
        update = event.get("neighbor", {}).get("message", {}).get("update", {})
        return any(
            prefix == n["nlri"]
            for hops in update.get("announce", {}).get("ipv4 unicast", {}).values()
            for n in hops
        )

    return check


@contextlib.contextmanager
def two_hosts() -> Iterator[dict[str, str]]:
    """Namespaces ``bgp-a`` and ``bgp-b`` with ``ADDRESSES`` on the two ends of a veth."""
    with namespaces("bgp-a", "bgp-b") as ns:
        ip("link", "add", "ftbgp-a", "type", "veth", "peer", "name", "ftbgp-b")
        for side in "ab":
            ip("link", "set", f"ftbgp-{side}", "netns", ns[f"bgp-{side}"])
            ip("-n", ns[f"bgp-{side}"], "addr", "add", f"{ADDRESSES[side]}/24", "dev", f"ftbgp-{side}")
            ip("-n", ns[f"bgp-{side}"], "link", "set", f"ftbgp-{side}", "up")
        yield ns


@pytest.mark.parametrize("relay", ["socat", "bgp.bridge"])
async def test_two_speakers_establish_and_exchange_routes(
    tmp_path: Path, relay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if relay == "bgp.bridge":  # a host without socat: the Python relay
        monkeypatch.setattr(shutil, "which", lambda name: None)
    with two_hosts() as ns:
        a = ExaBGPSpeaker(tmp_path / "a", "a", netns=ns["bgp-a"])
        b = ExaBGPSpeaker(tmp_path / "b", "b", netns=ns["bgp-b"])
        try:
            await a.send("announce route 10.9.1.0/26 next-hop self")  # queued until the bridge connects
            await a.start(plan("a", "b"))
            # A reload at once, while ExaBGP is still importing: SIGUSR1 then would kill it.
            await a.reconfigure(plan("a", "b"))
            await b.start(plan("b", "a"))
            assert f"run {relay_command(tmp_path / 'a' / 'api.sock')};" in a.config_path.read_text()
            assert relay in a.config_path.read_text()
            await wait_for(a, is_up)
            await wait_for(b, is_up)
            got = await wait_for(b, announces("10.9.1.0/26"))
            assert "198.51.100.1" in got["neighbor"]["message"]["update"]["announce"]["ipv4 unicast"]
            await b.send("announce route 10.9.2.0/26 next-hop self")
            await wait_for(a, announces("10.9.2.0/26"))
            # A new peer for a (one that never answers): the reload keeps a's session to b.
            extra = Session("198.51.100.3", 64512, "global")
            grown = plan("a", "b")
            await a.reconfigure(BGPPlan(**{**grown.__dict__, "sessions": grown.sessions | {extra}}))
            seen: list[dict[str, Any]] = []
            deadline = asyncio.get_running_loop().time() + 4
            while (left := deadline - asyncio.get_running_loop().time()) > 0:
                try:
                    seen.append(await asyncio.wait_for(a.events.get(), left))
                except TimeoutError:
                    break
            downs = [
                e
                for e in seen
                if e.get("type") == "state"
                and e["neighbor"].get("state") == "down"
                and e["neighbor"]["address"]["peer"] == ADDRESSES["b"]
            ]
            assert downs == []
            assert a.process is not None and a.process.returncode is None
            assert a.alive, "the reload cost the API relay: the agent would restart ExaBGP"
            assert "198.51.100.3" in (tmp_path / "a" / "exabgp.conf").read_text()
        finally:
            await a.stop()
            await b.stop()


async def test_thousands_of_routes_in_one_extended_update_all_arrive(tmp_path: Path) -> None:
    """Between two ExaBGPs an UPDATE may be an extended message (RFC 8654) of thousands of
    prefixes, one JSON line of hundreds of KiB: the relay carries it (asyncio's default line limit
    of 64 KiB ended it, and ExaBGP then stopped the session).  And the commands naming them are
    worked through without ExaBGP's idle sleep between each 50 routes (100 s for these, before)."""
    prefixes = [f"10.{16 + i // 1024}.{(i % 1024) // 4}.{(i % 4) * 64}/26" for i in range(5000)]
    with two_hosts() as ns:
        a = ExaBGPSpeaker(tmp_path / "a", "a", netns=ns["bgp-a"])
        b = ExaBGPSpeaker(tmp_path / "b", "b", netns=ns["bgp-b"])
        try:
            for start in range(0, len(prefixes), 500):
                await a.send(
                    f"announce attributes next-hop self nlri {' '.join(prefixes[start : start + 500])}"
                )
            await a.start(plan("a", "b"))
            await b.start(plan("b", "a"))
            got: set[str] = set()

            def all_there(event: dict[str, Any]) -> bool:
                update = event.get("neighbor", {}).get("message", {}).get("update", {})
                for hops in update.get("announce", {}).get("ipv4 unicast", {}).values():
                    got.update(n["nlri"] for n in hops)
                return len(got) == len(prefixes)

            await wait_for(b, all_there, timeout=40)
            assert b.alive and a.alive
        finally:
            await a.stop()
            await b.stop()


def test_the_bridge_exits_cleanly_when_the_agent_closes_first(tmp_path: Path) -> None:
    """ExaBGP's API process relays both ways; the agent's end closing ends it with exit 0, not an
    abort of the interpreter by the relay thread still reading ExaBGP's pipe."""
    path = tmp_path / "api.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen(1)
        bridge = subprocess.Popen(
            [sys.executable, "-m", "bgp.bridge", str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            agent, _ = server.accept()
            assert bridge.stdin is not None
            bridge.stdin.write(b'{"type": "state"}\n')
            bridge.stdin.flush()
            with agent:
                assert agent.makefile("rb").readline() == b'{"type": "state"}\n'
            assert bridge.wait(timeout=10) == 0
            assert bridge.stderr is not None and b"Fatal" not in bridge.stderr.read()
        finally:
            bridge.kill()
            bridge.wait()
