"""felix as a process in a host namespace, with a real etcd and real workloads."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab.agents import FelixProcess
from lab.network import Lab, LabHost, ip, namespaces
from lab.processes import BIN
from lab.workloads import ping
from tests.ipam_helpers import POD_POOL


@pytest.fixture
def felix(host: LabHost, tmp_path: Path) -> Iterator[FelixProcess]:
    process = FelixProcess(host, tmp_path / "felix.log", FELIX_ROUTEREFRESHINTERVAL="1")
    try:
        yield process
    finally:
        process.kill()


def routes(host: LabHost, proto: str = "80") -> list[str]:
    return sorted(ip("-n", host.netns, "route", "show", "proto", proto).stdout.strip().splitlines())


def until(condition: Callable[[], bool], timeout: float = 10.0) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)
    return time.monotonic() - start


def test_felix_programs_blocks_and_workloads_and_removes_strays(host: LabHost, felix: FelixProcess) -> None:
    with namespaces("pod-a", "pod-b") as pods:
        for name, ns in (("ca", pods["pod-a"]), ("cb", pods["pod-b"])):
            assert host.cni("ADD", host.netconf(), name, f"/run/netns/{ns}")[0] == 0
        felix.start()
        felix.wait_ready()
        shown = routes(host)
        assert any(r.startswith("blackhole 10.100.") and "/26" in r for r in shown), shown
        assert sum(" dev cali" in r for r in shown) == 2
        assert (host.run("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip()) == "1"
        # Strays: felix's protocol goes at the next sync, another protocol stays.
        ip("-n", host.netns, "route", "add", "blackhole", "10.99.0.0/24", "proto", "80")
        ip("-n", host.netns, "route", "add", "blackhole", "10.98.0.0/24", "proto", "static")
        until(lambda: "10.99.0.0/24" not in " ".join(routes(host)))
        assert "blackhole 10.98.0.0/24" in ip("-n", host.netns, "route").stdout
        ip_b = json.loads(host.felidctl("get", "wep", "-o", "json").stdout)["items"]
        assert len(ip_b) == 2
        assert ping(pods["pod-a"], host.address).ok


def test_route_appears_when_the_interface_does(host: LabHost, felix: FelixProcess) -> None:
    felix.start()
    felix.wait_ready()
    wep = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "WorkloadEndpoint",
        "metadata": {"name": "node-1-k8s-late-eth0", "namespace": "default"},
        "spec": {"node": "node-1", "interfaceName": "calilate00001", "ipNetworks": ["10.100.3.7/32"]},
    }
    assert host.felidctl("apply", "-f", "-", stdin=json.dumps(wep)).returncode == 0
    time.sleep(0.5)  # felix has the endpoint; its interface does not exist yet
    assert "10.100.3.7" not in " ".join(routes(host))
    ip("-n", host.netns, "link", "add", "calilate00001", "type", "veth", "peer", "name", "latepeer")
    ip("-n", host.netns, "link", "set", "calilate00001", "up")
    took = until(lambda: "10.100.3.7 dev calilate00001" in " ".join(routes(host)), timeout=5)
    assert took < 1.0, took  # measured from the link's creation; felix's own reaction is far below
    assert host.run("cat", "/proc/sys/net/ipv4/conf/calilate00001/proxy_arp").stdout.strip() == "1"


def test_restarts_remove_no_route(host: LabHost, felix: FelixProcess, tmp_path: Path) -> None:
    with namespaces(*[f"p{i}" for i in range(50)]) as pods:
        for i in range(50):
            code, result = host.cni("ADD", host.netconf(), f"c{i}", f"/run/netns/{pods[f'p{i}']}")
            assert code == 0, result
        felix.start()
        felix.wait_ready()
        before = routes(host)
        assert sum(" dev cali" in r for r in before) == 50
        monitor = subprocess.Popen(
            ["ip", "-n", host.netns, "monitor", "route"], stdout=subprocess.PIPE, text=True
        )
        try:
            for _ in range(5):
                felix.kill()
                felix.start()
                felix.wait_ready()
            time.sleep(1.5)  # at least one refresh after the last start
        finally:
            monitor.terminate()
            out, _ = monitor.communicate(timeout=10)
        assert [line for line in out.splitlines() if line.startswith("Deleted")] == []
        assert routes(host) == before


def test_etcd_outage_changes_nothing_and_felix_catches_up(
    host: LabHost, host_lab: Lab, felix: FelixProcess
) -> None:
    with namespaces("pod") as pods:
        assert host.cni("ADD", host.netconf(), "c1", f"/run/netns/{pods['pod']}")[0] == 0
        felix.start()
        felix.wait_ready()
        before = ip("-n", host.netns, "route").stdout
        host_lab.etcd.stop()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert ip("-n", host.netns, "route").stdout == before
            assert felix.process is not None and felix.process.poll() is None
            time.sleep(1)
        host_lab.etcd.start()
        # A change made once etcd is back reaches the kernel.
        wep = {
            "apiVersion": "projectcalico.org/v3",
            "kind": "WorkloadEndpoint",
            "metadata": {"name": "node-1-k8s-new-eth0", "namespace": "default"},
            "spec": {"node": "node-1", "interfaceName": "calinew000001", "ipNetworks": ["10.100.3.9/32"]},
        }
        ip("-n", host.netns, "link", "add", "calinew000001", "type", "veth", "peer", "name", "newpeer")
        ip("-n", host.netns, "link", "set", "calinew000001", "up")
        assert host.felidctl("apply", "-f", "-", stdin=json.dumps(wep)).returncode == 0
        until(lambda: "10.100.3.9 dev calinew000001" in " ".join(routes(host)), timeout=15)


def test_nat_outgoing_masquerades_traffic_leaving_the_pools(host: LabHost, felix: FelixProcess) -> None:
    with namespaces("outside", "pod") as ns:
        # A network outside the cluster that has no route back to the pods.
        ip(
            "link",
            "add",
            "ftnat-in",
            "netns",
            host.netns,
            "type",
            "veth",
            "peer",
            "name",
            "ftnat-out",
            "netns",
            ns["outside"],
        )
        ip("-n", host.netns, "addr", "add", "192.0.2.1/24", "dev", "ftnat-in")
        ip("-n", host.netns, "link", "set", "ftnat-in", "up")
        ip("-n", ns["outside"], "addr", "add", "192.0.2.2/24", "dev", "ftnat-out")
        ip("-n", ns["outside"], "link", "set", "ftnat-out", "up")
        assert host.cni("ADD", host.netconf(), "c1", f"/run/netns/{ns['pod']}")[0] == 0
        felix.start()
        felix.wait_ready()
        assert not ping(ns["pod"], "192.0.2.2", count=1).ok  # natOutgoing is off
        nat_pool = {**POD_POOL, "spec": {**POD_POOL["spec"], "natOutgoing": True}}
        assert host.felidctl("apply", "-f", "-", stdin=json.dumps(nat_pool)).returncode == 0
        until(lambda: "MASQUERADE" in host.run("iptables", "-t", "nat", "-S", "FELID-NAT-OUTGOING").stdout)
        assert ping(ns["pod"], "192.0.2.2").ok
        rules = host.run("iptables", "-t", "nat", "-S").stdout
        assert "-A FELID-NAT-OUTGOING -s 10.100.0.0/22 -d 10.100.0.0/22 -j RETURN" in rules
        assert "-j FELID-NAT-OUTGOING" in rules
        assert host.felidctl("apply", "-f", "-", stdin=json.dumps(POD_POOL)).returncode == 0
        until(
            lambda: "MASQUERADE" not in host.run("iptables", "-t", "nat", "-S", "FELID-NAT-OUTGOING").stdout
        )


def test_metrics_and_health(host: LabHost, tmp_path: Path) -> None:
    from lab.etcd import free_port

    port = free_port()
    felix = FelixProcess(
        host,
        tmp_path / "felix-metrics.log",
        FELIX_PROMETHEUSMETRICSENABLED="true",
        FELIX_PROMETHEUSMETRICSPORT=str(port),
    )
    try:
        with namespaces("pod") as ns:
            assert host.cni("ADD", host.netconf(), "c1", f"/run/netns/{ns['pod']}")[0] == 0
            felix.start()
            felix.wait_ready()
            fetch = (
                "import urllib.request as u, sys; print(u.urlopen(sys.argv[1], timeout=2).read().decode())"
            )
            text = host.run(
                sys.executable, "-c", fetch, f"http://127.0.0.1:{port}/metrics", check=True
            ).stdout
            values = {
                line.split()[0]: float(line.split()[1])
                for line in text.splitlines()
                if line and not line.startswith("#")
            }
            assert values["felix_route_table_num_routes"] == 2  # the workload and its block
            assert values["felix_active_local_endpoints"] == 1
            assert values["felix_cluster_num_hosts"] == 1
            assert values["felix_int_dataplane_apply_time_seconds_count"] >= 1
            assert "felix_int_dataplane_failures_total" in values and "felix_resyncs_started_total" in values
            live = host.run(
                sys.executable, "-c", fetch, f"http://127.0.0.1:{felix.health_port}/liveness"
            ).stdout
            assert live.strip() == "live"
    finally:
        felix.kill()


def test_a_configuration_change_restarts_felix_cleanly(host: LabHost, felix: FelixProcess) -> None:
    with namespaces("pod") as ns:
        assert host.cni("ADD", host.netconf(), "c1", f"/run/netns/{ns['pod']}")[0] == 0
        felix.start()
        felix.wait_ready()
        before = routes(host)
        # The environment's FELIX_ROUTEREFRESHINTERVAL outranks the datastore: no restart for that.
        ignored = {
            "apiVersion": "projectcalico.org/v3",
            "kind": "FelixConfiguration",
            "metadata": {"name": "default"},
            "spec": {"routeRefreshInterval": "30s"},
        }
        assert host.felidctl("apply", "-f", "-", stdin=json.dumps(ignored)).returncode == 0
        time.sleep(1)
        assert felix.process is not None and felix.process.poll() is None
        config = {**ignored, "spec": {"routeRefreshInterval": "30s", "prometheusMetricsPort": 9191}}
        assert host.felidctl("apply", "-f", "-", stdin=json.dumps(config)).returncode == 0
        assert felix.process is not None
        assert felix.process.wait(timeout=15) == 129  # its supervisor restarts it with the new settings
        assert routes(host) == before  # and nothing was taken down on the way out
        felix.start()
        felix.wait_ready()


def test_node_status_reports_felix(host: LabHost, felix: FelixProcess) -> None:
    ctl = [str(BIN / "felidctl"), "node", "status", "--felix-port", str(felix.health_port)]
    stopped = host.run(*ctl)
    assert stopped.returncode == 1 and "felid process is not running." in stopped.stdout
    felix.start()
    felix.wait_ready()
    shown = host.run(*ctl)
    assert shown.returncode == 0, shown.stderr
    assert "felid process is running." in shown.stdout
    assert "felix: running, ready" in shown.stdout and "bgp: not running" in shown.stdout


SETTLED_DATAPLANE = """
import asyncio, json
from felix.calc.model import DesiredState, Route
from felix.dataplane.driver import Dataplane
from felix.dataplane.netlink import Netlink

def state(*routes):
    return DesiredState(routes=frozenset(routes))

async def main():
    dataplane, passes = Dataplane(Netlink(), "cali"), []
    block, other = Route("10.65.0.0/26", "blackhole"), Route("10.65.0.64/26", "blackhole")
    waiting = Route("10.65.0.5/32", "local", ifname="cali0123456789")
    for desired, invalidate in [
        (state(block), False),
        (state(block), False),  # equal (another object): nothing to do
        (state(block, other), False),
        (state(block, other), True),  # invalidated: read back and applied again
        (state(block, other, waiting), False),
        (state(block, other, waiting), False),  # a route waits for its interface: every pass looks
    ]:
        if invalidate:
            dataplane.invalidate()
        dataplane.set_desired(desired)
        await dataplane.apply()
        passes.append(dataplane.stats.applies)
    print(json.dumps(passes))

asyncio.run(main())
"""


def test_the_dataplane_skips_a_pass_that_has_nothing_to_do() -> None:
    """A change elsewhere in the cluster that leaves this host's desired state as it was costs no
    kernel call (no dump, no write); a changed state, an invalidation or unfinished work does."""
    with namespaces("dp") as ns:
        done = subprocess.run(
            ["ip", "netns", "exec", ns["dp"], sys.executable, "-c", SETTLED_DATAPLANE],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == [1, 1, 2, 3, 4, 5]
        kernel = ip("-n", ns["dp"], "route", "show", "proto", "80").stdout
        assert "blackhole 10.65.0.0/26" in kernel and "blackhole 10.65.0.64/26" in kernel
