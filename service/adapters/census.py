"""The gauges that ask the servers, refreshed on a timer rather than per message.

Runs in progress are counted in MongoDB (one indexed count per flow), so the gauge is
right across replicas and crashes, unlike a counter moved up and down by one worker.
Queue depths and consumer counts come from passive declares of the work queues and the
dead queue, on a channel of their own: a passive declare of a missing queue closes its
channel, never the consumer's.
"""

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

import structlog
from aio_pika.abc import AbstractConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError
from structlog.typing import FilteringBoundLogger

from service import metrics
from service.adapters.amqp.topology import Names
from service.adapters.mongo.codec import RUNS
from service.engine.model import RunStatus

log: FilteringBoundLogger = structlog.get_logger()

_CALL_TIMEOUT = 5.0


def queue_roles(names: Names) -> dict[str, str]:
    """Queue role (the `queue` label) -> queue name."""
    return {
        "triggers": names.triggers,
        "steps": names.steps,
        "control": names.control,
        "dead": names.dead,
    }


async def running_by_flow(
    db: AsyncDatabase[dict[str, Any]], flow_ids: Iterable[str]
) -> dict[str, int]:
    """Running runs of each flow: a count on the `runs_by_flow_status` index, each."""
    runs = db[RUNS]
    return {
        flow_id: await runs.count_documents(
            {"status": str(RunStatus.RUNNING), "flow_id": flow_id}
        )
        for flow_id in flow_ids
    }


async def queue_stats(
    connection: AbstractConnection, queues: Mapping[str, str]
) -> dict[str, tuple[int, int]]:
    """Role -> (messages ready, consumers) of each queue that exists."""
    found: dict[str, tuple[int, int]] = {}
    channel = await connection.channel(publisher_confirms=False)
    try:
        for role, name in queues.items():
            if channel.is_closed:  # a missing queue closed it: a fresh one
                channel = await connection.channel(publisher_confirms=False)
            with contextlib.suppress(*CONNECTION_EXCEPTIONS):
                declared = await channel.declare_queue(name, passive=True)
                result = declared.declaration_result
                found[role] = (result.message_count or 0, result.consumer_count or 0)
    finally:
        with contextlib.suppress(*CONNECTION_EXCEPTIONS):
            await channel.close()
    return found


async def refresh_until(
    stop: asyncio.Event,
    *,
    every: timedelta,
    db: AsyncDatabase[dict[str, Any]],
    connection: AbstractConnection,
    names: Names,
    flows: metrics.FlowNames,
) -> None:
    """Refresh the server-side gauges every `every` until `stop` is set.

    A server that does not answer leaves the gauges as they were; the next pass
    tries again.
    """
    queues = queue_roles(names)
    while not stop.is_set():
        try:
            async with asyncio.timeout(_CALL_TIMEOUT):
                counts = await running_by_flow(db, flows.ids())
            metrics.observe_in_progress(counts, flows)
        except (TimeoutError, PyMongoError) as exc:
            log.warning("gauge_skipped", gauge="runs_in_progress", error=repr(exc))
        try:
            async with asyncio.timeout(_CALL_TIMEOUT):
                stats = await queue_stats(connection, queues)
            for role, (messages, consumers) in stats.items():
                metrics.observe_queue(role, messages=messages, consumers=consumers)
        except (TimeoutError, *CONNECTION_EXCEPTIONS) as exc:
            log.warning("gauge_skipped", gauge="queues", error=repr(exc))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(every.total_seconds()):
                await stop.wait()
