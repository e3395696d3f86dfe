"""A run's timeline as drawing instructions: attempts, parks and timers on a time axis.

Pure. Each step with attempts is a row: one bar per attempt (coloured by its status),
a hatched bar while it is parked (Pending: polling, a retry backoff, a signal wait)
and a mark at each pending timer's due time. `run.html` draws it as SVG with plain
attributes (no inline style, which the Content-Security-Policy forbids).
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from service.dashboard.formatting import span, utc
from service.dashboard.stepview import StepLine
from service.engine.model import StepStatus
from service.engine.records import Attempt, RunRecord, Timer

WIDTH: Final = 1000.0
LABELS: Final = 190.0
"""Width of the step-key column, in the same units."""
ROW: Final = 22.0
AXIS: Final = 24.0
MAX_ROWS: Final = 200
TICKS: Final = 6


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    width: float
    kind: str
    """A step status (`Succeeded`...) or `park`."""
    title: str


@dataclass(frozen=True, slots=True)
class Mark:
    x: float
    kind: str
    title: str


@dataclass(frozen=True, slots=True)
class GanttRow:
    label: str
    y: float
    bars: list[Bar] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Gantt:
    rows: list[GanttRow]
    ticks: list[tuple[float, str]]
    height: float
    now_x: float | None
    hidden: int
    """Rows left out past MAX_ROWS."""
    width: float = WIDTH
    left: float = LABELS


@dataclass(frozen=True, slots=True)
class _Scale:
    start: datetime
    seconds: float

    def x(self, at: datetime) -> float:
        part = (at - self.start).total_seconds() / self.seconds
        return LABELS + (WIDTH - LABELS) * min(max(part, 0.0), 1.0)


def gantt(
    run: RunRecord, lines: Sequence[StepLine], timers: Sequence[Timer], now: datetime
) -> Gantt:
    """The timeline of `run`'s top-level steps that have attempts."""
    shown = [line for line in lines if line.row is not None and line.row.attempts]
    ends = [
        attempt.completed_at or now
        for line in shown
        if line.row is not None
        for attempt in line.row.attempts
    ]
    end = max([run.completed_at or now, *ends])
    due = [t.due_at for t in timers if t.due_at > end]
    if due:
        end = min(max(due), end + (end - run.started_at) + timedelta(seconds=1))
    scale = _Scale(run.started_at, max((end - run.started_at).total_seconds(), 0.001))
    by_step: dict[str, list[Timer]] = {}
    for timer in timers:
        by_step.setdefault(timer.step_key or "", []).append(timer)
    rows = [
        _row(line, i, scale, by_step.get(line.key, []), now)
        for i, line in enumerate(shown[:MAX_ROWS])
    ]
    height = AXIS + ROW * max(len(rows), 1)
    return Gantt(
        rows=rows,
        ticks=_ticks(scale),
        height=height,
        now_x=scale.x(now) if run.completed_at is None else None,
        hidden=max(len(shown) - MAX_ROWS, 0),
    )


def _row(
    line: StepLine, index: int, scale: _Scale, timers: list[Timer], now: datetime
) -> GanttRow:
    assert line.row is not None  # noqa: S101 - filtered by the caller
    attempts = sorted(line.row.attempts, key=lambda a: a.started_at)
    bars: list[Bar] = []
    for n, attempt in enumerate(attempts):
        bars.append(_attempt_bar(line.key, attempt, scale, now))
        if attempt.status is StepStatus.PENDING and attempt.completed_at is not None:
            resumed = attempts[n + 1].started_at if n + 1 < len(attempts) else now
            x = scale.x(attempt.completed_at)
            title = f"{line.key}: parked {span(resumed - attempt.completed_at)}"
            bars.append(Bar(x, max(scale.x(resumed) - x, 1.0), "park", title))
    marks = [
        Mark(scale.x(t.due_at), str(t.kind), f"{t.kind} timer due {utc(t.due_at)}")
        for t in timers
    ]
    return GanttRow(line.key, AXIS + ROW * index, bars, marks)


def _attempt_bar(key: str, attempt: Attempt, scale: _Scale, now: datetime) -> Bar:
    ended = attempt.completed_at or now
    x = scale.x(attempt.started_at)
    width = max(scale.x(ended) - x, 2.0)
    took = span(ended - attempt.started_at)
    title = (
        f"{key} attempt {attempt.number} ({attempt.job_id}): {attempt.status}, "
        f"{took}, from {utc(attempt.started_at)}"
    )
    return Bar(x, width, str(attempt.status), title)


def _ticks(scale: _Scale) -> list[tuple[float, str]]:
    step = scale.seconds / TICKS
    return [
        (scale.x(scale.start + timedelta(seconds=step * i)), _offset(step * i))
        for i in range(TICKS + 1)
    ]


def _offset(seconds: float) -> str:
    return "0" if seconds == 0 else "+" + span(timedelta(seconds=seconds))
