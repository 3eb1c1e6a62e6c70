"""A felix from the environment it is given (never ``os.environ`` itself): ``felid-felix`` builds one
this way, and so does felid-node, which runs felix in its own process."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from datastore.config import DatastoreConfig, read_config_file
from datastore.settings import node_name, resolve
from felix.agent import Felix
from felix.config import DEFAULT_CONFIG_FILE, SettingsSources
from typha.config import TyphaClientSettings

LEVELS = {
    "Debug": logging.DEBUG,
    "Info": logging.INFO,
    "Warning": logging.WARNING,
    "Error": logging.ERROR,
    "Fatal": logging.CRITICAL,
}


def felix_from(environ: Mapping[str, str]) -> Felix:
    """Raises ``ValidationFailed`` or ``InvalidName`` naming the setting that is wrong."""
    datastore = resolve(DatastoreConfig, environ=environ)
    path = environ.get("FELIX_CONFIGFILE") or (
        DEFAULT_CONFIG_FILE if os.path.exists(DEFAULT_CONFIG_FILE) else None
    )
    sources = SettingsSources(environ, read_config_file(path) if path else {})
    settings = sources.local()
    node = node_name(environ.get("FELID_NODENAME"), "FELID_NODENAME")
    typha = resolve(TyphaClientSettings, environ=environ)
    return Felix(node, datastore, sources, settings, typha)


def log_level(felix: Felix) -> int:
    return LEVELS[felix.settings.log_severity_screen]
