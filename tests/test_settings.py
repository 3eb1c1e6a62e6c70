"""Settings: one declaration, every source, documented from the declaration."""

from __future__ import annotations

from pathlib import Path

import pytest

from datastore.config import DatastoreConfig, read_config_file
from datastore.errors import ValidationFailed
from datastore.settings import resolve
from felid.docs import render

ROOT = Path(__file__).resolve().parent.parent


def test_precedence_flag_then_env_then_file_then_default() -> None:
    file_values = {"etcdEndpoints": ["http://192.0.2.1:2379"], "etcdPrefix": "/from-file"}
    env = {
        "FELID_ETCD_ENDPOINTS": "http://192.0.2.2:2379,http://192.0.2.3:2379",
        "FELID_ETCD_PREFIX": "/from-env",
    }
    flags = {"etcd_prefix": "/from-flag"}
    config = resolve(DatastoreConfig, flags=flags, environ=env, file_values=file_values)
    assert config.etcd_prefix == "/from-flag"
    assert config.etcd_endpoints == ("http://192.0.2.2:2379", "http://192.0.2.3:2379")
    config = resolve(DatastoreConfig, environ={}, file_values=file_values)
    assert config.etcd_endpoints == ("http://192.0.2.1:2379",)
    assert config.etcd_prefix == "/from-file"
    assert resolve(DatastoreConfig) == DatastoreConfig()
    assert DatastoreConfig().etcd_prefix == "/felid"


def test_bad_values_name_their_source() -> None:
    with pytest.raises(ValidationFailed, match=r"FELID_ETCD_ENDPOINTS: 'localhost:2379' is not an http"):
        resolve(DatastoreConfig, environ={"FELID_ETCD_ENDPOINTS": "localhost:2379"})
    with pytest.raises(
        ValidationFailed, match=r"--etcd-ca-cert-file: '/nonexistent.pem' is not a readable file"
    ):
        resolve(DatastoreConfig, flags={"etcd_ca_cert_file": "/nonexistent.pem"})
    with pytest.raises(ValidationFailed, match=r"config file: etcdEndpoint: unknown setting"):
        resolve(DatastoreConfig, file_values={"etcdEndpoint": "http://x:1"})


def test_config_file_bare_or_calicoctl_style(tmp_path: Path) -> None:
    bare = tmp_path / "bare.yaml"
    bare.write_text("etcdEndpoints: [http://192.0.2.1:2379]\n")
    wrapped = tmp_path / "wrapped.yaml"
    wrapped.write_text("apiVersion: projectcalico.org/v3\nkind: FelidAPIConfig\nspec:\n  etcdPrefix: /x\n")
    assert read_config_file(str(bare)) == {"etcdEndpoints": ["http://192.0.2.1:2379"]}
    assert read_config_file(str(wrapped)) == {"etcdPrefix": "/x"}
    broken = tmp_path / "broken.yaml"
    broken.write_text("etcdEndpoints: [\n")
    with pytest.raises(ValidationFailed, match="not valid YAML"):
        read_config_file(str(broken))


def test_configuration_reference_is_up_to_date() -> None:
    assert (ROOT / "docs" / "configuration.md").read_text() == render(), (
        "docs/configuration.md is stale: run python -m felid.docs > docs/configuration.md"
    )
    for name in DatastoreConfig.model_fields:
        assert DatastoreConfig.env_name(name) in render()
