"""Fixtures of the integration tests on the real broker: names, a worker and a client.

A module may define its own fixture of the same name (its own flows, say); pytest then
uses that one.
"""

from collections.abc import AsyncIterator

import aio_pika
import pytest

from examples import hello
from service.adapters.amqp.topology import Names
from tests.integration.amqp import FAST, Client, Worker, register, running_worker


@pytest.fixture
def names(amqp_prefix, amqp_cleanup) -> Names:
    """A fresh topology prefix; its queues and exchanges go when the test ends."""
    names = Names(amqp_prefix)
    register(amqp_cleanup, names)
    return names


@pytest.fixture
async def worker(rabbitmq_url, names) -> AsyncIterator[Worker]:
    """A consumer running the hello flow on the memory stores."""
    async with running_worker(
        rabbitmq_url, names, hello.flows, hello.handlers, backoff=FAST
    ) as worker:
        yield worker


@pytest.fixture
async def client(rabbitmq_url, names) -> AsyncIterator[Client]:
    """A plain aio-pika client, as an outside service has."""
    async with await aio_pika.connect(rabbitmq_url) as connection:
        channel = await connection.channel()
        raw = await connection.channel(publisher_confirms=False)
        yield Client(channel, raw, names)
