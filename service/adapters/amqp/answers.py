"""`Answers`: the replies workers send to replayed dead letters; `ReplayOutcome`.

`flowctl dlq replay` publishes each copy with `reply_to` set to RabbitMQ's direct
reply-to on the publishing channel (consumed before the first publish, as RabbitMQ
requires) and its own correlation id; a worker answers every trigger and control
message, and answers a rejected one after dead-lettering it again.
"""

import asyncio
import contextlib
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from pydantic import ValidationError

from contracts import Reply
from service.adapters.amqp.control import DIRECT_REPLY_TO
from service.adapters.amqp.deadletters import DeadLetter


class Answers:
    """Replies received on one channel's direct reply-to, kept by correlation id."""

    def __init__(self) -> None:
        self.received: dict[str, Reply] = {}
        self._arrived = asyncio.Event()

    async def listen(self, channel: AbstractChannel) -> str:
        """Consume the direct replies of `channel`; the address to put in reply_to."""
        replies = await channel.get_queue(DIRECT_REPLY_TO, ensure=False)
        await replies.consume(self.on_reply, no_ack=True)
        return DIRECT_REPLY_TO

    async def on_reply(self, message: AbstractIncomingMessage) -> None:
        if not message.correlation_id:
            return
        with contextlib.suppress(ValidationError):  # not a reply of ours: ignore it
            self.received[message.correlation_id] = Reply.model_validate_json(
                message.body
            )
            self._arrived.set()

    async def wait(self, expected: Collection[str], *, within: timedelta) -> None:
        """Until every id in `expected` has a reply, or `within` has passed."""
        deadline = time.monotonic() + within.total_seconds()
        while not all(token in self.received for token in expected):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._arrived.wait()


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """What became of one replayed letter.

    `result`: `would replay` (a dry run), `replayed` (answered or not),
    `dead-lettered again`, or `not replayed` (its publish failed; it stays queued).
    """

    letter: DeadLetter
    result: str
    detail: str = ""

    @property
    def went_wrong(self) -> bool:
        return self.result in {"dead-lettered again", "not replayed"}
