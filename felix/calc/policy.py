"""Which policies and profiles apply to each of this host's endpoints, in order, and which
addresses each selector in their rules stands for: pure, over the datastore's typed models.

An endpoint's labels, as Calico computes them: those its profiles apply, then its own (which
win), then ``projectcalico.org/namespace`` and ``projectcalico.org/orchestrator``; a workload
also inherits its namespace's labels (the ``labelsToApply`` of the ``kns.<namespace>`` Profile)
under the ``pcns.`` prefix.  Every selector is then one selector over those labels: a
NetworkPolicy's is scoped to its namespace, and a ``namespaceSelector`` becomes the same
question asked of the ``pcns.`` labels.  A selector that rules repeat, however spelled, is one
``AddressSet`` (by its canonical form), which the dataplane keeps as one kernel set: a pod
joining a selector changes that set's members, not any rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from datastore.models import (
    EntityRule,
    GlobalNetworkPolicy,
    HostEndpoint,
    NetworkPolicy,
    Profile,
    Rule,
    WorkloadEndpoint,
)
from datastore.models.policy import Direction, is_port_name
from datastore.selector import NAMESPACE_LABEL, All, Compare, Node, Selector, both, short_id, with_prefix

NAMESPACE_PREFIX = "pcns."
NAMESPACE_NAME_LABEL = "projectcalico.org/name"
ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"
Policy = NetworkPolicy | GlobalNetworkPolicy


@dataclass(frozen=True)
class Endpoint:
    """A workload's interface or a host's, with the labels selectors see and its addresses."""

    key: str  # ``namespace/name`` for a workload, ``name`` for a host endpoint
    namespace: str | None
    labels: Mapping[str, str]
    addresses: tuple[str, ...]  # IPv4 addresses, no prefix
    profiles: tuple[str, ...]
    node: str
    ports: tuple[tuple[str, str | int, int], ...] = ()  # named ports: (name, protocol, number)
    interface: str | None = None  # its interface on its host (a host endpoint's may be ``*``)
    host: bool = False  # a HostEndpoint, not a workload


def namespace_labels(namespace: str, profiles: Mapping[str, Profile]) -> dict[str, str]:
    """A namespace's labels: its ``kns.`` Profile's ``labelsToApply`` (``pcns.`` prefix or not) and
    its name, as Calico's automatic ``projectcalico.org/name``."""
    profile = profiles.get(f"kns.{namespace}")
    applied = profile.spec.labels_to_apply if profile is not None else {}
    labels = {k.removeprefix(NAMESPACE_PREFIX): v for k, v in applied.items()}
    labels[NAMESPACE_NAME_LABEL] = namespace
    return labels


def _inherited(names: Iterable[str], profiles: Mapping[str, Profile]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for name in names:
        profile = profiles.get(name)
        if profile is not None and not name.startswith("kns."):
            labels.update(profile.spec.labels_to_apply)
    return labels


def endpoint_key(source: WorkloadEndpoint | HostEndpoint) -> str:
    """``namespace/name`` for a workload, ``name`` for a host endpoint (which has no namespace)."""
    if isinstance(source, HostEndpoint):
        return source.name
    return f"{source.namespace or 'default'}/{source.name}"


def workload_endpoint(wep: WorkloadEndpoint, profiles: Mapping[str, Profile]) -> Endpoint:
    namespace = wep.namespace or "default"
    labels = _inherited(wep.spec.profiles, profiles)
    labels.update(wep.metadata.labels)
    labels.update({f"{NAMESPACE_PREFIX}{k}": v for k, v in namespace_labels(namespace, profiles).items()})
    labels[NAMESPACE_LABEL] = namespace
    labels[ORCHESTRATOR_LABEL] = wep.spec.orchestrator
    addresses = tuple(net.partition("/")[0] for net in wep.spec.ip_networks)
    ports = tuple((str(p.name), p.protocol, p.port) for p in wep.spec.ports)
    return Endpoint(
        endpoint_key(wep),
        namespace,
        labels,
        addresses,
        tuple(wep.spec.profiles),
        wep.spec.node,
        ports,
        interface=wep.spec.interface_name,
    )


def host_endpoint(
    hep: HostEndpoint, profiles: Mapping[str, Profile], host_addresses: Mapping[str, str] | None = None
) -> Endpoint:
    """``host_addresses`` (address -> interface, of the host felix runs on): where a host endpoint
    gives ``expectedIPs`` and no ``interfaceName``, its interface is the one holding the first of
    them that the host has, as in Calico; none, and it gets no chains."""
    labels = _inherited(hep.spec.profiles, profiles)
    labels.update(hep.metadata.labels)
    ports = tuple((str(p.name), p.protocol, p.port) for p in hep.spec.ports)
    addresses = tuple(hep.spec.expected_i_ps)
    return Endpoint(
        endpoint_key(hep),
        None,
        labels,
        addresses,
        tuple(hep.spec.profiles),
        hep.spec.node,
        ports,
        interface=hep.spec.interface_name or _holding(addresses, host_addresses or {}),
        host=True,
    )


def _holding(addresses: Sequence[str], host_addresses: Mapping[str, str]) -> str | None:
    return next((host_addresses[a] for a in addresses if a in host_addresses), None)


def scoped(selector: str | None, namespace_selector: str | None, namespace: str | None) -> Selector:
    """One selector over endpoint labels: ``selector``, within the namespaces ``namespace_selector``
    matches, or else (for a NetworkPolicy, whose ``namespace`` this is) within its own."""
    parts: list[Node] = [Selector.parse(selector).root if selector is not None else All()]
    if namespace_selector is not None:
        parts.append(with_prefix(Selector.parse(namespace_selector).root, NAMESPACE_PREFIX))
    elif namespace is not None:
        parts.append(Compare(NAMESPACE_LABEL, "==", namespace))
    return Selector.of(both(*parts))


def policy_namespace(policy: Policy) -> str | None:
    return policy.namespace if isinstance(policy, NetworkPolicy) else None


def policy_selector(policy: Policy) -> Selector:
    """Which endpoints ``policy`` applies to."""
    if isinstance(policy, GlobalNetworkPolicy):
        return scoped(policy.spec.selector, policy.spec.namespace_selector, None)
    return scoped(policy.spec.selector, None, policy.namespace)


def policy_id(policy: Policy) -> str:
    return f"{policy.namespace}/{policy.name}" if isinstance(policy, NetworkPolicy) else policy.name


def ordered(policies: Iterable[Policy]) -> list[Policy]:
    """Calico's order: by ``order`` (unordered last), then by name; a NetworkPolicy's name
    counts with its namespace."""
    return sorted(policies, key=lambda p: p.spec.sort_key(policy_id(p)))


def side_selectors(entity: EntityRule, namespace: str | None) -> tuple[Selector | None, Selector | None]:
    """The (selector, notSelector) of one side of a rule, scoped; None where the rule gives none.
    A side with only a namespaceSelector selects every endpoint of those namespaces."""
    positive = None
    if entity.selector is not None or entity.namespace_selector is not None:
        positive = scoped(entity.selector, entity.namespace_selector, namespace)
    negative = None
    if entity.not_selector is not None:
        negative = scoped(entity.not_selector, entity.namespace_selector, namespace)
    return positive, negative


Stage = Literal["normal", "untracked", "pre-dnat", "forward"]  # where a host endpoint's policy runs


@dataclass(frozen=True)
class Selection:
    """The policies that select one set of labels, in order (ids), by where they run.  Normal
    policies run in the filter table for a workload and for traffic to or from the host itself;
    on a host endpoint only, ``doNotTrack`` ones run before conntrack (raw), ``preDNAT`` ones
    before NAT (mangle, ingress only), and ``applyOnForward`` ones also on forwarded traffic."""

    ingress: tuple[str, ...] = ()
    egress: tuple[str, ...] = ()
    untracked_ingress: tuple[str, ...] = ()
    untracked_egress: tuple[str, ...] = ()
    pre_dnat: tuple[str, ...] = ()
    forward_ingress: tuple[str, ...] = ()
    forward_egress: tuple[str, ...] = ()

    def policies(self, direction: Direction, stage: Stage = "normal") -> tuple[str, ...]:
        if stage == "pre-dnat":
            return self.pre_dnat if direction == "Ingress" else ()
        prefix = "" if stage == "normal" else f"{stage}_"
        found: tuple[str, ...] = getattr(self, f"{prefix}{direction.lower()}")
        return found

    def for_workload(self) -> Selection:
        """A workload has only normal policies: the others are for host endpoints."""
        return Selection(self.ingress, self.egress)

    @property
    def every(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(i for name in self.__dataclass_fields__ for i in getattr(self, name)))


def policy_stage(policy: Policy) -> Stage:
    if isinstance(policy, GlobalNetworkPolicy):
        if policy.spec.do_not_track:
            return "untracked"
        if policy.spec.pre_dnat:
            return "pre-dnat"
    return "normal"


def select(ranked: Iterable[tuple[Policy, Selector]], labels: Mapping[str, str]) -> Selection:
    """Which of ``ranked`` (in order, with their selectors) select ``labels``, by where they run."""
    found: dict[str, list[str]] = {name: [] for name in Selection.__dataclass_fields__}
    for policy, selector in ranked:
        if not selector.matches(labels):
            continue
        ident, stage = policy_id(policy), policy_stage(policy)
        for direction in sorted(policy.spec.directions):
            d = direction.lower()
            if stage == "untracked":
                found[f"untracked_{d}"].append(ident)
            elif stage == "pre-dnat":
                if direction == "Ingress":
                    found["pre_dnat"].append(ident)
            else:
                found[d].append(ident)
                if isinstance(policy, GlobalNetworkPolicy) and policy.spec.apply_on_forward:
                    found[f"forward_{d}"].append(ident)
    return Selection(**{name: tuple(ids) for name, ids in found.items()})


@dataclass(frozen=True)
class EndpointPolicies:
    """What decides an endpoint's traffic: the policies that select it, in order (ids), by where
    they run, then its profiles (names), which decide when no normal policy does."""

    endpoint: Endpoint
    selection: Selection
    profiles: tuple[str, ...]

    @property
    def ingress(self) -> tuple[str, ...]:
        return self.selection.ingress

    @property
    def egress(self) -> tuple[str, ...]:
        return self.selection.egress

    def policies(self, direction: Direction, stage: Stage = "normal") -> tuple[str, ...]:
        return self.selection.policies(direction, stage)


@dataclass(frozen=True)
class AddressSet:
    selector: Selector
    members: frozenset[str]

    @property
    def id(self) -> str:
        return self.selector.unique_id


@dataclass(frozen=True)
class NamedPortSet:
    """The (address, port) pairs a rule's named port stands for: that port of every endpoint the
    rule's side selects (every endpoint, if it selects none) that has a port of that name."""

    selector: Selector
    protocol: str  # tcp, udp or sctp
    port_name: str
    members: frozenset[tuple[str, int]]

    @property
    def id(self) -> str:
        return named_port_id(self.selector, self.protocol, self.port_name)


def named_port_id(selector: Selector, protocol: str, name: str) -> str:
    return short_id(f"{selector.canonical}|{protocol}|{name}")


@dataclass(frozen=True)
class PolicyPlan:
    endpoints: tuple[EndpointPolicies, ...]  # this host's, by key
    policies: Mapping[str, Policy]  # the ones some local endpoint uses, by id
    profiles: Mapping[str, Profile]  # likewise, by name
    sets: Mapping[str, AddressSet]  # every selector their rules name, by id
    port_sets: Mapping[str, NamedPortSet]  # every named port their rules name, by id


def plan(
    node: str,
    workloads: Sequence[WorkloadEndpoint],
    host_endpoints: Sequence[HostEndpoint],
    policies: Sequence[Policy],
    profiles: Mapping[str, Profile],
    *,
    host_addresses: Mapping[str, str] | None = None,
) -> PolicyPlan:
    """This host's endpoints with what applies to them, and the address sets their rules need;
    ``host_addresses`` as ``host_endpoint`` takes them."""
    everyone = [workload_endpoint(w, profiles) for w in workloads]
    everyone += [host_endpoint(h, profiles, host_addresses) for h in host_endpoints]
    local = sorted((e for e in everyone if e.node == node), key=lambda e: e.key)
    ranked = [(p, policy_selector(p)) for p in ordered(policies)]
    used: dict[str, Policy] = {}
    decided: list[EndpointPolicies] = []
    by_id = {policy_id(p): p for p in policies}
    for endpoint in local:
        selection = select(ranked, endpoint.labels)
        selection = selection if endpoint.host else selection.for_workload()
        used.update((i, by_id[i]) for i in selection.every)
        decided.append(EndpointPolicies(endpoint, selection, endpoint.profiles))
    used_profiles = {n: profiles[n] for e in local for n in e.profiles if n in profiles}
    rules = [(r, policy_namespace(p)) for p in used.values() for r in (*p.spec.ingress, *p.spec.egress)]
    rules += [(r, None) for p in used_profiles.values() for r in (*p.spec.ingress, *p.spec.egress)]
    return PolicyPlan(
        tuple(decided), used, used_profiles, address_sets(rules, everyone), named_port_sets(rules, everyone)
    )


def rule_selectors(rules: Iterable[tuple[Rule, str | None]]) -> dict[str, Selector]:
    """Every selector ``rules`` name (with the namespace each rule's policy scopes it to), by id."""
    selectors: dict[str, Selector] = {}
    for rule, namespace in rules:
        for entity in (rule.source, rule.destination):
            for selector in side_selectors(entity, namespace):
                if selector is not None:
                    selectors.setdefault(selector.unique_id, selector)
    return selectors


def address_sets(
    rules: Iterable[tuple[Rule, str | None]], endpoints: Sequence[Endpoint]
) -> dict[str, AddressSet]:
    """Every selector ``rules`` name, and the addresses of the endpoints each matches."""
    return {
        ident: AddressSet(selector, frozenset(a for e in endpoints for a in selected_addresses(selector, e)))
        for ident, selector in rule_selectors(rules).items()
    }


def selected_addresses(selector: Selector, endpoint: Endpoint) -> tuple[str, ...]:
    return endpoint.addresses if selector.matches(endpoint.labels) else ()


def port_names(entity: EntityRule) -> list[str]:
    return [p for p in (*entity.ports, *entity.not_ports) if is_port_name(p)]


def port_side_selector(entity: EntityRule, namespace: str | None) -> Selector:
    positive, _ = side_selectors(entity, namespace)
    return positive if positive is not None else Selector.of(All())


@dataclass(frozen=True)
class NamedPort:
    """A named port as a rule's side names it: on the endpoints ``selector`` matches."""

    selector: Selector
    protocol: str  # tcp, udp or sctp
    name: str

    @property
    def id(self) -> str:
        return named_port_id(self.selector, self.protocol, self.name)

    def members(self, endpoint: Endpoint) -> tuple[tuple[str, int], ...]:
        """The (address, number) pairs ``endpoint`` gives this port: none unless selected."""
        if not self.selector.matches(endpoint.labels):
            return ()
        return tuple(
            (address, number)
            for port_name, port_protocol, number in endpoint.ports
            if port_name == self.name and str(port_protocol).lower() == self.protocol
            for address in endpoint.addresses
        )


def rule_named_ports(rules: Iterable[tuple[Rule, str | None]]) -> dict[str, NamedPort]:
    wanted: dict[str, NamedPort] = {}
    for rule, namespace in rules:
        protocol = str(rule.protocol).lower()
        for entity in (rule.source, rule.destination):
            for name in port_names(entity):
                port = NamedPort(port_side_selector(entity, namespace), protocol, name)
                wanted.setdefault(port.id, port)
    return wanted


def named_port_sets(
    rules: Iterable[tuple[Rule, str | None]], endpoints: Sequence[Endpoint]
) -> dict[str, NamedPortSet]:
    return {
        ident: NamedPortSet(
            port.selector, port.protocol, port.name, frozenset(m for e in endpoints for m in port.members(e))
        )
        for ident, port in rule_named_ports(rules).items()
    }
