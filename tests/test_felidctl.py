"""felidctl end to end, through its installed console script, against a real etcd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from datastore.kv import KVStore
from lab.etcd import EtcdServer, free_port
from tests.harness.tls import PKI

FELIDCTL = str(Path(sys.executable).parent / "felidctl")

RESOURCES = """\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: default-ipv4-ippool
spec:
  cidr: 10.244.0.0/16
  ipipMode: Always
  natOutgoing: true
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  name: default
spec:
  nodeToNodeMeshEnabled: false
  asNumber: 64512
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: rack1-tor
spec:
  peerIP: 192.0.2.1
  asNumber: 64513
"""


def felidctl(
    *args: str, url: str | None = None, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FELID_")}
    if url is not None:
        environ["FELID_ETCD_ENDPOINTS"] = url
    environ.update(env or {})
    return subprocess.run(
        [FELIDCTL, *args], input=stdin, capture_output=True, text=True, env=environ, timeout=60, check=False
    )


@pytest.fixture
def resources(tmp_path: Path) -> Path:
    path = tmp_path / "resources.yaml"
    path.write_text(RESOURCES)
    return path


def table(output: str) -> list[list[str]]:
    return [line.split() for line in output.strip().splitlines()]


def test_apply_then_get_wide(etcd: EtcdServer, resources: Path) -> None:
    result = felidctl("apply", "-f", str(resources), url=etcd.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Successfully applied 3 resource(s)"
    rows = table(felidctl("get", "ippool", "-o", "wide", url=etcd.url).stdout)
    assert rows[0][:6] == ["NAME", "CIDR", "NAT", "IPIPMODE", "VXLANMODE", "DISABLED"]
    assert rows[1][:6] == ["default-ipv4-ippool", "10.244.0.0/16", "true", "Always", "Never", "false"]
    assert table(felidctl("get", "ippools", url=etcd.url).stdout) == [
        ["NAME", "CIDR", "SELECTOR"],
        ["default-ipv4-ippool", "10.244.0.0/16", "all()"],
    ]
    assert table(felidctl("get", "bgppeer", url=etcd.url).stdout) == [
        ["NAME", "PEERIP", "NODE", "ASN"],
        ["rack1-tor", "192.0.2.1", "(global)", "64513"],
    ]
    assert table(felidctl("get", "bgpconfig", url=etcd.url).stdout) == [
        ["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"],
        ["default", "Info", "false", "64512"],
    ]
    # Applying the same file again is an update, not an error.
    assert felidctl("apply", "-f", str(resources), url=etcd.url).returncode == 0


@pytest.mark.parametrize("alias", ["ippool", "ippools", "ipp", "pool", "IPPool"])
def test_kind_aliases(etcd: EtcdServer, resources: Path, alias: str) -> None:
    felidctl("apply", "-f", str(resources), url=etcd.url)
    assert "default-ipv4-ippool" in felidctl("get", alias, url=etcd.url).stdout


def test_get_yaml_and_json_round_trip_through_apply(etcd: EtcdServer, resources: Path) -> None:
    felidctl("apply", "-f", str(resources), url=etcd.url)
    one = yaml.safe_load(felidctl("get", "ippool", "default-ipv4-ippool", "-o", "yaml", url=etcd.url).stdout)
    assert one["kind"] == "IPPool" and one["spec"]["natOutgoing"] is True
    assert one["metadata"]["resourceVersion"] and one["metadata"]["uid"]
    listing = json.loads(felidctl("get", "bgppeers", "-o", "json", url=etcd.url).stdout)
    assert listing["kind"] == "BGPPeerList" and listing["items"][0]["spec"]["peerIP"] == "192.0.2.1"
    # What get prints, replace accepts (with its resourceVersion: a CAS).
    one["spec"]["natOutgoing"] = False
    result = felidctl("replace", "-f", "-", stdin=yaml.safe_dump(one), url=etcd.url)
    assert result.returncode == 0, result.stderr
    stale = felidctl("replace", "-f", "-", stdin=yaml.safe_dump(one), url=etcd.url)
    assert stale.returncode == 1 and "modified concurrently" in stale.stderr
    assert "false" in felidctl("get", "ippool", "-o", "wide", url=etcd.url).stdout.split("\n")[1]


def test_create_refuses_existing_and_skip_exists(etcd: EtcdServer, resources: Path) -> None:
    assert felidctl("create", "-f", str(resources), url=etcd.url).returncode == 0
    again = felidctl("create", "-f", str(resources), url=etcd.url)
    assert again.returncode == 1
    assert again.stderr.strip() == (
        f"felidctl: {resources}: document 1 (IPPool 'default-ipv4-ippool'): "
        "IPPool(default-ipv4-ippool) already exists; nothing was written"
    )
    skip = felidctl("create", "-f", str(resources), "--skip-exists", url=etcd.url)
    assert skip.returncode == 0 and "created 0" in skip.stdout


def with_second_pool(tmp_path: Path, cidr: str) -> Path:
    """RESOURCES plus a fourth document: another IPPool named 'second' with ``cidr``."""
    first_pool = RESOURCES.split("---", maxsplit=1)[0]
    path = tmp_path / "with-second-pool.yaml"
    path.write_text(
        f"{RESOURCES}---\n"
        + first_pool.replace("10.244.0.0/16", cidr).replace("default-ipv4-ippool", "second")
    )
    return path


def test_invalid_document_is_refused_and_nothing_is_written(
    etcd: EtcdServer, kv: KVStore, tmp_path: Path
) -> None:
    bad = with_second_pool(tmp_path, "10.245.0.1/16")
    result = felidctl("apply", "-f", str(bad), url=etcd.url)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip() == (
        f"felidctl: {bad}: document 4 (IPPool 'second'): spec.cidr: "
        "'10.245.0.1/16' has host bits set; did you mean 10.245.0.0/16?"
    )
    assert kv.list("/felid/")[0] == []


def test_overlapping_pool_in_a_batch_writes_nothing(etcd: EtcdServer, kv: KVStore, tmp_path: Path) -> None:
    bad = with_second_pool(tmp_path, "10.244.64.0/18")
    result = felidctl("apply", "-f", str(bad), url=etcd.url)
    assert result.returncode == 1
    assert "document 4 (IPPool 'second'): spec.cidr: 10.244.64.0/18 overlaps enabled IPPool" in result.stderr
    assert kv.list("/felid/")[0] == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kind: IPPool\nmetadata: {name: [\n", "invalid YAML at line"),
        ('{"kind": ', "invalid JSON at line 1"),
        (
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\n"
            "spec: {cidr: 10.0.0.0/16, x: 1}\n",
            "document 1 (IPPool 'p'): spec.x: unknown field",
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: Bogus\nmetadata: {name: p}\n",
            "document 1 (Bogus 'p'): kind: unknown",
        ),
        ("", "no resources found"),
    ],
)
def test_malformed_input_gives_one_line(etcd: EtcdServer, text: str, expected: str) -> None:
    result = felidctl("apply", "-f", "-", stdin=text, url=etcd.url)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("felidctl: <stdin>")
    assert expected in result.stderr


def test_json_input_is_accepted(etcd: EtcdServer) -> None:
    doc = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Node",
        "metadata": {"name": "node-1"},
        "spec": {"bgp": {"ipv4Address": "198.51.100.5/24"}},
    }
    assert felidctl("apply", "-f", "-", stdin=json.dumps(doc), url=etcd.url).returncode == 0
    rows = table(felidctl("get", "nodes", "-o", "wide", url=etcd.url).stdout)
    assert rows[1][:3] == ["node-1", "(global)", "198.51.100.5/24"]


def test_delete_by_name_and_by_file(etcd: EtcdServer, resources: Path) -> None:
    felidctl("apply", "-f", str(resources), url=etcd.url)
    result = felidctl("delete", "bgppeer", "rack1-tor", url=etcd.url)
    assert result.returncode == 0 and "deleted 1" in result.stdout
    missing = felidctl("delete", "bgppeer", "rack1-tor", url=etcd.url)
    assert missing.returncode == 1 and missing.stderr.strip() == "felidctl: BGPPeer(rack1-tor) not found"
    result = felidctl("delete", "-f", str(resources), "--skip-not-exists", url=etcd.url)
    assert result.returncode == 0 and "deleted 2" in result.stdout
    assert table(felidctl("get", "ippool", url=etcd.url).stdout) == [["NAME", "CIDR", "SELECTOR"]]


def test_workload_endpoints_are_namespaced(etcd: EtcdServer) -> None:
    docs = "".join(
        f"---\napiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\n"
        f"metadata: {{name: n1-k8s-{ns}-eth0, namespace: {ns}}}\n"
        f"spec: {{node: n1, pod: web, interfaceName: cali{ns}, ipNetworks: [10.244.0.{i}/32]}}\n"
        for i, ns in enumerate(["shop", "blog"], start=1)
    )
    assert felidctl("apply", "-f", "-", stdin=docs, url=etcd.url).returncode == 0
    assert table(felidctl("get", "wep", "-n", "shop", url=etcd.url).stdout) == [
        ["WORKLOAD", "NODE", "NETWORKS", "INTERFACE"],
        ["web", "n1", "10.244.0.1/32", "calishop"],
    ]
    rows = table(felidctl("get", "workloadendpoints", "-A", url=etcd.url).stdout)
    assert rows[0][0] == "NAMESPACE" and sorted(r[0] for r in rows[1:]) == ["blog", "shop"]
    assert felidctl("delete", "wep", "n1-k8s-blog-eth0", "-n", "blog", url=etcd.url).returncode == 0


POLICIES = """\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-frontend, namespace: shop}
spec:
  order: 100
  selector: role == 'db'
  ingress:
  - {action: Allow, protocol: TCP, source: {selector: role == 'frontend'}, destination: {ports: [6379]}}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: deny-all}
spec: {order: 2000, selector: all(), types: [Ingress, Egress]}
---
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.shop}
spec: {labelsToApply: {pcns.team: web}}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node-1-eth0, labels: {role: host}}
spec: {node: node-1, interfaceName: eth0, expectedIPs: [192.0.2.10]}
"""


def test_policies_profiles_and_host_endpoints_apply_get_and_delete(etcd: EtcdServer) -> None:
    result = felidctl("apply", "-f", "-", stdin=POLICIES, url=etcd.url)
    assert result.returncode == 0 and "applied 4" in result.stdout, result.stderr
    assert table(felidctl("get", "networkpolicy", "-n", "shop", "-o", "wide", url=etcd.url).stdout) == [
        ["NAME", "ORDER", "SELECTOR"],
        ["allow-frontend", "100", "role", "==", "'db'"],
    ]
    assert table(felidctl("get", "gnp", "-o", "wide", url=etcd.url).stdout)[1] == [
        "deny-all",
        "2000",
        "all()",
    ]
    assert table(felidctl("get", "pro", "-o", "wide", url=etcd.url).stdout)[1] == [
        "kns.shop",
        "pcns.team=web",
    ]
    assert table(felidctl("get", "heps", "-o", "wide", url=etcd.url).stdout) == [
        ["NAME", "NODE", "INTERFACE", "IPS", "PROFILES"],
        ["node-1-eth0", "node-1", "eth0", "192.0.2.10"],
    ]
    # A bad rule is refused with its field, and nothing of the batch is written.
    bad = POLICIES.replace("destination: {ports: [6379]}", "destination: {ports: ['90:80']}")
    refused = felidctl("apply", "-f", "-", stdin=bad.replace("allow-frontend", "other"), url=etcd.url)
    assert refused.returncode != 0 and "spec.ingress.0.destination.ports.0" in refused.stderr
    assert "other" not in felidctl("get", "policy", "-A", url=etcd.url).stdout
    assert felidctl("delete", "pol", "allow-frontend", "-n", "shop", url=etcd.url).returncode == 0
    assert table(felidctl("get", "policies", "-A", url=etcd.url).stdout) == [["NAMESPACE", "NAME"]]


def test_label_sets_overwrites_and_removes_as_calicoctl(etcd: EtcdServer) -> None:
    assert felidctl("apply", "-f", "-", stdin=POLICIES, url=etcd.url).returncode == 0

    def labels(*args: str) -> dict[str, str]:
        got = yaml.safe_load(felidctl("get", *args, "-o", "yaml", url=etcd.url).stdout)
        return dict(got["metadata"].get("labels", {}))

    done = felidctl("label", "hep", "node-1-eth0", "zone=a", url=etcd.url)
    assert (
        done.returncode == 0
        and done.stdout.strip() == "Successfully set label zone=a on hostendpoint 'node-1-eth0'"
    )
    assert labels("hep", "node-1-eth0") == {"role": "host", "zone": "a"}
    refused = felidctl("label", "hep", "node-1-eth0", "zone=b", url=etcd.url)
    assert refused.returncode == 1 and "already has zone=a; use --overwrite" in refused.stderr
    assert felidctl("label", "hep", "node-1-eth0", "zone=b", "--overwrite", url=etcd.url).returncode == 0
    assert labels("hep", "node-1-eth0")["zone"] == "b"
    assert felidctl("label", "hep", "node-1-eth0", "role", "--remove", url=etcd.url).returncode == 0
    assert labels("hep", "node-1-eth0") == {"zone": "b"}
    missing = felidctl("label", "hep", "node-1-eth0", "role", "--remove", url=etcd.url)
    assert missing.returncode == 1 and "has no label 'role'" in missing.stderr
    # Namespaced kinds take -n; keys and values are checked as Kubernetes checks them.
    assert (
        felidctl(
            "label", "policy", "allow-frontend", "-n", "shop", "app.kubernetes.io/part-of=shop", url=etcd.url
        ).returncode
        == 0
    )
    assert labels("policy", "allow-frontend", "-n", "shop") == {"app.kubernetes.io/part-of": "shop"}
    for bad in ("bad-=x", "ok=-bad", "UPPER.Prefix/k=v", "k=" + "v" * 64):
        result = felidctl("label", "hep", "node-1-eth0", bad, url=etcd.url)
        assert result.returncode == 1 and "invalid label" in result.stderr, bad
    gone = felidctl("label", "hep", "nobody", "a=b", url=etcd.url)
    assert gone.returncode == 1 and "nobody" in gone.stderr


def test_unreachable_etcd_is_one_line_naming_the_endpoint(resources: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["get", "ippool"], ["apply", "-f", str(resources)]):
        result = felidctl(*args, url=url)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [result.stderr.strip()]
        assert result.stderr.startswith(f"felidctl: etcd unavailable at {url}")
        assert "Traceback" not in result.stderr


def test_unknown_kind_and_bad_setting(etcd: EtcdServer) -> None:
    result = felidctl("get", "flowers", url=etcd.url)
    assert result.returncode == 1 and "unknown resource type 'flowers'" in result.stderr
    result = felidctl("get", "ippool", url="localhost:2379")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "felidctl: invalid setting: FELID_ETCD_ENDPOINTS: 'localhost:2379' is not an http:// or https:// URL "
        "(got ['localhost:2379'])"
    )


def test_datastore_from_flags_and_config_file(etcd: EtcdServer, resources: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "felidctl.cfg"
    cfg.write_text(
        f"apiVersion: projectcalico.org/v3\nkind: FelidAPIConfig\nspec:\n  etcdEndpoints: [{etcd.url}]\n"
    )
    assert felidctl("apply", "-f", str(resources), "--config", str(cfg)).returncode == 0
    flagged = felidctl("get", "ippool", "--etcd-endpoints", etcd.url)
    assert "default-ipv4-ippool" in flagged.stdout
    # A flag beats the environment.
    env_wrong = felidctl("get", "ippool", "--etcd-endpoints", etcd.url, url=f"http://127.0.0.1:{free_port()}")
    assert env_wrong.returncode == 0
    other_prefix = felidctl("get", "ippool", "--etcd-prefix", "/elsewhere", url=etcd.url)
    assert table(other_prefix.stdout) == [["NAME", "CIDR", "SELECTOR"]]


def test_mutual_tls_through_the_environment(etcd_tls: EtcdServer, pki: PKI, resources: Path) -> None:
    env = {"FELID_ETCD_CA_CERT_FILE": str(pki.server.ca_cert)}
    refused = felidctl("get", "ippool", url=etcd_tls.url, env=env)
    assert refused.returncode == 1 and f"etcd unavailable at {etcd_tls.url}" in refused.stderr
    env |= {"FELID_ETCD_CERT_FILE": str(pki.client_cert), "FELID_ETCD_KEY_FILE": str(pki.client_key)}
    assert felidctl("apply", "-f", str(resources), url=etcd_tls.url, env=env).returncode == 0
    assert "default-ipv4-ippool" in felidctl("get", "ippool", url=etcd_tls.url, env=env).stdout


def test_version(etcd: EtcdServer) -> None:
    result = felidctl("version", url=etcd.url)
    assert result.returncode == 0 and result.stdout.startswith("Client Version:    v0.1.0")


def test_calicoctl_file_forms_a_plain_list_an_empty_spec_and_scalars_where_text_goes(
    etcd: EtcdServer,
) -> None:
    plain_list = """\
- apiVersion: projectcalico.org/v3
  kind: IPPool
  metadata:
    name: listed
    labels: {enabled: true, tier: 3, yes: yes}
    annotations: {weight: 1.5}
  spec: {cidr: 10.245.0.0/16}
- apiVersion: projectcalico.org/v3
  kind: BGPConfiguration
  metadata: {name: default}
  spec:
"""
    done = felidctl("apply", "-f", "-", url=etcd.url, stdin=plain_list)
    assert done.returncode == 0, done.stderr
    pool = yaml.safe_load(felidctl("get", "ippool", "listed", "-o", "yaml", url=etcd.url).stdout)
    assert pool["metadata"]["labels"] == {"enabled": "true", "tier": "3", "true": "true"}  # YAML 1.1's yes
    assert pool["metadata"]["annotations"] == {"weight": "1.5"}
    config = yaml.safe_load(felidctl("get", "bgpconfig", "default", "-o", "yaml", url=etcd.url).stdout)
    assert config["metadata"]["name"] == "default"  # an empty spec: every field its default
    # metadata only: a list where the schema wants text is still refused, naming the field.
    bad = plain_list.replace("cidr: 10.245.0.0/16", "cidr: 10.245.0.0/16, nodeSelector: [1]")
    refused = felidctl("apply", "-f", "-", url=etcd.url, stdin=bad)
    assert refused.returncode != 0 and "document 1 (IPPool 'listed'): spec.nodeSelector" in refused.stderr, (
        refused.stderr
    )


def test_ip_reservations_through_felidctl(etcd: EtcdServer) -> None:
    reservation = """\
apiVersion: projectcalico.org/v3
kind: IPReservation
metadata: {name: gateways}
spec:
  reservedCIDRs: [10.244.0.0/30, 10.244.1.1]
"""
    done = felidctl("apply", "-f", "-", url=etcd.url, stdin=reservation)
    assert done.returncode == 0, done.stderr
    table = felidctl("get", "ipr", url=etcd.url).stdout.split()
    assert table == ["NAME", "CIDRS", "gateways", "10.244.0.0/30,10.244.1.1/32"], table
    bad = felidctl(
        "apply", "-f", "-", url=etcd.url, stdin=reservation.replace("10.244.1.1]", "10.244.1.1/24]")
    )
    assert bad.returncode != 0 and "spec.reservedCIDRs" in bad.stderr and "host bits" in bad.stderr, (
        bad.stderr
    )
