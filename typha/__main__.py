"""``felid-typha`` / ``python -m typha``: one Syncer on etcd, fanned out to felix and felid-bgp.

Settings come from flags, ``TYPHA_*`` and the datastore's ``FELID_ETCD_*``.  SIGTERM sheds the
clients over the shutdown grace period, withdraws the registration and exits 0; any task
failing ends the process (exit 1) for its supervisor to restart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import ssl
import sys
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from datastore.config import DatastoreConfig
from datastore.daemon import until_signalled
from datastore.errors import DatastoreError, InvalidName, ValidationFailed
from datastore.etcd import EtcdKV
from datastore.health import TEXT, Handler, Response, health_handlers, serve_http
from datastore.keys import KeyLayout, SyncerType
from datastore.models.base import valid_name
from datastore.settings import add_flags, resolve, unknown_variables
from datastore.syncer import Syncer
from datastore.version import VERSION
from typha import protocol, tls
from typha.config import TyphaSettings
from typha.registry import Registrar
from typha.server import TyphaServer
from typha.streams import read_frame

log = logging.getLogger("typha")

PROBE_TIMEOUT = 2.0


def advertised(settings: TyphaSettings, datastore: DatastoreConfig) -> str:
    """The address clients are told: the configured one, the bound one, or the one etcd is reached from."""
    if settings.advertise_address:
        return settings.advertise_address
    if not settings.binds_every_address:
        return settings.server_host
    target = urlsplit(datastore.etcd_endpoints[0])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((target.hostname or "127.0.0.1", target.port or 2379))
        return str(probe.getsockname()[0])


class Typha:
    def __init__(self, settings: TyphaSettings, datastore: DatastoreConfig, name: str) -> None:
        self.settings = settings
        self.datastore = datastore
        self.layout = KeyLayout(datastore.etcd_prefix)
        context = None
        if settings.tls:
            assert settings.ca_file and settings.server_cert_file and settings.server_key_file
            context = tls.server_context(
                settings.ca_file, settings.server_cert_file, settings.server_key_file
            )
        self.server = TyphaServer(settings, self.layout, name, VERSION, ssl_context=context)
        self.probe_ssl: ssl.SSLContext | None = None  # the readiness probe's, made once
        if settings.tls:
            assert settings.server_cert_file and settings.server_key_file
            self.server.own_certificate = tls.der_of(settings.server_cert_file)
            self.probe_ssl = tls.probe_context(settings.server_cert_file, settings.server_key_file)
        self.address = advertised(settings, datastore)

    async def run(self) -> None:
        kv = EtcdKV(self.datastore)
        registrar = Registrar(kv, self.layout, self.settings.registration_ttl)
        syncer = Syncer(kv, self.server.feed.prefixes())
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.server.feed.pump(syncer), name="syncer")
                for syncer_type in SyncerType:  # waiting before any client can be caught up
                    tasks.create_task(self.server.fan_out(syncer_type), name=f"fan-out {syncer_type}")
                await self.server.start()
                tasks.create_task(self.server.accept(), name="accept")
                await serve_http(self.settings.health_host, self.settings.health_port, self._health())
                if self.settings.prometheus_metrics_enabled:
                    await serve_http(
                        self.settings.prometheus_metrics_host,
                        self.settings.prometheus_metrics_port,
                        {"/metrics": self._metrics},
                    )
                log.info("serving on %s:%d as %s", self.address, self.server.port, self.server.name)
                tasks.create_task(self.server.watchdog(), name="watchdog")
                tasks.create_task(self._register(registrar), name="registration")
                tasks.create_task(self._rebalance(), name="rebalance")
        except asyncio.CancelledError:
            await self._stop(registrar)
            raise
        finally:
            kv.close()

    async def _stop(self, registrar: Registrar) -> None:
        try:
            await asyncio.to_thread(registrar.withdraw)
        except DatastoreError as exc:
            log.warning("cannot withdraw the registration (its lease will expire): %s", exc)
        await self.server.shutdown()

    async def _register(self, registrar: Registrar) -> None:
        await self.server.feed.in_sync.wait()
        interval = min(self.settings.registration_ttl / 3, self.settings.shed_interval)
        while True:
            try:
                await asyncio.to_thread(registrar.write, self.server.registration(self.address))
                await asyncio.to_thread(registrar.keep_alive)
            except DatastoreError as exc:
                log.warning("cannot refresh the registration: %s", exc)
            await asyncio.sleep(interval)

    async def _rebalance(self) -> None:
        await self.server.feed.in_sync.wait()
        while True:
            await asyncio.sleep(self.settings.shed_interval)
            self.server.rebalance()

    def _health(self) -> dict[str, Handler]:
        return {**health_handlers(lambda: True), "/readiness": self._readiness}

    async def _readiness(self) -> Response:
        """Ready only when a client would be served: in sync, and a connection to the client port
        is accepted and answered (a probe frame), not merely listened for."""
        if not self.server.ready():
            return 503, TEXT, b"not ready: not in sync, shutting down or full\n"
        host = self.settings.local_host
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                reader, writer = await asyncio.open_connection(host, self.server.port, ssl=self.probe_ssl)
            try:
                writer.write(protocol.ping(0.0))
                async with asyncio.timeout(PROBE_TIMEOUT):
                    kind, _ = await read_frame(reader)
            finally:
                writer.close()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, protocol.ProtocolError) as exc:
            return 503, TEXT, f"not ready: the client port does not answer ({exc})\n".encode()
        if kind != protocol.Kind.PONG:
            return 503, TEXT, b"not ready: the client port answered wrongly\n"
        return 200, TEXT, b"ready\n"

    def _metrics(self) -> Response:
        return 200, CONTENT_TYPE_LATEST, generate_latest(self.server.metrics.registry)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="felid-typha", description="felid's datastore fan-out (typha)")
    parser.add_argument("--check-config", action="store_true", help="validate the settings and exit")
    add_flags(parser, TyphaSettings)
    args = parser.parse_args(argv)
    environ = dict(os.environ)
    try:
        flags = {name: getattr(args, name) for name in TyphaSettings.model_fields}
        settings = resolve(TyphaSettings, flags=flags, environ=environ)
        datastore = resolve(DatastoreConfig, environ=environ)
        name = valid_name(settings.name or socket.gethostname().lower(), "TYPHA_NAME")
    except (ValidationFailed, InvalidName) as exc:
        print(f"felid-typha: invalid setting: {exc}", file=sys.stderr)
        return 1
    unknown = unknown_variables(environ, (TyphaSettings, DatastoreConfig))
    if unknown:
        print(f"felid-typha: no such setting: {', '.join(unknown)}", file=sys.stderr)
        if args.check_config:
            return 1
    if args.check_config:
        print(json.dumps({**settings.model_dump(mode="json"), "name": name}, indent=2))
        print("felid-typha: configuration is valid")
        return 0
    logging.basicConfig(
        level=getattr(logging, settings.log_severity_screen.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    typha = Typha(settings, datastore, name)
    return asyncio.run(until_signalled(typha.run, log))


if __name__ == "__main__":
    sys.exit(main())
