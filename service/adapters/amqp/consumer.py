"""The AMQP consumer: every delivery parsed, handed to the orchestrator, settled once.

Bad input is dead-lettered at once with its reason; a transient failure (MongoDB or the
broker unreachable) is retried in place with backoff while the delivery stays unacked,
so an outage neither spins nor counts against the queue's delivery limit; shutdown
stops receiving, lets in-flight work finish within a grace period and requeues the rest.
Metrics go to an `Observer` (the app maps them to Prometheus; no prometheus here).
"""

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Final, Protocol, TypeVar

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

from contracts import KINDS, MAX_BODY_BYTES, ContractError, Inbound, Reply, parse
from contracts.messages import REPLY_KIND, ReplyStatus, RunStepMessage
from service.adapters.amqp import lenient
from service.adapters.amqp.dispatcher import (
    DISPATCHED_AT,
    PUBLISH_TIMEOUT,
    publish_json,
    publish_message,
)
from service.adapters.amqp.inbound import call, context_of, delivery_of
from service.adapters.amqp.letters import FRAME_MAX, dead_letter
from service.adapters.amqp.spans import MessageSpans
from service.adapters.amqp.topology import Topology, declare
from service.errors import FlowError, RefusedError, UnknownReferenceError
from service.orchestrator.api import Orchestrator

# Before any delivery is decoded: a message the driver cannot decode would otherwise
# drop the connection at every delivery (see `lenient`).
lenient.install()

log: FilteringBoundLogger = structlog.get_logger()

NEW_RUN_SHARE = 4
"""Messages that start runs take at most 1/NEW_RUN_SHARE of the concurrency."""
_NEW_RUNS = frozenset({"trigger", "rerun"})

T = TypeVar("T")

CRASHED: Final = "crashed"
_MAX_DETAIL: Final = 300
_BROKER_CALL: Final = 5.0
"""Seconds allowed for a consumer cancel or a channel close during shutdown."""


class Outcome(StrEnum):
    ACKED = "acked"
    """Handled (a duplicate included) and acked."""
    REFUSED = "refused"
    """Answered without effect (a refused control operation, a disabled flow); acked."""
    DEAD_LETTERED = "dead_lettered"
    REQUEUED = "requeued"
    """Given back at shutdown, unfinished."""
    LOST = "lost"
    """Its channel closed before it was settled: the broker delivers it again."""
    REJECTED = "rejected"
    """Not dead-lettered by us (the letter could not be built or published): rejected,
    so the broker dead-letters it, with `x-first-death-reason: rejected`."""


@dataclass(frozen=True, slots=True)
class Settled:
    kind: str
    """A known message kind, or "unknown" (a low-cardinality label)."""
    outcome: Outcome
    reason: str | None
    """The dead-letter reason, when dead-lettered."""
    seconds: float


class Observer(Protocol):
    def settled(self, event: Settled) -> None:
        """A delivery was settled (or lost)."""
        ...

    def deferred(self, kind: str) -> None:
        """A transient failure: the delivery is retried in place after a backoff."""
        ...

    def queue_wait(self, flow_id: str, seconds: float) -> None:
        """A `run_step` of `flow_id` waited `seconds` from its publish to delivery."""
        ...


class Tally:
    """An `Observer` that counts: the default, and what tests read."""

    def __init__(self) -> None:
        self.outcomes: Counter[tuple[str, Outcome]] = Counter()
        self.dead_letters: Counter[str] = Counter()
        self.deferrals: Counter[str] = Counter()
        self.waits: list[tuple[str, float]] = []

    def settled(self, event: Settled) -> None:
        self.outcomes[event.kind, event.outcome] += 1
        if event.reason is not None:
            self.dead_letters[event.reason] += 1

    def deferred(self, kind: str) -> None:
        self.deferrals[kind] += 1

    def queue_wait(self, flow_id: str, seconds: float) -> None:
        self.waits.append((flow_id, seconds))


@dataclass(frozen=True, slots=True)
class Backoff:
    """Waits between in-place retries: `first`, times `factor` each retry, to `cap`."""

    first: timedelta = timedelta(seconds=0.2)
    cap: timedelta = timedelta(seconds=15)
    factor: float = 2.0

    def delay(self, attempt: int, *, jitter: float) -> float:
        """Seconds before retry `attempt` (from 1), scaled by `jitter` in [0.5, 1]."""
        ceiling = self.cap.total_seconds()
        raw = self.first.total_seconds() * self.factor ** min(attempt - 1, 64)
        return min(raw, ceiling) * jitter


def kind_label(kind: str | None) -> str:
    return kind if kind is not None and kind in KINDS else "unknown"


class Consumer:
    """Consumes the triggers, steps and control queues of `topology` on its own channel.

    `topology` is the one declared on the publishing channel: dead letters and replies
    go out through it. Each of the three queues holds up to `prefetch` unacked
    deliveries, and at most `concurrency` are handled at once, of which messages that
    start runs (trigger, rerun) take at most a quarter: a backlog of triggers never
    starves the steps of the runs already going, so those finish at the steady rate.
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
        backoff: Backoff = Backoff(),
        observer: Observer | None = None,
        confirm_within: timedelta = PUBLISH_TIMEOUT,
        spans: MessageSpans | None = None,
    ) -> None:
        self._connection = connection
        self._topology = topology
        self._orchestrator = orchestrator
        self._prefetch = prefetch
        self._slots = asyncio.Semaphore(concurrency)
        self._new_run_slots = asyncio.Semaphore(max(1, concurrency // NEW_RUN_SHARE))
        self._max_body_bytes = max_body_bytes
        self._backoff = backoff
        self.observer: Observer = observer or Tally()
        self._confirm_within = confirm_within
        self._spans = spans
        self._random = random.Random()  # noqa: S311 - jitter, not cryptography
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
        self._stop = stop
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
            )
            async with asyncio.TaskGroup() as group:
                self._group = group
                try:
                    await self._consume_until(stop, mine.work_queues, grace)
                finally:
                    self._group = None
        finally:
            with contextlib.suppress(*CONNECTION_EXCEPTIONS):
                async with asyncio.timeout(_BROKER_CALL):
                    await channel.close()

    async def _consume_until(
        self, stop: asyncio.Event, queues: Iterable[AbstractQueue], grace: timedelta
    ) -> None:
        tags: list[tuple[AbstractQueue, ConsumerTag]] = []
        try:
            tags.extend([(q, await q.consume(self._on_message)) for q in queues])
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
        # Runs in a task of the driver, which cancels it when the channel closes: the
        # work goes to a task we own, so a broker restart never cuts a handler short.
        if self._group is None:
            return  # shutting down: closing the channel gives the message back
        task = self._group.create_task(self._deliver(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _gate(self, kind: str) -> contextlib.AbstractAsyncContextManager[object]:
        """What a delivery of `kind` waits for before it takes a slot."""
        if kind in _NEW_RUNS:
            return self._new_run_slots
        return contextlib.nullcontext()

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        """Handle one delivery, then settle it exactly once (the one settle point)."""
        kind = kind_label(message.type)
        started = time.monotonic()
        outcome: Outcome = Outcome.REQUEUED
        reason: str | None = None
        with (
            bound_contextvars(
                message_id=_shown(message.message_id), type=_shown(message.type)
            ),
            self._traced(message),
        ):
            try:
                async with self._gate(kind), self._slots:
                    if not self._stop.is_set():
                        outcome, reason = await self._process(message, kind)
            except Exception:
                # Whatever escapes here would end the consumer's TaskGroup, and with
                # it the worker: the broker dead-letters the message instead.
                log.exception("message_rejected")
                outcome, reason = Outcome.REJECTED, CRASHED
            finally:
                # Also on cancellation (grace over): the delivery is given back.
                outcome = await self._settle(message, outcome)
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

    async def _settle(
        self, message: AbstractIncomingMessage, outcome: Outcome
    ) -> Outcome:
        try:
            if outcome is Outcome.REQUEUED:
                await message.nack(requeue=True)
                log.info("message_requeued")
            elif outcome is Outcome.REJECTED:
                await message.reject(requeue=False)
            elif outcome is not Outcome.LOST:
                await message.ack()
        except CONNECTION_EXCEPTIONS:
            outcome = Outcome.LOST
        if outcome is Outcome.LOST:
            log.warning("delivery_lost", detail="channel closed; the broker redelivers")
        return outcome

    async def _process(
        self, message: AbstractIncomingMessage, kind: str
    ) -> tuple[Outcome, str | None]:
        try:
            body = self._parse(message)
        except ContractError as exc:
            return await self._reject(message, exc.reason, exc.detail, "invalid")
        if isinstance(body, RunStepMessage):
            self._observe_wait(message, body.flow_id)
        with bound_contextvars(**context_of(body)):
            return await self._handle(message, kind, body)

    def _observe_wait(self, message: AbstractIncomingMessage, flow_id: str) -> None:
        """The queue wait of a `run_step`, from the dispatcher's publish instant."""
        published = (message.headers or {}).get(DISPATCHED_AT)
        if isinstance(published, int) and not isinstance(published, bool):
            waited = time.time() - published / 1000
            self.observer.queue_wait(flow_id, max(0.0, waited))

    def _parse(self, message: AbstractIncomingMessage) -> Inbound:
        if problem := lenient.undecodable(message):
            raise ContractError("bad_properties", problem)
        if not message.message_id:
            raise ContractError("no_message_id", "the message_id property is missing")
        return parse(message.type, message.body, max_bytes=self._max_body_bytes)

    async def _handle(
        self, message: AbstractIncomingMessage, kind: str, body: Inbound
    ) -> tuple[Outcome, str | None]:
        at = delivery_of(
            kind,
            message.message_id or "",
            message.headers,
            redelivered=message.redelivered,
        )
        reply: Reply | Outcome | None
        try:
            # A retry may follow a partial success: the orchestrator is told, as it
            # is of a redelivery, so it finishes what the failed attempt began.
            reply = await self._retrying(
                message,
                kind,
                lambda tries: call(
                    self._orchestrator, body, at if not tries else at.again()
                ),
            )
        except RefusedError as exc:
            log.warning("message_refused", error=str(exc))
            reply = Reply(ok=False, kind=kind, status="refused", message=str(exc))
        except FlowError as exc:  # not retryable: `_retrying` retries the others
            unknown = isinstance(exc, UnknownReferenceError)
            status: ReplyStatus = "not_found" if unknown else "invalid"
            return await self._reject(message, exc.reason, str(exc), status)
        except Exception as exc:
            # A bug in one message must not stop the consumer; park it for a human.
            log.exception("message_crashed")
            detail = f"{type(exc).__name__}: {exc}"
            return await self._reject(message, CRASHED, detail, "error")
        if isinstance(reply, Outcome):
            return reply, None
        if reply is not None:
            await self._answer(message, kind, reply)
            if not reply.ok:
                return Outcome.REFUSED, None
        return Outcome.ACKED, None

    async def _answer(
        self, message: AbstractIncomingMessage, kind: str, reply: Reply
    ) -> None:
        """Send `reply` to the message's `reply_to`, if any.

        Retried like the call, but the call's effect is done: an interrupted answer is
        given up and the delivery still acked.
        """
        reply_to = message.reply_to
        if not reply_to or lenient.escaped(reply_to):
            return  # none, or an address no queue can have (not UTF-8)
        await self._retrying(
            message,
            kind,
            lambda _: publish_json(
                self._topology.default,
                reply_to,
                reply,
                kind=REPLY_KIND,
                message_id=f"{message.message_id}:reply",
                correlation_id=message.correlation_id,
                # A requester that went away leaves no queue: the reply is dropped.
                mandatory=False,
                confirm_within=self._confirm_within,
            ),
        )

    async def _reject(
        self,
        message: AbstractIncomingMessage,
        reason: str,
        detail: str,
        status: ReplyStatus,
    ) -> tuple[Outcome, str | None]:
        """Dead-letter the delivery, then answer its `reply_to`.

        The delivery goes to the dead-letter exchange with the reason in its headers,
        and counts as dead-lettered once the broker confirmed it. Nothing raised here
        leaves: a letter that cannot be sent gives REJECTED, a reply that cannot go
        is given up.
        """
        kind = kind_label(message.type)
        detail = lenient.printable(detail)[:_MAX_DETAIL]
        try:
            letter = dead_letter(message, reason, detail, frame_max=_frame_max(message))
            sent = await self._retrying(
                message,
                kind,
                lambda _: publish_message(
                    self._topology.dead_letter,
                    letter,
                    reason,
                    confirm_within=self._confirm_within,
                ),
            )
        except Exception:
            # Never raised by design (the letter is built to be published): the
            # broker dead-letters the message, without our reason headers.
            log.exception("dead_letter_failed", reason=reason, detail=detail)
            return Outcome.REJECTED, reason
        if isinstance(sent, Outcome):
            return sent, None
        log.warning("message_dead_lettered", reason=reason, detail=detail)
        if kind != "run_step":
            answer = Reply(ok=False, kind=kind, status=status, message=detail)
            try:
                await self._answer(message, kind, answer)
            except Exception:
                # The letter is out: a reply that cannot go is not worth the message.
                log.exception("reply_failed")
        return Outcome.DEAD_LETTERED, reason

    async def _retrying(
        self,
        message: AbstractIncomingMessage,
        kind: str,
        attempt: Callable[[int], Awaitable[T]],
    ) -> T | Outcome:
        """`attempt(tries so far)`, repeated with backoff after each retryable error.

        Gives up with REQUEUED once `stop` is set, or LOST once the delivery's channel
        closed (the broker delivers it again).

        Raises:
            FlowError: a non-retryable one, and any other exception, at once.
        """
        tries = 0
        while True:
            try:
                return await attempt(tries)
            except FlowError as exc:
                if not exc.retryable:
                    raise
                tries += 1
                delay = self._backoff.delay(tries, jitter=self._random.uniform(0.5, 1))
                log.warning(
                    "message_deferred", error=str(exc), tries=tries, delay_s=delay
                )
                self.observer.deferred(kind)
            if not _alive(message):
                return Outcome.LOST
            if await _set_within(self._stop, delay):
                return Outcome.REQUEUED


def _frame_max(message: AbstractIncomingMessage) -> int:
    """The frame_max the delivery's connection negotiated (0: the broker has none).

    Dead letters go out on the publishing channel, on the same connection in a worker;
    any connection to the broker negotiates the same value.
    """
    try:
        negotiated = message.channel.connection.connection_tune.frame_max
    except (*CONNECTION_EXCEPTIONS, AttributeError):
        return FRAME_MAX
    return negotiated or FRAME_MAX


def _shown(text: str | None) -> str | None:
    """A property as loggable text: the console renderer cannot print surrogates."""
    return None if text is None else lenient.printable(text)


def _alive(message: AbstractIncomingMessage) -> bool:
    """Whether the delivery can still be settled (its channel is open)."""
    try:
        return not message.channel.is_closed
    except CONNECTION_EXCEPTIONS:  # ChannelInvalidStateError: closed
        return False


async def _set_within(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds` for `event`; whether it is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()
