"""Running the kernel's command-line tools (iptables-restore, ipset): the one place felix starts
a process, so every manager reports a missing tool or a refusal the same way."""

from __future__ import annotations

import asyncio

from felix.dataplane.netlink import KernelError


async def run_command(
    *argv: str, stdin: str | None = None, check: bool = True, error: type[KernelError] = KernelError
) -> tuple[int, str]:
    """(exit code, stdout) of ``argv``; ``error`` (with the tool's own message) when it is not
    installed, or, with ``check``, when it fails."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError:
        raise error(f"{argv[0]} is not installed") from None
    out, err = await process.communicate(stdin.encode() if stdin is not None else None)
    code = process.returncode or 0
    if check and code:
        raise error(f"{' '.join(argv[:4])}: {err.decode(errors='replace').strip()[:400]}")
    return code, out.decode()
