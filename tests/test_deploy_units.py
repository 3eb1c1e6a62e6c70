"""The systemd units and their environment files (``deploy/systemd``) pass ``systemd-analyze
verify`` with no warning, and every variable an environment file sets is one the program it goes
to accepts (``--check-config``, which names anything it does not know)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lab.processes import BIN

UNITS = Path(__file__).resolve().parent.parent / "deploy" / "systemd"
PREFIX = "/opt/felid/bin"


def unit_root(tmp_path: Path) -> Path:
    """A root for ``systemd-analyze verify --root``: the system's own units, felid's, and the
    programs where the units expect them (each handing on to the one under test)."""
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in UNITS.glob("*.service"):
        shutil.copy(unit, root / "etc/systemd/system" / unit.name)
    (root / PREFIX.lstrip("/")).mkdir(parents=True)
    for program in ("felid-node", "felid-typha"):
        launcher = root / PREFIX.lstrip("/") / program
        launcher.write_text(f'#!/bin/sh\nexec {BIN / program} "$@"\n')
        launcher.chmod(0o755)
    return root


def verify(root: Path, *units: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", *units], capture_output=True, text=True, check=False
    )


def test_every_unit_verifies_without_a_warning(tmp_path: Path) -> None:
    root = unit_root(tmp_path)
    units = sorted(u.name for u in UNITS.glob("*.service"))
    assert units == ["felid-node.service", "felid-route-reflector.service", "felid-typha.service"]
    done = verify(root, *units)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    # The check can fail: a key systemd does not know is a warning, named.
    bad = root / "etc/systemd/system/felid-bad.service"
    bad.write_text((UNITS / "felid-node.service").read_text().replace("KillMode=", "KilMode="))
    assert "Unknown key 'KilMode'" in verify(root, "felid-bad.service").stderr


def environment(path: Path, tmp_path: Path) -> dict[str, str]:
    """The file's variables; certificate paths point at a readable file of the test's (the
    settings check that they can be read)."""
    readable = tmp_path / "pem"
    readable.write_text("not checked beyond being readable\n")
    out = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = str(readable) if key.endswith("_FILE") else value
    return out


def program_of(unit: Path) -> Path:
    found = re.search(rf"^ExecStartPre={re.escape(PREFIX)}/(\S+) --check-config$", unit.read_text(), re.M)
    assert found, f"{unit.name} checks its configuration before it starts"
    return BIN / found.group(1)


@pytest.mark.parametrize("unit", sorted(p.name for p in UNITS.glob("*.service")))
def test_every_variable_of_the_environment_file_is_accepted(unit: str, tmp_path: Path) -> None:
    path = UNITS / unit
    env_file = re.search(r"^EnvironmentFile=/etc/felid/(\S+)$", path.read_text(), re.M)
    assert env_file, f"{unit} reads an environment file"
    environ = environment(UNITS / env_file.group(1), tmp_path)
    done = subprocess.run(
        [str(program_of(path)), "--check-config"], env=environ, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "configuration is valid" in done.stdout
    # A misspelt variable is named, and fails the check.
    environ["FELID_ETCD_ENDPOINT"] = environ["FELID_ETCD_ENDPOINTS"]
    done = subprocess.run(
        [str(program_of(path)), "--check-config"], env=environ, capture_output=True, text=True, check=False
    )
    assert done.returncode == 1 and "no such setting: FELID_ETCD_ENDPOINT" in done.stderr, done.stderr
