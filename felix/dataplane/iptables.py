"""NAT-outgoing rules in a chain felid owns, written with iptables-restore.

``FELID-NAT-OUTGOING`` (nat table, jumped to from POSTROUTING) masquerades
traffic from a ``natOutgoing`` pool to destinations outside every pool.  The
chain is rewritten atomically, and only when what the kernel has differs.
"""

from __future__ import annotations

from collections.abc import Sequence

from felix.dataplane.commands import run_command as _run

CHAIN = "FELID-NAT-OUTGOING"
JUMP = ("-A", "POSTROUTING", "-m", "comment", "--comment", "felid:nat-outgoing", "-j", CHAIN)


def nat_rules(nat_pools: Sequence[str], all_pools: Sequence[str]) -> list[str]:
    """The chain's rules, in ``iptables -S`` form."""
    rules = []
    for source in nat_pools:
        rules += [f"-A {CHAIN} -s {source} -d {pool} -j RETURN" for pool in all_pools]
        rules.append(f"-A {CHAIN} -s {source} -j MASQUERADE")
    return rules


COMMANDS = {"Auto": "iptables", "Legacy": "iptables-legacy", "NFT": "iptables-nft"}


class NatTable:
    def __init__(self, backend: str = "Auto") -> None:
        self.backend = backend  # Calico's IptablesBackend: Auto is the system's iptables alternative

    async def apply(self, nat_pools: Sequence[str], all_pools: Sequence[str]) -> bool:
        """Make the chain hold exactly the rules for these pools; whether anything changed."""
        wanted = nat_rules(nat_pools, all_pools)
        iptables = COMMANDS[self.backend]
        code, current = await _run(iptables, "-t", "nat", "-S", CHAIN, check=False)
        have = [line for line in current.splitlines() if line.startswith("-A ")] if code == 0 else None
        if have is None and not wanted:
            return False  # no NAT wanted and none of ours there: leave iptables alone
        changed = False
        if have != wanted:
            script = "\n".join(["*nat", f":{CHAIN} - [0:0]", *wanted, "COMMIT", ""])
            await _run(f"{iptables}-restore", "--noflush", stdin=script)
            changed = True
        jump_present, _ = await _run(iptables, "-t", "nat", "-C", *JUMP[1:], check=False)
        if jump_present != 0:
            await _run(iptables, "-t", "nat", *JUMP)
            changed = True
        return changed
