"""Hostile AMQP properties without a broker: lenient decoding and publishable letters.

Tables are written as bytes, the way a peer sends them, decoded by pamqp with the
lenient decoders installed, and copied into dead letters that pamqp must be able to
encode and that must fit in one frame.
"""

import struct
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from aio_pika import IncomingMessage
from aiormq.abc import DeliveredMessage
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands, decode, encode
from pamqp.header import ContentHeader

from service.adapters.amqp import lenient
from service.adapters.amqp.letters import (
    REWRITTEN,
    TRIMMED,
    LetterError,
    copy_of,
    dead_letter,
    encodable_table,
    frame_size,
)

lenient.install()

FRAME_MAX = 131_072


def shortstr(value: bytes) -> bytes:
    return struct.pack(">B", len(value)) + value


def longstr(value: bytes) -> bytes:
    return b"S" + struct.pack(">I", len(value)) + value


def table(entries: list[tuple[bytes, bytes]]) -> bytes:
    data = b"".join(shortstr(name) + value for name, value in entries)
    return struct.pack(">I", len(data)) + data


def received(
    *,
    entries: list[tuple[bytes, bytes]] | None = None,
    kind: bytes = b"trigger",
    message_id: bytes = b"m-1",
    timestamp: int | None = None,
    body: bytes = b"{not json",
) -> IncomingMessage:
    """A delivery whose content header was decoded from these bytes."""
    flags = 0x2000 | 0x0080 | 0x0020  # headers, message_id, type
    values = [table(entries or []), shortstr(message_id)]
    if timestamp is not None:
        flags |= 0x0040
        values.append(struct.pack(">Q", timestamp))
    values.append(shortstr(kind))
    header = ContentHeader()
    header.unmarshal(
        struct.pack(">HxxQH", commands.Basic.frame_id, len(body), flags)
        + b"".join(values)
    )
    deliver = commands.Basic.Deliver(
        consumer_tag="c", delivery_tag=1, exchange="flow.ingress", routing_key="t.x"
    )
    delivered = DeliveredMessage(deliver, header, body, cast(Any, None))
    return IncomingMessage(delivered, no_ack=True)


# -- lenient decoding ------------------------------------------------------------------


def test_a_short_string_that_is_not_utf8_decodes_with_its_bytes_escaped():
    consumed, text = decode.by_type(shortstr(b"a\xffb") + b"rest", "shortstr")

    assert consumed == 4
    assert isinstance(text, str)
    assert lenient.escaped(text)
    assert lenient.printable(text) == "a\\xffb"


def test_a_timestamp_past_year_9999_decodes_as_none():
    assert decode.by_type(struct.pack(">Q", 2**63), "timestamp") == (8, None)
    assert decode.by_type(struct.pack(">Q", 86_400), "timestamp") == (
        8,
        datetime(1970, 1, 2, tzinfo=UTC),
    )


def test_a_truncated_value_still_raises_as_a_malformed_frame():
    with pytest.raises(ValueError, match="timestamp"):
        decode.by_type(b"\x00\x01", "timestamp")
    with pytest.raises(ValueError, match="exceeds"):
        decode.by_type(struct.pack(">I", 50) + b"\x01a", "table")


def test_installing_twice_changes_nothing():
    before = dict(decode.METHODS), dict(decode.TABLE_MAPPING)

    lenient.install()

    assert (dict(decode.METHODS), dict(decode.TABLE_MAPPING)) == before


def test_printable_leaves_valid_text_alone():
    assert lenient.printable("héllo \\xff") == "héllo \\xff"
    assert not lenient.escaped("héllo")


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (received(entries=[(b"x-\xff\xfe", longstr(b"v"))]), "a header name"),
        (received(kind=b"trig\xffger"), "the type property"),
        (received(message_id=b"\xc3"), "the message_id property"),
        (
            received(entries=[(b"x-t", b"F" + table([(b"\xff", b"V")]))]),
            "a header name",
        ),
    ],
    ids=["header-name", "type", "message-id", "nested-header-name"],
)
def test_undecodable_names_what_was_not_utf8(message: IncomingMessage, problem: str):
    found = lenient.undecodable(message)

    assert found is not None
    assert found.startswith(problem)
    assert not lenient.escaped(found)


def test_a_message_of_valid_text_is_decodable():
    message = received(entries=[(b"x-bytes", longstr(b"\xff")), (b"x-k", b"V")])

    assert lenient.undecodable(message) is None


# -- any table decodes, and its copy encodes -------------------------------------------


scalars = st.one_of(
    st.binary(max_size=20).map(longstr),
    st.floats(allow_nan=False).map(lambda f: b"d" + struct.pack(">d", f)),
    st.floats(width=32, allow_nan=False).map(lambda f: b"f" + struct.pack(">f", f)),
    st.tuples(st.integers(0, 255), st.integers(-(2**31), 2**31 - 1)).map(
        lambda d: b"D" + struct.pack(">Bi", *d)
    ),
    st.integers(0, 2**64 - 1).map(lambda t: b"T" + struct.pack(">Q", t)),
    st.integers(-(2**63), 2**63 - 1).map(lambda i: b"l" + struct.pack(">q", i)),
    st.booleans().map(lambda b: b"t" + bytes([b])),
    st.binary(max_size=10).map(lambda b: b"x" + struct.pack(">I", len(b)) + b),
    st.just(b"V"),
)
"""Encoded field values of every type pamqp decodes, in and out of range."""


def _tables(values: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    names = st.binary(min_size=1, max_size=12) | st.sampled_from([b"x-a", b"\xff"])
    return st.lists(st.tuples(names, values), max_size=4).map(table)


def _array(items: list[bytes]) -> bytes:
    return b"A" + struct.pack(">I", len(b"".join(items))) + b"".join(items)


values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3).map(_array)
        | _tables(children).map(lambda t: b"F" + t)
    ),
    max_leaves=8,
)
raw_tables = _tables(values)


@given(raw_tables)
def test_any_table_decodes_and_its_copy_encodes(raw: bytes):
    _, decoded = decode.by_type(raw, "table")
    assert isinstance(decoded, dict)

    copied, _ = encodable_table(decoded)

    encode.field_table(copied)


@given(raw_tables)
def test_a_table_pamqp_decodes_decodes_the_same_leniently(raw: bytes):
    try:
        expected = decode.field_table(raw)
    except ValueError:
        return  # pamqp's own decoders refuse it: nothing to compare

    assert repr(lenient.field_table(raw)) == repr(expected)


# -- letters ---------------------------------------------------------------------------


def _table_of(size: int) -> list[tuple[bytes, bytes]]:
    """Entries of `size` encoded bytes: many of 115 bytes and a pad."""
    entry = longstr(b"v" * 100)
    entries = [(f"x-b{n:05d}".encode(), entry) for n in range(size // 200)]
    used = sum(1 + len(name) + len(value) for name, value in entries)
    pad = size - used - (1 + len(b"x-pad")) - 5
    return [*entries, (b"x-pad", longstr(b"p" * pad))]


def test_a_letter_keeps_the_headers_and_adds_the_facts():
    message = received(entries=[(b"x-a", longstr(b"1")), (b"x-n", b"l" + bytes(8))])

    letter = dead_letter(message, "not_json", "body is not JSON")

    assert letter.headers == {
        "x-a": "1",
        "x-n": 0,
        "x-dead-letter-reason": "not_json",
        "x-dead-letter-detail": "body is not JSON",
        "x-original-type": "trigger",
        "x-original-routing-key": "t.x",
        "x-original-exchange": "flow.ingress",
        "x-original-message-id": "m-1",
    }
    assert (letter.body, letter.message_id, letter.type) == (
        b"{not json",
        "m-1",
        "trigger",
    )


def test_values_pamqp_cannot_encode_are_rewritten_as_text_and_noted():
    message = received(
        entries=[
            (b"x-bytes", longstr(b"\xff\xfe")),
            (b"x-double", b"d" + struct.pack(">d", 1e300)),
            (b"x-\xff", longstr(b"v")),
            (b"x-fine", longstr(b"ok")),
            (REWRITTEN.encode(), longstr(b"forged")),
        ]
    )

    letter = dead_letter(message, "not_json", "detail")

    assert letter.headers["x-bytes"] == "\\xff\\xfe"
    assert letter.headers["x-double"] == "1e+300"
    assert letter.headers["x-\\xff"] == "v"
    assert letter.headers["x-fine"] == "ok"
    assert letter.headers[REWRITTEN] == "x-bytes, x-double, x-\\xff"
    assert frame_size(letter) < FRAME_MAX


def test_escaped_properties_are_written_as_text_of_at_most_255_bytes():
    message = received(kind=b"\xff" * 255, message_id=b"id-\xfe")

    letter = dead_letter(message, "bad_properties", "detail")

    assert letter.message_id == "id-\\xfe"
    assert letter.type is not None
    assert len(letter.type.encode()) <= 255
    assert letter.headers["x-original-type"] == "\\xff" * 255
    assert frame_size(letter) < FRAME_MAX


def test_a_letter_near_frame_max_drops_its_largest_headers_to_fit():
    entries = _table_of(130_900)
    message = received(entries=entries)

    letter = dead_letter(
        message, "not_json", "body is not UTF-8 JSON", frame_max=FRAME_MAX
    )

    assert frame_size(letter) <= FRAME_MAX
    assert letter.headers["x-dead-letter-reason"] == "not_json"
    assert letter.body == b"{not json"
    assert "x-pad" not in letter.headers  # the largest goes first
    note = str(letter.headers[TRIMMED])
    assert note.startswith(f"1 of {len(entries)} headers dropped to fit frame_max")
    assert note.endswith("x-pad")
    assert len(letter.headers) == len(entries) - 1 + 6 + 1


def test_a_table_of_small_headers_near_frame_max_drops_a_few_of_them():
    entry = longstr(b"v" * 20)
    entries = [(f"x-{n:05d}".encode(), entry) for n in range(130_900 // 33)]
    message = received(entries=entries)

    letter = dead_letter(message, "not_json", "d" * 300)

    assert frame_size(letter) <= FRAME_MAX
    kept = [name for name in letter.headers if name.startswith("x-0")]
    assert len(entries) - 120 < len(kept) < len(entries)
    assert len(str(letter.headers[TRIMMED]).encode()) <= 300


def test_a_letter_whose_facts_alone_exceed_frame_max_raises():
    message = received(entries=[(b"x-a", longstr(b"1"))])

    with pytest.raises(LetterError):
        dead_letter(message, "not_json", "d" * 300, frame_max=400)


def test_a_copy_keeps_notes_it_did_not_make():
    message = received(entries=[(TRIMMED.encode(), longstr(b"3 of 9 headers"))])

    copy = copy_of(message, headers=dict(message.headers))

    assert copy.headers == {TRIMMED: "3 of 9 headers"}
