"""Validation of every resource kind: what is accepted, and the field named when not."""

from __future__ import annotations

from typing import Any

import pytest

from datastore.errors import ValidationFailed
from datastore.models import (
    BGPConfiguration,
    BGPPeer,
    ClusterInformation,
    FelixConfiguration,
    IPPool,
    Node,
    WorkloadEndpoint,
    parse_resource,
)


def doc(kind: str, name: str = "x", spec: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "apiVersion": "projectcalico.org/v3",
        "kind": kind,
        "metadata": {"name": name, **meta},
    }
    if spec is not None:
        out["spec"] = spec
    return out


GOOD = [
    (doc("IPPool", "pool-a", {"cidr": "10.244.0.0/16"}), IPPool),
    (
        doc(
            "IPPool",
            "p",
            {"cidr": "10.0.0.0/20", "blockSize": 20, "vxlanMode": "CrossSubnet", "natOutgoing": True},
        ),
        IPPool,
    ),
    (
        doc(
            "IPPool",
            "p",
            {"cidr": "192.0.2.0/24", "blockSize": 32, "nodeSelector": "zone == 'a' && !has(edge)"},
        ),
        IPPool,
    ),
    (
        doc(
            "Node",
            "node-1",
            {
                "bgp": {
                    "ipv4Address": "198.51.100.5/24",
                    "asNumber": "1.10",
                    "ipv4IPIPTunnelAddr": "10.244.1.0",
                    "routeReflectorClusterID": "224.0.0.1",
                },
                "ipv4VXLANTunnelAddr": "10.244.1.1",
                "vxlanTunnelMACAddr": "66:AA:bb:cc:dd:ee",
            },
            labels={"route-reflector": "true"},
        ),
        Node,
    ),
    (doc("Node", "n.example.com"), Node),
    (
        doc(
            "BGPConfiguration",
            "default",
            {"nodeToNodeMeshEnabled": False, "asNumber": 64512, "listenPort": 179},
        ),
        BGPConfiguration,
    ),
    (doc("BGPConfiguration", "node.node-1", {"asNumber": 65001}), BGPConfiguration),
    (
        doc(
            "BGPPeer",
            "tor",
            {
                "peerIP": "192.0.2.1",
                "asNumber": 64513,
                "node": "node-1",
                "password": "s3cret",
                "keepaliveTime": "10s",
                "holdTime": "30s",
                "maxRestartTime": "2m",
            },
        ),
        BGPPeer,
    ),
    (
        doc("BGPPeer", "tor2", {"peerIP": "192.0.2.1:1179", "asNumber": 64513, "nodeSelector": "all()"}),
        BGPPeer,
    ),
    (doc("BGPPeer", "rr", {"nodeSelector": "!has(rr)", "peerSelector": "has(rr)"}), BGPPeer),
    (
        doc(
            "FelixConfiguration",
            "default",
            {"routeRefreshInterval": "1m30s", "prometheusMetricsEnabled": True},
        ),
        FelixConfiguration,
    ),
    (doc("FelixConfiguration", "node.a", {"vxlanVNI": 4096}), FelixConfiguration),
    (
        doc(
            "WorkloadEndpoint",
            "node--1-k8s-pod-eth0",
            {
                "node": "node-1",
                "interfaceName": "cali0123456789a",
                "ipNetworks": ["10.244.1.5/32"],
                "mac": "ee:ee:ee:ee:ee:ee",
            },
            namespace="kube-system",
        ),
        WorkloadEndpoint,
    ),
    (
        doc("ClusterInformation", "default", {"datastoreReady": True, "clusterGUID": "abc"}),
        ClusterInformation,
    ),
]


@pytest.mark.parametrize(("data", "kind"), GOOD, ids=[f"{d['kind']}-{i}" for i, (d, _) in enumerate(GOOD)])
def test_good_documents_parse_and_round_trip(data: dict[str, Any], kind: type) -> None:
    resource = parse_resource(data)
    assert isinstance(resource, kind)
    assert parse_resource(resource.to_dict()) == resource


BAD = [
    (doc("IPPool", "p", {"cidr": "10.244.0.1/16"}), "spec.cidr", "host bits set"),
    (doc("IPPool", "p", {"cidr": "10.244.0.0"}), "spec.cidr", "no prefix length"),
    (doc("IPPool", "p", {"cidr": "nonsense"}), "spec.cidr", "not a CIDR"),
    (doc("IPPool", "p", {"cidr": "fd00::/64"}), "spec.cidr", "only IPv4"),
    (
        doc("IPPool", "p", {"cidr": "10.0.0.0/16", "blockSize": 19}),
        "spec.blockSize",
        "greater than or equal to 20",
    ),
    (
        doc("IPPool", "p", {"cidr": "10.0.0.0/16", "blockSize": 33}),
        "spec.blockSize",
        "less than or equal to 32",
    ),
    (doc("IPPool", "p", {"cidr": "10.0.0.0/24", "blockSize": 22}), "spec.blockSize", "do not fit"),
    (doc("IPPool", "p", {"cidr": "10.0.0.0/16", "ipipMode": "always"}), "spec.ipipMode", "'Never', 'Always'"),
    (
        doc("IPPool", "p", {"cidr": "10.0.0.0/16", "ipipMode": "Always", "vxlanMode": "CrossSubnet"}),
        "spec.vxlanMode",
        "at most one encapsulation",
    ),
    (
        doc("IPPool", "p", {"cidr": "10.0.0.0/16", "nodeSelector": "zone =="}),
        "spec.nodeSelector",
        "invalid selector",
    ),
    (doc("IPPool", "p", {"cidr": "10.0.0.0/16", "natOutgoin": True}), "spec.natOutgoin", "unknown field"),
    (doc("IPPool", "p", {}), "spec.cidr", "required field is missing"),
    (doc("IPPool", "Pool_A", {"cidr": "10.0.0.0/16"}), "metadata.name", "RFC 1123"),
    (doc("IPPool", "-a", {"cidr": "10.0.0.0/16"}), "metadata.name", "RFC 1123"),
    (doc("IPPool", "a" * 254, {"cidr": "10.0.0.0/16"}), "metadata.name", "253"),
    (doc("Node", "n", {"bgp": {"ipv4Address": "198.51.100.300/24"}}), "spec.bgp.ipv4Address", "CIDR form"),
    (doc("Node", "n", {"bgp": {"asNumber": 0}}), "spec.bgp.asNumber", "outside 1..4294967295"),
    (doc("Node", "n", {"bgp": {"asNumber": 4294967296}}), "spec.bgp.asNumber", "outside"),
    (doc("Node", "n", {"bgp": {"asNumber": "70000.1"}}), "spec.bgp.asNumber", "not an AS number"),
    (
        doc("Node", "n", {"bgp": {"ipv4IPIPTunnelAddr": "10.0.0.0/32"}}),
        "spec.bgp.ipv4IPIPTunnelAddr",
        "not an IPv4",
    ),
    (doc("Node", "n", {"vxlanTunnelMACAddr": "ee:ee"}), "spec.vxlanTunnelMACAddr", "not a MAC"),
    (doc("BGPConfiguration", "global", {}), "metadata.name", "'default' or 'node.<nodename>'"),
    (
        doc("BGPConfiguration", "node.a", {"nodeToNodeMeshEnabled": True}),
        "spec.nodeToNodeMeshEnabled",
        "default",
    ),
    (doc("BGPConfiguration", "default", {"listenPort": 0}), "spec.listenPort", "greater than or equal to 1"),
    (doc("BGPConfiguration", "default", {"asNumber": -5}), "spec.asNumber", "outside"),
    (doc("BGPPeer", "p", {"peerIP": "192.0.2.1"}), "spec.asNumber", "required with peerIP"),
    (doc("BGPPeer", "p", {"peerIP": "192.0.2.256", "asNumber": 1}), "spec.peerIP", "not an IPv4"),
    (doc("BGPPeer", "p", {"peerIP": "192.0.2.1:70000", "asNumber": 1}), "spec.peerIP", "not in 1..65535"),
    (doc("BGPPeer", "p", {"asNumber": 1}), "spec.peerIP", "one of peerIP or peerSelector"),
    (
        doc("BGPPeer", "p", {"peerIP": "192.0.2.1", "asNumber": 1, "node": "a", "nodeSelector": "all()"}),
        "spec.nodeSelector",
        "cannot be combined with node",
    ),
    (
        doc("BGPPeer", "p", {"peerIP": "192.0.2.1", "asNumber": 1, "peerSelector": "all()"}),
        "spec.peerSelector",
        "cannot be combined with peerIP",
    ),
    (
        doc("BGPPeer", "p", {"peerIP": "192.0.2.1", "asNumber": 1, "keepaliveTime": "ten seconds"}),
        "spec.keepaliveTime",
        "not a duration",
    ),
    (doc("FelixConfiguration", "felix", {}), "metadata.name", "'default' or 'node.<nodename>'"),
    (
        doc("FelixConfiguration", "default", {"routeRefreshInterval": "90"}),
        "spec.routeRefreshInterval",
        "duration",
    ),
    (
        doc("FelixConfiguration", "default", {"healthPort": 70000}),
        "spec.healthPort",
        "less than or equal to 65535",
    ),
    (
        doc("WorkloadEndpoint", "w", {"node": "n", "interfaceName": "cali1", "ipNetworks": ["10.0.0.0/24"]}),
        "spec.ipNetworks.0",
        "/32",
    ),
    (
        doc("WorkloadEndpoint", "w", {"node": "n", "interfaceName": "cali1234567890123"}),
        "spec.interfaceName",
        "not a Linux interface name",
    ),
    (
        doc("WorkloadEndpoint", "w", {"node": "n", "interfaceName": "cali1"}, namespace="Kube_System"),
        "metadata.namespace",
        "RFC 1123 label",
    ),
    (doc("WorkloadEndpoint", "w", {"interfaceName": "cali1"}), "spec.node", "required field is missing"),
    (doc("ClusterInformation", "other", {}), "metadata.name", "must be 'default'"),
    (doc("IPPool", "p", {"cidr": "10.0.0.0/16"}) | {"apiVersion": "v1"}, "apiVersion", "not supported"),
    (doc("Pool", "p", {"cidr": "10.0.0.0/16"}), "kind", "unknown kind"),
]


@pytest.mark.parametrize(
    ("data", "field", "message"), BAD, ids=[f"{f}-{i}" for i, (_, f, _m) in enumerate(BAD)]
)
def test_bad_documents_name_the_field(data: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_resource(data)
    assert info.value.field == field
    assert message in info.value.message


def test_not_a_mapping_is_refused() -> None:
    with pytest.raises(ValidationFailed, match="expected a mapping"):
        parse_resource(["IPPool"])


def test_workload_endpoint_defaults_to_namespace_default() -> None:
    wep = parse_resource(doc("WorkloadEndpoint", "w", {"node": "n", "interfaceName": "cali1"}))
    assert wep.namespace == "default"


def test_models_are_frozen() -> None:
    pool = parse_resource(doc("IPPool", "p", {"cidr": "10.0.0.0/16"}))
    assert isinstance(pool, IPPool)
    with pytest.raises(ValueError, match="frozen"):
        pool.spec.cidr = "10.1.0.0/16"  # type: ignore[misc]


def test_pool_update_rules() -> None:
    old = parse_resource(doc("IPPool", "p", {"cidr": "10.0.0.0/16"}))
    resized = parse_resource(doc("IPPool", "p", {"cidr": "10.0.0.0/16", "blockSize": 24}))
    moved = parse_resource(doc("IPPool", "p", {"cidr": "10.1.0.0/16"}))
    nat = parse_resource(doc("IPPool", "p", {"cidr": "10.0.0.0/16", "natOutgoing": True}))
    with pytest.raises(ValueError, match=r"spec.blockSize: is immutable"):
        resized.check_update(old)
    with pytest.raises(ValueError, match=r"spec.cidr: is immutable"):
        moved.check_update(old)
    nat.check_update(old)


def test_bgp_peer_address_and_port() -> None:
    peer = parse_resource(doc("BGPPeer", "p", {"peerIP": "192.0.2.1:1179", "asNumber": 1}))
    assert isinstance(peer, BGPPeer)
    assert (peer.spec.peer_address, peer.spec.peer_port) == ("192.0.2.1", 1179)
    plain = parse_resource(doc("BGPPeer", "p", {"peerIP": "192.0.2.1", "asNumber": 1}))
    assert isinstance(plain, BGPPeer)
    assert (plain.spec.peer_address, plain.spec.peer_port) == ("192.0.2.1", 179)


def test_calicos_node_example_fields_and_ipv6_refused_by_name() -> None:
    example = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Node",
        "metadata": {"name": "node-hostname"},
        "spec": {
            "bgp": {"asNumber": 64512, "ipv4Address": "10.244.0.1/24", "ipv4IPIPTunnelAddr": "192.168.0.1"},
            "orchRefs": [{"nodeName": "node-hostname", "orchestrator": "k8s"}],
            "addresses": [{"address": "10.244.0.1", "type": "InternalIP"}, {"address": "10.244.0.1/24"}],
        },
    }
    node = parse_resource(example)
    assert isinstance(node, Node) and node.ip == "10.244.0.1"
    assert node.spec.orch_refs[0].orchestrator == "k8s" and node.spec.addresses[0].type == "InternalIP"
    for where, document in (
        ("spec.bgp.ipv6Address", {"bgp": {"ipv6Address": "2001:db8::1/120"}}),
        ("spec.ipv6VXLANTunnelAddr", {"ipv6VXLANTunnelAddr": "2001:db8::2"}),
        ("spec.addresses.0.address", {"addresses": [{"address": "2001:db8::3"}]}),
    ):
        with pytest.raises(ValidationFailed) as refused:
            parse_resource({**example, "spec": document})
        assert refused.value.field == where and "IPv6 is not supported yet" in refused.value.message
