"""Policy in the kernel: felid's iptables chains and ipsets made to match a rendered ``Ruleset``.

``set_desired()`` only records what is wanted; ``apply()`` reads the kernel back
(``iptables-save``: the filter, mangle and raw tables; ``ipset save``), and changes only what
differs, in three steps
that never leave a rule naming a set that is not there: sets are created or refilled first
(a changed set is built beside the old one and swapped in, so its members change at once),
then every changed chain is rewritten in one ``iptables-restore --noflush`` (one commit), then
the chains and sets nothing uses any more are removed.  Each rule carries a comment with a
hash of what felid wrote (``felid:<hash>``), so reading back compares those, not iptables'
own spelling of the rule.  Only ``felid-`` chains and sets are ever touched.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from felix.calc.chains import PREFIX, TABLES, Chain, IPSet, Ruleset
from felix.calc.dispatch import HOOKS, hook_chain
from felix.dataplane.commands import run_command
from felix.dataplane.netlink import KernelError

_COMMENT = re.compile(r'--comment "?felid:([0-9a-f]+)"?')
ChainKey = tuple[str, str]  # (table, chain)
SWAP_SUFFIX = "-new"  # a set being refilled, before the swap (31 characters at most in all)


class PolicyCommandFailed(KernelError):
    """An iptables or ipset command refused what felix gave it (or is not installed)."""


@dataclass(frozen=True)
class KernelPolicy:
    """What felid has in the kernel: its chains (each the rule hashes, in order) and sets."""

    chains: dict[ChainKey, tuple[str, ...]]  # (table, name) -> rule fingerprints
    sets: dict[str, tuple[str, frozenset[str]]]  # name -> (type, members)
    hooks: dict[ChainKey, int] = field(default_factory=dict)  # (table, built-in) -> felid's jumps in it
    hooks_placed: frozenset[ChainKey] = (
        frozenset()
    )  # built-in chains whose first (Append: last) rule is felid's


@dataclass(frozen=True)
class PolicyChanges:
    sets_written: tuple[str, ...] = ()
    chains_written: tuple[str, ...] = ()
    chains_removed: tuple[str, ...] = ()
    sets_removed: tuple[str, ...] = ()
    hooks: bool = False  # a built-in chain's jump was (re)placed

    @property
    def empty(self) -> bool:
        written = self.sets_written or self.chains_written or self.hooks
        return not (written or self.chains_removed or self.sets_removed)


def tagged(chain: Chain) -> list[str]:
    """The chain's rules, each with the comment that lets a reader know it is this one."""
    return [
        f'-m comment --comment "felid:{mark}" {rule}'
        for mark, rule in zip(chain.fingerprints, chain.rules, strict=True)
    ]


HOOK_COMMENT = "felid:hook"


def hook_rule(builtin: str) -> str:
    return f'-m comment --comment "{HOOK_COMMENT}" -j {hook_chain(builtin)}'


def _by_table(text: str) -> dict[str, list[str]]:
    """``iptables-save`` output's lines, by the table (``*raw``...) they are under."""
    tables: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:].strip(), [])
        else:
            current.append(line)
    return tables


def parse_hooks(text: str, append: bool = False) -> tuple[dict[ChainKey, int], frozenset[ChainKey]]:
    """How many of felid's jumps each built-in chain has, and which have one where felid puts it:
    the first rule (chainInsertMode Insert) or the last (Append)."""
    tables = _by_table(text)
    counts: dict[ChainKey, int] = {}
    placed: set[ChainKey] = set()
    for table, builtin in HOOKS:
        rules = [line for line in tables.get(table, []) if line.startswith(f"-A {builtin} ")]
        ours = [line for line in rules if line.endswith(f"-j {hook_chain(builtin)}")]
        counts[(table, builtin)] = len(ours)
        if rules and rules[-1 if append else 0].endswith(f"-j {hook_chain(builtin)}"):
            placed.add((table, builtin))
    return counts, frozenset(placed)


def parse_iptables_save(text: str) -> dict[ChainKey, tuple[str, ...]]:
    chains: dict[ChainKey, list[str]] = {}
    for table, lines in _by_table(text).items():
        if table not in TABLES:
            continue  # nat is not policy's (felix's NAT chain is FELID-NAT-OUTGOING anyway)
        for line in lines:
            if line.startswith(f":{PREFIX}"):
                chains.setdefault((table, line[1:].split()[0]), [])
            elif line.startswith(f"-A {PREFIX}"):
                found = _COMMENT.search(line)
                chains.setdefault((table, line.split()[1]), []).append(found.group(1) if found else "")
    return {key: tuple(hashes) for key, hashes in chains.items()}


def parse_ipset_save(text: str) -> dict[str, tuple[str, frozenset[str]]]:
    types: dict[str, str] = {}
    members: dict[str, set[str]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "create" and parts[1].startswith(PREFIX):
            types[parts[1]] = parts[2]
            members.setdefault(parts[1], set())
        elif len(parts) >= 3 and parts[0] == "add" and parts[1].startswith(PREFIX):
            members.setdefault(parts[1], set()).add(parts[2])
    return {name: (types.get(name, ""), frozenset(members.get(name, set()))) for name in types}


def _normal(made: IPSet) -> frozenset[str]:
    """Members as ``ipset save`` prints them (a /32 net is printed as the address)."""
    return frozenset(m.removesuffix("/32") if made.type == "hash:net" else m for m in made.members)


def changes_for(
    desired: Ruleset, kernel: KernelPolicy
) -> tuple[list[IPSet], list[Chain], list[ChainKey], list[str]]:
    """(sets to write, chains to write, chains to remove, sets to remove)."""
    sets = [s for s in desired.sets if kernel.sets.get(s.name) != (s.type, _normal(s))]
    chains = [c for c in desired.chains if kernel.chains.get((c.table, c.name)) != c.fingerprints]
    wanted_chains = {(c.table, c.name) for c in desired.chains}
    wanted_sets = {s.name for s in desired.sets}
    gone_chains = sorted(n for n in kernel.chains if n not in wanted_chains)
    gone_sets = sorted(n for n in kernel.sets if n not in wanted_sets)  # a crash's half-swapped ones too
    return sets, chains, gone_chains, gone_sets


def ipset_script(sets: Sequence[IPSet], existing: dict[str, tuple[str, frozenset[str]]]) -> str:
    lines: list[str] = []
    for made in sets:
        if made.name in existing and existing[made.name][0] == made.type:
            fresh = f"{made.name[: 31 - len(SWAP_SUFFIX)]}{SWAP_SUFFIX}"
            lines.append(f"create {fresh} {made.type} family inet -exist")
            lines.append(f"flush {fresh}")
            lines += [f"add {fresh} {m}" for m in sorted(made.members)]
            lines.append(f"swap {fresh} {made.name}")
            lines.append(f"destroy {fresh}")
        else:
            lines.append(f"create {made.name} {made.type} family inet")
            lines += [f"add {made.name} {m}" for m in sorted(made.members)]
    return "\n".join([*lines, ""])


def after(
    kernel: KernelPolicy,
    sets: Sequence[IPSet],
    chains: Sequence[Chain],
    gone_chains: Sequence[ChainKey],
    gone_sets: Sequence[str],
    *,
    hooks: frozenset[ChainKey],
) -> KernelPolicy:
    """What the kernel holds once these changes are in: what felix compares with next time, rather
    than reading back a large table after every change (iptables-save of 59,000 rules takes
    about 0.7 s here); the refresh timer and any failure make it read back again."""
    chain_view = dict(kernel.chains)
    for key in gone_chains:
        chain_view.pop(key, None)
    chain_view.update(((c.table, c.name), c.fingerprints) for c in chains)
    set_view = dict(kernel.sets)
    for name in gone_sets:
        set_view.pop(name, None)
    set_view.update((s.name, (s.type, _normal(s))) for s in sets)
    return KernelPolicy(chain_view, set_view, dict.fromkeys(hooks, 1), hooks)


def wanted_hooks(desired: Ruleset) -> frozenset[ChainKey]:
    """The built-in chains that jump to felid's: those whose felid chain of the same name the
    ruleset has (raw and mangle only while untracked or pre-DNAT policy needs them)."""
    have = {(c.table, c.name) for c in desired.chains}
    return frozenset((t, b) for t, b in HOOKS if (t, hook_chain(b)) in have)


def hook_fixes(
    kernel: KernelPolicy, wanted: frozenset[ChainKey], append: bool = False
) -> dict[str, list[str]]:
    """Per table: felid's jump first (Append: last) in each wanted built-in chain, once (a jump
    someone moved or copied is deleted and put back), and gone from the others; in the same commit
    as the chains, so a packet sees before or after."""
    lines: dict[str, list[str]] = {}
    for table, builtin in HOOKS:
        key = (table, builtin)
        present = kernel.hooks.get(key, 0)
        if key in wanted and key in kernel.hooks_placed and present == 1:
            continue
        if key not in wanted and present == 0:
            continue
        fix = [f"-D {builtin} {hook_rule(builtin)}"] * present
        if key in wanted:
            fix.append(
                f"-A {builtin} {hook_rule(builtin)}" if append else f"-I {builtin} 1 {hook_rule(builtin)}"
            )
        lines.setdefault(table, []).extend(fix)
    return lines


def iptables_script(
    chains: Sequence[Chain], removed: Sequence[ChainKey], hooks: Mapping[str, Sequence[str]] | None = None
) -> str:
    """One commit per table: each changed chain declared (which empties it) and refilled, the
    built-in chains' jumps put right; then the chains no longer used are emptied and deleted
    (nothing refers to them once the others are rewritten)."""
    hooks = hooks or {}
    out: list[str] = []
    for table in TABLES:
        mine = [c for c in chains if c.table == table]
        gone = [name for t, name in removed if t == table]
        fixes = hooks.get(table, [])
        if not (mine or gone or fixes):
            continue
        out += [f"*{table}", *(f":{c.name} - [0:0]" for c in mine), *(f":{name} - [0:0]" for name in gone)]
        out += [f"-A {c.name} {rule}" for c in mine for rule in tagged(c)]
        out += fixes
        out += [f"-X {name}" for name in gone]
        out.append("COMMIT")
    return "\n".join([*out, ""])


@dataclass
class PolicyTables:
    """felix's policy manager: ``set_desired`` marks it dirty, ``apply`` makes the kernel match."""

    netns: str | None = None  # run the commands in this network namespace (the lab's hosts)
    iptables: str = "iptables"  # or iptables-legacy, iptables-nft (FelixSettings.iptables_backend)
    append_hooks: bool = False  # FelixSettings.chain_insert_mode Append: felid's jumps go last
    desired: Ruleset | None = None
    dirty: bool = True  # the kernel may differ from ``desired``: the next apply compares
    kernel: KernelPolicy | None = None  # what felix last read or wrote; None: read it back first
    applied: list[PolicyChanges] = field(default_factory=list)

    async def _run(self, *command: str, stdin: str | None = None) -> str:
        prefix = ("ip", "netns", "exec", self.netns) if self.netns is not None else ()
        _, out = await run_command(*prefix, *command, stdin=stdin, error=PolicyCommandFailed)
        return out

    def set_desired(self, ruleset: Ruleset) -> None:
        if ruleset != self.desired:
            self.desired = ruleset
            self.dirty = True

    def invalidate(self) -> None:
        """Someone may have changed the kernel (the refresh timer says so, or a command failed):
        read it back next time."""
        self.dirty = True
        self.kernel = None

    async def read(self) -> KernelPolicy:
        saved = await self._run(f"{self.iptables}-save")
        hooks, first = parse_hooks(saved, self.append_hooks)
        sets = parse_ipset_save(await self._run("ipset", "save"))
        return KernelPolicy(parse_iptables_save(saved), sets, hooks, first)

    async def apply(self) -> PolicyChanges:
        """Make the kernel match; nothing to do (no read either) while nothing changed."""
        if self.desired is None or not self.dirty:
            return PolicyChanges()
        kernel = self.kernel if self.kernel is not None else await self.read()
        self.kernel = None  # until every command below has succeeded
        sets, chains, gone_chains, gone_sets = changes_for(self.desired, kernel)
        hooks_wanted = wanted_hooks(self.desired)
        hooks = hook_fixes(kernel, hooks_wanted, self.append_hooks)
        if sets:
            await self._run("ipset", "restore", stdin=ipset_script(sets, kernel.sets))
        if chains or gone_chains or hooks:
            script = iptables_script(chains, gone_chains, hooks)
            await self._run(f"{self.iptables}-restore", "--noflush", stdin=script)
        if gone_sets:
            await self._run("ipset", "restore", stdin="".join(f"destroy {name}\n" for name in gone_sets))
        self.kernel = after(kernel, sets, chains, gone_chains, gone_sets, hooks=hooks_wanted)
        done = PolicyChanges(
            tuple(s.name for s in sets),
            tuple(c.name for c in chains),
            tuple(name for _, name in gone_chains),
            tuple(gone_sets),
            hooks=bool(hooks),
        )
        self.dirty = False
        self.applied.append(done)
        return done
