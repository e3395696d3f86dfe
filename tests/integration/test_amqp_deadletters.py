"""The dead-letter queue adapter on a real broker: reading loses nothing, replay
confirms before it acks, purge empties.
"""

from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from service.adapters.amqp.deadletters import (
    DeadLetterQueue,
    Selection,
    dead_letter_queue,
)
from service.adapters.amqp.topology import Names, declare
from tests.integration.amqp import declare_legacy_ingress, register
from tests.services import AmqpCleanup


@pytest.fixture
async def names(amqp_prefix: str, amqp_cleanup: AmqpCleanup) -> Names:
    names = Names(amqp_prefix)
    register(amqp_cleanup, names)
    return names


@pytest.fixture
async def channel(rabbitmq_url: str, names: Names) -> AsyncIterator[AbstractChannel]:
    connection: AbstractRobustConnection = await aio_pika.connect_robust(rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        await declare(channel, names, delivery_limit=5)
        yield channel


@pytest.fixture
async def letters(
    rabbitmq_url: str, names: Names, channel: AbstractChannel
) -> AsyncIterator[DeadLetterQueue]:
    async with dead_letter_queue(rabbitmq_url, names) as queue:
        yield queue


async def dead_letter(
    channel: AbstractChannel,
    names: Names,
    message_id: str | None,
    *,
    routing_key: str = "trigger.hello",
    reason: str = "unknown_reference",
) -> None:
    """A letter as the consumer writes it: the original plus the reason headers."""
    exchange = await channel.get_exchange(names.dlx)
    await exchange.publish(
        aio_pika.Message(
            b'{"flow": "hello"}',
            type="trigger",
            message_id=message_id,
            content_type="application/json",
            headers={
                "x-dead-letter-reason": reason,
                "x-dead-letter-detail": "unknown flow 'hello'",
                "x-original-type": "trigger",
                "x-original-routing-key": routing_key,
                "x-original-exchange": names.ingress,
                "x-trace": "kept",
            },
        ),
        routing_key=reason,
    )


async def test_reading_again_and_again_keeps_every_letter_in_order_and_unchanged(
    channel: AbstractChannel, names: Names, letters: DeadLetterQueue
):
    for n in range(3):
        await dead_letter(channel, names, f"m-{n}")

    seen = [(await letters.browse(10))[0] for _ in range(8)]
    heads = [await letters.browse(1) for _ in range(3)]
    found = [await letters.find("m-1") for _ in range(3)]

    assert all(
        [letter.letter_id for letter in read] == ["m-0", "m-1", "m-2"] for read in seen
    )
    assert [([one.letter_id for one in read], total) for read, total in heads] == [
        (["m-0"], 3)
    ] * 3
    # Nothing a reader sees changes from one look to the next: no delivery count.
    assert all(read == seen[0] for read in seen)
    assert {letter.returns for read in seen for letter in read} == {0}
    assert found[0] == found[1] == found[2]


async def test_a_letter_is_read_with_its_reason_and_original_route(
    channel: AbstractChannel, names: Names, letters: DeadLetterQueue
):
    await dead_letter(channel, names, "m-1")

    [letter], total = await letters.browse(5)

    assert (letter.type, letter.reason, letter.routing_key) == (
        "trigger",
        "unknown_reference",
        "trigger.hello",
    )
    assert letter.exchange == names.ingress
    assert total == 1
    assert (await letters.find(letter.letter_id))[0].body == b'{"flow": "hello"}'


async def test_a_replay_republishes_the_original_and_then_removes_the_letter(
    channel: AbstractChannel, names: Names, letters: DeadLetterQueue
):
    await dead_letter(channel, names, "m-1")
    await dead_letter(channel, names, "m-2")

    result = await letters.replay("m-2")

    assert [letter.letter_id for letter in result.replayed] == ["m-2"]
    assert [letter.letter_id for letter in (await letters.browse(10))[0]] == ["m-1"]
    triggers = await channel.get_queue(names.triggers)
    replayed = await triggers.get(no_ack=True, fail=False, timeout=5)
    assert replayed is not None
    assert (replayed.message_id, replayed.type, replayed.routing_key) == (
        "m-2",
        "trigger",
        "trigger.hello",
    )
    assert replayed.body == b'{"flow": "hello"}'
    # The dead-letter facts are gone; the quorum queue adds its delivery count.
    assert {k: v for k, v in replayed.headers.items() if k != "x-delivery-count"} == {
        "x-trace": "kept"
    }


async def test_a_letter_that_cannot_be_routed_stays_in_the_queue(
    rabbitmq_url: str,
    channel: AbstractChannel,
    names: Names,
    letters: DeadLetterQueue,
):
    """On an ingress exchange without an alternate exchange (declared by an older
    version, no policy) the broker returns an unroutable replay: the letter stays.
    (With one, the replay is dead-lettered again: test_amqp_unroutable.)"""
    await channel.exchange_delete(names.ingress)
    await declare_legacy_ingress(rabbitmq_url, names)
    await declare(channel, names, delivery_limit=5, legacy_ingress=True)
    await dead_letter(channel, names, "lost", routing_key="nowhere.at.all")
    await dead_letter(channel, names, "fine")

    result = await letters.replay(None)

    assert [letter.letter_id for letter in result.replayed] == ["fine"]
    [(stuck, problem)] = result.failed
    assert stuck.letter_id == "lost"
    assert "unroutable" in problem
    assert [letter.letter_id for letter in (await letters.browse(10))[0]] == ["lost"]


async def test_purge_empties_the_queue(
    channel: AbstractChannel, names: Names, letters: DeadLetterQueue
):
    await dead_letter(channel, names, "m-1")
    await dead_letter(channel, names, "m-2")

    purged = await letters.purge()

    assert purged == 2
    assert await letters.browse(10) == ([], 0)


async def test_a_replay_takes_only_the_letters_selected(
    channel: AbstractChannel, names: Names, letters: DeadLetterQueue
):
    await dead_letter(channel, names, "a-1", reason="unknown_reference")
    await dead_letter(channel, names, "a-2", reason="schema_invalid")
    await dead_letter(channel, names, "a-3", reason="unknown_reference")
    await dead_letter(channel, names, "a-4", reason="unknown_reference")

    dry = await letters.replay(Selection(reason="UNKNOWN_REFERENCE"), dry_run=True)
    kept = [letter.letter_id for letter in (await letters.browse(10))[0]]
    done = await letters.replay(Selection(reason="unknown_reference", limit=2))
    left = [letter.letter_id for letter in (await letters.browse(10))[0]]
    none = await letters.replay(Selection(kind="signal"))

    assert [letter.letter_id for letter in dry.replayed] == ["a-1", "a-3", "a-4"]
    assert kept == ["a-1", "a-2", "a-3", "a-4"]
    assert [letter.letter_id for letter in done.replayed] == ["a-1", "a-3"]
    assert left == ["a-2", "a-4"]
    assert none.replayed == []
