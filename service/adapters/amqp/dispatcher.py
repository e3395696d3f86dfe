"""Publishing to RabbitMQ, and `AmqpDispatcher`, which publishes `run_step` messages.

`publish_json` is the one function that sets a message's type, id, content type and
persistence; a dead letter keeps a delivery's own (`letters`). Every publish waits for
the broker's confirm; driver and connection errors come out as `UnavailableError`
(retried by the caller, never dead-lettered).
"""

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, Final

import orjson
from aio_pika import DeliveryMode, Message
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractMessage,
    HeadersType,
)
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, PublishError
from pydantic import BaseModel

from service.adapters.amqp.spans import MessageSpans
from service.adapters.amqp.topology import Topology, step_routing_key
from service.errors import UnavailableError
from service.ports.dispatch import Dispatch

PUBLISH_TIMEOUT: Final = timedelta(seconds=10)
JSON: Final = "application/json"
RUN_STEP: Final = "run_step"
DISPATCHED_AT: Final = "x-dispatched-at"
"""Header of a `run_step` message: when it was published, in milliseconds since the
epoch (the AMQP `timestamp` property has whole seconds only); the consumer measures
the queue wait from it."""
DISPATCH_ID: Final = "x-dispatch-id"
"""Header of a `run_step` message: this copy's own id. A repair may publish a dispatch
again under the same message id; a redelivery takes over a live claim only if it is
the copy that made it (`StepStore.claim`)."""


async def open_publishing_channel(connection: AbstractConnection) -> AbstractChannel:
    """A channel whose publishes wait for confirms and raise when unroutable.

    Declare the topology on it: `AmqpDispatcher` and the consumer's dead letters and
    replies publish through the exchanges of that `Topology`.
    """
    channel = connection.channel(publisher_confirms=True, on_return_raises=True)
    await channel.initialize()
    return channel


async def publish_json(
    exchange: AbstractExchange,
    routing_key: str,
    body: BaseModel | Mapping[str, Any],
    *,
    kind: str,
    message_id: str,
    headers: HeadersType | None = None,
    reply_to: str | None = None,
    correlation_id: str | None = None,
    mandatory: bool = True,
    confirm_within: timedelta = PUBLISH_TIMEOUT,
) -> None:
    """Publish `body` as a persistent JSON message of type `kind`, confirmed.

    Raises:
        UnavailableError: the broker is unreachable, refused the message, did not
            confirm within `confirm_within`, or (`mandatory`) could not route it.
    """
    data = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
    message = Message(
        _dumps(data),
        content_type=JSON,
        delivery_mode=DeliveryMode.PERSISTENT,
        type=kind,
        message_id=message_id,
        headers=headers,
        reply_to=reply_to,
        correlation_id=correlation_id,
    )
    await publish_message(
        exchange,
        message,
        routing_key,
        mandatory=mandatory,
        confirm_within=confirm_within,
    )


def _dumps(data: Mapping[str, Any]) -> bytes:
    try:
        return orjson.dumps(data)
    except orjson.JSONEncodeError:
        # An integer past 64 bits (a user's JSON in a reply): the standard library
        # writes it exactly.
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


async def publish_message(
    exchange: AbstractExchange,
    message: AbstractMessage,
    routing_key: str,
    *,
    mandatory: bool = True,
    confirm_within: timedelta = PUBLISH_TIMEOUT,
) -> None:
    """Publish a message built elsewhere (a dead letter keeps the original properties).

    Raises:
        UnavailableError: as `publish_json`.
    """
    try:
        async with asyncio.timeout(confirm_within.total_seconds()):
            await exchange.publish(message, routing_key, mandatory=mandatory)
    except PublishError as exc:
        # Returned as unroutable: a missing queue or binding, which a reconnection
        # (robust channels declare again) or an operator repairs; retry, don't drop.
        raise UnavailableError(
            f"unroutable: {exchange.name!r} -> {routing_key!r}"
        ) from exc
    except CONNECTION_EXCEPTIONS as exc:
        # CONNECTION_EXCEPTIONS covers AMQPError (DeliveryError: a nack),
        # ChannelInvalidStateError, OSError and TimeoutError.
        raise UnavailableError(
            f"publish to {exchange.name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc


def run_step_body(dispatch: Dispatch) -> dict[str, str | int]:
    """The JSON body of a `run_step` (`contracts.RunStepMessage`)."""
    return {
        "flow_id": dispatch.flow_id,
        "run_id": dispatch.run_id,
        "step_key": dispatch.step_key,
        "attempt": dispatch.attempt,
    }


class AmqpDispatcher:
    """The `Dispatcher` port on RabbitMQ: one `run_step` message per dispatch.

    `topology` must be declared on a channel from `open_publishing_channel`.
    """

    def __init__(
        self,
        topology: Topology,
        *,
        confirm_within: timedelta = PUBLISH_TIMEOUT,
        spans: MessageSpans | None = None,
    ) -> None:
        self._exchange = topology.ingress
        self._confirm_within = confirm_within
        self._spans = spans

    async def publish(self, dispatches: Sequence[Dispatch]) -> None:
        """Publish every dispatch concurrently; return once all are confirmed.

        Raises:
            UnavailableError: if any publish failed (the others were awaited too; a
                repeat publishes the same message ids, recognised as duplicates).
        """
        if len(dispatches) == 1:  # the common case: a task for it would be waste
            await self._publish(dispatches[0])
            return
        results = await asyncio.gather(
            *(self._publish(dispatch) for dispatch in dispatches),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _publish(self, dispatch: Dispatch) -> None:
        headers: dict[str, Any] = {
            DISPATCHED_AT: int(time.time() * 1000),
            DISPATCH_ID: uuid.uuid4().hex,
        }
        routing_key = step_routing_key(dispatch.flow_id)
        span = (
            contextlib.nullcontext()
            if self._spans is None
            else self._spans.publish(
                headers,
                kind=RUN_STEP,
                exchange=self._exchange.name,
                routing_key=routing_key,
                message_id=dispatch.message_id,
                links=dispatch.links,
            )
        )
        with span:
            # The body as `RunStepMessage` writes it, without building the model for
            # our own four fields at every step (a test checks they stay the same).
            await publish_json(
                self._exchange,
                routing_key,
                run_step_body(dispatch),
                kind=RUN_STEP,
                message_id=dispatch.message_id,
                headers=headers,
                confirm_within=self._confirm_within,
            )
