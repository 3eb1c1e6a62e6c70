"""The bgp agent: datastore -> BGP plan -> ExaBGP; ExaBGP's news -> RIB -> kernel routes.

One reconcile step does everything, so nothing races: it restarts a dead
ExaBGP, applies peer changes (a reload keeps unchanged sessions up), sends each
session the difference between what it should carry and what it was given,
sends end-of-RIB to sessions that came up, and programs the best learned routes
under protocol 186.  A route this run has not learned (one left in the kernel
by the agent before it) is only removed once every session is in sync (its
end-of-RIB, or a few seconds of session from a peer without graceful restart,
which sends none) or the longest graceful-restart time has passed, so
restarting the agent or ExaBGP removes no route anywhere; a route learned in
this run goes as soon as it is withdrawn.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import generate_latest

from bgp.adjribout import AdjRibOut, commands, desired
from bgp.calc import DEFAULT_RESTART_TIME, BGPPlan, PlanInputs, plan_bgp, secret_refs
from bgp.config import BGPSettings
from bgp.metrics import BGPMetrics
from bgp.rib import RIB, Identity, Path, next_hops
from bgp.routing import KernelRouter
from bgp.secrets import read_secrets
from bgp.speaker import ExaBGPSpeaker
from bgp.status import SessionStatus
from datastore.cache import DatastoreCache
from datastore.config import DatastoreConfig
from datastore.etcd import EtcdKV
from datastore.health import TEXT, Response, health_handlers, serve_http
from datastore.keys import IPAMKeys, KeyLayout, SyncerType
from datastore.models import BGPConfiguration, BGPFilter, BGPPeer, IPPool, Node
from datastore.syncer import ChangedKeys, follow
from felix.calc.model import BGP_PROTO
from felix.dataplane.netlink import KernelError, Netlink
from felix.dataplane.routetable import RouteTable
from typha.client import update_source
from typha.config import TyphaClientSettings

log = logging.getLogger("bgp")

TICK = 0.5  # seconds between checks of ExaBGP's health, stale routes and deferred end-of-RIBs
EOR_DEFERRAL = 10.0  # a reflector waits this long for its other peers before sending end-of-RIB anyway
NO_EOR_SETTLE = 3.0  # a peer without graceful restart sends no end-of-RIB: in sync this long after up
RETRY_FAILED_APPLY = 1.0


@dataclass
class BGPAgent:
    node: str
    datastore: DatastoreConfig
    settings: BGPSettings
    netns: str | None = None  # run ExaBGP in this namespace (tests); normally the agent's own
    typha: TyphaClientSettings = field(default_factory=TyphaClientSettings)  # unset: etcd directly
    metrics: BGPMetrics = field(default_factory=BGPMetrics)

    def __post_init__(self) -> None:
        self.layout = KeyLayout(self.datastore.etcd_prefix)
        self.cache = DatastoreCache(self.layout)
        self.netlink = Netlink()
        self.table = RouteTable(self.netlink, BGP_PROTO)
        s = self.settings
        self.speaker = ExaBGPSpeaker(s.run_dir, self.node, self.netns, s.exabgp, s.exabgp_reactor_speed)
        self.status = SessionStatus()
        self.rib = RIB(Identity("0.0.0.0", 0))
        self.plan: BGPPlan | None = None
        self.sent: AdjRibOut = {}  # what each session's ExaBGP neighbor holds from us
        self.eor_sent: set[str] = set()
        self.speaker_started = 0.0
        self.kernel_synced = False  # every session was in sync once: deleting what we did not learn is safe
        self.learned: set[str] = set()  # destinations this run has programmed: withdrawn, they go at once
        self._changes = ChangedKeys()
        self._in_sync = asyncio.Event()
        self._inputs = PlanInputs(self.node, IPAMKeys(self.layout.prefix))
        self._replan = True  # the datastore or a Secret changed since self.plan was computed
        self._nic: tuple[str, str] | None = None  # (address, interface)
        self._router: KernelRouter | None = None  # made again when the pools, subnet or NIC change
        self._unprogrammed_since: float | None = None
        self.secrets: dict[tuple[str, str], str] = {}  # the password Secrets' values, as last read
        self._server: asyncio.Server | None = None  # closed with the agent: felid-node may build another

    # -- tasks ---------------------------------------------------------------------

    async def run(self) -> None:
        kv = EtcdKV(self.datastore)
        syncer = update_source(self.typha, kv, self.layout, SyncerType.BGP, self.node)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(
                    follow(syncer, self.cache.apply, self._in_sync, self._changes), name="syncer"
                )
                tasks.create_task(self._control(), name="control")
                tasks.create_task(self._events(), name="exabgp-events")
                tasks.create_task(self._ticker(), name="ticker")
        finally:
            if self._server is not None:
                self._server.close()
            await self.speaker.stop()
            kv.close()
            self.netlink.close()

    async def _control(self) -> None:
        await self._in_sync.wait()
        if self.settings.metrics_port:
            self._server = await serve_http(
                self.settings.metrics_host, self.settings.metrics_port, self._handlers()
            )
        while True:
            changes = await self._changes.wait()
            if self._inputs.changed_by(changes.keys, self.cache.blocks):
                self._replan = True
            elif not changes.kicked and self.plan is not None:
                continue  # another node's pod: nothing this node announces, peers with or routes
            try:
                await self._reconcile()
            except KernelError as exc:
                log.error("programming routes failed, retrying: %s", exc)
                self.table.invalidate()
                await asyncio.sleep(RETRY_FAILED_APPLY)
                self._changes.kick()

    async def _events(self) -> None:
        while True:
            event = await self.speaker.events.get()
            self.rib.apply(event, time.monotonic())
            self.status.apply(event, time.time())
            if event.get("type") == "update" and self._unprogrammed_since is None:
                self._unprogrammed_since = time.perf_counter()
            self._changes.kick()  # the plan stands: an event changes what is sent and learned

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            if self.plan is None:
                continue
            expired = self.rib.expire(time.monotonic())
            waiting_eor = any(self.status.established(p) for p in self.sent if p not in self.eor_sent)
            if self._read_secrets() != self.secrets:  # a Secret came, went or changed
                self._replan = True
                self._changes.kick()
            if expired or waiting_eor or not self.speaker.alive or not self.kernel_synced:
                self._changes.kick()

    # -- one reconcile step --------------------------------------------------------------

    async def _reconcile(self) -> None:
        plan = self.plan
        if self._replan or plan is None:
            plan = self._compute_plan()
            if plan is None:
                if self.plan is None:
                    log.warning("node %s has no Node with a BGP address yet: nothing to do", self.node)
                return
            self._replan = False
        if plan is not self.plan or not self.speaker.alive:
            await self._apply_plan(plan)
        best = self.rib.best_paths(_importer(plan))
        await self._send_routes(plan, best)
        await self._send_eors(plan)
        await self._program(plan, next_hops(best))
        self._update_metrics(plan)

    def _read_secrets(self) -> dict[tuple[str, str], str]:
        refs = secret_refs(self.cache.of(BGPConfiguration).values(), self.cache.of(BGPPeer).values())
        return read_secrets(self.settings.secrets_dir, refs)

    def _compute_plan(self) -> BGPPlan | None:
        self.secrets = self._read_secrets()
        return plan_bgp(
            self.node,
            nodes=self.cache.of(Node).values(),
            configs=self.cache.of(BGPConfiguration).values(),
            peers=self.cache.of(BGPPeer).values(),
            pools=self.cache.of(IPPool).values(),
            affinities=self.cache.affinities,
            blocks=self.cache.blocks.values(),
            secrets=self.secrets,
            filters=self.cache.of(BGPFilter).values(),
        )

    async def _apply_plan(self, plan: BGPPlan) -> None:
        old = self.plan
        self.rib.me = Identity(plan.router_id, plan.local_as, plan.cluster_id)
        self.rib.restart_times = {s.peer_ip: float(s.timers.restart_time) for s in plan.sessions}
        self.rib.local_as_of = {s.peer_ip: plan.local_as_for(s) for s in plan.sessions}
        self.rib.allowed_local_as = {s.peer_ip: s.allowed_local_as for s in plan.sessions}
        self.status.configure(plan, time.time())
        if old is None or not self.speaker.alive or _identity(plan) != _identity(old):
            if old is not None:
                why = "died" if not self.speaker.alive else "changed identity"
                log.warning("ExaBGP %s: starting it again", why)
                self.metrics.exabgp_restarts.inc()
            await self._start_speaker(plan)
        elif plan.sessions != old.sessions:
            before = {s.peer_ip: s for s in old.sessions}
            after = {s.peer_ip: s for s in plan.sessions}
            for peer, session in before.items():
                if after.get(peer) != session:
                    # Removed or redefined: ExaBGP's neighbor is new, so it is given everything when up.
                    self.sent.pop(peer, None)
                    self.eor_sent.discard(peer)
                if peer not in after:
                    self.rib.forget(peer)
            log.info("BGP sessions changed: %d -> %d; reloading ExaBGP", len(before), len(after))
            await self.speaker.reconfigure(plan)
        self.plan = plan

    async def _start_speaker(self, plan: BGPPlan) -> None:
        now = time.monotonic()
        self.rib.all_down(now)
        self.status.reset(time.time())
        await self.speaker.stop()
        # Its neighbors exist from the configuration on: they get everything, queued till the bridge is up.
        self.sent = {s.peer_ip: {} for s in plan.sessions}
        self.eor_sent = set()
        await self.speaker.start(plan)
        self.speaker_started = now
        log.info("ExaBGP started (pid %s) with %d session(s)", self.speaker.pid, len(plan.sessions))

    async def _send_routes(self, plan: BGPPlan, best: Mapping[str, tuple[str, Path]]) -> None:
        wanted = desired(plan, best)
        for peer in wanted:
            if peer not in self.sent and self.status.established(peer):
                self.sent[peer] = {}  # added by a reload and now up: it starts from nothing
        active = {peer: table for peer, table in wanted.items() if peer in self.sent}
        for line in commands(self.sent, active):
            await self.speaker.send(line)
        self.sent.update(active)

    async def _send_eors(self, plan: BGPPlan) -> None:
        for peer in sorted(self.sent):
            if peer not in self.eor_sent and self.status.established(peer) and self._eor_ready(plan, peer):
                await self.speaker.send(f"neighbor {peer} announce eor ipv4 unicast")
                self.eor_sent.add(peer)

    def _eor_ready(self, plan: BGPPlan, peer: str) -> bool:
        """A reflector first hears its other peers out, so it does not end a client's restart early."""
        if plan.cluster_id is None or time.monotonic() - self.speaker_started > EOR_DEFERRAL:
            return True
        others = [s.peer_ip for s in plan.sessions if s.peer_ip != peer and plan.ibgp(s)]
        return all(self._peer_in_sync(p) for p in others)

    def _peer_in_sync(self, peer: str) -> bool:
        return self.status.established(peer) and self.rib.in_sync(peer, time.monotonic(), NO_EOR_SETTLE)

    async def _program(self, plan: BGPPlan, best: Mapping[str, str]) -> None:
        """``best``: prefix -> next hop, as ``RIB.best`` gives."""
        me = self.cache.node_named(self.node)
        address = me.address if me else None
        if address is None:
            return
        nic = await self._nic_of(str(address.ip))
        if nic is None:
            log.error("no interface holds this node's address %s: learned routes wait", address)
            return
        pools = self.cache.of(IPPool).values()
        if self._router is None or not self._router.serves(pools, address.network, nic):
            self._router = KernelRouter(pools, address.network, nic)
        routes = self._router.routes(best, own=plan.announce)
        self.table.set_routes(routes)
        self.learned.update(r.dst for r in routes)
        if not self.kernel_synced:
            longest = max((s.timers.restart_time for s in plan.sessions), default=DEFAULT_RESTART_TIME)
            everyone = all(self._peer_in_sync(s.peer_ip) for s in plan.sessions)
            if everyone or time.monotonic() - self.speaker_started > longest:
                log.info("every BGP session is in sync: stale kernel routes may go now")
                self.kernel_synced = True
        links = await self.netlink.links()
        result = await self.table.apply(links, may_delete=self._may_delete)
        if result.replace or result.delete:
            log.info("kernel: %d learned route(s) set, %d removed", len(result.replace), len(result.delete))
        if self._unprogrammed_since is not None:
            self.metrics.program_time.observe(time.perf_counter() - self._unprogrammed_since)
            self._unprogrammed_since = None

    def _may_delete(self, dst: str) -> bool:
        return self.kernel_synced or dst in self.learned

    async def _nic_of(self, ip: str) -> str | None:
        if self._nic is None or self._nic[0] != ip:
            link = await self.netlink.address_link(ip)
            if link is None:
                return None
            self._nic = (ip, link.name)
        return self._nic[1]

    # -- what it tells the world ---------------------------------------------------------

    def _update_metrics(self, plan: BGPPlan) -> None:
        states = {"up": 0, "start": 0}
        for session in plan.sessions:
            up = self.status.established(session.peer_ip)
            states["up" if up else "start"] += 1
        for state, count in states.items():
            self.metrics.sessions.labels(state).set(count)
        self.metrics.received.clear()
        self.metrics.advertised.clear()
        for session in plan.sessions:
            peer = session.peer_ip
            self.metrics.received.labels(peer).set(self.rib.received(peer))
            self.metrics.advertised.labels(peer).set(len(self.sent.get(peer, {})))
        self.metrics.kernel_routes.set(len(self.table))

    def status_document(self) -> dict[str, Any]:
        plan = self.plan
        if plan is None:
            return {"node": self.node, "running": True, "peers": []}
        received = {p: self.rib.received(p) for p in self.rib.peers}
        advertised = {p: len(t) for p, t in self.sent.items()}
        return {
            "node": self.node,
            "running": True,
            "routerID": plan.router_id,
            "asNumber": plan.local_as,
            "clusterID": plan.cluster_id,
            "exabgpPID": self.speaker.pid,
            "peers": [
                {
                    "address": row.address,
                    "type": row.kind,
                    "state": row.state,
                    "since": row.since,
                    "info": row.info,
                    "received": row.received,
                    "advertised": row.advertised,
                }
                for row in self.status.rows(plan, received, advertised)
            ],
        }

    def ready(self) -> bool:
        plan = self.plan
        if plan is None or plan.waiting:
            return False  # a session waiting for its password is not up
        return all(self.status.established(s.peer_ip) for s in plan.sessions)

    def _handlers(self) -> Mapping[str, Any]:
        def status() -> Response:
            return 200, "application/json", json.dumps(self.status_document()).encode()

        def metrics() -> Response:
            return 200, TEXT, generate_latest(self.metrics.registry)

        return {**health_handlers(self.ready), "/status": status, "/metrics": metrics}


def _importer(plan: BGPPlan) -> Callable[[str, str], bool]:
    """(peer, prefix) -> whether that peer's import filters take it."""
    sessions = {s.peer_ip: s for s in plan.sessions}

    def imports(peer: str, prefix: str) -> bool:
        session = sessions.get(peer)
        return session is None or session.imports(prefix)

    return imports


def _identity(plan: BGPPlan) -> tuple[str, int, int]:
    """What ExaBGP cannot change by a reload: its address, AS and port."""
    return plan.router_id, plan.local_as, plan.listen_port
