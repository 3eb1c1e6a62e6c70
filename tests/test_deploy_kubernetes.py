"""The Kubernetes manifests (``deploy/kubernetes``): each overlay renders with kustomize, every
rendered document validates offline against the Kubernetes schemas (strict), the plain YAML is the
mesh overlay rendered, every container's environment and arguments are accepted by the program it
runs (``--check-config``; felidctl's Job applies its resources to a real etcd), and the image each
names is the one ``deploy/build-image`` tags."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from datastore.version import VERSION
from lab.etcd import EtcdServer
from lab.processes import BIN

KUBERNETES = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"
OVERLAYS = ("mesh", "route-reflectors", "typha")
KUBERNETES_VERSION = "1.37.0"  # the schemas the manifests are checked against (kubernetes-validate's)
PLACEHOLDERS = {"spec.nodeName": "node-1", "metadata.name": "felid-typha-0", "status.podIP": "192.0.2.21"}


def render(overlay: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        ["kubectl", "kustomize", str(KUBERNETES / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def key(document: dict[str, Any]) -> tuple[str, str]:
    return document["kind"], document["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_document_validates_strictly(overlay: str) -> None:
    documents = render(overlay)
    kinds = {d["kind"] for d in documents}
    assert {"DaemonSet", "ConfigMap", "ServiceAccount", "Job"} <= kinds
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    expected = {"route-reflectors": {"Deployment"}, "typha": {"Deployment", "Service", "PodDisruptionBudget"}}
    assert expected.get(overlay, set()) <= kinds


def test_the_checks_can_fail() -> None:
    daemonset = next(d for d in render("mesh") if d["kind"] == "DaemonSet")
    daemonset["spec"]["template"]["spec"]["hostNetwrk"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, KUBERNETES_VERSION, strict=True)


def test_the_plain_manifest_is_the_mesh_overlay_rendered() -> None:
    plain = [d for d in yaml.safe_load_all((KUBERNETES / "felid.yaml").read_text()) if d]
    assert sorted(plain, key=key) == sorted(render("mesh"), key=key), (
        "deploy/kubernetes/felid.yaml is stale: kubectl kustomize deploy/kubernetes/overlays/mesh > it"
    )


def containers(documents: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for document in documents:
        pod = document.get("spec", {}).get("template", {}).get("spec")
        if pod:
            for container in [*pod.get("initContainers", []), *pod["containers"]]:
                yield f"{document['kind']}/{document['metadata']['name']}/{container['name']}", container


def environment(container: dict[str, Any], documents: list[dict[str, Any]]) -> dict[str, str]:
    """The container's environment as the kubelet would give it (field references as placeholders)."""
    maps = {d["metadata"]["name"]: d["data"] for d in documents if d["kind"] == "ConfigMap"}
    out = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    for variable in container.get("env", []):
        if "value" in variable:
            out[variable["name"]] = variable["value"]
        elif "configMapKeyRef" in variable["valueFrom"]:
            ref = variable["valueFrom"]["configMapKeyRef"]
            out[variable["name"]] = maps[ref["name"]][ref["key"]]  # a missing key: KeyError, the test fails
        else:
            out[variable["name"]] = PLACEHOLDERS[variable["valueFrom"]["fieldRef"]["fieldPath"]]
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_runs_a_program_that_accepts_its_settings(overlay: str, tmp_path: Path) -> None:
    documents = render(overlay)
    for where, container in containers(documents):
        assert container["image"] == f"localhost/felid:{VERSION}", where
        command = [*container.get("command", ["felid-node"]), *container.get("args", [])]
        environ = environment(container, documents)
        if command[0] == "felidctl":
            continue  # applied to a real etcd below
        done = subprocess.run(
            [str(BIN / command[0]), *command[1:], "--check-config"],
            env=environ,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0 and "configuration is valid" in done.stdout, f"{where}: {done.stderr}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_felidctl_job_applies_its_resources(overlay: str, tmp_path: Path, etcd: EtcdServer) -> None:
    documents = render(overlay)
    (where, job), *_ = [(w, c) for w, c in containers(documents) if c.get("command", [""])[0] == "felidctl"]
    resources = next(d for d in documents if key(d) == ("ConfigMap", "felid-resources"))["data"][
        "resources.yaml"
    ]
    mounted = tmp_path / "resources.yaml"
    mounted.write_text(resources)
    command = [
        str(mounted) if arg == "/etc/felid/resources/resources.yaml" else arg for arg in job["command"]
    ]
    environ = {**environment(job, documents), "FELID_ETCD_ENDPOINTS": etcd.url}
    done = subprocess.run(
        [str(BIN / command[0]), *command[1:]], env=environ, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{where}: {done.stderr}"
    shown = subprocess.run(
        [str(BIN / "felidctl"), "get", "bgpconfig", "-o", "yaml"],
        env=environ,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    mesh = yaml.safe_load(shown)["items"][0]["spec"]["nodeToNodeMeshEnabled"]
    assert mesh is (overlay != "route-reflectors")
