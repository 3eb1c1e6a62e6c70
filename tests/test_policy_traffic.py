"""Policy enforced on real traffic: two felid-node hosts, pods from the CNI plugin with labels,
TCP, UDP and ICMP probes checked against a truth table of what must pass and what must not."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from lab.cluster import Cluster, Workload
from lab.network import LabHost, ip
from lab.probes import Probe, check, listen
from lab.workloads import ping
from tests.policy_helpers import FRONTEND_TO_DB_8080

PORTS = (8080, 9090)
SHOP = "shop"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    made = Cluster(tmp_path_factory.mktemp("policy"), 2, prefix="fp")
    listeners: list[subprocess.Popen[str]] = []
    try:
        made.build()
        for host in made.hosts:
            made.start_node(host)
        made.wait_ready(timeout=90)
        one, two = made.hosts
        made.add_workload(one, "db", labels={"role": "db"}, namespace=SHOP)
        made.add_workload(one, "front1", labels={"role": "frontend"}, namespace=SHOP)
        made.add_workload(two, "front2", labels={"role": "frontend"}, namespace=SHOP)
        made.add_workload(two, "other", labels={"role": "other"}, namespace=SHOP)
        made.add_workload(two, "guest", labels={"role": "frontend"}, namespace="guest")
        listeners += [listen(w.netns, PORTS) for w in made.workloads]
        yield made
    finally:
        for process in listeners:
            process.kill()
            process.wait()
        made.destroy()


def pod(cluster: Cluster, name: str) -> Workload:
    return next(w for w in cluster.workloads if w.name == name)


def apply(cluster: Cluster, *documents: dict[str, Any]) -> None:
    done = cluster.felidctl("apply", "-f", "-", stdin=yaml.safe_dump_all(documents))
    assert done.returncode == 0, done.stderr


@contextlib.contextmanager
def applied(cluster: Cluster, *documents: dict[str, Any]) -> Iterator[None]:
    apply(cluster, *documents)
    try:
        yield
    finally:
        done = cluster.felidctl("delete", "-f", "-", stdin=yaml.safe_dump_all(documents))
        assert done.returncode == 0, done.stderr


def netpol(name: str, spec: dict[str, Any], namespace: str = SHOP) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def gnp(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


Table = dict[tuple[str, str, str], bool]  # (source, target, probe) -> answered


def observe(cluster: Cluster, sources: list[str], targets: list[str], kinds: tuple[str, ...]) -> Table:
    """Every probe from every source to every other target: tcp:PORT, udp:PORT, icmp."""
    table: Table = {}

    def from_one(source: str) -> None:
        here = pod(cluster, source)
        others = [pod(cluster, t) for t in targets if t != source]
        probes = [(t, k) for t in others for k in kinds if k != "icmp"]
        answered = check(
            here.netns,
            [Probe(k.split(":")[0], t.address, int(k.split(":")[1])) for t, k in probes],
            timeout=0.7,
        )
        for (t, k), ok in zip(probes, answered, strict=True):
            table[(source, t.name, k)] = ok
        if "icmp" in kinds:
            for t in others:
                table[(source, t.name, "icmp")] = ping(here.netns, t.address, count=1, wait=0.7).ok

    threads = [threading.Thread(target=from_one, args=(s,)) for s in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return table


def differences(seen: Table, expected: Table) -> list[str]:
    return [
        f"{s} -> {t} {k}: {'answered' if seen[(s, t, k)] else 'dropped'}, expected "
        f"{'answered' if want else 'dropped'}"
        for (s, t, k), want in sorted(expected.items())
        if seen[(s, t, k)] != want
    ]


EVERYONE = ["db", "front1", "front2", "other", "guest"]
KINDS = ("tcp:8080", "tcp:9090", "udp:8080", "icmp")

ALLOW_FRONTEND_TO_DB = netpol("db-from-frontend", FRONTEND_TO_DB_8080)


def test_no_policy_everything_is_allowed(cluster: Cluster) -> None:
    seen = observe(cluster, EVERYONE, EVERYONE, KINDS)
    assert differences(seen, dict.fromkeys(seen, True)) == []


def test_an_ingress_allow_lets_exactly_its_flows_through_on_both_hosts(cluster: Cluster) -> None:
    with applied(cluster, ALLOW_FRONTEND_TO_DB):
        time.sleep(1)  # within a second on every host
        seen = observe(cluster, EVERYONE, EVERYONE, KINDS)
        expected = dict.fromkeys(seen, True)
        for source in EVERYONE:
            for kind in KINDS:
                if source != "db":
                    # Only TCP 8080 from the frontends of the policy's own namespace (front1 shares
                    # db's host, front2 is across); the guest namespace's frontend is not one.
                    expected[(source, "db", kind)] = kind == "tcp:8080" and source in ("front1", "front2")
        assert differences(seen, expected) == []


def label_change_takes_effect(cluster: Cluster, name: str, value: str) -> float:
    """Seconds from the label being in the datastore (felidctl label has returned) to the other
    pod's verdict changing in the kernel. felidctl's own start-up is not felix's reaction: on a
    loaded 2-core machine it alone took most of a second."""
    done = cluster.felidctl("label", "wep", name, f"role={value}", "--overwrite", "-n", SHOP)
    started = time.monotonic()
    assert done.returncode == 0, done.stderr
    other = pod(cluster, "other")
    db = pod(cluster, "db")
    want = value == "frontend"
    while check(other.netns, [Probe("tcp", db.address, 8080)], timeout=0.2) != [want]:
        assert time.monotonic() - started < 5, f"{name}'s label {value} not enforced in 5 s"
    return time.monotonic() - started


def test_a_label_change_takes_effect_within_a_second(cluster: Cluster) -> None:
    with applied(cluster, ALLOW_FRONTEND_TO_DB):
        time.sleep(1)
        assert check(pod(cluster, "other").netns, [Probe("tcp", pod(cluster, "db").address, 8080)]) == [False]
        weps = json.loads(cluster.felidctl("get", "wep", "-n", SHOP, "-o", "json").stdout)["items"]
        name = next(w["metadata"]["name"] for w in weps if w["spec"].get("pod") == "other")
        took = label_change_takes_effect(cluster, name, "frontend")
        assert took < 1.0, f"the label reached the other host's kernel after {took:.2f}s"
        back = label_change_takes_effect(cluster, name, "other")
        assert back < 1.0


def test_order_pass_deny_nets_and_namespace_selectors(cluster: Cluster) -> None:
    db, front1 = pod(cluster, "db"), pod(cluster, "front1")
    documents = (
        # First (order 10): the guest namespace is denied everything to db, even what the
        # global allow below would let through.
        gnp(
            "deny-guest",
            {
                "order": 10,
                "selector": "role == 'db'",
                "ingress": [
                    {"action": "Deny", "source": {"namespaceSelector": "projectcalico.org/name == 'guest'"}},
                    # front1's own address: Pass skips the rest of the policies, to db's profile.
                    {"action": "Pass", "source": {"nets": [f"{front1.address}/32"]}},
                ],
            },
        ),
        # Second (order 20): only UDP from every namespace, except other's address (notNets).
        gnp(
            "udp-only",
            {
                "order": 20,
                "selector": "role == 'db'",
                "ingress": [
                    {
                        "action": "Allow",
                        "protocol": "UDP",
                        "source": {
                            "namespaceSelector": "all()",
                            "notNets": [f"{pod(cluster, 'other').address}/32"],
                        },
                    }
                ],
            },
        ),
    )
    with applied(cluster, *documents):
        time.sleep(1)
        seen = observe(cluster, EVERYONE, ["db"], KINDS)
        expected = dict.fromkeys(seen, False)
        expected |= dict.fromkeys([(s, "db", "udp:8080") for s in ("front2",)], True)
        # Passed to db's profile (allow all): everything from front1.
        expected |= {("front1", "db", k): True for k in KINDS}
        assert differences(seen, expected) == []
        assert db.address  # db itself still reaches out (no egress policy selects it)
        assert observe(cluster, ["db"], ["front2"], KINDS) == dict.fromkeys(
            [("db", "front2", k) for k in KINDS], True
        )


def test_an_egress_deny_before_an_allow(cluster: Cluster) -> None:
    db = pod(cluster, "db")
    policy = netpol(
        "front-egress",
        {
            "selector": "role == 'frontend'",
            "types": ["Egress"],
            "egress": [
                {
                    "action": "Deny",
                    "protocol": "TCP",
                    "destination": {"nets": [f"{db.address}/32"], "ports": ["9000:9999"]},
                },
                {"action": "Allow"},
            ],
        },
    )
    with applied(cluster, policy):
        time.sleep(1)
        seen = observe(cluster, ["front1", "front2", "other"], ["db"], ("tcp:8080", "tcp:9090"))
        assert (
            differences(
                seen,
                {
                    ("front1", "db", "tcp:8080"): True,
                    ("front1", "db", "tcp:9090"): False,  # the range holds 9090
                    ("front2", "db", "tcp:8080"): True,
                    ("front2", "db", "tcp:9090"): False,
                    ("other", "db", "tcp:8080"): True,  # not a frontend: no egress policy
                    ("other", "db", "tcp:9090"): True,
                },
            )
            == []
        )


def test_a_spoofed_source_is_dropped_and_the_pods_own_traffic_passes(cluster: Cluster) -> None:
    front2, db = pod(cluster, "front2"), pod(cluster, "db")
    spoofed = "10.250.0.9"
    ip("-n", front2.netns, "address", "add", f"{spoofed}/32", "dev", "eth0")
    try:
        assert ping(front2.netns, db.address, count=2).ok
        done = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                front2.netns,
                "ping",
                "-n",
                "-c",
                "2",
                "-W",
                "1",
                "-I",
                spoofed,
                db.address,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert " 0 received" in done.stdout, done.stdout
        # It was felid's anti-spoofing rule that dropped it, on front2's own host.
        counters = cluster.hosts[1].run("iptables-save", "-c", "-t", "filter").stdout
        line = next(
            r for r in counters.splitlines() if "-A felid-fw-" in r and f"! -s {front2.address}/32" in r
        )
        assert not line.startswith("[0:"), line
    finally:
        ip("-n", front2.netns, "address", "del", f"{spoofed}/32", "dev", "eth0", check=False)


def host_endpoint(host: LabHost) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "HostEndpoint",
        "metadata": {"name": f"{host.node}-all", "labels": {"host": host.node}},
        "spec": {"node": host.node, "interfaceName": "*"},
    }


def test_a_deny_all_host_endpoint_keeps_the_failsafe_ports_and_the_workloads(cluster: Cluster) -> None:
    one, two = cluster.hosts
    deny = gnp("hosts-deny-all", {"selector": "has(host)", "types": ["Ingress", "Egress"]})
    assert ping(one.netns, two.address, count=1).ok
    with applied(cluster, host_endpoint(two), deny):
        time.sleep(1.5)
        assert not ping(one.netns, two.address, count=2, wait=0.5).ok  # ICMP to the host: denied
        # A new connection to BGP (failsafe, tcp 179) is accepted; to the health port it is not.
        answered = check(one.netns, [Probe("syn", two.address, 179), Probe("syn", two.address, 9099)], 1.0)
        assert answered == [True, False]
        status = cluster.felidctl("node", "status", host=two).stdout
        assert "Established" in status, status
        # Forwarded workload traffic is not the host's: pods across the hosts still talk.
        assert ping(pod(cluster, "front1").netns, pod(cluster, "front2").address).ok
    time.sleep(1)
    assert ping(one.netns, two.address, count=1).ok
    # A host endpoint that gives only its expectedIPs: felix finds the interface holding them.
    by_address = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "HostEndpoint",
        "metadata": {"name": f"{two.node}-by-address", "labels": {"host": two.node}},
        "spec": {"node": two.node, "expectedIPs": ["192.0.2.99", two.address]},
    }
    with applied(cluster, by_address, deny):
        time.sleep(1.5)
        assert not ping(one.netns, two.address, count=2, wait=0.5).ok
        assert check(one.netns, [Probe("syn", two.address, 179)], 1.0) == [True]
    time.sleep(1)
    assert ping(one.netns, two.address, count=1).ok


def test_felid_node_sigkilled_and_restarted_under_a_continuous_probe_flips_no_verdict(
    cluster: Cluster,
) -> None:
    db = pod(cluster, "db")
    probes = [Probe("tcp", db.address, 8080), Probe("tcp", db.address, 9090)]
    with applied(cluster, ALLOW_FRONTEND_TO_DB):
        time.sleep(1)
        verdicts: dict[str, set[tuple[bool, ...]]] = {"front2": set(), "other": set()}
        stop = threading.Event()

        def probe(source: str) -> None:
            while not stop.is_set():
                verdicts[source].add(tuple(check(pod(cluster, source).netns, probes, timeout=0.5)))

        threads = [threading.Thread(target=probe, args=(s,)) for s in verdicts]
        for thread in threads:
            thread.start()
        try:
            time.sleep(1)
            one = cluster.hosts[0]  # db's host
            cluster.kill_node(one)  # felix, the bgp agent and ExaBGP with it
            cluster.start_node(one)  # as systemd would
            cluster.wait_ready([one], timeout=30)
            time.sleep(2)  # the new felix has applied: it must have found everything right
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert verdicts == {"front2": {(True, False)}, "other": {(False, False)}}


def until_true(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.3)


def test_workload_to_host_follows_default_endpoint_to_host_action(cluster: Cluster) -> None:
    front1, db, one = pod(cluster, "front1"), pod(cluster, "db"), cluster.hosts[0]
    assert cluster.felidctl("get", "felixconfiguration", "default").returncode != 0  # none to restore
    assert ping(front1.netns, one.address, count=1).ok  # felid's default: Accept
    config = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "FelixConfiguration",
        "metadata": {"name": "default"},
        "spec": {"defaultEndpointToHostAction": "Drop"},
    }
    with applied(cluster, config):
        # felix restarts on a changed FelixConfiguration, as Calico's does.
        until_true(
            lambda: not ping(front1.netns, one.address, count=1, wait=0.5).ok, 30, "still reaches its host"
        )
        assert ping(front1.netns, db.address, count=1).ok  # pods still talk to each other
    until_true(lambda: ping(front1.netns, one.address, count=1, wait=0.5).ok, 30, "host not reachable again")


def k8s_policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": SHOP},
        "spec": spec,
    }


def test_kubernetes_network_policies_enforce_kubernetes_semantics(cluster: Cluster) -> None:
    front1 = pod(cluster, "front1")
    shop = ["db", "front1", "front2", "other"]
    deny_all = k8s_policy("deny-all", {"podSelector": {}})
    # The guest namespace's labels, as Calico keeps them: its kns. Profile's labelsToApply.
    guest_labels = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Profile",
        "metadata": {"name": "kns.guest"},
        "spec": {"labelsToApply": {"team": "blue"}},
    }
    from_namespace = k8s_policy(
        "db-from-blue",
        {
            "podSelector": {"matchLabels": {"role": "db"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}}}]}],
        },
    )
    ip_block = k8s_policy(
        "db-from-pods-but-front1",
        {
            "podSelector": {"matchLabels": {"role": "db"}},
            "ingress": [
                {
                    "from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": [f"{front1.address}/32"]}}],
                    "ports": [{"port": 9090}],
                }
            ],
        },
    )
    egress = k8s_policy(
        "frontends-out-to-8080",
        {
            "podSelector": {"matchLabels": {"role": "frontend"}},
            "policyTypes": ["Egress"],
            "egress": [{"ports": [{"port": 8080}]}],
        },
    )
    with applied(cluster, deny_all):
        time.sleep(1)
        seen = observe(cluster, EVERYONE, shop, ("tcp:8080", "icmp"))
        assert differences(seen, dict.fromkeys(seen, False)) == []  # no pod of shop takes anything
        with applied(cluster, guest_labels, from_namespace, ip_block):
            time.sleep(1)
            seen = observe(cluster, EVERYONE, ["db"], ("tcp:8080", "tcp:9090", "udp:8080"))
            expected = dict.fromkeys(seen, False)
            expected |= {("guest", "db", k): True for k in ("tcp:8080", "tcp:9090", "udp:8080")}
            expected |= {(s, "db", "tcp:9090"): True for s in ("front2", "other")}  # not front1
            assert differences(seen, expected) == []
    with applied(cluster, egress):
        time.sleep(1)
        seen = observe(cluster, ["front1", "front2", "guest"], ["db", "other"], ("tcp:8080", "tcp:9090"))
        expected = {key: key[2] == "tcp:8080" or key[0] == "guest" for key in seen}  # guest: other namespace
        assert differences(seen, expected) == []


@contextlib.contextmanager
def endpoint_changed(cluster: Cluster, name: str, spec: dict[str, Any]) -> Iterator[None]:
    """The pod's WorkloadEndpoint with ``spec`` merged in (as an operator applies one with
    felidctl, where no orchestrator fills in its ports), put back afterwards."""
    weps = json.loads(cluster.felidctl("get", "wep", "-n", SHOP, "-o", "json").stdout)["items"]
    original = next(w for w in weps if w["spec"].get("pod") == name)
    changed = {**original, "spec": {**original["spec"], **spec}}
    apply(cluster, changed)
    try:
        yield
    finally:
        current = json.loads(
            cluster.felidctl("get", "wep", original["metadata"]["name"], "-n", SHOP, "-o", "json").stdout
        )
        apply(cluster, {**current, "spec": original["spec"]})


def test_named_ports_and_a_profiles_labels_to_apply(cluster: Cluster) -> None:
    prod = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Profile",
        "metadata": {"name": "env-prod"},
        "spec": {
            "labelsToApply": {"env": "prod"},
            "ingress": [{"action": "Allow"}],
            "egress": [{"action": "Allow"}],
        },
    }
    # db serves "web" on 9090; only pods of the env-prod profile may reach it there.
    db_web = netpol(
        "db-web-from-prod",
        {
            "selector": "role == 'db'",
            "ingress": [
                {
                    "action": "Allow",
                    "protocol": "TCP",
                    "source": {"selector": "env == 'prod'"},
                    "destination": {"ports": ["web"]},
                }
            ],
        },
    )
    web_port = {"ports": [{"name": "web", "port": 9090, "protocol": "TCP"}]}
    in_prod = {"profiles": ["projectcalico-default-allow", "env-prod"]}
    with (
        applied(cluster, prod),
        endpoint_changed(cluster, "db", web_port),
        endpoint_changed(cluster, "front2", in_prod),
        applied(cluster, db_web),
    ):
        time.sleep(1)
        seen = observe(cluster, ["front1", "front2", "other"], ["db"], ("tcp:8080", "tcp:9090"))
        expected = {key: key == ("front2", "db", "tcp:9090") for key in seen}
        assert differences(seen, expected) == []
        # The named port moves: the set's member changes, the rule stays.
        with endpoint_changed(cluster, "db", {"ports": [{"name": "web", "port": 8080, "protocol": "TCP"}]}):
            time.sleep(1)
            seen = observe(cluster, ["front2"], ["db"], ("tcp:8080", "tcp:9090"))
            assert seen == {("front2", "db", "tcp:8080"): True, ("front2", "db", "tcp:9090"): False}


def named_host_endpoint(host: LabHost) -> dict[str, Any]:
    """The host's uplink as a host endpoint (untracked policy needs a named interface, not ``*``)."""
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "HostEndpoint",
        "metadata": {"name": f"{host.node}-{host.nic}", "labels": {"host": host.node}},
        "spec": {"node": host.node, "interfaceName": host.nic},
    }


def host_gnp(name: str, host: LabHost, stage: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A GlobalNetworkPolicy for ``host``'s host endpoints: normal, or for one of their stages."""
    flags: dict[str, bool] = {}
    if stage != "normal":
        flags["applyOnForward"] = True
    if stage in ("pre-dnat", "untracked"):
        flags["preDNAT" if stage == "pre-dnat" else "doNotTrack"] = True
    return gnp(name, {"selector": f"host == '{host.node}'", **flags, **spec})


HOST_PORT = 7070


def test_pre_dnat_forward_and_untracked_host_endpoint_policy(cluster: Cluster) -> None:
    # On the second host: felidctl runs on the first, and a new connection from a host endpoint's
    # own host to the lab's etcd (not on a failsafe port) is not allowed.
    _, two = cluster.hosts
    sources = ["db", "front1", "guest"]  # guest shares other's host: its traffic never crosses the HEP
    no_9090 = host_gnp(
        "pre-dnat-no-9090",
        two,
        "pre-dnat",
        {"ingress": [{"action": "Deny", "protocol": "TCP", "destination": {"ports": [9090]}}]},
    )
    no_8080 = host_gnp(
        "forward-no-8080",
        two,
        "forward",
        {
            "ingress": [
                {"action": "Deny", "protocol": "TCP", "destination": {"ports": [8080]}},
                {"action": "Allow"},
            ]
        },
    )
    untracked_in = {"action": "Allow", "protocol": "TCP", "destination": {"ports": [HOST_PORT]}}
    untracked_out = {"action": "Allow", "protocol": "TCP", "source": {"ports": [HOST_PORT]}}
    listener = listen(two.netns, [HOST_PORT])
    front1 = pod(cluster, "front1")
    to_host = [Probe("tcp", two.address, HOST_PORT)]
    try:
        with applied(cluster, named_host_endpoint(two)):
            time.sleep(1)
            # A host endpoint and no policy: the host's own port is closed, forwarded pods' traffic is not.
            assert check(front1.netns, to_host, timeout=0.7) == [False]
            seen = observe(cluster, sources, ["other"], ("tcp:8080", "tcp:9090"))
            assert differences(seen, dict.fromkeys(seen, True)) == []
            # Pre-DNAT policy sees all traffic coming in on the interface, to the pods behind it too.
            with applied(cluster, no_9090):
                time.sleep(1)
                seen = observe(cluster, sources, ["other"], ("tcp:8080", "tcp:9090"))
                expected = {key: key[2] == "tcp:8080" or key[0] == "guest" for key in seen}
                assert differences(seen, expected) == []
            # applyOnForward: normal policy of the host endpoint on forwarded traffic.
            with applied(cluster, no_8080):
                time.sleep(1)
                seen = observe(cluster, sources, ["other"], ("tcp:8080", "tcp:9090"))
                expected = {key: key[2] == "tcp:9090" or key[0] == "guest" for key in seen}
                assert differences(seen, expected) == []
            # Untracked: what it allows has no conntrack entry, so the reply needs its own allow.
            with applied(cluster, host_gnp("untracked-in", two, "untracked", {"ingress": [untracked_in]})):
                time.sleep(1)
                assert check(front1.netns, to_host, timeout=0.7) == [False]
            both = host_gnp(
                "untracked-both", two, "untracked", {"ingress": [untracked_in], "egress": [untracked_out]}
            )
            with applied(cluster, both):
                time.sleep(1)
                assert check(front1.netns, to_host, timeout=0.7) == [True]
                # The failsafe ports stay tracked and open.
                assert check(front1.netns, [Probe("syn", two.address, 179)], 1.0) == [True]
            # The same allow as normal (tracked) policy needs no rule for the reply.
            with applied(cluster, host_gnp("tracked-in", two, "normal", {"ingress": [untracked_in]})):
                time.sleep(1)
                assert check(front1.netns, to_host, timeout=0.7) == [True]
    finally:
        listener.kill()
        listener.wait()
