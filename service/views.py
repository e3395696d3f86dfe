"""What `flowctl` shows of runs and replies, as text and as JSON; shared helpers.

Pure functions of records (no I/O, no clock: `now` is an argument); `console` draws the
tables and colours. The JSON forms are plain dicts for `json.dumps(..., default=str)`.
Flows and schedules are drawn by `flow_views`, dead letters by `letter_views`.
"""

import dataclasses
import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from service import console
from service.engine.model import StepStatus
from service.engine.records import Event, RunRecord, StepRecord, Waiter
from service.step_rows import NOT_STARTED, StepLine, error_line, step_lines

if TYPE_CHECKING:
    from contracts import Reply
    from service.adapters.mongo.queries import RunDetail

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


def run_text(
    detail: "RunDetail", *, now: datetime, events: int = 0, iterations: bool = False
) -> str:
    """The run's header, steps in DAG order, attempts of retried steps, events.

    `events` keeps the latest that many events (0: all); `iterations` lists every
    ForEach iteration instead of one line per body step.
    """
    parts = [_run_header(detail, now=now)]
    lines = step_lines(detail.flow, detail.steps, detail.waiters, iterations=iterations)
    steps = _steps_table(lines, now=now) if lines else "(none)"
    parts.append(section("Steps", steps))
    parts.extend(
        section(f"Attempts of {line.row.key}", _attempts_table(line.row, now=now))
        for line in lines
        if line.row is not None and len(line.row.attempts) > 1
    )
    if detail.derived:
        parts.append(section("Derived runs", _derived_table(detail, now=now)))
    if detail.children:
        parts.append(section("Child runs", _children_table(detail, now=now)))
    shown = detail.events[-events:] if events > 0 else detail.events
    title = "Events"
    if len(shown) < len(detail.events):
        title += f" (latest {len(shown)} of {len(detail.events)})"
    parts.append(section(title, _events_table(shown)))
    return "\n\n".join(parts)


def section(title: str, body: str) -> str:
    return f"{console.bold(title)}\n{body}"


def run_json(detail: "RunDetail") -> dict[str, Any]:
    return {
        "run": record_json(detail.run),
        "steps": [record_json(step) for step in detail.steps],
        "events": [record_json(event) for event in detail.events],
        "waits": [
            {
                "step_key": w.step_key,
                "signal": w.signal,
                "since": w.created_at,
                "expires_at": w.expires_at,
            }
            for w in detail.waiters
            if w.delivered_at is None
        ],
        "derived_runs": [_lineage_json(run) for run in detail.derived],
        "derived_total": detail.derived_total,
        "child_runs": [
            {**_lineage_json(run), "flow": run.flow_name, "step_key": _step_of(run)}
            for run in detail.children
        ],
        "queue_place": detail.place,
    }


def _step_of(run: RunRecord) -> str | None:
    return None if run.parent is None else run.parent.step_key


def _lineage_json(run: RunRecord) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "status": run.status,
        "started_at": run.started_at,
        "completed_at": run.completed_at,
    }


def _run_header(detail: "RunDetail", *, now: datetime) -> str:
    run = detail.run
    pairs = [
        ("run", console.bold(run.run_id)),
        ("flow", f"{run.flow_name} ({run.flow_id})"),
        ("status", console.status(run.status)),
        ("trigger", run.trigger_key),
        ("job id", run.job_id),
        ("idempotency", run.idempotency_key or ""),
        ("started", console.instant(run.started_at)),
        ("completed", console.instant(run.completed_at)),
        ("duration", run_duration(run, detail.events, now=now)),
    ]
    if run.deadline_at is not None:
        pairs.append(("deadline", console.instant(run.deadline_at)))
    if run.timed_out_at is not None:
        pairs.append(("timed out", console.instant(run.timed_out_at)))
    if run.cancel_requested:
        pairs.append(("cancelled", run.cancel_reason or "yes"))
    if run.source_run_id is not None:
        pairs.append(("source run", run.source_run_id))
    if run.parent is not None:
        parent = f"{run.parent.run_id} (step {run.parent.step_key}, depth {run.depth})"
        pairs.append(("parent run", parent))
    if run.concurrency_key is not None:
        pairs.append(("concurrency key", _key_text(detail)))
    if run.outputs is not None:
        pairs.append(("outputs", console.shorten(_compact(run.outputs), 120)))
    if detail.derived_total:
        newest = ", ".join(derived.run_id for derived in detail.derived[:3])
        more = detail.derived_total - min(3, len(detail.derived))
        pairs.append(("derived runs", newest + (f" and {more} more" if more else "")))
    return console.fields(pairs)


def _key_text(detail: "RunDetail") -> str:
    run, key = detail.run, detail.run.concurrency_key
    if detail.place is not None:
        return f"{key} (waits for a slot: number {detail.place} in line)"
    if run.admitted is not None:
        return f"{key} (ticket {run.ticket}, admitted as {run.admitted})"
    return f"{key}"


def run_duration(run: RunRecord, events: Sequence[Event], *, now: datetime) -> str:
    """How long the run has been open.

    A run reopened by a retry counts only the time it was open, and says over how long
    a span.
    """
    spans: list[tuple[datetime, datetime | None]] = []
    opened: datetime | None = run.started_at
    for event in sorted(events, key=lambda e: e.at):
        if event.type == "run.completed" and opened is not None:
            spans.append((opened, event.at))
            opened = None
        elif event.type == "step.retried" and opened is None:
            opened = event.at
    if opened is not None:
        spans.append((opened, None))
    if len(spans) <= 1:
        return console.elapsed(run.started_at, run.completed_at, now=now)
    running = sum(((end or now) - start for start, end in spans), timedelta())
    span = (run.completed_at or now) - run.started_at
    ongoing = "+" if run.completed_at is None else ""
    reopened = len(spans) - 1
    return (
        f"{console.seconds(running)}{ongoing} open, over {console.seconds(span)}"
        f"{ongoing} (reopened {reopened} time{'s' if reopened > 1 else ''} by a retry)"
    )


def _steps_table(lines: Sequence[StepLine], *, now: datetime) -> str:
    rows = [_step_cells(line, now=now) for line in lines]
    headers = ["KEY", "TYPE", "STATUS", "ATTEMPTS", "DURATION", "ERROR", "OUTPUT"]
    return console.table(headers, rows, styles={2: _status_cell})


def _step_cells(line: StepLine, *, now: datetime) -> list[str]:
    if line.is_group:
        counts = ", ".join(f"{n} {status}" for status, n in line.counts().items())
        failed = [r.error for r in line.group if r.status is StepStatus.FAILED]
        starts = [r.started_at for r in line.group if r.started_at is not None]
        ends = [r.completed_at for r in line.group]
        end = None if not ends or None in ends else max(e for e in ends if e)
        return [
            line.key,
            line.type,
            counts or NOT_STARTED,
            str(sum(r.attempt for r in line.group)),
            console.elapsed(min(starts), end, now=now) if starts else "",
            console.shorten(error_line(failed[0] if failed else None), SHORT),
            "",
        ]
    row = line.row
    if row is None:
        return [line.key, line.type, NOT_STARTED, "", "", "", ""]
    return [
        line.key,
        line.type,
        row.status,
        str(row.attempt),
        console.elapsed(row.started_at, row.completed_at, now=now),
        console.shorten(error_line(row.error), SHORT),
        _wait(line.waiter, now=now)
        if line.waiter is not None and row.status is StepStatus.PENDING
        else _output(row),
    ]


def _status_cell(text: str) -> str:
    if text == NOT_STARTED:
        return console.dim(text)
    first = text.split(",")[0].split()
    # A group's counts are coloured as their first status; a step's as itself.
    return console.status(text, like=first[-1] if len(first) == 2 else None)


def _wait(waiter: Waiter, *, now: datetime) -> str:
    text = f"waits for signal '{waiter.signal}'"
    if waiter.expires_at is None:
        return text + " (no deadline)"
    left = console.seconds(waiter.expires_at - now)
    return f"{text} until {console.instant(waiter.expires_at)} (in {left})"


def _output(row: StepRecord) -> str:
    if row.output is None:
        return ""
    return console.shorten(_compact(row.output), SHORT)


def _derived_table(detail: "RunDetail", *, now: datetime) -> str:
    rows = [
        [
            run.run_id,
            run.status,
            console.instant(run.started_at),
            console.elapsed(run.started_at, run.completed_at, now=now),
        ]
        for run in detail.derived
    ]
    body = console.table(["RUN ID", "STATUS", "STARTED", "DURATION"], rows)
    if detail.derived_total > len(detail.derived):
        more = f"newest {len(detail.derived)} of {detail.derived_total}: "
        body += "\n" + console.dim(f"{more}flowctl runs --source {detail.run.run_id}")
    return body


def _children_table(detail: "RunDetail", *, now: datetime) -> str:
    rows = [
        [
            run.run_id,
            run.flow_name,
            _step_of(run) or "",
            run.status,
            console.instant(run.started_at),
            console.elapsed(run.started_at, run.completed_at, now=now),
        ]
        for run in detail.children
    ]
    headers = ["RUN ID", "FLOW", "STEP", "STATUS", "STARTED", "DURATION"]
    return console.table(headers, rows, styles={3: console.status})


def _attempts_table(step: StepRecord, *, now: datetime) -> str:
    rows = [
        [
            str(attempt.number),
            attempt.job_id,
            attempt.status,
            console.instant(attempt.started_at),
            console.elapsed(attempt.started_at, attempt.completed_at, now=now),
            console.shorten(error_line(attempt.error), SHORT),
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


def reply_text(reply: "Reply") -> str:
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
