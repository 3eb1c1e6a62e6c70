"""``felid-felix`` / ``python -m felix``: settings from the environment, then run."""

from __future__ import annotations

import logging
import os
import sys

from datastore.errors import InvalidName, ValidationFailed
from felix.agent import run_forever
from felix.launch import felix_from, log_level


def main() -> int:
    try:
        felix = felix_from(dict(os.environ))
    except (ValidationFailed, InvalidName) as exc:
        print(f"felix: invalid setting: {exc}", file=sys.stderr)
        return 1
    logging.basicConfig(level=log_level(felix), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pyroute2").setLevel(logging.INFO)  # its debug log is every netlink message
    return run_forever(felix)


if __name__ == "__main__":
    sys.exit(main())
