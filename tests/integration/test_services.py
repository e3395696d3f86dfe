"""The service fixtures give real servers: a replica set, a broker, mongods we own."""

import asyncio
from typing import Any
from uuid import uuid4

import aio_pika
import pytest
from pamqp.commands import Basic
from pymongo import AsyncMongoClient

DEADLINE = 30  # seconds; generous, only a broken service gets near it


async def test_a_document_inserted_in_mongo_db_is_found(mongo_db):
    await mongo_db.runs.insert_one({"_id": "r1", "status": "running"})

    found = await mongo_db.runs.find_one({"_id": "r1"})

    assert found == {"_id": "r1", "status": "running"}


async def test_a_transaction_commits_on_the_replica_set(mongo_db):
    runs, steps = mongo_db.runs, mongo_db.steps

    async with (
        mongo_db.client.start_session() as session,
        await session.start_transaction(),
    ):
        await runs.insert_one({"_id": "r1"}, session=session)
        await steps.insert_one({"_id": "s1", "run": "r1"}, session=session)

    assert await runs.count_documents({}) == 1
    assert await steps.count_documents({"run": "r1"}) == 1


async def test_an_aborted_transaction_leaves_nothing(mongo_db):
    await mongo_db.create_collection("runs")

    async with mongo_db.client.start_session() as session:
        await session.start_transaction()
        await mongo_db.runs.insert_one({"_id": "r1"}, session=session)
        await session.abort_transaction()

    assert await mongo_db.runs.count_documents({}) == 0


async def test_a_confirmed_message_is_consumed_from_a_prefixed_queue(
    rabbitmq_url, amqp_prefix, amqp_cleanup
):
    name = amqp_cleanup.queue(f"{amqp_prefix}.roundtrip")
    async with await aio_pika.connect(rabbitmq_url) as connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(name, durable=True)

        confirm = await channel.default_exchange.publish(
            aio_pika.Message(b"hello", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=name,
        )
        async with asyncio.timeout(DEADLINE), queue.iterator() as messages:
            message = await anext(messages)
            await message.ack()

    assert isinstance(confirm, Basic.Ack)
    assert message.body == b"hello"
    assert message.routing_key == name


@pytest.mark.parametrize("how", ["stop", "kill"], ids=["sigterm", "sigkill"])
async def test_a_restarted_mongo_server_keeps_data_and_the_client_reconnects(
    mongo_server, how
):
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_server.url, tz_aware=True
    )
    runs = client[f"test_{uuid4().hex}"].runs
    try:
        await runs.insert_one({"_id": "r1"})  # majority and journaled by default

        getattr(mongo_server, how)()
        await asyncio.to_thread(mongo_server.restart)  # blocks until primary again
        async with asyncio.timeout(DEADLINE):
            found = await runs.find_one({"_id": "r1"})
            await runs.insert_one({"_id": "r2"})

        assert found == {"_id": "r1"}
        assert await runs.count_documents({}) == 2
    finally:
        await client.drop_database(runs.database.name)
        await client.close()


async def test_a_stepped_down_primary_hands_writes_to_another_member(
    mongo_replica_set,
):
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_replica_set.url, tz_aware=True
    )
    runs = client[f"test_{uuid4().hex}"].runs
    try:
        await runs.insert_one({"_id": "r1"})
        before = mongo_replica_set.primary()

        first = await asyncio.to_thread(mongo_replica_set.step_down)
        second = await asyncio.to_thread(mongo_replica_set.step_down)
        async with asyncio.timeout(DEADLINE):
            await runs.insert_one({"_id": "r2"})  # a retryable write: the new primary
            found = await runs.find({}).sort("_id").to_list(None)

        assert len(set(mongo_replica_set.hosts)) == 3
        assert first.old_primary == before
        assert second.old_primary == first.new_primary != before
        assert mongo_replica_set.primary() == second.new_primary
        assert found == [{"_id": "r1"}, {"_id": "r2"}]
    finally:
        await client.drop_database(runs.database.name)
        await client.close()
