"""The README's Python publishing snippet, run as written against the real broker.

Its trigger reaches the triggers queue with its idempotency key; published with a
routing key nothing is bound to, it fails instead of losing the order.
"""

import json
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import pytest

from service.adapters.amqp.topology import Names, declare
from tests.unit.test_readme import publishing_snippet

StartOrder = Callable[[dict[str, Any]], Awaitable[None]]


def snippet(rabbitmq_url: str, exchange: str) -> StartOrder:
    code = publishing_snippet()
    code = code.replace("amqp://guest:guest@127.0.0.1:5672/", rabbitmq_url)
    code = code.replace('"flow.ingress"', f'"{exchange}"')
    scope: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the README's own code
    start: StartOrder = scope["start_order"]
    return start


async def test_the_snippet_publishes_a_trigger_with_its_idempotency_key(
    rabbitmq_url: str, names: Names
):
    async with await aio_pika.connect(rabbitmq_url) as connection:
        channel = await connection.channel()
        topology = await declare(channel, names, delivery_limit=5)

        await snippet(rabbitmq_url, names.ingress)({"order_id": 7, "total": 9.5})
        message = await topology.triggers.get(timeout=10, fail=True)
        await message.ack()

    assert message is not None
    assert message.type == "trigger"
    assert message.routing_key == "trigger.orders"
    assert json.loads(message.body) == {
        "flow": "orders",
        "body": {"order_id": 7, "total": 9.5},
        "idempotency_key": "order-7",
    }


async def test_an_unroutable_trigger_fails_the_call(
    rabbitmq_url: str, amqp_prefix: str, amqp_cleanup: Any
):
    bare = amqp_cleanup.exchange(f"{amqp_prefix}.bare")  # no queue bound to it
    async with await aio_pika.connect(rabbitmq_url) as connection:
        channel = await connection.channel()
        await channel.declare_exchange(bare, aio_pika.ExchangeType.TOPIC)

        with pytest.raises(RuntimeError, match="trigger not routed"):
            await snippet(rabbitmq_url, bare)({"order_id": 8})
