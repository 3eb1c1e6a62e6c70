"""``felid-node``: as calico-node, one per host.

Detects the node's address, registers the Node (creating the default IPPool
and marking the datastore ready if nobody has), allocates its tunnel
addresses, then supervises felix (which writes ``/var/lib/felid/mtu``) and
(with the bgp backend) felid-bgp, keeps ``/run/felid/subnet.env`` in step
with felix's MTU, and answers
``/liveness``, ``/readiness`` (felix synced and every BGP session established)
and ``/status`` on its health port.  SIGTERM stops the children and leaves the
dataplane as it is.  ``--check-config`` validates the settings and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bgp.config import BGPSettings
from datastore.config import DatastoreConfig, read_config_file
from datastore.errors import DatastoreError, InvalidName, Unavailable, ValidationFailed
from datastore.etcd import EtcdKV
from datastore.health import Response, get_local, health_handlers, serve_http
from datastore.keys import KeyLayout
from datastore.settings import add_flags, node_name, resolve, unknown_variables
from datastore.store import ResourceStore
from felid.node import startup
from felid.node.autodetect import NoAddress, detect, with_prefix
from felid.node.cni_server import CNIServer
from felid.node.config import NodeSettings
from felid.node.metrics import MetricsServer
from felid.node.startup import HostFiles
from felid.node.supervisor import Child
from felix.config import FelixSettings, SettingsSources
from felix.dataplane.hostfile import read_int
from felix.dataplane.netlink import Netlink
from typha.config import TyphaClientSettings

log = logging.getLogger("felid-node")
BIN = Path(sys.executable).parent
PROBE_INTERVAL = 0.5  # after a child's (re)start, until felix and felid-bgp are ready
PROBE_INTERVAL_READY = 5.0  # then: 4 HTTP requests a second cost 0.4 % of a core idle (bench/idle.py)
PROBE_FAST_FOR = 60.0  # a node not ready this long after a start (a peer down) is probed slowly too


@dataclass
class Health:
    """What felid-node last saw of its children (refreshed in the background)."""

    felix_ready: bool = False
    bgp_ready: bool | None = None  # None: no bgp backend
    probe_started: float = 0.0  # monotonic: answers older than a child's start say nothing of it


def _ready(port: int) -> bool:
    answer = get_local(port, "/readiness", timeout=1)
    return answer is not None and answer[0] == 200


@dataclass
class FelidNode:
    name: str
    settings: NodeSettings
    datastore: DatastoreConfig
    environ: Mapping[str, str]
    health: Health = field(default_factory=Health)
    children: list[Child] = field(default_factory=list)
    address: str | None = None
    files: HostFiles | None = None
    files_mtu: int | None = None  # the MTU subnet.env was last written with
    cni: CNIServer | None = None  # the CNI fast path, while served

    async def run(self) -> None:
        netlink = Netlink()
        try:
            self.address = await self._address(netlink)
            log.info("node %s has address %s", self.name, self.address)
        finally:
            netlink.close()
        await asyncio.to_thread(self._register)
        cni = self.cni = CNIServer(self.settings.cni_socket) if self.settings.cni_socket else None
        if cni is not None:
            await cni.start()
        self.children = self._children()
        if self.settings.networking_backend != "bgp":
            self.health.bgp_ready = None
        server = await serve_http(self.settings.health_host, self.settings.health_port, self._handlers())
        metrics = await self._serve_metrics()
        try:
            async with asyncio.TaskGroup() as tasks:
                for child in self.children:
                    tasks.create_task(child.supervise(), name=child.name)
                tasks.create_task(self._probe_children(), name="probe")
        finally:
            server.close()
            if metrics is not None:
                metrics.close()
            if cni is not None:
                cni.close()

    async def _serve_metrics(self) -> MetricsServer | None:
        if not self.settings.metrics_port:
            return None
        served = MetricsServer(EtcdKV(self.datastore), KeyLayout(self.datastore.etcd_prefix), self.name)
        await served.start(self.settings.metrics_host, self.settings.metrics_port)
        return served

    async def stop(self) -> None:
        await asyncio.gather(*(child.stop() for child in self.children))

    async def _address(self, netlink: Netlink) -> str:
        if self.settings.ip != "autodetect":
            return await with_prefix(self.settings.ip, netlink)
        return await detect(self.settings.ip_autodetection_method, netlink)

    def _register(self) -> None:
        assert self.address is not None
        delay = 0.5
        while True:
            kv = EtcdKV(self.datastore)
            try:
                store = ResourceStore(kv, KeyLayout(self.datastore.etcd_prefix))
                startup.ensure_default_pool(store, self.settings)
                startup.ensure_default_profile(store)
                startup.mark_datastore_ready(store)
                startup.register_node(store, kv, self.name, self.address, self.settings)
                self.files = startup.host_files(store, kv, self.name)
                return
            except Unavailable as exc:
                log.warning("datastore unavailable, retrying in %.1fs: %s", delay, exc)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
            finally:
                kv.close()

    def _children(self) -> list[Child]:
        base = {
            **self.environ,
            "FELID_NODENAME": self.name,
            "FELIX_HEALTHPORT": str(self.settings.felix_health_port),
            "FELIX_MTUFILE": str(self.mtu_file),
        }
        children = [Child("felix", [str(BIN / "felid-felix")], base)]
        if self.settings.networking_backend == "bgp":
            env = {"FELID_BGP_RUN_DIR": str(self.settings.run_dir / "bgp"), **base}
            children.append(Child("bgp", [str(BIN / "felid-bgp")], env))
        return children

    async def _probe_children(self) -> None:
        bgp_port = resolve(BGPSettings, environ=self.environ).metrics_port
        bgp = self.settings.networking_backend == "bgp"
        while True:
            started = time.monotonic()
            felix = await asyncio.to_thread(_ready, self.settings.felix_health_port)
            ready = await asyncio.to_thread(_ready, bgp_port) if bgp else None
            self.health = Health(felix, ready, started)
            self._refresh_subnet_env()
            await asyncio.sleep(PROBE_INTERVAL)
            steady = time.monotonic() + PROBE_INTERVAL_READY
            while self._steady() and time.monotonic() < steady:  # a child's exit ends the wait
                await asyncio.sleep(PROBE_INTERVAL)

    def _steady(self) -> bool:
        """Whether the children can be probed slowly: all ready, or none started recently (a BGP
        peer that stays down keeps a node unready, and that is no reason to poll fast for ever)."""
        if any(c.pid is None for c in self.children):
            return False
        started = max((c.started_at for c in self.children), default=0.0)
        return self.ready() or time.monotonic() - started > PROBE_FAST_FOR

    @property
    def mtu_file(self) -> Path:
        return self.settings.var_dir / "mtu"

    def _refresh_subnet_env(self) -> None:
        """subnet.env carries the MTU felix wrote: (re)written when that appears or changes."""
        mtu = read_int(self.mtu_file)
        if self.files is None or mtu is None or mtu == self.files_mtu:
            return
        try:
            self.files.write(self.settings.run_dir, mtu)
            self.files_mtu = mtu
        except OSError as exc:
            log.error("cannot write subnet.env in %s (retrying): %s", self.settings.run_dir, exc)

    def ready(self) -> bool:
        """Every child running, and ready by a probe made since it (last) started."""
        if any(c.pid is None or c.started_at > self.health.probe_started for c in self.children):
            return False
        return self.health.felix_ready and self.health.bgp_ready is not False

    def status(self) -> dict[str, Any]:
        children = {
            c.name: {
                "running": c.pid is not None,
                "pid": c.pid,
                "restarts": c.restarts,
                "lastExit": c.last_exit,
            }
            for c in self.children
        }
        children["felix"]["ready"] = self.health.felix_ready
        if "bgp" in children:
            children["bgp"]["ready"] = bool(self.health.bgp_ready)
        served = {"socket": str(self.cni.path), "served": self.cni.served} if self.cni else None
        return {
            "node": self.name,
            "address": self.address,
            "ready": self.ready(),
            "children": children,
            "cni": served,
        }

    def _handlers(self) -> dict[str, Any]:
        def status() -> Response:
            return 200, "application/json", json.dumps(self.status()).encode()

        return {**health_handlers(self.ready), "/status": status}


# Every setting felid-node's environment carries, for it or for the children that inherit it.
CHILD_SETTINGS = (NodeSettings, DatastoreConfig, TyphaClientSettings, FelixSettings, BGPSettings)


def _settings(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[NodeSettings, DatastoreConfig]:
    flags = {name: getattr(args, name) for name in NodeSettings.model_fields}
    return resolve(NodeSettings, flags=flags, environ=environ), resolve(DatastoreConfig, environ=environ)


async def _serve(node: FelidNode) -> None:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, main.cancel)
    try:
        await node.run()
    except asyncio.CancelledError:
        log.info("stopping felix and bgp; the dataplane stays as it is")
    finally:
        await node.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="felid-node", description=__doc__)
    parser.add_argument("--check-config", action="store_true", help="validate the settings and exit")
    add_flags(parser, NodeSettings)
    args = parser.parse_args(argv)
    environ = dict(os.environ)
    try:
        settings, datastore = _settings(args, environ)
        # felix and felid-bgp read typha's settings from the environment they inherit: checked here
        # once, so a bad value stops felid-node with its name instead of restarting children for ever.
        typha = resolve(TyphaClientSettings, environ=environ)
        # felix's and felid-bgp's too: they inherit this environment.
        felix_path = environ.get("FELIX_CONFIGFILE")
        SettingsSources(environ, read_config_file(felix_path) if felix_path else {}).local()
        resolve(BGPSettings, environ=environ)
        source = "--nodename" if args.nodename else NodeSettings.env_name("nodename")
        name = node_name(settings.nodename, source)
    except (ValidationFailed, InvalidName) as exc:
        print(f"felid-node: invalid setting: {exc}", file=sys.stderr)
        return 1
    unknown = unknown_variables(environ, CHILD_SETTINGS, also=("FELIX_CONFIGFILE", "FELID_CONFIG"))
    if unknown and args.check_config:
        print(f"felid-node: no such setting: {', '.join(unknown)}", file=sys.stderr)
        return 1
    if unknown:
        print(f"felid-node: ignoring unknown setting(s) {', '.join(unknown)}", file=sys.stderr)
    if args.check_config:
        shown = settings.model_dump(mode="json") | {
            "nodename": name,
            "etcd_endpoints": datastore.etcd_endpoints,
            "typha": typha.model_dump(mode="json"),
        }
        print(json.dumps(shown, indent=2))
        print("felid-node: configuration is valid")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pyroute2").setLevel(logging.WARNING)
    node = FelidNode(name, settings, datastore, environ)
    try:
        asyncio.run(_serve(node))
    except NoAddress as exc:
        print(f"felid-node: cannot find this node's address: {exc}", file=sys.stderr)
        return 1
    except DatastoreError as exc:
        print(f"felid-node: datastore: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
