"""A run's steps as the dashboard lists them: the flow's manifest joined with the rows.

Pure. Every manifest step is listed, in DAG order, whether or not it has a row yet
(a step not dispatched yet, or released but not claimed, shows as `Waiting`); rows the
manifest no longer knows are listed after them. A ForEach carries the status counts
of its iterations and of each body step across the iterations.
"""

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from service.engine.model import (
    ENTRY_MARKER,
    WAIT_FOR_SIGNAL,
    Flow,
    RunAfter,
    Step,
    StepStatus,
)
from service.engine.records import StepRecord

WAITING: Final = "Waiting"
"""The status shown for a manifest step that has no row (yet)."""
SEVERITY: Final = (
    str(StepStatus.FAILED),
    str(StepStatus.RUNNING),
    str(StepStatus.PENDING),
    str(StepStatus.QUEUED),
    WAITING,
    str(StepStatus.SUCCEEDED),
    str(StepStatus.SKIPPED),
)
"""The status that colours a group of steps: the first of these that any has."""
STATUS_ORDER: Final = (*(str(s) for s in StepStatus), WAITING)


@dataclass(frozen=True, slots=True)
class BodyLine:
    """A step of a ForEach body, across every iteration."""

    template: str
    """`loop.child`."""
    type: str
    counts: Mapping[str, int]
    depends_on: tuple[str, ...]

    @property
    def status(self) -> str:
        return dominant(self.counts)


@dataclass(frozen=True, slots=True)
class StepLine:
    key: str
    type: str
    status: str
    row: StepRecord | None
    depends_on: tuple[str, ...] = ()
    run_after: str = ""
    signal: str | None = None
    iterations: Mapping[str, int] | None = None
    """For a ForEach: its iterations per status."""
    body: list[BodyLine] = field(default_factory=list)

    @property
    def is_loop(self) -> bool:
        return self.iterations is not None

    @property
    def attempts(self) -> int:
        return 0 if self.row is None else self.row.attempt


def dominant(counts: Mapping[str, int]) -> str:
    """The status a group shows: Failed if any failed, else Running if any runs..."""
    for status in SEVERITY:
        if counts.get(status):
            return status
    return WAITING


def ordered_counts(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    """Non-zero counts in status order."""
    return [(s, counts[s]) for s in STATUS_ORDER if counts.get(s)]


def dag_order(steps: Mapping[str, Step]) -> list[str]:
    """The keys in an order where each step comes after its dependencies.

    Kahn's walk, always taking the ready step that comes first in the manifest; a
    cycle (refused at start) leaves its steps to the end, in manifest order.
    """
    position = {key: n for n, key in enumerate(steps)}
    waiting = {
        key: {d for d in step.run_after if d in steps} for key, step in steps.items()
    }
    after: dict[str, list[str]] = {key: [] for key in steps}
    for key, deps in waiting.items():
        for dep in deps:
            after[dep].append(key)
    ready = [position[key] for key, deps in waiting.items() if not deps]
    heapq.heapify(ready)
    keys = list(steps)
    placed: list[str] = []
    while ready:
        key = keys[heapq.heappop(ready)]
        placed.append(key)
        for child in after[key]:
            waiting[child].discard(key)
            if not waiting[child]:
                heapq.heappush(ready, position[child])
    done = set(placed)
    return placed + [key for key in steps if key not in done]


def conditions_text(step: Step) -> str:
    """`charge: Succeeded; refund: Failed when …`, or `(entry)`."""
    if step.is_entry and not step.conditions:
        return "(entry)"
    return "; ".join(
        f"{dep or '(entry)'}: {_condition(c)}" for dep, c in step.conditions.items()
    )


def _condition(condition: RunAfter) -> str:
    ordered = [s.value for s in StepStatus if s in condition.statuses]
    text = "/".join(ordered) or "any"
    return f"{text} when {condition.when}" if condition.when else text


def step_lines(
    flow: Flow | None,
    rows: Sequence[StepRecord],
    templates: Mapping[str, Mapping[str, int]],
) -> list[StepLine]:
    """The top-level steps of a run: manifest steps in DAG order, then unknown rows.

    `rows` are the top-level rows; `templates` the counts of the rows below the top
    level by template key (`RunBrowser.template_counts`).
    """
    by_key: dict[str, StepRecord] = {row.key: row for row in rows}
    lines: list[StepLine] = []
    steps = flow.steps if flow is not None else {}
    for key in dag_order(steps):
        step = steps[key]
        row = by_key.pop(key, None)
        lines.append(_line(key, step, row, templates))
    lines.extend(
        StepLine(key=row.key, type=row.type, status=str(row.status), row=row)
        for row in by_key.values()
    )
    return lines


def _line(
    key: str,
    step: Step,
    row: StepRecord | None,
    templates: Mapping[str, Mapping[str, int]],
) -> StepLine:
    signal = step.inputs.get("signalName") if step.type == WAIT_FOR_SIGNAL else None
    iterations = None
    body: list[BodyLine] = []
    if step.is_loop:
        iterations = dict(templates.get(key, {}))
        body = [
            BodyLine(
                template=f"{key}.{child}",
                type=inner.type,
                counts=dict(templates.get(f"{key}.{child}", {})),
                depends_on=tuple(
                    f"{key}.{d}" for d in inner.run_after if d != ENTRY_MARKER
                ),
            )
            for child in dag_order(step.steps)
            for inner in (step.steps[child],)
        ]
    return StepLine(
        key=key,
        type=step.type,
        status=WAITING if row is None else str(row.status),
        row=row,
        depends_on=tuple(d for d in step.run_after if d != ENTRY_MARKER),
        run_after=conditions_text(step),
        signal=signal if isinstance(signal, str) else None,
        iterations=iterations,
        body=body,
    )
