"""felid-install-cni: put felid's CNI plugins and network config where the host's runtime looks.

Run as the felid-node DaemonSet's init container (or once by hand on a host without Kubernetes):
it copies the ``felid`` and ``felid-ipam`` plugins into the CNI binary directory and writes one
network config list (``felid``, then the reference ``portmap`` for host ports) into the CNI config
directory, with this host's datastore settings and node name, and the MTU taken at each ADD from
the file felid-node's felix writes.  Files are written beside their target and renamed over it, so
a runtime never reads half of one; a config that is already right is left alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from datastore.config import DatastoreConfig
from datastore.errors import InvalidName, ValidationFailed
from datastore.settings import Settings, add_flags, node_name, resolve, unknown_variables
from felid.cni import bundle
from felix.config import FelixSettings
from felix.dataplane.hostfile import write_atomically

PLUGINS = ("felid", "felid-ipam")
NETWORK_NAME = "felid"


class InstallCNISettings(Settings):
    """Where the plugins and the network config go (Calico's install-cni names, ``CNI_*``)."""

    ENV_PREFIX: ClassVar[str] = "CNI_"
    net_dir: Path = Field(default=Path("/etc/cni/net.d"), description="Where the network config is written.")
    bin_dir: Path = Field(default=Path("/opt/cni/bin"), description="Where the plugins are copied.")
    conf_name: str = Field(default="10-felid.conflist", description="The network config's file name.")
    network_name: str = Field(
        default=NETWORK_NAME, description="The network's name (what `podman run --network` names)."
    )
    source_dir: Path | None = Field(
        default=None,
        description="Where the felid and felid-ipam plugins to copy are (unset: felid's own bin directory).",
    )
    mtu_file: Path = Field(
        default=FelixSettings.default_of("mtu_file"),
        description="The MTU file felid-node's felix writes; the plugin reads it at every ADD.",
    )
    portmap: bool = Field(default=True, description="Chain the reference portmap plugin (host ports).")
    bundle: bool = Field(
        default=False,
        description="Install felid's own Python with the plugins (from the image: the host needs no felid).",
    )


def network_config(
    install: InstallCNISettings, datastore: DatastoreConfig, node: str, cni_version: str = "1.0.0"
) -> dict[str, Any]:
    """The network config list felid's plugins run from on this host."""
    felid: dict[str, Any] = {
        "type": "felid",
        "nodename": node,
        "etcd_endpoints": ",".join(datastore.etcd_endpoints),
        "mtu_file": str(install.mtu_file),
        "ipam": {"type": "felid-ipam"},
    }
    for key in ("etcd_ca_cert_file", "etcd_cert_file", "etcd_key_file"):
        value = getattr(datastore, key)
        if value is not None:
            felid[key] = value
    if datastore.etcd_prefix != DatastoreConfig.default_of("etcd_prefix"):
        felid["etcd_prefix"] = datastore.etcd_prefix
    plugins = [felid]
    if install.portmap:
        plugins.append({"type": "portmap", "snat": True, "capabilities": {"portMappings": True}})
    return {"cniVersion": cni_version, "name": install.network_name, "plugins": plugins}


def _write_atomically(path: Path, data: bytes, mode: int) -> bool:
    """Write ``path`` unless it already holds ``data``; whether it was written."""
    if path.exists() and path.read_bytes() == data and (path.stat().st_mode & 0o777) == mode:
        return False
    write_atomically(path, data, mode)
    return True


def install(install: InstallCNISettings, datastore: DatastoreConfig, node: str) -> list[Path]:
    """Copy the plugins and write the config; the files that changed."""
    changed: list[Path] = []
    if install.bundle:
        install.bin_dir.mkdir(parents=True, exist_ok=True)
        changed += bundle.install(install.bin_dir)
    else:
        source_dir = install.source_dir or Path(sys.executable).parent
        for plugin in PLUGINS:
            source = source_dir / plugin
            if not source.is_file():
                raise FileNotFoundError(f"{source}: the {plugin} plugin to install is not there")
            target = install.bin_dir / plugin
            if _write_atomically(target, source.read_bytes(), 0o755):
                changed.append(target)
    config = json.dumps(network_config(install, datastore, node), indent=2) + "\n"
    target = install.net_dir / install.conf_name
    if _write_atomically(target, config.encode(), 0o644):
        changed.append(target)
    return changed


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="felid-install-cni", description=__doc__)
    parser.add_argument("--check-config", action="store_true", help="validate the settings and exit")
    add_flags(parser, InstallCNISettings)
    args = parser.parse_args(argv)
    env = dict(os.environ if environ is None else environ)
    try:
        flags = {name: getattr(args, name) for name in InstallCNISettings.model_fields}
        settings = resolve(InstallCNISettings, flags=flags, environ=env)
        datastore = resolve(DatastoreConfig, environ=env)
        node = node_name(env.get("FELID_NODENAME"), "FELID_NODENAME")
    except (ValidationFailed, InvalidName) as exc:
        print(f"felid-install-cni: invalid setting: {exc}", file=sys.stderr)
        return 1
    unknown = unknown_variables(env, (InstallCNISettings, DatastoreConfig), also=("FELID_NODENAME",))
    if unknown:
        print(f"felid-install-cni: no such setting: {', '.join(unknown)}", file=sys.stderr)
        if args.check_config:
            return 1
    if args.check_config:
        print(json.dumps(network_config(settings, datastore, node), indent=2))
        print("felid-install-cni: configuration is valid")
        return 0
    try:
        changed = install(settings, datastore, node)
    except OSError as exc:
        print(f"felid-install-cni: {exc}", file=sys.stderr)
        return 1
    for path in changed:
        print(f"felid-install-cni: wrote {path}")
    if not changed:
        print("felid-install-cni: plugins and network config already in place")
    return 0


if __name__ == "__main__":
    sys.exit(main())
