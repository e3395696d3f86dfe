"""What `flowctl` shows: runs, flows, replies and dead letters as text and as JSON.

Pure functions of records (no I/O, no clock: `now` is an argument); `console` draws the
tables and colours. The JSON forms are plain dicts for `json.dumps(..., default=str)`.
"""

import base64
import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from contracts import Reply
from service import console
from service.adapters.amqp.answers import ReplayOutcome
from service.adapters.amqp.deadletters import DeadLetter
from service.adapters.mongo.queries import RunDetail
from service.engine.model import Flow, RunAfter, Step, StepStatus
from service.engine.records import Event, FlowRecord, RunRecord, Schedule, StepRecord

RUN_COLUMNS: Final = ("RUN ID", "FLOW", "STATUS", "STARTED", "DURATION", "TRIGGER")
SHORT: Final = 48
"""Width of an error or an output in a table cell."""
_STATUS_ORDER: Final = {status: i for i, status in enumerate(StepStatus)}


@dataclass(frozen=True, slots=True)
class FlowView:
    """A stored flow, its manifest read back (None if unreadable) and its schedules."""

    record: FlowRecord
    flow: Flow | None
    schedules: list[Schedule] = field(default_factory=list)


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
    parts.append(_section("Steps", steps))
    parts.extend(
        _section(f"Attempts of {step.key}", _attempts_table(step, now=now))
        for step in detail.steps
        if len(step.attempts) > 1
    )
    shown = detail.events[-events:] if events > 0 else detail.events
    title = "Events"
    if len(shown) < len(detail.events):
        title += f" (latest {len(shown)} of {len(detail.events)})"
    parts.append(_section(title, _events_table(shown)))
    return "\n\n".join(parts)


def _section(title: str, body: str) -> str:
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


# -- flows -----------------------------------------------------------------------


def flows_text(views: Sequence[FlowView], *, now: datetime) -> str:
    if not views:
        return "no flows stored: has a worker started on this database?"
    rows = [
        [
            view.record.name,
            view.record.flow_id,
            view.record.version,
            "yes" if view.record.enabled else "no",
            _triggers(view),
        ]
        for view in views
    ]
    parts = [
        console.table(
            ["NAME", "ID", "VERSION", "ENABLED", "TRIGGERS"],
            rows,
            styles={3: _enabled},
        )
    ]
    schedules = [(view, s) for view in views for s in view.schedules]
    if schedules:
        parts.append(_section("Schedules", schedules_text(schedules, now=now)))
    return "\n\n".join(parts)


def schedules_text(
    schedules: Sequence[tuple[FlowView, Schedule]], *, now: datetime
) -> str:
    rows = [
        [
            view.record.name,
            schedule.trigger_key,
            schedule.cron,
            schedule.cron_override or "",
            "yes" if schedule.paused else "no",
            _next_fire(schedule, now=now),
        ]
        for view, schedule in schedules
    ]
    headers = ["FLOW", "TRIGGER", "CRON", "OVERRIDE", "PAUSED", "NEXT FIRE (UTC)"]
    return console.table(headers, rows, styles={4: _paused})


def flows_json(views: Sequence[FlowView]) -> list[dict[str, Any]]:
    return [flow_json(view) for view in views]


def flow_json(view: FlowView) -> dict[str, Any]:
    schedules: dict[str, Schedule] = {s.trigger_key: s for s in view.schedules}
    triggers = []
    for key, trigger in (view.flow.triggers if view.flow else {}).items():
        schedule = schedules.get(key)
        triggers.append(
            {
                "key": key,
                "type": trigger.type.value,
                "cron": trigger.cron,
                "schedule": None if schedule is None else record_json(schedule),
            }
        )
    return {
        "id": view.record.flow_id,
        "name": view.record.name,
        "version": view.record.version,
        "enabled": view.record.enabled,
        "updated_at": view.record.updated_at,
        "triggers": triggers,
        "manifest": dict(view.record.manifest),
    }


def flow_text(view: FlowView, *, now: datetime) -> str:
    record = view.record
    header = console.fields(
        [
            ("flow", console.bold(record.name)),
            ("id", record.flow_id),
            ("version", record.version),
            ("enabled", _enabled("yes" if record.enabled else "no")),
            ("triggers", _triggers(view)),
        ]
    )
    if view.flow is None:
        return header + "\n\n(the stored manifest can't be read)"
    rows = [[key, step.type, _run_after(step)] for key, step in view.flow.walk()]
    parts = [
        header,
        _section("Steps", console.table(["KEY", "TYPE", "RUN AFTER"], rows)),
    ]
    if view.schedules:
        pairs = [(view, s) for s in view.schedules]
        parts.append(_section("Schedules", schedules_text(pairs, now=now)))
    return "\n\n".join(parts)


def _triggers(view: FlowView) -> str:
    if view.flow is None:
        return "?"
    return ", ".join(
        f"{key} ({trigger.type.value.lower()})"
        for key, trigger in view.flow.triggers.items()
    )


def _run_after(step: Step) -> str:
    if step.is_entry and not step.conditions:
        return "(entry)"
    return "; ".join(
        f"{dep or '(entry)'}: {_condition(condition)}"
        for dep, condition in step.conditions.items()
    )


def _condition(condition: RunAfter) -> str:
    ordered = sorted(condition.statuses, key=_STATUS_ORDER.__getitem__)
    text = "/".join(status.value for status in ordered) or "any"
    return f"{text} when {condition.when}" if condition.when else text


def _next_fire(schedule: Schedule, *, now: datetime) -> str:
    if schedule.next_fire_at is None:
        return ""
    until = console.seconds(schedule.next_fire_at - now)
    return f"{console.instant(schedule.next_fire_at)} (in {until})"


def _enabled(text: str) -> str:
    return console.status(text, like="succeeded" if text == "yes" else "failed")


def _paused(text: str) -> str:
    return console.status(text, like="pending") if text == "yes" else text


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


# -- dead letters ----------------------------------------------------------------


def letters_text(letters: Sequence[DeadLetter], total: int, *, queue: str) -> str:
    if not letters:
        return f"no dead letters in {queue}"
    rows = [
        [
            letter.letter_id,
            letter.type or "",
            letter.reason or "",
            console.shorten(letter.detail, SHORT),
            letter.routing_key or "",
        ]
        for letter in letters
    ]
    body = console.table(
        ["MESSAGE ID", "TYPE", "REASON", "DETAIL", "ROUTING KEY"],
        rows,
        styles={2: _reason},
    )
    return (
        f"{body}\n{console.dim(f'{len(letters)} of {total} dead letters in {queue}')}"
    )


def letter_text(letter: DeadLetter) -> str:
    pairs = [
        ("message id", console.bold(letter.letter_id)),
        ("type", letter.type or ""),
        ("reason", _reason(letter.reason or "")),
        ("detail", letter.detail or ""),
        ("routing key", letter.routing_key or ""),
        ("exchange", "(default)" if letter.exchange == "" else letter.exchange or ""),
    ]
    return "\n\n".join(
        [
            console.fields(pairs),
            _section("Headers", _mapping(letter.headers)),
            _section("Properties", _mapping(letter.properties)),
            _section(f"Body ({len(letter.body)} bytes)", _body_text(letter.body)),
        ]
    )


def letters_json(
    letters: Sequence[DeadLetter], total: int, *, queue: str
) -> dict[str, Any]:
    return {
        "queue": queue,
        "total": total,
        "items": [letter_json(one) for one in letters],
    }


def letter_json(letter: DeadLetter) -> dict[str, Any]:
    data = record_json(letter)
    data.pop("body")
    try:
        data["body"] = letter.body.decode("utf-8")
        data["body_encoding"] = "utf-8"
    except UnicodeDecodeError:
        data["body"] = base64.b64encode(letter.body).decode("ascii")
        data["body_encoding"] = "base64"
    return data


def replayed_text(outcomes: Sequence[ReplayOutcome]) -> str:
    """One line per replayed letter, saying what became of it; then the counts."""
    if not outcomes:
        return "no dead letters match"
    lines = []
    for one in outcomes:
        letter = one.letter
        route = f"{letter.type or '?'} -> {letter.routing_key or '?'}"
        word = _reason(one.result) if one.went_wrong else one.result
        detail = f": {' '.join(one.detail.split())}" if one.detail else ""
        lines.append(f"{word} {letter.letter_id} ({route}){detail}")
    counts: dict[str, int] = {}
    for one in outcomes:
        counts[one.result] = counts.get(one.result, 0) + 1
    lines.append(console.dim(", ".join(f"{n} {word}" for word, n in counts.items())))
    return "\n".join(lines)


def _reason(text: str) -> str:
    return console.status(text, like="failed")


def _mapping(values: Mapping[str, object]) -> str:
    if not values:
        return "(none)"
    return console.fields(
        (name, value if isinstance(value, str) else _compact(value))
        for name, value in values.items()
    )


def _body_text(body: bytes) -> str:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return f"(not UTF-8) {body[:64].hex(' ')}{' …' if len(body) > 64 else ''}"
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text or "(empty)"
