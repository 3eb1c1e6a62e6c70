"""WorkloadEndpoint: one interface of one workload (pod, container) on one node."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, model_validator

from datastore.errors import quoted
from datastore.models.base import MAC, IPv4Network, Model, Name, Resource, default_namespace
from datastore.models.policy import EndpointPort


def _host_route(value: str) -> str:
    if not value.endswith("/32"):
        raise ValueError(f"{quoted(value)}: workload addresses are /32s")
    return value


HostNetwork = Annotated[IPv4Network, AfterValidator(_host_route)]


class WorkloadEndpointSpec(Model):
    orchestrator: str = "k8s"
    workload: str | None = None
    node: Name
    container_id: str | None = Field(default=None, alias="containerID")
    pod: str | None = None
    endpoint: str = "eth0"
    interface_name: str
    ip_networks: list[HostNetwork] = Field(default_factory=list, alias="ipNetworks")
    mac: MAC | None = None
    profiles: list[str] = Field(default_factory=list)
    ports: list[EndpointPort] = Field(default_factory=list)  # named ports rules may name

    @model_validator(mode="after")
    def _iface(self) -> WorkloadEndpointSpec:
        if not 1 <= len(self.interface_name) <= 15 or "/" in self.interface_name:
            raise ValueError(f"interfaceName: {quoted(self.interface_name)} is not a Linux interface name")
        return self


class WorkloadEndpoint(Resource):
    KIND: ClassVar[str] = "WorkloadEndpoint"
    PLURAL: ClassVar[str] = "workloadendpoints"
    NAMESPACED: ClassVar[bool] = True

    kind: Literal["WorkloadEndpoint"] = "WorkloadEndpoint"
    spec: WorkloadEndpointSpec

    _default_namespace = model_validator(mode="before")(default_namespace)
