"""felid's iptables objects as data, and their names: everything felid makes is ``felid-…``, so a
restart finds its own and nothing else.  Pure: the renderer builds these, the dataplane
(``felix.dataplane.policy``) loads them."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Literal

from datastore.models.policy import Direction
from datastore.selector import short_id

PREFIX = "felid-"
ACCEPT_MARK = 0x10000
PASS_MARK = 0x20000
MARKS = ACCEPT_MARK | PASS_MARK
SetType = Literal["hash:ip", "hash:net", "hash:ip,port"]
Table = Literal["filter", "mangle", "raw"]
TABLES: tuple[Table, ...] = ("raw", "mangle", "filter")  # in the order packets meet them


@dataclass(frozen=True)
class Chain:
    name: str
    rules: tuple[str, ...]  # each what follows ``-A <name>`` in iptables-restore input
    table: Table = "filter"

    @cached_property
    def fingerprints(self) -> tuple[str, ...]:
        """One short hash per rule (of its place and text): the dataplane writes each into its
        rule's comment and compares these when it reads the kernel back, not iptables' own
        spelling.  Kept with the chain, so a chain the calculator reuses is hashed once."""
        return tuple(
            hashlib.blake2b(f"{i}|{rule}".encode(), digest_size=8).hexdigest()
            for i, rule in enumerate(self.rules)
        )


@dataclass(frozen=True)
class IPSet:
    name: str
    type: SetType
    members: frozenset[str]


@dataclass(frozen=True)
class Ruleset:
    chains: tuple[Chain, ...]
    sets: tuple[IPSet, ...]

    def chain(self, name: str, table: Table = "filter") -> Chain:
        return next(c for c in self.chains if c.name == name and c.table == table)


@lru_cache(maxsize=1 << 16)  # every endpoint's chain names its policies' chains: hash each once
def _name(kind: str, ident: str) -> str:
    return f"{PREFIX}{kind}-{short_id(ident)[:16]}"


def policy_chain(policy_id: str, direction: Direction) -> str:
    return _name("pi" if direction == "Ingress" else "po", policy_id)


def profile_chain(name: str, direction: Direction) -> str:
    return _name("pri" if direction == "Ingress" else "pro", name)


def endpoint_chain(interface: str, direction: Direction) -> str:
    """A workload's: ``tw`` (to it: its ingress), ``fw`` (from it: its egress)."""
    return f"{PREFIX}{'tw' if direction == 'Ingress' else 'fw'}-{interface}"


_STAGE_MARK = {"normal": "", "untracked": "u", "pre-dnat": "p", "forward": "f"}


def host_endpoint_chain(interface: str, direction: Direction, stage: str = "normal") -> str:
    """A host interface's: ``fh`` (from it: ingress), ``th`` (out of it: egress); ``fhu``/``thu``
    for its untracked policy (raw), ``fhp`` for its pre-DNAT policy (mangle), ``fhf``/``thf`` for
    forwarded traffic.  ``*`` (every interface) is spelled ``:all``, which no interface name can be."""
    name = ":all" if interface == "*" else interface
    return f"{PREFIX}{'fh' if direction == 'Ingress' else 'th'}{_STAGE_MARK[stage]}-{name}"


def selector_set(ident: str) -> str:
    return f"{PREFIX}s-{ident}"


def nets_set(nets: Sequence[str]) -> IPSet:
    return IPSet(f"{PREFIX}n-{short_id(','.join(sorted(nets)))}", "hash:net", frozenset(nets))


def port_set(ident: str) -> str:
    return f"{PREFIX}p-{ident}"
