"""The manifest: a flow as camelCase JSON (SPEC §1.2 plus ours: id, name, retry...).

Ours: the id, name and version, retry policies, run and step timeouts, the
concurrency key and the outputs.

`to_manifest` writes it, deterministically; `from_manifest` reads it, with FO's lenient
rules for runAfter, and raises ValueError with a JSON path for a shape it cannot read.
Unknown properties are ignored, so an older worker reads a newer worker's manifest.
"""

import math
from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta
from typing import TypeGuard

from service.engine.model import (
    Concurrency,
    Flow,
    FlowId,
    Json,
    RetryPolicy,
    RunAfter,
    Step,
    StepStatus,
    Trigger,
    TriggerType,
)

STATUS_NUMBERS: Mapping[int, StepStatus] = {
    0: StepStatus.PENDING,
    1: StepStatus.RUNNING,
    2: StepStatus.SUCCEEDED,
    3: StepStatus.FAILED,
    4: StepStatus.SKIPPED,
}
"""FO's StepStatus enum values, accepted in runAfter statuses."""
_STATUS_ORDER = {status: i for i, status in enumerate(StepStatus)}
_STATUS_NAMES = {status.value.lower(): status for status in StepStatus}
_TRIGGER_TYPES = {t.value.lower(): t for t in TriggerType}


def to_manifest(flow: Flow) -> dict[str, Json]:
    """The manifest of `flow`: JSON-serialisable, the same dict for the same flow."""
    data: dict[str, Json] = {"id": flow.id, "name": flow.name, "version": flow.version}
    if flow.run_timeout is not None:
        data["runTimeoutSeconds"] = _seconds(flow.run_timeout)
    if flow.step_timeout is not None:
        data["stepTimeoutSeconds"] = _seconds(flow.step_timeout)
    if flow.concurrency is not None:
        data["concurrency"] = {
            "key": flow.concurrency.key,
            "limit": flow.concurrency.limit,
        }
    data["triggers"] = {key: _trigger(t) for key, t in flow.triggers.items()}
    data["steps"] = _steps(flow.steps)
    if flow.outputs:
        data["outputs"] = {name: _copy(value) for name, value in flow.outputs.items()}
    return data


def _trigger(trigger: Trigger) -> Json:
    data: dict[str, Json] = {"type": trigger.type.value}
    if trigger.cron is not None:
        data["cronExpression"] = trigger.cron
    return data


def _steps(steps: Mapping[str, Step]) -> dict[str, Json]:
    return {key: _step(step) for key, step in steps.items()}


def _step(step: Step) -> Json:
    data: dict[str, Json] = {
        "type": step.type,
        "inputs": {name: _copy(value) for name, value in step.inputs.items()},
        "runAfter": {dep: _condition(c) for dep, c in step.conditions.items()},
    }
    if step.retry is not None:
        data["retry"] = {
            "maxAttempts": step.retry.max_attempts,
            "backoffSeconds": _seconds(step.retry.backoff),
            "factor": float(step.retry.factor),
            "capSeconds": _seconds(step.retry.cap),
        }
    if step.timeout is not None:
        data["timeoutSeconds"] = _seconds(step.timeout)
    # A plain step keeps loop fields only if set, so any flow survives a round trip.
    if step.is_loop or step.for_each is not None:
        data["forEach"] = _copy(step.for_each)
    if step.is_loop or step.concurrency != 1:
        data["concurrencyLimit"] = step.concurrency
    if step.is_loop or step.steps:
        data["steps"] = _steps(step.steps)
    return data


def _condition(condition: RunAfter) -> Json:
    data: dict[str, Json] = {}
    if condition.statuses:
        ordered = sorted(condition.statuses, key=_STATUS_ORDER.__getitem__)
        data["statuses"] = [status.value for status in ordered]
    if condition.when:
        data["when"] = condition.when
    return data


def _seconds(duration: timedelta) -> int | float:
    # Whole seconds stay integers; otherwise a float, exact to the microsecond.
    if duration.microseconds == 0:
        return duration.days * 86_400 + duration.seconds
    return duration.total_seconds()


def _copy(value: Json) -> Json:
    """A deep copy, so the manifest shares no mutable value with the flow."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def from_manifest(data: Mapping[str, Json]) -> Flow:
    """The flow a manifest describes; a ValueError names the path of a bad value."""
    root = _object(data, "$")
    flow = Flow(
        id=FlowId(_string(root, "id", "$")),
        name=_string(root, "name", "$"),
        steps=_read_steps(root.get("steps"), "$.steps"),
        version=_string(root, "version", "$", default="1"),
        run_timeout=_duration(root.get("runTimeoutSeconds"), "$.runTimeoutSeconds"),
        step_timeout=_duration(root.get("stepTimeoutSeconds"), "$.stepTimeoutSeconds"),
        concurrency=_read_concurrency(root.get("concurrency"), "$.concurrency"),
        outputs=_read_inputs(root.get("outputs"), "$.outputs"),
    )
    triggers = root.get("triggers")
    if triggers is None:
        return flow  # the Flow default: one manual trigger
    path = "$.triggers"
    return replace(
        flow,
        triggers={
            key: _read_trigger(value, f"{path}{_at(key)}")
            for key, value in _object(triggers, path).items()
        },
    )


def _read_trigger(value: Json, path: str) -> Trigger:
    data = _object(value, path)
    name = _string(data, "type", path)
    kind = _TRIGGER_TYPES.get(name.lower())
    if kind is None:
        raise ValueError(f"{path}.type: unknown trigger type '{name}' (Manual or Cron)")
    expression = data.get("cronExpression")
    inputs = data.get("inputs")
    if expression is None and isinstance(inputs, Mapping):
        expression = inputs.get("cronExpression")  # FO's shape keeps it in inputs
    if expression is not None and not isinstance(expression, str):
        raise _malformed(f"{path}.cronExpression", "a string", expression)
    return Trigger(kind, expression)


def _read_steps(value: Json, path: str) -> dict[str, Step]:
    if value is None:
        raise _malformed(path, "an object of steps", value, missing=True)
    steps = _object(value, path)
    return {key: _read_step(item, f"{path}{_at(key)}") for key, item in steps.items()}


def _read_step(value: Json, path: str) -> Step:
    data = _object(value, path)
    inputs = data.get("inputs")
    run_after = data.get("runAfter")
    body = data.get("steps")
    return Step(
        type=_string(data, "type", path),
        inputs=_read_inputs(inputs, f"{path}.inputs"),
        run_after=_read_run_after(run_after, f"{path}.runAfter"),
        retry=_read_retry(data.get("retry"), f"{path}.retry"),
        for_each=_copy(data.get("forEach")),
        concurrency=_integer(data, "concurrencyLimit", path, default=1),
        steps=_read_steps(body, f"{path}.steps") if body is not None else {},
        timeout=_duration(data.get("timeoutSeconds"), f"{path}.timeoutSeconds"),
    )


def _read_inputs(value: Json, path: str) -> dict[str, Json]:
    if value is None:
        return {}
    return {name: _copy(item) for name, item in _object(value, path).items()}


def _read_run_after(value: Json, path: str) -> dict[str, RunAfter]:
    if value is None:
        return {}
    conditions: dict[str, RunAfter] = {}
    for dep, entry in _object(value, path).items():
        if entry is not None:  # FO drops a null condition
            conditions[dep] = _read_condition(entry, f"{path}{_at(dep)}")
    return conditions


def _read_condition(value: Json, path: str) -> RunAfter:
    if isinstance(value, list):  # the legacy form: statuses only
        return RunAfter(_read_statuses(value, path))
    data = _object(value, path, want="an array of statuses or an object")
    fields: dict[str, Json] = {}
    for name, item in data.items():
        lowered = name.lower()
        if lowered in fields:
            raise ValueError(f"{path}: '{name}' given twice (names ignore case)")
        fields[lowered] = item
    statuses = fields.get("statuses")
    when = fields.get("when")
    if when is not None and not isinstance(when, str):
        raise _malformed(f"{path}.when", "a string", when)
    if statuses is None:
        return RunAfter(frozenset(), when or None)
    return RunAfter(_read_statuses(statuses, f"{path}.statuses"), when or None)


def _read_statuses(value: Json, path: str) -> frozenset[StepStatus]:
    if not isinstance(value, list):
        raise _malformed(path, "an array of statuses", value)
    return frozenset(_read_status(item, f"{path}[{i}]") for i, item in enumerate(value))


def _read_status(value: Json, path: str) -> StepStatus:
    status: StepStatus | None = None
    if isinstance(value, str):
        status = _STATUS_NAMES.get(value.lower())
    elif isinstance(value, int) and not isinstance(value, bool):
        status = STATUS_NUMBERS.get(value)
    if status is None:
        raise ValueError(
            f"{path}: expected a step status name or a number 0-4, got {value!r}"
        )
    return status


def _read_retry(value: Json, path: str) -> RetryPolicy | None:
    if value is None:
        return None
    data = _object(value, path)
    default = RetryPolicy()
    backoff = _duration(data.get("backoffSeconds"), f"{path}.backoffSeconds")
    cap = _duration(data.get("capSeconds"), f"{path}.capSeconds")
    factor = data.get("factor", default.factor)
    if not _is_number(factor):
        raise _malformed(f"{path}.factor", "a number", factor)
    return RetryPolicy(
        max_attempts=_integer(data, "maxAttempts", path, default=default.max_attempts),
        backoff=default.backoff if backoff is None else backoff,
        factor=float(factor),
        cap=default.cap if cap is None else cap,
    )


def _read_concurrency(value: Json, path: str) -> Concurrency | None:
    if value is None:
        return None
    data = _object(value, path)
    return Concurrency(
        key=_string(data, "key", path), limit=_integer(data, "limit", path, default=1)
    )


def _duration(value: Json, path: str) -> timedelta | None:
    if value is None:
        return None
    if not _is_number(value):
        raise _malformed(path, "a number of seconds", value)
    try:
        return timedelta(seconds=value)
    except OverflowError as exc:
        raise ValueError(f"{path}: {value} seconds is out of range") from exc


def _is_number(value: object) -> TypeGuard[int | float]:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int)


def _object(value: object, path: str, *, want: str = "an object") -> Mapping[str, Json]:
    if not isinstance(value, Mapping):
        raise _malformed(path, want, value)
    return value


def _string(
    data: Mapping[str, Json], name: str, path: str, *, default: str | None = None
) -> str:
    value = data.get(name, default)
    if not isinstance(value, str):
        raise _malformed(f"{path}.{name}", "a string", value, missing=name not in data)
    return value


def _integer(data: Mapping[str, Json], name: str, path: str, *, default: int) -> int:
    value = data.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _malformed(f"{path}.{name}", "an integer", value)
    return value


def _malformed(
    path: str, want: str, value: object, *, missing: bool = False
) -> ValueError:
    got = "nothing" if missing else _kind(value)
    return ValueError(f"{path}: expected {want}, got {got}")


def _at(key: str) -> str:
    """A map key in a path: `$.steps['ship']`, readable even when the key has a dot."""
    return f"[{key!r}]"


def _kind(value: object) -> str:
    match value:
        case None:
            return "null"
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case str():
            return "a string"
        case list():
            return "an array"
        case Mapping():
            return "an object"
        case _:
            return type(value).__name__
