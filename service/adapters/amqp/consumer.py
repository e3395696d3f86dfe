"""The AMQP consumer: every delivery received, handled (`handling`), settled once.

Bad input is dead-lettered at once with its reason; a transient failure (MongoDB or the
broker unreachable) is retried in place with backoff while the delivery stays unacked,
so an outage neither spins nor counts against the queue's delivery limit; shutdown
stops receiving, lets in-flight work finish within a grace period and requeues the rest.
Metrics go to an `Observer` (the app maps them to Prometheus; no prometheus here).
"""

import asyncio
import contextlib
import time
from datetime import timedelta
from typing import Final

import structlog
from aio_pika.abc import (
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
    ConsumerTag,
)
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from structlog.contextvars import bound_contextvars
from structlog.typing import FilteringBoundLogger

from contracts import MAX_BODY_BYTES
from service.adapters.amqp import lenient
from service.adapters.amqp.dispatcher import PUBLISH_TIMEOUT
from service.adapters.amqp.handling import CRASHED, Handling, message_kind
from service.adapters.amqp.outcomes import (
    Observer,
    Outcome,
    Settled,
    Tally,
    kind_label,
)
from service.adapters.amqp.retries import DEFAULT_BACKOFF, Backoff, Retrier
from service.adapters.amqp.settlement import Settlement
from service.adapters.amqp.spans import MessageSpans
from service.adapters.amqp.topology import Topology, declare
from service.orchestrator.api import Orchestrator

__all__ = [
    "NEW_RUN_SHARE",
    "Backoff",
    "Consumer",
    "Observer",
    "Outcome",
    "Settled",
    "Tally",
]

# Before any delivery is decoded: a message the driver cannot decode would otherwise
# drop the connection at every delivery (see `lenient`).
lenient.install()

log: FilteringBoundLogger = structlog.get_logger()

NEW_RUN_SHARE = 4
"""Messages that start runs take at most 1/NEW_RUN_SHARE of the concurrency."""
_NEW_RUNS = frozenset({"trigger", "rerun"})

_BROKER_CALL: Final = 5.0
"""Seconds allowed for a consumer cancel or a channel close during shutdown."""


class Consumer:
    """Consumes the work and unroutable queues of `topology` on its own channel.

    `topology` is the one declared on the publishing channel: dead letters and replies
    go out through it. Each queue holds up to `prefetch` unacked deliveries, and at
    most `concurrency` are handled at once, of which messages that start runs
    (trigger, rerun) take at most a quarter: a backlog of triggers never starves the
    steps of the runs already going, so those finish at the steady rate.
    """

    def __init__(
        self,
        connection: AbstractConnection,
        topology: Topology,
        orchestrator: Orchestrator,
        *,
        prefetch: int = 16,
        concurrency: int = 16,
        max_body_bytes: int = MAX_BODY_BYTES,
        backoff: Backoff = DEFAULT_BACKOFF,
        observer: Observer | None = None,
        confirm_within: timedelta = PUBLISH_TIMEOUT,
        spans: MessageSpans | None = None,
    ) -> None:
        self._connection = connection
        self._topology = topology
        self._prefetch = prefetch
        self._slots = asyncio.Semaphore(concurrency)
        self._new_run_slots = asyncio.Semaphore(max(1, concurrency // NEW_RUN_SHARE))
        self.observer: Observer = observer or Tally()
        self._retrier = Retrier(backoff, self.observer)
        self._handling = Handling(
            topology,
            orchestrator,
            self._retrier,
            max_body_bytes=max_body_bytes,
            confirm_within=confirm_within,
            observer=self.observer,
        )
        self._spans = spans
        self._stop = asyncio.Event()
        self._group: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.consuming = asyncio.Event()
        """Set while the consumers are registered (for readiness checks and tests)."""

    @property
    def in_flight(self) -> int:
        """Deliveries received and not settled yet."""
        return len(self._tasks)

    async def run_until(self, stop: asyncio.Event, *, grace: timedelta) -> None:
        """Consume until `stop` is set, then shut down.

        Shutting down: stop receiving, give in-flight deliveries up to `grace` to
        finish, requeue the rest, close the channel.
        """
        self._stop = self._retrier.stop = stop
        channel = self._connection.channel(publisher_confirms=False)
        await channel.initialize()
        try:
            await channel.set_qos(prefetch_count=self._prefetch)
            # Declared on this channel too: a robust channel re-declares and
            # re-consumes the queues it declared after a reconnection.
            mine = await declare(
                channel,
                self._topology.names,
                delivery_limit=self._topology.delivery_limit,
                legacy_ingress=self._topology.legacy_ingress,
            )
            async with asyncio.TaskGroup() as group:
                self._group = group
                try:
                    await self._consume_until(stop, mine, grace)
                finally:
                    self._group = None
        finally:
            with contextlib.suppress(*CONNECTION_EXCEPTIONS):
                async with asyncio.timeout(_BROKER_CALL):
                    await channel.close()

    async def _consume_until(
        self, stop: asyncio.Event, topology: Topology, grace: timedelta
    ) -> None:
        tags: list[tuple[AbstractQueue, ConsumerTag]] = []
        try:
            tags.extend(
                [(q, await q.consume(self._on_message)) for q in topology.work_queues]
            )
            queue = topology.unroutable
            tags.append((queue, await queue.consume(self._on_unroutable)))
            self.consuming.set()
            log.info("consumer_started", queues=[q.name for q, _ in tags])
            await stop.wait()
        finally:
            self.consuming.clear()
            for queue, tag in tags:
                with contextlib.suppress(*CONNECTION_EXCEPTIONS):
                    async with asyncio.timeout(_BROKER_CALL):
                        await queue.cancel(tag)
            await self._drain(grace)

    async def _drain(self, grace: timedelta) -> None:
        unfinished: set[asyncio.Task[None]] = set()
        if self._tasks:
            _, unfinished = await asyncio.wait(
                set(self._tasks), timeout=grace.total_seconds()
            )
        for task in unfinished:
            task.cancel()  # each one requeues its delivery on the way out
        log.info("consumer_stopped", cut_short=len(unfinished))

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._receive(message, unroutable=False)

    async def _on_unroutable(self, message: AbstractIncomingMessage) -> None:
        self._receive(message, unroutable=True)

    def _receive(self, message: AbstractIncomingMessage, *, unroutable: bool) -> None:
        # Runs in a task of the driver, which cancels it when the channel closes: the
        # work goes to a task we own, so a broker restart never cuts a handler short.
        if self._group is None:
            return  # shutting down: closing the channel gives the message back
        task = self._group.create_task(self._deliver(message, unroutable=unroutable))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _gate(self, kind: str) -> contextlib.AbstractAsyncContextManager[object]:
        """What a delivery of `kind` waits for before it takes a slot."""
        if kind in _NEW_RUNS:
            return self._new_run_slots
        return contextlib.nullcontext()

    async def _deliver(
        self, message: AbstractIncomingMessage, *, unroutable: bool
    ) -> None:
        """Handle one delivery, then settle it exactly once (`Settlement`)."""
        kind = kind_label(message_kind(message))
        started = time.monotonic()
        outcome: Outcome = Outcome.REQUEUED
        reason: str | None = None
        settlement = Settlement(message)
        with (
            bound_contextvars(
                message_id=_shown(message.message_id), type=_shown(message.type)
            ),
            self._traced(message),
        ):
            try:
                async with self._gate(kind), self._slots:
                    if not self._stop.is_set():
                        outcome, reason = await (
                            self._handling.unroutable(message, kind)
                            if unroutable
                            else self._handling.process(
                                message, kind, let_go=settlement.let_go
                            )
                        )
            except Exception:
                # Whatever escapes here would end the consumer's TaskGroup, and with
                # it the worker: the broker dead-letters the message instead.
                log.exception("message_rejected")
                outcome, reason = Outcome.REJECTED, CRASHED
            finally:
                # Also on cancellation (grace over): the delivery is given back.
                outcome = await settlement.settle(outcome)
                self.observer.settled(
                    Settled(kind, outcome, reason, time.monotonic() - started)
                )

    def _traced(
        self, message: AbstractIncomingMessage
    ) -> contextlib.AbstractContextManager[None]:
        """The delivery's span when tracing is on."""
        if self._spans is None:
            return contextlib.nullcontext()
        return self._spans.delivery(message)


def _shown(text: str | None) -> str | None:
    """A property as loggable text: the console renderer cannot print surrogates."""
    return None if text is None else lenient.printable(text)
