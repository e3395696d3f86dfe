"""A run's events as users read them: stored events merged with those of its attempts.

Executing a step writes no event of its own: `step.started`, `step.completed` and
`step.failed` are read off the attempt entries that `claim` and `finish` write on the
step row anyway, which saves two writes per step; `run.started` and the current
`run.completed` are read off the run record. Everything else (step.skipped,
step.pending, signals, cancels, and the earlier completions of a run that a retry
reopened) is stored by the event store. `timeline` merges them by time and numbers the
result 1..n.
"""

import calendar
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime

from service.engine.model import ITERATION, RunStatus, StepStatus
from service.engine.records import Attempt, Event, NewEvent, RunRecord, StepRecord

MAX_MESSAGE = 1000
"""Characters of an error kept in a `step.failed` event's message."""

_FIRST, _MIDDLE, _LAST = 0, 1, 2


def attempt_events(row: StepRecord) -> list[Event]:
    """The started and completed/failed events of the attempts the row keeps."""
    events: list[Event] = []
    for attempt in row.attempts:
        events.append(
            Event(
                row.run_id,
                0,
                "step.started",
                attempt.started_at,
                row.key,
                f"Step '{row.key}' started.",
            )
        )
        ended = _ended(row, attempt)
        if ended is not None:
            events.append(ended)
    return events


def _ended(row: StepRecord, attempt: Attempt) -> Event | None:
    if attempt.completed_at is None or not attempt.status.is_final:
        return None  # running, or parked (step.pending is stored, with its delay)
    if attempt.status is StepStatus.FAILED:
        kind, message = "step.failed", (attempt.error or "")[:MAX_MESSAGE]
    else:
        kind = "step.completed"
        message = f"Step '{row.key}' completed with status {attempt.status}."
    return Event(row.run_id, 0, kind, attempt.completed_at, row.key, message)


def run_started(run: RunRecord) -> Event:
    return Event(
        run.run_id,
        0,
        "run.started",
        run.started_at,
        "__run",
        f"Flow run started via trigger '{run.trigger_key}'.",
    )


def completed_message(status: RunStatus) -> str:
    """The text of a `run.completed` event, read off the run or stored by a retry."""
    return f"Run completed with status {status}."


def stored_completion(run: RunRecord) -> NewEvent | None:
    """The stored form of the run's completion, kept when a retry reopens the run.

    Its key is the completion instant to the millisecond (what MongoDB keeps), so the
    timeline shows it once, stored or read off the record.
    """
    if run.completed_at is None:
        return None
    at = run.completed_at
    millis = calendar.timegm(at.utctimetuple()) * 1000 + at.microsecond // 1000
    return NewEvent(
        "run.completed",
        at,
        message=completed_message(run.status),
        key=f"run.completed:{millis}",
    )


def run_completed(run: RunRecord) -> Event | None:
    if run.completed_at is None or not run.status.is_final:
        return None
    return Event(
        run.run_id,
        0,
        "run.completed",
        run.completed_at,
        "__run",
        completed_message(run.status),
    )


def timeline(
    run: RunRecord, stored: Sequence[Event], rows: Iterable[StepRecord]
) -> list[Event]:
    """The run's start, stored and attempt events in time order, numbered from 1.

    At equal instants run.started comes first and run.completed last; otherwise stored
    events keep their order and come before attempt events.
    """
    derived = [e for row in rows if row.type != ITERATION for e in attempt_events(row)]
    derived.append(run_started(run))
    ended = run_completed(run)
    if ended is not None and not any(  # stored by a retry cut short before reopening
        (e.type, e.at, e.message) == (ended.type, ended.at, ended.message)
        for e in stored
    ):
        derived.append(ended)
    merged = sorted([*stored, *derived], key=_order)
    return [replace(event, seq=n) for n, event in enumerate(merged, start=1)]


def _order(event: Event) -> tuple[datetime, int]:
    if event.type == "run.started":
        return event.at, _FIRST
    if event.type == "run.completed":
        return event.at, _LAST
    return event.at, _MIDDLE
