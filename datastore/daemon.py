"""How felid's daemons run: until SIGTERM or SIGINT (exit 0), or until their first failure (exit 1,
logged), which their supervisor (felid-node, systemd, Kubernetes) answers with a clean restart."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable


async def until_signalled(run: Callable[[], Awaitable[object]], log: logging.Logger) -> int:
    """Run ``run()``; a signal cancels it (its clean-up runs), exit 0; anything else is exit 1."""
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, main.cancel)
    try:
        await run()
    except asyncio.CancelledError:
        return 0
    except Exception:
        log.exception("failed")
        return 1
    log.error("stopped without a signal")
    return 1
