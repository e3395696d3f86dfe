"""Server-side gauges: runs in progress from MongoDB, queues from passive declares."""

import asyncio
from datetime import timedelta

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from prometheus_client import REGISTRY

from service import metrics
from service.adapters import census
from service.adapters.amqp.topology import Names, declare
from service.adapters.mongo.client import MongoStores
from service.engine.model import FlowId, RunStatus
from tests.contract.builders import START, a_run
from tests.integration.amqp import until


async def test_runs_in_progress_are_counted_per_flow_on_an_index(mongo_db):
    stores = MongoStores(mongo_db)
    await stores.ensure_indexes()
    for flow, running in (("orders", 3), ("batch", 1)):
        for _ in range(running):
            await stores.runs.create_run(a_run(flow_id=FlowId(flow)))
    done = a_run(flow_id=FlowId("orders"))
    await stores.runs.create_run(done)
    await stores.runs.complete_run(done.run_id, RunStatus.SUCCEEDED, now=START)

    counts = await census.running_by_flow(mongo_db, ["orders", "batch", "idle"])
    plan = await mongo_db.runs.find(
        {"status": "Running", "flow_id": "orders"}
    ).explain()

    assert counts == {"orders": 3, "batch": 1, "idle": 0}
    winning = str(plan["queryPlanner"]["winningPlan"])
    assert "IXSCAN" in winning
    assert "COLLSCAN" not in winning


async def test_queue_depths_and_consumers_come_from_passive_declares(
    rabbitmq_url, names: Names
):
    async with await aio_pika.connect_robust(rabbitmq_url) as connection:
        channel = await connection.channel()
        topology = await declare(channel, names, delivery_limit=5)
        for n in range(2):
            await topology.default.publish(
                aio_pika.Message(b"{}", message_id=f"m{n}"), routing_key=names.dead
            )
        steps = await channel.get_queue(names.steps, ensure=False)

        async def take(message: AbstractIncomingMessage) -> None:
            await message.ack()

        tag = await steps.consume(take)
        roles = {**census.queue_roles(names), "missing": f"{names.prefix}.nothing"}

        stats = await census.queue_stats(connection, roles)

        await steps.cancel(tag)
    assert stats["dead"] == (2, 0)
    assert stats["steps"] == (0, 1)
    assert stats["triggers"] == (0, 0)
    assert "missing" not in stats  # its passive declare failed; the others went on


async def test_the_gauges_are_refreshed_until_stopped(rabbitmq_url, names, mongo_db):
    stores = MongoStores(mongo_db)
    await stores.runs.create_run(a_run(flow_id=FlowId("census-flow")))
    flows = metrics.FlowNames({"census-flow": "census"})
    stop = asyncio.Event()
    async with await aio_pika.connect_robust(rabbitmq_url) as connection:
        await declare(await connection.channel(), names, delivery_limit=5)
        task = asyncio.create_task(
            census.refresh_until(
                stop,
                every=timedelta(seconds=0.05),
                db=mongo_db,
                connection=connection,
                names=names,
                flows=flows,
            )
        )
        labels = {"flow_id": "census-flow", "flow": "census"}
        await until(
            lambda: REGISTRY.get_sample_value("flow_runs_in_progress", labels) == 1
        )
        stop.set()
        await task
    assert REGISTRY.get_sample_value("flow_queue_consumers", {"queue": "dead"}) == 0
