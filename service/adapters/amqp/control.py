"""`ControlClient`: publish a request to the ingress exchange and await its `Reply`.

For `flowctl`. A request carries `reply_to` and a `correlation_id` (its own message id);
the consumer answers on the default exchange. Replies come back through RabbitMQ's
direct reply-to (`amq.rabbitmq.reply-to`), so no queue is declared or left behind.
"""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Final

from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage
from pydantic import BaseModel, ValidationError

from contracts import Reply
from service.adapters.amqp.client import connected, existing_exchange
from service.adapters.amqp.dispatcher import open_publishing_channel, publish_json
from service.adapters.amqp.topology import Names
from service.errors import UnavailableError

DIRECT_REPLY_TO: Final = "amq.rabbitmq.reply-to"


class NoReplyError(UnavailableError):
    """No reply within the timeout: no worker consumed the request in time.

    The request stays queued, so a worker that starts later still handles it.
    """

    reason = "no_reply"

    def __init__(self, kind: str, waited: timedelta) -> None:
        self.kind = kind
        self.waited = waited
        super().__init__(
            f"no reply to {kind} within {waited.total_seconds():g} s: is a worker "
            "running with this prefix? (the request stays queued for one)"
        )


class ControlClient:
    """Requests over one channel that consumes its own direct replies.

    Build it with `control_client`, which starts the reply consumer before the first
    request is published (RabbitMQ requires that order).
    """

    def __init__(self, channel: AbstractChannel, ingress: AbstractExchange) -> None:
        self._channel = channel
        self._ingress = ingress
        self._waiting: dict[str, asyncio.Future[Reply]] = {}

    async def request(
        self,
        routing_key: str,
        body: BaseModel,
        *,
        kind: str,
        within: timedelta,
        message_id: str | None = None,
    ) -> Reply:
        """Publish `body` as a `kind` message (confirmed) and return its reply.

        `message_id` (a new UUID by default) is the request's job id and its
        correlation id.

        Raises:
            UnavailableError: the broker refused or could not route the request.
            NoReplyError: no reply `within` this long after the broker's confirm.
        """
        message_id = message_id or str(uuid.uuid4())
        answer: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[message_id] = answer
        try:
            await publish_json(
                self._ingress,
                routing_key,
                body,
                kind=kind,
                message_id=message_id,
                reply_to=DIRECT_REPLY_TO,
                correlation_id=message_id,
            )
            try:
                async with asyncio.timeout(within.total_seconds()):
                    return await answer
            except TimeoutError:
                raise NoReplyError(kind, within) from None
        finally:
            self._waiting.pop(message_id, None)

    async def on_reply(self, message: AbstractIncomingMessage) -> None:
        """Resolve the request the reply correlates with; ignore any other."""
        answer = self._waiting.get(message.correlation_id or "")
        if answer is None or answer.done():
            return
        try:
            answer.set_result(Reply.model_validate_json(message.body))
        except ValidationError as exc:
            answer.set_exception(
                UnavailableError(f"unreadable reply: {exc.error_count()} error(s)")
            )


@contextlib.asynccontextmanager
async def control_client(
    url: str, names: Names, *, connect_timeout: timedelta = timedelta(seconds=10)
) -> AsyncIterator[ControlClient]:
    """A `ControlClient` on a new connection to `url`, closed on the way out.

    Raises:
        UnavailableError: the broker can't be reached.
        TopologyMissingError: no worker has declared `names.ingress`.
    """
    async with connected(url, connect_timeout=connect_timeout) as connection:
        channel = await open_publishing_channel(connection)
        ingress = await existing_exchange(channel, names.ingress)
        client = ControlClient(channel, ingress)
        replies = await channel.get_queue(DIRECT_REPLY_TO, ensure=False)
        await replies.consume(client.on_reply, no_ack=True)
        yield client
