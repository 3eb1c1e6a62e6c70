"""A minimal HTTP/1.1 server on asyncio for health, status and metrics (no thread, no framework),
and the blocking client that felid-node and felidctl use to ask one on this host."""

from __future__ import annotations

import asyncio
import inspect
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping

Response = tuple[int, str, bytes]  # status, content type, body
Handler = Callable[[], Response | Awaitable[Response]]  # a slow one is a coroutine, off the loop's back

REASONS = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}
TEXT = "text/plain; charset=utf-8"


async def serve_http(host: str, port: int, handlers: Mapping[str, Handler]) -> asyncio.Server:
    """GET ``path`` answers ``handlers[path]()``; anything else is a 404 listing the paths."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = (await asyncio.wait_for(reader.readline(), 5)).decode(errors="replace").split()
            path = request[1].split("?", 1)[0] if len(request) > 1 else ""
            handler = handlers.get(path)
            if handler is None:
                status, kind, body = 404, TEXT, f"try {' or '.join(sorted(handlers))}\n".encode()
            else:
                answer = handler()
                status, kind, body = await answer if inspect.isawaitable(answer) else answer
            head = (
                f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)


def health_handlers(ready: Callable[[], bool]) -> dict[str, Handler]:
    """/liveness (the process answers) and /readiness (``ready()``)."""
    return {
        "/liveness": lambda: (200, TEXT, b"live\n"),
        "/readiness": lambda: (200, TEXT, b"ready\n") if ready() else (503, TEXT, b"not ready\n"),
    }


async def serve_health(host: str, port: int, ready: Callable[[], bool]) -> asyncio.Server:
    return await serve_http(host, port, health_handlers(ready))


def get_local(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes] | None:
    """GET http://127.0.0.1:``port````path``: (status, body), or None when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as reply:
            return int(reply.status), bytes(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, ValueError):
        return None
