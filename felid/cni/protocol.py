"""The CNI protocol (spec 1.0.0, and 0.3.x/0.4.0 configs): invocation, results, errors.

A plugin is a function from an ``Invocation`` to a result (or None); ``run``
turns every failure into the spec's error JSON on stdout and a non-zero exit,
never a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from datastore import settings
from datastore.config import DatastoreConfig
from datastore.errors import DatastoreError, InvalidName, Unavailable, ValidationFailed
from datastore.models.base import valid_container_id, valid_name
from datastore.settings import resolve

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0")
LATEST = "1.0.0"
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION")

# Error codes of the CNI spec; 100 and up are ours.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
IPAM_FAILURE = 100
DATAPLANE_FAILURE = 101
INTERNAL_ERROR = 999

log = logging.getLogger(__name__)


class CNIError(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details


@dataclass(frozen=True)
class Invocation:
    command: str
    container_id: str
    netns: str
    ifname: str
    args: Mapping[str, str]  # CNI_ARGS, e.g. K8S_POD_NAME
    config: Mapping[str, Any]  # the network configuration from stdin
    environ: Mapping[str, str]

    @property
    def version(self) -> str:
        return str(self.config.get("cniVersion", LATEST))

    @property
    def ipam(self) -> Mapping[str, Any]:
        section = self.config.get("ipam") or {}
        if not isinstance(section, dict):
            raise CNIError(INVALID_CONFIG, "ipam must be an object")
        return section


def _cni_args(text: str) -> dict[str, str]:
    out = {}
    for part in text.split(";"):
        if part.strip():
            key, sep, value = part.partition("=")
            if not sep:
                raise CNIError(INVALID_ENVIRONMENT, f"CNI_ARGS: {part!r} is not KEY=VALUE")
            out[key.strip()] = value.strip()
    return out


def parse_invocation(environ: Mapping[str, str], stdin: str) -> Invocation:
    command = environ.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CNIError(INVALID_ENVIRONMENT, f"CNI_COMMAND {command!r} is not one of {', '.join(COMMANDS)}")
    try:
        config = json.loads(stdin) if stdin.strip() else {}
    except json.JSONDecodeError as exc:
        raise CNIError(
            DECODE_FAILURE, "network configuration is not JSON", f"line {exc.lineno}: {exc.msg}"
        ) from None
    if not isinstance(config, dict):
        raise CNIError(DECODE_FAILURE, "network configuration must be a JSON object")
    if command != "VERSION":
        if "cniVersion" not in config:
            raise CNIError(INVALID_CONFIG, "network configuration has no cniVersion")
        if config["cniVersion"] not in SUPPORTED_VERSIONS:
            raise CNIError(
                INCOMPATIBLE_VERSION,
                f"cniVersion {config['cniVersion']!r} is not supported",
                f"supported: {', '.join(SUPPORTED_VERSIONS)}",
            )
        if not environ.get("CNI_CONTAINERID"):
            raise CNIError(INVALID_ENVIRONMENT, "CNI_CONTAINERID is not set")
        _valid(valid_container_id, environ["CNI_CONTAINERID"], "CNI_CONTAINERID", INVALID_ENVIRONMENT)
    return Invocation(
        command=command,
        container_id=environ.get("CNI_CONTAINERID", ""),
        netns=environ.get("CNI_NETNS", ""),
        ifname=environ.get("CNI_IFNAME", ""),
        args=_cni_args(environ.get("CNI_ARGS", "")),
        config=config,
        environ=environ,
    )


def datastore_config(invocation: Invocation) -> DatastoreConfig:
    """etcd settings the Calico way: keys in the network config, else the FELID_* environment."""
    conf = invocation.config
    flags = {
        "etcd_endpoints": conf.get("etcd_endpoints"),
        "etcd_ca_cert_file": conf.get("etcd_ca_cert_file"),
        "etcd_cert_file": conf.get("etcd_cert_file"),
        "etcd_key_file": conf.get("etcd_key_file"),
        "etcd_prefix": conf.get("etcd_prefix"),
    }
    try:
        return resolve(DatastoreConfig, flags=flags, environ=invocation.environ)
    except ValidationFailed as exc:
        # Name the setting as the network config spells it (resolve calls these flags).
        key = exc.field.removeprefix("--").replace("-", "_")
        raise CNIError(INVALID_CONFIG, f"invalid datastore setting {key}: {exc.message}") from None


def node_name(invocation: Invocation) -> str:
    """The network config's ``nodename``, else FELID_NODENAME, else the hostname: a valid node name."""
    configured = invocation.config.get("nodename")
    if configured is not None:
        if not isinstance(configured, str):
            raise CNIError(INVALID_CONFIG, "nodename must be a string")
        return _valid(valid_name, configured, "nodename", INVALID_CONFIG)
    try:
        return settings.node_name(invocation.environ.get("FELID_NODENAME"), "FELID_NODENAME")
    except InvalidName as exc:
        raise CNIError(INVALID_ENVIRONMENT, str(exc)) from None


def _valid(check: Callable[[str, str], str], value: str, what: str, code: int) -> str:
    try:
        return check(value, what)
    except InvalidName as exc:
        raise CNIError(code, str(exc)) from None


def ipam_result(version: str, addresses: Sequence[str]) -> dict[str, Any]:
    """An IPAM result with /32s; 0.3.x and 0.4.0 want each address's IP version."""
    ips: list[dict[str, Any]] = []
    for address in addresses:
        entry: dict[str, Any] = {"address": f"{address}/32"}
        if version != "1.0.0":
            entry["version"] = "4"
        ips.append(entry)
    return {"cniVersion": version, "ips": ips, "dns": {}}


def version_result(invocation: Invocation) -> dict[str, Any]:
    requested = invocation.config.get("cniVersion", LATEST)
    return {"cniVersion": requested, "supportedVersions": list(SUPPORTED_VERSIONS)}


@dataclass(frozen=True)
class Plugin:
    """A CNI plugin's three verbs; VERSION is answered by ``run`` itself."""

    add: Callable[[Invocation], Mapping[str, Any]]
    delete: Callable[[Invocation], None]
    check: Callable[[Invocation], None]

    def __call__(self, invocation: Invocation) -> Mapping[str, Any] | None:
        if invocation.command == "ADD":
            return self.add(invocation)
        if invocation.command == "DEL":
            self.delete(invocation)
        elif invocation.command == "CHECK":
            self.check(invocation)
        return None


def run(
    plugin: Callable[[Invocation], Mapping[str, Any] | None],
    environ: Mapping[str, str] | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    environ = os.environ if environ is None else environ
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    version = LATEST
    try:
        text = stdin.read()
        invocation = parse_invocation(environ, text)
        version = invocation.version if invocation.version in SUPPORTED_VERSIONS else LATEST
        result = version_result(invocation) if invocation.command == "VERSION" else plugin(invocation)
        if result is not None:
            stdout.write(json.dumps(result) + "\n")
        return 0
    except CNIError as exc:
        error = exc
    except Unavailable as exc:
        error = CNIError(TRY_AGAIN_LATER, "datastore unavailable", str(exc))
    except DatastoreError as exc:
        error = CNIError(IPAM_FAILURE, str(exc))
    except Exception as exc:  # the contract is an error JSON, never a traceback
        log.debug("plugin failed", exc_info=True)
        error = CNIError(INTERNAL_ERROR, f"internal error: {type(exc).__name__}: {exc}")
    payload = {"cniVersion": version, "code": error.code, "msg": error.msg}
    if error.details:
        payload["details"] = error.details
    stdout.write(json.dumps(payload) + "\n")
    return 1
