"""Names that become parts of etcd keys are checked where they enter, and the key layout refuses a
component that would split a key or climb out of its place, whoever forgot to check."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import pytest

from datastore.errors import InvalidName
from datastore.keys import IPAMKeys, KeyLayout
from datastore.models import Node, WorkloadEndpoint
from lab.network import LabHost, namespaces
from lab.processes import BIN, clean_environment

LIST_KEYS = """
import sys
from datastore.config import DatastoreConfig
from datastore.etcd import EtcdKV
kv = EtcdKV(DatastoreConfig(etcd_endpoints=(sys.argv[1],)))
for item in kv.list("/")[0]:
    print(item.key)
"""


def keys(host: LabHost) -> list[str]:
    return host.run(sys.executable, "-c", LIST_KEYS, host.etcd_url, check=True).stdout.split()


@pytest.mark.parametrize("bad", ["a/b", "../x", "..", ".", ""])
def test_the_key_layout_refuses_a_component_that_is_not_one(bad: str) -> None:
    layout, ipam = KeyLayout(), IPAMKeys()
    builders: list[Callable[[], str]] = [
        lambda: layout.resource(Node, bad),
        lambda: ipam.affinity(bad, "10.0.0.0/26"),
        lambda: ipam.host_affinities(bad),
        lambda: ipam.handle(bad),
    ]
    if bad:  # an empty namespace is no namespace: the default one
        builders.append(lambda: layout.resource(WorkloadEndpoint, "pod", bad))
    for build in builders:
        with pytest.raises(InvalidName):
            build()


def test_a_namespace_of_none_is_the_default_one() -> None:
    assert KeyLayout().resource(WorkloadEndpoint, "pod").endswith("/workloadendpoints/default/pod")


@pytest.mark.parametrize("nodename", ["../x", "a/b", "Node_1"])
def test_the_cni_plugins_refuse_a_node_name_from_the_config(host: LabHost, nodename: str) -> None:
    before = keys(host)
    with namespaces("pod") as pods:
        for plugin in ("felid", "felid-ipam"):
            conf = {**host.netconf(), "nodename": nodename}
            code, error = host.cni("ADD", conf, "c1", f"/run/netns/{pods['pod']}", plugin=plugin)
            assert code == 1 and error is not None and error["code"] == 7, error
            assert "nodename" in error["msg"] and repr(nodename) in error["msg"], error
    assert keys(host) == before  # nothing written, no affinity under a split key


def test_the_cni_plugin_refuses_bad_names_from_its_environment(host: LabHost) -> None:
    before = keys(host)
    conf = {k: v for k, v in host.netconf().items() if k != "nodename"}
    with namespaces("pod") as pods:
        netns = f"/run/netns/{pods['pod']}"
        cases: list[tuple[str, str, dict[str, str], str]] = [  # container, CNI_ARGS, environment, named
            ("c1", "", {"FELID_NODENAME": "a/b"}, "FELID_NODENAME"),
            ("../../etc", "", {}, "CNI_CONTAINERID"),
            ("a/b", "", {}, "CNI_CONTAINERID"),
            ("c1", "K8S_POD_NAMESPACE=../x;K8S_POD_NAME=web", {}, "K8S_POD_NAMESPACE"),
            ("c1", "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=a/b", {}, "K8S_POD_NAME"),
        ]
        for container, cni_args, environ, named in cases:
            netconf = conf if environ else host.netconf()
            code, error = host.cni("ADD", netconf, container, netns, cni_args=cni_args, environ=environ)
            assert code == 1 and error is not None and error["code"] == 4 and named in error["msg"], error
    assert keys(host) == before


def test_a_container_id_in_the_cni_spec_s_alphabet_works(host: LabHost) -> None:
    with namespaces("pod") as pods:
        netns = f"/run/netns/{pods['pod']}"
        code, result = host.cni("ADD", host.netconf(), "Abc_123.x-Y", netns)
        assert code == 0, result
        weps = json.loads(host.felidctl("get", "wep", "-A", "-o", "json").stdout)["items"]
        assert [w["metadata"]["name"] for w in weps] == ["node--1-cni-abc-123.x--y-eth0"]
        assert host.cni("DEL", host.netconf(), "Abc_123.x-Y", netns)[0] == 0


def test_felidctl_refuses_names_that_are_not_names(host: LabHost) -> None:
    for args in (
        ("get", "node", "../x"),
        ("delete", "node", "a/b"),
        ("get", "wep", "web", "-n", "../x"),
        ("ipam", "release", "--handle", "a/b"),
    ):
        done = host.felidctl(*args)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and ("a/b" in done.stderr or "../x" in done.stderr)


@pytest.mark.parametrize("program", ["felid-node", "felid-felix", "felid-bgp"])
def test_the_agents_refuse_a_bad_node_name(program: str) -> None:
    env = clean_environment()
    argv = [str(BIN / program)] + (["--check-config"] if program == "felid-node" else [])
    done = subprocess.run(
        argv, env={**env, "FELID_NODENAME": "a/b"}, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1 and "FELID_NODENAME" in done.stderr and "'a/b'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
