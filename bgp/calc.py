"""What this node's BGP speaker must do, computed from the datastore alone (no I/O).

``plan_bgp`` gives the sessions to hold (node-to-node mesh, global and
node-specific BGPPeers, route reflector clients and reflectors) and the
prefixes to announce (this node's confirmed blocks and the /32s it borrowed
from other nodes' blocks, except from disabled pools or pools with
``disableBGPExport``).  Mirrors Calico's confd templates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from datastore.models import BGPConfiguration, BGPPeer, IPPool, Node, parse_duration, pool_containing
from datastore.models.bgp import Password, SecretPassword, password_problem
from datastore.models.block import AllocationBlock
from datastore.models.ipam import AffinityState, confirmed
from datastore.selector import Selector

DEFAULT_AS = 64512
DEFAULT_RESTART_TIME = 120

PeerType = Literal[
    "node-to-node mesh", "global", "node specific", "route reflector client", "route reflector"
]


@dataclass(frozen=True, order=True)
class Timers:
    keepalive: float | None = None
    hold: float | None = None
    restart_time: int = DEFAULT_RESTART_TIME  # graceful restart


@dataclass(frozen=True, order=True)
class Session:
    peer_ip: str
    peer_as: int
    kind: PeerType
    peer_port: int = 179
    password: str | None = None
    timers: Timers = Timers()
    rr_client: bool = False  # we reflect routes to this peer
    peer_node: str | None = None
    waiting: str | None = None  # why it is not configured yet (its password secret is missing)


@dataclass(frozen=True)
class BGPPlan:
    node: str
    router_id: str
    local_as: int
    listen_port: int
    cluster_id: str | None
    sessions: frozenset[Session]
    announce: frozenset[str]
    waiting: frozenset[Session] = frozenset()  # not configured: never peer without the password asked for


def _named(configs: Iterable[BGPConfiguration], name: str) -> BGPConfiguration | None:
    return next((c for c in configs if c.name == name), None)


def node_as(node: Node, configs: Iterable[BGPConfiguration]) -> int:
    configs = list(configs)
    if node.as_number:
        return node.as_number
    for name in (f"node.{node.name}", "default"):
        config = _named(configs, name)
        if config is not None and config.spec.as_number:
            return config.spec.as_number
    return DEFAULT_AS


def _applies_to(peer: BGPPeer, me: Node) -> bool:
    if peer.spec.node is not None:
        return peer.spec.node == me.name
    if peer.spec.node_selector is not None:
        return Selector.parse(peer.spec.node_selector).matches(me.metadata.labels)
    return True


def _selects(selector: str | None, node: Node) -> bool:
    return selector is not None and Selector.parse(selector).matches(node.metadata.labels)


Secrets = Mapping[tuple[str, str], str]  # (Secret name, key) -> its value, as the agent read them


def secret_refs(configs: Iterable[BGPConfiguration], peers: Iterable[BGPPeer]) -> set[tuple[str, str]]:
    """Every (Secret name, key) a password names: what the agent reads from its secrets directory."""
    named = [c.spec.node_mesh_password for c in configs] + [p.spec.password for p in peers]
    return {(p.secret_key_ref.name, p.secret_key_ref.key) for p in named if isinstance(p, SecretPassword)}


def resolve_password(password: Password | None, secrets: Secrets) -> tuple[str | None, str | None]:
    """(the password, None), or (None, why it cannot be had): a Secret's key not there, or unusable."""
    if password is None or isinstance(password, str):
        return password, None
    ref = password.secret_key_ref
    value = secrets.get((ref.name, ref.key))
    if value is None:
        return None, f"password secret {ref} not found"
    problem = password_problem(value)
    if problem is not None:
        return None, f"password secret {ref}: {problem}"
    return value, None


def _seconds(duration: str | None) -> float | None:
    return None if duration is None else parse_duration(duration)


def plan_bgp(
    node_name: str,
    *,
    nodes: Iterable[Node],
    configs: Iterable[BGPConfiguration],
    peers: Iterable[BGPPeer],
    pools: Iterable[IPPool],
    affinities: Mapping[tuple[str, str], AffinityState],
    blocks: Iterable[AllocationBlock],
    secrets: Secrets | None = None,
) -> BGPPlan | None:
    """None when this node cannot speak BGP yet (no Node, or no IPv4 address on it).

    ``secrets``: the values of the Secret keys passwords name (``secret_refs``); a session whose
    password is not among them waits, unconfigured.

    ``affinities``: ``(node, cidr) -> state``; ``blocks``: the IPAM blocks.
    """
    by_name = {n.name: n for n in nodes}
    config_list = list(configs)
    me = by_name.get(node_name)
    my_ip = me.ip if me else None
    if me is None or my_ip is None:
        return None
    default = _named(config_list, "default")
    my_cluster = me.route_reflector_cluster_id
    sessions: dict[str, Session] = {}

    known_secrets = secrets or {}

    def session_with(node: Node, kind: PeerType, password: Password | None, timers: Timers) -> Session | None:
        ip = node.ip
        if ip is None or node.name == node_name:
            return None
        theirs = node.route_reflector_cluster_id
        rr_client = bool(my_cluster and not theirs)
        if rr_client:
            kind = "route reflector client"
        elif theirs:
            kind = "route reflector"
        resolved, waiting = resolve_password(password, known_secrets)
        return Session(
            ip,
            node_as(node, config_list),
            kind,
            password=resolved,
            timers=timers,
            rr_client=rr_client,
            peer_node=node.name,
            waiting=waiting,
        )

    if default is None or default.spec.node_to_node_mesh_enabled is not False:
        password = default.spec.node_mesh_password if default else None
        restart = _seconds(default.spec.node_mesh_max_restart_time) if default else None
        mesh_timers = Timers(restart_time=int(restart or DEFAULT_RESTART_TIME))
        for other in by_name.values():
            session = session_with(other, "node-to-node mesh", password, mesh_timers)
            if session is not None:
                sessions[session.peer_ip] = session
    for peer in sorted(peers, key=lambda p: p.name):
        spec = peer.spec
        kind: PeerType = "global" if spec.node is None and spec.node_selector is None else "node specific"
        timers = Timers(
            keepalive=_seconds(spec.keepalive_time),
            hold=_seconds(spec.hold_time),
            restart_time=int(_seconds(spec.max_restart_time) or DEFAULT_RESTART_TIME),
        )
        if _selects(spec.peer_selector, me):
            # The other end of a node-to-node BGPPeer: as in Calico, a node selected by a
            # peerSelector peers back with every node the BGPPeer applies to.
            for other in by_name.values():
                if _applies_to(peer, other) and (back := session_with(other, kind, spec.password, timers)):
                    sessions.setdefault(back.peer_ip, back)
        if not _applies_to(peer, me):
            continue
        if spec.peer_address is not None and spec.as_number is not None:
            if spec.peer_address != my_ip:
                resolved, waiting = resolve_password(spec.password, known_secrets)
                sessions[spec.peer_address] = Session(
                    spec.peer_address,
                    spec.as_number,
                    kind,
                    peer_port=spec.peer_port,
                    password=resolved,
                    timers=timers,
                    waiting=waiting,
                )
        elif spec.peer_selector is not None:
            selector = Selector.parse(spec.peer_selector)
            for other in by_name.values():
                if selector.matches(other.metadata.labels):
                    session = session_with(other, kind, spec.password, timers)
                    if session is not None:
                        sessions[session.peer_ip] = session
    port = (default.spec.listen_port if default and default.spec.listen_port else None) or 179
    return BGPPlan(
        node=node_name,
        router_id=my_ip,
        local_as=node_as(me, config_list),
        listen_port=port,
        cluster_id=my_cluster,
        sessions=frozenset(s for s in sessions.values() if s.waiting is None),
        announce=frozenset(_announcements(node_name, pools, affinities, blocks)),
        waiting=frozenset(s for s in sessions.values() if s.waiting is not None),
    )


def _announcements(
    node: str,
    pools: Iterable[IPPool],
    affinities: Mapping[tuple[str, str], AffinityState],
    blocks: Iterable[AllocationBlock],
) -> set[str]:
    exported = [p for p in pools if p.enabled and not p.spec.disable_bgp_export]
    out = {cidr for _, cidr in confirmed(affinities, node)}
    for block in blocks:
        if block.host == node:
            continue
        for ordinal, attr in block.used():
            if attr.attrs.get("node") == node:
                out.add(f"{block.address(ordinal)}/32")  # borrowed: the owner's block route does not reach us
    return {cidr for cidr in out if pool_containing(exported, cidr) is not None}
