"""The felid CNI plugin in network namespaces with a real etcd."""

from __future__ import annotations

import json
from typing import Any

from lab.network import LabHost, ip, namespaces
from lab.workloads import ping


def address_of(result: dict[str, Any] | None) -> str:
    assert result is not None
    return str(result["ips"][0]["address"]).split("/")[0]


def test_two_workloads_ping_each_other_and_the_host(host: LabHost) -> None:
    with namespaces("pod-a", "pod-b") as pods:
        code, a = host.cni(
            "ADD",
            host.netconf(),
            "ca",
            f"/run/netns/{pods['pod-a']}",
            "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web",
        )
        assert code == 0, a
        code, b = host.cni("ADD", host.netconf(), "cb", f"/run/netns/{pods['pod-b']}")
        assert code == 0, b
        ip_a, ip_b = address_of(a), address_of(b)
        assert (
            a is not None
            and a["interfaces"][0]["name"].startswith("cali")
            and len(a["interfaces"][0]["name"]) == 15
        )
        assert a["interfaces"][0]["mac"] == "ee:ee:ee:ee:ee:ee"
        assert ping(pods["pod-a"], ip_b).ok and ping(pods["pod-b"], ip_a).ok
        assert ping(pods["pod-a"], host.address).ok
        inside = ip("-n", pods["pod-a"], "route").stdout
        assert "default via 169.254.1.1 dev eth0" in inside and "169.254.1.1 dev eth0 scope link" in inside
        weps = host.felidctl("get", "wep", "-A", "-o", "json").stdout
        items = json.loads(weps)["items"]
        assert {(w["metadata"]["namespace"], w["spec"]["pod"]) for w in items} == {
            ("shop", "web"),
            ("default", "cb"),
        }
        code, _ = host.cni(
            "CHECK",
            {**host.netconf(), "prevResult": a},
            "ca",
            f"/run/netns/{pods['pod-a']}",
            "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web",
        )
        assert code == 0
        code, _ = host.cni("DEL", host.netconf(), "cb", f"/run/netns/{pods['pod-b']}")
        assert code == 0
        assert ping(pods["pod-a"], host.address).ok
        assert not ping(pods["pod-a"], ip_b, count=1).ok
        assert "is not assigned" in host.felidctl("ipam", "show", "--ip", ip_b).stdout
        assert host.cni("DEL", host.netconf(), "cb", f"/run/netns/{pods['pod-b']}")[0] == 0  # idempotent


def test_labels_from_the_network_config_and_its_profiles_reach_the_endpoint(host: LabHost) -> None:
    labelled = {
        **host.netconf(),
        "args": {
            "cni": {
                "labels": [
                    {"key": "role", "value": "frontend"},
                    {"key": "app.kubernetes.io/name", "value": "shop"},
                ]
            }
        },
    }
    with namespaces("pod-l", "pod-p") as pods:
        code, _ = host.cni(
            "ADD", labelled, "cl", f"/run/netns/{pods['pod-l']}", "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web"
        )
        assert code == 0
        code, _ = host.cni(
            "ADD", {**host.netconf(), "profiles": ["kns.shop", "prod"]}, "cp", f"/run/netns/{pods['pod-p']}"
        )
        assert code == 0
        items = {
            w["spec"]["containerID"]: w
            for w in json.loads(host.felidctl("get", "wep", "-A", "-o", "json").stdout)["items"]
        }
        assert items["cl"]["metadata"]["labels"] == {"role": "frontend", "app.kubernetes.io/name": "shop"}
        assert items["cl"]["spec"]["profiles"] == ["projectcalico-default-allow"]  # the default
        assert (
            items["cp"]["spec"]["profiles"] == ["kns.shop", "prod"]
            and "labels" not in items["cp"]["metadata"]
        )
        # felidctl label changes them later.
        wep = items["cl"]["metadata"]["name"]
        assert host.felidctl("label", "wep", wep, "-n", "shop", "role=db", "--overwrite").returncode == 0
        got = json.loads(host.felidctl("get", "wep", wep, "-n", "shop", "-o", "json").stdout)
        assert got["metadata"]["labels"]["role"] == "db"
    # Bad labels or profiles are refused before anything is made.
    for bad, says in (
        (
            {"args": {"cni": {"labels": [{"key": "-x", "value": "y"}]}}},
            "args.cni.labels[0]: invalid label key",
        ),
        ({"args": {"cni": {"labels": {"role": "db"}}}}, "must be a list"),
        ({"profiles": "prod"}, "profiles must be a list"),
        ({"profiles": ["Not_A_Name"]}, "profiles"),
    ):
        with namespaces("pod-bad") as pods:
            code, error = host.cni("ADD", {**host.netconf(), **bad}, "cbad", f"/run/netns/{pods['pod-bad']}")
        assert code != 0 and error is not None and error["code"] == 7 and says in error["msg"], error
    assert "cbad" not in host.felidctl("get", "wep", "-A", "-o", "json").stdout


def test_del_after_the_namespace_is_gone(host: LabHost) -> None:
    with namespaces("pod") as pods:
        code, result = host.cni("ADD", host.netconf(), "c1", f"/run/netns/{pods['pod']}")
        assert code == 0
    # The namespace (and the pod's end of the veth with it) is gone now.
    code, _ = host.cni("DEL", host.netconf(), "c1", f"/run/netns/{pods['pod']}")
    assert code == 0
    assert "cali" not in ip("-n", host.netns, "link").stdout
    assert "is not assigned" in host.felidctl("ipam", "show", "--ip", address_of(result)).stdout
    assert json.loads(host.felidctl("get", "wep", "-A", "-o", "json").stdout)["items"] == []


def test_failed_add_rolls_back_everything(host: LabHost) -> None:
    # A namespace path that does not exist: the veth cannot be moved there.
    code, error = host.cni("ADD", host.netconf(), "c1", "/run/netns/ft-does-not-exist")
    assert code != 0 and error is not None and "code" in error and "msg" in error
    assert "cali" not in ip("-n", host.netns, "link").stdout
    assert json.loads(host.felidctl("get", "wep", "-A", "-o", "json").stdout)["items"] == []
    usage = host.felidctl("ipam", "show").stdout
    assert "| 0 (0%)" in usage


def test_version_and_bad_input(host: LabHost) -> None:
    code, result = host.cni("VERSION", {"cniVersion": "0.4.0"}, "x")
    assert code == 0 and result is not None and "1.0.0" in result["supportedVersions"]
    code, error = host.cni("ADD", {"name": "no-version", "type": "felid"}, "x", "/run/netns/x")
    assert code != 0 and error is not None and error["code"] == 7


def test_chained_with_portmap_and_tuning(host: LabHost) -> None:
    """The runtime's part, done by hand: each plugin gets the previous one's result."""
    base = host.netconf()
    chain = [
        {
            "type": "portmap",
            "capabilities": {"portMappings": True},
            "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]},
        },
        {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.accept_local": "1"}},
    ]
    with namespaces("pod") as pods:
        netns = f"/run/netns/{pods['pod']}"
        code, result = host.cni("ADD", base, "c1", netns)
        assert code == 0 and result is not None
        for plugin in chain:
            conf = {"cniVersion": "1.0.0", "name": "pods", **plugin, "prevResult": result}
            code, result = host.cni("ADD", conf, "c1", netns, plugin=str(plugin["type"]))
            assert code == 0, result
            assert result is not None and result["ips"] and result["interfaces"]
        nat = host.run("iptables", "-t", "nat", "-S").stdout
        assert "--dport 8080" in nat and "CNI-HOSTPORT-DNAT" in nat
        assert (
            ip(
                "netns", "exec", pods["pod"], "cat", "/proc/sys/net/ipv4/conf/eth0/accept_local"
            ).stdout.strip()
            == "1"
        )
        for plugin in reversed(chain):
            conf = {"cniVersion": "1.0.0", "name": "pods", **plugin, "prevResult": result}
            assert host.cni("DEL", conf, "c1", netns, plugin=str(plugin["type"]))[0] == 0
        assert host.cni("DEL", base, "c1", netns)[0] == 0
        assert "--dport 8080" not in host.run("iptables", "-t", "nat", "-S").stdout
        assert "cali" not in ip("-n", host.netns, "link").stdout


def test_mtu_from_the_config_else_from_felix_s_file(host: LabHost) -> None:
    def pod_mtu(netconf: dict[str, Any], container: str) -> int:
        with namespaces("pod") as pods:
            code, result = host.cni("ADD", netconf, container, f"/run/netns/{pods['pod']}")
            assert code == 0, result
            shown = json.loads(ip("-n", pods["pod"], "-j", "link", "show", "dev", "eth0").stdout)
            assert host.cni("DEL", netconf, container, f"/run/netns/{pods['pod']}")[0] == 0
            return int(shown[0]["mtu"])

    assert pod_mtu(host.netconf(), "c1") == 1500  # no file yet, a pool without encapsulation
    host.mtu_file.parent.mkdir(parents=True, exist_ok=True)
    host.mtu_file.write_text("1234\n")  # as felix writes it
    assert pod_mtu(host.netconf(), "c2") == 1234
    assert pod_mtu({**host.netconf(), "mtu": 1300}, "c3") == 1300  # the network config wins
    code, error = host.cni("ADD", {**host.netconf(), "mtu": "big"}, "c4", "/run/netns/x")
    assert code == 1 and error is not None and error["code"] == 7 and "mtu" in error["msg"]
