"""The chains that bring each packet to its endpoint's chains: felid's entry points in the
filter, mangle and raw tables (pure, as the rest of the renderer).

``felid-FORWARD``, ``felid-INPUT`` and ``felid-OUTPUT`` (filter), ``felid-PREROUTING`` (mangle)
and ``felid-PREROUTING`` / ``felid-OUTPUT`` (raw) are jumped to by the first rule of the built-in
chain of that name in that table (the dataplane keeps the jumps there; raw's and mangle's only
while some host endpoint has untracked or pre-DNAT policy):

- From a workload (``-i cali+``), ``felid-from-wl`` goes to that workload's egress chain; to a
  workload (``-o cali+``), ``felid-to-wl`` to its ingress chain; a workload interface felid does
  not know is dropped either way.  A workload's chain *returns* when its policy allows, so a
  packet between two workloads of one host passes the sender's egress and then the receiver's
  ingress, and FORWARD accepts what both let through.  Traffic the host itself sends to a
  workload passes that workload's ingress too (OUTPUT).
- From a workload to its own host (INPUT): its egress, then FelixConfiguration
  ``defaultEndpointToHostAction``.
- Host endpoints, only when there are any (without, felid leaves the host's own traffic alone):
  traffic coming in on an interface goes to its ``felid-fh-`` chain (INPUT), going out to its
  ``felid-th-`` chain (OUTPUT); one named ``*`` takes every interface no other names.  Loopback
  is never a host endpoint's, and IPIP / VXLAN packets between cluster hosts are accepted before
  host endpoint policy: denying them would cut the overlay that policy is meant to protect.
- As Calico: a host endpoint's untracked policy runs first, in raw (``felid-fhu-``/``-thu-``;
  not for ``*``), and what it allows is not tracked; its pre-DNAT policy next, in mangle
  (``felid-fhp-``, ingress only, before any DNAT); neither has a default drop, and what either
  allows carries the accept mark, which the filter hooks accept without the normal host
  endpoint policy.  Forwarded traffic in or out of a host endpoint runs its ``applyOnForward``
  policies (``felid-fhf-``/``-thf-``), and is allowed when none selects it; a workload's own
  policy still runs on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from datastore.models.felixconfig import EndpointToHostAction
from datastore.models.policy import FAILSAFE_INBOUND, FAILSAFE_OUTBOUND, Direction, ProtoPort
from felix.calc.chains import (
    ACCEPT_MARK,
    MARKS,
    PASS_MARK,
    PREFIX,
    Chain,
    IPSet,
    Table,
    endpoint_chain,
    host_endpoint_chain,
)
from felix.calc.policy import Stage

# The built-in chains felid's first rule jumps from (raw and mangle only while some host endpoint
# has untracked or pre-DNAT policy), each to felid's chain of the same name in that table.
HOOKS: tuple[tuple[Table, str], ...] = (
    ("raw", "PREROUTING"),
    ("raw", "OUTPUT"),
    ("mangle", "PREROUTING"),
    ("filter", "FORWARD"),
    ("filter", "INPUT"),
    ("filter", "OUTPUT"),
)
STAGE_TABLE: dict[Stage, Table] = {
    "normal": "filter",
    "forward": "filter",
    "untracked": "raw",
    "pre-dnat": "mangle",
}
FROM_WORKLOAD = f"{PREFIX}from-wl"
TO_WORKLOAD = f"{PREFIX}to-wl"
FROM_HOST_ENDPOINT = f"{PREFIX}from-hep"  # in each table, to that stage's host endpoint chains
TO_HOST_ENDPOINT = f"{PREFIX}to-hep"
FROM_HOST_ENDPOINT_FORWARD = f"{PREFIX}from-hep-fw"
TO_HOST_ENDPOINT_FORWARD = f"{PREFIX}to-hep-fw"
CLUSTER_HOSTS = f"{PREFIX}all-hosts"  # every node's address: the tunnels' far ends
IPIP_PROTOCOL = 4


def hook_chain(builtin: str) -> str:
    return f"{PREFIX}{builtin}"


@dataclass(frozen=True)
class PolicyOptions:
    """What the renderer needs beyond the plan: felix's settings and the cluster's tunnels."""

    workload_prefix: str = "cali"  # FelixSettings.interface_prefix
    endpoint_to_host: EndpointToHostAction = "Accept"
    failsafe_inbound: tuple[ProtoPort, ...] = FAILSAFE_INBOUND
    failsafe_outbound: tuple[ProtoPort, ...] = FAILSAFE_OUTBOUND
    cluster_hosts: frozenset[str] = frozenset()  # every node's address
    ipip: bool = False
    vxlan_port: int | None = None  # when VXLAN is on


def _dispatch(
    name: str, flag: str, interfaces: Sequence[str], chain_of: dict[str, str], last: str | None
) -> Chain:
    rules = [f"{flag} {i} -g {chain_of[i]}" for i in interfaces]
    if last is not None:
        rules.append(last)
    return Chain(name, tuple(rules))


def _tunnels(options: PolicyOptions, where: str) -> list[str]:
    """Accept the cluster's own tunnel packets (``where``: src coming in, dst going out)."""
    if not options.cluster_hosts:
        return []
    match = f"-m set --match-set {CLUSTER_HOSTS} {where}"
    rules = [f"-p {IPIP_PROTOCOL} {match} -j ACCEPT"] if options.ipip else []
    if options.vxlan_port is not None:
        rules.append(f"-p udp --dport {options.vxlan_port} {match} -j ACCEPT")
    return rules


@dataclass(frozen=True)
class HostInterfaces:
    """The host endpoint interfaces with chains, sorted, by the stage those chains are for (every
    one has normal and forward chains; untracked and pre-DNAT ones only where such policy applies)."""

    normal: tuple[str, ...] = ()
    untracked: tuple[str, ...] = ()
    pre_dnat: tuple[str, ...] = ()


def dispatch_chains(
    workloads: Sequence[str], hosts: HostInterfaces, options: PolicyOptions
) -> tuple[list[Chain], list[IPSet]]:
    """The hook and dispatch chains for these workload interfaces and host endpoint interfaces
    (``*`` for every one), and the set they name."""
    wl = f"{options.workload_prefix}+"
    to_host = {"Drop": "DROP", "Accept": "ACCEPT", "Return": "RETURN"}[options.endpoint_to_host]
    forward = [
        f"-i {wl} -j {FROM_WORKLOAD}",
        f"-o {wl} -j {TO_WORKLOAD}",
        f"-i {wl} -j ACCEPT",
        f"-o {wl} -j ACCEPT",
    ]
    chains = [
        _dispatch(
            FROM_WORKLOAD, "-i", workloads, {i: endpoint_chain(i, "Egress") for i in workloads}, "-j DROP"
        ),
        _dispatch(
            TO_WORKLOAD, "-o", workloads, {i: endpoint_chain(i, "Ingress") for i in workloads}, "-j DROP"
        ),
    ]
    into_host = [f"-i {wl} -j {FROM_WORKLOAD}", f"-i {wl} -j {to_host}"]
    out_of_host = [f"-o {wl} -j {TO_WORKLOAD}", f"-o {wl} -j ACCEPT"]
    sets: list[IPSet] = []
    if hosts.normal:
        accepted = f"-m mark --mark {ACCEPT_MARK:#x}/{ACCEPT_MARK:#x} -j ACCEPT"  # by untracked or pre-DNAT
        into_host += [accepted, *_tunnels(options, "src"), "-i lo -j RETURN", f"-j {FROM_HOST_ENDPOINT}"]
        out_of_host = [
            accepted,
            *out_of_host,
            *_tunnels(options, "dst"),
            "-o lo -j RETURN",
            f"-j {TO_HOST_ENDPOINT}",
        ]
        forward = [
            f"-j MARK --set-xmark 0/{PASS_MARK:#x}",  # the accept mark says untracked or pre-DNAT allowed it
            f"-m mark --mark 0/{ACCEPT_MARK:#x} ! -i {wl} -j {FROM_HOST_ENDPOINT_FORWARD}",
            f"-i {wl} -j {FROM_WORKLOAD}",
            f"-o {wl} -j {TO_WORKLOAD}",
            f"! -o {wl} -j {TO_HOST_ENDPOINT_FORWARD}",
            f"-i {wl} -j ACCEPT",
            f"-o {wl} -j ACCEPT",
            accepted,  # between host endpoints, allowed by both
        ]
        chains += _host_dispatch(FROM_HOST_ENDPOINT, TO_HOST_ENDPOINT, hosts.normal, "normal")
        chains += _host_dispatch(
            FROM_HOST_ENDPOINT_FORWARD, TO_HOST_ENDPOINT_FORWARD, hosts.normal, "forward"
        )
        if options.cluster_hosts:
            sets.append(IPSet(CLUSTER_HOSTS, "hash:ip", options.cluster_hosts))
    chains += [
        Chain(hook_chain("FORWARD"), tuple(forward)),
        Chain(hook_chain("INPUT"), tuple(into_host)),
        Chain(hook_chain("OUTPUT"), tuple(out_of_host)),
    ]
    return [*chains, *_untracked_chains(hosts.untracked, wl), *_pre_dnat_chains(hosts.pre_dnat, wl)], sets


def _host_dispatch(from_name: str, to_name: str, interfaces: Sequence[str], stage: Stage) -> list[Chain]:
    """By interface to each host endpoint's chains of ``stage``; ``*`` takes the rest."""
    named = [i for i in interfaces if i != "*"]
    every = "*" in interfaces
    table = STAGE_TABLE[stage]
    out = []
    sides: tuple[tuple[str, str, Direction], ...] = ((from_name, "-i", "Ingress"), (to_name, "-o", "Egress"))
    for name, flag, direction in sides:
        if stage == "pre-dnat" and direction == "Egress":
            continue
        chain_of = {i: host_endpoint_chain(i, direction, stage) for i in named}
        last = f"-g {host_endpoint_chain('*', direction, stage)}" if every else None
        out.append(replace(_dispatch(name, flag, named, chain_of, last), table=table))
    return out


def _untracked_chains(interfaces: Sequence[str], wl: str) -> list[Chain]:
    """raw PREROUTING and OUTPUT: a host endpoint's untracked policy, before conntrack sees the
    packet; what it allows is not tracked, and accepted by the filter hooks on its mark."""
    if not interfaces:
        return []
    accept = f"-m mark --mark {ACCEPT_MARK:#x}/{ACCEPT_MARK:#x} -j ACCEPT"
    clear = f"-j MARK --set-xmark 0/{MARKS:#x}"
    return [
        Chain(
            hook_chain("PREROUTING"), (f"-i {wl} -j RETURN", clear, f"-j {FROM_HOST_ENDPOINT}", accept), "raw"
        ),
        Chain(hook_chain("OUTPUT"), (f"-o {wl} -j RETURN", clear, f"-j {TO_HOST_ENDPOINT}", accept), "raw"),
        *_host_dispatch(FROM_HOST_ENDPOINT, TO_HOST_ENDPOINT, interfaces, "untracked"),
    ]


def _pre_dnat_chains(interfaces: Sequence[str], wl: str) -> list[Chain]:
    """mangle PREROUTING: a host endpoint's pre-DNAT policy (ingress only), before any DNAT; what it
    allows carries the accept mark on to the filter hooks, what it does not decide goes on."""
    if not interfaces:
        return []
    skip = f"-m mark --mark {ACCEPT_MARK:#x}/{ACCEPT_MARK:#x} -j RETURN"  # allowed untracked already
    return [
        Chain(hook_chain("PREROUTING"), (skip, f"-i {wl} -j RETURN", f"-j {FROM_HOST_ENDPOINT}"), "mangle"),
        *_host_dispatch(FROM_HOST_ENDPOINT, TO_HOST_ENDPOINT, interfaces, "pre-dnat"),
    ]
