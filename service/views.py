"""What `flowctl` shows of runs and replies, as text and as JSON; shared helpers.

Pure functions of records (no I/O, no clock: `now` is an argument); `console` draws the
tables and colours. The JSON forms are plain dicts for `json.dumps(..., default=str)`.
Flows and schedules are drawn by `flow_views`, dead letters by `letter_views`.
"""

import dataclasses
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Final

from contracts import Reply
from service import console
from service.adapters.mongo.queries import RunDetail
from service.engine.records import Event, RunRecord, StepRecord

RUN_COLUMNS: Final = ("RUN ID", "FLOW", "STATUS", "STARTED", "DURATION", "TRIGGER")
SHORT: Final = 48
"""Width of an error or an output in a table cell."""


def dumps(value: object) -> str:
    """Indented JSON; instants in ISO 8601, other non-JSON values as text."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=_default)


def _default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, frozenset | set):
        return sorted(str(item) for item in value)
    return str(value)


def record_json(record: object) -> dict[str, Any]:
    """A record dataclass as a dict (for `dumps`)."""
    if not dataclasses.is_dataclass(record) or isinstance(record, type):
        raise TypeError(f"not a record: {type(record).__name__}")
    return dataclasses.asdict(record)


# -- runs ------------------------------------------------------------------------


def runs_text(
    runs: Sequence[RunRecord], total: int, *, skip: int, now: datetime
) -> str:
    if not runs:
        return f"no runs match ({total} in all)" if total else "no runs match"
    rows = [
        [
            run.run_id,
            run.flow_name,
            run.status,
            console.instant(run.started_at),
            console.elapsed(run.started_at, run.completed_at, now=now),
            run.trigger_key,
            console.shorten(run.job_id, SHORT),
        ]
        for run in runs
    ]
    body = console.table([*RUN_COLUMNS, "JOB ID"], rows, styles={2: console.status})
    shown = f"runs {skip + 1}-{skip + len(runs)} of {total}"
    return f"{body}\n{console.dim(shown)}"


def runs_json(
    runs: Sequence[RunRecord], total: int, *, skip: int, limit: int
) -> dict[str, Any]:
    return {
        "total": total,
        "skip": skip,
        "limit": limit,
        "items": [record_json(run) for run in runs],
    }


def run_text(detail: RunDetail, *, now: datetime, events: int = 0) -> str:
    """The run's header, its steps, attempts of steps tried more than once, events.

    `events` keeps the latest that many events (0: all).
    """
    parts = [_run_header(detail.run, now=now)]
    steps = _steps_table(detail.steps, now=now) if detail.steps else "(none)"
    parts.append(section("Steps", steps))
    parts.extend(
        section(f"Attempts of {step.key}", _attempts_table(step, now=now))
        for step in detail.steps
        if len(step.attempts) > 1
    )
    shown = detail.events[-events:] if events > 0 else detail.events
    title = "Events"
    if len(shown) < len(detail.events):
        title += f" (latest {len(shown)} of {len(detail.events)})"
    parts.append(section(title, _events_table(shown)))
    return "\n\n".join(parts)


def section(title: str, body: str) -> str:
    return f"{console.bold(title)}\n{body}"


def run_json(detail: RunDetail) -> dict[str, Any]:
    return {
        "run": record_json(detail.run),
        "steps": [record_json(step) for step in detail.steps],
        "events": [record_json(event) for event in detail.events],
    }


def _run_header(run: RunRecord, *, now: datetime) -> str:
    pairs = [
        ("run", console.bold(run.run_id)),
        ("flow", f"{run.flow_name} ({run.flow_id})"),
        ("status", console.status(run.status)),
        ("trigger", run.trigger_key),
        ("job id", run.job_id),
        ("idempotency", run.idempotency_key or ""),
        ("started", console.instant(run.started_at)),
        ("completed", console.instant(run.completed_at)),
        ("duration", console.elapsed(run.started_at, run.completed_at, now=now)),
    ]
    if run.deadline_at is not None:
        pairs.append(("deadline", console.instant(run.deadline_at)))
    if run.timed_out_at is not None:
        pairs.append(("timed out", console.instant(run.timed_out_at)))
    if run.cancel_requested:
        pairs.append(("cancelled", run.cancel_reason or "yes"))
    if run.source_run_id is not None:
        pairs.append(("source run", run.source_run_id))
    return console.fields(pairs)


def _steps_table(steps: Iterable[StepRecord], *, now: datetime) -> str:
    rows = [
        [
            step.key,
            step.type,
            step.status,
            str(step.attempt),
            console.elapsed(step.started_at, step.completed_at, now=now),
            console.shorten(step.error, SHORT),
            ""
            if step.output is None
            else console.shorten(_compact(step.output), SHORT),
        ]
        for step in steps
    ]
    headers = ["KEY", "TYPE", "STATUS", "ATTEMPTS", "DURATION", "ERROR", "OUTPUT"]
    return console.table(headers, rows, styles={2: console.status})


def _attempts_table(step: StepRecord, *, now: datetime) -> str:
    rows = [
        [
            str(attempt.number),
            attempt.job_id,
            attempt.status,
            console.instant(attempt.started_at),
            console.elapsed(attempt.started_at, attempt.completed_at, now=now),
            console.shorten(attempt.error, SHORT),
        ]
        for attempt in step.attempts
    ]
    headers = ["#", "JOB ID", "STATUS", "STARTED", "DURATION", "ERROR"]
    return console.table(headers, rows, styles={2: console.status})


def _events_table(events: Sequence[Event]) -> str:
    if not events:
        return "(none)"
    rows = [
        [
            str(event.seq),
            console.clock_time(event.at),
            event.type,
            "" if event.step_key == "__run" else event.step_key,
            console.shorten(event.message, 80),
        ]
        for event in events
    ]
    return console.table(["SEQ", "TIME (UTC)", "TYPE", "STEP", "MESSAGE"], rows)


def _compact(value: object) -> str:
    return console.compact_json(value)


# -- replies ---------------------------------------------------------------------


def reply_text(reply: Reply) -> str:
    pairs = [("status", console.status(reply.status)), ("message", reply.message)]
    if reply.run_id:
        pairs.append(("run id", reply.run_id))
    if reply.step_key:
        pairs.append(("step", reply.step_key))
    pairs.extend(
        (name.replace("_", " "), _value(value)) for name, value in reply.data.items()
    )
    return console.fields(pairs)


def _value(value: object) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else _compact(value)
