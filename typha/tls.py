"""Mutual TLS between typha and its clients: each side checks the chain to its CA and then the
other's identity, a common name or a URI SAN (Calico's TyphaCN / TyphaURISAN model)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any


def server_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.load_verify_locations(cafile=ca)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.load_verify_locations(cafile=ca)
    # The chain is verified; the name is checked against typha_cn / typha_uri_san, not the address.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def probe_context(cert: Path, key: Path) -> ssl.SSLContext:
    """typha's readiness probe to its own port on loopback: it shows typha's own certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_cert_chain(cert, key)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def der_of(cert: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.read_text())


def identity(peercert: dict[str, Any] | None) -> tuple[str | None, tuple[str, ...]]:
    """The common name and the URI SANs of a verified peer certificate."""
    if not peercert:
        return None, ()
    cn = next(
        (value for rdn in peercert.get("subject", ()) for key, value in rdn if key == "commonName"), None
    )
    uris = tuple(value for kind, value in peercert.get("subjectAltName", ()) if kind == "URI")
    return cn, uris


def refusal(peercert: dict[str, Any] | None, cn: str | None, uri_san: str | None) -> str | None:
    """Why this peer is not the one allowed (None: it is): it must match ``cn`` or ``uri_san``."""
    have_cn, have_uris = identity(peercert)
    if cn is not None and have_cn == cn:
        return None
    if uri_san is not None and uri_san in have_uris:
        return None
    wanted = " or ".join(w for w in (cn and f"CN {cn!r}", uri_san and f"URI SAN {uri_san!r}") if w)
    return f"certificate has CN {have_cn!r} and URI SANs {list(have_uris)}, wanted {wanted}"
