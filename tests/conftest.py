"""Real RabbitMQ and MongoDB for every test that asks; never a skip, never a fake.

Servers and URLs are sync session fixtures: found or started once, shared by all tests.
Clients are function-scoped async fixtures, because each test runs on its own event loop
and a client belongs to the loop it was made on. Each test gets its own database and
its own topology names and deletes them afterwards; nothing ever wipes a server.
"""

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from typing import Any, TypeVar
from uuid import uuid4

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from tests.replica_set import MongoReplicaSet
from tests.services import (
    AmqpCleanup,
    MongoServer,
    ServiceUnavailableError,
    provide_mongodb_url,
    provide_rabbitmq_url,
)

T = TypeVar("T")


def _or_fail(provide: Callable[[], AbstractContextManager[T]]) -> Iterator[T]:
    """Yield what ``provide`` gives; if the service is missing, fail with the reason."""
    with ExitStack() as stack:
        try:
            service = stack.enter_context(provide())
        except ServiceUnavailableError as missing:
            reason = str(missing)
        else:
            yield service
            return
    # Outside the except, so the report is the reason alone, without a chained trace.
    pytest.fail(reason, pytrace=False)


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    """AMQP_URL, else the broker on 127.0.0.1:5672, else a container; or fail."""
    yield from _or_fail(provide_rabbitmq_url)


@pytest.fixture(scope="session")
def mongodb_url() -> Iterator[str]:
    """MONGODB_URL, else a container, else a local mongod; always a replica set."""
    yield from _or_fail(provide_mongodb_url)


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[MongoServer]:
    """A private mongod, apart from ``mongodb_url``, that tests may stop and kill.

    MONGODB_URL and containers are not ours to restart, so this one is always local.
    A test that stops or kills it must leave it running (``restart()``) when it ends.
    """
    yield from _or_fail(MongoServer)


@pytest.fixture(scope="session")
def mongo_replica_set() -> Iterator[MongoReplicaSet]:
    """A private three-member replica set whose primary tests may step down.

    Always local, like ``mongo_server``: three ``mongod``s of the dev dependency.
    """
    yield from _or_fail(MongoReplicaSet)


@pytest.fixture
async def mongo_db(mongodb_url: str) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    """A fresh database ``test_<uuid>``, dropped after the test."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongodb_url, tz_aware=True
    )
    try:
        database = client[f"test_{uuid4().hex}"]
        yield database
        await client.drop_database(database.name)
    finally:
        await client.close()


@pytest.fixture
def amqp_prefix() -> str:
    """A unique prefix (``t`` + 8 hex) for this test's exchange and queue names."""
    return f"t{uuid4().hex[:8]}"


@pytest.fixture
async def amqp_cleanup(rabbitmq_url: str) -> AsyncIterator[AmqpCleanup]:
    """Register each queue and exchange a test declares; they are deleted after it.

    ``channel.declare_queue(amqp_cleanup.queue(f"{amqp_prefix}.in"))``
    """
    cleanup = AmqpCleanup(rabbitmq_url)
    yield cleanup
    await cleanup.delete_all()
