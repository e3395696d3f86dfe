"""Unroutable messages on a real broker: the ingress exchange's alternate exchange
catches what no queue binds; the worker dead-letters it as `unroutable`, or holds and
re-publishes its own kinds while their binding is missing.
"""

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from uuid import uuid4

import aio_pika
import pytest
from structlog.testing import capture_logs

from examples import hello
from service.adapters.amqp.consumer import Outcome
from service.adapters.amqp.deadletters import dead_letter_queue
from service.adapters.amqp.dispatcher import open_publishing_channel
from service.adapters.amqp.topology import Names, establish
from service.engine.model import RunStatus
from tests.integration.amqp import (
    DEADLINE,
    Client,
    declare_legacy_ingress,
    next_message,
    reply_of,
    running_worker,
    until,
)


async def test_a_message_no_queue_binds_is_dead_lettered_as_unroutable(worker, client):
    dead = await client.channel.get_queue(worker.names.dead)

    message_id = await client.publish(
        "orders", {"flow": "hello", "body": {"name": "lost"}}, kind="trigger"
    )

    letter = await next_message(dead)
    assert letter.headers["x-dead-letter-reason"] == "unroutable"
    assert letter.headers["x-original-routing-key"] == "orders"
    assert letter.headers["x-original-exchange"] == worker.names.ingress
    assert "'orders'" in str(letter.headers["x-dead-letter-detail"])
    assert (letter.message_id, letter.type) == (message_id, "trigger")
    assert json.loads(letter.body)["body"] == {"name": "lost"}
    await until(lambda: worker.tally.dead_letters == {"unroutable": 1})
    assert worker.tally.outcomes["trigger", Outcome.DEAD_LETTERED] == 1


async def test_an_unroutable_request_is_answered_on_its_reply_to(worker, client):
    replies = await client.channel.declare_queue(exclusive=True)

    await client.publish(
        "cancel_run",
        {"run_id": "r-1"},
        kind="cancel_run",
        reply_to=replies.name,
        correlation_id="c-9",
    )

    answer = await next_message(replies)
    assert answer.correlation_id == "c-9"
    assert (reply_of(answer)["ok"], reply_of(answer)["status"]) == (False, "invalid")
    assert "'cancel_run'" in reply_of(answer)["message"]


async def test_a_replayed_unroutable_letter_goes_back_to_its_routing_key(
    rabbitmq_url, worker, client, amqp_cleanup
):
    dead = await client.channel.get_queue(worker.names.dead)
    message_id = await client.publish("orders", {"flow": "hello"}, kind="trigger")
    await until(lambda: worker.tally.dead_letters["unroutable"] == 1)

    # Still unbound: the replay is routed to the alternate exchange again and comes
    # back as a new `unroutable` letter; nothing is lost.
    async with dead_letter_queue(rabbitmq_url, worker.names) as letters:
        [shown], total = await letters.browse(10)
        first = await letters.replay(message_id)
    await until(lambda: worker.tally.dead_letters["unroutable"] == 2)
    again = await next_message(dead, ack=False)
    await again.nack(requeue=True)

    # Bound now: the replay reaches the queue the key names, as first published.
    orders = await client.channel.declare_queue(
        amqp_cleanup.queue(f"{worker.names.prefix}.orders"), auto_delete=False
    )
    await orders.bind(worker.names.ingress, "orders")
    async with dead_letter_queue(rabbitmq_url, worker.names) as letters:
        second = await letters.replay(message_id)
    delivered = await next_message(orders)

    assert (total, shown.reason, shown.routing_key) == (1, "unroutable", "orders")
    assert shown.exchange == worker.names.ingress
    assert [r.message_id for r in first.replayed] == [message_id]
    assert again.headers["x-dead-letter-reason"] == "unroutable"
    assert [r.message_id for r in second.replayed] == [message_id]
    assert (delivered.message_id, delivered.type) == (message_id, "trigger")
    assert json.loads(delivered.body) == {"flow": "hello"}
    assert worker.tally.dead_letters == {"unroutable": 2}


async def test_a_run_step_whose_binding_is_missing_is_held_not_dead_lettered(
    worker, client
):
    """Our own kinds have a binding; without it the alternate exchange catches the
    dispatch, and the worker re-publishes it with backoff until the binding is back
    (a transient failure: never dead-lettered)."""
    steps = await client.channel.get_queue(worker.names.steps)
    await steps.unbind(worker.names.ingress, "step.#")
    run_id = await _trigger_hello(client)

    await until(lambda: worker.tally.deferrals["run_step"] >= 3)
    await steps.bind(worker.names.ingress, "step.#")

    run = await worker.until_final(run_id)
    assert run.status is RunStatus.SUCCEEDED
    dead = await client.channel.declare_queue(worker.names.dead, passive=True)
    assert dead.declaration_result.message_count == 0
    assert worker.tally.dead_letters == {}


# -- an ingress exchange declared before the alternate exchange --------------------


@pytest.fixture
def legacy_names(names: Names) -> Iterator[Names]:
    """`names`, whose ingress exchange an older version declared (no argument)."""
    yield names
    _rabbitmqctl("clear_policy", _policy(names), check=False)


@pytest.fixture
async def connection(rabbitmq_url) -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    async with await aio_pika.connect_robust(rabbitmq_url) as connection:
        yield connection


async def test_a_legacy_ingress_is_kept_and_its_dropped_messages_are_reported(
    rabbitmq_url, legacy_names, connection
):
    names = legacy_names
    await declare_legacy_ingress(rabbitmq_url, names)

    with capture_logs() as logs:
        topology = await establish(
            connection,
            await open_publishing_channel(connection),
            names,
            delivery_limit=5,
        )

    assert topology.legacy_ingress
    [warning] = [e for e in logs if e["event"] == "unroutable_messages_dropped"]
    assert warning["log_level"] == "warning"
    assert warning["exchange"] == names.ingress
    assert "rabbitmqctl set_policy" in warning["migration"]
    assert f'"alternate-exchange":"{names.unroutable}"' in warning["migration"]


async def test_a_policy_gives_a_legacy_ingress_its_alternate_exchange(
    rabbitmq_url, legacy_names, connection
):
    names = legacy_names
    await declare_legacy_ingress(rabbitmq_url, names)
    _rabbitmqctl(*_policy_arguments(names))

    async def reported() -> list[object]:
        with capture_logs() as logs:
            topology = await establish(
                connection,
                await open_publishing_channel(connection),
                names,
                delivery_limit=5,
            )
        assert topology.legacy_ingress
        return [e for e in logs if e["event"] == "unroutable_messages_dropped"]

    # A policy takes effect asynchronously: poll until the probe is caught.
    async with asyncio.timeout(DEADLINE):
        while True:
            if not await reported():
                return
            await asyncio.sleep(0.1)


async def test_a_worker_on_a_legacy_ingress_with_the_policy_dead_letters_unroutable(
    rabbitmq_url, legacy_names
):
    names = legacy_names
    await declare_legacy_ingress(rabbitmq_url, names)
    _rabbitmqctl(*_policy_arguments(names))

    async with (
        running_worker(rabbitmq_url, names, hello.flows, hello.handlers) as worker,
        await aio_pika.connect(rabbitmq_url) as connection,
    ):
        client = Client(await connection.channel(), await connection.channel(), names)
        dead = await client.channel.get_queue(names.dead)
        await client.publish("orders", {"flow": "hello"}, kind="trigger")

        letter = await next_message(dead)

    assert worker.topology.legacy_ingress
    assert letter.headers["x-dead-letter-reason"] == "unroutable"


def _policy(names: Names) -> str:
    return f"{names.prefix}-alternate"


def _policy_arguments(names: Names) -> list[str]:
    # Scoped to this test's exchange, so no other prefix on the broker is touched.
    pattern = "^" + names.ingress.replace(".", r"\.") + "$"
    definition = json.dumps({"alternate-exchange": names.unroutable})
    return [
        "set_policy",
        "--apply-to",
        "exchanges",
        "--priority",
        "100",
        _policy(names),
        pattern,
        definition,
    ]


def _rabbitmqctl(*arguments: str, check: bool = True) -> None:
    try:
        subprocess.run(
            ["rabbitmqctl", *arguments], check=check, capture_output=True, timeout=60
        )
    except FileNotFoundError:
        pytest.fail("needs rabbitmqctl for the broker under test", pytrace=False)


async def _trigger_hello(client: Client) -> str:
    run_id = str(uuid4())
    await client.publish(
        "trigger.hello", {"flow": "hello", "run_id": run_id}, kind="trigger"
    )
    return run_id
