"""Certificates for mutual-TLS tests, made with the openssl command line."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from lab.etcd import TLSFiles


@dataclass(frozen=True)
class PKI:
    server: TLSFiles
    client_cert: Path
    client_key: Path
    # A client certificate from a CA etcd does not trust.
    rogue_cert: Path
    rogue_key: Path
    # From the trusted CA, but with a name (CN "stranger") nobody allows.
    stranger_cert: Path
    stranger_key: Path


def _run(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


# A fresh P-256 key for each certificate.
_NEW_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
    _run(
        "req",
        "-x509",
        *_NEW_KEY,
        "-keyout",
        str(key),
        "-out",
        str(cert),
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
    )
    return cert, key


def _leaf(directory: Path, name: str, ca: tuple[Path, Path], server: bool) -> tuple[Path, Path]:
    cert, key, csr = directory / f"{name}.pem", directory / f"{name}-key.pem", directory / f"{name}.csr"
    ext = directory / f"{name}.ext"
    usage = "serverAuth,clientAuth" if server else "clientAuth"
    ext.write_text(f"subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n")
    _run("req", *_NEW_KEY, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
    ca_args = ("-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial")
    _run("x509", "-req", "-in", str(csr), *ca_args, "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return cert, key


def make_pki(directory: Path) -> PKI:
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca(directory, "ca")
    server_cert, server_key = _leaf(directory, "server", ca, server=True)
    client_cert, client_key = _leaf(directory, "client", ca, server=False)
    rogue_ca = _ca(directory, "rogue-ca")
    rogue_cert, rogue_key = _leaf(directory, "rogue", rogue_ca, server=False)
    stranger_cert, stranger_key = _leaf(directory, "stranger", ca, server=True)
    return PKI(
        TLSFiles(ca[0], server_cert, server_key),
        client_cert,
        client_key,
        rogue_cert,
        rogue_key,
        stranger_cert,
        stranger_key,
    )
