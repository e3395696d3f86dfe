"""RabbitMQ for a one-shot client (`flowctl`): one plain connection, no reconnects.

`connected` opens it and turns every driver failure inside its block into an
`UnavailableError` that names the broker with its password masked; `existing_exchange`
and `existing_queue` find what the workers declared, or raise `TopologyMissingError`.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractQueue,
)
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, ChannelNotFoundEntity

from service.errors import FlowError, UnavailableError

_CLOSE_TIMEOUT: Final = 5.0


class TopologyMissingError(FlowError):
    """An exchange or queue that no worker with this prefix has declared."""

    reason = "topology_missing"

    def __init__(self, what: str, name: str) -> None:
        self.what = what
        self.name = name
        super().__init__(
            f"no {what} '{name}' on the broker: has a worker with this prefix "
            "(AMQP_PREFIX, --prefix) started?"
        )


def masked(url: str) -> str:
    """`url` with its password, if any, replaced by `***`."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<malformed URL>"
    if password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


@contextlib.asynccontextmanager
async def connected(
    url: str, *, connect_timeout: timedelta = timedelta(seconds=10)
) -> AsyncIterator[AbstractConnection]:
    """A connection to `url`, closed on the way out.

    Raises:
        UnavailableError: the broker can't be reached or logged in to, or the
            connection failed while the block used it.
    """
    where = masked(url)
    try:
        connection = await aio_pika.connect(
            url, timeout=connect_timeout.total_seconds()
        )
    except CONNECTION_EXCEPTIONS as exc:
        raise UnavailableError(
            f"RabbitMQ at {where} is unreachable: {_describe(exc)}"
        ) from exc
    except ValueError as exc:  # yarl and aio-pika refuse a malformed URL this way
        raise UnavailableError(f"bad AMQP URL {where}: {exc}") from exc
    try:
        yield connection
    except CONNECTION_EXCEPTIONS as exc:
        raise UnavailableError(f"RabbitMQ at {where} failed: {_describe(exc)}") from exc
    finally:
        with contextlib.suppress(*CONNECTION_EXCEPTIONS):
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await connection.close()


async def existing_exchange(channel: AbstractChannel, name: str) -> AbstractExchange:
    """The exchange `name`, checked to exist (a failed check closes `channel`)."""
    try:
        return await channel.get_exchange(name, ensure=True)
    except ChannelNotFoundEntity:
        raise TopologyMissingError("exchange", name) from None


async def existing_queue(channel: AbstractChannel, name: str) -> AbstractQueue:
    """The queue `name`, checked to exist (a failed check closes `channel`)."""
    try:
        return await channel.get_queue(name, ensure=True)
    except ChannelNotFoundEntity:
        raise TopologyMissingError("queue", name) from None


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    # aiormq wraps the socket error: show the innermost, most specific message.
    cause = exc.__cause__ or exc.__context__
    if not text and cause is not None:
        text = str(cause).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text else name
