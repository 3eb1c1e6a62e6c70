"""PolicyCalculator against the from-nothing reference: after every one of many random changes
(pods relabelled, added and removed, policies and profiles edited, settings changed) its ruleset
is exactly ``render(plan(...))`` of the same inputs, and what did not change is not made again."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from datastore.models import GlobalNetworkPolicy, HostEndpoint, NetworkPolicy, Profile, WorkloadEndpoint
from felix.calc.calculator import PolicyCalculator
from felix.calc.chains import Ruleset
from felix.calc.dispatch import PolicyOptions
from felix.calc.policy import Policy, plan
from felix.calc.rules import render

NODE = "node-1"
NAMESPACES = ("shop", "blog")
ROLES = ("db", "frontend", "api", "cache")
SELECTORS = (
    "role == 'db'",
    "role in {'frontend', 'api'}",
    "has(tier)",
    "!has(role)",
    "all()",
    "tier == 'gold' || role == 'cache'",
)


class World:
    """A random cluster, changed one thing at a time."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.workloads: dict[str, WorkloadEndpoint] = {}
        self.host_endpoints: dict[str, HostEndpoint] = {}
        self.policies: dict[str, Policy] = {}
        self.profiles: dict[str, Profile] = {Profile.DEFAULT_ALLOW: Profile.default_allow()}
        self.options = PolicyOptions(cluster_hosts=frozenset({"192.0.2.1", "192.0.2.2"}), ipip=True)
        self.serial = 0
        self.host_addresses: dict[str, str] = {}
        for _ in range(12):
            self.new_workload()
        for _ in range(6):
            self.new_policy()

    def pick(self, *choices: Any) -> Any:
        return self.rng.choice(choices)

    def new_workload(self, name: str | None = None) -> None:
        self.serial += 1
        name = name or f"w{self.serial}"
        labels = {"role": self.pick(*ROLES)} if self.rng.random() < 0.8 else {}
        if self.rng.random() < 0.3:
            labels["tier"] = self.pick("gold", "silver")
        ports = (
            [{"name": "http", "port": self.pick(80, 8080), "protocol": "TCP"}]
            if self.rng.random() < 0.5
            else []
        )
        self.workloads[name] = WorkloadEndpoint.model_validate(
            {
                "metadata": {"name": name, "namespace": self.pick(*NAMESPACES), "labels": labels},
                "spec": {
                    "node": self.pick(NODE, NODE, "node-2"),
                    "interfaceName": f"cali{name}"[:15],
                    "ipNetworks": [f"10.244.{self.serial // 200}.{self.serial % 200 + 1}/32"],
                    "profiles": [self.pick(Profile.DEFAULT_ALLOW, "env", "missing")],
                    "ports": ports,
                },
            }
        )

    def rule(self) -> dict[str, Any]:
        side: dict[str, Any] = {}
        if self.rng.random() < 0.7:
            side["selector"] = self.pick(*SELECTORS)
        if self.rng.random() < 0.2:
            side["notSelector"] = self.pick(*SELECTORS)
        if self.rng.random() < 0.2:
            side["namespaceSelector"] = self.pick("team == 'web'", "all()")
        if self.rng.random() < 0.2:
            side["nets"] = [self.pick("198.51.100.0/24", "203.0.113.7/32")]
        rule: dict[str, Any] = {"action": self.pick("Allow", "Deny", "Pass", "Log"), "source": side}
        if self.rng.random() < 0.4:
            rule["protocol"] = "TCP"
            rule["destination"] = {"ports": [self.pick(80, "http", "1000:2000")]}
        return rule

    def new_policy(self, name: str | None = None) -> None:
        self.serial += 1
        name = name or f"p{self.serial}"
        types = self.pick(["Ingress"], ["Egress"], ["Ingress", "Egress"], None)  # None: Calico's defaulting
        spec: dict[str, Any] = {"selector": self.pick(*SELECTORS)}
        for direction, most in (("Ingress", 3), ("Egress", 2)):
            if types is None or direction in types:
                spec[direction.lower()] = [self.rule() for _ in range(self.rng.randint(0, most))]
        if types is not None:
            spec["types"] = types
        if self.rng.random() < 0.7:
            spec["order"] = self.rng.randint(0, 5)
        if self.rng.random() < 0.5:
            policy: Policy = NetworkPolicy.model_validate(
                {"metadata": {"name": name, "namespace": self.pick(*NAMESPACES)}, "spec": spec}
            )
        else:
            stage = self.pick("normal", "normal", "forward", "untracked", "pre-dnat")
            if stage != "normal":
                spec["applyOnForward"] = True
            if stage == "untracked":
                spec["doNotTrack"] = True
            if stage == "pre-dnat":  # ingress only
                spec["preDNAT"] = True
                spec.pop("egress", None)
                spec["types"] = ["Ingress"]
                spec.setdefault("ingress", [])
            policy = GlobalNetworkPolicy.model_validate({"metadata": {"name": name}, "spec": spec})
        self.policies[name] = policy

    def change(self) -> str:
        """One random change; what it was."""
        what = self.pick(
            "relabel", "relabel", "add", "remove", "edit-policy", "add-policy", "remove-policy",
            "profile", "namespace", "options", "host-endpoint", "addresses", "nothing",
        )  # fmt: skip
        if what == "relabel" and self.workloads:
            self.new_workload(self.pick(*self.workloads))
        elif what == "add":
            self.new_workload()
        elif what == "remove" and self.workloads:
            del self.workloads[self.pick(*self.workloads)]
        elif what == "edit-policy" and self.policies:
            self.new_policy(self.pick(*self.policies))
        elif what == "add-policy":
            self.new_policy()
        elif what == "remove-policy" and self.policies:
            del self.policies[self.pick(*self.policies)]
        elif what == "profile":
            labels = {"role": self.pick(*ROLES)} if self.rng.random() < 0.5 else {"tier": "gold"}
            rules = [self.rule()] if self.rng.random() < 0.5 else []
            self.profiles["env"] = Profile.model_validate(
                {"metadata": {"name": "env"}, "spec": {"labelsToApply": labels, "ingress": rules}}
            )
        elif what == "namespace":
            ns = self.pick(*NAMESPACES)
            applied = {"team": self.pick("web", "words")}
            self.profiles[f"kns.{ns}"] = Profile.model_validate(
                {"metadata": {"name": f"kns.{ns}"}, "spec": {"labelsToApply": applied}}
            )
        elif what == "addresses":  # the host's own: where a host endpoint by address is
            self.host_addresses = self.pick(
                {}, {"192.0.2.11": "eth2"}, {"192.0.2.10": "eth3", "192.0.2.11": "eth2"}
            )
        elif what == "options":
            self.options = replace(self.options, endpoint_to_host=self.pick("Drop", "Accept", "Return"))
        elif what == "host-endpoint":
            name = self.pick("eth0", "any", "eth1", "by-address")
            if name in self.host_endpoints and self.rng.random() < 0.5:
                del self.host_endpoints[name]
            else:
                self.host_endpoints[name] = HostEndpoint.model_validate(
                    {
                        "metadata": {"name": name, "labels": {"role": self.pick(*ROLES)}},
                        "spec": {
                            "node": NODE,
                            **(
                                {"expectedIPs": ["192.0.2.10", "192.0.2.11"]}
                                if name == "by-address"
                                else {"interfaceName": "*" if name == "any" else name}
                            ),
                            "profiles": [Profile.DEFAULT_ALLOW],
                        },
                    }
                )
        return str(what)

    def reference(self) -> Ruleset:
        decided = plan(
            NODE, list(self.workloads.values()), list(self.host_endpoints.values()),
            list(self.policies.values()), self.profiles, host_addresses=self.host_addresses,
        )  # fmt: skip
        return render(decided, self.options)

    def incremental(self, calculator: PolicyCalculator) -> Ruleset:
        return calculator.update(
            list(self.workloads.values()), list(self.host_endpoints.values()),
            list(self.policies.values()), dict(self.profiles), self.options,
            host_addresses=dict(self.host_addresses),
        )  # fmt: skip


def test_the_calculator_always_gives_what_the_reference_gives() -> None:
    for seed in range(8):
        world = World(seed)
        calculator = PolicyCalculator(NODE)
        assert world.incremental(calculator) == world.reference()
        for step in range(60):
            what = world.change()
            assert world.incremental(calculator) == world.reference(), f"seed {seed}, step {step}: {what}"


def test_a_relabelled_pod_renders_nothing_again_but_what_it_touches() -> None:
    world = World(3)
    calculator = PolicyCalculator(NODE)
    before = {c.name: c for c in world.incremental(calculator).chains}
    name = next(n for n, w in world.workloads.items() if w.spec.node == NODE)
    old = world.workloads[name]
    world.workloads[name] = old.model_copy(
        update={"metadata": old.metadata.model_copy(update={"labels": {}})}
    )
    after = world.incremental(calculator)
    assert after == world.reference()
    interface = old.spec.interface_name
    remade = {c.name for c in after.chains if before.get(c.name) is not c}
    assert remade <= {f"felid-tw-{interface}", f"felid-fw-{interface}"}, remade
    unchanged_again = world.incremental(calculator)
    assert all(a is b for a, b in zip(unchanged_again.chains, after.chains, strict=True))
