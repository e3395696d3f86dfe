"""The wire contract: KINDS (AMQP `type` -> model), the `Inbound` union, and `parse`.

`parse` is the one way bytes become a message; it raises ContractError and nothing else.
"""

import json
import re
from collections.abc import Mapping
from typing import Final, Literal, TypeAlias

import orjson
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from contracts.messages import (
    CancelRunMessage,
    DisableFlowMessage,
    EnableFlowMessage,
    PauseScheduleMessage,
    Reply,
    RerunMessage,
    ResumeScheduleMessage,
    RetryStepMessage,
    RunStepMessage,
    SetCronMessage,
    SignalMessage,
    TriggerMessage,
    TriggerScheduleNowMessage,
)

__all__ = [
    "CONTROL_KINDS",
    "KINDS",
    "MAX_BODY_BYTES",
    "ContractError",
    "Inbound",
    "Reply",
    "parse",
]

Inbound: TypeAlias = (
    TriggerMessage
    | RunStepMessage
    | RetryStepMessage
    | CancelRunMessage
    | SignalMessage
    | RerunMessage
    | EnableFlowMessage
    | DisableFlowMessage
    | PauseScheduleMessage
    | ResumeScheduleMessage
    | TriggerScheduleNowMessage
    | SetCronMessage
)

KINDS: Final[Mapping[str, type[Inbound]]] = {
    "trigger": TriggerMessage,
    "run_step": RunStepMessage,
    "retry_step": RetryStepMessage,
    "cancel_run": CancelRunMessage,
    "signal": SignalMessage,
    "rerun": RerunMessage,
    "enable_flow": EnableFlowMessage,
    "disable_flow": DisableFlowMessage,
    "pause_schedule": PauseScheduleMessage,
    "resume_schedule": ResumeScheduleMessage,
    "trigger_schedule_now": TriggerScheduleNowMessage,
    "set_cron": SetCronMessage,
}

CONTROL_KINDS: Final = tuple(k for k in KINDS if k not in {"trigger", "run_step"})
"""The kinds routed by `control.<kind>`."""

MAX_BODY_BYTES: Final = 1024 * 1024

ContractErrorReason: TypeAlias = Literal[
    "not_json",
    "schema_invalid",
    "unknown_kind",
    "oversize",
    "no_message_id",
    "bad_properties",
    "bad_header",
]

_MAX_DETAIL = 300
_MAX_ERRORS = 3
_MAX_LOCATION = 60
_LONG_NUMBER = re.compile(rb"[0-9]{19}")
"""19 digits in a row: maybe an integer past 64 bits, which orjson reads as a float."""


class ContractError(Exception):
    """A message that breaks the wire contract; `reason` goes in the dead-letter header.

    `no_message_id`, `bad_properties` (text the driver could not decode as UTF-8) and
    `bad_header` (a header the service reads has a value it cannot use) are raised
    by the consumer, which reads the AMQP properties and headers; `parse` raises the
    other reasons. `detail` is short and never holds the payload.
    """

    def __init__(self, reason: ContractErrorReason, detail: str) -> None:
        self.reason: ContractErrorReason = reason
        self.detail = _truncate(detail, _MAX_DETAIL)
        super().__init__(f"{reason}: {self.detail}")


def parse(kind: str | None, body: bytes, *, max_bytes: int = MAX_BODY_BYTES) -> Inbound:
    """The message of type `kind` in `body`, a UTF-8 JSON object.

    Checks the size, then the kind, then the JSON, then the schema.

    Raises:
        ContractError: for any body that is not a valid message of that kind, and
            never any other exception.
    """
    if len(body) > max_bytes:
        raise ContractError(
            "oversize", f"body is {len(body)} bytes; the limit is {max_bytes}"
        )
    if kind is None or kind not in KINDS:
        shown = "no type property" if kind is None else f"type {kind[:60]!r}"
        raise ContractError("unknown_kind", f"unknown message kind: {shown}")
    model = KINDS[kind]
    try:
        return model.model_validate(_json(body))
    except ValidationError as exc:
        raise ContractError("schema_invalid", _summary(kind, exc)) from None
    except RecursionError:
        raise ContractError("schema_invalid", "body is nested too deeply") from None


def _json(body: bytes) -> object:
    """The JSON value in `body`, with every integer exact.

    orjson decides what is JSON (and is fast); it reads an integer outside
    [-2**63, 2**64) as a float, so a body that may hold one is read again by the
    standard library, which keeps integers of any size.

    Raises:
        ContractError: `not_json`.
        RecursionError: the standard library's reading is nested too deeply.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson's message names a position, never the content.
        raise ContractError("not_json", f"body is not UTF-8 JSON: {exc}") from None
    if _LONG_NUMBER.search(body) is None:
        return data
    # orjson accepted it: valid UTF-8 JSON, no NaN, no lone surrogate.
    return json.loads(body)


def _summary(kind: str, exc: ValidationError) -> str:
    """Where and why `exc` failed, without the input values."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    parts = [_describe(error) for error in errors[:_MAX_ERRORS]]
    if len(errors) > _MAX_ERRORS:
        parts.append(f"and {len(errors) - _MAX_ERRORS} more")
    return f"invalid {kind}: " + "; ".join(parts)


def _describe(error: ErrorDetails) -> str:
    location = ".".join(str(part) for part in error["loc"]) or "body"
    return f"{_truncate(location, _MAX_LOCATION)}: {error['msg']}"


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
