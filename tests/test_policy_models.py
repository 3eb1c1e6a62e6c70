"""Calico's policy resources as felid validates them: defaults, orders, rules and each constraint
a bad document breaks (one error naming the field)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from datastore.errors import ValidationFailed
from datastore.models import GlobalNetworkPolicy, HostEndpoint, NetworkPolicy, Profile, parse_resource
from datastore.models.policy import FAILSAFE_INBOUND, FAILSAFE_OUTBOUND, ProtoPort, protocol_number


def doc(kind: str, spec: dict[str, Any], **meta: str) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": kind,
        "metadata": {"name": "p", **meta},
        "spec": spec,
    }


def test_a_network_policy_as_calicos_docs_write_it() -> None:
    policy = parse_resource(
        doc(
            "NetworkPolicy",
            {
                "order": 100,
                "selector": "role == 'db'",
                "ingress": [
                    {
                        "action": "Allow",
                        "protocol": "tcp",
                        "source": {"selector": "role == 'frontend'", "notNets": ["10.0.0.7/24"]},
                        "destination": {"ports": [6379, "7000:7010", "metrics", "8080"]},
                    },
                    {"action": "Deny", "protocol": 1, "icmp": {"type": 8}},
                ],
            },
            namespace="shop",
        )
    )
    assert isinstance(policy, NetworkPolicy) and policy.namespace == "shop"
    allow, deny = policy.spec.ingress
    assert allow.protocol == "TCP" and allow.destination.ports == [6379, "7000:7010", "metrics", 8080]
    assert allow.source.not_nets == ["10.0.0.0/24"]  # host bits allowed, as Calico allows them
    assert deny.protocol == 1 and protocol_number("SCTP") == 132
    assert policy.spec.directions == {"Ingress"}
    assert parse_resource(doc("NetworkPolicy", {})).namespace == "default"


@pytest.mark.parametrize(
    ("ingress", "egress", "expected"),
    [
        (False, False, {"Ingress"}),
        (True, False, {"Ingress"}),
        (False, True, {"Egress"}),
        (True, True, {"Ingress", "Egress"}),
    ],
)
def test_types_default_as_calicos(ingress: bool, egress: bool, expected: set[str]) -> None:
    rules = [{"action": "Allow"}]
    spec = {"ingress": rules if ingress else [], "egress": rules if egress else []}
    policy = parse_resource(doc("GlobalNetworkPolicy", spec))
    assert isinstance(policy, GlobalNetworkPolicy) and policy.spec.directions == expected


def test_unordered_policies_come_last_and_ties_go_by_name() -> None:
    specs = {"z": 5.5, "a": 5.5, "m": None, "b": None, "c": 10}
    policies = [
        GlobalNetworkPolicy.model_validate(doc("GlobalNetworkPolicy", {"order": o}, name=n))
        for n, o in specs.items()
    ]
    ordered = sorted(policies, key=lambda p: p.spec.sort_key(p.name))
    assert [p.name for p in ordered] == ["a", "z", "c", "b", "m"]


@pytest.mark.parametrize(
    ("kind", "spec", "field", "says"),
    [
        ("NetworkPolicy", {"selector": "role =="}, "spec.selector", "at offset 7"),
        ("NetworkPolicy", {"order": "soon"}, "spec.order", "is not an order"),
        (
            "NetworkPolicy",
            {"types": ["Egress"], "ingress": [{"action": "Allow"}]},
            "spec.ingress",
            "types does not",
        ),
        ("NetworkPolicy", {"ingress": [{"action": "Accept"}]}, "spec.ingress.0.action", "Allow"),
        (
            "NetworkPolicy",
            {"ingress": [{"action": "Allow", "protocol": "GRE"}]},
            "spec.ingress.0.protocol",
            "GRE",
        ),
        (
            "NetworkPolicy",
            {"ingress": [{"action": "Allow", "protocol": 256}]},
            "spec.ingress.0.protocol",
            "1..255",
        ),
        (
            "NetworkPolicy",
            {"ingress": [{"action": "Allow", "destination": {"ports": [80]}}]},
            "spec.ingress.0.destination.ports",
            "need protocol TCP",
        ),
        (
            "NetworkPolicy",
            {"ingress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": ["90:80"]}}]},
            "spec.ingress.0.destination.ports.0",
            "lower port",
        ),
        (
            "NetworkPolicy",
            {"ingress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": ["Web_Port"]}}]},
            "spec.ingress.0.destination.ports.0",
            "not a port name",
        ),
        (
            "NetworkPolicy",
            {"ingress": [{"action": "Allow", "icmp": {"type": 8}}]},
            "spec.ingress.0.icmp",
            "need protocol ICMP",
        ),
        (
            "NetworkPolicy",
            {"ingress": [{"action": "Allow", "protocol": "ICMP", "icmp": {"code": 0}}]},
            "spec.ingress.0.icmp.code",
            "needs its type",
        ),
        (
            "NetworkPolicy",
            {"ingress": [{"action": "Allow", "source": {"nets": ["10.0.0.0/33"]}}]},
            "spec.ingress.0.source.nets.0",
            "not a CIDR",
        ),
        (
            "NetworkPolicy",
            {"ingress": [{"action": "Allow", "ipVersion": 6}]},
            "spec.ingress.0.ipVersion",
            "IPv4",
        ),
        ("GlobalNetworkPolicy", {"preDNAT": True}, "spec.applyOnForward", "must be true with preDNAT"),
        (
            "GlobalNetworkPolicy",
            {"preDNAT": True, "doNotTrack": True, "applyOnForward": True},
            "spec.preDNAT",
            "doNotTrack",
        ),
        (
            "GlobalNetworkPolicy",
            {"preDNAT": True, "applyOnForward": True, "egress": [{"action": "Allow"}]},
            "spec.egress",
            "ingress rules only",
        ),
        ("HostEndpoint", {"node": "n1"}, "spec.interfaceName", "one of interfaceName or expectedIPs"),
        (
            "HostEndpoint",
            {"node": "n1", "interfaceName": "a/b"},
            "spec.interfaceName",
            "Linux interface name",
        ),
        ("Profile", {"labelsToApply": {"a": 1}}, "spec.labelsToApply.a", "string"),
    ],
)
def test_a_bad_document_names_its_field(kind: str, spec: dict[str, Any], field: str, says: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_resource(doc(kind, spec))
    assert caught.value.field == field and says in caught.value.message, caught.value


def test_host_endpoints_profiles_and_the_failsafe_ports() -> None:
    hep = parse_resource(
        doc(
            "HostEndpoint",
            {
                "node": "node-1",
                "interfaceName": "*",
                "expectedIPs": ["192.0.2.10"],
                "ports": [{"name": "bgp", "protocol": "TCP", "port": 179}],
            },
        )
    )
    assert isinstance(hep, HostEndpoint) and hep.spec.interface_name == "*"
    allow = Profile.default_allow()
    assert allow.name == "projectcalico-default-allow" and allow.spec.ingress[0].action == "Allow"
    assert parse_resource(allow.to_dict()) == allow
    bgp, dhcp = ProtoPort(protocol="TCP", port=179), ProtoPort(protocol="UDP", port=68)
    assert bgp in FAILSAFE_INBOUND and bgp in FAILSAFE_OUTBOUND and dhcp in FAILSAFE_INBOUND
    # Calico's text form, as the environment gives it, and its errors.
    assert ProtoPort.model_validate("udp:68") == dhcp
    assert ProtoPort.model_validate("tcp:198.51.100.0/24:22").net == "198.51.100.0/24"
    for bad, says in (("tcp", "not <protocol>:[<net>:]<port>"), ("icmp:1", "protocol"), ("tcp:x:22", "net")):
        with pytest.raises(ValueError, match=re.escape(says)):
            ProtoPort.model_validate(bad)


def test_kubernetes_network_policy_converts_as_calico_converts_it() -> None:
    converted = parse_resource(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "api", "namespace": "shop"},
            "spec": {
                "podSelector": {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["x"]}]},
                "ingress": [
                    {
                        "from": [
                            {"podSelector": {"matchLabels": {"role": "web"}}, "namespaceSelector": {}},
                            {"ipBlock": {"cidr": "198.51.100.0/24", "except": ["198.51.100.7/32"]}},
                        ],
                        "ports": [{"port": 80}, {"protocol": "UDP", "port": 5000, "endPort": 5010}],
                    }
                ],
                "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]}],
            },
        }
    )
    assert isinstance(converted, NetworkPolicy)
    assert (converted.name, converted.namespace, converted.spec.order) == ("knp.default.api", "shop", 1000)
    assert converted.spec.selector == "projectcalico.org/orchestrator == 'k8s' && tier not in {'x'}"
    assert converted.spec.types == ["Ingress", "Egress"]  # Egress: there are egress rules
    assert len(converted.spec.ingress) == 4  # two peers times two protocols
    web, web_udp, block, _ = converted.spec.ingress
    assert web.source.namespace_selector == "all()" and web.protocol == "TCP"
    assert web.destination.ports == [80] and web_udp.destination.ports == ["5000:5010"]
    assert block.source.nets == ["198.51.100.0/24"] and block.source.not_nets == ["198.51.100.7/32"]
    (out,) = converted.spec.egress
    assert out.destination.namespace_selector == "team == 'b'" and out.protocol is None
    deny = parse_resource(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "d"},
            "spec": {"podSelector": {}},
        }
    )
    assert isinstance(deny, NetworkPolicy) and deny.namespace == "default"
    assert deny.spec.types == ["Ingress"] and deny.spec.ingress == []  # everything in is denied
    for spec, where in (
        ({}, "spec.podSelector"),
        ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}}, "operator"),
        ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "x"}}]}]}, "nets"),
    ):
        with pytest.raises(ValidationFailed, match=where):
            parse_resource(
                {
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicy",
                    "metadata": {"name": "b"},
                    "spec": spec,
                }
            )
