"""The wire models: one pydantic model per message kind, and the reply to a request.

Inbound models ignore unknown fields and coerce nothing; a breaking change gets a
new kind.
"""

import re
from typing import Annotated, Final, Literal, TypeAlias

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    WithJsonSchema,
)

Json: TypeAlias = Annotated[JsonValue, WithJsonSchema({})]
"""Any JSON value: null, a boolean, a number, a string, an array or an object."""

Id = Annotated[str, StringConstraints(min_length=1, max_length=200)]
"""A run id, a flow id, or a flow name."""

Key = Annotated[str, StringConstraints(min_length=1, max_length=200)]
"""A step key, a trigger key, an idempotency key or a signal name."""

Reason = Annotated[str, StringConstraints(min_length=1, max_length=1000)]

Cron = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"\S")]
"""A cron expression; the service checks its syntax, the contract only its shape."""

_UUID_PATTERN = r"^[0-9A-Fa-f]{8}-([0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}$"
_UUID: Final = re.compile(_UUID_PATTERN)


def canonical_run_id(text: str) -> str:
    """A run id as stored: a UUID in lower case, any other reference as it is.

    UUIDs are case-insensitive: `A1B2...` and `a1b2...` name one run.
    """
    return text.lower() if _UUID.match(text) else text


RunUuid = Annotated[
    str,
    StringConstraints(pattern=_UUID_PATTERN),
    # One spelling per run: a pre-assigned id is stored and compared in lower case.
    AfterValidator(str.lower),
]

RunRef = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200),
    AfterValidator(canonical_run_id),
]
"""A run id, found whatever the case of its letters."""


def _whole_number(value: object) -> object:
    # JSON Schema's "integer" is any number with a zero fraction (1.0 included), and
    # a JSON tool may write one so: take it as the integer it is.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Count = Annotated[int, BeforeValidator(_whole_number)]
"""An integer; `1.0` is the integer 1, as in JSON Schema."""

REPLY_KIND = "reply"
"""The AMQP `type` of a reply published to a request's `reply_to`."""

ReplyStatus: TypeAlias = Literal[
    "accepted",
    "duplicate",
    "disabled",
    "delivered",
    "refused",
    "not_found",
    "invalid",
    "error",
]


class _InboundModel(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        frozen=True,
        str_strip_whitespace=False,
        strict=True,
        use_attribute_docstrings=True,
    )


class TriggerMessage(_InboundModel):
    """Start a run of a flow (`trigger`)."""

    flow: Id
    """The flow's id or name."""
    trigger_key: Key = "manual"
    """The flow's trigger that fires."""
    body: Json = None
    """The trigger body, read by `@triggerBody()` expressions."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Trigger headers, read by `@triggerHeaders()` expressions."""
    idempotency_key: Key | None = None
    """Dedupe key; else the `x-idempotency-key` header; else the AMQP message_id."""
    run_id: RunUuid | None = None
    """A pre-assigned run id (a UUID); else the service assigns one."""


class RunStepMessage(_InboundModel):
    """Execute one attempt of a step (`run_step`); published by the service itself."""

    flow_id: Id
    run_id: RunRef
    step_key: Key
    attempt: Count = Field(ge=1)
    """The attempt number, from 1."""


class RetryStepMessage(_InboundModel):
    """Retry a Failed step of a run (`retry_step`)."""

    run_id: RunRef
    step_key: Key


class CancelRunMessage(_InboundModel):
    """Cancel a run (`cancel_run`)."""

    run_id: RunRef
    reason: Reason | None = None
    """Why, as recorded on the run."""


class SignalMessage(_InboundModel):
    """Deliver a named signal to a run waiting for it (`signal`)."""

    run_id: RunRef
    signal: Key
    """The signal's name, matched case-insensitively."""
    payload: Json = None
    """The signal's payload, handed to the waiting step."""


class RerunMessage(_InboundModel):
    """Start a new run with the trigger of an earlier one (`rerun`)."""

    run_id: RunRef
    """The source run."""


class EnableFlowMessage(_InboundModel):
    """Enable a flow (`enable_flow`)."""

    flow: Id
    """The flow's id or name."""


class DisableFlowMessage(_InboundModel):
    """Disable a flow: its triggers start no run (`disable_flow`)."""

    flow: Id
    """The flow's id or name."""


class PauseScheduleMessage(_InboundModel):
    """Pause a cron trigger in every worker (`pause_schedule`)."""

    flow: Id
    """The flow's id or name."""
    trigger_key: Key
    """The cron trigger."""


class ResumeScheduleMessage(_InboundModel):
    """Resume a paused cron trigger (`resume_schedule`)."""

    flow: Id
    """The flow's id or name."""
    trigger_key: Key
    """The cron trigger."""


class TriggerScheduleNowMessage(_InboundModel):
    """Fire a cron trigger once, now, paused or not (`trigger_schedule_now`)."""

    flow: Id
    """The flow's id or name."""
    trigger_key: Key
    """The cron trigger."""


class SetCronMessage(_InboundModel):
    """Override the cron of a cron trigger, or clear the override (`set_cron`)."""

    flow: Id
    """The flow's id or name."""
    trigger_key: Key
    """The cron trigger."""
    # Required though nullable: a misspelt field must not silently clear the override.
    cron: Cron | None
    """The new cron expression; null clears the override."""


class Reply(BaseModel):
    """The answer to a request: published to its `reply_to`, with its `correlation_id`.

    Its AMQP `type` is REPLY_KIND.
    """

    # Read by other services too: they ignore what they don't know, like us.
    model_config = ConfigDict(
        extra="ignore",
        frozen=True,
        str_strip_whitespace=False,
        strict=True,
        use_attribute_docstrings=True,
    )

    ok: bool
    """Whether the request had its effect (or had had it already)."""
    kind: str
    """The kind of the request answered."""
    status: ReplyStatus
    message: str
    """A sentence for a human."""
    run_id: str | None = None
    """The run concerned: the new run, or the first one for a duplicate."""
    step_key: str | None = None
    """The step concerned, if any."""
    data: dict[str, Json] = Field(default_factory=dict)
    """Further facts, per kind; empty for every kind today."""
