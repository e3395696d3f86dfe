"""Lenient decoding of what pamqp refuses, so one odd message cannot break a connection.

pamqp raises on a short string (a property such as `type` or `message_id`, a header
name, a routing key) that is not UTF-8 and on a timestamp past the year 9999; aiormq
then drops the whole connection, and the broker delivers the message again, forever.
`install()` swaps three of pamqp's decoders for ones that decode such text with
`surrogateescape` (lossless, and detectable: well-formed UTF-8 never decodes to a
lone surrogate) and such a timestamp as None. Long strings need nothing: pamqp already
returns those that are not UTF-8 as bytes. The consumer dead-letters a message whose
properties hold escaped text (`undecodable`); `printable` writes it back as valid text.
"""

import datetime
import struct
from collections.abc import Callable, Mapping
from typing import Final

from aio_pika.abc import AbstractIncomingMessage
from pamqp import common, decode

_TEXT_PROPERTIES: Final = (
    "type",
    "message_id",
    "correlation_id",
    "reply_to",
    "app_id",
    "user_id",
    "content_type",
    "content_encoding",
    "routing_key",
    "exchange",
)
_SHOWN: Final = 60
_TIMESTAMP_BYTES: Final = 8
_pamqp_short_str: Final = decode.short_str
_pamqp_timestamp: Final = decode.timestamp


def short_str(value: bytes) -> tuple[int, str]:
    """A short string; bytes that are not UTF-8 become lone surrogates."""
    try:
        return _pamqp_short_str(value)
    except UnicodeDecodeError:
        length = value[0]
        return length + 1, value[1 : length + 1].decode("utf-8", "surrogateescape")


def timestamp(value: bytes) -> tuple[int, datetime.datetime | None]:
    """A timestamp, or None for one past what `datetime` holds."""
    if len(value) < _TIMESTAMP_BYTES:
        return _pamqp_timestamp(value)  # truncated: raises, as a malformed frame
    try:
        return _pamqp_timestamp(value)
    except (ValueError, OverflowError, OSError):
        return _TIMESTAMP_BYTES, None


def field_table(value: bytes) -> tuple[int, common.FieldTable]:
    """A field table, its names read by `short_str` (pamqp 4.0.1's, rewritten)."""
    try:
        length = common.Struct.integer.unpack(value[0:4])[0]
        offset = 4
        data: common.FieldTable = {}
        end = offset + length
        if end > len(value):
            raise ValueError("Field table length exceeds available data")
        while offset < end:
            if offset + 1 + value[offset] > end:
                raise ValueError("Field table key length exceeds data")
            consumed, key = short_str(value[offset:])
            offset += consumed
            consumed, item = decode.embedded_value(value[offset:])
            offset += consumed
            data[key] = item
    except (struct.error, TypeError) as err:
        raise ValueError("Could not unpack data") from err
    return end, data


_Decoder = Callable[[bytes], tuple[int, common.FieldValue]]
_DECODERS: Final[Mapping[str, _Decoder]] = {
    "shortstr": short_str,
    "timestamp": timestamp,
    "table": field_table,
}
_TABLE_TYPES: Final[Mapping[bytes, _Decoder]] = {
    b"T": timestamp,
    b"F": field_table,
}


def install() -> None:
    """Put the lenient decoders in pamqp's dispatch tables; repeating it does nothing.

    pamqp looks decoders up in `decode.METHODS` (properties, method arguments) and
    `decode.TABLE_MAPPING` (values in tables and arrays) at every call, so this covers
    every frame any connection of this process reads.
    """
    decode.METHODS.update(_DECODERS)
    decode.TABLE_MAPPING.update(_TABLE_TYPES)


def escaped(text: str) -> bool:
    """Whether `text` holds bytes that were not UTF-8 (as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def printable(text: str) -> str:
    r"""`text` as valid UTF-8, each byte that was not written as an escape (`\xff`)."""
    if not escaped(text):
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate pamqp did not make: escape it as such
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def undecodable(message: AbstractIncomingMessage) -> str | None:
    """What in `message`'s properties was not UTF-8, described; None if nothing was."""
    for name in _TEXT_PROPERTIES:
        value = getattr(message, name, None)
        if isinstance(value, str) and escaped(value):
            return f"the {name} property is not UTF-8: {_shown(value)}"
    header = _escaped_name(message.headers or {})
    if header is not None:
        return f"a header name is not UTF-8: {_shown(header)}"
    return None


def _escaped_name(table: Mapping[str, object]) -> str | None:
    """The first field name in `table`, or in a table or array in it, with escapes."""
    for name, value in table.items():
        if escaped(name):
            return name
        inner = _escaped_name_in(value)
        if inner is not None:
            return inner
    return None


def _escaped_name_in(value: object) -> str | None:
    if isinstance(value, Mapping):
        return _escaped_name(value)
    if isinstance(value, list):
        for item in value:
            inner = _escaped_name_in(item)
            if inner is not None:
                return inner
    return None


def _shown(text: str) -> str:
    shown = printable(text)
    return repr(shown if len(shown) <= _SHOWN else shown[: _SHOWN - 1] + "…")
