"""The CNI fast path: the felid and felid-ipam plugins hand ADD, DEL and CHECK to felid-node over
its unix socket, and do the work themselves when no felid-node answers. Same results, same errors,
same rollback on both paths; concurrent ADDs on one host are safe."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from felid.cni.fastpath import dumps, loads
from lab.cluster import NODE_HEALTH_PORT, Cluster
from lab.network import LabHost, http_get, namespaces
from lab.workloads import ping


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Cluster, LabHost]]:
    cluster = Cluster(tmp_path, 1, prefix="fp")
    try:
        cluster.build()
        host = cluster.hosts[0]
        cluster.start_node(host)
        cluster.wait_ready(timeout=90)
        yield cluster, host
    finally:
        cluster.destroy()


def served(host: LabHost) -> int:
    code, body = http_get(host.netns, NODE_HEALTH_PORT, "/status")
    assert code == 200, body
    status = json.loads(body)["cni"]
    assert status["socket"] == str(host.cni_socket)
    return int(status["served"])


def shape(result: dict[str, Any]) -> tuple[Any, ...]:
    """A result without what differs between two pods (addresses, names, MACs)."""
    return sorted(result), [sorted(i) for i in result["interfaces"]], result["routes"], len(result["ips"])


def direct(netconf: dict[str, Any], host: LabHost) -> dict[str, Any]:
    """The same network config with a socket nobody serves: the plugin does the work itself."""
    return {**netconf, "cni_socket": str(host.cni_socket) + ".nobody"}


def test_add_check_del_go_through_felid_node_and_match_the_direct_path(node: tuple[Cluster, LabHost]) -> None:
    cluster, host = node
    with namespaces("fast", "slow") as ns:
        before = served(host)
        code, fast = host.cni("ADD", host.netconf(fast_path=True), "fast", f"/run/netns/{ns['fast']}")
        assert code == 0, fast
        assert served(host) == before + 1  # felid-node did it
        code, slow = host.cni(
            "ADD", direct(host.netconf(fast_path=True), host), "slow", f"/run/netns/{ns['slow']}"
        )
        assert code == 0, slow
        assert served(host) == before + 1  # and this one the plugin itself
        assert fast is not None and slow is not None
        assert shape(fast) == shape(slow), (fast, slow)
        fast_ip = fast["ips"][0]["address"].split("/")[0]
        slow_ip = slow["ips"][0]["address"].split("/")[0]
        assert fast_ip != slow_ip
        assert ping(ns["fast"], slow_ip).ok and ping(ns["slow"], fast_ip).ok
        check = {**host.netconf(fast_path=True), "prevResult": fast}
        assert host.cni("CHECK", check, "fast", f"/run/netns/{ns['fast']}")[0] == 0
        assert served(host) == before + 2
        assert host.cni("DEL", host.netconf(fast_path=True), "fast", f"/run/netns/{ns['fast']}")[0] == 0
        assert (
            host.cni("DEL", direct(host.netconf(fast_path=True), host), "slow", f"/run/netns/{ns['slow']}")[0]
            == 0
        )
        assert served(host) == before + 3
        # DEL is idempotent through felid-node too, and CHECK of what is gone says so.
        assert host.cni("DEL", host.netconf(fast_path=True), "fast", f"/run/netns/{ns['fast']}")[0] == 0
        code, gone = host.cni("CHECK", check, "fast", f"/run/netns/{ns['fast']}")
        assert code != 0 and gone is not None and gone["code"] == 3, gone
        # felid-ipam, as the IPAM of another main plugin, goes the same way.
        ipam = {**ipam_only(host), "cni_socket": str(host.cni_socket)}
        code, allocated = host.cni("ADD", ipam, "ipam-fast", plugin="felid-ipam")
        assert code == 0 and allocated is not None and allocated["ips"], allocated
        assert served(host) == before + 6  # after the second DEL and the CHECK above
        assert host.cni("DEL", ipam, "ipam-fast", plugin="felid-ipam")[0] == 0
        assert served(host) == before + 7
        done = cluster.felidctl("ipam", "check")
        assert done.returncode == 0, done.stdout + done.stderr


def ipam_only(host: LabHost) -> dict[str, Any]:
    """A main plugin's network config with felid-ipam as its IPAM, as the IPAM plugin receives it."""
    return {
        "cniVersion": "1.0.0",
        "name": "x",
        "type": "bridge",
        "etcd_endpoints": host.etcd_url,
        "nodename": host.node,
        "ipam": {"type": "felid-ipam"},
    }


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        ({"mtu": 12}, 7, "mtu: '12' is not an MTU"),
        ({"profiles": "default"}, 7, "profiles must be a list"),
        ({"ipam": {"type": "felid-ipam", "ipv4_pools": ["nosuch"]}}, 7, "nosuch"),
        ({"cniVersion": "9.9.9"}, 1, "cniVersion '9.9.9' is not supported"),
    ],
)
def test_errors_are_the_same_on_both_paths(
    node: tuple[Cluster, LabHost], change: dict[str, Any], code: int, message: str
) -> None:
    cluster, host = node
    with namespaces("pod") as ns:
        netconf = {**host.netconf(fast_path=True), **change}
        before = served(host)
        fast = host.cni("ADD", netconf, "bad", f"/run/netns/{ns['pod']}")
        slow = host.cni("ADD", direct(netconf, host), "bad", f"/run/netns/{ns['pod']}")
        assert served(host) == before + 1
        assert fast == slow, (fast, slow)
        assert fast[0] != 0 and fast[1] is not None
        assert fast[1]["code"] == code and message in fast[1]["msg"], fast
        # Rolled back: nothing is held for the container, no interface is left.
        assert cluster.felidctl("ipam", "check").returncode == 0
        assert not [line for line in host.run("ip", "-o", "link").stdout.splitlines() if " cali" in line]


def test_a_failure_after_the_allocation_rolls_back_through_felid_node(node: tuple[Cluster, LabHost]) -> None:
    cluster, host = node
    before = served(host)
    # A namespace path felid-node can see that is not a network namespace: the veth cannot go in.
    bogus = Path(host.home) / "not-a-netns"
    bogus.write_text("")
    code, error = host.cni("ADD", host.netconf(fast_path=True), "rolled", str(bogus))
    assert served(host) == before + 1
    assert code != 0 and error is not None and error["code"] == 101, error
    held = cluster.felidctl("ipam", "show", "--show-blocks").stdout
    assert cluster.felidctl("ipam", "check").returncode == 0, held
    assert "rolled" not in cluster.felidctl("get", "wep", "-A").stdout


def test_concurrent_adds_through_felid_node_get_distinct_addresses(node: tuple[Cluster, LabHost]) -> None:
    cluster, host = node
    pods = [f"pod{i}" for i in range(12)]
    with namespaces(*pods) as ns:
        before = served(host)
        with ThreadPoolExecutor(max_workers=len(pods)) as pool:
            results = list(
                pool.map(
                    lambda p: host.cni("ADD", host.netconf(fast_path=True), f"c-{p}", f"/run/netns/{ns[p]}"),
                    pods,
                )
            )
        assert all(code == 0 for code, _ in results), results
        assert served(host) == before + len(pods)
        addresses = [r["ips"][0]["address"] for _, r in results if r is not None]
        assert len(set(addresses)) == len(pods), addresses
        first = addresses[0].split("/")[0]
        assert all(ping(ns[p], first).ok for p in pods[1:4])
        with ThreadPoolExecutor(max_workers=len(pods)) as pool:
            gone = list(
                pool.map(
                    lambda p: host.cni("DEL", host.netconf(fast_path=True), f"c-{p}", f"/run/netns/{ns[p]}"),
                    pods,
                )
            )
        assert all(code == 0 for code, _ in gone), gone
        done = cluster.felidctl("ipam", "check")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "c-pod" not in cluster.felidctl("get", "wep", "-A").stdout


def test_without_felid_node_the_plugins_do_the_work_themselves(node: tuple[Cluster, LabHost]) -> None:
    """felid-node stopped (its socket gone) or killed (a socket file nobody listens on): ADD works."""
    cluster, host = node
    cluster.kill_node(host)  # SIGKILL: it leaves its socket file behind
    assert host.cni_socket.exists()
    with pytest.raises(ConnectionRefusedError):
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(str(host.cni_socket))
        finally:
            probe.close()
    with namespaces("pod", "other") as ns:
        code, result = host.cni("ADD", host.netconf(fast_path=True), "alone", f"/run/netns/{ns['pod']}")
        assert code == 0 and result is not None, result
        host.cni_socket.unlink()
        code, other = host.cni("ADD", host.netconf(fast_path=True), "other", f"/run/netns/{ns['other']}")
        assert code == 0 and other is not None, other
        # Both endpoints are in the datastore (felix, gone with felid-node, programs them when back).
        endpoints = cluster.felidctl("get", "wep", "-A").stdout
        assert "alone" in endpoints and "other" in endpoints, endpoints
        # felid-ipam under another main plugin: the same fallback.
        ipam = {
            "cniVersion": "1.0.0",
            "name": "x",
            "type": "bridge",
            "etcd_endpoints": host.etcd_url,
            "nodename": host.node,
            "cni_socket": str(host.cni_socket),
            "ipam": {"type": "felid-ipam"},
        }
        code, allocated = host.cni("ADD", ipam, "ipam-only", plugin="felid-ipam")
        assert code == 0 and allocated is not None and allocated["ips"], allocated


@pytest.mark.parametrize(
    "text",
    [
        '{"cniVersion": "1.0.0", "ipam": {"type": "felid-ipam"}, "mtu": 1410, "x": [true, false, null, 2.5]}',
        ' \n {"cni_socket": "/run/felid-lab/h1.sock", "name": "caf\\u00e9 \\"net\\""}\r\n',
        '{"big": 12345678901234567890, "neg": -1e3, "nan": NaN}',
    ],
)
def test_the_plugins_json_reads_and_writes_what_json_does(text: str) -> None:
    """felid.cni.fastpath's loads/dumps (the C scanner and encoder without json's Python imports)."""
    assert repr(loads(text)) == repr(json.loads(text))
    request = {"plugin": "felid", "environ": {"CNI_ARGS": 'a=b;"c"\n\u00e9'}, "stdin": text, "rc": 0}
    assert json.loads(dumps(request)) == request


@pytest.mark.parametrize("text", ["", "  ", "{", '{"a": 1} {"b": 2}', "nope", '{"a": 1,}'])
def test_the_plugins_json_refuses_what_json_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        loads(text)
