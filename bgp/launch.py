"""A bgp agent from the environment (and flags) it is given, never ``os.environ`` itself:
``felid-bgp`` builds one this way, and so does felid-node, which runs it in its own process."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from bgp.agent import BGPAgent
from bgp.config import BGPSettings
from datastore.config import DatastoreConfig
from datastore.errors import ValidationFailed
from datastore.settings import node_name, resolve
from typha.config import TyphaClientSettings


def agent_from(environ: Mapping[str, str], flags: Mapping[str, Any] | None = None) -> BGPAgent:
    """Raises ``ValidationFailed`` or ``InvalidName`` naming the setting that is wrong."""
    node = node_name(environ.get("FELID_NODENAME"), "FELID_NODENAME")
    datastore = resolve(DatastoreConfig, environ=environ)
    settings = resolve(BGPSettings, flags=dict(flags or {}), environ=environ)
    typha = resolve(TyphaClientSettings, environ=environ)
    if settings.route_reflector and settings.cluster_id is None:
        raise ValidationFailed("--cluster-id", "a route reflector needs a cluster ID (e.g. 244.0.0.1)")
    return BGPAgent(node, datastore, settings, typha=typha)


def log_level(agent: BGPAgent) -> int:
    return int(getattr(logging, agent.settings.log_severity.upper()))
