"""How to reach the datastore: etcd endpoints, TLS material, key prefix."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import Field, field_validator

from datastore.errors import ValidationFailed
from datastore.settings import Settings

DEFAULT_CONFIG_FILE = "/etc/felid/felidctl.cfg"


class DatastoreConfig(Settings):
    etcd_endpoints: tuple[str, ...] = Field(
        default=("http://127.0.0.1:2379",),
        description="etcd client URLs, comma-separated; https:// URLs use TLS.",
    )
    etcd_ca_cert_file: str | None = Field(
        default=None,
        alias="etcdCACertFile",
        description="CA certificate (PEM) that signed the etcd server certificates.",
    )
    etcd_cert_file: str | None = Field(
        default=None, description="Client certificate (PEM) for mutual TLS with etcd."
    )
    etcd_key_file: str | None = Field(
        default=None, description="Private key (PEM) of the client certificate."
    )
    etcd_prefix: str = Field(
        default="/felid", description="Key prefix under which felid keeps all of its data."
    )

    @field_validator("etcd_endpoints")
    @classmethod
    def _urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one endpoint is required")
        for url in value:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{url!r} is not an http:// or https:// URL")
            try:
                parts.port  # noqa: B018 - raises on a bad port
            except ValueError:
                raise ValueError(f"{url!r} has an invalid port") from None
        return value

    @field_validator("etcd_ca_cert_file", "etcd_cert_file", "etcd_key_file")
    @classmethod
    def _readable(cls, value: str | None) -> str | None:
        if value is not None and not os.access(value, os.R_OK):
            raise ValueError(f"{value!r} is not a readable file")
        return value

    @field_validator("etcd_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value.startswith("/") or (value.endswith("/") and value != "/"):
            raise ValueError(f"{value!r} must start with '/' and not end with '/'")
        return value


def read_config_file(path: str) -> dict[str, Any]:
    """A YAML mapping of settings, bare or as ``kind: FelidAPIConfig`` with a ``spec``."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise ValidationFailed(path, exc.strerror or str(exc)) from None
    except yaml.YAMLError as exc:
        raise ValidationFailed(path, f"not valid YAML: {exc}") from None
    if data is None:
        return {}
    if isinstance(data, dict) and "spec" in data:
        data = data["spec"]
    if not isinstance(data, dict):
        raise ValidationFailed(path, "expected a mapping of settings")
    return data
