"""felid's plugins for a host that does not have felid's Python: the interpreter, its standard
library, felid's packages and every shared library they load, copied from the running
installation (the image) into ``<bin dir>/felid.d``, and started through the copied dynamic
loader, so nothing of the host's but ``/bin/sh`` and the kernel is used.  This is what the
felid-node DaemonSet's init container installs: a container runtime on the host runs the
plugins, and the image's Python lives only inside the image.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterable
from pathlib import Path

from datastore.version import VERSION
from felix.dataplane.hostfile import write_atomically

BUNDLE = "felid.d"
LOADER = "ld-linux.so"
SKIP = {"test", "idlelib", "tkinter", "ensurepip", "turtledemo", "lib2to3", "pydoc_data"}  # not felid's
ENTRY = {"felid": "felid.cli", "felid-ipam": "felid.cni.fastpath"}
_LDD_PATH = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x")


def launcher(plugin: str) -> str:
    """The plugin as the runtime starts it: the bundle's Python through the bundle's loader."""
    return "\n".join(
        [
            "#!/bin/sh",
            f"# felid's {plugin} CNI plugin: felid's own Python, from {BUNDLE} beside this file.",
            f'here=$(dirname "$(readlink -f "$0")")/{BUNDLE}',
            'export PYTHONHOME="$here" PYTHONPATH="$here/site-packages"',
            "export PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1",
            f'exec "$here/lib/{LOADER}" --library-path "$here/lib" \\',
            f'    "$here/bin/python3" -s -m {ENTRY[plugin]} "$@"',
            "",
        ]
    )


def _libraries(files: Iterable[Path]) -> set[Path]:
    """Every shared library ``files`` load (ldd), the dynamic loader among them."""
    found: set[Path] = set()
    for path in files:
        done = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=False)
        for line in done.stdout.splitlines():
            match = _LDD_PATH.search(line)
            if match:
                found.add(Path(match.group(1)))
    return found


def _copy_tree(source: Path, target: Path) -> None:
    def skipped(_directory: str, names: list[str]) -> list[str]:
        return [n for n in names if n in SKIP or n.startswith("config-")]  # config-: the static libpython

    shutil.copytree(source, target, symlinks=False, ignore=skipped)


def build(target: Path) -> Path:
    """Make ``target`` (a fresh directory) the bundle of this installation; the bundle's path."""
    python = Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    site_packages = Path(sysconfig.get_paths()["purelib"])
    (target / "bin").mkdir(parents=True)
    (target / "lib").mkdir()
    shutil.copy2(python, target / "bin" / "python3")
    _copy_tree(stdlib, target / "lib" / stdlib.name)
    _copy_tree(site_packages, target / "site-packages")
    objects = [python, *target.rglob("*.so"), *target.rglob("*.so.*")]
    for library in _libraries(objects):
        name = LOADER if library.name.startswith("ld-linux") else library.name
        if not (target / "lib" / name).exists():
            shutil.copy2(os.path.realpath(library), target / "lib" / name)
    return target


def stamp() -> str:
    """What a bundle was made from: felid's version and the interpreter's."""
    return f"felid {VERSION}, Python {sys.version.split()[0]}\n"


def install(bin_dir: Path) -> list[Path]:
    """The bundle and a launcher per plugin into ``bin_dir``; the files written (none when the
    bundle there is this installation's already).  The bundle is a directory ``felid.d`` points
    to, swapped by renaming a new link over it: a plugin starting meanwhile finds the old one
    or the new one, never half of either."""
    link = bin_dir / BUNDLE
    written: list[Path] = []
    if not (link.is_dir() and (link / "STAMP").exists() and (link / "STAMP").read_text() == stamp()):
        previous = link.resolve() if link.is_symlink() else None
        fresh = Path(tempfile.mkdtemp(prefix=f".{BUNDLE}-", dir=bin_dir))
        fresh.rmdir()
        build(fresh)
        (fresh / "STAMP").write_text(stamp())
        pointer = bin_dir / f".{BUNDLE}.link"
        pointer.unlink(missing_ok=True)
        pointer.symlink_to(fresh.name)
        if link.is_dir() and not link.is_symlink():
            shutil.rmtree(link)  # not one of ours: made by hand, say
        pointer.rename(link)
        if previous is not None and previous != fresh:
            shutil.rmtree(previous, ignore_errors=True)
        written.append(link)
    for plugin in ENTRY:
        path = bin_dir / plugin
        text = launcher(plugin)
        if path.exists() and path.read_text(errors="replace") == text:
            continue
        write_atomically(path, text, 0o755)
        written.append(path)
    return written
