"""/liveness and /readiness over plain HTTP on asyncio: no thread, no framework."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def serve_health(host: str, port: int, ready: Callable[[], bool]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = (await asyncio.wait_for(reader.readline(), 5)).decode(errors="replace").split()
            path = request[1] if len(request) > 1 else ""
            if path == "/liveness":
                status, body = "200 OK", "live\n"
            elif path == "/readiness":
                status, body = (
                    ("200 OK", "ready\n") if ready() else ("503 Service Unavailable", "not ready\n")
                )
            else:
                status, body = "404 Not Found", "try /liveness or /readiness\n"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                f"Connection: close\r\n\r\n{body}".encode()
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
