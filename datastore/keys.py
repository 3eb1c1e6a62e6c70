"""Where things live in etcd (DESIGN.md §2); every key is built and parsed here."""

from __future__ import annotations

from dataclasses import dataclass

from datastore.models import KIND_BY_PLURAL, Resource

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
        return f"{base}{namespace}/" if kind.NAMESPACED and namespace is not None else base

    def resource(self, kind: type[Resource], name: str, namespace: str | None = None) -> str:
        if kind.NAMESPACED:
            return f"{self.kind_prefix(kind, namespace or 'default')}{name}"
        return f"{self.kind_prefix(kind)}{name}"

    def key_of(self, resource: Resource) -> str:
        return self.resource(type(resource), resource.name, resource.namespace)

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
