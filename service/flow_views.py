"""What `flowctl` shows of flows and their cron schedules, as text and as JSON.

Pure functions of the stored flow records and schedules (`now` is an argument).
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from service import console
from service.engine.model import Flow, RunAfter, Step, StepStatus
from service.engine.records import FlowRecord, Schedule
from service.views import record_json, section

PAUSED: Final = "paused"
_STATUS_ORDER: Final = {status: i for i, status in enumerate(StepStatus)}


@dataclass(frozen=True, slots=True)
class FlowView:
    """A stored flow, its manifest read back (None if unreadable) and its schedules."""

    record: FlowRecord
    flow: Flow | None
    schedules: list[Schedule] = field(default_factory=list)


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
        parts.append(section("Schedules", schedules_text(schedules, now=now)))
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
            PAUSED if schedule.paused else "active",
            _next_fire(schedule, now=now),
        ]
        for view, schedule in schedules
    ]
    headers = ["FLOW", "TRIGGER", "CRON", "OVERRIDE", "STATE", "NEXT FIRE (UTC)"]
    return console.table(headers, rows, styles={4: _paused, 5: _paused})


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
    pairs = [
        ("flow", console.bold(record.name)),
        ("id", record.flow_id),
        ("version", record.version),
        ("enabled", _enabled("yes" if record.enabled else "no")),
        ("triggers", _triggers(view)),
    ]
    if view.flow is None:
        header = console.fields(pairs)
        return header + "\n\n(the stored manifest can't be read)"
    header = console.fields(pairs + _controls(view.flow))
    rows = [
        [key, step_type(step), _run_after(step), _policy(step)]
        for key, step in view.flow.walk()
    ]
    headers = ["KEY", "TYPE", "RUN AFTER", "TIMEOUT / RETRY"]
    parts = [header, section("Steps", console.table(headers, rows))]
    if view.schedules:
        scheduled = [(view, s) for s in view.schedules]
        parts.append(section("Schedules", schedules_text(scheduled, now=now)))
    return "\n\n".join(parts)


def _controls(flow: Flow) -> list[tuple[str, str]]:
    """The flow-wide controls it sets: deadlines, timeouts, its key, its outputs."""
    found: list[tuple[str, str]] = []
    if flow.run_timeout is not None:
        found.append(("run timeout", console.seconds(flow.run_timeout)))
    if flow.step_timeout is not None:
        found.append(("step timeout", console.seconds(flow.step_timeout)))
    if flow.concurrency is not None:
        limit = flow.concurrency.limit
        runs = "1 run" if limit == 1 else f"{limit} runs"
        found.append(("concurrency", f"{runs} at a time per {flow.concurrency.key}"))
    if flow.outputs:
        found.append(("outputs", ", ".join(flow.outputs)))
    return found


def step_type(step: Step) -> str:
    """A step's type as shown: a ChildFlow names the flow it starts."""
    target = step.inputs.get("flow")
    return f"{step.type} -> {target}" if step.is_child else step.type


def step_caption(step: Step) -> str:
    """The type as shown, with the step's timeout (a DAG node's second line)."""
    if step.timeout is None:
        return step_type(step)
    return f"{step_type(step)}, timeout {console.seconds(step.timeout)}"


def _policy(step: Step) -> str:
    parts = []
    if step.timeout is not None:
        parts.append(f"timeout {console.seconds(step.timeout)}")
    if step.retry is not None:
        parts.append(f"{step.retry.max_attempts} attempts")
    return ", ".join(parts)


def _triggers(view: FlowView) -> str:
    if view.flow is None:
        return "?"
    paused = {s.trigger_key for s in view.schedules if s.paused}
    return ", ".join(
        f"{key} ({trigger.type.value.lower()}{', paused' if key in paused else ''})"
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
    if schedule.paused:
        return PAUSED
    if schedule.next_fire_at is None:
        return ""
    until = console.seconds(schedule.next_fire_at - now)
    return f"{console.instant(schedule.next_fire_at)} (in {until})"


def _enabled(text: str) -> str:
    return console.status(text, like="succeeded" if text == "yes" else "failed")


def _paused(text: str) -> str:
    return console.status(text, like="pending") if text == PAUSED else text
