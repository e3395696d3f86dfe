"""A delivery's application headers as text: trigger headers and the idempotency key.

The idempotency key is used whatever its type or refused, never ignored.

Which headers a run keeps is the engine's rule (`service.engine.headers`); this module
only turns AMQP field values into text.
"""

import math
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Final

from aio_pika.abc import HeadersType

from contracts import ContractError
from service.adapters.amqp.lenient import escaped, printable

IDEMPOTENCY_HEADERS: Final = ("x-idempotency-key", "idempotency-key")
"""Headers read as the idempotency key of a trigger (any case), in this order."""
_EXACT_FLOAT: Final = 2**53
"""Past this, a float no longer holds every integer: its text is not an integer's."""


def text_of(value: object) -> str | None:
    """A header value as text; None for a value that has none (void, table, array).

    Strings as they are, numbers as written in JSON (`42`, `2.5`; a float with no
    fraction as an integer), booleans `true`/`false`, instants in ISO 8601, bytes
    decoded as UTF-8 with backslash escapes.
    """
    match value:
        case str():
            return printable(value)
        case bytes() | bytearray():
            return bytes(value).decode("utf-8", "backslashreplace")
        case bool():
            return "true" if value else "false"
        case int():
            return str(value)
        case float():
            return _float_text(value)
        case Decimal():
            return str(value)
        case datetime():
            return value.isoformat()
        case _:
            return None


def texts(headers: HeadersType | None) -> dict[str, str]:
    """Every header that has text, names as written, in order."""
    found: dict[str, str] = {}
    for name, value in (headers or {}).items():
        text = text_of(value)
        if text is not None:
            found[name] = text
    return found


def idempotency_key(headers: HeadersType | None) -> str | None:
    """The value of the first idempotency header present, as text; None without one.

    Numbers count as their text (`42`, `12.50`); any other type is refused.

    Raises:
        ContractError: `bad_header`: a header that is not text or a number, text
            that is not UTF-8, or blank.
    """
    table: Mapping[str, object] = headers or {}
    for wanted in IDEMPOTENCY_HEADERS:
        for name, value in table.items():
            if name.lower() == wanted:
                return _key(name, value)
    return None


def _key(name: str, value: object) -> str:
    shown = printable(name)
    if isinstance(value, str) and not escaped(value):
        if not value.strip():
            raise ContractError("bad_header", f"the {shown} header is blank")
        return value
    if isinstance(value, Decimal) and value.is_finite():
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return _float_text(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ContractError(
        "bad_header",
        f"the {shown} header must be a string or a number, not {_type_name(value)}",
    )


def _float_text(value: float) -> str:
    if value.is_integer() and abs(value) < _EXACT_FLOAT:
        return str(int(value))
    return repr(value)


def _type_name(value: object) -> str:
    match value:
        case None:
            return "void (no value)"
        case bool():
            return "a boolean"
        case str():
            return "text that is not UTF-8"
        case bytes() | bytearray():
            return "bytes"
        case Mapping():
            return "a table"
        case list() | tuple():
            return "an array"
        case float() | Decimal():
            return "a number that is not finite"
        case _:
            return type(value).__name__
