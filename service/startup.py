"""What a worker does before it consumes: reach MongoDB and RabbitMQ, then close them.

Each service is tried until it answers (or the worker is stopped): every failed try is
one warning naming the service, its URL with the password masked, and that the worker
keeps trying. MongoDB comes first (indexes ensured), then RabbitMQ (topology declared).
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Final, TypeVar

import aio_pika
import structlog
from aio_pika.abc import AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from pymongo.errors import ConfigurationError
from structlog.typing import FilteringBoundLogger

from service.adapters.amqp.client import masked
from service.adapters.amqp.dispatcher import open_publishing_channel
from service.adapters.amqp.topology import Names, Topology, establish
from service.adapters.mongo.client import MongoStores, redacted
from service.adapters.mongo.client import connect as connect_mongo
from service.errors import SettingsError, UnavailableError
from service.settings import Settings

log: FilteringBoundLogger = structlog.get_logger()

T = TypeVar("T")

READY_TIMEOUT: Final = 2.0
"""Seconds MongoDB's `ping` may take before `/readyz` answers 503."""
_CLOSE_TIMEOUT: Final = 10.0
_FIRST_RETRY: Final = 0.5
_MAX_RETRY: Final = 15.0


@dataclass(frozen=True, slots=True)
class Services:
    mongo: MongoStores
    amqp: AbstractRobustConnection
    topology: Topology

    async def problem(self) -> str | None:
        """Why the services are not usable now, or None when both answer."""
        if self.amqp.is_closed or not self.amqp.connected.is_set():
            return "the broker connection is down"
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await self.mongo.ping()
        except (TimeoutError, UnavailableError):
            return "MongoDB does not answer"
        return None


@contextlib.asynccontextmanager
async def connected(
    settings: Settings, stop: asyncio.Event
) -> AsyncIterator[Services | None]:
    """MongoDB (indexes ensured), then RabbitMQ (topology declared).

    Each is retried until it answers, or `stop` is set (then None). Closes AMQP, then
    MongoDB, on the way out.
    """
    concern = settings.mongodb_write_concern
    mongodb_url = settings.mongodb_url.get_secret_value()
    try:
        mongo = connect_mongo(
            mongodb_url,
            settings.mongodb_database,
            write_concern=int(concern) if concern.isdigit() else concern,
            server_selection_timeout=settings.mongodb_timeout,
            connect_timeout=settings.mongodb_timeout,
            app_name=f"flow-orchestrator {settings.worker_id}",
        )
    except (ConfigurationError, ValueError) as exc:  # a malformed URL or option
        problem = f"{redacted(mongodb_url)} can't be used: {exc}"
        raise SettingsError("MONGODB_URL", problem) from None
    try:
        waiting = Waiting("mongodb", "MongoDB", redacted(mongodb_url))
        if not await until_done(waiting, mongo.ensure_indexes, stop):
            yield None
            return
        waiting = Waiting(
            "rabbitmq", "RabbitMQ", masked(settings.amqp_url.get_secret_value())
        )
        opened = await until_available(waiting, lambda: _open_amqp(settings), stop)
        if opened is None:
            yield None
            return
        amqp, topology = opened
        try:
            yield Services(mongo, amqp, topology)
        finally:
            with contextlib.suppress(*CONNECTION_EXCEPTIONS):
                async with asyncio.timeout(_CLOSE_TIMEOUT):
                    await amqp.close()
    finally:
        await mongo.close()


async def _open_amqp(settings: Settings) -> tuple[AbstractRobustConnection, Topology]:
    """A robust connection (it reconnects by itself) and the declared topology."""
    try:
        connection = await aio_pika.connect_robust(
            settings.amqp_url.get_secret_value(),
            client_properties={"connection_name": settings.worker_id},
        )
    except CONNECTION_EXCEPTIONS as exc:
        raise UnavailableError(f"RabbitMQ is unavailable: {exc!r}") from exc
    except ValueError as exc:  # yarl and aio-pika refuse a malformed URL this way
        url = masked(settings.amqp_url.get_secret_value())
        raise SettingsError("AMQP_URL", f"{url} can't be used: {exc}") from None
    try:
        channel = await open_publishing_channel(connection)
        topology = await establish(
            connection,
            channel,
            Names(settings.amqp_prefix),
            delivery_limit=settings.amqp_delivery_limit,
        )
    except CONNECTION_EXCEPTIONS as exc:
        with contextlib.suppress(*CONNECTION_EXCEPTIONS):
            await connection.close()
        raise UnavailableError(f"RabbitMQ is unavailable: {exc!r}") from exc
    return connection, topology


@dataclass(frozen=True, slots=True)
class Waiting:
    """What a worker waits for at start: a service, its name and its masked URL."""

    service: str
    name: str
    url: str

    def note(self, delay: float) -> str:
        return (
            f"waiting for {self.name} at {self.url}: not reachable yet; trying again "
            f"in {delay:g} s, and on until it answers or the worker is stopped"
        )


async def until_available(
    what: Waiting, attempt: Callable[[], Awaitable[T]], stop: asyncio.Event
) -> T | None:
    """`attempt()`, again with backoff after each UnavailableError.

    None when `stop` is set first.
    """
    delay = _FIRST_RETRY
    while not stop.is_set():
        try:
            return await attempt()
        except UnavailableError as exc:
            log.warning(
                "startup_deferred",
                service=what.service,
                url=what.url,
                error=str(exc),
                delay_s=delay,
                note=what.note(delay),
            )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await stop.wait()
        delay = min(delay * 2, _MAX_RETRY)
    return None


async def until_done(
    what: Waiting, attempt: Callable[[], Awaitable[None]], stop: asyncio.Event
) -> bool:
    """Whether `attempt()` succeeded (retried as `until_available`) before `stop`."""

    async def done() -> bool:
        await attempt()
        return True

    return await until_available(what, done, stop) is not None
