"""``felid-felix`` / ``python -m felix``: settings from the environment, then run."""

from __future__ import annotations

import logging
import os
import sys

from datastore.config import DatastoreConfig, read_config_file
from datastore.errors import InvalidName, ValidationFailed
from datastore.settings import node_name, resolve
from felix.agent import Felix, run_forever
from felix.config import DEFAULT_CONFIG_FILE, SettingsSources
from typha.config import TyphaClientSettings

LEVELS = {
    "Debug": logging.DEBUG,
    "Info": logging.INFO,
    "Warning": logging.WARNING,
    "Error": logging.ERROR,
    "Fatal": logging.CRITICAL,
}


def main() -> int:
    environ = dict(os.environ)
    try:
        datastore = resolve(DatastoreConfig, environ=environ)
        path = environ.get("FELIX_CONFIGFILE") or (
            DEFAULT_CONFIG_FILE if os.path.exists(DEFAULT_CONFIG_FILE) else None
        )
        sources = SettingsSources(environ, read_config_file(path) if path else {})
        settings = sources.local()
        node = node_name(environ.get("FELID_NODENAME"), "FELID_NODENAME")
        typha = resolve(TyphaClientSettings, environ=environ)
    except (ValidationFailed, InvalidName) as exc:
        print(f"felix: invalid setting: {exc}", file=sys.stderr)
        return 1
    logging.basicConfig(
        level=LEVELS[settings.log_severity_screen], format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("pyroute2").setLevel(logging.INFO)  # its debug log is every netlink message
    return run_forever(Felix(node, datastore, sources, settings, typha))


if __name__ == "__main__":
    sys.exit(main())
