"""Podman for the lab: storage and configuration of its own, the runtime flags this machine needs,
run inside a lab host's network namespace when asked, and felid's image built into it.

This machine's quirks (measured, issue 14): crun refuses the hybrid cgroup layout, so runc with
the cgroupfs manager; the default ulimits are not permitted; two podmans with storage of their
own would collide on the default shared-memory locks, so file locks under a per-instance
``tmp_dir``; the run root must be short (50 characters at most), so it lives under /run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lab.network import LabHost

ROOT = Path(__file__).resolve().parent.parent
BUILD_IMAGE = ROOT / "deploy" / "build-image"
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Podman:
    home: Path  # storage, configuration
    runroot: Path
    plugin_dirs: tuple[Path, ...] = ()  # CNI: where the plugins are (with the network config dir)
    network_dir: Path | None = None

    @classmethod
    def make(cls, home: Path, plugin_dirs: Sequence[Path] = (), network_dir: Path | None = None) -> Podman:
        home.mkdir(parents=True, exist_ok=True)
        made = cls(
            home, Path(tempfile.mkdtemp(prefix="felid-pm-", dir="/run")), tuple(plugin_dirs), network_dir
        )
        made.write_conf()
        return made

    @property
    def conf(self) -> Path:
        return self.home / "containers.conf"

    def write_conf(self) -> None:
        network = ['network_backend = "cni"']
        if self.plugin_dirs:
            quoted = ", ".join(f'"{d}"' for d in self.plugin_dirs)
            network.append(f"cni_plugin_dirs = [{quoted}]")
        if self.network_dir is not None:
            network.append(f'network_config_dir = "{self.network_dir}"')
        self.conf.write_text(
            "\n".join(
                [
                    "[network]",
                    *network,
                    "[engine]",
                    'runtime = "runc"',
                    'cgroup_manager = "cgroupfs"',
                    'events_logger = "file"',
                    'lock_type = "file"',
                    f'tmp_dir = "{self.runroot / "libpod"}"',
                    "[containers]",
                    'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]',
                    "",
                ]
            )
        )

    @property
    def global_args(self) -> list[str]:
        return [
            "--root",
            str(self.home / "storage"),
            "--runroot",
            str(self.runroot),
            "--storage-driver",
            "vfs",
        ]

    @property
    def environment(self) -> dict[str, str]:
        return {"CONTAINERS_CONF": str(self.conf), "PATH": PATH}

    def argv(self, *args: str, netns: str | None = None) -> list[str]:
        """The command line, in ``netns`` (nsenter, not ip netns exec: that remounts /sys, and runc
        needs the host's cgroup tree)."""
        enter = ["nsenter", f"--net=/run/netns/{netns}"] if netns else []
        return [*enter, "podman", *self.global_args, *args]

    def run(
        self, *args: str, netns: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.argv(*args, netns=netns),
            capture_output=True,
            text=True,
            timeout=300,
            env=self.environment,
            check=False,
        )
        if check and done.returncode:
            raise RuntimeError(f"podman {' '.join(args)}: {done.stderr.strip()[-1500:]}")
        return done

    def destroy(self, netns: str | None = None) -> None:
        """Every container removed (a CNI DEL for each, in ``netns``, where their networks were
        set up), then the storage and the run root."""
        self.run("rm", "--force", "--all", "--time", "5", netns=netns, check=False)
        self.run("system", "reset", "--force", check=False)
        shutil.rmtree(self.home, ignore_errors=True)
        shutil.rmtree(self.runroot, ignore_errors=True)

    def build_felid_image(self, cache: Path | None = None) -> str:
        """``deploy/build-image`` into this storage; the image's name."""
        env = {**os.environ, **self.environment, "PODMAN": " ".join(["podman", *self.global_args])}
        if cache is not None:
            env["FELID_IMAGE_CACHE"] = str(cache)
        done = subprocess.run(
            [str(BUILD_IMAGE)], capture_output=True, text=True, env=env, timeout=1200, check=False
        )
        if done.returncode:
            raise RuntimeError(f"deploy/build-image failed:\n{done.stderr[-3000:]}")
        return done.stdout.strip().splitlines()[-1]


def node_container(
    podman: Podman, image: str, host: LabHost, environ: Mapping[str, str]
) -> tuple[list[str], dict[str, str]]:
    """felid-node from ``image`` as the DaemonSet runs it, on ``host``: its network (the lab
    host's namespace), privileged, the host paths it writes (its var and run directories, here
    the lab host's own) and the kernel's modules."""
    volumes = [str(Path(environ["FELID_VAR_DIR"])), str(Path(environ["FELID_RUN_DIR"]))]
    args = ["run", "--rm", "--name", f"felid-node-{host.node}", "--network", "host", "--privileged"]
    args += ["--stop-timeout", "10"]
    for path in volumes:
        Path(path).mkdir(parents=True, exist_ok=True)
        args += ["--volume", f"{path}:{path}"]
    args += ["--volume", "/lib/modules:/lib/modules:ro"]
    for key, value in sorted(environ.items()):
        if key.startswith(("FELID_", "FELIX_", "TYPHA_")):
            args += ["--env", f"{key}={value}"]
    return podman.argv(*args, image, netns=host.netns), podman.environment
