"""Policy rendered as iptables chains and ipsets: the rules' shapes (pure), and the whole of it
loaded by the real iptables-restore and ipset in a namespace of its own."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from datastore.models import GlobalNetworkPolicy, NetworkPolicy, Profile, WorkloadEndpoint
from felix.calc.chains import ACCEPT_MARK, Ruleset, endpoint_chain, policy_chain, profile_chain
from felix.calc.dispatch import PolicyOptions
from felix.calc.policy import Policy, plan
from felix.calc.rules import CONNTRACK, ipset_input, iptables_input, render
from felix.dataplane.policy import PolicyCommandFailed, PolicyTables
from lab.network import namespaces
from tests.policy_helpers import FRONTEND_TO_DB_8080

NODE = "node-1"


def wep(name: str, ip: str, ports: list[dict[str, Any]] | None = None, **labels: str) -> WorkloadEndpoint:
    return WorkloadEndpoint.model_validate(
        {
            "metadata": {"name": name, "namespace": "shop", "labels": labels},
            "spec": {
                "node": NODE,
                "interfaceName": f"cali{name}",
                "ipNetworks": [f"{ip}/32"],
                "profiles": ["projectcalico-default-allow"],
                "ports": ports or [],
            },
        }
    )


WORKLOADS = [
    wep("db", "10.244.0.1", ports=[{"name": "metrics", "protocol": "TCP", "port": 9100}], role="db"),
    wep("front", "10.244.0.2", role="frontend"),
]
PROFILES = {Profile.DEFAULT_ALLOW: Profile.default_allow()}


def rendered(*policies: Policy) -> Ruleset:
    return render(plan(NODE, WORKLOADS, [], list(policies), PROFILES), PolicyOptions())


def netpol(spec: dict[str, Any], name: str = "p") -> NetworkPolicy:
    return NetworkPolicy.model_validate({"metadata": {"name": name, "namespace": "shop"}, "spec": spec})


ALLOW_FRONTEND = netpol(FRONTEND_TO_DB_8080)


def test_an_endpoint_runs_its_policies_in_order_then_its_profiles() -> None:
    ruleset = rendered(ALLOW_FRONTEND)
    to_db = ruleset.chain(endpoint_chain("calidb", "Ingress")).rules
    pi = policy_chain("shop/p", "Ingress")
    assert to_db == (
        *CONNTRACK,
        "-j MARK --set-xmark 0/0x30000",
        f"-m mark --mark 0/0x20000 -j {pi}",
        "-m mark --mark 0x10000/0x10000 -j RETURN",  # allowed: FORWARD (or OUTPUT) accepts it
        "-m mark --mark 0/0x20000 -j DROP",  # selected by a policy that did not decide: dropped
        f"-j {profile_chain('projectcalico-default-allow', 'Ingress')}",
        "-m mark --mark 0x10000/0x10000 -j RETURN",
        "-j DROP",
    )
    (frontends,) = [s for s in ruleset.sets if s.name.startswith("felid-s-")]
    assert frontends.members == {"10.244.0.2"}
    assert ruleset.chain(pi).rules == (
        f"-p tcp -m set --match-set {frontends.name} src -m multiport --dports 8080"
        " -j MARK --set-xmark 0x10000/0x10000",
        "-m mark --mark 0x10000/0x10000 -j RETURN",
    )
    # The frontend is selected by no policy: its profile decides; its own address only.
    from_front = ruleset.chain(endpoint_chain("califront", "Egress")).rules
    assert from_front[2] == "! -s 10.244.0.2 -j DROP" and f"{ACCEPT_MARK:#x}" in from_front[-2]
    assert all(len(c.name) <= 28 for c in ruleset.chains) and all(len(s.name) <= 31 for s in ruleset.sets)


def test_actions_ports_nets_icmp_and_what_ipv4_never_carries() -> None:
    policy = GlobalNetworkPolicy.model_validate(
        {
            "metadata": {"name": "g"},
            "spec": {
                "selector": "all()",
                "ingress": [
                    {
                        "action": "Deny",
                        "protocol": "UDP",
                        "source": {"nets": ["198.51.100.0/24"]},
                        "destination": {"ports": list(range(1, 21))},
                    },
                    {"action": "Log", "source": {"nets": ["192.0.2.0/24", "203.0.113.0/24"]}},
                    # One net and one notNet: iptables takes one -s, so the second is a set.
                    {"action": "Deny", "source": {"nets": ["10.0.0.0/8"], "notNets": ["10.1.0.0/16"]}},
                    {"action": "Pass", "protocol": "ICMP", "icmp": {"type": 8, "code": 0}},
                    {"action": "Allow", "protocol": "ICMPv6"},
                    {
                        "action": "Allow",
                        "protocol": "TCP",
                        "destination": {"ports": ["metrics"], "notPorts": ["1000:2000"]},
                    },
                ],
            },
        }
    )
    ruleset = rendered(policy)
    rules = ruleset.chain(policy_chain("g", "Ingress")).rules
    assert rules[0].startswith("-p udp -s 198.51.100.0/24 -m multiport --dports 1,2,3") and rules[0].endswith(
        "-j DROP"
    )
    assert rules[1].endswith("--dports 16,17,18,19,20 -j DROP")  # 20 ports: two multiport matches
    nets = next(s for s in ruleset.sets if s.members == {"192.0.2.0/24", "203.0.113.0/24"})
    assert rules[2] == f'-m set --match-set {nets.name} src -j LOG --log-prefix "felid-packet: "'
    one_of = next(s for s in ruleset.sets if s.members == {"10.1.0.0/16"})
    assert rules[3] == f"-s 10.0.0.0/8 -m set ! --match-set {one_of.name} src -j DROP"
    rules = rules[:3] + rules[4:]
    assert rules[3] == "-p icmp -m icmp --icmp-type 8/0 -j MARK --set-xmark 0x20000/0x20000"
    assert rules[4] == "-m mark --mark 0x20000/0x20000 -j RETURN"
    named = next(s for s in ruleset.sets if s.type == "hash:ip,port")
    assert named.members == {"10.244.0.1,tcp:9100"}  # the db's named port
    assert rules[5].startswith(
        f"-p tcp -m set --match-set {named.name} dst,dst -m multiport ! --dports 1000:2000"
    )
    assert len(rules) == 7  # the ICMPv6 rule is not there


def test_the_rendered_ruleset_loads_into_the_kernel() -> None:
    gnp = GlobalNetworkPolicy.model_validate(
        {
            "metadata": {"name": "g"},
            "spec": {
                "order": 5,
                "selector": "all()",
                "egress": [
                    {
                        "action": "Deny",
                        "destination": {
                            "nets": ["192.0.2.0/24", "203.0.113.7/32"],
                            "notSelector": "role == 'db'",
                        },
                    },
                    # What the kernel refused once: a single net and a single notNet on one side.
                    {"action": "Allow", "destination": {"nets": ["10.0.0.0/8"], "notNets": ["10.1.0.0/16"]}},
                ],
                "ingress": [
                    {
                        "action": "Allow",
                        "protocol": "TCP",
                        "destination": {"ports": ["metrics", 80, "8000:8100"]},
                    }
                ],
            },
        }
    )
    ruleset = rendered(ALLOW_FRONTEND, gnp)
    with namespaces("rules") as ns:

        def run(*command: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["ip", "netns", "exec", ns["rules"], *command],
                input=stdin,
                capture_output=True,
                text=True,
                check=False,
            )

        loaded = run("ipset", "restore", stdin=ipset_input(ruleset.sets))
        assert loaded.returncode == 0, loaded.stderr
        loaded = run("iptables-restore", "--noflush", stdin=iptables_input(ruleset))
        assert loaded.returncode == 0, loaded.stderr
        saved = run("iptables-save", "-t", "filter").stdout
        for chain in ruleset.chains:
            assert f":{chain.name} " in saved
        assert saved.count("-A felid-") == sum(len(c.rules) for c in ruleset.chains)
        frontends = next(s for s in ruleset.sets if s.members == {"10.244.0.2"})
        assert "10.244.0.2" in run("ipset", "list", frontends.name).stdout
        # Loading it again changes nothing (a restart rewrites what is already right to the same).
        assert run("iptables-restore", "--noflush", stdin=iptables_input(ruleset)).returncode == 0
        assert run("iptables-save", "-t", "filter").stdout.count("-A felid-") == saved.count("-A felid-")
        run("iptables", "-F")
        run("iptables", "-X")
        run("ipset", "destroy")


async def test_the_policy_manager_changes_only_what_differs_and_leaves_others_alone() -> None:
    with namespaces("tables") as ns:

        def run(*command: str) -> str:
            return subprocess.run(
                ["ip", "netns", "exec", ns["tables"], *command], capture_output=True, text=True, check=True
            ).stdout

        run("iptables", "-N", "OTHER")  # not felid's: never touched
        run("iptables", "-A", "OTHER", "-j", "ACCEPT")
        run("ipset", "create", "other-set", "hash:ip")
        tables = PolicyTables(netns=ns["tables"])
        first = rendered(ALLOW_FRONTEND)
        tables.set_desired(first)
        done = await tables.apply()
        assert len(done.chains_written) == len(first.chains) and len(done.sets_written) == len(first.sets)
        assert done.hooks and all(
            run("iptables", "-S", builtin).splitlines()[1].endswith(f"-j felid-{builtin}")
            for builtin in ("FORWARD", "INPUT", "OUTPUT")
        )  # felid's jump is the first rule of each
        assert (await tables.apply()).empty  # nothing changed: not even read back
        # Someone puts a rule before felid's jump: the next full read puts felid's first again, once.
        run("iptables", "-I", "FORWARD", "1", "-j", "OTHER")
        tables.invalidate()
        assert (await tables.apply()).hooks
        forward = run("iptables", "-S", "FORWARD").splitlines()
        assert forward[1].endswith("-j felid-FORWARD") and forward[2] == "-A FORWARD -j OTHER"
        assert sum(line.endswith("-j felid-FORWARD") for line in forward) == 1
        tables.invalidate()
        assert (await tables.apply()).empty  # read back, nothing differs: nothing written
        # A new frontend: one set's members change (swapped in whole), no chain is rewritten.
        more = [*WORKLOADS, wep("front3", "10.244.0.3", role="frontend")]
        grown = render(plan(NODE, more, [], [ALLOW_FRONTEND], PROFILES), PolicyOptions())
        tables.set_desired(grown)
        done = await tables.apply()
        assert done.sets_written == tuple(
            s.name for s in grown.sets if s.members == {"10.244.0.2", "10.244.0.3"}
        )
        # The new pod's own chains, and the two that dispatch to a workload's chains by interface.
        assert set(done.chains_written) == {
            "felid-tw-califront3",
            "felid-fw-califront3",
            "felid-from-wl",
            "felid-to-wl",
        }
        assert "10.244.0.3" in run("ipset", "list", done.sets_written[0])
        # The policy goes: its chains and its set go, the endpoints' chains are rewritten without it.
        bare = render(plan(NODE, more, [], [], PROFILES), PolicyOptions())
        tables.set_desired(bare)
        done = await tables.apply()
        assert set(done.chains_removed) == {
            policy_chain("shop/p", "Ingress"),
            policy_chain("shop/p", "Egress"),
        }
        assert done.chains_written == (endpoint_chain("calidb", "Ingress"),) and len(done.sets_removed) == 1
        tables.invalidate()
        assert (await tables.apply()).empty
        saved = run("iptables-save", "-t", "filter")
        assert (
            ":OTHER" in saved and "-A OTHER -j ACCEPT" in saved and "other-set" in run("ipset", "list", "-n")
        )
        assert policy_chain("shop/p", "Ingress") not in saved


async def test_chain_insert_mode_append_puts_felids_jumps_after_the_hosts_rules() -> None:
    with namespaces("appended") as ns:

        def run(*command: str) -> str:
            return subprocess.run(
                ["ip", "netns", "exec", ns["appended"], *command], capture_output=True, text=True, check=True
            ).stdout

        run("iptables", "-A", "FORWARD", "-s", "192.0.2.9", "-j", "DROP")  # the host's own rule
        tables = PolicyTables(netns=ns["appended"], append_hooks=True)
        tables.set_desired(rendered(ALLOW_FRONTEND))
        assert (await tables.apply()).hooks
        forward = run("iptables", "-S", "FORWARD").splitlines()
        assert forward[1] == "-A FORWARD -s 192.0.2.9/32 -j DROP" and forward[-1].endswith("-j felid-FORWARD")
        # A rule appended after felid's: the next full read puts felid's last again, once.
        run("iptables", "-A", "FORWARD", "-s", "192.0.2.10", "-j", "DROP")
        tables.invalidate()
        assert (await tables.apply()).hooks
        forward = run("iptables", "-S", "FORWARD").splitlines()
        assert (
            forward[-1].endswith("-j felid-FORWARD") and forward[-2] == "-A FORWARD -s 192.0.2.10/32 -j DROP"
        )
        assert sum(line.endswith("-j felid-FORWARD") for line in forward) == 1
        tables.invalidate()
        assert (await tables.apply()).empty


async def test_the_policy_manager_remembers_what_it_wrote_and_reads_back_when_told() -> None:
    """After a write it compares with what it wrote (reading 59,000 rules back takes longer than
    the change); the refresh timer's invalidate() and any failure make it read the kernel again."""
    with namespaces("remember") as ns:

        def run(*command: str) -> str:
            return subprocess.run(
                ["ip", "netns", "exec", ns["remember"], *command], capture_output=True, text=True, check=True
            ).stdout

        tables = PolicyTables(netns=ns["remember"])
        tables.set_desired(rendered(ALLOW_FRONTEND))
        await tables.apply()
        db_ingress = endpoint_chain("calidb", "Ingress")
        run("iptables", "-F", db_ingress)  # behind felix's back
        more = [*WORKLOADS, wep("front3", "10.244.0.3", role="frontend")]
        tables.set_desired(render(plan(NODE, more, [], [ALLOW_FRONTEND], PROFILES), PolicyOptions()))
        done = await tables.apply()
        assert db_ingress not in done.chains_written  # not read back: the flushed chain is not seen
        assert run("iptables", "-S", db_ingress).splitlines() == [f"-N {db_ingress}"]
        tables.invalidate()
        done = await tables.apply()
        assert done.chains_written == (db_ingress,)  # read back: put right, and only it
        assert len(run("iptables", "-S", db_ingress).splitlines()) > 1
        # A command that fails leaves felix unsure of the kernel: the next apply reads it back.
        tables.iptables = "iptables-no-such-command"
        tables.set_desired(rendered())
        with pytest.raises(PolicyCommandFailed):
            await tables.apply()
        assert tables.kernel is None and tables.dirty
        tables.iptables = "iptables"
        assert (await tables.apply()).chains_written


def test_dispatch_follows_the_settings_and_host_endpoints_get_failsafe_ports_first() -> None:
    from datastore.models import HostEndpoint
    from datastore.models.policy import ProtoPort
    from felix.calc.chains import host_endpoint_chain
    from felix.calc.dispatch import hook_chain

    hep = HostEndpoint.model_validate(
        {"metadata": {"name": "h", "labels": {"host": "1"}}, "spec": {"node": NODE, "interfaceName": "*"}}
    )
    options = PolicyOptions(
        workload_prefix="tap",
        endpoint_to_host="Drop",
        failsafe_inbound=(ProtoPort.model_validate("tcp:198.51.100.0/24:22"),),
        failsafe_outbound=(),
        cluster_hosts=frozenset({"203.0.113.1", "203.0.113.2"}),
        ipip=True,
    )
    ruleset = render(plan(NODE, WORKLOADS, [hep], [], PROFILES), options)
    into_host = ruleset.chain(hook_chain("INPUT")).rules
    assert into_host[:2] == ("-i tap+ -j felid-from-wl", "-i tap+ -j DROP")
    # What untracked or pre-DNAT policy allowed (its mark), the cluster's IPIP before any host
    # endpoint policy, then loopback left alone, then the HEP.
    assert into_host[2:] == (
        "-m mark --mark 0x10000/0x10000 -j ACCEPT",
        "-p 4 -m set --match-set felid-all-hosts src -j ACCEPT",
        "-i lo -j RETURN",
        "-j felid-from-hep",
    )
    assert ruleset.chain("felid-from-hep").rules == (f"-g {host_endpoint_chain('*', 'Ingress')}",)
    from_host = ruleset.chain(host_endpoint_chain("*", "Ingress")).rules
    assert from_host[2] == "-p tcp -s 198.51.100.0/24 --dport 22 -j ACCEPT"
    assert from_host[-1] == "-j DROP" and "-j RETURN" not in " ".join(from_host)  # no profile: denied
    assert ruleset.chain(host_endpoint_chain("*", "Egress")).rules[2] == "-j MARK --set-xmark 0/0x30000"
    assert next(s for s in ruleset.sets if s.name == "felid-all-hosts").members == options.cluster_hosts
    # Without host endpoints felid leaves the host's own traffic alone.
    bare = render(plan(NODE, WORKLOADS, [], [], PROFILES), PolicyOptions())
    assert bare.chain(hook_chain("INPUT")).rules == ("-i cali+ -j felid-from-wl", "-i cali+ -j ACCEPT")
    assert bare.chain("felid-from-wl").rules == (
        "-i calidb -g felid-fw-calidb",
        "-i califront -g felid-fw-califront",
        "-j DROP",  # a workload interface felix does not know
    )


def gnp(name: str, spec: dict[str, Any]) -> GlobalNetworkPolicy:
    return GlobalNetworkPolicy.model_validate({"metadata": {"name": name}, "spec": spec})


def host_policies() -> tuple[Any, list[Policy]]:
    from datastore.models import HostEndpoint

    hep = HostEndpoint.model_validate(
        {"metadata": {"name": "h", "labels": {"host": "1"}}, "spec": {"node": NODE, "interfaceName": "eth0"}}
    )
    untracked = gnp(
        "untracked",
        {
            "selector": "has(host)",
            "doNotTrack": True,
            "applyOnForward": True,
            "ingress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": [7070]}}],
            "egress": [{"action": "Allow", "protocol": "TCP", "source": {"ports": [7070]}}],
        },
    )
    pre_dnat = gnp(
        "pre-dnat",
        {
            "selector": "has(host)",
            "preDNAT": True,
            "applyOnForward": True,
            "ingress": [{"action": "Deny", "protocol": "TCP", "destination": {"ports": [9090]}}],
        },
    )
    forward = gnp(
        "forward",
        {"selector": "has(host)", "applyOnForward": True, "ingress": [{"action": "Deny", "protocol": "UDP"}]},
    )
    return hep, [untracked, pre_dnat, forward]


def test_untracked_pre_dnat_and_forward_policy_go_to_raw_mangle_and_forward() -> None:
    from felix.calc.chains import host_endpoint_chain

    hep, policies = host_policies()
    ruleset = render(plan(NODE, WORKLOADS, [hep], policies, PROFILES), PolicyOptions())
    tables = {(c.table, c.name) for c in ruleset.chains}
    assert ("raw", policy_chain("untracked", "Ingress")) in tables
    assert ("mangle", policy_chain("pre-dnat", "Ingress")) in tables
    assert ("filter", policy_chain("forward", "Ingress")) in tables
    assert ("filter", policy_chain("untracked", "Ingress")) not in tables  # runs in raw only
    untracked_in = ruleset.chain(host_endpoint_chain("eth0", "Ingress", "untracked"), "raw").rules
    assert untracked_in[0] == "-p tcp --dport 22 -j RETURN"  # failsafe: tracked, left to the filter
    assert "-p tcp --sport 53 -j RETURN" in untracked_in  # replies to the host's failsafe lookups
    assert untracked_in[-3:] == (
        f"-m mark --mark 0/0x20000 -j {policy_chain('untracked', 'Ingress')}",
        "-m mark --mark 0x10000/0x10000 -j NOTRACK",
        "-m mark --mark 0x10000/0x10000 -j RETURN",
    )  # no default drop: what it does not decide goes on
    pre = ruleset.chain(host_endpoint_chain("eth0", "Ingress", "pre-dnat"), "mangle").rules
    assert pre[-1] == "-m mark --mark 0x10000/0x10000 -j RETURN" and "-j DROP" not in pre
    forward_in = ruleset.chain(host_endpoint_chain("eth0", "Ingress", "forward")).rules
    assert forward_in[-1] == "-j DROP"  # selected by an applyOnForward policy: what it allows only
    forward_out = ruleset.chain(host_endpoint_chain("eth0", "Egress", "forward")).rules
    assert forward_out[-2:] == ("-j MARK --set-xmark 0x10000/0x10000", "-j RETURN")  # none: allowed
    # A workload is never selected by untracked or pre-DNAT policy.
    assert not any(c.table != "filter" and "calidb" in c.name for c in ruleset.chains)


async def test_raw_and_mangle_hooks_come_and_go_with_their_policy() -> None:
    hep, policies = host_policies()
    with namespaces("stages") as ns:

        def save(table: str) -> str:
            return subprocess.run(
                ["ip", "netns", "exec", ns["stages"], "iptables-save", "-t", table],
                capture_output=True,
                text=True,
                check=True,
            ).stdout

        tables = PolicyTables(netns=ns["stages"])
        tables.set_desired(render(plan(NODE, WORKLOADS, [hep], policies, PROFILES), PolicyOptions()))
        await tables.apply()
        assert '-A PREROUTING -m comment --comment "felid:hook" -j felid-PREROUTING' in save("raw")
        assert '-A OUTPUT -m comment --comment "felid:hook" -j felid-OUTPUT' in save("raw")
        assert "-j NOTRACK" in save("raw") or "-j CT --notrack" in save("raw")
        assert '-A PREROUTING -m comment --comment "felid:hook" -j felid-PREROUTING' in save("mangle")
        tables.invalidate()
        assert (await tables.apply()).empty  # read back: all three tables as written
        tables.set_desired(render(plan(NODE, WORKLOADS, [hep], policies[2:], PROFILES), PolicyOptions()))
        done = await tables.apply()
        assert done.hooks and "felid-" not in save("raw") and "felid-" not in save("mangle")
        assert "felid-FORWARD" in save("filter")
        tables.invalidate()
        assert (await tables.apply()).empty
