"""The ``felid`` command: the user CLI (``felid demo``, ``felid version``).

Its second face is the CNI plugin, selected by CNI_COMMAND in the
environment as the CNI spec allows.  Commands beyond ``version`` are found
through the ``felid.commands`` entry points (``demo`` is the lab's), so this
package never imports the lab that is built on top of it.
"""

from __future__ import annotations

import os
import sys

from felid.cni.fastpath import TYPE_CHECKING, through_felid_node

if TYPE_CHECKING:  # not at run time: a CNI plugin starts here for every pod
    from collections.abc import Callable, Sequence

COMMANDS_GROUP = "felid.commands"
USAGE = """usage: felid COMMAND

commands:
  demo [up|down] [options]  the local multi-host demo cluster (felid demo --help)
  version                   print the version
"""


def _command(name: str) -> Callable[[list[str]], int] | None:
    from importlib.metadata import entry_points  # not at import: the CNI plugin path skips it

    found = entry_points(group=COMMANDS_GROUP, name=name)
    return next((ep.load() for ep in found), None)


def main(argv: Sequence[str] | None = None) -> int:
    if "CNI_COMMAND" in os.environ:
        # Invoked by a container runtime as the CNI plugin of "type": "felid": by felid-node
        # when it answers, else here.
        code = through_felid_node("felid")
        if code is not None:
            return code
        from felid.cni.workload_plugin import main as cni_main

        return cni_main()
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "version":
        from felid import __version__

        print(f"felid v{__version__}")
        return 0
    run = _command(command)
    if run is None:
        print(f"felid: unknown command {command!r}\n{USAGE}", end="", file=sys.stderr)
        return 2
    return run(rest)


if __name__ == "__main__":
    sys.exit(main())
