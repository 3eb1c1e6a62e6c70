"""What this node's BGP speaker must do, computed from the datastore alone (no I/O).

``plan_bgp`` gives the sessions to hold (node-to-node mesh, global and
node-specific BGPPeers, route reflector clients and reflectors) and the
prefixes to announce (this node's confirmed blocks and the /32s it borrowed
from other nodes' blocks, except from disabled pools or pools with
``disableBGPExport``).  Mirrors Calico's confd templates.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from datastore.keys import IPAMKeys
from datastore.models import (
    BGPConfiguration,
    BGPFilter,
    BGPPeer,
    IPPool,
    Node,
    parse_duration,
    pool_containing,
)
from datastore.models.bgp import Password, SecretPassword, password_problem
from datastore.models.bgpfilter import BGPFilterRule, decide
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
    waiting: str | None = None  # why it is not configured yet (its password secret or a filter is missing)
    local_as: int | None = None  # its BGPPeer's localASNumber: the AS we are to this peer
    next_hop: Literal["Auto", "Self", "Keep"] = "Auto"  # for the routes we pass on to it
    use_node_ip: bool = True  # sourceAddress UseNodeIP: connect from the node's address
    allowed_local_as: int = 0  # numAllowedLocalASNumbers: our AS may be this often in a path it gives
    ttl_security: int | None = None  # GTSM: at most this many hops away
    # We only accept, never connect (another felid node, whose address is the lower, connects).
    # Two ExaBGPs that both connect collide, each keeps the other's connection and drops its own,
    # and in step (1 s timers) they can go on doing so; the closed sockets also cost ExaBGP's loop.
    passive: bool = False
    # Its BGPPeer's filters' rules, in order. Applied by the agent, not by ExaBGP: a change
    # needs no reload, so they are left out of comparisons.
    import_rules: tuple[BGPFilterRule, ...] = field(default=(), compare=False)
    export_rules: tuple[BGPFilterRule, ...] = field(default=(), compare=False)

    def imports(self, prefix: str) -> bool:
        return decide(self.import_rules, prefix, True) is not False

    def exports(self, prefix: str, remote: bool) -> bool:
        """Whether a route felid would give this peer passes its export filters."""
        return decide(self.export_rules, prefix, remote) is not False


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
    exported_pools: frozenset[str] = frozenset()  # the pools whose routes go to eBGP peers
    communities: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (cidr, values): prefixAdvertisements

    def local_as_for(self, session: Session) -> int:
        return session.local_as or self.local_as

    def ibgp(self, session: Session) -> bool:
        return session.peer_as == self.local_as_for(session)

    def communities_for(self, prefix: str) -> tuple[str, ...]:
        """What prefixAdvertisements attach to ``prefix``: those of every cidr it is inside."""
        net = ipaddress.IPv4Network(prefix)
        out: list[str] = []
        for cidr, values in self.communities:
            if net.subnet_of(ipaddress.IPv4Network(cidr)):
                out.extend(v for v in values if v not in out)
        return tuple(out)


def waits_for(my_ip: str, peer_ip: str) -> bool:
    """Whether our session to another felid node is ``passive``: of the two, the higher address
    only accepts, so one side connects and two ExaBGPs never collide."""
    return ipaddress.IPv4Address(my_ip) > ipaddress.IPv4Address(peer_ip)


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


def _peer_options(peer: BGPPeer, filters: Mapping[str, BGPFilter]) -> dict[str, object]:
    """What a BGPPeer sets on each of its sessions beyond the peer itself (``missing_filter``:
    why they wait, when a filter it names does not exist: never peer unfiltered)."""
    spec = peer.spec
    missing = [name for name in spec.filters if name not in filters]
    chosen = [filters[name].spec for name in spec.filters if name in filters]
    return {
        "local_as": spec.local_as_number,
        "next_hop": spec.next_hop,
        "use_node_ip": spec.source_address == "UseNodeIP",
        "allowed_local_as": spec.num_allowed_local_as_numbers or 0,
        "ttl_security": spec.ttl_security or None,
        "import_rules": tuple(rule for f in chosen for rule in f.import_v4),
        "export_rules": tuple(rule for f in chosen for rule in f.export_v4),
        "missing_filter": f"BGPFilter {missing[0]!r} not found" if missing else None,
    }


def _with_options(session: Session | None, options: dict[str, object]) -> Session | None:
    if session is None:
        return None
    missing = options.pop("missing_filter", None)
    return replace(session, waiting=session.waiting or missing, **options)  # type: ignore[arg-type]


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
    filters: Iterable[BGPFilter] = (),
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
    filter_by_name = {f.name: f for f in filters}

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
            passive=waits_for(my_ip, ip),
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
        options = _peer_options(peer, filter_by_name)
        if not _applies_to(peer, me):
            continue
        if spec.peer_address is not None and spec.as_number is not None:
            if spec.peer_address != my_ip:
                resolved, waiting = resolve_password(spec.password, known_secrets)
                session = Session(
                    spec.peer_address,
                    spec.as_number,
                    kind,
                    peer_port=spec.peer_port,
                    password=resolved,
                    timers=timers,
                    waiting=waiting,
                )
                sessions[spec.peer_address] = _with_options(session, dict(options)) or session
        elif spec.peer_selector is not None:
            selector = Selector.parse(spec.peer_selector)
            for other in by_name.values():
                if selector.matches(other.metadata.labels):
                    selected = _with_options(session_with(other, kind, spec.password, timers), dict(options))
                    if selected is not None:
                        sessions[selected.peer_ip] = selected
    exported = [p for p in pools if p.enabled and not p.spec.disable_bgp_export]
    services, communities = _cluster_wide(default)
    return BGPPlan(
        node=node_name,
        router_id=my_ip,
        local_as=node_as(me, config_list),
        listen_port=(default.spec.listen_port if default else None) or 179,
        cluster_id=my_cluster,
        sessions=frozenset(s for s in sessions.values() if s.waiting is None),
        announce=frozenset(_announcements(node_name, exported, affinities, blocks) | services),
        waiting=frozenset(s for s in sessions.values() if s.waiting is not None),
        exported_pools=frozenset(p.spec.cidr for p in exported),
        communities=communities,
    )


def _cluster_wide(
    default: BGPConfiguration | None,
) -> tuple[set[str], tuple[tuple[str, tuple[str, ...]], ...]]:
    """The service CIDRs every node announces, and the communities prefixAdvertisements attach."""
    if default is None:
        return set(), ()
    spec = default.spec
    return set(spec.service_cidrs), tuple(
        (a.cidr, spec.community_values(a)) for a in spec.prefix_advertisements
    )


def _announcements(
    node: str,
    exported: list[IPPool],
    affinities: Mapping[tuple[str, str], AffinityState],
    blocks: Iterable[AllocationBlock],
) -> set[str]:
    out = {cidr for _, cidr in confirmed(affinities, node)}
    for block in blocks:
        out |= borrowed(node, block)
    return {cidr for cidr in out if pool_containing(exported, cidr) is not None}


def borrowed(node: str, block: AllocationBlock) -> frozenset[str]:
    """The /32s ``node`` holds in another node's block: the owner's block route does not reach
    them, so ``node`` announces each.  A block write that leaves this unchanged changes nothing
    in ``node``'s plan."""
    if block.host == node:
        return frozenset()
    return frozenset(
        f"{block.address(ordinal)}/32" for ordinal, attr in block.used() if attr.attrs.get("node") == node
    )


class PlanInputs:
    """Which datastore changes can change ``node``'s plan: any resource bgp follows, ``node``'s
    affinities, a block in which ``node``'s borrowed addresses changed.  Every pod start anywhere
    writes a block and maybe another node's affinity, and those change nothing here: bgp does
    no work for them."""

    def __init__(self, node: str, ipam: IPAMKeys) -> None:
        self.node = node
        self.ipam = ipam
        self._borrowed: dict[str, frozenset[str]] = {}  # block -> the /32s node holds in it

    def changed_by(self, keys: Iterable[str], blocks: Mapping[str, AllocationBlock]) -> bool:
        """Whether these keys, just applied to a cache holding ``blocks``, change the plan."""
        ipam, changed = self.ipam, False
        for key in keys:
            if key.startswith(ipam.blocks):
                cidr = ipam.cidr_of(key)
                block = blocks.get(cidr)
                mine = borrowed(self.node, block) if block is not None else frozenset()
                if mine != self._borrowed.get(cidr, frozenset()):
                    changed = True
                    if mine:
                        self._borrowed[cidr] = mine
                    else:
                        del self._borrowed[cidr]
            elif key.startswith(ipam.hosts):
                changed = changed or ipam.affinity_node(key) == self.node
            else:
                changed = True
        return changed
