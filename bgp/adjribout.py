"""What each BGP session should carry, and the ExaBGP commands that get it there (pure).

``desired`` gives, per peer, the prefixes to announce with their attributes:
this node's own prefixes (next hop self) to every peer and, on a route
reflector, the learned routes reflected as RFC 4456 says (from a client to
every other iBGP peer, from a non-client to clients only; the original next
hop, ORIGINATOR_ID set once, our cluster id prepended to CLUSTER_LIST).
``commands`` turns the difference from what was sent into as few
``announce attributes ... nlri`` lines as it can: prefixes with the same
attributes for the same set of peers share a line.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bgp.calc import BGPPlan
from bgp.rib import Path

NLRI_PER_COMMAND = 500  # ExaBGP parses a line at a time; this keeps a line well under its buffer
SELF = "self"


@dataclass(frozen=True, order=True)
class Advert:
    next_hop: str = SELF
    originator_id: str | None = None
    cluster_list: tuple[str, ...] = ()

    def attributes(self) -> str:
        text = f"next-hop {self.next_hop}"
        if self.originator_id is not None:
            text += f" originator-id {self.originator_id}"
        if self.cluster_list:
            text += f" cluster-list [ {' '.join(self.cluster_list)} ]"
        return text


AdjRibOut = dict[str, dict[str, Advert]]  # peer -> prefix -> advert


def desired(plan: BGPPlan, best: Mapping[str, tuple[str, Path]]) -> AdjRibOut:
    """``best``: prefix -> (the peer we learned it from, its path), as ``RIB.best_paths`` gives."""
    out: AdjRibOut = {s.peer_ip: {} for s in plan.sessions}
    ibgp = {s.peer_ip: s for s in plan.sessions if s.peer_as == plan.local_as}
    if plan.cluster_id is not None:
        for prefix, (source, path) in best.items():
            origin = ibgp.get(source)
            if origin is None or prefix in plan.announce:
                continue  # eBGP-learned routes are not reflected; our own take precedence
            advert = Advert(
                path.next_hop, path.originator_id or source, (plan.cluster_id, *path.cluster_list)
            )
            for peer, session in ibgp.items():
                if peer != source and (origin.rr_client or session.rr_client):
                    out[peer][prefix] = advert
    own = Advert()
    for table in out.values():
        for prefix in plan.announce:
            table[prefix] = own
    return out


def _neighbors(peers: Iterable[str]) -> str:
    return " , ".join(f"neighbor {p}" for p in sorted(peers))


def _chunks(prefixes: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(prefixes), NLRI_PER_COMMAND):
        yield prefixes[start : start + NLRI_PER_COMMAND]


def commands(sent: AdjRibOut, wanted: AdjRibOut) -> list[str]:
    """Lines that take ExaBGP from ``sent`` to ``wanted`` (withdrawals first)."""
    withdraw: dict[str, set[str]] = defaultdict(set)  # prefix -> peers
    announce: dict[tuple[Advert, str], set[str]] = defaultdict(set)  # (advert, prefix) -> peers
    for peer, table in wanted.items():
        before = sent.get(peer, {})
        for prefix in before.keys() - table.keys():
            withdraw[prefix].add(peer)
        for prefix, advert in table.items():
            if before.get(prefix) != advert:
                announce[(advert, prefix)].add(peer)
    lines = []
    by_peers: dict[frozenset[str], list[str]] = defaultdict(list)
    for prefix, targets in withdraw.items():
        by_peers[frozenset(targets)].append(prefix)
    for group, prefixes in sorted(by_peers.items(), key=lambda kv: sorted(kv[0])):
        for chunk in _chunks(sorted(prefixes)):
            lines.append(f"{_neighbors(group)} withdraw attributes nlri {' '.join(chunk)}")
    grouped: dict[tuple[Advert, frozenset[str]], list[str]] = defaultdict(list)
    for (advert, prefix), targets in announce.items():
        grouped[(advert, frozenset(targets))].append(prefix)
    for (advert, group), prefixes in sorted(grouped.items(), key=lambda kv: (kv[0][0], sorted(kv[0][1]))):
        head = f"{_neighbors(group)} announce attributes {advert.attributes()} nlri"
        lines.extend(f"{head} {' '.join(chunk)}" for chunk in _chunks(sorted(prefixes)))
    return lines
