"""The felix agent: Syncer -> ClusterState -> desired state -> Dataplane.apply().

Long-lived tasks run in one TaskGroup: the first one to fail ends the process,
and its supervisor (felid-node, systemd) restarts it; a restart reconciles from
the kernel and the datastore, with no memory needed.  A datastore outage is not
a failure: the Syncer keeps retrying and the dataplane stays as it is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from datastore.config import DatastoreConfig
from datastore.etcd import EtcdKV
from datastore.health import Response, serve_health, serve_http
from datastore.keys import KeyLayout, SyncerType
from datastore.models import FelixConfiguration
from datastore.syncer import ChangedKeys, follow
from felix.calc.calculator import PolicyCalculator
from felix.calc.cluster import ClusterState, desired, desired_policy, needs_host_addresses
from felix.calc.dispatch import PolicyOptions
from felix.calc.host import HostFacts, Interface, host_mtu
from felix.config import FelixSettings, SettingsSources
from felix.dataplane.driver import Dataplane
from felix.dataplane.hostfile import MTUFile
from felix.dataplane.iptables import COMMANDS
from felix.dataplane.netlink import KernelError, Netlink
from felix.dataplane.policy import PolicyCommandFailed, PolicyTables
from felix.metrics import FelixMetrics
from typha.client import update_source
from typha.config import TyphaClientSettings

log = logging.getLogger("felix")

RETRY_FAILED_APPLY = 1.0
CONFIG_CHANGED_EXIT = 129


class ConfigurationChanged(Exception):
    pass


@dataclass
class Felix:
    node: str
    datastore: DatastoreConfig
    sources: SettingsSources
    settings: FelixSettings  # from the environment and the file; the datastore's join after the first sync
    typha: TyphaClientSettings = field(default_factory=TyphaClientSettings)  # unset: etcd directly
    metrics: FelixMetrics = field(default_factory=FelixMetrics)
    synced: bool = False  # the first sync is applied

    def __post_init__(self) -> None:
        self.layout = KeyLayout(self.datastore.etcd_prefix)
        self.state = ClusterState(self.layout)
        self.netlink = Netlink()
        self.dataplane = Dataplane(
            self.netlink, self.settings.interface_prefix, mtu_file=MTUFile(self.settings.mtu_file)
        )
        self.policy = PolicyTables()
        self.calculator = PolicyCalculator(self.node)
        self._changes = ChangedKeys()
        self._in_sync = asyncio.Event()
        self._config_prefix = self.layout.kind_prefix(FelixConfiguration)
        self._servers: list[asyncio.Server] = []  # closed with the agent: felid-node may build another

    def ready(self) -> bool:
        return self.synced

    async def run(self) -> None:
        kv = EtcdKV(self.datastore)
        syncer = update_source(self.typha, kv, self.layout, SyncerType.FELIX, self.node)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(
                    follow(syncer, self.state.apply, self._in_sync, self._changes), name="syncer"
                )
                tasks.create_task(self._apply_loop(), name="dataplane")
                tasks.create_task(self._watch_links(), name="link-events")
                tasks.create_task(self._refresh_timer(), name="refresh")
        finally:
            for server in self._servers:
                server.close()
            kv.close()
            self.netlink.close()

    def _check_configuration(self, keys: frozenset[str]) -> None:
        """As Calico's Felix does: a changed FelixConfiguration means a clean restart.  Settings
        are resolved again only when a batch touched a FelixConfiguration."""
        if not self.synced or not any(key.startswith(self._config_prefix) for key in keys):
            return
        if self._settings_now() != self.settings:
            raise ConfigurationChanged("FelixConfiguration changed; exiting so the supervisor restarts felix")

    def _settings_now(self) -> FelixSettings:
        """The datastore's FelixConfiguration beneath the environment and the config file."""
        return self.sources.with_datastore(self.state.felix_configs, self.node)

    async def _apply_loop(self) -> None:
        await self._in_sync.wait()
        self.settings = self._settings_now()
        self.dataplane.workload_prefix = self.settings.interface_prefix
        self.dataplane.nat.backend = self.settings.iptables_backend
        self.policy.iptables = COMMANDS[self.settings.iptables_backend]
        self.policy.append_hooks = self.settings.chain_insert_mode == "Append"
        options = self._policy_options()
        await self._start_servers()
        host = await self._host_facts()
        while True:
            self._check_configuration((await self._changes.wait()).keys)
            state = desired(self.state, host)
            self.dataplane.set_desired(state)
            addresses = await self._host_addresses()
            self.policy.set_desired(desired_policy(self.state, self.calculator, options, addresses))
            started = time.perf_counter()
            try:
                # Policy first: a workload's route comes once its chains are there, so nothing its
                # policy denies ever reaches it.
                await self._apply_policy()
                plan = await self.dataplane.apply()
            except (KernelError, PolicyCommandFailed) as exc:
                log.error("dataplane apply failed, retrying: %s", exc)
                self.metrics.failures.inc()
                await asyncio.sleep(RETRY_FAILED_APPLY)
                self._changes.kick()
                continue
            self.metrics.apply_time.observe(time.perf_counter() - started)
            self.metrics.route_table_num_routes.set(self.dataplane.stats.routes)
            self.metrics.cluster_num_hosts.set(state.remote_hosts + 1)
            self.metrics.active_local_endpoints.set(state.local_endpoints)
            if not self.synced:
                log.info("first sync applied: %d routes", self.dataplane.stats.routes)
                self.synced = True
            if plan.waiting:
                log.debug("%d route(s) wait for their interface", len(plan.waiting))

    def _policy_options(self) -> PolicyOptions:
        s = self.settings
        return PolicyOptions(
            workload_prefix=s.interface_prefix,
            endpoint_to_host=s.default_endpoint_to_host_action,
            failsafe_inbound=s.failsafe_inbound_host_ports,
            failsafe_outbound=s.failsafe_outbound_host_ports,
        )

    async def _apply_policy(self) -> None:
        if not self.policy.dirty:
            return
        started = time.perf_counter()
        try:
            changes = await self.policy.apply()
        except PolicyCommandFailed:
            self.policy.invalidate()
            raise
        self.metrics.policy_apply_time.observe(time.perf_counter() - started)
        ruleset = self.policy.desired
        if ruleset is not None:
            self.metrics.policy_rules.set(sum(len(c.rules) for c in ruleset.chains))
            self.metrics.policy_sets.set(len(ruleset.sets))
            self.metrics.policy_members.set(sum(len(s.members) for s in ruleset.sets))
        if not changes.empty:
            log.info(
                "policy: %d chain(s) and %d set(s) written, %d chain(s) and %d set(s) removed",
                len(changes.chains_written),
                len(changes.sets_written),
                len(changes.chains_removed),
                len(changes.sets_removed),
            )

    async def _host_addresses(self) -> dict[str, str]:
        """This host's addresses (-> interface), read only while a host endpoint needs them: they
        are not watched, so each pass reads them again (one netlink dump)."""
        if not needs_host_addresses(self.state, self.node):
            return {}
        return {cidr.partition("/")[0]: name for name, cidr in await self.netlink.addresses()}

    async def _host_facts(self) -> HostFacts:
        """This host's MTU and NIC, found once: a changed NIC MTU takes a felix restart, as in Calico."""
        links = await self.netlink.links()
        nic = await self.netlink.default_route_link()
        mtu = host_mtu(
            [Interface(link.name, link.mtu, link.up) for link in links.values()],
            self.settings.mtu_iface_pattern,
            self.settings.interface_prefix,
            Interface(nic.name, nic.mtu, nic.up) if nic else None,
        )
        log.info("host MTU %d (pattern %s)", mtu, self.settings.mtu_iface_pattern)
        return HostFacts(self.node, mtu=mtu, nic=nic.name if nic else None)

    async def _watch_links(self) -> None:
        prefix = self.settings.interface_prefix
        async for name in self.netlink.link_events():
            if not name or name.startswith(prefix):
                # A workload interface came or went (or events were lost): its routes may need
                # (re)programming now.
                self.dataplane.invalidate()
                if self._in_sync.is_set():
                    self._changes.kick()

    async def _refresh_timer(self) -> None:
        while True:
            interval = self.settings.route_refresh_interval
            await asyncio.sleep(interval if interval > 0 else 3600)
            if interval > 0 and self._in_sync.is_set():
                self.metrics.resyncs.inc()
                self.dataplane.invalidate()
                self.policy.invalidate()
                self._changes.kick()

    async def _start_servers(self) -> None:
        s: FelixSettings = self.settings
        if s.health_enabled:
            self._servers.append(await serve_health(s.health_host, s.health_port, self.ready))
        if s.prometheus_metrics_enabled:

            async def metrics() -> Response:
                body = await asyncio.to_thread(generate_latest, self.metrics.registry)
                return 200, CONTENT_TYPE_LATEST, body

            host, port = s.prometheus_metrics_host, s.prometheus_metrics_port
            self._servers.append(await serve_http(host, port, {"/metrics": metrics}))


def run_forever(felix: Felix) -> int:
    """Run until something ends felix; the exit code for its supervisor."""
    try:
        asyncio.run(felix.run())
    except KeyboardInterrupt:
        return 0
    except BaseExceptionGroup as group:
        changed = group.subgroup(ConfigurationChanged)
        if changed is None:
            raise
        log.warning("%s", changed.exceptions[0])
        return CONFIG_CHANGED_EXIT
    return 1
