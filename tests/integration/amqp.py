"""Helpers for the AMQP adapter tests: a worker (real broker, memory stores) and a plain
AMQP client that publishes the way an outside service would.
"""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import aio_pika
import aiormq
import orjson
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aiormq.abc import ChannelFrame, FrameType
from pamqp import commands
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from service.adapters.amqp.consumer import Backoff, Consumer, Tally
from service.adapters.amqp.dispatcher import AmqpDispatcher, open_publishing_channel
from service.adapters.amqp.topology import Names, Topology, establish
from service.adapters.clock import SystemClock
from service.adapters.memory.stores import InMemoryStores
from service.engine.model import Flow, RunId, RunStatus
from service.engine.records import RunRecord
from service.engine.validation import validate_all
from service.orchestrator.api import Orchestrator
from service.orchestrator.runtime import Catalog, Runtime
from service.steps.handlers import Handlers
from tests.services import AmqpCleanup

DEADLINE = 30.0  # seconds; generous, only a broken service gets near it
MAX_BODY_BYTES = 4096
FAST = Backoff(first=timedelta(milliseconds=20), cap=timedelta(milliseconds=200))
"""Outage retries in milliseconds, for tests that make the broker refuse a publish."""


def register(cleanup: AmqpCleanup, names: Names) -> None:
    """Have every name of the topology deleted after the test."""
    for queue in (
        names.triggers,
        names.steps,
        names.control,
        names.unroutable,
        names.dead,
    ):
        cleanup.queue(queue)
    for exchange in (names.ingress, names.unroutable, names.dlx):
        cleanup.exchange(exchange)


@dataclass
class Worker:
    """A consumer with its orchestrator on the memory stores, running in a task."""

    names: Names
    connection: AbstractRobustConnection
    topology: Topology
    stores: InMemoryStores
    orchestrator: Orchestrator
    consumer: Consumer
    tally: Tally
    stop: asyncio.Event
    task: "asyncio.Task[None]"

    async def run(self, run_id: str) -> RunRecord | None:
        return await self.stores.runs.get_run(RunId(run_id))

    async def until_final(self, run_id: str) -> RunRecord:
        """The run once it has a final status (polled under a deadline)."""
        async with asyncio.timeout(DEADLINE):
            while True:
                run = await self.run(run_id)
                if run is not None and run.status is not RunStatus.RUNNING:
                    return run
                await asyncio.sleep(0.02)

    async def shut_down(self) -> None:
        self.stop.set()
        async with asyncio.timeout(DEADLINE):
            await self.task


@contextlib.asynccontextmanager
async def running_worker(
    url: str,
    names: Names,
    flows: Iterable[Flow],
    handlers: Handlers,
    *,
    grace: timedelta = timedelta(seconds=5),
    backoff: Backoff | None = None,
) -> AsyncIterator[Worker]:
    flows = list(flows)
    validate_all(flows, handlers.names())
    connection = await aio_pika.connect_robust(url)
    try:
        channel = await open_publishing_channel(connection)
        topology = await establish(connection, channel, names, delivery_limit=5)
        stores = InMemoryStores()
        runtime = Runtime(
            Catalog(flows), handlers, stores, AmqpDispatcher(topology), SystemClock()
        )
        orchestrator = Orchestrator(runtime)
        await orchestrator.sync_flows()
        tally = Tally()
        consumer = Consumer(
            connection,
            topology,
            orchestrator,
            prefetch=8,
            concurrency=8,
            max_body_bytes=MAX_BODY_BYTES,
            backoff=backoff or Backoff(),
            observer=tally,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run_until(stop, grace=grace))
        await _started(consumer, task)
        worker = Worker(
            names,
            connection,
            topology,
            stores,
            orchestrator,
            consumer,
            tally,
            stop,
            task,
        )
        try:
            yield worker
        finally:
            await worker.shut_down()
    finally:
        await connection.close()


async def _started(consumer: Consumer, task: "asyncio.Task[None]") -> None:
    async with asyncio.timeout(DEADLINE):
        ready = asyncio.ensure_future(consumer.consuming.wait())
        await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            task.result()  # raises why the consumer stopped
            raise AssertionError("the consumer stopped before consuming")


async def declare_legacy_ingress(url: str, names: Names) -> None:
    """The ingress exchange as a version before the alternate exchange declared it."""
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        await channel.declare_exchange(
            names.ingress, aio_pika.ExchangeType.TOPIC, durable=True
        )


class Client:
    """A plain AMQP client, as an outside service has: no service code involved."""

    def __init__(
        self, channel: AbstractChannel, raw: AbstractChannel, names: Names
    ) -> None:
        self.channel = channel
        """Publisher confirms on."""
        self.raw = raw
        """Confirms off: frames written by hand would upset the confirm count."""
        self.names = names

    async def publish(
        self,
        routing_key: str,
        body: bytes | dict[str, Any],
        *,
        kind: str | None,
        message_id: str | None = None,
        reply_to: str | None = None,
        correlation_id: str | None = None,
        headers: dict[str, Any] | None = None,
    ) -> str:
        """Publish to the ingress exchange; the message id used."""
        message_id = message_id or str(uuid.uuid4())
        exchange = await self.channel.get_exchange(self.names.ingress, ensure=False)
        await exchange.publish(
            aio_pika.Message(
                body if isinstance(body, bytes) else orjson.dumps(body),
                type=kind,
                message_id=message_id,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                reply_to=reply_to,
                correlation_id=correlation_id,
                headers=headers,
            ),
            routing_key=routing_key,
        )
        return message_id

    async def publish_without_message_id(
        self, routing_key: str, body: bytes, *, kind: str
    ) -> None:
        """aiormq gives every publish a message id; write the frames ourselves."""
        # The concrete aiormq channel: the abstract one has no write queue.
        channel = cast(aiormq.Channel, await self.raw.get_underlay_channel())
        frames: list[FrameType] = [
            commands.Basic.Publish(
                exchange=self.names.ingress, routing_key=routing_key
            ),
            ContentHeader(
                body_size=len(body),
                properties=commands.Basic.Properties(
                    message_type=kind, delivery_mode=2, content_type="application/json"
                ),
            ),
            ContentBody(body),
        ]
        await channel.write_queue.put(
            ChannelFrame.marshall(frames=frames, channel_number=channel.number)
        )


async def next_message(
    queue: AbstractQueue, *, ack: bool = True
) -> AbstractIncomingMessage:
    """The next message of `queue`, acked unless told (polled under the deadline)."""
    async with asyncio.timeout(DEADLINE):
        while True:
            message = await queue.get(fail=False)
            if message is not None:
                if ack:
                    await message.ack()
                return message
            await asyncio.sleep(0.02)


async def until(condition: Callable[[], bool]) -> None:
    """Return once `condition()` holds (polled under the deadline)."""
    async with asyncio.timeout(DEADLINE):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


def reply_of(message: AbstractIncomingMessage) -> dict[str, Any]:
    reply: dict[str, Any] = orjson.loads(message.body)
    return reply
