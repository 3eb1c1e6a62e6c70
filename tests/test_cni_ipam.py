"""felid-ipam as CNI runtimes call it: through its console script, env and stdin."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

from datastore.kv import KVStore
from datastore.models.ipam import pod_handle
from datastore.store import ResourceStore
from lab.etcd import EtcdServer, free_port
from lab.network import LabHost, ip, namespaces
from lab.processes import BIN
from tests.ipam_helpers import allocated, assert_consistent, in_pool, make_pool

PLUGIN = str(BIN / "felid-ipam")
CNI_PATH = f"/usr/lib/cni:{BIN}"


def conf(url: str, version: str = "1.0.0", **ipam: Any) -> dict[str, Any]:
    return {
        "cniVersion": version,
        "name": "pods",
        "type": "bridge",
        "etcd_endpoints": url,
        "nodename": "node-1",
        "ipam": {"type": "felid-ipam", **ipam},
    }


def call(
    command: str,
    stdin: str,
    *,
    container: str = "c1",
    cni_args: str = "",
    extra: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any] | None]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FELID_", "CNI_"))}
    env |= {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": CNI_PATH,
        "CNI_ARGS": cni_args,
        **(extra or {}),
    }
    result = subprocess.run(
        [PLUGIN], input=stdin, capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else None


@pytest.fixture
def pool(store: ResourceStore) -> None:
    make_pool(store, "default-ipv4-ippool", "10.50.0.0/24", block_size=28)


def test_add_check_del(etcd: EtcdServer, kv: KVStore, pool: None) -> None:
    stdin = json.dumps(conf(etcd.url))
    code, result = call("ADD", stdin, cni_args="IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web")
    assert code == 0 and result is not None
    assert result["cniVersion"] == "1.0.0"
    (entry,) = result["ips"]
    address = entry["address"].split("/")[0]
    assert entry["address"].endswith("/32") and in_pool(address, "10.50.0.0/24")
    assert allocated(kv) == {address: pod_handle("c1")}
    # A repeated ADD for the same container returns the same address.
    assert call("ADD", stdin)[1] == result
    with_prev = json.dumps({**conf(etcd.url), "prevResult": result})
    assert call("CHECK", with_prev) == (0, None)
    assert call("DEL", stdin) == (0, None)
    assert allocated(kv) == {}
    assert call("DEL", stdin) == (0, None)  # idempotent
    code, error = call("CHECK", with_prev)
    assert code == 1 and error is not None and error["code"] == 3
    assert_consistent(kv)


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0"])
def test_older_config_versions_get_their_result_format(etcd: EtcdServer, pool: None, version: str) -> None:
    code, result = call("ADD", json.dumps(conf(etcd.url, version=version)))
    assert code == 0 and result is not None
    assert result["cniVersion"] == version
    assert result["ips"][0]["version"] == "4"


def test_version(etcd: EtcdServer) -> None:
    code, result = call("VERSION", '{"cniVersion": "0.4.0"}')
    assert code == 0 and result == {
        "cniVersion": "0.4.0",
        "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0"],
    }


def test_requested_pools(etcd: EtcdServer, store: ResourceStore, pool: None) -> None:
    make_pool(store, "other", "10.60.0.0/24", block_size=28)
    for i, wanted in enumerate((["other"], ["10.60.0.0/24"])):
        code, result = call("ADD", json.dumps(conf(etcd.url, ipv4_pools=wanted)), container=f"c{i}")
        assert code == 0 and result is not None
        assert in_pool(result["ips"][0]["address"].split("/")[0], "10.60.0.0/24")


@pytest.mark.parametrize(
    ("stdin", "env", "code", "message"),
    [
        ("this is not json", {}, 6, "not JSON"),
        ('["a list"]', {}, 6, "must be a JSON object"),
        ('{"name": "pods", "ipam": {"type": "felid-ipam"}}', {}, 7, "no cniVersion"),
        ('{"cniVersion": "9.9.9", "ipam": {}}', {}, 1, "not supported"),
        ("CONF", {"CNI_COMMAND": "BOGUS"}, 4, "CNI_COMMAND"),
        ("CONF", {"CNI_CONTAINERID": ""}, 4, "CNI_CONTAINERID"),
        ("CONF", {"CNI_ARGS": "K8S_POD_NAME"}, 4, "CNI_ARGS"),
        ("UNKNOWN_POOL", {}, 7, "IPPool no-such-pool does not exist"),
        ("BAD_POOLS", {}, 7, "ipv4_pools must be a list"),
        ("BAD_ETCD", {}, 7, "etcd_endpoints"),
        ("DOWN_ETCD", {}, 11, "datastore unavailable"),
    ],
)
@pytest.mark.usefixtures("pool")
def test_bad_input_gives_the_spec_error_json(
    etcd: EtcdServer, stdin: str, env: dict[str, str], code: int, message: str
) -> None:
    replacements = {
        "CONF": conf(etcd.url),
        "UNKNOWN_POOL": conf(etcd.url, ipv4_pools=["no-such-pool"]),
        "BAD_POOLS": conf(etcd.url, ipv4_pools="default-ipv4-ippool"),
        "BAD_ETCD": {**conf(etcd.url), "etcd_endpoints": "localhost:2379"},
        "DOWN_ETCD": conf(f"http://127.0.0.1:{free_port()}"),
    }
    text = json.dumps(replacements[stdin]) if stdin in replacements else stdin
    rc, error = call(
        env.get("CNI_COMMAND", "ADD"),
        text,
        container=env.get("CNI_CONTAINERID", "c1"),
        cni_args=env.get("CNI_ARGS", ""),
    )
    assert rc != 0
    assert error is not None and set(error) <= {"cniVersion", "code", "msg", "details"}
    assert error["code"] == code
    assert message in error["msg"] + error.get("details", "")


def test_datastore_from_the_environment(etcd: EtcdServer, pool: None) -> None:
    stdin = json.dumps({"cniVersion": "1.0.0", "name": "pods", "ipam": {"type": "felid-ipam"}})
    code, result = call("ADD", stdin, extra={"FELID_ETCD_ENDPOINTS": etcd.url, "FELID_NODENAME": "node-9"})
    assert code == 0 and result is not None


def test_exhausted_pool_is_a_clear_error(etcd: EtcdServer, store: ResourceStore) -> None:
    make_pool(store, "tiny", "10.70.0.0/30", block_size=30)
    for i in range(4):
        assert call("ADD", json.dumps(conf(etcd.url)), container=f"c{i}")[0] == 0
    code, error = call("ADD", json.dumps(conf(etcd.url)), container="c9")
    assert code == 1 and error is not None
    assert error["code"] == 100 and "pool exhausted" in error["msg"] and "IPPool tiny" in error["msg"]


def test_chained_under_the_reference_bridge_plugin(host: LabHost) -> None:
    """bridge (Debian's containernetworking-plugins) with felid-ipam as its IPAM."""
    netconf = {
        "cniVersion": "1.0.0",
        "name": "pods",
        "type": "bridge",
        "bridge": "felid-test0",
        "etcd_endpoints": host.etcd_url,
        "nodename": "node-1",
        "ipam": {"type": "felid-ipam", "ipv4_pools": ["pods"]},
    }
    with namespaces("pod") as ns:
        netns = f"/run/netns/{ns['pod']}"
        code, result = host.cni("ADD", netconf, "pod1", netns, plugin="bridge")
        assert code == 0 and result is not None, result
        address = next(i["address"] for i in result["ips"])
        assert address.startswith("10.100.") and address.endswith("/32")
        assert address in ip("-n", ns["pod"], "-4", "addr", "show", "eth0").stdout
        shown = host.felidctl("ipam", "show", "--ip", address[:-3]).stdout
        assert "is in use" in shown and "k8s-pod-network.pod1" in shown
        assert host.cni("DEL", netconf, "pod1", netns, plugin="bridge")[0] == 0
        assert "is not assigned" in host.felidctl("ipam", "show", "--ip", address[:-3]).stdout
        assert "eth0" not in ip("-n", ns["pod"], "link").stdout


def test_a_manual_pool_is_never_used_by_an_add_that_does_not_name_it(
    etcd: EtcdServer, store: ResourceStore, pool: None
) -> None:
    make_pool(store, "reserved-for-db", "10.70.0.0/24", block_size=28, assignmentMode="Manual")
    for i in range(20):  # more than one block of the automatic pool
        code, result = call("ADD", json.dumps(conf(etcd.url)), container=f"auto{i}")
        assert code == 0 and result is not None
        assert in_pool(result["ips"][0]["address"].split("/")[0], "10.50.0.0/24")
    code, result = call("ADD", json.dumps(conf(etcd.url, ipv4_pools=["reserved-for-db"])), container="db")
    assert code == 0 and result is not None
    assert in_pool(result["ips"][0]["address"].split("/")[0], "10.70.0.0/24")
