"""ClusterInformation: cluster-wide facts; ``datastoreReady`` gates the agents."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from datastore.errors import quoted
from datastore.models.base import Model, Resource


class ClusterInformationSpec(Model):
    cluster_guid: str | None = Field(default=None, alias="clusterGUID")
    cluster_type: str | None = None
    calico_version: str | None = None
    datastore_ready: bool | None = None


class ClusterInformation(Resource):
    KIND: ClassVar[str] = "ClusterInformation"
    PLURAL: ClassVar[str] = "clusterinformations"

    kind: Literal["ClusterInformation"] = "ClusterInformation"
    spec: ClusterInformationSpec = Field(default_factory=ClusterInformationSpec)

    @model_validator(mode="after")
    def _singleton(self) -> ClusterInformation:
        if self.name != "default":
            raise ValueError(f"metadata.name: {quoted(self.name)} must be 'default'")
        return self
