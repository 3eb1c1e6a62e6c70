"""Run a command inside a User-Mode-Linux kernel, for kernels that lack a module (ipip here).

Debian's ``user-mode-linux`` boots with the host filesystem as its root
(hostfs), loads the modules it needs from its own tree, runs the command as
init's child and powers off; the command's exit code comes back through a file.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

# What felid uses (modprobe brings their dependencies); vxlan loads on demand. UML's kernel has
# no nft NAT: inside it, felix must use iptables-legacy (FELIX_IPTABLESBACKEND=Legacy).
MODULES = ("veth", "ipip", "bridge", "iptable_nat", "xt_MASQUERADE", "xt_comment")
IPTABLES_BACKEND = "Legacy"


INIT = """#!/bin/bash
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /run
mkdir -p /run/netns
# The host's /lib/modules is not UML's: show UML its own tree there (inside UML only), so
# modprobe, and the kernel's on-demand loading (nf_tables for iptables...), find them.
mount -t tmpfs tmpfs /lib/modules
mkdir -p /lib/modules/$(uname -r)
mount --bind /usr/lib/uml/modules/$(uname -r) /lib/modules/$(uname -r)
for module in {modules}; do
    modprobe $module >> {work}/init.log 2>&1
done
ip link set lo up
cd {cwd}
{command} {redirect}
echo $? > {work}/exit-code
echo o > /proc/sysrq-trigger
sleep 30
"""


def kernel_has(module: str) -> bool:
    """Whether this machine's kernel can load ``module`` (or has it built in)."""
    if Path(f"/sys/module/{module}").exists():
        return True
    return subprocess.run(["modprobe", module], capture_output=True, check=False).returncode == 0


def run_in_uml(
    argv: Sequence[str],
    work: Path,
    cwd: Path,
    *,
    log: Path | None = None,
    memory: str = "1G",
    timeout: float = 600,
) -> int:
    """``argv`` inside UML; its output to ``log`` (or UML's console, our stdout); its exit code."""
    uml = shutil.which("linux.uml")
    if uml is None:
        raise RuntimeError("user-mode-linux is not installed (apt install user-mode-linux)")
    work.mkdir(parents=True, exist_ok=True)
    init = work / "init.sh"
    redirect = f"> {shlex.quote(str(log))} 2>&1" if log else ""
    init.write_text(
        INIT.format(
            modules=" ".join(MODULES),
            work=shlex.quote(str(work)),
            cwd=shlex.quote(str(cwd)),
            command=shlex.join(argv),
            redirect=redirect,
        )
    )
    init.chmod(0o755)
    exit_file = work / "exit-code"
    exit_file.unlink(missing_ok=True)
    subprocess.run(
        [
            uml,
            f"mem={memory}",
            "root=/dev/root",
            "rootfstype=hostfs",
            "rootflags=/",
            "rw",
            f"init={init}",
            "con=null",
            "con0=fd:0,fd:1",
            "quiet",
        ],
        stdin=subprocess.DEVNULL,
        stdout=None if log is None else subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )
    if not exit_file.exists():
        raise RuntimeError(f"the command did not finish inside UML (see {work}/init.log)")
    return int(exit_file.read_text().strip() or 1)
