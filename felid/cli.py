"""The ``felid`` command: the user CLI (``felid demo``, ``felid version``).

Its second face is the CNI plugin, selected by CNI_COMMAND in the
environment as the CNI spec allows.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from felid import __version__, demo

USAGE = """usage: felid COMMAND

commands:
  demo [up|down] [options]  the local multi-host demo cluster (felid demo --help)
  version                   print the version
"""


def main(argv: Sequence[str] | None = None) -> int:
    if "CNI_COMMAND" in os.environ:
        # Invoked by a container runtime as the CNI plugin of "type": "felid".
        from felid.cni.workload_plugin import main as cni_main

        return cni_main()
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "demo":
        return demo.main(rest)
    if command == "version":
        print(f"felid v{__version__}")
        return 0
    print(f"felid: unknown command {command!r}\n{USAGE}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
