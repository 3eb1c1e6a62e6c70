"""Where things live in etcd (DESIGN.md §2); every key is built and parsed here.

A name that becomes part of a key is checked where it enters (the models, the CNI
plugin, the settings); the layout checks again that none would split the key or
climb out of its place, whoever forgot.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from datastore.errors import InvalidName, quoted
from datastore.models import (
    KIND_BY_PLURAL,
    BGPConfiguration,
    BGPFilter,
    BGPPeer,
    FelixConfiguration,
    GlobalNetworkPolicy,
    HostEndpoint,
    IPPool,
    NetworkPolicy,
    Node,
    Profile,
    Resource,
    WorkloadEndpoint,
)


def component(value: str, what: str) -> str:
    """``value`` as one component of a key: never empty, ``.``, ``..`` or containing ``/``."""
    if not value or value in (".", "..") or "/" in value or "\0" in value:
        raise InvalidName(what, f"{quoted(value)} cannot be part of a datastore key")
    return value


_GROUP = "resources/v3/projectcalico.org"


@dataclass(frozen=True)
class ResourceKey:
    kind: type[Resource]
    name: str
    namespace: str | None = None


@dataclass(frozen=True)
class KeyLayout:
    prefix: str = "/felid"

    @property
    def resources(self) -> str:
        return f"{self.prefix}/{_GROUP}/"

    def kind_prefix(self, kind: type[Resource], namespace: str | None = None) -> str:
        base = f"{self.resources}{kind.PLURAL}/"
        if kind.NAMESPACED and namespace is not None:
            return f"{base}{component(namespace, 'namespace')}/"
        return base

    def resource(self, kind: type[Resource], name: str, namespace: str | None = None) -> str:
        name = component(name, f"{kind.KIND} name")
        if kind.NAMESPACED:
            return f"{self.kind_prefix(kind, namespace or 'default')}{name}"
        return f"{self.kind_prefix(kind)}{name}"

    def key_of(self, resource: Resource) -> str:
        return self.resource(type(resource), resource.name, resource.namespace)

    @property
    def typhas(self) -> str:
        """Where each running typha registers itself, under a lease."""
        return f"{self.prefix}/typha/v1/"

    def typha(self, name: str) -> str:
        return f"{self.typhas}{component(name, 'typha name')}"

    def parse(self, key: str) -> ResourceKey | None:
        """The resource a key names, or None for keys that are not resources."""
        if not key.startswith(self.resources):
            return None
        parts = key[len(self.resources) :].split("/")
        kind = KIND_BY_PLURAL.get(parts[0])
        if kind is None:
            return None
        if kind.NAMESPACED and len(parts) == 3:
            return ResourceKey(kind, parts[2], parts[1])
        if not kind.NAMESPACED and len(parts) == 2:
            return ResourceKey(kind, parts[1])
        return None


@dataclass(frozen=True)
class IPAMKeys:
    """IPAM's keys: blocks, host affinities, handles and the IPAM config."""

    prefix: str = "/felid"

    @property
    def blocks(self) -> str:
        return f"{self.prefix}/ipam/v2/assignment/ipv4/block/"

    @property
    def hosts(self) -> str:
        return f"{self.prefix}/ipam/v2/host/"

    @property
    def handles(self) -> str:
        return f"{self.prefix}/ipam/v2/handle/"

    @property
    def config(self) -> str:
        return f"{self.prefix}/ipam/v2/config"

    @staticmethod
    def _cidr_part(cidr: str) -> str:
        return component(cidr.replace("/", "-"), "block CIDR")

    @staticmethod
    def cidr_of(key: str) -> str:
        """``.../10.244.1.0-26`` -> ``10.244.1.0/26``."""
        address, _, length = key.rsplit("/", 1)[-1].rpartition("-")
        return f"{address}/{length}"

    def block(self, cidr: str) -> str:
        return f"{self.blocks}{self._cidr_part(cidr)}"

    def host_affinities(self, node: str) -> str:
        return f"{self.hosts}{component(node, 'node name')}/ipv4/block/"

    def affinity(self, node: str, cidr: str) -> str:
        return f"{self.host_affinities(node)}{self._cidr_part(cidr)}"

    def affinity_node(self, key: str) -> str:
        """The node an affinity key belongs to."""
        return key[len(self.hosts) :].split("/", 1)[0]

    def handle(self, handle_id: str) -> str:
        return f"{self.handles}{component(handle_id, 'handle')}"


class SyncerType(StrEnum):
    """Who follows the datastore, and so what it follows: typha serves each its own stream."""

    FELIX = "felix"
    BGP = "bgp"

    @property
    def kinds(self) -> tuple[type[Resource], ...]:
        """The resource kinds it computes from: no other resource reaches it (nor wakes it)."""
        if self is SyncerType.FELIX:
            return (
                IPPool,
                Node,
                WorkloadEndpoint,
                FelixConfiguration,
                Profile,
                NetworkPolicy,
                GlobalNetworkPolicy,
                HostEndpoint,
            )
        return (IPPool, Node, BGPConfiguration, BGPPeer, BGPFilter)

    def prefixes(self, prefix: str) -> tuple[str, ...]:
        """Its kinds and the affinities; bgp the blocks too (the addresses a node borrowed)."""
        layout, ipam = KeyLayout(prefix), IPAMKeys(prefix)
        kinds = tuple(layout.kind_prefix(kind) for kind in self.kinds)
        if self is SyncerType.FELIX:
            return (*kinds, ipam.hosts)
        return (*kinds, ipam.hosts, ipam.blocks)
