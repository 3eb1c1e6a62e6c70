"""The CNI plugins' fast path: hand the invocation to the local felid-node over a unix socket.

A runtime starts a plugin for every pod; importing the datastore client, pydantic and pyroute2
costs a fresh Python process far more than the work. felid-node holds them warm
(``felid.node.cni_server``): the plugin sends its environment and its stdin as one JSON line and
prints what comes back, importing nothing but the standard library. When no felid-node answers
(the socket is missing or refuses), the plugin does the work itself, as before.

Imports here are the standard library's C modules only: this module is what a plugin loads first,
for every pod. ``socket`` and ``json`` are the C modules ``_socket`` and ``_json`` under a few lines
of Python: the Python wrappers' imports (``enum``, ``selectors``, ``re``) cost a plugin about 11 ms
of its start here, more than felid-node's answer to a cached request.
"""

from __future__ import annotations

import _json
import _socket
import io
import os
import sys

TYPE_CHECKING = False  # typing's own constant costs an import (collections, ~3 ms)
if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_SOCKET = "/run/felid/cni.sock"  # NodeSettings.cni_socket's default
SOCKET_KEY = "cni_socket"  # the network config's key naming another
MAX_REPLY = 16 * 1024 * 1024
TIMEOUT = 600.0  # the runtime has its own bound; this one only keeps a hung felid-node from hanging us
TRY_AGAIN_LATER = 11  # the CNI spec's code (felid.cni.protocol.TRY_AGAIN_LATER)


class _Decoding:
    """What ``_json.make_scanner`` reads from ``json.JSONDecoder``: its defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> float:
        return float(name.lower())  # NaN, Infinity, -Infinity, as json.loads reads them


_scan = _json.make_scanner(_Decoding())  # type: ignore[arg-type]  # typeshed wants a scanner, the C code reads attributes
_WHITESPACE = " \t\n\r"  # JSON's


def loads(text: str | bytes) -> object:
    """``json.loads`` for a document that is one value (ValueError otherwise), by the same C
    scanner."""
    if isinstance(text, bytes):
        text = text.decode()
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration:
        raise ValueError("no JSON value") from None
    if text[end:].strip(_WHITESPACE):
        raise ValueError("text after the JSON value")
    return value


def dumps(value: object) -> str:
    """``json.dumps`` of text, and of mappings and lists of text (all a request and an error are)."""
    if isinstance(value, str):
        return str(_json.encode_basestring_ascii(value))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{dumps(str(k))}: {dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(dumps(v) for v in value) + "]"
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, int):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def socket_path(stdin: str) -> str:
    """The network config's ``cni_socket``, else the default (an unreadable config: the default,
    and the plugin's own parsing reports the config)."""
    try:
        config = loads(stdin)
    except ValueError:
        return DEFAULT_SOCKET
    named = config.get(SOCKET_KEY) if isinstance(config, dict) else None
    return named if isinstance(named, str) and named else DEFAULT_SOCKET


def request(plugin: str, environ: Mapping[str, str], stdin: str) -> bytes:
    return dumps({"plugin": plugin, "environ": dict(environ), "stdin": stdin}).encode() + b"\n"


def delegate(plugin: str, environ: Mapping[str, str], stdin: str) -> tuple[int, str] | None:
    """(exit code, stdout) as felid-node ran the plugin; None when no felid-node answers, so the
    caller runs it itself. A felid-node that took the request and went away before answering is
    the spec's "try again later", not a second run here (the first may have done part of it)."""
    connection = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    connection.settimeout(TIMEOUT)
    try:
        try:
            connection.connect(socket_path(stdin))
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError, PermissionError):
            return None
        connection.sendall(request(plugin, environ, stdin))
        connection.shutdown(_socket.SHUT_WR)
        reply = b""
        while chunk := connection.recv(65536):
            reply += chunk
            if len(reply) > MAX_REPLY:
                break
        answer = loads(reply)
        if not isinstance(answer, dict):
            raise ValueError("the answer is not a JSON object")
        if "fallback" in answer:
            return None  # felid-node cannot see the pod's namespace: do it here
        return int(answer["rc"]), str(answer["stdout"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        version = _version(stdin)
        error = {"cniVersion": version, "code": TRY_AGAIN_LATER, "msg": "felid-node did not answer"}
        error["details"] = f"{type(exc).__name__}: {exc}"
        return 1, dumps(error) + "\n"
    finally:
        connection.close()


def _version(stdin: str) -> str:
    try:
        config = loads(stdin)
    except ValueError:
        config = None
    version = config.get("cniVersion") if isinstance(config, dict) else None
    return version if isinstance(version, str) else "1.0.0"


def through_felid_node(plugin: str) -> int | None:
    """Run ``plugin`` through felid-node: its exit code, or None to run it here (VERSION needs no
    felid-node: it is answered locally too)."""
    if os.environ.get("CNI_COMMAND") in (None, "VERSION"):
        return None
    stdin = sys.stdin.read()
    answered = delegate(plugin, os.environ, stdin)
    if answered is None:
        sys.stdin = io.StringIO(stdin)  # the local run reads it again
        return None
    code, out = answered
    sys.stdout.write(out)
    sys.stdout.flush()
    return code


def ipam() -> int:
    """The ``felid-ipam`` plugin."""
    code = through_felid_node("felid-ipam")
    if code is not None:
        return code
    from felid.cni.ipam_plugin import main as local

    return local()


if __name__ == "__main__":  # the bundle's felid-ipam launcher: python -m felid.cni.fastpath
    sys.exit(ipam())
