"""felix's policy at scale, against bare iptables: ``python -m bench.policy`` (as root).

Two figures, each beside its baseline from the same run (the third, TCP throughput with 100
policies against none, is ``bench/policy_throughput.py``):

1. Programming ``--policies`` NetworkPolicies over ``--endpoints`` local workloads from nothing:
   felix's whole path (``PolicyCalculator`` from the datastore's models to the rendered ruleset,
   ``PolicyTables.apply`` reading the kernel back and writing) against loading the very same
   rendered ruleset with one bare ``ipset restore`` and one ``iptables-restore`` (goal: ratio
   <= 1.5).
2. One pod's label change reaching the kernel at that scale: felix's path again (the same
   calculator updated with the changed pod, apply: one set's members change), against the bare
   ``ipset`` command that makes the same change (goal: < 50 ms).

Everything runs in network namespaces of its own, removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from datastore.models import NetworkPolicy, Profile, WorkloadEndpoint
from felix.calc.calculator import PolicyCalculator
from felix.calc.chains import Ruleset
from felix.calc.dispatch import PolicyOptions
from felix.calc.policy import Policy
from felix.calc.rules import ipset_input, iptables_input
from felix.dataplane.policy import PolicyTables, tagged

NODE = "bench-node"
PROFILES = {Profile.DEFAULT_ALLOW: Profile.default_allow()}


def workload(i: int, role: str | None = None) -> WorkloadEndpoint:
    return WorkloadEndpoint.model_validate(
        {
            "metadata": {
                "name": f"w{i}",
                "namespace": "bench",
                "labels": {"app": f"a{i % 50}", "role": role or f"r{i % 20}"},
            },
            "spec": {
                "node": NODE,
                "interfaceName": f"cali{i:07d}",
                "ipNetworks": [f"10.{64 + i // 65536}.{i // 256 % 256}.{i % 256}/32"],
                "profiles": [Profile.DEFAULT_ALLOW],
            },
        }
    )


def policy(i: int) -> NetworkPolicy:
    return NetworkPolicy.model_validate(
        {
            "metadata": {"name": f"p{i}", "namespace": "bench"},
            "spec": {
                "order": i,
                "selector": f"app == 'a{i % 50}'",
                "ingress": [
                    {
                        "action": "Allow",
                        "protocol": "TCP",
                        "source": {"selector": f"role == 'r{i % 20}'"},
                        "destination": {"ports": [8000 + i % 100]},
                    },
                    {"action": "Deny", "protocol": "UDP", "source": {"nets": [f"198.51.100.{i % 256}/32"]}},
                ],
            },
        }
    )


def desired(
    calculator: PolicyCalculator, weps: Sequence[WorkloadEndpoint], policies: Sequence[Policy]
) -> Ruleset:
    return calculator.update(weps, [], policies, PROFILES, PolicyOptions())


def run(netns: str, *command: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", netns, *command], input=stdin, capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise SystemExit(f"{' '.join(command)}: {done.stderr.strip()[:400]}")
    return done.stdout


@contextmanager
def namespace(name: str) -> Iterator[str]:
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def bare_load(netns: str, ruleset: Ruleset) -> float:
    """The same chains and sets (comments included, as felix writes them) with one command each."""
    chains = Ruleset(tuple(type(c)(c.name, tuple(tagged(c))) for c in ruleset.chains), ruleset.sets)
    sets, rules = ipset_input(ruleset.sets), iptables_input(chains)
    started = time.perf_counter()
    run(netns, "ipset", "restore", stdin=sets)
    run(netns, "iptables-restore", "--noflush", stdin=rules)
    return time.perf_counter() - started


def scale(policies: int, endpoints: int, runs: int) -> dict[str, float]:
    weps = [workload(i) for i in range(endpoints)]
    pols = [policy(i) for i in range(policies)]
    felix_times, bare_times, label_times, bare_label_times = [], [], [], []
    ruleset = Ruleset((), ())
    rules = 0
    for attempt in range(runs):
        with namespace(f"felid-bench-pol{attempt}") as ns:
            started = time.perf_counter()
            tables = PolicyTables(netns=ns)
            calculator = PolicyCalculator(NODE)  # kept, as felix keeps it, for the label change
            tables.set_desired(desired(calculator, weps, pols))
            asyncio.run(tables.apply())
            felix_times.append(time.perf_counter() - started)
            assert tables.desired is not None
            ruleset = tables.desired
            rules = sum(len(c.rules) for c in ruleset.chains)
            # One pod changes role: it joins one selector's set and leaves another.
            changed = [*weps]
            changed[7] = workload(7, role="r3")
            started = time.perf_counter()
            tables.set_desired(desired(calculator, changed, pols))
            done = asyncio.run(tables.apply())
            label_times.append(time.perf_counter() - started)
            assert done.sets_written and not done.chains_written, done
            victim = done.sets_written[0]
            started = time.perf_counter()
            run(ns, "ipset", "add", victim, "10.99.0.1")
            bare_label_times.append(time.perf_counter() - started)
        with namespace(f"felid-bench-bare{attempt}") as ns:
            bare_times.append(bare_load(ns, ruleset))
    felix, bare = statistics.median(felix_times), statistics.median(bare_times)
    return {
        "rules": rules,
        "sets": len(ruleset.sets),
        "felix_program_s": felix,
        "bare_restore_s": bare,
        "program_ratio": felix / bare,
        "label_change_ms": statistics.median(label_times) * 1000,
        "bare_ipset_add_ms": statistics.median(bare_label_times) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--policies", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    at_scale = scale(args.policies, args.endpoints, args.runs)
    print(
        f"{args.policies} policies over {args.endpoints} endpoints: "
        f"{at_scale['rules']} rules, {at_scale['sets']} sets"
    )
    print(
        f"  program from nothing: felix {at_scale['felix_program_s']:.3f} s, bare ipset+iptables-restore "
        f"{at_scale['bare_restore_s']:.3f} s, ratio {at_scale['program_ratio']:.2f} (goal <= 1.5)"
    )
    print(
        f"  one label change to the kernel: felix {at_scale['label_change_ms']:.1f} ms, bare ipset add "
        f"{at_scale['bare_ipset_add_ms']:.1f} ms (goal < 50 ms)"
    )


if __name__ == "__main__":
    main()
