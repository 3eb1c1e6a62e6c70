"""Which kernel interface felix's policy should use: ``python -m bench.policy_backend`` (as root).

The same policy-shaped ruleset is loaded in a network namespace of its own, twice: once as
iptables rules (``iptables-restore``; Debian 12's iptables is the nf_tables variant) with ipset
sets, and once as one nftables table with named sets and a verdict map (``nft -f``).  The ruleset:
``--policies`` policy chains of three rules, each matching the policy's source set, and
``--endpoints`` endpoint chains (conntrack, two policy jumps, drop), dispatched from FORWARD by
interface.  Printed for each: loading it all from nothing, adding one address to one set (a pod
joining a selector), rewriting one policy chain, and reading the whole ruleset back (a restart's
reconciliation).  Every command is a process, as a first implementation would run it.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from collections.abc import Sequence

NETNS = "felid-bench-fw"


def timed(command: Sequence[str], data: str | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        ["ip", "netns", "exec", NETNS, *command], input=data, capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.strip()[:400]}")
    return time.perf_counter() - started


def best(command: Sequence[str], data: str | None = None, runs: int = 5) -> float:
    return min(timed(command, data) for _ in range(runs))


def address(p: int, n: int) -> str:
    return f"10.{p // 250}.{p % 250}.{n}"


def iptables_ruleset(policies: int, endpoints: int) -> tuple[str, str]:
    sets = "".join(
        f"create felid-s{p} hash:ip family inet\n"
        f"add felid-s{p} {address(p, 1)}\nadd felid-s{p} {address(p, 2)}\n"
        for p in range(policies)
    )
    lines = ["*filter", ":FORWARD ACCEPT [0:0]"]
    lines += [f":felid-pi-{p} - [0:0]" for p in range(policies)]
    lines += [f":felid-tw-{e} - [0:0]" for e in range(endpoints)]
    for p in range(policies):
        match = f"-m set --match-set felid-s{p} src"
        lines += [
            f"-A felid-pi-{p} -p tcp {match} -m multiport --dports 8080,9090 -j ACCEPT",
            f"-A felid-pi-{p} -p udp {match} --dport 53 -j ACCEPT",
            f"-A felid-pi-{p} {match} -j DROP",
        ]
    for e in range(endpoints):
        lines += [
            f"-A felid-tw-{e} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            f"-A felid-tw-{e} -j felid-pi-{e % policies}",
            f"-A felid-tw-{e} -j felid-pi-{(e + 1) % policies}",
            f"-A felid-tw-{e} -j DROP",
            f"-A FORWARD -o cali{e:011d} -j felid-tw-{e}",
        ]
    return sets, "\n".join([*lines, "COMMIT", ""])


def nft_ruleset(policies: int, endpoints: int) -> str:
    lines = ["table inet felid {"]
    for p in range(policies):
        lines.append(f"  set s{p} {{ type ipv4_addr; elements = {{ {address(p, 1)}, {address(p, 2)} }}; }}")
    for p in range(policies):
        lines.append(
            f"  chain pi-{p} {{ ip saddr @s{p} tcp dport {{ 8080, 9090 }} accept; "
            f"ip saddr @s{p} udp dport 53 accept; ip saddr @s{p} drop; }}"
        )
    for e in range(endpoints):
        lines.append(
            f"  chain tw-{e} {{ ct state established,related accept; "
            f"jump pi-{e % policies}; jump pi-{(e + 1) % policies}; drop; }}"
        )
    dispatch = ", ".join(f'"cali{e:011d}" : jump tw-{e}' for e in range(endpoints))
    lines.append(f"  map to_workload {{ type ifname : verdict; elements = {{ {dispatch} }}; }}")
    lines.append(
        "  chain forward { type filter hook forward priority 0; policy accept; oifname vmap @to_workload; }"
    )
    return "\n".join([*lines, "}", ""])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--policies", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=1000)
    args = parser.parse_args()
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    try:
        sets, rules = iptables_ruleset(args.policies, args.endpoints)
        load = timed(["ipset", "restore"], sets) + timed(["iptables-restore", "--noflush"], rules)
        member = min(timed(["ipset", "add", "felid-s5", f"10.99.0.{i}"]) for i in range(5))
        chain = (
            "*filter\n:felid-pi-5 - [0:0]\n"
            "-A felid-pi-5 -p tcp -m set --match-set felid-s5 src --dport 1 -j ACCEPT\nCOMMIT\n"
        )
        rewrite = best(["iptables-restore", "--noflush"], chain)
        read = best(["iptables-save"], runs=3) + best(["ipset", "save"], runs=3)
        table = [("iptables-nft + ipset", load, member, rewrite, read, rules.count("\n"))]
        timed(["iptables", "-F"])
        timed(["iptables", "-X"])
        timed(["ipset", "destroy"])
        ruleset = nft_ruleset(args.policies, args.endpoints)
        load = timed(["nft", "-f", "-"], ruleset)
        member = min(
            timed(["nft", "add", "element", "inet", "felid", "s5", f"{{ 10.99.0.{i} }}"]) for i in range(5)
        )
        rewrite = best(
            ["nft", "-f", "-"],
            "flush chain inet felid pi-5\nadd rule inet felid pi-5 ip saddr @s5 tcp dport 1 accept\n",
        )
        read = best(["nft", "-j", "list", "ruleset"], runs=3)
        table.append(("nftables", load, member, rewrite, read, ruleset.count("\n")))
    finally:
        subprocess.run(["ip", "netns", "del", NETNS], check=False)
    print(
        f"{args.policies} policies, {args.endpoints} endpoints, one namespace;"
        " each figure the best of its runs"
    )
    print("| backend | load from nothing | one set member | one chain rewritten | read back | lines |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, load, member, rewrite, read, lines in table:
        print(
            f"| {name} | {load * 1e3:.0f} ms | {member * 1e3:.1f} ms | {rewrite * 1e3:.1f} ms"
            f" | {read * 1e3:.0f} ms | {lines} |"
        )


if __name__ == "__main__":
    main()
