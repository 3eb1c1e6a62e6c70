"""felid-node: address autodetection, its settings, and start-up registration on a real etcd."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from datastore.etcd import EtcdKV
from datastore.models import ClusterInformation, IPPool, Node, Profile
from datastore.store import ResourceStore
from felid.node import startup, supervisor
from felid.node.autodetect import NoAddress, choose
from felid.node.config import NodeSettings
from felid.node.supervisor import AgentTask
from lab.agents import BGP_PORT
from lab.cluster import NODE_HEALTH_PORT, Cluster
from lab.network import http_get
from lab.processes import BIN, wait_until

ADDRESSES = [
    ("lo", "127.0.0.1/8"),
    ("cali1234", "169.254.1.1/32"),
    ("docker0", "172.17.0.1/16"),
    ("eth0", "198.51.100.7/24"),
    ("eth1", "203.0.113.7/24"),
]


def test_autodetection_methods() -> None:
    assert choose("first-found", ADDRESSES) == "198.51.100.7/24"
    assert choose("interface=eth1", ADDRESSES) == "203.0.113.7/24"
    assert choose("interface=eth.*", ADDRESSES) == "198.51.100.7/24"
    assert choose("can-reach=203.0.113.99", ADDRESSES, reach_source="203.0.113.7") == "203.0.113.7/24"
    with pytest.raises(NoAddress, match="interface=wlan0"):
        choose("interface=wlan0", ADDRESSES)
    with pytest.raises(NoAddress, match="first-found"):
        choose("first-found", ADDRESSES[:3])


def check_config(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FELID_")}
    return subprocess.run(
        [str(BIN / "felid-node"), "--check-config"],
        env=clean | env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_check_config_names_the_bad_setting() -> None:
    good = check_config(
        FELID_NODENAME="n1", FELID_IPV4POOL_CIDR="10.10.0.0/16", FELID_IPV4POOL_VXLAN="Always"
    )
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout.rsplit("}", 1)[0] + "}")["ipv4pool_vxlan"] == "Always"
    bad = check_config(FELID_IPV4POOL_IPIP="Sometimes")
    assert bad.returncode == 1 and "FELID_IPV4POOL_IPIP" in bad.stderr, bad.stderr
    bad = check_config(FELID_IP_AUTODETECTION_METHOD="can-reach=nowhere")
    assert bad.returncode == 1 and "FELID_IP_AUTODETECTION_METHOD" in bad.stderr, bad.stderr
    bad = check_config(FELID_IPV4POOL_CIDR="10.10.0.1/16")
    assert bad.returncode == 1 and "FELID_IPV4POOL_CIDR" in bad.stderr, bad.stderr


def test_nodes_starting_at_once_create_one_pool_and_distinct_tunnel_addresses(
    store: ResourceStore, kv: EtcdKV
) -> None:
    settings = NodeSettings(ipv4pool_cidr="10.50.0.0/16", ipv4pool_ipip="Always")

    def start(i: int) -> Node:
        startup.ensure_default_pool(store, settings)
        startup.ensure_default_profile(store)
        startup.mark_datastore_ready(store)
        return startup.register_node(store, kv, f"node-{i}", f"198.51.100.{i}/24", settings)

    with ThreadPoolExecutor(max_workers=6) as pool:
        nodes = list(pool.map(start, range(1, 7)))
    pools = store.list(IPPool)
    assert [(p.name, p.spec.cidr, p.spec.ipip_mode) for p in pools] == [
        ("default-ipv4-ippool", "10.50.0.0/16", "Always")
    ]
    assert store.get(ClusterInformation, "default").spec.datastore_ready is True
    assert [p.to_dict()["spec"] for p in store.list(Profile)] == [Profile.default_allow().to_dict()["spec"]]
    tunnels = {str(n.spec.bgp.ipv4_ipip_tunnel_addr) for n in nodes if n.spec.bgp}
    assert len(tunnels) == 6 and all(
        ipaddress.IPv4Address(t) in ipaddress.IPv4Network("10.50.0.0/16") for t in tunnels
    )
    # A restart keeps what it had.
    again = startup.register_node(store, kv, "node-1", "198.51.100.1/24", settings)
    assert again.spec == nodes[0].spec


def test_host_files_for_docker(store: ResourceStore, kv: EtcdKV, tmp_path: Path) -> None:
    settings = NodeSettings(ipv4pool_cidr="10.60.0.0/16", ipv4pool_ipip="Never", ipv4pool_vxlan="Always")
    startup.ensure_default_pool(store, settings)
    startup.register_node(store, kv, "node-1", "198.51.100.1/24", settings)
    files = startup.host_files(store, kv, "node-1")
    assert files is not None
    files.write(tmp_path / "run", mtu=1450)  # the MTU felix wrote for a 1500 NIC under VXLAN
    env = dict(line.split("=", 1) for line in (tmp_path / "run" / "subnet.env").read_text().splitlines())
    assert (
        env["FELID_NETWORK"] == "10.60.0.0/16"
        and env["FELID_MTU"] == "1450"
        and env["FELID_IPMASQ"] == "true"
    )
    gateway = ipaddress.IPv4Interface(env["FELID_SUBNET"])
    assert gateway.network.prefixlen == 26 and gateway.ip != gateway.network.network_address
    assert startup.host_files(store, kv, "node-1") == files  # the same gateway after a restart


def node_status(netns: str) -> dict[str, Any]:
    code, body = http_get(netns, NODE_HEALTH_PORT, "/status")
    assert code == 200
    return dict(json.loads(body))


def bgp_status(netns: str) -> dict[str, Any]:
    code, body = http_get(netns, BGP_PORT, "/status")
    assert code == 200
    return dict(json.loads(body))


def test_felix_rebuilt_in_felid_node_leaves_bgp_alone_and_sigterm_leaves_the_routes(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 2, prefix="ft")
    try:
        cluster.build()
        for host in cluster.hosts:
            cluster.start_node(host)
        cluster.wait_ready(timeout=90)
        first = cluster.hosts[0]
        cluster.add_workload(first)
        time.sleep(0.5)
        before = first.routes()
        sessions = bgp_status(first.netns)["peers"]
        exabgp = bgp_status(first.netns)["exabgpPID"]
        assert [p["state"] for p in sessions] == ["up"], sessions
        # This node's own FelixConfiguration changed: felid-node builds a new felix, as Calico's
        # Felix restarts, and the bgp agent beside it in the same process sees nothing of it.
        config = {
            "apiVersion": "projectcalico.org/v3",
            "kind": "FelixConfiguration",
            "metadata": {"name": f"node.{first.node}"},
            "spec": {"routeRefreshInterval": "45s"},
        }
        cluster.apply([config])
        wait_until(lambda: node_status(first.netns)["agents"]["felix"]["restarts"] == 1, 20, "felix rebuilt")
        wait_until(lambda: node_status(first.netns)["ready"], 30, "ready again", interval=0.2)
        status = node_status(first.netns)
        assert status["agents"]["felix"]["lastError"].startswith("ConfigurationChanged"), status
        assert status["agents"]["bgp"]["restarts"] == 0, status
        assert bgp_status(first.netns)["peers"] == sessions  # the session never went down
        assert bgp_status(first.netns)["exabgpPID"] == exabgp
        pid = cluster.nodes.pop(first.node)
        assert status["pid"] == pid
        os.kill(pid, 15)
        assert os.waitpid(pid, 0)[1] == 0
        with pytest.raises(ProcessLookupError):
            os.kill(exabgp, 0)  # felid-node stopped its ExaBGP on the way out
        assert first.routes() == before
        files = tmp_path / "hosts" / first.node
        assert (files / "run" / "subnet.env").exists() and (files / "var" / "mtu").exists()
    finally:
        cluster.destroy()


class Flaky:
    """An agent that is ready at once and, if it ``fails``, fails 0.05 s later."""

    def __init__(self, log: list[str], fails: bool) -> None:
        self.log, self.fails, self.is_ready = log, fails, False

    async def run(self) -> None:
        self.log.append("run")
        self.is_ready = True
        await asyncio.sleep(0.05)
        if self.fails:
            raise ExceptionGroup("agent", [KeyError("boom")])
        await asyncio.Event().wait()

    def ready(self) -> bool:
        return self.is_ready


async def test_a_failed_agent_is_built_again_after_a_growing_backoff_and_the_other_runs_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(supervisor, "BACKOFF_FIRST", 0.05)
    builds: list[str] = []
    flaky = AgentTask("felix", lambda: Flaky(builds, fails=len(builds) < 3))
    steady_log: list[str] = []
    steady = AgentTask("bgp", lambda: Flaky(steady_log, fails=False))
    started = time.monotonic()
    tasks = [asyncio.create_task(agent.supervise()) for agent in (flaky, steady)]
    try:
        while flaky.restarts < 3 or not flaky.ready():
            assert time.monotonic() - started < 5, flaky
            await asyncio.sleep(0.01)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    # Three failures, waits of 0.1, 0.2 and 0.4 s (each run lasts 0.05 s, under a stable minute).
    assert builds == ["run"] * 4 and flaky.last_error == "KeyError: 'boom'"
    assert time.monotonic() - started >= 0.1 + 0.2 + 0.4
    assert steady_log == ["run"] and steady.restarts == 0


def test_a_host_file_that_cannot_be_written_is_retried_and_never_stops_the_node(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 1, mode="vxlan", prefix="ft")
    try:
        cluster.build()
        host = cluster.hosts[0]
        blocked = Path(host.home) / "run" / "subnet.env"
        blocked.mkdir(parents=True)  # a directory where felid-node wants its file
        cluster.start_node(host)
        cluster.wait_ready(timeout=60)
        wait_until(lambda: "cannot write subnet.env" in cluster.node_log(host), 10, "the failure logged")
        assert node_status(host.netns)["ready"]
        blocked.rmdir()
        wait_until(blocked.is_file, 10, "subnet.env written once it can be")
        assert "FELID_MTU=1450\n" in blocked.read_text()
        assert (
            node_status(host.netns)["ready"] and node_status(host.netns)["agents"]["felix"]["restarts"] == 0
        )
    finally:
        cluster.destroy()
