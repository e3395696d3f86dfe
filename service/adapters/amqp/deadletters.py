"""The dead-letter queue `<prefix>.dead` for operators: browse, find, replay, purge.

Reading never loses a letter, keeps their order and changes none: every letter is
taken with a manual ack, then the whole queue is given back as fresh copies, in order
(each copy published and confirmed before its letter is acked). A letter given back
with `nack(requeue=True)` would count one more delivery (`x-delivery-count`, and quorum
queues drop a message past their delivery limit), so each look would change what it
shows. A replay publishes the original message to the ingress exchange, waits for the
confirm, and only then acks the letter; with `reply_to`, the copy asks for an answer
and carries a correlation id of its own, which a new death keeps.
"""

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final

from aio_pika import DeliveryMode, Message
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)

from service.adapters.amqp import lenient
from service.adapters.amqp.client import connected, existing_exchange, existing_queue
from service.adapters.amqp.dispatcher import open_publishing_channel, publish_message
from service.adapters.amqp.letters import body_id, copy_of, encodable_table
from service.adapters.amqp.topology import Names
from service.engine.model import Json
from service.errors import UnavailableError

lenient.install()  # a letter the driver cannot decode would break the connection

GET_TIMEOUT: Final = 10.0
_FACT_PREFIXES: Final = (
    "x-dead-letter-",
    "x-original-",
    "x-first-death-",
    "x-last-death-",
)
_BROKER_HEADERS: Final = frozenset({"x-death", "x-delivery-count"})


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One letter, read: why it died and what it was."""

    letter_id: str
    """The AMQP message id, or `body:<sha256 prefix>` for a message without one."""
    message_id: str | None
    type: str | None
    """The original AMQP type (the message kind)."""
    reason: str | None
    detail: str | None
    routing_key: str | None
    """The routing key it was first published with."""
    exchange: str | None
    """The exchange it was first published to."""
    returns: int
    """How often it was delivered and given back (x-delivery-count)."""
    headers: Mapping[str, Json] = field(default_factory=dict)
    """Every header, the dead-letter facts included, as JSON values."""
    properties: Mapping[str, Json] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Selection:
    """Which letters a replay takes: by id, reason and kind (any case); `limit` most."""

    letter_id: str | None = None
    reason: str | None = None
    kind: str | None = None
    limit: int | None = None

    def wants(self, letter: DeadLetter) -> bool:
        return (
            (self.letter_id is None or letter.letter_id == self.letter_id)
            and _same(self.reason, letter.reason)
            and _same(self.kind, letter.type)
        )


@dataclass(frozen=True, slots=True)
class Replayed:
    """What a replay did: letters republished, and letters left with the reason why.

    `correlation_ids[i]` is the correlation id the copy of `replayed[i]` carries (when
    it asked for an answer).
    """

    replayed: list[DeadLetter] = field(default_factory=list)
    failed: list[tuple[DeadLetter, str]] = field(default_factory=list)
    correlation_ids: list[str] = field(default_factory=list)


class DeadLetterQueue:
    """The dead-letter queue of one topology, on a confirming channel."""

    def __init__(self, channel: AbstractChannel, names: Names, queue: AbstractQueue):
        self._channel = channel
        self._names = names
        self._queue = queue

    @property
    def name(self) -> str:
        return self._queue.name

    async def browse(self, limit: int) -> tuple[list[DeadLetter], int]:
        """The first `limit` letters and how many there are, all given back.

        Reads the whole queue: a letter given back goes behind those still queued,
        so giving back only the first few would reorder the queue.
        """
        held: list[AbstractIncomingMessage] = []
        try:
            await self._take_all(held)
            return [read(message) for message in held[:limit]], len(held)
        finally:
            await self._give_back(held)

    async def find(self, letter_id: str) -> list[DeadLetter]:
        """Every letter with this id, read and given back."""
        held: list[AbstractIncomingMessage] = []
        try:
            await self._take_all(held)
            return [read(m) for m in held if letter_id_of(m) == letter_id]
        finally:
            await self._give_back(held)

    @property
    def channel(self) -> AbstractChannel:
        return self._channel

    async def replay(
        self,
        wanted: Selection | str | None,
        *,
        dry_run: bool = False,
        reply_to: str | None = None,
    ) -> Replayed:
        """Republish the letters `wanted` selects (an id; None: all), then ack each.

        Takes every letter first, so one that dies again while this runs is not
        replayed twice. A letter whose publish fails stays queued. `dry_run` changes
        nothing and returns what would be replayed. With `reply_to`, each copy asks
        for an answer there under a correlation id of its own.
        """
        if not isinstance(wanted, Selection):
            wanted = Selection(letter_id=wanted)
        ingress = await existing_exchange(self._channel, self._names.ingress)
        done = Replayed()
        held: list[AbstractIncomingMessage] = []
        acked: set[int] = set()
        try:
            await self._take_all(held)
            for index, message in enumerate(held):
                letter = read(message)
                if not wanted.wants(letter):
                    continue
                if wanted.limit is not None and (
                    len(done.replayed) + len(done.failed) >= wanted.limit
                ):
                    break
                if dry_run:
                    done.replayed.append(letter)
                    continue
                token = f"replay-{uuid.uuid4()}"
                try:
                    await self._republish(message, letter, ingress, reply_to, token)
                except UnavailableError as exc:
                    done.failed.append((letter, str(exc)))
                    continue
                await message.ack()
                acked.add(index)
                done.replayed.append(letter)
                done.correlation_ids.append(token)
        finally:
            await self._give_back([m for i, m in enumerate(held) if i not in acked])
        return done

    async def purge(self) -> int:
        """Delete every letter; how many there were."""
        purged = await self._queue.purge()
        return int(purged.message_count or 0)

    async def _take(self) -> AbstractIncomingMessage | None:
        return await self._queue.get(no_ack=False, fail=False, timeout=GET_TIMEOUT)

    async def _take_all(self, held: list[AbstractIncomingMessage]) -> None:
        # A held letter is not delivered again, so this ends with the queue empty.
        while (message := await self._take()) is not None:
            held.append(message)

    async def _republish(
        self,
        message: AbstractIncomingMessage,
        letter: DeadLetter,
        ingress: AbstractExchange,
        reply_to: str | None,
        correlation_id: str,
    ) -> None:
        # A message first published to the default exchange named its queue as the
        # routing key: send it the same way; everything else goes through ingress.
        exchange = self._channel.default_exchange if letter.exchange == "" else ingress
        routing_key = letter.routing_key or message.routing_key or ""
        copy = original(message, letter)
        if reply_to is not None:
            copy.reply_to, copy.correlation_id = reply_to, correlation_id
        await publish_message(exchange, copy, routing_key)

    async def _give_back(self, held: list[AbstractIncomingMessage]) -> None:
        # Every letter, in order, those that arrived meanwhile too: the copies keep
        # their places. Through the dead-letter exchange, with the routing key each
        # letter came with, so that a copy reads exactly as the letter did.
        await self._take_all(held)
        if not held:
            return
        dlx = await existing_exchange(self._channel, self._names.dlx)
        for message in held:
            # The copy is confirmed before the ack: a crash in between leaves two
            # copies, never none.
            await publish_message(dlx, fresh_copy(message), message.routing_key or "")
            await message.ack()


@contextlib.asynccontextmanager
async def dead_letter_queue(
    url: str, names: Names, *, connect_timeout: timedelta = timedelta(seconds=10)
) -> AsyncIterator[DeadLetterQueue]:
    """The `DeadLetterQueue` of `names` on a new connection, closed on the way out.

    Raises:
        UnavailableError: the broker can't be reached.
        TopologyMissingError: no worker has declared `names.dead`.
    """
    async with connected(url, connect_timeout=connect_timeout) as connection:
        channel = await open_publishing_channel(connection)
        queue = await existing_queue(channel, names.dead)
        yield DeadLetterQueue(channel, names, queue)


def read(message: AbstractIncomingMessage) -> DeadLetter:
    """The facts of a dead letter, from its headers and properties."""
    headers = message.headers or {}
    death = _first_death(headers.get("x-death"))
    keys = death.get("routing-keys")
    death_key = keys[0] if isinstance(keys, list) and keys else None
    return DeadLetter(
        letter_id=letter_id_of(message),
        message_id=_text(message.message_id),
        type=_text(headers.get("x-original-type")) or _text(message.type),
        reason=_first_text(
            headers.get("x-dead-letter-reason"),
            headers.get("x-first-death-reason"),
            death.get("reason"),
        ),
        detail=_text(headers.get("x-dead-letter-detail")),
        routing_key=_first_text(
            headers.get("x-original-routing-key"), death_key, message.routing_key
        ),
        exchange=_first_text(
            headers.get("x-original-exchange"),
            headers.get("x-first-death-exchange"),
            death.get("exchange"),
            empty_ok=True,
        ),
        returns=returns_of(message),
        headers={name: jsonable(value) for name, value in headers.items()},
        properties=_properties(message),
        body=message.body,
    )


def letter_id_of(message: AbstractIncomingMessage) -> str:
    if message.message_id:
        return lenient.printable(message.message_id)
    return body_id(message.body)


def returns_of(message: AbstractIncomingMessage) -> int:
    count = (message.headers or {}).get("x-delivery-count")
    return count if isinstance(count, int) else 0


def original(message: AbstractIncomingMessage, letter: DeadLetter) -> Message:
    """The message as first published: body, properties and its own headers.

    Without `reply_to`: whoever asked is long gone, and a worker must not answer a
    stranger who now holds that address.
    """
    headers, _ = encodable_table(
        {n: v for n, v in (message.headers or {}).items() if not _is_fact(n)}
    )
    return Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=DeliveryMode.PERSISTENT,
        priority=message.priority,
        correlation_id=message.correlation_id,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=letter.type,
        app_id=message.app_id,
    )


def fresh_copy(message: AbstractIncomingMessage) -> Message:
    """The letter as it is, for the back of its queue, without the return count."""
    headers = dict(message.headers or {})
    headers.pop("x-delivery-count", None)
    return copy_of(message, headers=headers)


def jsonable(value: object) -> Json:
    """An AMQP field value as JSON: bytes as text, instants as ISO 8601."""
    convert: Callable[[object], Json] = jsonable
    match value:
        case None | bool() | int() | float():
            return value
        case str():
            return lenient.printable(value)
        case bytes() | bytearray():
            return bytes(value).decode("utf-8", errors="replace")
        case datetime():
            return value.isoformat()
        case Decimal():
            return str(value)
        case Mapping():
            return {
                lenient.printable(str(key)): convert(item)
                for key, item in value.items()
            }
        case list() | tuple():
            return [convert(item) for item in value]
        case _:
            return str(value)


def _properties(message: AbstractIncomingMessage) -> dict[str, Json]:
    found = {
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "correlation_id": message.correlation_id,
        "reply_to": message.reply_to,
        "timestamp": message.timestamp,
        "app_id": message.app_id,
        "priority": message.priority,
        "queued_routing_key": message.routing_key,
    }
    return {name: jsonable(value) for name, value in found.items() if value is not None}


def _same(wanted: str | None, found: str | None) -> bool:
    return wanted is None or (found or "").lower() == wanted.lower()


def _is_fact(name: str) -> bool:
    return name in _BROKER_HEADERS or name.startswith(_FACT_PREFIXES)


def _first_death(value: object) -> Mapping[str, object]:
    if isinstance(value, list) and value and isinstance(value[0], Mapping):
        return value[0]
    return {}


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return lenient.printable(value) if isinstance(value, str) else None


def _first_text(*values: object, empty_ok: bool = False) -> str | None:
    for value in values:
        text = _text(value)
        if text is not None and (text or empty_ok):
            return text
    return None
