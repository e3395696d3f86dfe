"""One delivery, from its bytes to its outcome: handled, answered or dead-lettered.

It is parsed, handed to the orchestrator and answered on its `reply_to`. Bad input
is dead-lettered at once; a transient failure is retried in place (`retries`). What
the ingress exchange could not route arrives through its alternate exchange and is
dead-lettered as `unroutable`, or published again when one of our bindings is
missing. The consumer settles whatever outcome comes back.
"""

import time
import uuid
from datetime import timedelta
from typing import Final

import structlog
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from structlog.contextvars import bound_contextvars
from structlog.typing import FilteringBoundLogger

from contracts import ContractError, Inbound, Reply, parse
from contracts.messages import REPLY_KIND, ReplyStatus, RunStepMessage
from service.adapters.amqp import lenient
from service.adapters.amqp.dispatcher import (
    DISPATCHED_AT,
    publish_json,
    publish_message,
)
from service.adapters.amqp.inbound import (
    Delivery,
    LetGo,
    call,
    context_of,
    delivery_of,
)
from service.adapters.amqp.letters import FRAME_MAX, copy_of, dead_letter
from service.adapters.amqp.outcomes import Observer, Outcome, kind_label
from service.adapters.amqp.retries import Retrier
from service.adapters.amqp.topology import (
    PROBE_KIND,
    PROBE_ROUTING_KEY,
    Topology,
    kind_of,
    ours,
)
from service.errors import FlowError, RefusedError, UnknownReferenceError
from service.orchestrator.api import Orchestrator

log: FilteringBoundLogger = structlog.get_logger()

CRASHED: Final = "crashed"
UNROUTABLE: Final = "unroutable"
REROUTED: Final = "x-flow-rerouted"
"""How often a message of ours that found no queue was published again."""
_MAX_DETAIL: Final = 300

Result = tuple[Outcome, str | None]
"""The outcome, and the dead-letter reason when the message was dead-lettered."""


def message_kind(message: AbstractIncomingMessage) -> str | None:
    """The kind a delivery asks for: its `type`, else what its routing key names."""
    return kind_of(message.type, message.routing_key)


class Handling:
    """What the consumer does with each delivery.

    Dead letters, replies and re-published messages go out through the exchanges of
    `topology`, declared on a publishing channel.
    """

    def __init__(
        self,
        topology: Topology,
        orchestrator: Orchestrator,
        retrying: Retrier,
        *,
        max_body_bytes: int,
        confirm_within: timedelta,
        observer: Observer,
    ) -> None:
        self._observer = observer
        self._topology = topology
        self._orchestrator = orchestrator
        self._retrying = retrying
        self._max_body_bytes = max_body_bytes
        self._confirm_within = confirm_within

    async def process(
        self,
        message: AbstractIncomingMessage,
        kind: str,
        *,
        let_go: LetGo | None = None,
    ) -> Result:
        """A delivery from a work queue; `let_go` acknowledges it early (long steps)."""
        try:
            body = self._parse(message)
            at = delivery_of(
                body,
                kind=kind,
                message_id=message.message_id,
                headers=message.headers,
                raw=message.body,
                redelivered=message.redelivered,
                let_go=let_go,
            )
        except ContractError as exc:
            return await self._reject(message, exc.reason, exc.detail, "invalid")
        if isinstance(body, RunStepMessage):
            self._observe_wait(message, body.flow_id)
        with bound_contextvars(**context_of(body)):
            return await self._handle(message, kind, body, at)

    def _observe_wait(self, message: AbstractIncomingMessage, flow_id: str) -> None:
        """The queue wait of a `run_step`, from the dispatcher's publish instant."""
        published = (message.headers or {}).get(DISPATCHED_AT)
        if isinstance(published, int) and not isinstance(published, bool):
            waited = time.time() - published / 1000
            self._observer.queue_wait(flow_id, max(0.0, waited))

    async def unroutable(self, message: AbstractIncomingMessage, kind: str) -> Result:
        """A delivery the ingress exchange could route to no queue.

        Dead-lettered, unless it is the start-up probe (acked) or has a routing key of
        ours: then a binding is missing, which a worker's declaration repairs, so it
        is published again after a backoff, like any transient failure.
        """
        key = message.routing_key or ""
        if message.type == PROBE_KIND and key == PROBE_ROUTING_KEY:
            return Outcome.ACKED, None
        if not ours(key) or lenient.undecodable(message):
            detail = f"no queue is bound to routing key {key!r} on {message.exchange!r}"
            return await self._reject(message, UNROUTABLE, detail, "invalid")
        return await self._reroute(message, kind, key)

    def _parse(self, message: AbstractIncomingMessage) -> Inbound:
        if problem := lenient.undecodable(message):
            raise ContractError("bad_properties", problem)
        kind = message_kind(message)
        return parse(kind, message.body, max_bytes=self._max_body_bytes)

    async def _reroute(
        self, message: AbstractIncomingMessage, kind: str, key: str
    ) -> Result:
        headers = dict(message.headers or {})
        done = headers.get(REROUTED)
        tries = (done if isinstance(done, int) else 0) + 1
        delay = self._retrying.deferred(kind, f"no queue bound to {key!r}", tries)
        if await self._retrying.stopped_within(delay):
            return Outcome.REQUEUED, None
        headers[REROUTED] = tries
        again = copy_of(message, headers=headers, frame_max=_frame_max(message))
        sent = await self._retrying(
            message,
            kind,
            lambda _: publish_message(
                self._topology.ingress, again, key, confirm_within=self._confirm_within
            ),
        )
        return (sent, None) if isinstance(sent, Outcome) else (Outcome.ACKED, None)

    async def _handle(
        self,
        message: AbstractIncomingMessage,
        kind: str,
        body: Inbound,
        at: Delivery,
    ) -> Result:
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
                # A message of its own: two answers to one request (a redelivery)
                # are two messages, tied to the request by its correlation_id.
                message_id=str(uuid.uuid4()),
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
    ) -> Result:
        """Dead-letter the delivery, then answer its `reply_to`.

        The delivery goes to the dead-letter exchange with the reason in its headers,
        and counts as dead-lettered once the broker confirmed it. Nothing raised here
        leaves: a letter that cannot be sent gives REJECTED, a reply that cannot go
        is given up.
        """
        kind = kind_label(message_kind(message))
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
