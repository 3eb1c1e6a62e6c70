"""felix's policy calculation, pure: which policies select which of this host's endpoints, in
which order, and the addresses each selector in their rules stands for."""

from __future__ import annotations

from typing import Any

from datastore.models import GlobalNetworkPolicy, HostEndpoint, NetworkPolicy, Profile, WorkloadEndpoint
from felix.calc.policy import Policy, PolicyPlan, plan, scoped

NODE = "node-1"


def wep(
    name: str, ns: str, ip: str, node: str = NODE, profiles: tuple[str, ...] = (), **labels: str
) -> WorkloadEndpoint:
    return WorkloadEndpoint.model_validate(
        {
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {
                "node": node,
                "interfaceName": f"cali{name}"[:15],
                "ipNetworks": [f"{ip}/32"],
                "profiles": list(profiles),
            },
        }
    )


def netpol(name: str, ns: str, spec: dict[str, Any]) -> NetworkPolicy:
    return NetworkPolicy.model_validate({"metadata": {"name": name, "namespace": ns}, "spec": spec})


def gnp(name: str, spec: dict[str, Any]) -> GlobalNetworkPolicy:
    return GlobalNetworkPolicy.model_validate({"metadata": {"name": name}, "spec": spec})


def profile(name: str, **labels: str) -> Profile:
    return Profile.model_validate({"metadata": {"name": name}, "spec": {"labelsToApply": labels}})


WORKLOADS = [
    wep("db", "shop", "10.244.0.1", role="db"),
    wep("front", "shop", "10.244.0.2", role="frontend"),
    wep("front2", "shop", "10.244.1.2", node="node-2", role="frontend"),
    wep("blogfront", "blog", "10.244.1.3", node="node-2", role="frontend"),
    wep("blogdb", "blog", "10.244.0.4", role="db"),
]
PROFILES = {
    p.name: p for p in (profile("kns.shop", **{"pcns.team": "web"}), profile("kns.blog", team="words"))
}


def decide(
    policies: list[Policy],
    workloads: list[WorkloadEndpoint] = WORKLOADS,
    heps: list[HostEndpoint] | None = None,
) -> tuple[dict[str, tuple[tuple[str, ...], tuple[str, ...]]], PolicyPlan]:
    """Each local endpoint's (ingress, egress) policies by key, and the whole plan."""
    result = plan(NODE, workloads, heps or [], policies, PROFILES)
    return {e.endpoint.key: (e.ingress, e.egress) for e in result.endpoints}, result


def test_a_network_policy_selects_only_in_its_namespace_and_its_rules_only_there() -> None:
    allow = netpol(
        "allow-frontend",
        "shop",
        {
            "selector": "role == 'db'",
            "ingress": [{"action": "Allow", "source": {"selector": "role == 'frontend'"}}],
        },
    )
    chosen, result = decide([allow])
    assert chosen == {
        "blog/blogdb": ((), ()),
        "shop/db": (("shop/allow-frontend",), ()),
        "shop/front": ((), ()),
    }
    (frontends,) = result.sets.values()
    assert frontends.members == {"10.244.0.2", "10.244.1.2"}  # both hosts' shop frontends, not blog's
    assert list(result.policies) == ["shop/allow-frontend"]


def test_global_policies_namespace_selectors_order_and_types() -> None:
    policies: list[Policy] = [
        gnp("z-unordered", {"selector": "has(role)", "egress": [{"action": "Allow"}]}),
        gnp("b-first", {"order": 10, "selector": "all()", "namespaceSelector": "team == 'web'"}),
        gnp("a-second", {"order": 20, "selector": "role == 'db'", "types": ["Ingress", "Egress"]}),
        netpol("a-tie", "shop", {"order": 10, "selector": "all()"}),
    ]
    chosen, _ = decide(policies)
    # b-first (10) and shop/a-tie (10) tie: by name; a namespaceSelector on the kns profile's labels
    assert chosen["shop/db"] == (("b-first", "shop/a-tie", "a-second"), ("a-second", "z-unordered"))
    assert chosen["blog/blogdb"] == (("a-second",), ("a-second", "z-unordered"))


def test_every_spelling_of_a_selector_is_one_set_and_namespace_selectors_make_their_own() -> None:
    rules = [
        {"action": "Allow", "source": {"selector": "role == 'frontend'"}},
        {"action": "Allow", "source": {"selector": 'role=="frontend"'}},
        {"action": "Deny", "source": {"namespaceSelector": "team == 'words'"}},
        {"action": "Allow", "source": {"selector": "all()", "notSelector": "role == 'db'"}},
    ]
    policy = gnp("p", {"selector": "all()", "ingress": rules})
    _, result = decide([policy])
    sets = {s.selector.canonical: s.members for s in result.sets.values()}
    everyone = {"10.244.0.1", "10.244.0.2", "10.244.1.2", "10.244.1.3", "10.244.0.4"}
    assert sets == {
        "all()": everyone,  # the fourth rule's selector, beside its notSelector
        'role == "frontend"': {"10.244.0.2", "10.244.1.2", "10.244.1.3"},
        'pcns.team == "words"': {"10.244.1.3", "10.244.0.4"},
        'role == "db"': {"10.244.0.1", "10.244.0.4"},
    }
    assert (
        scoped("role == 'x'", None, "shop").canonical
        == 'role == "x" && projectcalico.org/namespace == "shop"'
    )


def test_labels_come_from_profiles_then_the_endpoint_and_a_change_moves_only_set_members() -> None:
    profiles = {**PROFILES, "env-prod": profile("env-prod", env="prod", role="ignored")}
    labelled = [wep("api", "shop", "10.244.0.9", profiles=("env-prod",), role="api"), *WORKLOADS]
    policy = gnp(
        "p",
        {
            "selector": "env == 'prod'",
            "ingress": [{"action": "Allow", "source": {"selector": "role == 'api'"}}],
        },
    )
    result = plan(NODE, labelled, [], [policy], profiles)
    api = {e.endpoint.key: e for e in result.endpoints}["shop/api"]
    assert api.ingress == ("p",) and api.endpoint.labels["role"] == "api"  # its own label wins
    assert [s.members for s in result.sets.values()] == [{"10.244.0.9"}]
    relabelled = [wep("api", "shop", "10.244.0.9", profiles=("env-prod",), role="web"), *WORKLOADS]
    after = plan(NODE, relabelled, [], [policy], profiles)
    assert {e.endpoint.key: e.ingress for e in after.endpoints}["shop/api"] == ("p",)
    assert [s.members for s in after.sets.values()] == [frozenset()]  # the same set, one member fewer
    assert list(after.sets) == list(result.sets)


def test_global_matches_host_endpoints_not_workloads() -> None:
    hep = HostEndpoint.model_validate(
        {
            "metadata": {"name": "node-1-eth0", "labels": {"role": "host"}},
            "spec": {"node": NODE, "interfaceName": "eth0", "expectedIPs": ["192.0.2.10"]},
        }
    )
    policy = gnp(
        "hosts", {"selector": "all()", "namespaceSelector": "global()", "ingress": [{"action": "Deny"}]}
    )
    chosen, _ = decide([policy], heps=[hep])
    assert chosen["node-1-eth0"] == (("hosts",), ())
    assert chosen["shop/db"] == ((), ())


def test_a_host_endpoint_by_address_is_on_the_interface_holding_one_of_them() -> None:
    hep = HostEndpoint.model_validate(
        {"metadata": {"name": "h"}, "spec": {"node": NODE, "expectedIPs": ["192.0.2.7", "192.0.2.8"]}}
    )
    where = {"192.0.2.8": "eth1", "192.0.2.9": "eth2"}
    (found,) = plan(NODE, [], [hep], [], PROFILES, host_addresses=where).endpoints
    assert found.endpoint.interface == "eth1" and found.endpoint.addresses == ("192.0.2.7", "192.0.2.8")
    (elsewhere,) = plan(NODE, [], [hep], [], PROFILES, host_addresses={}).endpoints
    assert elsewhere.endpoint.interface is None  # none of them here: no chains
