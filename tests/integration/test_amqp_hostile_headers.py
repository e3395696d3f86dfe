"""The consumer on a real broker against properties no client library would send.

Frames are written by hand, so names, types and ids need not be UTF-8, header tables
may hold values pamqp decodes but cannot encode, and a table may fill a frame. Each
message must be dead-lettered with its reason while the worker stays up and its
connection stays open; big integers in JSON must survive the way in and out.
"""

import json
import struct
from dataclasses import dataclass
from typing import cast
from uuid import uuid4

import aiormq
import pytest
from aiormq.abc import ChannelFrame, FrameType
from pamqp import commands
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from service.adapters.amqp.consumer import Outcome
from service.adapters.amqp.dispatcher import publish_json
from service.adapters.amqp.letters import REWRITTEN, TRIMMED
from service.engine.model import RunId, RunStatus, StepKey
from tests.integration.amqp import (
    Client,
    Worker,
    next_message,
)

BIG = 123456789012345678901234567890


def shortstr(value: bytes) -> bytes:
    return struct.pack(">B", len(value)) + value


def longstr(value: bytes) -> bytes:
    return b"S" + struct.pack(">I", len(value)) + value


def table(entries: tuple[tuple[bytes, bytes], ...]) -> bytes:
    data = b"".join(shortstr(name) + value for name, value in entries)
    return struct.pack(">I", len(data)) + data


@dataclass(frozen=True)
class Raw:
    """A message as raw bytes: headers are encoded (name, type octet + value)."""

    body: bytes = b"{not json"
    routing_key: bytes = b"trigger.hello"
    kind: bytes = b"trigger"
    message_id: bytes = b"m-1"
    headers: tuple[tuple[bytes, bytes], ...] = ()
    timestamp: int | None = None
    reply_to: bytes | None = None


class _RawPublish(commands.Basic.Publish):
    def __init__(self, exchange: str, routing_key: bytes) -> None:
        super().__init__(exchange=exchange)
        self._raw_key = routing_key

    def marshal(self) -> bytes:
        # ticket, exchange, routing key, then the mandatory and immediate bits
        return (
            b"\0\0" + shortstr(self.exchange.encode()) + shortstr(self._raw_key) + b"\0"
        )


class _RawHeader(ContentHeader):
    def __init__(self, message: Raw) -> None:
        super().__init__(body_size=len(message.body))
        self._message = message

    def marshal(self) -> bytes:
        m = self._message
        flags = 0x8000 | 0x2000 | 0x1000 | 0x0080  # content type, headers, mode, id
        values = [shortstr(b"application/json"), table(m.headers), b"\x02"]
        if m.reply_to is not None:
            flags |= 0x0200
            values.append(shortstr(m.reply_to))
        values.append(shortstr(m.message_id))
        if m.timestamp is not None:
            flags |= 0x0040
            values.append(struct.pack(">Q", m.timestamp))
        flags |= 0x0020
        values.append(shortstr(m.kind))
        return struct.pack(
            ">HxxQH", commands.Basic.frame_id, len(m.body), flags
        ) + b"".join(values)


async def publish_raw(client: Client, message: Raw) -> None:
    """Write the frames on the client's channel without confirms."""
    channel = cast(aiormq.Channel, await client.raw.get_underlay_channel())
    frames: list[FrameType] = [
        _RawPublish(client.names.ingress, message.routing_key),
        _RawHeader(message),
        ContentBody(message.body),
    ]
    await channel.write_queue.put(
        ChannelFrame.marshall(frames=frames, channel_number=channel.number)
    )


async def dead_letter_of(worker: Worker, client: Client, message: Raw):
    dead = await client.channel.get_queue(worker.names.dead)
    await publish_raw(client, message)
    return await next_message(dead)


async def assert_still_consuming(worker: Worker, client: Client) -> None:
    """A trigger after the hostile message runs, on the connection it had."""
    run_id = str(uuid4())
    await client.publish(
        "trigger.hello", {"flow": "hello", "run_id": run_id}, kind="trigger"
    )

    assert (await worker.until_final(run_id)).status is RunStatus.SUCCEEDED
    assert not worker.task.done()
    assert not any(outcome is Outcome.LOST for _, outcome in worker.tally.outcomes)


@pytest.mark.parametrize(
    ("entry", "written"),
    [
        ((b"x-odd", longstr(b"\xff\xfe")), "\\xff\\xfe"),
        ((b"x-odd", b"d" + struct.pack(">d", 1e300)), "1e+300"),
        ((b"x-odd", b"A" + struct.pack(">I", 6) + longstr(b"\xc3")), ["\\xc3"]),
    ],
    ids=["string-not-utf8", "double-beyond-float", "array-of-bytes"],
)
async def test_header_values_pamqp_cannot_encode_go_into_the_letter_as_text(
    worker, client, entry, written
):
    letter = await dead_letter_of(worker, client, Raw(headers=(entry,)))

    assert letter.headers["x-dead-letter-reason"] == "not_json"
    assert letter.headers["x-odd"] == written
    assert letter.headers[REWRITTEN] == "x-odd"
    assert letter.body == b"{not json"
    await assert_still_consuming(worker, client)


@pytest.mark.parametrize(
    ("message", "problem", "header"),
    [
        (Raw(b"{}", headers=((b"x-\xff\xfe", longstr(b"v")),)), "a header name", None),
        (Raw(b"{}", kind=b"trig\xffger"), "the type property", "x-original-type"),
        (Raw(b"{}", message_id=b"id-\xfe"), "the message_id property", None),
        (Raw(b"{}", reply_to=b"q-\xfe"), "the reply_to property", None),
        (
            Raw(b"{}", routing_key=b"trigger.\xff"),
            "the routing_key property",
            "x-original-routing-key",
        ),
        (
            Raw(b"{}", headers=((b"x-t", b"F" + table(((b"\xff", b"V"),))),)),
            "a header name",
            None,
        ),
    ],
    ids=[
        "header-name",
        "type",
        "message-id",
        "reply-to",
        "routing-key",
        "nested-header-name",
    ],
)
async def test_a_message_with_text_that_is_not_utf8_is_dead_lettered_as_bad_properties(
    worker, client, message, problem, header
):
    letter = await dead_letter_of(worker, client, message)

    assert letter.headers["x-dead-letter-reason"] == "bad_properties"
    assert str(letter.headers["x-dead-letter-detail"]).startswith(problem)
    if header is not None:
        assert "\\x" in str(letter.headers[header])
    assert worker.tally.dead_letters == {"bad_properties": 1}
    await assert_still_consuming(worker, client)


async def test_a_header_name_that_is_not_utf8_is_escaped_in_the_letter(worker, client):
    message = Raw(headers=((b"x-\xff\xfe", longstr(b"v")),), message_id=b"m-\xff")

    letter = await dead_letter_of(worker, client, message)

    assert letter.headers["x-\\xff\\xfe"] == "v"
    assert letter.message_id == "m-\\xff"
    assert letter.headers["x-original-message-id"] == "m-\\xff"


async def test_a_timestamp_past_year_9999_reads_as_absent(worker, client):
    run_id = str(uuid4())
    body = json.dumps({"flow": "hello", "run_id": run_id}).encode()

    await publish_raw(client, Raw(body, timestamp=2**63))
    letter = await dead_letter_of(worker, client, Raw(timestamp=2**63))

    assert (await worker.until_final(run_id)).status is RunStatus.SUCCEEDED
    assert letter.headers["x-dead-letter-reason"] == "not_json"
    assert letter.timestamp is None


def table_of(size: int) -> tuple[tuple[bytes, bytes], ...]:
    """Header entries of exactly `size` encoded bytes: many small ones and a pad."""
    entry = longstr(b"v" * 100)
    entries = [(f"x-b{n:05d}".encode(), entry) for n in range(size // 200)]
    used = sum(1 + len(name) + len(value) for name, value in entries)
    pad = size - used - (1 + len(b"x-pad")) - 5
    return (*entries, (b"x-pad", longstr(b"p" * pad)))


async def test_a_letter_that_would_not_fit_in_a_frame_drops_its_largest_headers(
    worker, client
):
    headers = table_of(130_900)  # the frame fits 131,064 bytes

    letter = await dead_letter_of(worker, client, Raw(headers=headers))

    assert letter.headers["x-dead-letter-reason"] == "not_json"
    assert letter.body == b"{not json"
    assert "x-pad" not in letter.headers
    assert letter.headers["x-b00000"] == "v" * 100
    assert str(letter.headers[TRIMMED]).startswith(
        f"1 of {len(headers)} headers dropped to fit frame_max 131072: x-pad"
    )
    await assert_still_consuming(worker, client)


async def test_a_letter_that_fits_keeps_every_header(worker, client):
    headers = table_of(20_000)

    letter = await dead_letter_of(worker, client, Raw(headers=headers))

    assert TRIMMED not in letter.headers
    assert {name.encode() for name in letter.headers} >= {n for n, _ in headers}


async def test_big_integers_in_a_trigger_body_reach_the_run_exactly(worker, client):
    run_id = str(uuid4())
    body = {"flow": "hello", "run_id": run_id, "body": {"name": BIG, "n": [-BIG]}}

    await client.publish("trigger.hello", json.dumps(body).encode(), kind="trigger")

    run = await worker.until_final(run_id)
    assert run.body == {"name": BIG, "n": [-BIG]}
    rows = await worker.stores.steps.steps(RunId(run_id), [StepKey("greet")])
    assert rows[StepKey("greet")].output == {"text": f"Hello, {BIG}"}


async def test_publish_json_writes_big_integers_exactly(client):
    queue = await client.channel.declare_queue(exclusive=True)

    await publish_json(
        client.channel.default_exchange,
        queue.name,
        {"data": {"n": BIG}},
        kind="reply",
        message_id="m-1",
    )

    message = await next_message(queue)
    assert json.loads(message.body) == {"data": {"n": BIG}}
