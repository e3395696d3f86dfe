"""The worker's health port: `/healthz`, `/readyz` and `/metrics`, nothing else.

Plain `asyncio.start_server`, one request per connection, GET and HEAD only: probes
and a Prometheus scraper need no framework.
"""

import asyncio
import contextlib
import errno
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from service import metrics
from service.errors import SettingsError

Probe = Callable[[], Awaitable[str | None]]
"""Why the worker is not ready, or None when it is."""

_REQUEST_TIMEOUT: Final = 5.0
_MAX_HEADER_LINES: Final = 100
_TEXT: Final = "text/plain; charset=utf-8"
_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    content_type: str = _TEXT


async def listen(*, host: str, port: int, ready: Probe) -> asyncio.Server:
    """The health server, listening on `host:port` (serve it with `serve_until`).

    Raises:
        SettingsError: the port is in use, or may not be opened (HEALTH_PORT).
    """

    async def on_connection(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await _exchange(reader, writer, ready)

    try:
        return await asyncio.start_server(on_connection, host=host, port=port)
    except OSError as exc:
        raise SettingsError("HEALTH_PORT", _cannot_listen(port, exc)) from None


async def serve_until(stop: asyncio.Event, server: asyncio.Server) -> None:
    """Answer probes and scrapes on `server` until `stop` is set, then close it."""
    async with server:
        await stop.wait()


def _cannot_listen(port: int, exc: OSError) -> str:
    match exc.errno:
        case errno.EADDRINUSE:
            return (
                f"{port} is in use: another process listens there (choose a free "
                "port, or 0 to turn the health port off)"
            )
        case errno.EACCES:
            return f"{port} may not be opened by this user (permission denied)"
        case _:
            return f"{port} can't be opened: {exc.strerror or exc}"


async def answer(method: str, path: str, ready: Probe) -> Answer:
    """The response to one request (`path` may carry a query string, ignored)."""
    if method not in {"GET", "HEAD"}:
        return Answer(405, b"GET only\n")
    match path.split("?", 1)[0]:
        case "/healthz":
            return Answer(200, b"ok\n")
        case "/readyz":
            why = await ready()
            if why is None:
                return Answer(200, b"ready\n")
            return Answer(503, f"not ready: {why}\n".encode())
        case "/metrics":
            return Answer(200, metrics.latest(), metrics.TEXT_FORMAT)
        case _:
            return Answer(404, b"not found\n")


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ready: Probe
) -> None:
    try:
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT):
                method, path = await _read_request(reader)
        except (TimeoutError, ValueError, asyncio.LimitOverrunError):
            response = Answer(400, b"bad request\n")
        else:
            response = await answer(method, path, ready)
            if method == "HEAD":
                response = Answer(response.status, b"", response.content_type)
        writer.write(_encode(response))
        await writer.drain()
    except ConnectionError:
        pass  # the client went away; nothing to answer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str]:
    """Method and path of the request line; the headers are read and ignored."""
    method, path, _ = (await reader.readline()).decode("latin-1").split(" ", 2)
    for _ in range(_MAX_HEADER_LINES):
        if (await reader.readline()).strip() == b"":
            return method, path
    raise ValueError("too many header lines")


def _encode(response: Answer) -> bytes:
    head = (
        f"HTTP/1.1 {response.status} {_REASONS[response.status]}\r\n"
        f"Content-Type: {response.content_type}\r\n"
        f"Content-Length: {len(response.body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + response.body
