"""ExaBGP configuration rendering, checked by ExaBGP's own parser."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bgp.calc import BGPPlan, Session, Timers
from bgp.exabgp_config import UnsafeValue, environment, render

EXABGP = str(Path(sys.executable).parent / "exabgp")

PLAN = BGPPlan(
    node="n1",
    router_id="198.51.100.1",
    local_as=64512,
    listen_port=179,
    cluster_id=None,
    sessions=frozenset(
        {
            Session("198.51.100.2", 64512, "node-to-node mesh", peer_node="n2", passive=True),
            Session(
                "192.0.2.1",
                65000,
                "global",
                peer_port=1179,
                password="s3cret",
                timers=Timers(keepalive=10.0, restart_time=300),
            ),
            Session("203.0.113.1", 65100, "node specific", local_as=64600, use_node_ip=False, ttl_security=2),
        }
    ),
    announce=frozenset(),
)


def test_exabgp_accepts_what_we_render(tmp_path: Path) -> None:
    text = render(PLAN, f"{sys.executable} -m bgp.bridge /run/felid/bgp.sock")
    path = tmp_path / "exabgp.conf"
    path.write_text(text)
    done = subprocess.run(
        [EXABGP, "validate", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "neighbor 192.0.2.1 {" in text and "connect 1179;" in text and 'md5-password "s3cret";' in text
    assert "hold-time 30;" in text and "graceful-restart 300;" in text
    assert text.count("processes [ felid-bgp ];") == 3
    # localASNumber, sourceAddress None and ttlSecurity 2 (GTSM: sent at 255, taken from 254 up).
    options = text[text.index("neighbor 203.0.113.1 {") :]
    assert "local-as 64600;" in options and "local-address auto;" in options, options
    assert "outgoing-ttl 255;" in options and "incoming-ttl 254;" in options, options
    assert "local-as 64512;" in text[text.index("neighbor 192.0.2.1 {") :]
    mesh = text[text.index("neighbor 198.51.100.2 {") :]
    assert "passive true;" in mesh[: mesh.index("}")] and text.count("passive") == 1


def test_values_that_would_break_the_file_are_refused() -> None:
    bad = BGPPlan(
        **{**PLAN.__dict__, "sessions": frozenset({Session("192.0.2.1", 1, "global", password="a;b")})}
    )
    with pytest.raises(UnsafeValue):
        render(bad, "/bin/true")
    with pytest.raises(UnsafeValue):
        render(PLAN, "/bin/prog a,b")


def test_environment_binds_the_node_address_and_runs_as_root() -> None:
    env = environment(PLAN, "felid-n1", "/var/log/felid/exabgp.log", 100.0)
    assert env["exabgp.tcp.bind"] == "198.51.100.1" and env["exabgp.daemon.user"] == "root"
    assert env["exabgp.api.pipename"] == "felid-n1" and env["exabgp.reactor.speed"] == "100.0"
