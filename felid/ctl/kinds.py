"""The names users may type for each kind, as calicoctl accepts them."""

from __future__ import annotations

from collections.abc import Mapping

from datastore.models import (
    BGPConfiguration,
    BGPFilter,
    BGPPeer,
    ClusterInformation,
    FelixConfiguration,
    GlobalNetworkPolicy,
    HostEndpoint,
    IPPool,
    IPReservation,
    NetworkPolicy,
    Node,
    Profile,
    Resource,
    WorkloadEndpoint,
)

_ALIASES: Mapping[type[Resource], tuple[str, ...]] = {
    IPPool: ("ippool", "ippools", "ipp", "ipps", "pool", "pools"),
    Node: ("node", "nodes", "no", "nos"),
    BGPPeer: ("bgppeer", "bgppeers", "bgpp", "bgpps", "bp", "bps"),
    BGPFilter: ("bgpfilter", "bgpfilters", "bgpf", "bgpfs"),
    BGPConfiguration: ("bgpconfiguration", "bgpconfigurations", "bgpconfig", "bgpconfigs"),
    FelixConfiguration: ("felixconfiguration", "felixconfigurations", "felixconfig", "felixconfigs"),
    WorkloadEndpoint: ("workloadendpoint", "workloadendpoints", "wep", "weps"),
    ClusterInformation: ("clusterinformation", "clusterinformations", "clusterinfo", "clusterinfos"),
    NetworkPolicy: ("networkpolicy", "networkpolicies", "policy", "policies", "pol", "pols", "np", "nps"),
    GlobalNetworkPolicy: ("globalnetworkpolicy", "globalnetworkpolicies", "gnp", "gnps"),
    Profile: ("profile", "profiles", "pro", "pros"),
    HostEndpoint: ("hostendpoint", "hostendpoints", "hep", "heps"),
    IPReservation: ("ipreservation", "ipreservations", "ipr", "iprs"),
}
_BY_ALIAS = {alias: kind for kind, aliases in _ALIASES.items() for alias in aliases}


class UnknownKind(ValueError):
    pass


def kind_named(text: str) -> type[Resource]:
    kind = _BY_ALIAS.get(text.lower())
    if kind is None:
        known = ", ".join(aliases[0] for aliases in _ALIASES.values())
        raise UnknownKind(f"unknown resource type {text!r}; one of: {known}")
    return kind
