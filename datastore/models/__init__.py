"""projectcalico.org/v3 resources as frozen, validated models, and the kind registry."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from datastore.errors import ValidationFailed, quoted
from datastore.models import k8s, unimplemented
from datastore.models.base import API_VERSION, ObjectMeta, Resource, parse_duration
from datastore.models.bgp import BGPConfiguration, BGPConfigurationSpec, BGPPeer, BGPPeerSpec
from datastore.models.bgpfilter import BGPFilter, BGPFilterSpec
from datastore.models.cluster import ClusterInformation, ClusterInformationSpec
from datastore.models.felixconfig import FelixConfiguration, FelixConfigurationSpec
from datastore.models.ippool import (
    Encapsulation,
    IPPool,
    IPPoolSpec,
    enabled_pools,
    encapsulation_overhead,
    encapsulations,
    overlapping_pool,
    pool_containing,
)
from datastore.models.ipreservation import IPReservation, IPReservationSpec
from datastore.models.node import Node, NodeBGPSpec, NodeSpec
from datastore.models.policy import (
    EntityRule,
    GlobalNetworkPolicy,
    GlobalNetworkPolicySpec,
    HostEndpoint,
    HostEndpointSpec,
    NetworkPolicy,
    PolicySpec,
    Profile,
    ProfileSpec,
    Rule,
)
from datastore.models.workload import WorkloadEndpoint, WorkloadEndpointSpec

_BLAMED_FIELD = re.compile(r"^([A-Za-z0-9_.]+): (.*)$", re.DOTALL)

KINDS: tuple[type[Resource], ...] = (
    IPPool,
    Node,
    BGPConfiguration,
    BGPPeer,
    BGPFilter,
    FelixConfiguration,
    WorkloadEndpoint,
    ClusterInformation,
    NetworkPolicy,
    GlobalNetworkPolicy,
    Profile,
    HostEndpoint,
    IPReservation,
)
KIND_BY_NAME: Mapping[str, type[Resource]] = {k.KIND: k for k in KINDS}
KIND_BY_PLURAL: Mapping[str, type[Resource]] = {k.PLURAL: k for k in KINDS}

__all__ = [
    "API_VERSION",
    "KINDS",
    "KIND_BY_NAME",
    "KIND_BY_PLURAL",
    "BGPConfiguration",
    "BGPConfigurationSpec",
    "BGPFilter",
    "BGPFilterSpec",
    "BGPPeer",
    "BGPPeerSpec",
    "ClusterInformation",
    "ClusterInformationSpec",
    "Encapsulation",
    "EntityRule",
    "FelixConfiguration",
    "FelixConfigurationSpec",
    "GlobalNetworkPolicy",
    "GlobalNetworkPolicySpec",
    "HostEndpoint",
    "HostEndpointSpec",
    "IPPool",
    "IPPoolSpec",
    "IPReservation",
    "IPReservationSpec",
    "NetworkPolicy",
    "Node",
    "NodeBGPSpec",
    "NodeSpec",
    "ObjectMeta",
    "PolicySpec",
    "Profile",
    "ProfileSpec",
    "Resource",
    "Rule",
    "WorkloadEndpoint",
    "WorkloadEndpointSpec",
    "enabled_pools",
    "encapsulation_overhead",
    "encapsulations",
    "overlapping_pool",
    "parse_duration",
    "parse_noting",
    "parse_resource",
    "pool_containing",
    "validation_failure",
]


def validation_failure(exc: ValidationError) -> ValidationFailed:
    """The first problem pydantic found, as one field path and one message."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"])
    message = str(err["msg"]).removeprefix("Value error, ")
    # Model-level checks start their message with the field they blame, relative to
    # the model they check ("blockSize: ..." inside spec, "metadata.name: ..." at the top).
    blamed = _BLAMED_FIELD.match(message)
    if blamed:
        field = ".".join(p for p in (field, blamed.group(1)) if p)
        message = blamed.group(2)
    if err["type"] == "extra_forbidden":
        message = "unknown field"
    elif err["type"] == "missing":
        message = "required field is missing"
    return ValidationFailed(field, message)


def parse_noting(data: Any) -> tuple[Resource, list[str]]:
    """``parse_resource`` for a document a user wrote: Calico's fields that ask for what felid
    already does are dropped, one warning each; those felid cannot honour are refused by name."""
    screened, warnings = unimplemented.screen(data)
    return parse_resource(screened), warnings


def parse_resource(data: Any) -> Resource:
    """Turn one decoded document into its resource model, or raise ValidationFailed."""
    if not isinstance(data, dict):
        raise ValidationFailed(
            "", f"expected a mapping with apiVersion, kind, metadata, spec; got {type(data).__name__}"
        )
    api_version = data.get("apiVersion")
    if api_version == k8s.API_VERSION and data.get("kind") == "NetworkPolicy":
        data = k8s.network_policy(data)  # enforced as Calico enforces it: converted
        api_version = data["apiVersion"]
    if api_version != API_VERSION:
        raise ValidationFailed("apiVersion", f"{quoted(api_version)} is not supported; use {API_VERSION!r}")
    kind_name = data.get("kind")
    kind = KIND_BY_NAME.get(kind_name) if isinstance(kind_name, str) else None
    if kind is None:
        raise ValidationFailed("kind", f"unknown kind {quoted(kind_name)}; one of {', '.join(KIND_BY_NAME)}")
    try:
        # Documents spell fields as the schema does (camelCase): ``block_size`` is not ``blockSize``.
        return kind.model_validate(data, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise validation_failure(exc) from None
