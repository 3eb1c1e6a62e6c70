"""felid-node's side of the CNI fast path (``felid.cni.fastpath``): a unix socket that runs the
plugins' ADD, DEL and CHECK with everything they need already imported and connected.

Each request is one JSON line, ``{"plugin", "environ", "stdin"}``, answered with ``{"rc",
"stdout"}`` exactly as the plugin run as its own process would have exited and printed: the same
``felid.cni.protocol.run`` turns every failure into the spec's error JSON, so results, errors,
codes and rollback are those of the plugin itself. Requests run in threads, so pods starting at
once are served at once (the allocator's compare-and-swap writes make concurrent ADDs safe, as
between processes). The etcd client is kept per datastore configuration, warm.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path

from datastore.config import DatastoreConfig
from datastore.etcd import EtcdKV
from datastore.kv import KVStore
from felid.cni import ipam_plugin, workload_plugin
from felid.cni.protocol import INTERNAL_ERROR, LATEST, Plugin, run

log = logging.getLogger(__name__)

MAX_REQUEST = 4 * 1024 * 1024  # an environment and a network config; far below this


class WarmClients:
    """One etcd client per datastore configuration, shared by every request that names it."""

    def __init__(self) -> None:
        self._clients: dict[DatastoreConfig, EtcdKV] = {}
        self._lock = threading.Lock()

    def __call__(self, config: DatastoreConfig) -> KVStore:
        with self._lock:
            client = self._clients.get(config)
            if client is None:
                client = self._clients[config] = EtcdKV(config)
            return client

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


class CNIServer:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.clients = WarmClients()
        self.plugins: Mapping[str, Plugin] = {
            "felid": workload_plugin.plugin(self.clients),
            "felid-ipam": ipam_plugin.plugin(self.clients),
        }
        self._server: asyncio.Server | None = None
        self.served = 0  # requests answered (felid-node's /status shows it)

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a previous felid-node's
        # Only root may ask: a request carries an environment and creates interfaces.
        old = os.umask(0o077)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_REQUEST
            )
        finally:
            os.umask(old)
        log.info("CNI fast path on %s", self.path)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.clients.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                raw = await reader.readline()  # one JSON line
            except ValueError:  # longer than MAX_REQUEST
                raw = b""
            reply = await asyncio.to_thread(self.answer, raw)
            writer.write(json.dumps(reply).encode())
            await writer.drain()
            self.served += "rc" in reply
        except (ConnectionError, OSError) as exc:
            log.warning("CNI request lost: %s", exc)
        finally:
            writer.close()

    def answer(self, raw: bytes) -> dict[str, object]:
        """``{"rc", "stdout"}`` for one request, as the plugin's own process would give them; or
        ``{"fallback": why}`` when the pod's network namespace is not visible from here (felid-node
        in a container without the runtime's netns directory): the plugin then runs it itself."""
        try:
            request = json.loads(raw)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            request = {}
        name = request.get("plugin")
        plugin = self.plugins.get(name) if isinstance(name, str) else None
        environ, stdin = request.get("environ"), request.get("stdin")
        if plugin is None or not isinstance(environ, dict) or not isinstance(stdin, str):
            # Not what felid's own plugins send: a bug, or something else on the socket.
            error = {"cniVersion": LATEST, "code": INTERNAL_ERROR, "msg": "malformed CNI request"}
            return {"rc": 1, "stdout": json.dumps(error) + "\n"}
        netns = environ.get("CNI_NETNS")
        needs_netns = environ.get("CNI_COMMAND") in ("ADD", "CHECK")  # DEL works without it
        if needs_netns and isinstance(netns, str) and netns and not os.path.exists(netns):
            return {"fallback": f"{netns} is not visible to felid-node"}
        out = io.StringIO()
        rc = run(
            plugin, environ={str(k): str(v) for k, v in environ.items()}, stdin=io.StringIO(stdin), stdout=out
        )
        return {"rc": rc, "stdout": out.getvalue()}
