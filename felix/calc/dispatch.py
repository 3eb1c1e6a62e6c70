"""The chains that bring each packet to its endpoint's chain: felid's entry points in the filter
table (pure, as the rest of the renderer).

``felid-FORWARD``, ``felid-INPUT`` and ``felid-OUTPUT`` are jumped to by the first rule of the
built-in chain of that name (the dataplane keeps the jumps there):

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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from datastore.models.felixconfig import EndpointToHostAction
from datastore.models.policy import FAILSAFE_INBOUND, FAILSAFE_OUTBOUND, ProtoPort
from felix.calc.chains import PREFIX, Chain, IPSet, endpoint_chain, host_endpoint_chain

HOOKS = ("FORWARD", "INPUT", "OUTPUT")  # the built-in chains felid's first rule jumps from
FROM_WORKLOAD = f"{PREFIX}from-wl"
TO_WORKLOAD = f"{PREFIX}to-wl"
FROM_HOST_ENDPOINT = f"{PREFIX}from-hep"
TO_HOST_ENDPOINT = f"{PREFIX}to-hep"
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


def dispatch_chains(
    workloads: Sequence[str], host_interfaces: Sequence[str], options: PolicyOptions
) -> tuple[list[Chain], list[IPSet]]:
    """The hook and dispatch chains for these workload interfaces and host endpoint interfaces
    (``*`` for every one), and the set they name."""
    wl = f"{options.workload_prefix}+"
    to_host = {"Drop": "DROP", "Accept": "ACCEPT", "Return": "RETURN"}[options.endpoint_to_host]
    chains = [
        Chain(
            hook_chain("FORWARD"),
            (
                f"-i {wl} -j {FROM_WORKLOAD}",
                f"-o {wl} -j {TO_WORKLOAD}",
                f"-i {wl} -j ACCEPT",
                f"-o {wl} -j ACCEPT",
            ),
        ),
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
    if host_interfaces:
        named = [i for i in host_interfaces if i != "*"]
        every = "*" in host_interfaces
        into_host += [*_tunnels(options, "src"), "-i lo -j RETURN", f"-j {FROM_HOST_ENDPOINT}"]
        out_of_host += [*_tunnels(options, "dst"), "-o lo -j RETURN", f"-j {TO_HOST_ENDPOINT}"]
        ingress = {i: host_endpoint_chain(i, "Ingress") for i in named}
        egress = {i: host_endpoint_chain(i, "Egress") for i in named}
        chains += [
            _dispatch(
                FROM_HOST_ENDPOINT,
                "-i",
                named,
                ingress,
                f"-g {host_endpoint_chain('*', 'Ingress')}" if every else None,
            ),
            _dispatch(
                TO_HOST_ENDPOINT,
                "-o",
                named,
                egress,
                f"-g {host_endpoint_chain('*', 'Egress')}" if every else None,
            ),
        ]
        if options.cluster_hosts:
            sets.append(IPSet(CLUSTER_HOSTS, "hash:ip", options.cluster_hosts))
    chains += [Chain(hook_chain("INPUT"), tuple(into_host)), Chain(hook_chain("OUTPUT"), tuple(out_of_host))]
    return chains, sets
