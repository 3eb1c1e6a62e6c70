"""typha's settings (the server's, ``TYPHA_*`` as Calico's) and its clients' (``FELID_TYPHA_*``,
read by felix and felid-bgp alike), declared once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from datastore.settings import Settings


def _readable(value: Path | None) -> Path | None:
    if value is not None and not os.access(value, os.R_OK):
        raise ValueError(f"{str(value)!r} is not a readable file")
    return value


def _mutual_tls(
    files: dict[str, Path | None], identities: tuple[str | None, ...], names: str, peers: str
) -> None:
    """All of the TLS files or none; with them, at least one allowed identity of the peers."""
    given = [name for name, path in files.items() if path is not None]
    if given and len(given) < len(files):
        raise ValueError(f"TLS needs all of {', '.join(files)} (only {', '.join(given)} given)")
    if given and not any(identities):
        raise ValueError(f"with TLS, set {names}: which {peers} to trust")


class TyphaSettings(Settings):
    ENV_PREFIX: ClassVar[str] = "TYPHA_"

    @classmethod
    def env_name(cls, field: str) -> str:
        # Calico's spelling: TYPHA_MAXFALLBEHINDSECS, no word breaks.
        return cls.ENV_PREFIX + field.replace("_", "").upper()

    name: str | None = Field(
        default=None, description="This typha's name in its registration (default: the hostname)."
    )
    server_host: str = Field(default="0.0.0.0", description="Address the client server binds.")
    server_port: int = Field(default=5473, ge=1, le=65535, description="Port of the client server.")
    advertise_address: str | None = Field(
        default=None,
        description="Address clients reach this typha on, in its registration "
        "(default: server_host, or the address this host reaches etcd from).",
    )
    health_host: str = Field(default="127.0.0.1", description="Address of /liveness and /readiness.")
    health_port: int = Field(default=9098, ge=1, le=65535, description="Port of /liveness and /readiness.")
    prometheus_metrics_enabled: bool = Field(default=False, description="Serve Prometheus metrics.")
    prometheus_metrics_host: str = Field(default="127.0.0.1", description="Address of /metrics.")
    prometheus_metrics_port: int = Field(default=9093, ge=1, le=65535, description="Port of /metrics.")
    ping_interval: float = Field(
        default=10.0,
        gt=0,
        description="Seconds between pings each way; a connection silent for twice this is dead.",
    )
    max_fall_behind_secs: float = Field(
        default=120.0,
        gt=0,
        description="A client this many seconds behind the newest update is disconnected (it reconnects "
        "and gets a fresh snapshot).",
    )
    max_fall_behind_bytes: int = Field(
        default=64 * 1024 * 1024,
        gt=0,
        description="A client this many bytes of updates behind is disconnected.",
    )
    new_client_fall_behind_grace_period: float = Field(
        default=300.0,
        ge=0,
        description="Seconds a new client may take over its snapshot before it counts as behind.",
    )
    max_connections: int = Field(
        default=10000, ge=1, description="Hard maximum of client connections; more are refused."
    )
    shed_interval: float = Field(
        default=5.0,
        gt=0,
        description="Seconds between two connections shed while over the fair share (one at a time, and "
        "only while another typha has room).",
    )
    shutdown_grace: float = Field(
        default=30.0, ge=0, description="On SIGTERM, seconds over which the clients are shed."
    )
    registration_ttl: int = Field(
        default=30, ge=2, description="TTL (seconds) of the lease this typha registers under."
    )
    ca_file: Path | None = Field(default=None, description="CA (PEM) client certificates must chain to.")
    server_cert_file: Path | None = Field(default=None, description="This typha's certificate (PEM).")
    server_key_file: Path | None = Field(default=None, description="The key of that certificate (PEM).")
    client_cn: str | None = Field(default=None, description="Common name a client certificate may have.")
    client_uri_san: str | None = Field(default=None, description="URI SAN a client certificate may have.")
    log_severity_screen: Literal["Debug", "Info", "Warning", "Error"] = Field(
        default="Info", description="Lowest severity logged to stderr."
    )

    _files = field_validator("ca_file", "server_cert_file", "server_key_file")(_readable)

    @model_validator(mode="after")
    def _tls(self) -> TyphaSettings:
        files = {"ca_file": self.ca_file, "server_cert_file": self.server_cert_file}
        files["server_key_file"] = self.server_key_file
        _mutual_tls(files, (self.client_cn, self.client_uri_san), "client_cn or client_uri_san", "clients")
        return self

    @property
    def tls(self) -> bool:
        return self.ca_file is not None

    @property
    def binds_every_address(self) -> bool:
        return self.server_host in ("0.0.0.0", "")

    @property
    def local_host(self) -> str:
        """Where this host reaches the client server: its bound address, loopback for a wildcard."""
        return "127.0.0.1" if self.binds_every_address else self.server_host


class TyphaClientSettings(Settings):
    """How felix and felid-bgp reach typha; with no address and no discovery they read etcd."""

    ENV_PREFIX: ClassVar[str] = "FELID_"

    typha_addrs: tuple[str, ...] = Field(
        default=(), description="typha addresses (host:port), comma-separated; one is picked at random."
    )
    typha_discovery: bool = Field(
        default=False, description="Find the typhas from their registrations in etcd."
    )
    typha_ca_file: Path | None = Field(
        default=None, description="CA (PEM) typha's certificate must chain to."
    )
    typha_cert_file: Path | None = Field(
        default=None, description="This client's certificate (PEM) for typha."
    )
    typha_key_file: Path | None = Field(default=None, description="The key of that certificate (PEM).")
    typha_cn: str | None = Field(default=None, description="Common name typha's certificate must have.")
    typha_uri_san: str | None = Field(default=None, description="URI SAN typha's certificate must have.")
    typha_connect_timeout: float = Field(
        default=10.0, gt=0, description="Seconds to connect and be greeted before trying another typha."
    )

    _files = field_validator("typha_ca_file", "typha_cert_file", "typha_key_file")(_readable)

    @field_validator("typha_addrs")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            host, sep, port = address.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{address!r} is not host:port")
        return value

    @model_validator(mode="after")
    def _tls(self) -> TyphaClientSettings:
        files = {"typha_ca_file": self.typha_ca_file, "typha_cert_file": self.typha_cert_file}
        files["typha_key_file"] = self.typha_key_file
        _mutual_tls(files, (self.typha_cn, self.typha_uri_san), "typha_cn or typha_uri_san", "typhas")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.typha_addrs) or self.typha_discovery

    @property
    def tls(self) -> bool:
        return self.typha_ca_file is not None
