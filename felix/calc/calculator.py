"""PolicyCalculator: felix's policy plan and ruleset, kept between updates so that a change costs
what it touches, not what the cluster holds.

``plan()`` and ``render()`` (``felix.calc.policy``, ``felix.calc.rules``) compute everything from
nothing and are the reference: ``update()`` returns exactly what ``render(plan(...))`` would, for
the same inputs (a test holds it to that over random changes).  It gets there by remembering,
between calls, what each input object (compared by identity: the datastore cache keeps an
unchanged resource as the same object) led to:

- each endpoint's labels and addresses, redone when its resource or any Profile changed;
- which policies select a set of labels (endpoints with the same labels share the answer, as a
  Deployment's pods do), forgotten when a policy comes, goes or changes;
- for every selector and named port the rules use, each endpoint's contribution, so that a pod
  that changed touches each set once and a new selector looks at every endpoint once;
- each policy's, profile's and endpoint's rendered chains.

Pure and synchronous, like the rest of ``felix.calc``: no kernel, no datastore, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from datastore.models import HostEndpoint, Profile, WorkloadEndpoint
from datastore.selector import Selector
from felix.calc.chains import IPSet, Ruleset
from felix.calc.dispatch import HostInterfaces, PolicyOptions, dispatch_chains
from felix.calc.policy import (
    AddressSet,
    Endpoint,
    EndpointPolicies,
    NamedPort,
    NamedPortSet,
    Policy,
    PolicyPlan,
    Selection,
    endpoint_key,
    host_endpoint,
    ordered,
    policy_id,
    policy_namespace,
    policy_selector,
    rule_named_ports,
    rule_selectors,
    select,
    selected_addresses,
    workload_endpoint,
)
from felix.calc.rules import (
    Rendered,
    address_ipset,
    assemble,
    endpoint_chains,
    interfaces,
    policy_chains,
    port_ipset,
    profile_chains,
)

Source = WorkloadEndpoint | HostEndpoint
LabelsKey = frozenset[tuple[str, str]]
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
M = TypeVar("M", bound=Hashable)
T = TypeVar("T")


@dataclass(frozen=True)
class _Known:
    source: Source
    endpoint: Endpoint
    labels: LabelsKey


class _Memo(Generic[K, V]):
    """One value per key, remade when the key's inputs differ (by identity first: an unchanged
    resource is the same object; then by value, so an equal copy renders nothing again)."""

    def __init__(self) -> None:
        self.entries: dict[K, tuple[tuple[object, ...], V]] = {}

    def get(self, key: K, inputs: tuple[object, ...], make: Callable[..., V], *args: object) -> V:
        found = self.entries.get(key)
        if (
            found is not None
            and len(found[0]) == len(inputs)
            and all(a is b or a == b for a, b in zip(found[0], inputs, strict=True))
        ):
            return found[1]
        value = make(*args)
        self.entries[key] = (inputs, value)
        return value

    def keep(self, keys: set[K]) -> None:
        for gone in self.entries.keys() - keys:
            del self.entries[gone]


@dataclass
class _Members(Generic[M]):
    """What each endpoint gives one set (a selector's addresses, a named port's pairs)."""

    of: Callable[[Endpoint], tuple[M, ...]]
    by_endpoint: dict[str, tuple[M, ...]] = field(default_factory=dict)
    frozen: frozenset[M] | None = None  # the union, until an endpoint's part changes

    def fill(self, endpoints: Mapping[str, _Known]) -> None:
        for key, known in endpoints.items():
            self.set(key, known)

    def set(self, key: str, known: _Known | None) -> None:
        part = self.of(known.endpoint) if known is not None else ()
        if self.by_endpoint.get(key, ()) == part:
            return
        if part:
            self.by_endpoint[key] = part
        else:
            self.by_endpoint.pop(key, None)
        self.frozen = None

    def members(self) -> frozenset[M]:
        if self.frozen is None:
            self.frozen = frozenset(m for part in self.by_endpoint.values() for m in part)
        return self.frozen


@dataclass
class PolicyCalculator:
    """This host's policy, recomputed from what changed since the last ``update``."""

    node: str
    _profiles: dict[str, Profile] = field(default_factory=dict)
    _host_addresses: dict[str, str] = field(default_factory=dict)
    _endpoints: dict[str, _Known] = field(default_factory=dict)
    _policies: dict[str, Policy] = field(default_factory=dict)
    _ranked: list[tuple[Policy, Selector]] = field(default_factory=list)
    _selectors: _Memo[str, Selector] = field(default_factory=_Memo)  # a policy's, by its id
    _decisions: dict[tuple[LabelsKey, bool], Selection] = field(default_factory=dict)  # (labels, host)
    _decided: _Memo[str, EndpointPolicies] = field(default_factory=_Memo)
    _rule_needs: _Memo[str, tuple[dict[str, Selector], dict[str, NamedPort]]] = field(default_factory=_Memo)
    _address_members: dict[str, _Members[str]] = field(default_factory=dict)
    _port_members: dict[str, _Members[tuple[str, int]]] = field(default_factory=dict)
    _address_sets: _Memo[str, AddressSet] = field(default_factory=_Memo)
    _port_sets: _Memo[str, NamedPortSet] = field(default_factory=_Memo)
    _chains: _Memo[str, Rendered] = field(default_factory=_Memo)  # policies', profiles', endpoints'
    _ipsets: _Memo[str, IPSet] = field(default_factory=_Memo)
    _options: PolicyOptions | None = None

    def update(
        self,
        workloads: Sequence[WorkloadEndpoint],
        host_endpoints: Sequence[HostEndpoint],
        policies: Sequence[Policy],
        profiles: Mapping[str, Profile],
        options: PolicyOptions,
        *,
        host_addresses: Mapping[str, str] | None = None,
    ) -> Ruleset:
        return self.render(
            self.plan(workloads, host_endpoints, policies, profiles, host_addresses=host_addresses), options
        )

    # -- the plan ---------------------------------------------------------------------------

    def plan(
        self,
        workloads: Sequence[WorkloadEndpoint],
        host_endpoints: Sequence[HostEndpoint],
        policies: Sequence[Policy],
        profiles: Mapping[str, Profile],
        *,
        host_addresses: Mapping[str, str] | None = None,
    ) -> PolicyPlan:
        changed = self._update_endpoints([*workloads, *host_endpoints], profiles, dict(host_addresses or {}))
        self._update_policies(policies)
        local = sorted(
            (k for k in self._endpoints.values() if k.endpoint.node == self.node),
            key=lambda k: k.endpoint.key,
        )
        decided: list[EndpointPolicies] = []
        distinct: dict[int, Selection] = {}
        for known in local:
            decision = self._decide(known)
            distinct[id(decision)] = decision  # endpoints with the same labels share one
            inputs = (known.endpoint, decision)
            decided.append(self._decided.get(known.endpoint.key, inputs, _endpoint_policies, *inputs))
        self._decided.keep({k.endpoint.key for k in local})
        used = {i: self._policies[i] for selection in distinct.values() for i in selection.every}
        used_profiles = {n: profiles[n] for k in local for n in k.endpoint.profiles if n in profiles}
        selectors: dict[str, Selector] = {}
        ports: dict[str, NamedPort] = {}
        owners: list[tuple[str, Policy | Profile, str | None]] = [
            (f"policy:{i}", p, policy_namespace(p)) for i, p in used.items()
        ]
        owners += [(f"profile:{n}", p, None) for n, p in used_profiles.items()]
        for key, owner, namespace in owners:
            named, named_ports = self._rule_needs.get(key, (owner,), _needs, owner, namespace)
            selectors.update(named)
            ports.update(named_ports)
        self._rule_needs.keep({key for key, _, _ in owners})
        return PolicyPlan(
            tuple(decided),
            used,
            used_profiles,
            self._sets(selectors, changed),
            self._named_port_sets(ports, changed),
        )

    def _update_endpoints(
        self, sources: Sequence[Source], profiles: Mapping[str, Profile], host_addresses: dict[str, str]
    ) -> set[str]:
        """Take the new endpoints; the keys of those that changed (or went)."""
        profiles_changed = profiles.keys() != self._profiles.keys() or any(
            profiles[n] is not p for n, p in self._profiles.items()
        )
        addresses_changed = host_addresses != self._host_addresses
        self._profiles = dict(profiles)
        self._host_addresses = host_addresses
        current: dict[str, _Known] = {}
        changed: set[str] = set()
        for source in sources:
            key = endpoint_key(source)
            known = self._endpoints.get(key)
            remake = profiles_changed or (addresses_changed and isinstance(source, HostEndpoint))
            if known is None or known.source is not source or remake:
                if isinstance(source, HostEndpoint):
                    endpoint = host_endpoint(source, profiles, host_addresses)
                else:
                    endpoint = workload_endpoint(source, profiles)
                if known is None or known.endpoint != endpoint:
                    changed.add(key)
                known = _Known(source, endpoint, frozenset(endpoint.labels.items()))
            current[key] = known
        changed |= self._endpoints.keys() - current.keys()
        self._endpoints = current
        labels = {(k.labels, k.endpoint.host) for k in current.values()}
        for gone in self._decisions.keys() - labels:
            del self._decisions[gone]
        return changed

    def _update_policies(self, policies: Sequence[Policy]) -> None:
        by_id = {policy_id(p): p for p in policies}
        if by_id.keys() == self._policies.keys() and all(by_id[i] is p for i, p in self._policies.items()):
            return
        self._policies = by_id
        self._ranked = [
            (p, self._selectors.get(policy_id(p), (p,), policy_selector, p)) for p in ordered(policies)
        ]
        self._selectors.keep(set(by_id))
        self._decisions.clear()

    def _decide(self, known: _Known) -> Selection:
        """The policies that select these labels, by where they run, in order."""
        key = (known.labels, known.endpoint.host)
        found = self._decisions.get(key)
        if found is None:
            found = select(self._ranked, known.endpoint.labels)
            found = self._decisions[key] = found if known.endpoint.host else found.for_workload()
        return found

    def _sets(self, selectors: Mapping[str, Selector], changed: set[str]) -> dict[str, AddressSet]:
        members = self._members(self._address_members, selectors, _address_contribution, changed)
        out = {i: self._address_sets.get(i, (m,), AddressSet, selectors[i], m) for i, m in members.items()}
        self._address_sets.keep(set(selectors))
        return out

    def _named_port_sets(self, ports: Mapping[str, NamedPort], changed: set[str]) -> dict[str, NamedPortSet]:
        members = self._members(self._port_members, ports, lambda port: port.members, changed)
        out = {
            i: self._port_sets.get(
                i, (m,), NamedPortSet, ports[i].selector, ports[i].protocol, ports[i].name, m
            )
            for i, m in members.items()
        }
        self._port_sets.keep(set(ports))
        return out

    def _members(
        self,
        indexes: dict[str, _Members[M]],
        wanted: Mapping[str, T],
        contribution: Callable[[T], Callable[[Endpoint], tuple[M, ...]]],
        changed: set[str],
    ) -> dict[str, frozenset[M]]:
        """Each wanted set's members: a new one looks at every endpoint once, a kept one at the
        endpoints that changed; the ones no longer wanted are forgotten."""
        out: dict[str, frozenset[M]] = {}
        for ident, spec in wanted.items():
            index = indexes.get(ident)
            if index is None:
                index = indexes[ident] = _Members(contribution(spec))
                index.fill(self._endpoints)
            else:
                for key in changed:
                    index.set(key, self._endpoints.get(key))
            out[ident] = index.members()
        for gone in indexes.keys() - wanted.keys():
            del indexes[gone]
        return out

    # -- the ruleset ------------------------------------------------------------------------

    def render(self, plan: PolicyPlan, options: PolicyOptions) -> Ruleset:
        """``felix.calc.rules.render(plan, options)``, rendering again only the pieces whose inputs
        are new objects."""
        if options != self._options:
            self._chains = _Memo()  # every endpoint's and hook chain may differ
            self._options = options
        pieces: list[Rendered] = []
        keys: set[str] = set()
        for ident, policy in plan.policies.items():
            keys.add(key := f"policy:{ident}")
            pieces.append(self._chains.get(key, (policy,), policy_chains, ident, policy))
        for name, profile in plan.profiles.items():
            keys.add(key := f"profile:{name}")
            pieces.append(self._chains.get(key, (profile,), profile_chains, name, profile))
        for decided in plan.endpoints:
            if decided.endpoint.interface is None:
                continue
            keys.add(key := f"endpoint:{decided.endpoint.key}")
            present = tuple(plan.profiles.get(n) for n in decided.profiles)
            inputs = (decided.endpoint, decided.selection, *present)
            pieces.append(self._chains.get(key, inputs, endpoint_chains, decided, plan.profiles, options))
        workloads, hosts = interfaces(plan)
        keys.add("hooks")
        pieces.append(self._chains.get("hooks", (workloads, hosts), _hooks, workloads, hosts, options))
        sets = [self._ipsets.get(f"s:{i}", (s,), address_ipset, i, s) for i, s in plan.sets.items()]
        sets += [self._ipsets.get(f"p:{i}", (s,), port_ipset, i, s) for i, s in plan.port_sets.items()]
        self._chains.keep(keys)
        self._ipsets.keep({f"s:{i}" for i in plan.sets} | {f"p:{i}" for i in plan.port_sets})
        return assemble(pieces, sets)


def _address_contribution(selector: Selector) -> Callable[[Endpoint], tuple[str, ...]]:
    return lambda endpoint: selected_addresses(selector, endpoint)


def _endpoint_policies(endpoint: Endpoint, selection: Selection) -> EndpointPolicies:
    return EndpointPolicies(endpoint, selection, endpoint.profiles)


def _needs(
    owner: Policy | Profile, namespace: str | None
) -> tuple[dict[str, Selector], dict[str, NamedPort]]:
    rules = [(r, namespace) for r in (*owner.spec.ingress, *owner.spec.egress)]
    return rule_selectors(rules), rule_named_ports(rules)


def _hooks(workloads: Sequence[str], hosts: HostInterfaces, options: PolicyOptions) -> Rendered:
    chains, sets = dispatch_chains(workloads, hosts, options)
    return tuple(chains), tuple(sets)
