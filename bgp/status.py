"""Session status as ``felidctl node status`` shows it, kept from ExaBGP's state events (pure).

ExaBGP reports ``connected`` (TCP up, OPEN under way), ``up`` (Established)
and ``down`` with a reason.  A session that never reaches ``connected`` gets
no event at all: that is what a TCP-MD5 mismatch looks like (the kernel drops
the unsigned or wrongly signed SYNs), so the row says so when a password is set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bgp.calc import BGPPlan, Session


@dataclass
class PeerState:
    state: str = "start"  # Calico's words: up, start
    info: str = "Connect"
    since: float = 0.0  # wall clock of the last change
    events: int = 0


@dataclass(frozen=True)
class PeerRow:
    address: str
    kind: str
    state: str
    since: float
    info: str
    received: int = 0
    advertised: int = 0


@dataclass
class SessionStatus:
    peers: dict[str, PeerState] = field(default_factory=dict)

    def configure(self, plan: BGPPlan, now: float) -> None:
        wanted = {s.peer_ip for s in plan.sessions}
        for peer in list(self.peers):
            if peer not in wanted:
                del self.peers[peer]
        for peer in wanted:
            self.peers.setdefault(peer, PeerState(since=now))

    def reset(self, now: float) -> None:
        """A new ExaBGP process: every session starts over."""
        for peer in self.peers.values():
            peer.state, peer.info, peer.since, peer.events = "start", "Connect", now, 0

    def apply(self, event: Mapping[str, Any], now: float) -> None:
        if event.get("type") != "state":
            return
        neighbor = event.get("neighbor") or {}
        peer = self.peers.get(str((neighbor.get("address") or {}).get("peer")))
        if peer is None:
            return
        state = str(neighbor.get("state"))
        peer.events += 1
        if state == "up":
            peer.state, peer.info = "up", "Established"
        elif state == "connected":
            peer.state, peer.info = "start", "OpenSent"
        elif state == "down":
            reason = str(neighbor.get("reason") or "").strip()
            peer.state, peer.info = "start", f"Active: {reason}" if reason else "Active"
        else:
            return
        peer.since = now

    def established(self, peer: str) -> bool:
        state = self.peers.get(peer)
        return state is not None and state.state == "up"

    def rows(
        self, plan: BGPPlan, received: Mapping[str, int], advertised: Mapping[str, int]
    ) -> list[PeerRow]:
        rows = []
        every = plan.sessions | plan.waiting
        for session in sorted(every, key=lambda s: tuple(int(p) for p in s.peer_ip.split("."))):
            peer = self.peers.get(session.peer_ip) or PeerState()
            if session.waiting is not None:  # not configured: its password is missing
                rows.append(PeerRow(session.peer_ip, session.kind, "waiting", peer.since, session.waiting))
                continue
            rows.append(
                PeerRow(
                    session.peer_ip,
                    session.kind,
                    peer.state,
                    peer.since,
                    _info(session, peer),
                    received.get(session.peer_ip, 0),
                    advertised.get(session.peer_ip, 0),
                )
            )
        return rows


def _info(session: Session, peer: PeerState) -> str:
    if peer.events == 0 and session.password:
        return "Connect: no answer (TCP-MD5 is set: check the password on both sides)"
    return peer.info
