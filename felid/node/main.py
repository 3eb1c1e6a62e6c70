"""``felid-node``: as calico-node, one per host.

Detects the node's address, registers the Node (creating the default IPPool
and marking the datastore ready if nobody has), allocates its tunnel
addresses, then runs felix (which writes ``/var/lib/felid/mtu``) and (with the
bgp backend) the bgp agent in this process, each rebuilt when it fails
(``felid.node.supervisor`` says why one process), keeps
``/run/felid/subnet.env`` in step with felix's MTU, and answers
``/liveness``, ``/readiness`` (felix synced and every BGP session established)
and ``/status`` on its health port.  SIGTERM stops the agents and leaves the
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
from bgp.launch import agent_from
from bgp.launch import log_level as bgp_log_level
from datastore.config import DatastoreConfig
from datastore.errors import DatastoreError, InvalidName, Unavailable, ValidationFailed
from datastore.etcd import EtcdKV
from datastore.health import Response, health_handlers, serve_http
from datastore.keys import KeyLayout
from datastore.settings import add_flags, node_name, resolve, unknown_variables
from datastore.store import ResourceStore
from felid.node import startup
from felid.node.autodetect import NoAddress, detect, with_prefix
from felid.node.cni_server import CNIServer
from felid.node.config import NodeSettings
from felid.node.metrics import MetricsServer
from felid.node.startup import HostFiles
from felid.node.supervisor import Agent, AgentTask
from felix.agent import ConfigurationChanged
from felix.config import FelixSettings
from felix.dataplane.hostfile import read_int
from felix.dataplane.netlink import Netlink
from felix.launch import felix_from
from felix.launch import log_level as felix_log_level
from typha.config import TyphaClientSettings

log = logging.getLogger("felid-node")
HOST_FILES_INTERVAL = 1.0  # how often felix's MTU file is read for subnet.env (a stat and a read)


@dataclass
class FelidNode:
    name: str
    settings: NodeSettings
    datastore: DatastoreConfig
    environ: Mapping[str, str]
    agents: list[AgentTask] = field(default_factory=list)
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
        self.agents = self._agents()
        server = await serve_http(self.settings.health_host, self.settings.health_port, self._handlers())
        metrics = await self._serve_metrics()
        try:
            async with asyncio.TaskGroup() as tasks:
                for agent in self.agents:
                    tasks.create_task(agent.supervise(), name=agent.name)
                tasks.create_task(self._keep_host_files(), name="host-files")
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

    def agent_environment(self) -> dict[str, str]:
        """What felix and the bgp agent are configured from: felid-node's environment, this node's
        name, and the places felid-node's settings give them."""
        return {
            **self.environ,
            "FELID_NODENAME": self.name,
            "FELIX_HEALTHPORT": str(self.settings.felix_health_port),
            "FELIX_MTUFILE": str(self.mtu_file),
            "FELID_BGP_RUN_DIR": self.environ.get("FELID_BGP_RUN_DIR", str(self.settings.run_dir / "bgp")),
        }

    def _agents(self) -> list[AgentTask]:
        environ = self.agent_environment()

        def felix() -> Agent:
            built = felix_from(environ)
            logging.getLogger("felix").setLevel(felix_log_level(built))
            return built

        def bgp() -> Agent:
            built = agent_from(environ)
            logging.getLogger("bgp").setLevel(bgp_log_level(built))
            return built

        agents = [AgentTask("felix", felix, rebuild_at_once=(ConfigurationChanged,))]
        if self.settings.networking_backend == "bgp":
            agents.append(AgentTask("bgp", bgp))
        return agents

    async def _keep_host_files(self) -> None:
        while True:
            self._refresh_subnet_env()
            await asyncio.sleep(HOST_FILES_INTERVAL)

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
        """felix has applied its first sync and (with bgp) every BGP session is established."""
        return bool(self.agents) and all(agent.ready() for agent in self.agents)

    def status(self) -> dict[str, Any]:
        served = {"socket": str(self.cni.path), "served": self.cni.served} if self.cni else None
        return {
            "node": self.name,
            "pid": os.getpid(),
            "address": self.address,
            "ready": self.ready(),
            "agents": {agent.name: agent.status() for agent in self.agents},
            "cni": served,
        }

    def _handlers(self) -> dict[str, Any]:
        def status() -> Response:
            return 200, "application/json", json.dumps(self.status()).encode()

        return {**health_handlers(self.ready), "/status": status}


# Every setting felid-node's environment carries, for it or for the agents it runs.
AGENT_SETTINGS = (NodeSettings, DatastoreConfig, TyphaClientSettings, FelixSettings, BGPSettings)


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
        log.info("stopped felix and bgp; the dataplane stays as it is")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="felid-node", description=__doc__)
    parser.add_argument("--check-config", action="store_true", help="validate the settings and exit")
    add_flags(parser, NodeSettings)
    args = parser.parse_args(argv)
    environ = dict(os.environ)
    try:
        settings, datastore = _settings(args, environ)
        # felix and the bgp agent read typha's settings from the environment they are built from:
        # checked here once, so a bad value stops felid-node with its name instead of failing agents.
        typha = resolve(TyphaClientSettings, environ=environ)
        source = "--nodename" if args.nodename else NodeSettings.env_name("nodename")
        name = node_name(settings.nodename, source)
        # felix's and the bgp agent's own settings too (building one opens nothing).
        node = FelidNode(name, settings, datastore, environ)
        felix_from(node.agent_environment())
        agent_from(node.agent_environment())
    except (ValidationFailed, InvalidName) as exc:
        print(f"felid-node: invalid setting: {exc}", file=sys.stderr)
        return 1
    unknown = unknown_variables(environ, AGENT_SETTINGS, also=("FELIX_CONFIGFILE", "FELID_CONFIG"))
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
