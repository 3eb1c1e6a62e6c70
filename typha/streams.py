"""Reading typha's frames off an asyncio stream (both sides)."""

from __future__ import annotations

import asyncio
from typing import Any

from typha.protocol import HEADER, decode, frame_length


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
    """The next frame's kind (unknown kinds too: the caller decides) and decoded body."""
    length, kind, flags = frame_length(await reader.readexactly(HEADER.size))
    return kind, decode(flags, await reader.readexactly(length))
