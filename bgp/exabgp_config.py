"""ExaBGP's configuration for a BGPPlan: one neighbor block per session (pure text rendering).

Values are checked before they reach the file: ExaBGP's parser would take a
``;`` or newline in a password as the end of the statement (DESIGN.md §5).
"""

from __future__ import annotations

from bgp.calc import BGPPlan, Session

DEFAULT_HOLD = 90.0
PROCESS = "felid-bgp"


class UnsafeValue(ValueError):
    pass


def _quoted(value: str) -> str:
    if any(c in value for c in '";\n\r\\{}'):
        raise UnsafeValue("a BGP password may not contain quotes, ';', braces, backslashes or newlines")
    return f'"{value}"'


def _hold(session: Session) -> int:
    timers = session.timers
    if timers.hold is not None:
        return max(3, int(timers.hold))
    if timers.keepalive is not None:
        return max(3, int(timers.keepalive * 3))
    return int(DEFAULT_HOLD)


def _describe(session: Session) -> str:
    return f"{session.kind} {session.peer_node}" if session.peer_node else session.kind


def render(plan: BGPPlan, api_command: str) -> str:
    """The whole configuration file; ``api_command`` runs the API process (no commas in it)."""
    if "," in api_command or ";" in api_command:
        raise UnsafeValue("ExaBGP's run line takes no commas or semicolons")
    lines = [
        f"process {PROCESS} {{",
        f"    run {api_command};",
        "    encoder json;",
        "}",
    ]
    for session in sorted(plan.sessions):
        lines += [
            "",
            f"neighbor {session.peer_ip} {{",
            f'    description "{_describe(session)}";',
            f"    router-id {plan.router_id};",
            # sourceAddress None: the kernel picks the source address of the connection.
            f"    local-address {plan.router_id if session.use_node_ip else 'auto'};",
            f"    local-as {plan.local_as_for(session)};",
            f"    peer-as {session.peer_as};",
            f"    hold-time {_hold(session)};",
            # The agent sends end-of-RIB itself, once this peer has been given everything
            # (after an ExaBGP restart, before that would make the peer sweep our stale routes).
            "    manual-eor true;",
        ]
        if session.peer_port != 179:
            lines.append(f"    connect {session.peer_port};")
        if session.passive:
            lines.append("    passive true;")
        if session.password:
            lines.append(f"    md5-password {_quoted(session.password)};")
        if session.ttl_security:
            # GTSM (RFC 5082): send with TTL 255, take only what came at most ttlSecurity hops.
            lines += ["    outgoing-ttl 255;", f"    incoming-ttl {256 - session.ttl_security};"]
        lines += [
            "    family { ipv4 unicast; }",
            f"    capability {{ graceful-restart {session.timers.restart_time}; route-refresh; }}",
            "    api {",
            f"        processes [ {PROCESS} ];",
            "        neighbor-changes;",
            "        receive { parsed; open; update; }",
            "    }",
            "}",
        ]
    return "\n".join(lines) + "\n"


def environment(plan: BGPPlan, pipename: str, log_file: str, reactor_speed: float) -> dict[str, str]:
    """ExaBGP settings by environment (DESIGN.md §5: run as root, bind the node address)."""
    return {
        "exabgp.daemon.user": "root",
        "exabgp.daemon.daemonize": "false",
        "exabgp.tcp.bind": plan.router_id,
        "exabgp.tcp.port": str(plan.listen_port),
        "exabgp.api.pipename": pipename,
        "exabgp.log.destination": log_file,
        "exabgp.api.ack": "false",
        # The reactor sleeps a hundredth of this between idle loops (default 1.0: 100 wake-ups a
        # second, each visiting every peer: 4.7 % of a core with 40 sessions, bench/idle.py).  A
        # socket or an API command wakes it at once (once bgp.exabgp_main has repaired its poller:
        # a closed socket left in it made the reactor sleep blind), so announcements wait for
        # nothing; timers (keepalives, connect retries) keep a 1 s granularity.
        "exabgp.reactor.speed": str(reactor_speed),
    }
