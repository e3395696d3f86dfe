"""Polling steps: call `fetch` until a condition holds or a timeout passes (SPEC 1.6).

The poll state (`pollStartedAtUtc`, `pollAttempt`) travels in the inputs of the next
dispatch, so any replica can take the next attempt.
"""

import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta

from service.engine.model import Json
from service.steps.handlers import (
    Failed,
    Handler,
    Pending,
    StepContext,
    StepResult,
    Succeeded,
)

Fetch = Callable[[StepContext, Mapping[str, Json]], Awaitable[Json]]


def polling(fetch: Fetch) -> Handler:
    """Wrap `fetch` into a handler that polls with the `poll*` inputs of the step."""

    async def poll(ctx: StepContext, inputs: dict[str, Json]) -> StepResult:
        response = await fetch(ctx, inputs)
        return next_poll(inputs, response, now=ctx.now)

    return poll


def next_poll(
    inputs: Mapping[str, Json], response: Json, *, now: datetime
) -> StepResult:
    """One poll's verdict: Succeeded, Failed (timed out, not JSON) or Pending."""
    if inputs.get("pollEnabled") is False:
        return Succeeded(response)
    state = {
        k: v for k, v in inputs.items() if k not in ("pollStartedAtUtc", "pollAttempt")
    }
    path = inputs.get("pollConditionPath")
    if isinstance(path, str) and path and isinstance(response, str):
        try:
            response = json.loads(response)
        except ValueError:
            return Failed(
                "Polling with 'pollConditionPath' requires a JSON response body."
            )
    interval = max(1.0, _number(inputs.get("pollIntervalSeconds"), 10))
    timeout = max(interval, _number(inputs.get("pollTimeoutSeconds"), 120))
    min_attempts = max(1, int(_number(inputs.get("pollMinAttempts"), 1)))
    started_raw = inputs.get("pollStartedAtUtc")
    started = (
        datetime.fromisoformat(started_raw) if isinstance(started_raw, str) else now
    )
    attempt = int(_number(inputs.get("pollAttempt"), 0)) + 1
    if attempt >= min_attempts and matches(
        response, path, inputs.get("pollConditionEquals")
    ):
        return Succeeded(response)
    if now - started >= timedelta(seconds=timeout):
        return Failed(f"Polling timed out after {timeout:g} seconds.")
    state |= {"pollStartedAtUtc": started.isoformat(), "pollAttempt": attempt}
    return Pending(timedelta(seconds=interval), output=response, inputs=state)


def matches(response: Json, path: Json, equals: Json) -> bool:
    """The poll condition on the value at `path`.

    With `equals`, the value equals it (as text, any case); without, the value has data
    (not null, blank, [] or {}; 0 and false are data).
    """
    found, value = _at(response, path if isinstance(path, str) else "")
    if not found:
        return False
    if equals is not None:
        return _text(value).lower() == _text(equals).lower()
    return (
        value is not None
        and value not in ("", [], {})
        and not (isinstance(value, str) and not value.strip())
    )


def _at(value: Json, path: str) -> tuple[bool, Json]:
    for segment in (s for s in path.split(".") if s):
        if isinstance(value, dict) and segment in value:
            value = value[segment]
        elif (
            isinstance(value, list) and segment.isdigit() and int(segment) < len(value)
        ):
            value = value[int(segment)]
        else:
            return False, None
    return True, value


def _text(value: Json) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "True" if value else "False"
    return json.dumps(value)


def _number(value: Json, default: float) -> float:
    if isinstance(value, bool) or value is None:
        return default
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return default
    return default
