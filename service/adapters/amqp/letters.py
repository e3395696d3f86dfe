"""Dead letters and other copies of received messages, built so they can be published.

pamqp decodes more than it encodes: a long string that is not UTF-8 comes back as
bytes, a double as a float it writes back in single precision, and text `lenient`
decoded holds lone surrogates. And a copy with more headers than its original may no
longer fit in one frame (`frame_max`), which makes RabbitMQ close the connection. So a
copy's headers and properties are rewritten as valid text where needed, and its largest
original headers are dropped until its content header fits; headers note either change.
"""

import hashlib
import struct
from collections.abc import Mapping
from typing import Final

from aio_pika import DeliveryMode, Message
from aio_pika.abc import AbstractIncomingMessage, HeadersType
from pamqp import encode
from pamqp.common import FieldValue
from pamqp.constants import FRAME_MAX_SIZE
from pamqp.header import ContentHeader

from service.adapters.amqp.lenient import escaped, printable

REWRITTEN: Final = "x-dead-letter-rewritten"
"""Names of the headers whose name or value was rewritten as text to be published."""
TRIMMED: Final = "x-dead-letter-trimmed"
"""How many of the original headers were dropped to fit the frame, and which."""
NOTES: Final = (REWRITTEN, TRIMMED)
FRAME_MAX: Final = FRAME_MAX_SIZE
"""RabbitMQ's default `frame_max`, for a caller that does not know the negotiated."""
_FRAME_OVERHEAD: Final = 8
"""Frame type, channel, size and the end octet around a frame's payload."""
_MAX_NOTE: Final = 300
"""Bytes of a note's text."""
_NOTE_ROOM: Final = 1 + len(TRIMMED) + 1 + 4 + _MAX_NOTE
_MAX_NAME: Final = 128
"""Bytes of a field name; pamqp cuts longer ones when it encodes them."""
_MAX_SHORT: Final = 255


def body_id(body: bytes) -> str:
    """The id of a message that has no message_id: `body:` and a hash of its body.

    The same for every delivery of it: it names such a dead letter, and is the job id
    of such a message (a control message sent by a plain AMQP tool, say).
    """
    return "body:" + hashlib.sha256(body).hexdigest()[:16]


class LetterError(Exception):
    """A copy whose properties and facts alone do not fit in one frame."""


def dead_letter(
    message: AbstractIncomingMessage,
    reason: str,
    detail: str,
    *,
    frame_max: int = FRAME_MAX,
) -> Message:
    """The original body and properties, and the reason in headers.

    Raises:
        LetterError: the letter cannot fit in a frame of `frame_max` bytes.
    """
    facts = {
        "x-dead-letter-reason": reason,
        "x-dead-letter-detail": detail,
        "x-original-type": message.type,
        "x-original-routing-key": message.routing_key,
        "x-original-exchange": message.exchange,
        "x-original-message-id": message.message_id,
    }
    # Notes forged by the sender would describe changes we did not make.
    headers = {k: v for k, v in (message.headers or {}).items() if k not in NOTES}
    return copy_of(
        message,
        headers=headers,
        facts={name: printable(v) for name, v in facts.items() if v is not None},
        frame_max=frame_max,
    )


def copy_of(
    message: AbstractIncomingMessage,
    *,
    headers: HeadersType,
    facts: Mapping[str, str] | None = None,
    frame_max: int = FRAME_MAX,
) -> Message:
    """A persistent copy of a received message with `headers`, and `facts` over them.

    A message without a message_id gets its `body_id` (aiormq would give the copy a
    random one).
    Header values pamqp cannot encode are rewritten as text (noted in REWRITTEN); if
    the content header would not fit in a frame of `frame_max` bytes, the largest of
    `headers` are dropped (noted in TRIMMED); `facts` are kept whole, and so is the
    body. No expiration (a copy waits for a human) and no user_id (the broker refuses
    one that is not the publishing connection's user).

    Raises:
        LetterError: the properties and `facts` alone do not fit.
    """
    table, rewritten = encodable_table(headers)
    fixed: dict[str, FieldValue] = dict(facts or {})
    for name in fixed:
        table.pop(name, None)
    if rewritten:
        fixed[REWRITTEN] = _note(", ".join(rewritten))
    letter = _copy(message, {**table, **fixed})
    excess = frame_size(letter) - frame_max
    if excess <= 0:
        return letter
    kept, dropped = _trim(table, excess + _NOTE_ROOM)
    fixed[TRIMMED] = _note(
        f"{len(dropped)} of {len(table)} headers dropped to fit frame_max "
        f"{frame_max}: {', '.join(dropped)}"
    )
    letter = _copy(message, {**kept, **fixed})
    if frame_size(letter) > frame_max:
        raise LetterError(f"the properties alone exceed frame_max {frame_max}")
    return letter


def frame_size(message: Message) -> int:
    """Bytes of the content header frame that carries `message`'s properties.

    Raises:
        LetterError: a property pamqp cannot encode.
    """
    header = ContentHeader(body_size=message.body_size, properties=message.properties)
    try:
        return _FRAME_OVERHEAD + len(header.marshal())
    except (TypeError, ValueError, OverflowError, struct.error) as exc:
        raise LetterError(f"a property cannot be encoded: {exc}") from exc


def encodable_table(
    table: Mapping[str, FieldValue],
) -> tuple[dict[str, FieldValue], list[str]]:
    """`table` as pamqp can encode it, and the names (as written) of what changed."""
    found: dict[str, FieldValue] = {}
    changed: list[str] = []
    for name, value in table.items():
        written, rewritten = encodable(value)
        key = printable(name)
        if rewritten or key != name:
            changed.append(key)
        found[key] = written
    return found, changed


def encodable(value: FieldValue) -> tuple[FieldValue, bool]:
    """`value` as pamqp can encode it, and whether that took a rewrite as text.

    Bytes (a long string that is not UTF-8) and escaped text become text with
    backslash escapes; numbers and instants out of the wire's range become text.
    """
    if isinstance(value, dict):
        table, changed = encodable_table(value)
        return table, bool(changed)
    if isinstance(value, list):
        items = [encodable(item) for item in value]
        return [item for item, _ in items], any(changed for _, changed in items)
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace"), True
    if isinstance(value, str):
        return (printable(value), True) if escaped(value) else (value, False)
    if _encodes(value):
        return value, False
    return str(value), True


def _encodes(value: FieldValue) -> bool:
    """Whether pamqp encodes this scalar (every float in single precision)."""
    try:
        encode.encode_table_value(value)
    except (TypeError, ValueError, OverflowError, struct.error, ArithmeticError):
        return False
    return True


def _trim(
    table: Mapping[str, FieldValue], need: int
) -> tuple[dict[str, FieldValue], list[str]]:
    """`table` without its largest entries, at least `need` bytes of them; the names."""
    sizes = {name: _entry_size(name, value) for name, value in table.items()}
    dropped: list[str] = []
    for name in sorted(sizes, key=lambda n: (-sizes[n], n)):
        if need <= 0:
            break
        dropped.append(name)
        need -= sizes[name]
    gone = set(dropped)
    return {k: v for k, v in table.items() if k not in gone}, dropped


def _entry_size(name: str, value: FieldValue) -> int:
    # pamqp cuts a long name to 128 bytes, dropping a character split at the end.
    key = name.encode()[:_MAX_NAME].decode("utf-8", "ignore")
    return 1 + len(key.encode()) + len(encode.encode_table_value(value))


def _note(text: str) -> str:
    raw = text.encode()
    if len(raw) <= _MAX_NOTE:
        return text
    return raw[: _MAX_NOTE - 3].decode("utf-8", "ignore") + "…"


def _short(value: str | None) -> str | None:
    """A property as valid text of at most 255 bytes (escapes lengthen text)."""
    if value is None:
        return None
    return printable(value).encode()[:_MAX_SHORT].decode("utf-8", "ignore")


def _copy(message: AbstractIncomingMessage, headers: HeadersType) -> Message:
    return Message(
        message.body,
        headers=headers,
        content_type=_short(message.content_type),
        content_encoding=_short(message.content_encoding),
        delivery_mode=DeliveryMode.PERSISTENT,
        priority=message.priority,
        correlation_id=_short(message.correlation_id),
        reply_to=_short(message.reply_to),
        # aiormq would give a copy without one a random id: give it the stable one.
        message_id=_short(message.message_id) or body_id(message.body),
        timestamp=message.timestamp,
        type=_short(message.type),
        app_id=_short(message.app_id),
    )
