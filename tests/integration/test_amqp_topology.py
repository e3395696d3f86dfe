"""The topology on a real broker: idempotent, quorum queues, routing, dead letters."""

import aio_pika
import pytest
from aio_pika.exceptions import ChannelPreconditionFailed

from service.adapters.amqp.topology import declare, work_queue_arguments
from tests.integration.amqp import next_message

QUEUES = ["triggers", "steps", "control"]


async def test_declaring_twice_is_idempotent(rabbitmq_url, names):
    async with await aio_pika.connect(rabbitmq_url) as connection:
        channel = await connection.channel()

        first = await declare(channel, names, delivery_limit=5)
        second = await declare(channel, names, delivery_limit=5)

        assert [q.name for q in first.work_queues] == [
            f"{names.prefix}.triggers",
            f"{names.prefix}.steps",
            f"{names.prefix}.control",
        ]
        assert [q.name for q in second.work_queues] == [
            q.name for q in first.work_queues
        ]
        assert (second.ingress.name, second.dead_letter.name, second.dead.name) == (
            f"{names.prefix}.ingress",
            f"{names.prefix}.dlx",
            f"{names.prefix}.dead",
        )


@pytest.mark.parametrize("queue", QUEUES)
async def test_a_work_queue_is_quorum_with_the_dlx_and_the_delivery_limit(
    rabbitmq_url, names, queue
):
    name = getattr(names, queue)
    async with await aio_pika.connect(rabbitmq_url) as connection:
        await declare(await connection.channel(), names, delivery_limit=5)
        expected = work_queue_arguments(names, delivery_limit=5)

        # The broker accepts a redeclaration only with equivalent arguments.
        same = await connection.channel()
        await same.declare_queue(name, durable=True, arguments=expected)
        for changed in (
            {**expected, "x-queue-type": "classic"},
            {**expected, "x-dead-letter-exchange": f"{names.prefix}.other"},
            {**expected, "x-delivery-limit": 6},
        ):
            other = await connection.channel()
            with pytest.raises(ChannelPreconditionFailed):
                await other.declare_queue(name, durable=True, arguments=changed)

        assert expected == {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": f"{names.prefix}.dlx",
            "x-delivery-limit": 5,
        }


@pytest.mark.parametrize(
    ("routing_key", "queue"),
    [
        ("trigger.hello", "triggers"),
        ("step.f-1", "steps"),
        ("control.cancel_run", "control"),
    ],
    ids=QUEUES,
)
async def test_the_ingress_exchange_routes_each_kind_to_its_queue(
    rabbitmq_url, names, routing_key, queue
):
    async with await aio_pika.connect(rabbitmq_url) as connection:
        topology = await declare(await connection.channel(), names, delivery_limit=5)

        await topology.ingress.publish(aio_pika.Message(b"{}"), routing_key=routing_key)

        found = await next_message(getattr(topology, queue))
        assert found.routing_key == routing_key


async def test_a_message_past_the_delivery_limit_is_dead_lettered_by_the_broker(
    rabbitmq_url, names
):
    async with await aio_pika.connect(rabbitmq_url) as connection:
        topology = await declare(await connection.channel(), names, delivery_limit=1)
        await topology.ingress.publish(
            aio_pika.Message(b"{}", message_id="m1"), routing_key="step.f"
        )

        for _ in range(2):  # a worker that dies holding the message, twice
            doomed = await connection.channel()
            steps = await doomed.get_queue(names.steps)
            await next_message(steps, ack=False)
            await doomed.close()

        dead = await next_message(topology.dead)
        assert dead.message_id == "m1"
        assert dead.headers["x-first-death-reason"] == "delivery_limit"
