"""A ``PolicyPlan`` rendered as iptables chains and ipsets (pure: text, no kernel).

felix's policy goes into the kernel as iptables (Debian's nf_tables variant) with ipsets:
``bench/policy_backend.py`` measured it ahead of nftables on every count that matters here
(a set member 2.3 ms against 10.9; a chain 11.9 ms against 19.5; reading all back 89 ms
against 265).  Everything felid makes is named ``felid-…``, so a restart finds its own.

Per local endpoint two chains: ``felid-tw-<iface>`` (to the workload: its ingress) and
``felid-fw-<iface>`` (from it: its egress).  Each runs the policies that select the endpoint
in order (``felid-pi-`` / ``felid-po-`` chains, shared by every endpoint they select), then
its profiles (``felid-pri-`` / ``felid-pro-``).  A policy chain's rule that allows sets the
accept mark and returns; ``Pass`` sets the pass mark and returns; ``Deny`` drops; ``Log``
logs and goes on.  The endpoint chain accepts once the accept mark is set, skips the other
policies once the pass mark is, and drops when a policy selected it and none decided
(Calico's rule); after the profiles, what none allowed is dropped.  Selectors are match-set
tests against one ipset each (``felid-s-<id>``), several nets one ``hash:net`` set
(``felid-n-<id>``), a named port one ``hash:ip,port`` set (``felid-p-<id>``): a pod joining a
selector changes a set, never a rule.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Literal

from datastore.models import EntityRule, Profile, Rule
from datastore.models.policy import Direction, ProtoPort, is_port_name, protocol_number
from felix.calc.chains import (
    ACCEPT_MARK,
    MARKS,
    PASS_MARK,
    Chain,
    IPSet,
    Ruleset,
    Table,
    endpoint_chain,
    host_endpoint_chain,
    nets_set,
    policy_chain,
    port_set,
    profile_chain,
    selector_set,
)
from felix.calc.dispatch import STAGE_TABLE, HostInterfaces, PolicyOptions, dispatch_chains
from felix.calc.policy import (
    AddressSet,
    EndpointPolicies,
    NamedPortSet,
    Policy,
    PolicyPlan,
    Stage,
    named_port_id,
    policy_namespace,
    policy_stage,
    port_side_selector,
    side_selectors,
)

MULTIPORT_MAX = 15  # entries an iptables multiport match takes (a range counts two)
LOG_PREFIX = "felid-packet: "
DIRECTIONS: tuple[Direction, ...] = ("Ingress", "Egress")


# -- one rule -----------------------------------------------------------------------------


def _protocol(protocol: str | int) -> str:
    return protocol.lower() if isinstance(protocol, str) else str(protocol)


class _Sides:
    """The sets one rule needs, collected while it renders."""

    def __init__(self) -> None:
        self.nets: dict[str, IPSet] = {}

    def addresses(self, entity: EntityRule, namespace: str | None, where: Literal["src", "dst"]) -> list[str]:
        flag = "-s" if where == "src" else "-d"
        out: list[str] = []
        flagged = False  # iptables takes one -s (-d) a rule: nets and notNets both single need a set
        for nets, negated in ((entity.nets, False), (entity.not_nets, True)):
            if len(nets) == 1 and not flagged:
                out.append(f"{'! ' if negated else ''}{flag} {nets[0]}")
                flagged = True
            elif nets:
                made = nets_set(nets)
                self.nets[made.name] = made
                out.append(f"-m set {'! ' if negated else ''}--match-set {made.name} {where}")
        positive, negative = side_selectors(entity, namespace)
        if positive is not None:
            out.append(f"-m set --match-set {selector_set(positive.unique_id)} {where}")
        if negative is not None:
            out.append(f"-m set ! --match-set {selector_set(negative.unique_id)} {where}")
        return out


def _port_chunks(ports: Sequence[int | str]) -> list[str]:
    """Numbers and ranges in multiport lists of at most MULTIPORT_MAX entries."""
    chunks: list[str] = []
    current: list[str] = []
    used = 0
    for port in ports:
        text = str(port)
        cost = 2 if ":" in text else 1
        if used + cost > MULTIPORT_MAX:
            chunks.append(",".join(current))
            current, used = [], 0
        current.append(text)
        used += cost
    if current:
        chunks.append(",".join(current))
    return chunks


def _ports(
    rule: Rule, entity: EntityRule, namespace: str | None, where: Literal["s", "d"]
) -> list[list[str]]:
    """Alternatives (any one may match) for the side's ports, and its notPorts (all must hold)."""
    protocol = str(rule.protocol).lower()
    selector = port_side_selector(entity, namespace)
    direction = "src" if where == "s" else "dst"
    pair = f"{direction},{direction}"  # the packet's address and port on that side

    def matches(ports: Sequence[int | str], negated: bool) -> list[str]:
        bang = "! " if negated else ""
        numbers = [p for p in ports if not is_port_name(p)]
        out = [f"-m multiport {bang}--{where}ports {chunk}" for chunk in _port_chunks(numbers)]
        out += [
            f"-m set {bang}--match-set {port_set(named_port_id(selector, protocol, n))} {pair}"
            for n in ports
            if is_port_name(n)
        ]
        return out

    alternatives, excluded = matches(entity.ports, False), matches(entity.not_ports, True)
    if not alternatives:
        return [excluded]
    return [[a, *excluded] for a in alternatives]


def _icmp(rule: Rule) -> list[str]:
    out = []
    for fields, negated in ((rule.icmp, False), (rule.not_icmp, True)):
        if fields is not None and fields.type is not None:
            code = f"/{fields.code}" if fields.code is not None else ""
            out.append(f"-m icmp {'! ' if negated else ''}--icmp-type {fields.type}{code}")
    return out


_MARK_OF = {"Allow": ACCEPT_MARK, "Pass": PASS_MARK}


def _target(rule: Rule) -> str:
    mark = _MARK_OF.get(rule.action)
    if mark is not None:
        return f"-j MARK --set-xmark {mark:#x}/{mark:#x}"
    if rule.action == "Deny":
        return "-j DROP"
    return f'-j LOG --log-prefix "{LOG_PREFIX}"'


def render_rule(rule: Rule, namespace: str | None, sides: _Sides) -> list[str]:
    """The iptables rules for one Calico rule (several when its ports need several multiport
    matches); none for what IPv4 never carries (ICMPv6)."""
    for protocol in (rule.protocol, rule.not_protocol):
        if protocol is not None and protocol_number(protocol) == 58:
            return []  # ICMPv6: not in an IPv4 table (with notProtocol it would match everything v4)
    head: list[str] = []
    if rule.protocol is not None:
        head.append(f"-p {_protocol(rule.protocol)}")
    if rule.not_protocol is not None:
        head.append(f"! -p {_protocol(rule.not_protocol)}")
    head += sides.addresses(rule.source, namespace, "src")
    head += sides.addresses(rule.destination, namespace, "dst")
    head += _icmp(rule)
    out: list[str] = []
    for src, dst in itertools.product(
        _ports(rule, rule.source, namespace, "s"), _ports(rule, rule.destination, namespace, "d")
    ):
        out.append(" ".join([*head, *src, *dst, _target(rule)]))
        mark = _MARK_OF.get(rule.action)
        if mark is not None:  # Allow and Pass: then leave the policy
            out.append(f"-m mark --mark {mark:#x}/{mark:#x} -j RETURN")
    return out


# -- chains -------------------------------------------------------------------------------


def _rules_chain(name: str, rules: Iterable[Rule], namespace: str | None, sides: _Sides) -> Chain:
    rendered = [line for rule in rules for line in render_rule(rule, namespace, sides)]
    return Chain(name, tuple(rendered))


CONNTRACK = (
    "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",  # a flow once allowed stays allowed
    "-m conntrack --ctstate INVALID -j DROP",
)


def _endpoint_rules(
    decided: EndpointPolicies, direction: Direction, profiles: Mapping[str, Profile], allowed: str
) -> list[str]:
    """The policies in order, then the profiles; ``allowed`` is what an allowed packet does
    (RETURN from a workload's chain: the caller may still run the receiver's; ACCEPT for a host's)."""
    rules = [f"-j MARK --set-xmark 0/{MARKS:#x}"]
    policies = decided.policies(direction)
    for ident in policies:
        rules.append(f"-m mark --mark 0/{PASS_MARK:#x} -j {policy_chain(ident, direction)}")
        rules.append(f"-m mark --mark {ACCEPT_MARK:#x}/{ACCEPT_MARK:#x} -j {allowed}")
    if policies:  # selected, and no policy decided or passed: dropped
        rules.append(f"-m mark --mark 0/{PASS_MARK:#x} -j DROP")
    for name in decided.profiles:
        if name in profiles:  # a profile that does not exist allows nothing
            rules.append(f"-j {profile_chain(name, direction)}")
            rules.append(f"-m mark --mark {ACCEPT_MARK:#x}/{ACCEPT_MARK:#x} -j {allowed}")
    rules.append("-j DROP")
    return rules


def _anti_spoof(decided: EndpointPolicies, sides: _Sides) -> list[str]:
    """From a workload, only its own addresses: the rest is dropped before any policy."""
    addresses = decided.endpoint.addresses
    if not addresses:
        return ["-j DROP"]
    if len(addresses) == 1:
        return [f"! -s {addresses[0]} -j DROP"]
    own = nets_set([f"{a}/32" for a in addresses])
    sides.nets[own.name] = own
    return [f"-m set ! --match-set {own.name} src -j DROP"]


def _failsafe(
    ports: Sequence[ProtoPort], where: Literal["-s", "-d"], target: str = "ACCEPT", reply: bool = False
) -> list[str]:
    """Calico's failsafe: these destination ports stay open whatever the host's policy says.
    ``reply``: the other direction of those connections (the port as the source port), which
    untracked policy must not see either, or half a connection would be left untracked."""
    return [
        " ".join(
            [
                f"-p {p.protocol.lower()}",
                *([f"{where} {p.net}"] if p.net else []),
                f"--{'s' if reply else 'd'}port {p.port}",
                f"-j {target}",
            ]
        )
        for p in ports
    ]


def _endpoint_chains(
    decided: EndpointPolicies, profiles: Mapping[str, Profile], options: PolicyOptions, sides: _Sides
) -> list[Chain]:
    endpoint, interface = decided.endpoint, decided.endpoint.interface
    assert interface is not None
    if not endpoint.host:
        return [
            Chain(
                endpoint_chain(interface, "Ingress"),
                (*CONNTRACK, *_endpoint_rules(decided, "Ingress", profiles, "RETURN")),
            ),
            Chain(
                endpoint_chain(interface, "Egress"),
                (
                    *CONNTRACK,
                    *_anti_spoof(decided, sides),
                    *_endpoint_rules(decided, "Egress", profiles, "RETURN"),
                ),
            ),
        ]
    chains = [
        Chain(
            host_endpoint_chain(interface, "Ingress"),
            (
                *CONNTRACK,
                *_failsafe(options.failsafe_inbound, "-s"),
                *_endpoint_rules(decided, "Ingress", profiles, "ACCEPT"),
            ),
        ),
        Chain(
            host_endpoint_chain(interface, "Egress"),
            (
                *CONNTRACK,
                *_failsafe(options.failsafe_outbound, "-d"),
                *_endpoint_rules(decided, "Egress", profiles, "ACCEPT"),
            ),
        ),
        *(
            Chain(host_endpoint_chain(interface, d, "forward"), (*CONNTRACK, *_forward_rules(decided, d)))
            for d in DIRECTIONS
        ),
    ]
    if has_stage(decided, "untracked"):
        chains += [
            Chain(
                host_endpoint_chain(interface, "Ingress", "untracked"),
                (
                    *_failsafe(options.failsafe_inbound, "-s", "RETURN"),
                    *_failsafe(options.failsafe_outbound, "-s", "RETURN", reply=True),
                    *_stage_rules(decided, "Ingress", "untracked"),
                ),
                "raw",
            ),
            Chain(
                host_endpoint_chain(interface, "Egress", "untracked"),
                (
                    *_failsafe(options.failsafe_outbound, "-d", "RETURN"),
                    *_failsafe(options.failsafe_inbound, "-d", "RETURN", reply=True),
                    *_stage_rules(decided, "Egress", "untracked"),
                ),
                "raw",
            ),
        ]
    if has_stage(decided, "pre-dnat"):
        chains.append(
            Chain(
                host_endpoint_chain(interface, "Ingress", "pre-dnat"),
                (
                    "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
                    *_failsafe(options.failsafe_inbound, "-s", "RETURN"),
                    *_stage_rules(decided, "Ingress", "pre-dnat"),
                ),
                "mangle",
            )
        )
    return chains


def has_stage(decided: EndpointPolicies, stage: Stage) -> bool:
    """Whether a host endpoint has chains for ``stage`` (untracked ones: not on ``*``, as Calico)."""
    if stage == "untracked" and decided.endpoint.interface == "*":
        return False
    return any(decided.policies(d, stage) for d in DIRECTIONS)


def _stage_rules(decided: EndpointPolicies, direction: Direction, stage: Stage) -> list[str]:
    """Untracked or pre-DNAT policy: the policies in order; what one allows leaves with the accept
    mark (and, untracked, without a conntrack entry); there is no default drop and no profile:
    what none decides goes on to the normal policy."""
    rules = [f"-j MARK --set-xmark 0/{MARKS:#x}"]
    for ident in decided.policies(direction, stage):
        rules.append(f"-m mark --mark 0/{PASS_MARK:#x} -j {policy_chain(ident, direction)}")
        if stage == "untracked":
            rules.append(f"-m mark --mark {ACCEPT_MARK:#x}/{ACCEPT_MARK:#x} -j NOTRACK")
        rules.append(f"-m mark --mark {ACCEPT_MARK:#x}/{ACCEPT_MARK:#x} -j RETURN")
    return rules


def _forward_rules(decided: EndpointPolicies, direction: Direction) -> list[str]:
    """Forwarded traffic through a host endpoint: its ``applyOnForward`` policies in order, and
    dropped when they select it and none allows; allowed when none selects it.  No profiles."""
    allow = f"-j MARK --set-xmark {ACCEPT_MARK:#x}/{ACCEPT_MARK:#x}"
    policies = decided.policies(direction, "forward")
    if not policies:
        return [allow, "-j RETURN"]
    rules = [f"-j MARK --set-xmark 0/{MARKS:#x}"]
    for ident in policies:
        rules.append(f"-m mark --mark 0/{PASS_MARK:#x} -j {policy_chain(ident, direction)}")
        rules.append(f"-m mark --mark {ACCEPT_MARK:#x}/{ACCEPT_MARK:#x} -j RETURN")
    rules.append("-j DROP")
    return rules


Rendered = tuple[tuple[Chain, ...], tuple[IPSet, ...]]  # chains, and the nets sets they name


def owner_chains(
    owner: Policy | Profile,
    chain_of: Callable[[Direction], str],
    namespace: str | None,
    table: Table = "filter",
) -> Rendered:
    """A policy's (or profile's) two chains, ingress and egress."""
    sides = _Sides()
    chains = tuple(
        replace(_rules_chain(chain_of(direction), _rules(owner, direction), namespace, sides), table=table)
        for direction in DIRECTIONS
    )
    return chains, tuple(sides.nets.values())


def policy_chains(ident: str, policy: Policy) -> Rendered:
    """In the table its policy runs in: raw for untracked, mangle for pre-DNAT, else filter."""
    table = STAGE_TABLE[policy_stage(policy)]
    return owner_chains(policy, lambda d: policy_chain(ident, d), policy_namespace(policy), table)


def profile_chains(name: str, profile: Profile) -> Rendered:
    return owner_chains(profile, lambda d: profile_chain(name, d), None)


def endpoint_chains(
    decided: EndpointPolicies, profiles: Mapping[str, Profile], options: PolicyOptions
) -> Rendered:
    """One endpoint's two chains (it must have an interface)."""
    sides = _Sides()
    chains = tuple(_endpoint_chains(decided, profiles, options, sides))
    return chains, tuple(sides.nets.values())


def interfaces(plan: PolicyPlan) -> tuple[tuple[str, ...], HostInterfaces]:
    """The workload interfaces and the host endpoint interfaces that get chains, sorted."""
    workloads = sorted(
        d.endpoint.interface for d in plan.endpoints if d.endpoint.interface and not d.endpoint.host
    )
    hosts = [d for d in plan.endpoints if d.endpoint.interface and d.endpoint.host]

    def named(stage: Stage) -> tuple[str, ...]:
        return tuple(
            sorted(str(d.endpoint.interface) for d in hosts if stage == "normal" or has_stage(d, stage))
        )

    return tuple(workloads), HostInterfaces(named("normal"), named("untracked"), named("pre-dnat"))


def address_ipset(ident: str, found: AddressSet) -> IPSet:
    return IPSet(selector_set(ident), "hash:ip", found.members)


def port_ipset(ident: str, found: NamedPortSet) -> IPSet:
    return IPSet(
        port_set(ident), "hash:ip,port", frozenset(f"{a},{found.protocol}:{n}" for a, n in found.members)
    )


def render(plan: PolicyPlan, options: PolicyOptions) -> Ruleset:
    """The chains and sets for ``plan``: every policy and profile a local endpoint uses, each
    endpoint's own chains, and the chains that dispatch packets to them (``felix.calc.dispatch``).
    An endpoint without an interface (a host endpoint named by its addresses only) gets none.
    ``felix.calc.calculator`` makes the same, keeping the pieces between updates."""
    pieces = [policy_chains(ident, policy) for ident, policy in plan.policies.items()]
    pieces += [profile_chains(name, profile) for name, profile in plan.profiles.items()]
    pieces += [endpoint_chains(d, plan.profiles, options) for d in plan.endpoints if d.endpoint.interface]
    hooks, hook_sets = dispatch_chains(*interfaces(plan), options)
    pieces.append((tuple(hooks), tuple(hook_sets)))
    sets = [address_ipset(i, s) for i, s in plan.sets.items()]
    sets += [port_ipset(i, s) for i, s in plan.port_sets.items()]
    return assemble(pieces, sets)


def assemble(pieces: Iterable[Rendered], sets: Iterable[IPSet]) -> Ruleset:
    """One Ruleset of these chains and sets (with the nets sets the chains name), ordered by name."""
    chains: dict[tuple[str, str], Chain] = {}
    all_sets = {s.name: s for s in sets}
    for made, named in pieces:
        chains.update(((c.table, c.name), c) for c in made)
        all_sets.update((s.name, s) for s in named)
    ordered_chains = tuple(sorted(chains.values(), key=lambda c: (c.table, c.name)))
    return Ruleset(ordered_chains, tuple(sorted(all_sets.values(), key=lambda s: s.name)))


def _rules(owner: Policy | Profile, direction: Direction) -> list[Rule]:
    return owner.spec.ingress if direction == "Ingress" else owner.spec.egress


def iptables_input(ruleset: Ruleset) -> str:
    """``iptables-restore --noflush`` input that (re)writes exactly these chains of the filter
    table, in one commit: declaring a chain empties it, so each is rewritten whole."""
    lines = ["*filter", *(f":{c.name} - [0:0]" for c in ruleset.chains)]
    lines += [f"-A {c.name} {rule}" for c in ruleset.chains for rule in c.rules]
    return "\n".join([*lines, "COMMIT", ""])


def ipset_input(sets: Iterable[IPSet]) -> str:
    """``ipset restore`` input creating these sets (left alone if they exist) and adding their
    members; the dataplane swaps a changed set in whole."""
    lines: list[str] = []
    for made in sets:
        lines.append(f"create {made.name} {made.type} family inet -exist")
        lines += [f"add {made.name} {member} -exist" for member in sorted(made.members)]
    return "\n".join([*lines, ""])
