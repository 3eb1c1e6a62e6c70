"""What each BGP session should carry, and the ExaBGP commands that get it there (pure).

``desired`` gives, per peer, the prefixes to announce with their attributes:
this node's own prefixes and service CIDRs (next hop self, with the communities
prefixAdvertisements attach) to every peer; on a route reflector, the learned
routes reflected as RFC 4456 says (from a client to every other iBGP peer, from
a non-client to clients only; the original next hop, ORIGINATOR_ID set once, our
cluster id prepended to CLUSTER_LIST); to eBGP peers, the pool routes learned
over iBGP, as Calico's nodes pass them on.  A session's export filters have the
last word.
``commands`` turns the difference from what was sent into as few
``announce attributes ... nlri`` lines as it can: prefixes with the same
attributes for the same set of peers share a line.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from bgp.calc import BGPPlan
from bgp.rib import Path

NLRI_PER_COMMAND = 500  # ExaBGP parses a line at a time; this keeps a line well under its buffer
SELF = "self"


class Advert(NamedTuple):
    """A tuple, not a dataclass: a reflector compares and hashes one per prefix and peer on each
    reconcile, and a tuple does both in C."""

    next_hop: str = SELF
    originator_id: str | None = None
    cluster_list: tuple[str, ...] = ()
    communities: tuple[str, ...] = ()  # aa:nn standard, aa:nn:mm large

    def attributes(self) -> str:
        text = f"next-hop {self.next_hop}"
        if self.originator_id is not None:
            text += f" originator-id {self.originator_id}"
        if self.cluster_list:
            text += f" cluster-list [ {' '.join(self.cluster_list)} ]"
        standard = [c for c in self.communities if c.count(":") == 1]
        large = [c for c in self.communities if c.count(":") == 2]
        if standard:
            text += f" community [ {' '.join(standard)} ]"
        if large:
            text += f" large-community [ {' '.join(large)} ]"
        return text


AdjRibOut = dict[str, dict[str, Advert]]  # peer -> prefix -> advert


def _in_pools(prefix: str, pools: frozenset[str]) -> bool:
    net = ipaddress.IPv4Network(prefix)
    return any(net.subnet_of(ipaddress.IPv4Network(p)) for p in pools)


def desired(plan: BGPPlan, best: Mapping[str, tuple[str, Path]]) -> AdjRibOut:
    """``best``: prefix -> (the peer we learned it from, its path), as ``RIB.best_paths`` gives.

    Each session's export filters (its BGPPeer's) then drop what they reject; a next hop passed
    on is the original one or ours as the session's next-hop mode says."""
    sessions = {s.peer_ip: s for s in plan.sessions}
    out: AdjRibOut = {peer: {} for peer in sessions}
    ibgp = {peer: s for peer, s in sessions.items() if plan.ibgp(s)}
    ebgp = {peer: s for peer, s in sessions.items() if peer not in ibgp}
    filtered = {peer for peer, s in sessions.items() if s.export_rules}
    for prefix, (source, path) in best.items():
        if prefix in plan.announce or source not in ibgp:
            continue  # our own take precedence; eBGP-learned routes are passed on to no one
        # One advert per next-hop choice, shared by the peers that get it (a reflector has many).
        adverts: dict[tuple[bool, bool], Advert] = {}
        targets: list[tuple[str, bool, bool]] = []  # (peer, over iBGP, keeps the next hop)
        if plan.cluster_id is not None:
            # Reflected as RFC 4456 says: from a client to every other iBGP peer, else to clients.
            client = sessions[source].rr_client
            targets += [
                (peer, True, s.next_hop != "Self")
                for peer, s in ibgp.items()
                if peer != source and (client or s.rr_client)
            ]
        if ebgp and _in_pools(prefix, plan.exported_pools):
            # To an eBGP peer, as Calico's nodes do: the pool routes learned over iBGP.
            targets += [(peer, False, s.next_hop == "Keep") for peer, s in ebgp.items()]
        for peer, reflected, keep in targets:
            if peer in filtered and not sessions[peer].exports(prefix, remote=True):
                continue
            advert = adverts.get((reflected, keep))
            if advert is None:
                next_hop = path.next_hop if keep else SELF
                if reflected:
                    cluster_list = (str(plan.cluster_id), *path.cluster_list)
                    advert = Advert(next_hop, path.originator_id or source, cluster_list, path.communities)
                else:
                    advert = Advert(next_hop, communities=path.communities)
                adverts[(reflected, keep)] = advert
            out[peer][prefix] = advert
    for prefix in plan.announce:
        own = Advert(communities=plan.communities_for(prefix))
        for peer, session in sessions.items():
            if session.exports(prefix, remote=False):
                out[peer][prefix] = own
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
        if before == table:
            continue
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
